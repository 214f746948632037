"""The MXFP4 codec in torch ops: a twin of mxfp4.codec.reference (same names, same arithmetic) that runs on
any torch device, so CUDA tensors never leave the GPU. Tests hold it byte-identical to the reference.

Bits are handled as int32 (torch has no full uint32 arithmetic): |x|'s bits are non-negative there.
"""

from __future__ import annotations

from functools import lru_cache

import torch

from . import reference
from .constants import (
    BLOCK_SIZE,
    CANONICAL_NAN_BITS,
    E2M1_MIDPOINTS,
    E2M1_SIGN_BIT,
    E2M1_VALUES,
    E8M0_MAX_FINITE,
    E8M0_NAN,
)
from .rules import MANTISSA_BUMP_AT, MLX_ZERO_SCALE_BYTE, TIE_ROUNDS_UP

_ABS_MASK = 0x7FFFFFFF
_INF_BITS = 0x7F800000
_MANTISSA_MASK = 0x007FFFFF


@lru_cache(maxsize=None)
def _tables(device: torch.device) -> dict[str, torch.Tensor]:
    return {
        "pow2_f32": torch.from_numpy(reference.POW2_F32).to(device),
        "inv_pow2_f32": torch.from_numpy(reference.INV_POW2_F32).to(device),
        "pow2_f64": torch.from_numpy(reference.POW2_F64).to(device),
        "values": torch.from_numpy(E2M1_VALUES).to(device),
        "magnitudes_f64": torch.from_numpy(E2M1_VALUES[:8].astype("float64")).to(device),
    }


def floor_scale_bytes(amax_bits: torch.Tensor) -> torch.Tensor:
    return (amax_bits >> 23) - 2


def scale_bytes(amax_bits: torch.Tensor, scale_rule: str) -> torch.Tensor:
    exponent = floor_scale_bytes(amax_bits)
    bump_at = MANTISSA_BUMP_AT[scale_rule]
    if bump_at is not None:
        exponent = exponent + ((amax_bits & _MANTISSA_MASK) >= bump_at).to(torch.int32)
    return exponent.clamp(0, E8M0_MAX_FINITE)


def mlx_scale_bytes(amax_bits: torch.Tensor) -> torch.Tensor:
    """reference.mlx_scale_bytes: X = ceil(log2(fl(amax / 6))) as a byte clamped to 0..254; 127 where it is 0."""
    s_bits = (amax_bits.view(torch.float32) / 6.0).view(torch.int32)
    field = s_bits >> 23
    mantissa = s_bits & _MANTISSA_MASK
    normal = field + (mantissa != 0).to(torch.int32)
    subnormal = torch.frexp((mantissa - 1).clamp(min=0).to(torch.float64))[1].to(torch.int32) - 22
    exponent = torch.where(field > 0, normal, subnormal).clamp(0, E8M0_MAX_FINITE)
    return torch.where(s_bits == 0, torch.full_like(exponent, MLX_ZERO_SCALE_BYTE), exponent)


def round_magnitudes(r: torch.Tensor, rounding: str) -> torch.Tensor:
    codes = torch.zeros(r.shape, dtype=torch.uint8, device=r.device)
    for midpoint, tie_up in zip(E2M1_MIDPOINTS.tolist(), TIE_ROUNDS_UP[rounding]):
        codes += (r >= midpoint) if tie_up else (r > midpoint)
    return codes


def _magnitudes_at(magnitude_x: torch.Tensor, scale: torch.Tensor, rounding: str) -> torch.Tensor:
    inv = _tables(magnitude_x.device)["inv_pow2_f32"][scale.long()]
    return round_magnitudes(magnitude_x * inv[:, None], rounding)


def _squared_error(magnitude_x: torch.Tensor, scale: torch.Tensor, rounding: str) -> torch.Tensor:
    tables = _tables(magnitude_x.device)
    codes = _magnitudes_at(magnitude_x, scale, rounding).long()
    quantized = tables["magnitudes_f64"][codes] * tables["pow2_f64"][scale.long()][:, None]
    diff = magnitude_x.double() - quantized
    return reference.sum_in_lanes(diff * diff)


