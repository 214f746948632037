"""The MXFP4 codec as Triton kernels (GPU; on the CPU under TRITON_INTERPRET=1 for tests).

Same names and arithmetic as mxfp4.codec.reference / mxfp4.codec.torch_codec (its twin): scales from float32
exponent bits, elements rounded by comparing with the exact midpoints, and the canonical quiet NaN for
scale byte 0xFF. Tests hold every kernel byte-identical to the numpy reference. The mse rule's
fixed-order float64 sums run through the torch twin (the same bytes) until they get a kernel.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .constants import CANONICAL_NAN_BITS
from .rules import ROUNDING_IDS, RULE_IDS
from .triton_decode import e2m1_values, e8m0_values

BLOCKS_PER_PROGRAM = 64
RULE_FLOOR, RULE_ROUND_UP, RULE_EVEN = RULE_IDS["floor"], RULE_IDS["round_up"], RULE_IDS["even"]
ROUND_RNE = ROUNDING_IDS["rne"]


@triton.jit
def _encode_kernel(
    x_ptr, blocks_ptr, scales_ptr, n_blocks, RULE: tl.constexpr, ROUNDING: tl.constexpr, BPP: tl.constexpr
):
    rows = tl.program_id(0) * BPP + tl.arange(0, BPP)  # [BPP] block indices
    valid = rows < n_blocks
    cols = tl.arange(0, 32)
    x = tl.load(x_ptr + rows[:, None] * 32 + cols[None, :], mask=valid[:, None], other=0.0).to(tl.float32)  # [BPP, 32]
    bits = x.to(tl.int32, bitcast=True)
    magnitude_bits = bits & 0x7FFFFFFF
    amax = tl.max(magnitude_bits, axis=1)  # bit order = magnitude order for non-NaN floats
    nonfinite = amax >= 0x7F800000
    s = (amax >> 23) - 2  # floor: X + 127 = exponent field - 2
    mantissa = amax & 0x7FFFFF
    if RULE == 1:  # round_up: one step up when the mantissa exceeds 1.5
        s += (mantissa >= 0x400001).to(tl.int32)
    if RULE == 2:  # even: one step up when the mantissa rounds to 2 (>= 1.75)
        s += (mantissa >= 0x600000).to(tl.int32)
    s = tl.minimum(tl.maximum(s, 0), 254)
    inv_bits = tl.where(s < 254, (254 - s) << 23, 0x00400000)  # 2**(127 - s); 2**-127 is subnormal
    r = magnitude_bits.to(tl.float32, bitcast=True) * inv_bits.to(tl.float32, bitcast=True)[:, None]
    if ROUNDING == 0:  # rne: ties at 0.75, 1.75, 3.5 go up to the even code
        m = (
            (r > 0.25).to(tl.int32)
            + (r >= 0.75).to(tl.int32)
            + (r > 1.25).to(tl.int32)
            + (r >= 1.75).to(tl.int32)
            + (r > 2.5).to(tl.int32)
            + (r >= 3.5).to(tl.int32)
            + (r > 5.0).to(tl.int32)
        )
        sign = (bits < 0).to(tl.int32)
    else:  # ggml: ties toward zero, and zero is always +0
        m = (
            (r > 0.25).to(tl.int32)
            + (r > 0.75).to(tl.int32)
            + (r > 1.25).to(tl.int32)
            + (r > 1.75).to(tl.int32)
            + (r > 2.5).to(tl.int32)
            + (r > 3.5).to(tl.int32)
            + (r > 5.0).to(tl.int32)
        )
        sign = ((bits < 0) & (m != 0)).to(tl.int32)
    codes = tl.where(nonfinite[:, None], 0, m | (sign << 3))  # [BPP, 32]
    low, high = tl.split(tl.reshape(codes, (BPP, 16, 2)))  # elements 2j and 2j + 1
    packed = (low | (high << 4)).to(tl.uint8)
    tl.store(blocks_ptr + rows[:, None] * 16 + tl.arange(0, 16)[None, :], packed, mask=valid[:, None])
    tl.store(scales_ptr + rows, tl.where(nonfinite, 255, s).to(tl.uint8), mask=valid)


@triton.jit
def _decode_kernel(
    blocks_ptr, scales_ptr, out_ptr, n_blocks, NAN_BITS: tl.constexpr, OUT_BF16: tl.constexpr, BPP: tl.constexpr
):
    rows = tl.program_id(0) * BPP + tl.arange(0, BPP)
    valid = rows < n_blocks
    packed = tl.load(blocks_ptr + rows[:, None] * 16 + tl.arange(0, 16)[None, :], mask=valid[:, None], other=0).to(
        tl.int32
    )
    s = tl.load(scales_ptr + rows, mask=valid, other=0).to(tl.int32)
    value = e2m1_values(packed, BPP, 32) * e8m0_values(s)[:, None]  # exact, or +-inf past float32
    if OUT_BF16:
        # Round to nearest even on the bit pattern: bfloat16 is float32's top half, so this is exact for
        # normals, subnormals and infinities alike (not every backend's conversion keeps subnormals).
        b = value.to(tl.int32, bitcast=True)
        value = (((b + 0x7FFF + ((b >> 16) & 1)) >> 16) & 0xFFFF).to(tl.int16).to(tl.bfloat16, bitcast=True)
    else:
        value = value.to(out_ptr.dtype.element_ty)
    if NAN_BITS == 0x7FC00000:
        nan = tl.full(value.shape, 0x7FC00000, tl.int32).to(tl.float32, bitcast=True)
    else:
        nan = tl.full(value.shape, NAN_BITS, tl.int16).to(out_ptr.dtype.element_ty, bitcast=True)
    value = tl.where((s == 255)[:, None], nan, value)
    tl.store(out_ptr + rows[:, None] * 32 + tl.arange(0, 32)[None, :], value, mask=valid[:, None])


def _grid(n_blocks: int):
    return (triton.cdiv(n_blocks, BLOCKS_PER_PROGRAM),)


def encode_blocks(
    x: torch.Tensor, scale_rule: str = "floor", rounding: str = "rne"
) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 / float16 / bfloat16 [N, 32] -> (packed uint8 [N, 16], scales uint8 [N])."""
    if scale_rule == "mse":
        from . import torch_codec

        return torch_codec.encode_blocks(x.float(), scale_rule, rounding)
    x = x.contiguous()
    n = x.shape[0]
    blocks = torch.empty((n, 16), dtype=torch.uint8, device=x.device)
    scales = torch.empty((n,), dtype=torch.uint8, device=x.device)
    if n:
        _encode_kernel[_grid(n)](
            x, blocks, scales, n, RULE=RULE_IDS[scale_rule], ROUNDING=ROUNDING_IDS[rounding], BPP=BLOCKS_PER_PROGRAM
        )
    return blocks, scales


def decode_blocks(blocks: torch.Tensor, scales: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(packed [N, 16], scales [N]) -> values [N, 32] of dtype (float32, float16 or bfloat16)."""
    n = blocks.shape[0]
    out = torch.empty((n, 32), dtype=dtype, device=blocks.device)
    if n:
        nan_bits = CANONICAL_NAN_BITS[str(dtype).removeprefix("torch.")]
        _decode_kernel[_grid(n)](
            blocks.contiguous(),
            scales.contiguous(),
            out,
            n,
            NAN_BITS=nan_bits,
            OUT_BF16=dtype == torch.bfloat16,
            BPP=BLOCKS_PER_PROGRAM,
        )
    return out
