"""The numpy MXFP4 codec: the executable specification every faster backend must equal byte for byte.

It works on flat blocks: ``x`` float32 [N, 32] in, packed codes uint8 [N, 16] and E8M0 scales uint8 [N]
out (HF nibble order, see mxfp4.layout). Everything is computed from float32 bit fields, so no log2 or
exp2 rounding can creep in. Rules and roundings are documented in mxfp4.rules.
"""

from __future__ import annotations

import numpy as np

from .constants import (
    BLOCK_SIZE,
    E2M1_MAGNITUDES,
    E2M1_MIDPOINTS,
    E2M1_SIGN_BIT,
    E2M1_VALUES,
    E8M0_BIAS,
    E8M0_MAX_FINITE,
    E8M0_NAN,
)
from .layout_reference import pack_codes, unpack_codes
from .rules import MANTISSA_BUMP_AT, MLX_ZERO_SCALE_BYTE, TIE_ROUNDS_UP

_F32_ABS_MASK = np.uint32(0x7FFFFFFF)
_F32_INF_BITS = np.uint32(0x7F800000)
_F32_MANTISSA_MASK = np.uint32(0x007FFFFF)

_SCALE_BYTES = np.arange(256)
# 2**(s - 127) for every scale byte, NaN for 0xFF. Exact in float32 (2**-127 is a float32 subnormal).
POW2_F32 = np.where(_SCALE_BYTES == E8M0_NAN, np.nan, np.ldexp(1.0, _SCALE_BYTES - E8M0_BIAS)).astype(np.float32)
# 1 / 2**(s - 127) = 2**(127 - s), exact for s in 0..254; 0 for the NaN byte (its codes are zeroed).
INV_POW2_F32 = np.where(_SCALE_BYTES == E8M0_NAN, 0.0, np.ldexp(1.0, E8M0_BIAS - _SCALE_BYTES)).astype(np.float32)
POW2_F64 = np.where(_SCALE_BYTES == E8M0_NAN, np.nan, np.ldexp(1.0, _SCALE_BYTES - E8M0_BIAS))
_MAGNITUDES_F64 = E2M1_MAGNITUDES.astype(np.float64)


def abs_bits(x: np.ndarray) -> np.ndarray:
    """float32 array -> uint32 bits of |x|. For non-NaN floats, bit order equals magnitude order."""
    return x.view(np.uint32) & _F32_ABS_MASK


def floor_scale_bytes(amax_bits: np.ndarray) -> np.ndarray:
    """Unclamped floor rule as int32: X + 127 = (e + 127) - 2, read off amax's exponent field."""
    return (amax_bits >> np.uint32(23)).astype(np.int32) - 2


def scale_bytes(amax_bits: np.ndarray, scale_rule: str) -> np.ndarray:
    """E8M0 bytes [N] for the rules floor / round_up / even, from the bits of each block's amax.

    Clamped to 0..254: subnormal or tiny blocks take the smallest scale 2**-127; an all-zero block
    gets byte 0. Non-finite amax is not handled here (the caller marks those blocks 0xFF).
    """
    exponent = floor_scale_bytes(amax_bits)
    bump_at = MANTISSA_BUMP_AT[scale_rule]
    if bump_at is not None:
        exponent += (amax_bits & _F32_MANTISSA_MASK) >= np.uint32(bump_at)
    return np.clip(exponent, 0, E8M0_MAX_FINITE).astype(np.uint8)


def mlx_scale_bytes(amax_bits: np.ndarray) -> np.ndarray:
    """The mlx rule: X = ceil(log2(fl(amax / 6))), read off the bits of the float32 quotient (subnormals
    included), as a byte clamped to 0..254; 127 (X = 0) where the quotient is 0, as mlx stores it."""
    with np.errstate(invalid="ignore", over="ignore"):
        s_bits = (amax_bits.view(np.float32) / np.float32(6.0)).astype(np.float32).view(np.uint32)
    field = (s_bits >> np.uint32(23)).astype(np.int32)
    mantissa = (s_bits & _F32_MANTISSA_MASK).astype(np.int64)
    normal = field + (mantissa != 0)
    # subnormal s = mantissa * 2**-149: ceil(log2(mantissa)) is the bit length of mantissa - 1
    subnormal = np.frexp(np.maximum(mantissa - 1, 0).astype(np.float64))[1].astype(np.int32) - 22
    exponent = np.clip(np.where(field > 0, normal, subnormal), 0, E8M0_MAX_FINITE)
    return np.where(s_bits == 0, MLX_ZERO_SCALE_BYTE, exponent).astype(np.uint8)


def round_magnitudes(r: np.ndarray, rounding: str) -> np.ndarray:
    """|x| / 2**X (float32, >= 0) -> E2M1 magnitude codes 0..7, saturating at 6 (code 7).

    A magnitude code is the number of midpoints that r passes; at an exact midpoint the tie rule
    (mxfp4.codec.rules.TIE_ROUNDS_UP) says whether it counts as passed.
    """
    codes = np.zeros(r.shape, dtype=np.uint8)
    for midpoint, tie_up in zip(E2M1_MIDPOINTS, TIE_ROUNDS_UP[rounding]):
        codes += (r >= midpoint) if tie_up else (r > midpoint)
    return codes


