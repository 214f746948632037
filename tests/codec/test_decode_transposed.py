"""dequantize_transposed: the decoded matrix transposed, bit for bit, from the one-pass C kernel and from the
fallback, for numpy and torch inputs, every output dtype, and row counts off the kernel's 32-row tiles."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mxfp4.codec import decode, native
from mxfp4.errors import ShapeError

DTYPES = ["bfloat16", "float16", "float32"]


def every_byte_pair():
    """Blocks and scales in which every (scale byte, code byte) pair occurs: 256 rows of 16 blocks each."""
    codes = np.tile(np.arange(256, dtype=np.uint8).reshape(16, 16), (256, 1)).reshape(256, 16, 16)
    scales = np.repeat(np.arange(256, dtype=np.uint8), 16).reshape(256, 16)
    return codes, scales


def bits(x) -> tuple:
    if isinstance(x, torch.Tensor):
        return tuple(x.shape), x.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
    return x.shape, np.ascontiguousarray(x).view(np.uint8).tobytes()


def same_bits(a, b) -> bool:
    return bits(a) == bits(b)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", ["native", "numpy"])
def test_every_scale_and_code_byte_decodes_transposed(dtype, backend):
    if backend == "native" and not native.available():
        pytest.skip("the C kernels are not built")
    blocks, scales = every_byte_pair()
    with np.errstate(over="ignore"):
        want = np.ascontiguousarray(decode.dequantize(blocks, scales, dtype, backend="numpy").T)
        got = decode.dequantize_transposed(blocks, scales, dtype, backend=backend)
    assert same_bits(got, want)  # NaN (scale 0xFF) and inf (past float16's range) included, bit for bit


@settings(max_examples=30, deadline=None)
@given(
    rows=st.integers(1, 200),  # off the 32-row tiles, and past one thread's share
    per_row=st.integers(1, 9),
    dtype=st.sampled_from(DTYPES),
    as_torch=st.booleans(),
    reuse=st.booleans(),
    seed=st.integers(0, 2**31),
)
def test_random_matrices_equal_the_decoded_transpose(rows, per_row, dtype, as_torch, reuse, seed):
    g = np.random.default_rng(seed)
    blocks = g.integers(0, 256, (rows, per_row, 16), dtype=np.uint8)
    scales = g.integers(110, 140, (rows, per_row), dtype=np.uint8)
    if as_torch:
        blocks, scales = torch.from_numpy(blocks), torch.from_numpy(scales)
    want = decode.dequantize(blocks, scales, dtype)
    want = want.T.contiguous() if as_torch else np.ascontiguousarray(want.T)
    out = None
    if reuse:
        out = torch.full_like(want, 7) if as_torch else np.full_like(want, 7)
    got = decode.dequantize_transposed(blocks, scales, dtype, out=out)
    assert same_bits(got, want)
    assert out is None or got is out


def test_many_rows_split_over_threads_at_tile_edges():
    rows = 3 * native.TILE_ROWS * 100 + 5  # several tasks, the last one short
    g = np.random.default_rng(1)
    blocks = g.integers(0, 256, (rows, 11, 16), dtype=np.uint8)
    scales = g.integers(110, 140, (rows, 11), dtype=np.uint8)
    want = np.ascontiguousarray(decode.dequantize(blocks, scales, "bfloat16").T)
    assert same_bits(decode.dequantize_transposed(blocks, scales, "bfloat16"), want)


def test_wrong_shapes_and_buffers_are_named():
    blocks, scales = np.zeros((4, 2, 16), np.uint8), np.zeros((4, 2), np.uint8)
    with pytest.raises(ShapeError, match="rows, blocks per row, 16"):
        decode.dequantize_transposed(blocks.reshape(8, 16), scales.reshape(8), "float32")
    with pytest.raises(ShapeError, match=r"shape \(64, 4\)"):
        decode.dequantize_transposed(blocks, scales, "float32", out=np.empty((4, 64), np.float32))
