"""quantize(): validate, pick a backend, run it in chunks, shape the result as an MXFP4Tensor.

CPU torch tensors are handed to the CPU backends as numpy views of the same memory, so nothing is copied.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, overload

import numpy as np

from ..choices import QUANTIZE_SCALE_RULE, CodecBackend, NonFinite, Rounding, ScaleRule
from ..dtypes import float_name, is_torch_tensor, numpy_alias, raw_numpy_view, to_float32
from ..errors import NonFiniteError, OptionError, ShapeError
from . import native, reference
from .backend import REFERENCE_CHUNK_BLOCKS, resolve_backend, torch_kernels
from .constants import BLOCK_SIZE, E8M0_NAN, PACKED_BYTES_PER_BLOCK
from .rules import KERNEL_RULES, check_options, resolve_rounding
from .tensor import MXFP4Tensor

if TYPE_CHECKING:
    import torch


def label(name: str | None) -> str:
    """How errors name a tensor: by name when the caller gave one."""
    return f"tensor {name!r}" if name else "input"


def _check_last_axis(shape: tuple[int, ...], name: str | None) -> None:
    if len(shape) == 0:
        raise ShapeError(f"{label(name)} is a scalar; MXFP4 needs at least one axis of 32 elements")
    if shape[-1] % BLOCK_SIZE:
        padded = -(-shape[-1] // BLOCK_SIZE) * BLOCK_SIZE
        raise ShapeError(
            f"{label(name)} has shape {tuple(shape)}: its last axis ({shape[-1]}) is not a multiple of "
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
        f"{label(name)} holds {block[j]} at index {index}; MXFP4 has no NaN or Inf. Clean the tensor, or "
        f"pass nonfinite='nan_scale' to store such blocks with the spec's NaN scale byte 0xFF"
    )


def _backend_for_rule(chosen: str, asked: str, scale_rule: str) -> str:
    """The C and Triton kernels implement KERNEL_RULES; other rules run in the torch twin (auto) or are refused."""
    if scale_rule in KERNEL_RULES or chosen in ("numpy", "torch"):
        return chosen
    if asked == "auto":
        return "torch"
    raise OptionError(f"scale_rule={scale_rule!r} runs on backend 'numpy', 'torch' or 'auto', not {asked!r}")


def _encode_cpu(flat: np.ndarray, dtype_name: str, scale_rule: str, rounding: str, backend: str):
    if backend == "native":
        return native.encode(raw_numpy_view(flat, dtype_name), dtype_name, scale_rule, rounding)
    if backend in ("torch", "triton"):
        import torch

        blocks, scales = torch_kernels(backend).encode_blocks(
            torch.from_numpy(to_float32(flat, dtype_name)), scale_rule, rounding
        )
        return blocks.numpy(), scales.numpy()
    n_blocks = flat.shape[0]
    blocks = np.empty((n_blocks, PACKED_BYTES_PER_BLOCK), dtype=np.uint8)
    scales = np.empty(n_blocks, dtype=np.uint8)
    for start in range(0, n_blocks, REFERENCE_CHUNK_BLOCKS):
        stop = min(start + REFERENCE_CHUNK_BLOCKS, n_blocks)
        chunk = to_float32(flat[start:stop], dtype_name)
        blocks[start:stop], scales[start:stop] = reference.encode_blocks(chunk, scale_rule, rounding)
    return blocks, scales


@overload
def quantize(
    x: np.ndarray,
    *,
    scale_rule: ScaleRule = ...,
    rounding: Rounding | None = ...,
    nonfinite: NonFinite = ...,
    backend: CodecBackend = ...,
    name: str | None = ...,
) -> MXFP4Tensor[np.ndarray]: ...
@overload
def quantize(
    x: torch.Tensor,
    *,
    scale_rule: ScaleRule = ...,
    rounding: Rounding | None = ...,
    nonfinite: NonFinite = ...,
    backend: CodecBackend = ...,
    name: str | None = ...,
) -> MXFP4Tensor[torch.Tensor]: ...
def quantize(
    x: Any,
    *,
    scale_rule: ScaleRule = QUANTIZE_SCALE_RULE,
    rounding: Rounding | None = None,
    nonfinite: NonFinite = "error",
    backend: CodecBackend = "auto",
    name: str | None = None,
) -> MXFP4Tensor[Any]:
    """Quantize ``x`` [..., K] (K a multiple of 32; blocks run along the last axis) to MXFP4.

    x: numpy array or torch tensor of float32, float16 or bfloat16 (numpy bfloat16 is ml_dtypes').
    scale_rule: 'floor' (OCP, default) | 'round_up' | 'even' | 'mse' | 'mlx'; rounding: 'rne' | 'ggml', by default
    the rule's own (ggml for mlx, rne otherwise); mxfp4.rules gives the formulas.
    nonfinite: 'error' (default) | 'nan_scale'. name: used in errors.
    Returns an MXFP4Tensor whose blocks [..., K/32, 16] and scales [..., K/32] are numpy arrays for numpy
    input, and torch tensors on the input's device for torch input.
    """
    rounding = resolve_rounding(scale_rule, rounding)
    check_options(scale_rule, rounding, nonfinite)
    dtype_name = float_name(x, what=label(name))
    shape = tuple(x.shape)
    _check_last_axis(shape, name)
    blocks_shape = shape[:-1] + (shape[-1] // BLOCK_SIZE, PACKED_BYTES_PER_BLOCK)
    on_cuda = is_torch_tensor(x) and x.device.type != "cpu"
    chosen = _backend_for_rule(resolve_backend(backend, on_cuda), backend, scale_rule)
    if on_cuda:
        import torch

        flat32 = x.detach().reshape(-1, BLOCK_SIZE).to(torch.float32).contiguous()
        blocks, scales = torch_kernels(chosen).encode_blocks(flat32, scale_rule, rounding)
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