def mse_scale_bytes(magnitude_x: torch.Tensor, amax_bits: torch.Tensor, rounding: str) -> torch.Tensor:
    floor = floor_scale_bytes(amax_bits).clamp(0, E8M0_MAX_FINITE)
    best = floor.clone()
    best_error = _squared_error(magnitude_x, floor, rounding)
    for step in (1, -1):
        candidate = floor + step
        valid = (candidate >= 0) & (candidate <= E8M0_MAX_FINITE)
        candidate = torch.where(valid, candidate, floor)
        error = _squared_error(magnitude_x, candidate, rounding)
        better = valid & (error < best_error)
        best = torch.where(better, candidate, best)
        best_error = torch.where(better, error, best_error)
    return best


def pack_codes(codes: torch.Tensor) -> torch.Tensor:
    return codes[..., 0::2] | (codes[..., 1::2] << 4)


def unpack_codes(blocks: torch.Tensor) -> torch.Tensor:
    return torch.stack((blocks & 0x0F, blocks >> 4), dim=-1).flatten(-2)


def choose_scales(x: torch.Tensor, scale_rule: str, rounding: str) -> torch.Tensor:
    """float32 [N, 32] -> the rule's E8M0 byte of each block, int32 [N]; 0xFF for blocks with NaN or Inf."""
    bits = x.view(torch.int32) & _ABS_MASK
    amax_bits = bits.amax(dim=1)
    if scale_rule == "mse":
        scales = mse_scale_bytes(bits.view(torch.float32), amax_bits, rounding)
    elif scale_rule == "mlx":
        scales = mlx_scale_bytes(amax_bits)
    else:
        scales = scale_bytes(amax_bits, scale_rule)
    return torch.where(amax_bits >= _INF_BITS, torch.full_like(scales, E8M0_NAN), scales)


def encode_at_scales(x: torch.Tensor, scales: torch.Tensor, rounding: str) -> torch.Tensor:
    """float32 [N, K] rounded onto the E2M1 grid of each row's scale byte [N] -> codes uint8 [N, K] (sign in
    bit 3). Rows whose scale is 0xFF get codes 0. Used by encode_blocks (K = 32) and by calibrated
    quantization, which rounds one column at a time under scales it chose earlier."""
    signed_bits = x.view(torch.int32)
    codes = _magnitudes_at((signed_bits & _ABS_MASK).view(torch.float32), scales, rounding)
    negative = (signed_bits < 0).to(torch.uint8)
    if rounding == "ggml":
        negative &= (codes != 0).to(torch.uint8)
    codes |= negative * E2M1_SIGN_BIT
    codes[scales == E8M0_NAN] = 0
    return codes


def encode_blocks(
    x: torch.Tensor, scale_rule: str = "floor", rounding: str = "rne"
) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 [N, 32] -> (packed uint8 [N, 16], scales uint8 [N]); non-finite blocks get 0xFF."""
    assert x.dtype == torch.float32 and x.dim() == 2 and x.shape[1] == BLOCK_SIZE
    scales = choose_scales(x, scale_rule, rounding)
    return pack_codes(encode_at_scales(x, scales, rounding)), scales.to(torch.uint8)


def decode_blocks(blocks: torch.Tensor, scales: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(packed [N, 16], scales [N]) -> values [N, 32] of dtype; see reference.decode_blocks for rounding."""
    tables = _tables(blocks.device)
    values = tables["values"][unpack_codes(blocks).long()] * tables["pow2_f32"][scales.long()][:, None]
    values = values if dtype == torch.float32 else values.to(dtype)
    nan_bits = CANONICAL_NAN_BITS[str(dtype).removeprefix("torch.")]
    word = torch.int32 if dtype == torch.float32 else torch.int16
    signed_bits = nan_bits - (1 << 32) if word == torch.int32 and nan_bits >= 1 << 31 else nan_bits
    values.view(word)[scales == E8M0_NAN] = signed_bits
    return values
