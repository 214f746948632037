"""greedy_token is torch.argmax(-1, keepdim=True) to the index, found by numpy on the CPU: ties (the first of equal
maxima), NaN (the first NaN), infinities, signed zeros, every dtype it widens, batches, strided views."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mxfp4.model.greedy import greedy_token

SPECIALS = [float("nan"), float("inf"), -float("inf"), 0.0, -0.0, 1.0, -1.0, 65504.0, 1e-8]


@settings(max_examples=300, deadline=None)
@given(
    rows=st.integers(1, 3),
    width=st.integers(1, 40),
    seed=st.integers(0, 2**31 - 1),
    special_share=st.sampled_from([0.0, 0.1, 0.5]),
    dtype=st.sampled_from([torch.float32, torch.bfloat16, torch.float16]),
)
def test_greedy_token_is_torchs_argmax(rows, width, seed, special_share, dtype):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(-3, 4, (rows, width), generator=g).float()  # few distinct values: ties everywhere
    specials = torch.tensor(SPECIALS)[torch.randint(0, len(SPECIALS), (rows, width), generator=g)]
    x = torch.where(torch.rand(rows, width, generator=g) < special_share, specials, x).to(dtype)
    got = greedy_token(x)
    assert got.dtype == torch.int64 and torch.equal(got, x.argmax(-1, keepdim=True))


def test_greedy_token_of_a_vocab_wide_strided_view_and_of_what_numpy_cannot_take():
    logits = torch.randn(2, 3, 201_088).bfloat16()
    last = logits[:, -1]  # a view with the stride of three positions
    assert torch.equal(greedy_token(last), last.argmax(-1, keepdim=True))
    grad = torch.randn(2, 50, requires_grad=True)
    assert torch.equal(greedy_token(grad), grad.argmax(-1, keepdim=True))
    ints = torch.randint(0, 9, (2, 50))
    assert torch.equal(greedy_token(ints), ints.argmax(-1, keepdim=True))


@pytest.mark.parametrize("dtype", [torch.float64, torch.int32])
def test_greedy_token_leaves_other_dtypes_to_torch(dtype):
    """float64 does not narrow exactly to float32: torch's argmax takes it (and ints)."""
    x = torch.tensor([[1, 1 + 2**-40, 0]], dtype=torch.float64).to(dtype)
    assert torch.equal(greedy_token(x), x.argmax(-1, keepdim=True))
