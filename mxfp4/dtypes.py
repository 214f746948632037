"""Which element dtypes the codec takes and gives, named the same way for numpy and torch."""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import DTypeError

FLOAT_NAMES = ("float32", "float16", "bfloat16")

# safetensors dtype codes: bytes per element, and the torch dtype holding the same bits.
SAFETENSORS_CODES = {
    "F64": (8, "float64"),
    "F32": (4, "float32"),
    "F16": (2, "float16"),
    "BF16": (2, "bfloat16"),
    "I64": (8, "int64"),
    "I32": (4, "int32"),
    "I16": (2, "int16"),
    "I8": (1, "int8"),
    "U8": (1, "uint8"),
    "BOOL": (1, "bool"),
    "U16": (2, "uint16"),
    "U32": (4, "uint32"),
    "U64": (8, "uint64"),
    "F8_E4M3": (1, "float8_e4m3fn"),
    "F8_E5M2": (1, "float8_e5m2"),
}
DTYPE_SIZES = {code: size for code, (size, _) in SAFETENSORS_CODES.items()}
"""Bytes per element of each safetensors dtype code."""

SAFETENSORS_CODE_OF = {"bfloat16": "BF16", "float16": "F16", "float32": "F32"}
"""The safetensors code of each float dtype name the converters write."""


def is_torch_tensor(value: Any) -> bool:
    module = type(value).__module__
    return module.startswith("torch") and type(value).__name__ in ("Tensor", "Parameter")


def name_of(dtype: Any) -> str:
    """numpy / ml_dtypes / torch dtype, or a string -> 'float32' | 'float16' | 'bfloat16' | other name."""
    if isinstance(dtype, str):
        return dtype
    text = str(dtype)
    return text[len("torch.") :] if text.startswith("torch.") else np.dtype(dtype).name


def float_name(value: Any, *, what: str) -> str:
    """The dtype name of a float input tensor, or a DTypeError saying what is accepted."""
    name = name_of(value.dtype)
    if name not in FLOAT_NAMES:
        hint = (
            " (convert with .astype(np.float32) first; float64 is refused so no value is rounded twice)"
            if name == "float64"
            else ""
        )
        raise DTypeError(f"{what} has dtype {name}; MXFP4 quantizes float32, float16 or bfloat16{hint}")
    return name


def output_name(dtype: Any) -> str:
    name = "float32" if dtype is None else name_of(dtype)
    if name not in FLOAT_NAMES:
        raise DTypeError(f"cannot dequantize to dtype {name}; choose float32, float16 or bfloat16")
    return name


def numpy_dtype(name: str) -> np.dtype:
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def torch_dtype(name: str):
    """A dtype name ('bfloat16', 'uint8', ...) -> the torch dtype."""
    import torch

    return getattr(torch, name)


def torch_dtype_of_code(code: str):
    """A safetensors dtype code ('BF16', 'U8', ...) -> the torch dtype holding the same bits."""
    return torch_dtype(SAFETENSORS_CODES[code][1])


def raw_numpy_view(x: np.ndarray, name: str) -> np.ndarray:
    """float16/bfloat16 -> their 16-bit words (uint16), float32 unchanged; no copy."""
    return x if name == "float32" else x.view(np.uint16)


def to_float32(x: np.ndarray, name: str) -> np.ndarray:
    """Widen to float32 exactly (bfloat16 is the top half of a float32's bits)."""
    if name == "bfloat16":
        return (x.view(np.uint16).astype(np.uint32) << np.uint32(16)).view(np.float32)
    return x.astype(np.float32, copy=False)


def numpy_alias(tensor, name: str) -> np.ndarray:
    """A numpy array sharing a contiguous CPU torch tensor's memory (bfloat16 via ml_dtypes)."""
    if name == "bfloat16":
        import torch

        return tensor.view(torch.int16).numpy().view(numpy_dtype("bfloat16"))
    return tensor.numpy()


def raw_bytes(tensor) -> np.ndarray:
    """A CPU torch tensor's bytes as flat uint8 numpy (copying only when not contiguous)."""
    import torch

    return tensor.contiguous().reshape(-1).view(torch.uint8).numpy()


def torch_cpu_empty(shape: tuple[int, ...], name: str):
    """An uninitialised CPU torch tensor whose memory numpy allocates.

    numpy asks the kernel for transparent huge pages on large buffers (torch's CPU allocator does not),
    which roughly halves the cost of first touching a fresh output; torch.from_numpy shares the buffer.
    """
    import torch

    if name == "bfloat16":
        return torch.from_numpy(np.empty(shape, dtype=np.int16)).view(torch.bfloat16)
    return torch.from_numpy(np.empty(shape, dtype=np.dtype(name)))
