"""Byte-level parity with the gguf package's MXFP4 (gguf.quants, the Python twin of ggml's C code).

`floor` + `ggml` rounding, moved to the GGUF layout, must equal gguf.quants.quantize byte for byte, and
our decoding must equal gguf.quants.dequantize. Two places where gguf departs from the OCP formula are
pinned down in their own tests below; parity inputs stay clear of them.
"""

import ml_dtypes
import numpy as np
import pytest
from gguf import GGMLQuantizationType
from gguf import quants as gguf_quants

import mxfp4
from mxfp4 import layout

MXFP4 = GGMLQuantizationType.MXFP4


def ours_as_gguf(x: np.ndarray, backend: str) -> np.ndarray:
    q = mxfp4.quantize(x, scale_rule="floor", rounding="ggml", backend=backend)
    return layout.hf_to_gguf(q.blocks, q.scales).reshape(x.shape[0], -1)


def gguf_safe(x: np.ndarray) -> np.ndarray:
    """Drop rows with a block gguf mishandles: amax < 2**-125 (its uint8 scale wraps) or a float32 amax
    within 8 ulps below a power of two (its float32 log2 rounds up to the power)."""
    amax = np.abs(x.reshape(x.shape[0], -1, 32)).max(axis=-1).astype(np.float32)
    tiny = (amax > 0) & (amax < 2.0**-125)
    mantissa = amax.view(np.uint32) & 0x7FFFFF
    near_power = mantissa >= 0x800000 - 8
    return x[~(tiny | near_power).any(axis=1)]


def random_rows(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((512, 256)).astype(np.float32)
    x *= np.exp2(rng.integers(-60, 60, size=(512, 1))).astype(np.float32)  # magnitudes 1e-18 .. 1e18
    x[rng.random(x.shape) < 0.05] = 0.0
    x[rng.random(x.shape) < 0.01] *= 50  # outliers that saturate under floor
    return x


def adversarial_rows() -> np.ndarray:
    """Exact ties at many scales, -0, zeros, saturation, one-ulp neighbours of every midpoint."""
    mids = np.array([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0], np.float32)
    pieces = [
        mids,
        -mids,
        np.nextafter(mids, np.float32(0)),
        np.nextafter(mids, np.float32(9)),
        [-0.0, 0.0, 7.0, -7.9, 6.0, -6.0],
    ]
    body = np.concatenate(pieces).astype(np.float32)  # 34 values
    rows = []
    for exponent in range(-120, 121, 7):
        row = np.zeros(64, np.float32)
        row[0], row[32] = 4.0, -4.0  # pins floor's X = 0 before scaling
        row[1:32], row[33:64] = body[:31], np.roll(body, 5)[:31]
        rows.append(row * np.float32(2.0**exponent))
    rows.append(np.full(64, -0.0, np.float32))
    rows.append(np.zeros(64, np.float32))
    return np.stack(rows)


@pytest.mark.parametrize("source", ["random0", "random1", "adversarial"])
def test_floor_ggml_bytes_equal_gguf_quantize(source, backend):
    built = adversarial_rows() if source == "adversarial" else random_rows(int(source[-1]))
    x = gguf_safe(built)
    assert x.shape[0] >= 0.9 * built.shape[0]  # the filter removes little
    with np.errstate(over="ignore"):
        expected = gguf_quants.quantize(x, MXFP4)
    assert np.array_equal(ours_as_gguf(x, backend), expected)


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16])
def test_half_inputs_match_gguf_too(dtype, backend):
    # bf16 / f16 mantissas are too short to sit within 8 float32 ulps of a power of two.
    x = random_rows(2)
    x = x[np.abs(x).max(axis=1) < 6e4].astype(dtype)
    x = gguf_safe(x.astype(np.float32)).astype(dtype)
    q = mxfp4.quantize(x, scale_rule="floor", rounding="ggml", backend=backend)
    expected = gguf_quants.quantize(x.astype(np.float32), MXFP4)
    assert np.array_equal(layout.hf_to_gguf(q.blocks, q.scales).reshape(x.shape[0], -1), expected)


def test_dequantize_equals_gguf_dequantize(backend):
    # Arbitrary bytes, scales 0..254 (gguf's float32 maths gives inf above 2**128 exactly as we do).
    rng = np.random.default_rng(7)
    raw = rng.integers(0, 256, size=(300, 8, 17), dtype=np.uint8)
    raw[..., 0] = rng.integers(0, 255, size=(300, 8))
    blocks, scales = layout.gguf_to_hf(raw)
    ours = mxfp4.dequantize(blocks, scales, backend=backend)
    with np.errstate(over="ignore"):
        theirs = gguf_quants.dequantize(raw.reshape(300, -1), MXFP4)
    assert np.array_equal(ours, theirs)


def test_divergence_gguf_scale_wraps_for_tiny_blocks():
    # gguf computes floor(log2(amax)) - 2 + 127 and casts to uint8, so amax < 2**-125 wraps: 2**-126
    # gets 0xff, the NaN scale. We clamp to byte 0 (2**-127), the smallest scale, as the spec's
    # saturating conversion intends.
    x = np.full((1, 32), 2.0**-126, np.float32)
    with np.errstate(over="ignore"):  # gguf then multiplies by 2**127 and overflows
        assert gguf_quants.quantize(x, MXFP4)[0, 0] == 0xFF
    q = mxfp4.quantize(x, rounding="ggml")
    assert q.scales.tolist() == [[0]]
    assert (q.dequantize() == x).all()  # 2**-126 = 2 * 2**-127 is code 2 exactly


def test_divergence_gguf_log2_rounds_up_below_a_power_of_two():
    # amax one float32 ulp below 2**-3: the true floor(log2) is -4, but float32 log2 rounds to -3.0, so
    # gguf picks a scale one step larger. We follow the OCP formula (computed from the exponent bits).
    amax = np.nextafter(np.float32(2.0**-3), np.float32(0))
    x = np.full((1, 32), amax, np.float32)
    assert gguf_quants.quantize(x, MXFP4)[0, 0] == 127 - 3 - 2
    assert mxfp4.quantize(x, rounding="ggml").scales.tolist() == [[127 - 4 - 2]]
