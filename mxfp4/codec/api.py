"""quantize / dequantize: validate, pick a backend, run it in chunks, shape the result.

Backends: ``numpy`` (the reference, mxfp4.reference), ``native`` (C kernels on every core, equal to the
reference byte for byte), ``torch`` (torch ops on the tensor's own device), ``triton`` (Triton kernels;
GPU, or the CPU under TRITON_INTERPRET=1). ``auto`` takes ``native`` for CPU data when it is built,
else ``numpy``; CUDA tensors take ``triton`` when it is installed, else ``torch``. CPU torch tensors are
handed to the CPU backends as numpy views of the same memory, so nothing is copied.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from . import native, reference
from .constants import BLOCK_SIZE, E8M0_NAN, PACKED_BYTES_PER_BLOCK
from ..dtypes import float_name, is_torch_tensor, name_of, numpy_alias, numpy_dtype, output_name, raw_numpy_view, to_float32, torch_cpu_empty, torch_dtype
from ..errors import BackendUnavailableError, NonFiniteError, OptionError, ShapeError
from .layout import check_blocks_scales, logical_shape
from .rules import check_choice, check_options
from .tensor import MXFP4Tensor

BACKENDS = ("auto", "numpy", "native", "torch", "triton")
REFERENCE_CHUNK_BLOCKS = 1 << 14  # bounds the numpy reference's temporaries to a few MiB


def _triton_available() -> bool:
    from importlib.util import find_spec

    return find_spec("triton") is not None


def resolve_backend(backend: str, on_cuda: bool = False) -> str:
    check_choice("backend", backend, BACKENDS)
    if backend == "triton":
        if not _triton_available():
            raise BackendUnavailableError("backend='triton' needs Triton: pip install 'mxfp4[triton]'")
        if not on_cuda and os.environ.get("TRITON_INTERPRET") != "1":
            raise BackendUnavailableError("backend='triton' runs on a GPU; for CPU data set TRITON_INTERPRET=1 (slow: for tests)")
        return "triton"
    if on_cuda:
        if backend not in ("auto", "torch"):
            raise OptionError(f"backend={backend!r} runs on the CPU; CUDA tensors take backend='torch', 'triton' or 'auto'")
        return "triton" if backend == "auto" and _triton_available() else "torch"
    if backend == "auto":
        return "native" if native.available() else "numpy"
    if backend == "native":
        native.require()
    return backend


def _label(name: str | None) -> str:
    return f"tensor {name!r}" if name else "input"


def _check_last_axis(shape: tuple[int, ...], name: str | None) -> None:
    if len(shape) == 0:
        raise ShapeError(f"{_label(name)} is a scalar; MXFP4 needs at least one axis of 32 elements")
    if shape[-1] % BLOCK_SIZE:
        padded = -(-shape[-1] // BLOCK_SIZE) * BLOCK_SIZE
        raise ShapeError(
            f"{_label(name)} has shape {tuple(shape)}: its last axis ({shape[-1]}) is not a multiple of "
            f"{BLOCK_SIZE}, the MXFP4 block size; pad that axis to {padded} (e.g. with zeros), or transpose "
            f"so the contraction axis comes last"
        )


def _cpu_flat(x: Any, dtype_name: str) -> np.ndarray:
    """[..., K] numpy array or CPU torch tensor -> contiguous numpy [N, 32] (a view where possible)."""
    if is_torch_tensor(x):
        x = numpy_alias(x.detach().contiguous(), dtype_name)
    return np.ascontiguousarray(x).reshape(-1, BLOCK_SIZE)


def _raise_nonfinite(flat: np.ndarray, dtype_name: str, scales: np.ndarray, shape: tuple, name: str | None) -> None:
    """Name the first NaN/Inf element: its index in the caller's shape and its value."""
    first_block = int(np.flatnonzero(scales == E8M0_NAN)[0])
    block = to_float32(flat[first_block], dtype_name)
    j = int(np.flatnonzero(~np.isfinite(block))[0])
    index = tuple(int(i) for i in np.unravel_index(first_block * BLOCK_SIZE + j, shape))
    raise NonFiniteError(
        f"{_label(name)} holds {block[j]} at index {index}; MXFP4 has no NaN or Inf. Clean the tensor, or "
        f"pass nonfinite='nan_scale' to store such blocks with the spec's NaN scale byte 0xFF"
    )


