"""The mlx scale rule against mlx itself: mx.quantize(w, group_size=32, bits=4, mode="mxfp4") on the CPU."""

import sys

import numpy as np
import pytest
import torch

import mxfp4

if sys.platform not in ("linux", "darwin"):  # the dev extra installs mlx there; elsewhere it has no wheels
    pytest.skip("mlx has no wheels for this platform", allow_module_level=True)
import mlx.core as mx  # noqa: E402


def mlx_quantize(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """mlx's bytes in our layout: its uint32 words are the HF block bytes, little-endian."""
    words, scales = mx.quantize(mx.array(x), group_size=32, bits=4, mode="mxfp4")
    return np.array(words).view(np.uint8).reshape(-1, 16), np.array(scales).reshape(-1)


def every_exponent_blocks() -> np.ndarray:
    """A block per (float32 exponent field, mantissa) with that amax: every exponent, 64 mantissas each, the
    round_up boundary (m = 1.5 and the next float) and the subnormals included, other elements random."""
    rng = np.random.default_rng(0)
    mantissas = rng.integers(0, 1 << 23, 64).astype(np.uint32)
    mantissas[:4] = [0, 1, 0x400000, 0x400001]
    amax = ((np.arange(255, dtype=np.uint32)[:, None] << 23) | mantissas[None]).reshape(-1).view(np.float32)
    x = (rng.uniform(-1, 1, (len(amax), 32)) * amax[:, None]).astype(np.float32)
    x[:, 7] = amax
    return x


def tie_blocks() -> np.ndarray:
    """Every E2M1 midpoint and its neighbours, both signs, at several scales (6.0 pins X = 0 there)."""
    mids = np.array([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0], np.float32)
    near = np.concatenate([mids, np.nextafter(mids, np.float32(0)), np.nextafter(mids, np.float32(9)), [0.0, -0.0]])
    values = np.concatenate([near, -near]).astype(np.float32)
    values = np.concatenate([values, np.zeros(-len(values) % 31, np.float32)]).reshape(-1, 31)
    block = np.concatenate([np.full((len(values), 1), 6.0, np.float32), values], axis=1)
    return np.concatenate([block * np.float32(2.0**k) for k in range(-130, 120, 7)]).astype(np.float32)


def mlx_wraps(x: np.ndarray) -> np.ndarray:
    """Blocks where mlx's X is below -127 and it wraps the scale byte (0 < fl(amax / 6) < 2**-127)."""
    quotient = (np.abs(x).max(axis=1) / np.float32(6)).astype(np.float32)
    return (quotient > 0) & (quotient < np.float32(2.0**-127))


@pytest.mark.parametrize("backend", ["numpy", "torch", "auto"])
def test_the_mlx_rule_gives_mlx_bytes_at_every_exponent_and_tie(backend):
    x = np.concatenate([every_exponent_blocks(), tie_blocks(), np.zeros((2, 32), np.float32)])
    x[-1] = -0.0
    x[-3, 0] = np.float32(2.0**-149)  # amax / 6 rounds to 0: mlx stores X = 0
    x = x[~mlx_wraps(x)]
    want_blocks, want_scales = mlx_quantize(x)
    got = mxfp4.quantize(x, scale_rule="mlx", backend=backend)  # rounding defaults to the rule's own (ggml)
    assert np.array_equal(got.scales.reshape(-1), want_scales)
    assert np.array_equal(got.blocks.reshape(-1, 16), want_blocks)


def test_the_mlx_rule_gives_mlx_bytes_on_weights_of_every_magnitude():
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((20000, 32)) * np.exp(rng.uniform(-80, 80, (20000, 1)))).astype(np.float32)
    for dtype in (torch.float32, torch.bfloat16):
        t = torch.from_numpy(x).to(dtype)
        want_blocks, want_scales = mlx_quantize(t.float().numpy())
        got = mxfp4.quantize(t, scale_rule="mlx")
        assert np.array_equal(got.scales.numpy().reshape(-1), want_scales)
        assert np.array_equal(got.blocks.numpy().reshape(-1, 16), want_blocks)


def test_where_mlx_wraps_its_scale_byte_its_own_round_trip_fails_and_we_clamp_like_round_up():
    x = every_exponent_blocks()
    tiny = x[mlx_wraps(x)]
    assert len(tiny) > 64  # the sweep reaches that edge
    words, scales = mx.quantize(mx.array(tiny), group_size=32, bits=4, mode="mxfp4")
    theirs = np.array(mx.dequantize(words, scales, group_size=32, bits=4, mode="mxfp4", dtype=mx.float32))
    assert not np.isfinite(theirs).all()  # e.g. amax 2e-38 stores byte 255: mlx decodes it to inf
    ours = mxfp4.quantize(tiny, scale_rule="mlx")
    round_up = mxfp4.quantize(tiny, scale_rule="round_up", rounding="ggml")
    assert np.array_equal(ours.scales, round_up.scales) and np.array_equal(ours.blocks, round_up.blocks)
    assert np.isfinite(ours.dequantize()).all()


def test_mlx_rule_defaults_to_ggml_rounding_and_other_rules_to_rne():
    from mxfp4.codec.rules import default_rounding

    assert default_rounding("mlx") == "ggml"
    assert {default_rounding(r) for r in mxfp4.rules.KERNEL_RULES} == {"rne"}
    x = np.full((1, 32), 0.75, np.float32)
    x[0, 0] = 6.0
    assert mxfp4.quantize(x, scale_rule="mlx").blocks.reshape(-1)[0] >> 4 == 1  # 0.75 -> 0.5: a tie toward zero
    assert mxfp4.quantize(x, scale_rule="mlx", rounding="rne").blocks.reshape(-1)[0] >> 4 == 2  # asked for: 0.75 -> 1