def _magnitudes_at(magnitude_x: np.ndarray, scale: np.ndarray, rounding: str) -> np.ndarray:
    with np.errstate(invalid="ignore"):  # inf * 0 in blocks marked NaN; their codes are zeroed after
        return round_magnitudes(magnitude_x * INV_POW2_F32[scale][:, None], rounding)


def sum_in_lanes(squares):
    """Sum [N, 32] along axis 1 in the one fixed order every backend uses: eight lanes (j % 8), each
    added in element order, then a pairwise tree. Works for numpy arrays and torch tensors alike."""
    lanes = squares[:, 0:8] + squares[:, 8:16]
    lanes = lanes + squares[:, 16:24]
    lanes = lanes + squares[:, 24:32]
    pairs = [lanes[:, k] + lanes[:, k + 1] for k in range(0, 8, 2)]
    return (pairs[0] + pairs[1]) + (pairs[2] + pairs[3])


def _squared_error(magnitude_x: np.ndarray, scale: np.ndarray, rounding: str) -> np.ndarray:
    """Per block, the sum of (|x| - q)**2 in float64. Each difference is exact and so is its square;
    only the sum rounds, and sum_in_lanes fixes its order (the C kernel adds the same way). Blocks with
    NaN or Inf give NaN here; they are marked with the NaN scale afterwards, whatever this says."""
    quantized = _MAGNITUDES_F64[_magnitudes_at(magnitude_x, scale, rounding)] * POW2_F64[scale][:, None]
    with np.errstate(invalid="ignore", over="ignore"):
        diff = magnitude_x.astype(np.float64) - quantized
        return sum_in_lanes(diff * diff)


def mse_scale_bytes(magnitude_x: np.ndarray, amax_bits: np.ndarray, rounding: str) -> np.ndarray:
    """The mse rule: of floor, floor + 1, floor - 1 (that order wins ties), the least squared error."""
    floor = np.clip(floor_scale_bytes(amax_bits), 0, E8M0_MAX_FINITE)
    best = floor.copy()
    best_error = _squared_error(magnitude_x, floor.astype(np.uint8), rounding)
    for step in (1, -1):
        candidate = floor + step
        valid = (candidate >= 0) & (candidate <= E8M0_MAX_FINITE)
        candidate = np.where(valid, candidate, floor).astype(np.uint8)
        error = _squared_error(magnitude_x, candidate, rounding)
        better = valid & (error < best_error)
        best = np.where(better, candidate, best)
        best_error = np.where(better, error, best_error)
    return best.astype(np.uint8)


def encode_blocks(x: np.ndarray, scale_rule: str = "floor", rounding: str = "rne") -> tuple[np.ndarray, np.ndarray]:
    """float32 [N, 32] -> (packed codes uint8 [N, 16], E8M0 scales uint8 [N]).

    Blocks holding NaN or +-Inf get scale 0xFF and codes 0; the caller decides whether that is an error.
    """
    assert x.dtype == np.float32 and x.ndim == 2 and x.shape[1] == BLOCK_SIZE
    bits = abs_bits(x)
    amax_bits = bits.max(axis=1)
    nonfinite = amax_bits >= _F32_INF_BITS
    magnitude_x = bits.view(np.float32)
    if scale_rule == "mse":
        scales = mse_scale_bytes(magnitude_x, amax_bits, rounding)
    elif scale_rule == "mlx":
        scales = mlx_scale_bytes(amax_bits)
    else:
        scales = scale_bytes(amax_bits, scale_rule)
    scales[nonfinite] = E8M0_NAN
    codes = _magnitudes_at(magnitude_x, scales, rounding)
    negative = (x.view(np.uint32) >> np.uint32(31)).astype(np.uint8)
    if rounding == "ggml":
        negative &= codes != 0  # ggml never writes -0: a zero result is code 0
    codes |= negative * np.uint8(E2M1_SIGN_BIT)
    codes[nonfinite] = 0
    return pack_codes(codes), scales


def decode_blocks(blocks: np.ndarray, scales: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """(packed [N, 16], scales [N]) -> values [N, 32] in ``dtype`` (float32, float16 or bfloat16).

    Each value is E2M1[code] * 2**(s - 127) rounded once, to nearest even, into ``dtype``: the float32
    product is exact unless it overflows (|value| >= 2**128, scale bytes 253 and 254), which gives +-inf
    as correct rounding does; narrower dtypes round that exact float32 once more. Scale 0xFF gives the
    dtype's canonical quiet NaN (positive, e.g. 0x7fc00000), whatever the codes, on every backend.
    """
    values = E2M1_VALUES[unpack_codes(blocks)] * POW2_F32[scales][:, None]
    values[scales == E8M0_NAN] = np.nan
    return values if dtype == np.float32 else values.astype(dtype)