def _torch_kernels(backend: str):
    """The module of encode_blocks / decode_blocks for torch tensors: the Triton kernels or the torch twin."""
    if backend == "triton":
        from . import triton_codec

        return triton_codec
    from . import torch_codec

    return torch_codec


def _encode_cpu(flat: np.ndarray, dtype_name: str, scale_rule: str, rounding: str, backend: str):
    if backend == "native":
        return native.encode(raw_numpy_view(flat, dtype_name), dtype_name, scale_rule, rounding)
    if backend in ("torch", "triton"):
        import torch

        blocks, scales = _torch_kernels(backend).encode_blocks(torch.from_numpy(to_float32(flat, dtype_name)), scale_rule, rounding)
        return blocks.numpy(), scales.numpy()
    n_blocks = flat.shape[0]
    blocks = np.empty((n_blocks, PACKED_BYTES_PER_BLOCK), dtype=np.uint8)
    scales = np.empty(n_blocks, dtype=np.uint8)
    for start in range(0, n_blocks, REFERENCE_CHUNK_BLOCKS):
        stop = min(start + REFERENCE_CHUNK_BLOCKS, n_blocks)
        chunk = to_float32(flat[start:stop], dtype_name)
        blocks[start:stop], scales[start:stop] = reference.encode_blocks(chunk, scale_rule, rounding)
    return blocks, scales


