"""Hand-worked MXFP4 blocks, one per rule, and every tie for both roundings.

The expected bytes were worked out by hand from the OCP MX v1.0 definitions (mxfp4.rules gives the
formulas). Codes are E2M1 nibbles: bit 3 sign, magnitudes 0 .5 1 1.5 2 3 4 6 -> codes 0..7.
HF packing: byte j = code[2j] | code[2j+1] << 4.
"""

import numpy as np
import pytest
from conftest import block

import mxfp4

CASES = [
    # (values, scale_rule, rounding, expected scale byte, expected 16 code bytes in hex)
    # amax 7 = 1.75 * 2**2 -> floor X = 0 (byte 0x7f). r = x:
    #   7 -> 6 (saturates, code 7); -0.75 tie -> 1 (code 2, even) -> 0xa; 1.25 tie -> 1 (2);
    #   3.5 tie -> 4 (6); 5 tie -> 4 (6); -2.5 tie -> 2 (4) -> 0xc; 0.25 tie -> 0 (0); -0.1 -> -0 (8).
    #   codes 7 a 2 6 6 c 0 8 -> bytes a7 62 c6 80.
    ((7.0, -0.75, 1.25, 3.5, 5.0, -2.5, 0.25, -0.1), "floor", "rne", 0x7F, "a762c680" + "00" * 12),
    # Same block, ggml ties toward zero: -0.75 -> -0.5 (9); 3.5 -> 3 (5); -0.1 -> +0 (0).
    #   codes 7 9 2 5 6 c 0 0 -> bytes 97 52 c6 00.
    ((7.0, -0.75, 1.25, 3.5, 5.0, -2.5, 0.25, -0.1), "floor", "ggml", 0x7F, "9752c600" + "00" * 12),
    # round_up: mantissa 1.75 > 1.5 -> X = 1 (0x80). r = x / 2 = 3.5 -.375 .625 1.75 2.5 -1.25 .125 -.05:
    #   3.5 tie -> 4 (6); -.375 -> -.5 (9); .625 -> .5 (1); 1.75 tie -> 2 (4); 2.5 tie -> 2 (4);
    #   -1.25 tie -> -1 (a); .125 -> 0 (0); -.05 -> -0 (8). bytes 96 41 a4 80.
    ((7.0, -0.75, 1.25, 3.5, 5.0, -2.5, 0.25, -0.1), "round_up", "rne", 0x80, "9641a480" + "00" * 12),
    # even: mantissa 1.75 rounds up to 2 -> X = 1, same as round_up here.
    ((7.0, -0.75, 1.25, 3.5, 5.0, -2.5, 0.25, -0.1), "even", "rne", 0x80, "9641a480" + "00" * 12),
    # amax 6.5 = 1.625 * 4: floor and even keep X = 0 (6.5 saturates to 6); round_up moves to X = 1.
    #   floor: 6.5 -> 7, -3 -> d, 1 -> 2, 0.6 -> .5 (1): bytes d7 12.
    ((6.5, -3.0, 1.0, 0.6), "floor", "rne", 0x7F, "d712" + "00" * 14),
    ((6.5, -3.0, 1.0, 0.6), "even", "rne", 0x7F, "d712" + "00" * 14),
    #   round_up: r = 3.25 -> 3 (5), -1.5 (b), .5 (1), .3 -> .5 (1): bytes b5 11.
    ((6.5, -3.0, 1.0, 0.6), "round_up", "rne", 0x80, "b511" + "00" * 14),
    # mse keeps floor when it is best: error at X=0 is .25 + .01 = .26; X=1 gives .25 + .16 = .41.
    ((6.5, -3.0, 1.0, 0.6), "mse", "rne", 0x7F, "d712" + "00" * 14),
    # mse picks floor - 1: [4, 0.25 x 31]. X=0: 0.25 ties to 0, error 31/16 = 1.94; X=1: same 1.94 (not
    # strictly better); X=-1: 4 -> 3 (saturates, error 1), 0.25 exact (code 1) -> total 1.
    #   codes 7 1 1 ... -> bytes 17 11 ... ; scale 0x7e.
    ((4.0,) + (0.25,) * 31, "mse", "rne", 0x7E, "17" + "11" * 15),
    ((4.0,) + (0.25,) * 31, "mse", "ggml", 0x7E, "17" + "11" * 15),
    # mse picks floor + 1: 32 x 7.875. X=0 saturates every one to 6 (error 32 * 1.875**2); X=1: r = 3.9375
    # -> 4 (code 6), error 32 * .125**2.
    ((7.875,) * 32, "mse", "rne", 0x80, "66" * 16),
    # All zero: every rule writes scale byte 0 (as ggml does) and +0 codes.
    ((), "floor", "rne", 0x00, "00" * 16),
    ((), "mse", "rne", 0x00, "00" * 16),
    # -0.0 everywhere: rne keeps the sign (code 8); ggml writes +0.
    ((-0.0,) * 32, "floor", "rne", 0x00, "88" * 16),
    ((-0.0,) * 32, "floor", "ggml", 0x00, "00" * 16),
    # Subnormal input 2**-128: exponent field 0 -> clamped to the smallest scale 2**-127 (byte 0);
    # r = 0.5 exactly (code 1), so the value survives.
    ((2.0**-128,) * 32, "floor", "rne", 0x00, "11" * 16),
    # Underflow: 2**-130 at scale 2**-127 is r = 0.125 -> 0.
    ((2.0**-130,) * 32, "floor", "rne", 0x00, "00" * 16),
    # Near float32 max: 3e38 has exponent 127 -> X = 125 (byte 0xfc); r = 7.05 -> saturates to 6.
    ((3e38,), "floor", "rne", 0xFC, "07" + "00" * 15),
    # round_up never saturates: 3e38 = 1.76 * 2**127 -> X = 126 (0xfd); r = 3.53 -> 4 (code 6).
    ((3e38,), "round_up", "rne", 0xFD, "06" + "00" * 15),
]


