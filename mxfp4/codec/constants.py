"""Numbers of the MXFP4 format, each stated once with its meaning.

Sources: OCP Microscaling Formats (MX) v1.0 specification, section 5 (E8M0 scale), section 5.3.3
(FP4 E2M1 element) and section 6 (MXFP4 = 32 E2M1 elements sharing one E8M0 scale).
"""

from __future__ import annotations

import numpy as np

BLOCK_SIZE = 32
"""Elements that share one scale (spec: k = 32)."""

PACKED_BYTES_PER_BLOCK = BLOCK_SIZE // 2
"""Two 4-bit E2M1 codes per byte: 16 bytes of codes per block."""

GGUF_BYTES_PER_BLOCK = 1 + PACKED_BYTES_PER_BLOCK
"""GGUF ``block_mxfp4``: one E8M0 byte followed by 16 bytes of codes."""

GGUF_TYPE_MXFP4 = 39
"""``GGMLQuantizationType.MXFP4`` in ggml / the gguf package."""

BITS_PER_PARAM = (PACKED_BYTES_PER_BLOCK + 1) * 8 / BLOCK_SIZE
"""4.25: 128 bits of codes plus 8 bits of scale per 32 elements."""

E8M0_BIAS = 127
"""Scale byte s means 2**(s - 127)."""

E8M0_NAN = 0xFF
"""Scale byte 255 is NaN (spec, table 7): every element of that block decodes to NaN."""

E8M0_MAX_FINITE = 0xFE
"""Largest finite scale byte, 2**127."""

E2M1_MAX = 6.0
"""Largest E2M1 magnitude (code 0b0111)."""

E2M1_SIGN_BIT = 0b1000
"""Bit 3 of a code is the sign; bits 2..1 exponent (bias 1), bit 0 mantissa."""

E2M1_VALUES = np.array(
    [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0],
    dtype=np.float32,
)
"""Value of each of the 16 E2M1 codes (the spec's table for FP4 E2M1; no Inf, no NaN)."""

E2M1_MAGNITUDES = E2M1_VALUES[:8]
"""Magnitudes of codes 0..7, in increasing order, so a magnitude code is its index here."""

# Midpoints between neighbouring magnitudes: |r| beyond E2M1_MIDPOINTS[i] rounds to a magnitude code > i.
# Which midpoints round up is the tie rule; see mxfp4.rules.
E2M1_MIDPOINTS = np.array([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0], dtype=np.float32)
"""Exact midpoints between the magnitudes 0, 0.5, 1, 1.5, 2, 3, 4, 6."""

CANONICAL_NAN_BITS = {"float32": 0x7FC00000, "float16": 0x7E00, "bfloat16": 0x7FC0}
"""What a block with scale 0xFF decodes to, on every backend: the positive quiet NaN of each dtype
(numpy's np.nan cast; torch's own float32 -> bfloat16 cast would give 0xffff instead)."""