def quantize(
    x: Any,
    *,
    scale_rule: str = "floor",
    rounding: str = "rne",
    nonfinite: str = "error",
    backend: str = "auto",
    name: str | None = None,
) -> MXFP4Tensor:
    """Quantize ``x`` [..., K] (K a multiple of 32; blocks run along the last axis) to MXFP4.

    x: numpy array or torch tensor of float32, float16 or bfloat16 (numpy bfloat16 is ml_dtypes').
    scale_rule: 'floor' (OCP, default) | 'round_up' | 'even' | 'mse'; rounding: 'rne' (default) | 'ggml';
    mxfp4.rules gives the formulas. nonfinite: 'error' (default) | 'nan_scale'. name: used in errors.
    Returns an MXFP4Tensor whose blocks [..., K/32, 16] and scales [..., K/32] are numpy arrays for numpy
    input, and torch tensors on the input's device for torch input.
    """
    check_options(scale_rule, rounding, nonfinite)
    dtype_name = float_name(x, what=_label(name))
    shape = tuple(x.shape)
    _check_last_axis(shape, name)
    blocks_shape = shape[:-1] + (shape[-1] // BLOCK_SIZE, PACKED_BYTES_PER_BLOCK)
    on_cuda = is_torch_tensor(x) and x.device.type != "cpu"
    chosen = resolve_backend(backend, on_cuda)
    if on_cuda:
        import torch

        flat32 = x.detach().reshape(-1, BLOCK_SIZE).to(torch.float32).contiguous()
        blocks, scales = _torch_kernels(chosen).encode_blocks(flat32, scale_rule, rounding)
        if nonfinite == "error" and bool((scales == E8M0_NAN).any()):
            _raise_nonfinite(flat32.cpu().numpy(), "float32", scales.cpu().numpy(), shape, name)
        return MXFP4Tensor(blocks.reshape(blocks_shape), scales.reshape(blocks_shape[:-1]))
    flat = _cpu_flat(x, dtype_name)
    blocks, scales = _encode_cpu(flat, dtype_name, scale_rule, rounding, chosen)
    if nonfinite == "error" and bool((scales == E8M0_NAN).any()):
        _raise_nonfinite(flat, dtype_name, scales, shape, name)
    blocks, scales = blocks.reshape(blocks_shape), scales.reshape(blocks_shape[:-1])
    if is_torch_tensor(x):
        import torch

        blocks, scales = torch.from_numpy(blocks), torch.from_numpy(scales)
    return MXFP4Tensor(blocks, scales)


def _decode_cpu_into(flat_blocks: np.ndarray, flat_scales: np.ndarray, dtype_name: str, backend: str, out: np.ndarray) -> None:
    if backend == "native":
        native.decode_into(flat_blocks, flat_scales, dtype_name, out)
    elif backend in ("torch", "triton"):
        import torch

        values = _torch_kernels(backend).decode_blocks(torch.from_numpy(flat_blocks), torch.from_numpy(flat_scales), torch_dtype(dtype_name))
        out[...] = numpy_alias(values, dtype_name)
    else:
        for start in range(0, flat_blocks.shape[0], REFERENCE_CHUNK_BLOCKS):
            stop = min(start + REFERENCE_CHUNK_BLOCKS, flat_blocks.shape[0])
            with np.errstate(over="ignore"):
                out[start:stop] = reference.decode_blocks(flat_blocks[start:stop], flat_scales[start:stop], out.dtype)


def _check_out(out: Any, shape: tuple[int, ...], dtype_name: str) -> None:
    contiguous = out.is_contiguous() if is_torch_tensor(out) else out.flags.c_contiguous
    if tuple(out.shape) != shape or name_of(out.dtype) != dtype_name or not contiguous:
        raise ShapeError(
            f"out has shape {tuple(out.shape)} and dtype {name_of(out.dtype)}; it must be a contiguous "
            f"{dtype_name} array of shape {shape}"
        )


def dequantize(blocks: Any, scales: Any, dtype: Any = None, *, backend: str = "auto", out: Any = None) -> Any:
    """MXFP4 ``blocks`` [..., n, 16] + ``scales`` [..., n] -> values [..., n * 32].

    dtype: float32 (default), float16 or bfloat16, as a string or a numpy / ml_dtypes / torch dtype.
    Each value is E2M1[code] * 2**(scale - 127) rounded once (nearest even) into dtype; scale byte 0xFF
    gives NaN; values past the dtype's range give +-inf. numpy in -> numpy out; torch in -> torch out on
    the same device. out: an optional contiguous array of the result's shape and dtype to write into
    (reusing one buffer spares the kernel zeroing fresh pages for every tensor).
    """
    dtype_name = output_name(dtype)
    torch_input = is_torch_tensor(blocks)
    if torch_input != is_torch_tensor(scales):
        raise OptionError("blocks and scales must both be numpy arrays or both torch tensors")
    if not torch_input:
        blocks, scales = np.asarray(blocks), np.asarray(scales)
    check_blocks_scales(blocks, scales)
    out_shape = logical_shape(tuple(blocks.shape))
    if out is not None:
        if is_torch_tensor(out) != torch_input:
            raise OptionError("out must be of the same kind (numpy or torch) as blocks and scales")
        _check_out(out, out_shape, dtype_name)
    if torch_input and blocks.device != scales.device:
        raise OptionError(f"blocks are on {blocks.device} but scales on {scales.device}; put them on one device")
    on_cuda = torch_input and blocks.device.type != "cpu"
    chosen = resolve_backend(backend, on_cuda)
    if on_cuda:
        flat_blocks = blocks.contiguous().reshape(-1, PACKED_BYTES_PER_BLOCK)
        values = _torch_kernels(chosen).decode_blocks(flat_blocks, scales.contiguous().reshape(-1), torch_dtype(dtype_name))
        if out is None:
            return values.reshape(out_shape)
        out.copy_(values.reshape(out_shape))
        return out
    if torch_input:
        flat_blocks = blocks.detach().contiguous().reshape(-1, PACKED_BYTES_PER_BLOCK).numpy()
        flat_scales = scales.detach().contiguous().reshape(-1).numpy()
        if out is None:
            out = torch_cpu_empty(out_shape, dtype_name)
        target = numpy_alias(out, dtype_name).reshape(-1, BLOCK_SIZE)
        _decode_cpu_into(flat_blocks, flat_scales, dtype_name, chosen, target)
        return out
    flat_blocks = np.ascontiguousarray(blocks).reshape(-1, PACKED_BYTES_PER_BLOCK)
    flat_scales = np.ascontiguousarray(scales).reshape(-1)
    if out is None:
        out = np.empty(out_shape, dtype=numpy_dtype(dtype_name))
    _decode_cpu_into(flat_blocks, flat_scales, dtype_name, chosen, out.reshape(-1, BLOCK_SIZE))
    return out
