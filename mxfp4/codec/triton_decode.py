"""E2M1 and E8M0 decoding as Triton device functions, shared by the codec kernel (mxfp4.codec.triton_codec)
and the MoE kernel that decodes weights in registers (mxfp4.model.kernels.moe_triton)."""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def e2m1_values(packed, ROWS: tl.constexpr, COLS: tl.constexpr):
    """Packed code bytes (int32 [ROWS, COLS // 2]) -> E2M1 values float32 [ROWS, COLS]. Byte j holds
    element 2j in its low nibble and 2j + 1 in its high one; a code is sign bit 3, magnitude bits 2..0
    (0, 0.5, 1, 1.5, 2, 3, 4, 6)."""
    codes = tl.reshape(tl.join(packed & 0xF, packed >> 4), (ROWS, COLS))
    m = codes & 7
    magnitude = tl.where(m < 4, m.to(tl.float32) * 0.5, tl.where(m < 7, (m - 2).to(tl.float32), 6.0))
    return tl.where((codes & 8) != 0, -magnitude, magnitude)


@triton.jit
def e8m0_values(s):
    """Scale bytes (int32) -> 2**(s - 127) as float32, built from its bits (2**-127 is subnormal). Byte 0xFF
    (NaN in the spec) comes out as +inf here: each caller puts its NaN in."""
    return tl.where(s > 0, s << 23, 0x00400000).to(tl.float32, bitcast=True)
