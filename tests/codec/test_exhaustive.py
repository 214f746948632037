"""Whole input spaces where they are small: 16 codes x 256 scales, 256 byte values in every position."""

import ml_dtypes
import numpy as np
import pytest

import mxfp4
from mxfp4 import layout
from mxfp4.codec.constants import E2M1_VALUES
from mxfp4.testing.exhaustive import all_bytes_at_every_scale

DTYPES = {"float32": np.float32, "float16": np.float16, "bfloat16": ml_dtypes.bfloat16}


def formula(blocks, scales, dtype):
    """Value = E2M1[code] * 2**(s - 127), computed in Python floats (float64, exact), then rounded once.
    Scale 0xFF: the positive quiet NaN (np.nan)."""
    codes = layout.unpack_codes(blocks).astype(int)
    e2m1 = [float(v) for v in E2M1_VALUES]
    out = np.empty(codes.shape, dtype=np.float64)
    for i in range(codes.shape[0]):
        s = int(scales[i])
        factor = float("nan") if s == 0xFF else 2.0 ** (s - 127)
        out[i] = [e2m1[c] * factor for c in codes[i]]
    with np.errstate(over="ignore"):
        return out.astype(dtype)


@pytest.mark.parametrize("dtype_name", list(DTYPES))
def test_every_code_at_every_scale_decodes_to_the_formula(dtype_name, backend):
    blocks, scales = all_bytes_at_every_scale()
    got = mxfp4.dequantize(blocks, scales, dtype_name, backend=backend).reshape(-1, 32)
    want = formula(blocks, scales, DTYPES[dtype_name])
    # Compare bit patterns, so -0.0 vs +0.0 and NaN are checked too.
    assert np.array_equal(got.view(np.uint8), want.view(np.uint8))


def test_every_code_and_scale_is_covered():
    blocks, scales = all_bytes_at_every_scale()
    codes = layout.unpack_codes(blocks)
    for s in (0, 127, 254, 255):
        assert set(np.unique(blocks[scales == s])) == set(range(256))
        assert set(np.unique(codes[scales == s])) == set(range(16))


def test_every_byte_survives_the_gguf_round_trip():
    blocks, scales = all_bytes_at_every_scale()
    raw = layout.hf_to_gguf(blocks, scales)
    assert raw.shape == (blocks.shape[0], 17)
    back_blocks, back_scales = layout.gguf_to_hf(raw)
    assert np.array_equal(back_blocks, blocks) and np.array_equal(back_scales, scales)
    # And the other direction, starting from arbitrary GGUF bytes.
    again = layout.hf_to_gguf(*layout.gguf_to_hf(raw[::-1].copy()))
    assert np.array_equal(again, raw[::-1])


def test_every_byte_survives_the_code_round_trip():
    blocks, _ = all_bytes_at_every_scale()
    codes = layout.unpack_codes(blocks)
    assert codes.max() == 15
    assert np.array_equal(layout.pack_codes(codes), blocks)


def test_gguf_nibble_order_moves_codes_where_the_spec_says():
    # Element j of a block: HF byte j // 2 (low nibble if j even); GGUF qs byte j % 16 (low if j < 16).
    codes = (np.arange(32) % 16).astype(np.uint8).reshape(1, 32)
    hf = layout.pack_codes(codes)
    qs = layout.hf_to_gguf_nibbles(hf)
    assert [qs[0, j % 16] >> (4 * (j // 16)) & 15 for j in range(32)] == codes[0].tolist()
    assert np.array_equal(layout.gguf_to_hf_nibbles(qs), hf)


SCALE_RULES = mxfp4.rules.SCALE_RULES


@pytest.mark.parametrize("rule", SCALE_RULES)
@pytest.mark.parametrize("rounding", mxfp4.rules.ROUNDINGS)
def test_requantizing_decoded_mxfp4_gives_the_same_values(rule, rounding, backend):
    # Scales kept 4..250 so the rescaled block stays inside E8M0's range (a block whose largest code is
    # 0.5 needs a scale 3 steps lower). Requantizing may change bytes (e.g. -0, smaller scale), not values.
    blocks, scales = all_bytes_at_every_scale()
    keep = (scales >= 4) & (scales <= 250)
    blocks, scales = blocks[keep], scales[keep]
    values = mxfp4.dequantize(blocks, scales)
    if rule not in mxfp4.rules.KERNEL_RULES and backend not in ("numpy", "torch"):
        with pytest.raises(mxfp4.errors.OptionError, match="runs on backend"):  # the C kernels lack this rule
            mxfp4.quantize(values, scale_rule=rule, rounding=rounding, backend=backend)
        return
    again = mxfp4.quantize(values, scale_rule=rule, rounding=rounding, backend=backend).dequantize()
    assert np.array_equal(again, values)


def test_ml_dtypes_float4_cast_equals_rne_on_a_dense_sweep(backend):
    # Every float32 in (-8, 8) on a grid of 2**-12 plus one ulp either side of each E2M1 midpoint, in
    # blocks whose 4.0 pins floor's scale to X = 0, so the code is the rounding of the value itself.
    grid = np.arange(-8 * 4096 + 1, 8 * 4096, dtype=np.float32) / 4096
    mids = np.array([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0], np.float32)
    mids = np.concatenate([mids, -mids])
    near = np.concatenate(
        [np.nextafter(mids, np.float32(9)), np.nextafter(mids, np.float32(-9)), [-0.0, 1e-30, -1e-30]]
    )
    values = np.concatenate([grid, near]).astype(np.float32)
    values = np.concatenate([values, np.zeros(-len(values) % 31, np.float32)]).reshape(-1, 31)
    x = np.concatenate([np.full((values.shape[0], 1), 4.0, np.float32), values], axis=1)
    q = mxfp4.quantize(x, rounding="rne", backend=backend)
    assert (q.scales == 127).all()
    codes = layout.unpack_codes(q.blocks.reshape(-1, 16)).reshape(-1, 32)[:, 1:]
    expected = values.astype(ml_dtypes.float4_e2m1fn).view(np.uint8)
    assert np.array_equal(codes, expected)


def test_native_layout_kernels_equal_the_numpy_reference():
    from mxfp4.codec import native

    if not native.available():
        pytest.fail("native kernels not built")
    blocks, scales = all_bytes_at_every_scale()
    raw = layout.hf_to_gguf(blocks, scales, backend="numpy")
    assert np.array_equal(layout.hf_to_gguf(blocks, scales), raw)
    shuffled = raw[np.random.default_rng(0).permutation(len(raw))]
    for got, want in zip(layout.gguf_to_hf(shuffled), layout.gguf_to_hf(shuffled, backend="numpy")):
        assert np.array_equal(got, want)


def test_split_rows_equals_splitting_after_repacking():
    # Even rows (gate) and odd rows (up) into two GGUF tensors, native and reference alike.
    blocks, scales = all_bytes_at_every_scale()
    blocks, scales = blocks.reshape(64, 64, 16), scales.reshape(64, 64)
    raw = layout.hf_to_gguf(blocks, scales, backend="numpy")
    for backend in ("auto", "numpy"):
        even, odd = layout.hf_to_gguf_split_rows(blocks, scales, backend=backend)
        assert np.array_equal(even, raw[0::2]) and np.array_equal(odd, raw[1::2])
