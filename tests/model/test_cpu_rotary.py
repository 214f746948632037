"""The C rotary rotation of the native path (_cpu_rotary.c) is its torch twin's (rotary_torch) bit for bit: each
multiply, the subtract and the add rounded to the dtype as torch's elementwise ops round them."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mxfp4.model.kernels import cpu_gemv, cpu_rotary, native_path, rotary_torch

pytestmark = pytest.mark.skipif(not cpu_gemv.available(), reason="the C kernels are built by pip install -e .")


@settings(max_examples=60, deadline=None)
@given(
    batch=st.integers(1, 3),
    heads=st.integers(1, 9),
    positions=st.integers(1, 8),
    dim=st.sampled_from([2, 8, 64, 128]),
    dtype=st.sampled_from([torch.float32, torch.bfloat16]),
    transposed=st.booleans(),
    seed=st.integers(0, 2**31),
)
def test_the_c_rotation_is_the_twins_bit_for_bit(batch, heads, positions, dim, dtype, transposed, seed):
    g = torch.Generator().manual_seed(seed)
    if transposed:  # as the model has it: a linear's [B, T, H, D] output seen as [B, H, T, D]
        x = torch.randn(batch, positions, heads, dim, generator=g).to(dtype).transpose(1, 2)
    else:
        x = torch.randn(batch, heads, positions, dim, generator=g).to(dtype)
    cos, sin = (torch.randn(positions, dim // 2, generator=g).to(dtype) for _ in range(2))
    got = cpu_rotary.rotary(x, cos, sin)
    want = rotary_torch.apply_rotary(x, cos, sin)
    assert got.is_contiguous() and torch.equal(got, want)


def test_nan_and_inf_pass_through_as_in_the_twin():
    x = torch.randn(1, 2, 1, 8)
    x[0, 0, 0, 1], x[0, 1, 0, 6] = float("nan"), float("inf")
    cos, sin = torch.randn(1, 4), torch.randn(1, 4)
    got, want = cpu_rotary.rotary(x, cos, sin), rotary_torch.apply_rotary(x, cos, sin)
    assert torch.equal(got.isnan(), want.isnan()) and torch.equal(got.nan_to_num(), want.nan_to_num())


def test_the_native_path_takes_the_c_rotation_for_decode_sized_inputs_only(monkeypatch):
    calls = []
    monkeypatch.setattr(cpu_rotary, "rotary", lambda x, *a: calls.append(x.shape[2]) or None)
    for positions in (1, native_path.EXPERT_TOKENS, native_path.EXPERT_TOKENS + 1):
        x, cos, sin = torch.randn(1, 2, positions, 8), torch.randn(positions, 4), torch.randn(positions, 4)
        assert torch.equal(native_path.rotary(x, cos, sin), rotary_torch.apply_rotary(x, cos, sin))
    assert calls == [1, native_path.EXPERT_TOKENS]


def test_mismatched_dtypes_and_shapes_are_left_to_the_twin():
    x = torch.randn(1, 2, 3, 8)
    assert cpu_rotary.rotary(x, torch.randn(3, 4).bfloat16(), torch.randn(3, 4).bfloat16()) is None
    assert cpu_rotary.rotary(x, torch.randn(2, 4), torch.randn(2, 4)) is None
    assert cpu_rotary.rotary(x.double(), torch.randn(3, 4).double(), torch.randn(3, 4).double()) is None
