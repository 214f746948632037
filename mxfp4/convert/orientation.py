"""Which way a dense expert matrix is stored, decided from its content where its shape cannot tell (a square
down_proj): values that came from MXFP4 lie on the MXFP4 grid along their input axis, in blocks of 32 sharing one
power-of-two scale, and a light fine-tune of them stays near it; along the other axis they do not. The axis whose
blocks requantize with clearly less error (mse scales, so a block at a power-of-two edge keeps its scale) is the
input axis. Where neither does (weights far from any MXFP4 grid), the content cannot tell."""

from __future__ import annotations

from typing import Literal

import numpy as np

from ..codec.decode import dequantize
from ..codec.encode import quantize

Orientation = Literal["in-out", "out-in"]
DECISIVE = 0.25  # one orientation's requantization error under a quarter of the other's decides
SAMPLE_ROWS = 256  # rows of the matrix sampled (in whole blocks) for each test


def grid_error(matrix: np.ndarray) -> float:
    """Relative squared error of requantizing ``matrix`` [rows, cols] (float32) to MXFP4 along its last axis (mse
    scales, nearest-even rounding): 0 for values decoded from MXFP4 in this orientation, about 1.5% for values
    unrelated to the grid."""
    values = np.ascontiguousarray(matrix, dtype=np.float32)
    requantized = dequantize(*_packed(values))
    energy = float(np.square(values, dtype=np.float64).sum())
    return float(np.square(requantized - values, dtype=np.float64).sum()) / energy if energy else 0.0


def _packed(values: np.ndarray):
    q = quantize(values, scale_rule="mse", nonfinite="nan_scale")
    return q.blocks, q.scales


def stored_orientation(rows: np.ndarray) -> Orientation | None:
    """``rows``: the first rows (up to SAMPLE_ROWS, a multiple of 32) of one expert's square matrix as the file holds
    it. 'in-out' when the first axis is the input axis (transformers' [in, out]), 'out-in' when the last is, None
    when the content cannot tell."""
    as_in_out = grid_error(rows.T)  # blocks along the first axis
    as_out_in = grid_error(rows)  # blocks along the last axis
    if as_in_out < DECISIVE * as_out_in:
        return "in-out"
    if as_out_in < DECISIVE * as_in_out:
        return "out-in"
    return None