@pytest.mark.parametrize("values, rule, rounding, scale, hex_blocks", CASES)
def test_golden_block(values, rule, rounding, scale, hex_blocks, backend):
    x = np.array([values + (0.0,) * (32 - len(values))], np.float32)
    q = mxfp4.quantize(x, scale_rule=rule, rounding=rounding, backend=backend)
    assert q.scales.reshape(-1).tolist() == [scale]
    assert q.blocks.reshape(-1).tobytes().hex() == hex_blocks


def test_worked_block_decodes_to_its_values():
    # Codes 0..15 in order at scale 0x7f decode to the E2M1 table itself.
    blocks = np.frombuffer(bytes.fromhex("1032547698badcfe" + "00" * 8), np.uint8).reshape(1, 16)
    out = mxfp4.dequantize(blocks, np.array([0x7F], np.uint8))
    expected = [0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.0, -0.5, -1, -1.5, -2, -3, -4, -6] + [0] * 16
    assert out.tolist() == expected
    assert np.signbit(out[8]) and not np.signbit(out[0])


# Every midpoint between neighbouring magnitudes, at scale X = 0 (a 4.0 in the block fixes X = 0 for
# floor), with the code each rounding must give: rne to the even code, ggml toward zero.
TIES = [  # (r, rne code, ggml code)
    (0.25, 0, 0),
    (0.75, 2, 1),
    (1.25, 2, 2),
    (1.75, 4, 3),
    (2.5, 4, 4),
    (3.5, 6, 5),
    (5.0, 6, 6),
]


@pytest.mark.parametrize("rounding", ["rne", "ggml"])
def test_every_tie(rounding, backend):
    r = np.array([t[0] for t in TIES], np.float32)
    x = block(4.0, *r, *(-r))
    codes = mxfp4.layout.unpack_codes(mxfp4.quantize(x, rounding=rounding, backend=backend).blocks)[0, 0]
    expected = np.array([t[1] if rounding == "rne" else t[2] for t in TIES])
    assert codes[1:8].tolist() == expected.tolist()
    negative = expected | 8
    if rounding == "ggml":
        negative = np.where(expected == 0, 0, negative)  # -0.25 -> +0 under ggml
    assert codes[8:15].tolist() == negative.tolist()


def test_just_past_each_tie_rounds_away(backend):
    # One float32 ulp above a midpoint always goes to the upper code, under both rules.
    r = np.nextafter(np.array([t[0] for t in TIES], np.float32), np.float32(np.inf))
    for rounding in ("rne", "ggml"):
        q = mxfp4.quantize(block(4.0, *r), rounding=rounding, backend=backend)
        assert mxfp4.layout.unpack_codes(q.blocks)[0, 0, 1:8].tolist() == [1, 2, 3, 4, 5, 6, 7]


def test_nan_scale_block():
    x = block(1.0, np.nan)
    q = mxfp4.quantize(x, nonfinite="nan_scale")
    assert q.scales.tolist() == [[0xFF]] and not q.blocks.any()
    assert np.isnan(q.dequantize()).all()
