"""Quantization error of one tensor, measured in chunks so no full float64 copy is ever made."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..dtypes import float_name, is_torch_tensor, numpy_alias, to_float32
from .constants import BLOCK_SIZE, E2M1_MAX, E8M0_BIAS, PACKED_BYTES_PER_BLOCK
from .decode import dequantize

CHUNK_ROWS_OF_BLOCKS = 1 << 16


@dataclass(frozen=True)
class ErrorReport:
    name: str
    shape: tuple[int, ...]
    sqnr_db: float  # 10 log10(sum x^2 / sum (x - q)^2); inf when exact
    max_abs_error: float
    clipped_share: float  # elements with |x| above their block's largest value 6 * 2**X (saturated)
    signal: float = 0.0  # sum of x^2 over the tensor, for aggregating over tensors
    noise: float = 0.0  # sum of (x - q)^2


def measure_error(name: str, x, blocks, scales) -> ErrorReport:
    """Compare x [..., K] with its MXFP4 encoding (numpy or CPU torch), chunk by chunk."""
    dtype_name = float_name(x, what=f"tensor {name!r}")
    if is_torch_tensor(x):
        x, blocks, scales = numpy_alias(x.detach().contiguous(), dtype_name), blocks.numpy(), scales.numpy()
    flat_x = np.ascontiguousarray(x).reshape(-1, BLOCK_SIZE)
    flat_blocks = np.ascontiguousarray(blocks).reshape(-1, PACKED_BYTES_PER_BLOCK)
    flat_scales = np.ascontiguousarray(scales).reshape(-1)
    signal = noise = 0.0
    max_error, clipped = 0.0, 0
    for start in range(0, flat_x.shape[0], CHUNK_ROWS_OF_BLOCKS):
        stop = start + CHUNK_ROWS_OF_BLOCKS
        original = to_float32(flat_x[start:stop], dtype_name).astype(np.float64)
        decoded = (
            dequantize(flat_blocks[start:stop], flat_scales[start:stop]).reshape(original.shape).astype(np.float64)
        )
        error = original - decoded
        signal += float(np.sum(original * original))
        noise += float(np.sum(error * error))
        if error.size:
            max_error = max(max_error, float(np.abs(error).max()))
        top = E2M1_MAX * np.ldexp(1.0, flat_scales[start:stop].astype(np.int64) - E8M0_BIAS)[:, None]
        clipped += int(np.count_nonzero(np.abs(original) > top))
    sqnr = math.inf if noise == 0 else (10 * math.log10(signal / noise) if signal > 0 else -math.inf)
    total = flat_x.size
    return ErrorReport(name, tuple(x.shape), sqnr, max_error, clipped / total if total else 0.0, signal, noise)
