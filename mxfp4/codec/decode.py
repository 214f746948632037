"""dequantize(): MXFP4 blocks and scales back to float values, on any backend, into a fresh or a given buffer."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, overload

import numpy as np

from ..choices import CodecBackend
from ..dtypes import is_torch_tensor, name_of, numpy_alias, numpy_dtype, output_name, torch_cpu_empty, torch_dtype
from ..errors import OptionError, ShapeError
from . import native, reference
from .backend import REFERENCE_CHUNK_BLOCKS, resolve_backend, torch_kernels
from .constants import BLOCK_SIZE, PACKED_BYTES_PER_BLOCK
from .layout_reference import check_blocks_scales, logical_shape

if TYPE_CHECKING:
    import torch


def _decode_cpu_into(
    flat_blocks: np.ndarray, flat_scales: np.ndarray, dtype_name: str, backend: str, out: np.ndarray
) -> None:
    if backend == "native":
        native.decode_into(flat_blocks, flat_scales, dtype_name, out)
    elif backend in ("torch", "triton"):
        import torch

        values = torch_kernels(backend).decode_blocks(
            torch.from_numpy(flat_blocks), torch.from_numpy(flat_scales), torch_dtype(dtype_name)
        )
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


@overload
def dequantize(
    blocks: np.ndarray, scales: np.ndarray, dtype: Any = ..., *, backend: CodecBackend = ..., out: Any = ...
) -> np.ndarray: ...
@overload
def dequantize(
    blocks: torch.Tensor, scales: torch.Tensor, dtype: Any = ..., *, backend: CodecBackend = ..., out: Any = ...
) -> torch.Tensor: ...
def dequantize(blocks: Any, scales: Any, dtype: Any = None, *, backend: CodecBackend = "auto", out: Any = None) -> Any:
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
        values = torch_kernels(chosen).decode_blocks(
            flat_blocks, scales.contiguous().reshape(-1), torch_dtype(dtype_name)
        )
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


def dequantize_transposed(
    blocks: Any, scales: Any, dtype: Any = None, *, backend: str = "auto", out: Any = None
) -> Any:
    """A matrix's ``blocks`` [R, n, 16] + ``scales`` [R, n] -> its values transposed, [n * 32, R], contiguous.

    The values of ``dequantize(blocks, scales, dtype).T``; the native backend decodes straight into the
    transposed layout in one pass (transformers stores dense experts as [in, out], the blocks run along in).
    out: an optional contiguous [n * 32, R] buffer of dtype to write into (numpy or torch, as the input).
    """
    dtype_name = output_name(dtype)
    torch_input = is_torch_tensor(blocks)
    if len(tuple(blocks.shape)) != 3:
        raise ShapeError(f"blocks of one matrix are [rows, blocks per row, 16]; got shape {tuple(blocks.shape)}")
    rows, per_row = int(blocks.shape[0]), int(blocks.shape[1])
    out_shape = (per_row * BLOCK_SIZE, rows)
    if out is not None:
        if is_torch_tensor(out) != torch_input:
            raise OptionError("out must be of the same kind (numpy or torch) as blocks and scales")
        _check_out(out, out_shape, dtype_name)
    on_cuda = torch_input and blocks.device.type != "cpu"
    if on_cuda or resolve_backend(backend, on_cuda) != "native":
        values = dequantize(blocks, scales, dtype_name, backend=backend)
        if out is None:
            return values.T.contiguous() if torch_input else np.ascontiguousarray(values.T)
        out[...] = values.T
        return out
    check_blocks_scales(blocks, scales)
    if torch_input:
        flat_blocks, flat_scales = blocks.detach().contiguous().numpy(), scales.detach().contiguous().numpy()
        out = torch_cpu_empty(out_shape, dtype_name) if out is None else out
        target = numpy_alias(out, dtype_name)
    else:
        flat_blocks, flat_scales = np.ascontiguousarray(blocks), np.ascontiguousarray(scales)
        out = np.empty(out_shape, dtype=numpy_dtype(dtype_name)) if out is None else out
        target = out
    native.decode_transposed_into(flat_blocks, flat_scales, dtype_name, target)
    return out
