"""The C RMSNorm of the native path (_cpu_norm.c) against its torch twin (norm_torch), within the bound of two
float32 evaluations: the twin's mean of squares is within gamma(C) of the exact one (any summation order), the C
kernel's within 2u (summed in float64), so their reciprocal square roots differ by at most half that plus a few
roundings (eps, sqrt, divide), and the two products add two roundings each; a bf16 output adds one bf16 ulp."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_cpu_gemv import U, gamma

from mxfp4.model.kernels import cpu_gemv, cpu_norm, native_path, norm_torch

pytestmark = pytest.mark.skipif(not cpu_gemv.available(), reason="the C kernels are built by pip install -e .")


def allowed(want: torch.Tensor, cols: int, dtype: torch.dtype) -> torch.Tensor:
    magnitude = want.double().abs()
    bound = ((gamma(cols) + 2 * U) / 2 + 16 * U) * magnitude
    if dtype == torch.bfloat16:  # two values that close may round to neighbouring bf16 values
        exponent = torch.floor(torch.log2(magnitude.clamp(min=2.0**-126)))
        bound = bound * 2 + torch.exp2(exponent - 7)
    return bound


@settings(max_examples=60, deadline=None)
@given(
    rows=st.integers(1, 8),
    cols=st.sampled_from([1, 7, 64, 129, 2880]),
    dtype=st.sampled_from([torch.float32, torch.bfloat16]),
    weight_dtype=st.sampled_from([torch.float32, torch.bfloat16]),
    magnitude=st.sampled_from([1e-20, 1e-3, 1.0, 1e15]),
    seed=st.integers(0, 2**31),
)
def test_the_c_norm_is_the_twin_within_the_bound(rows, cols, dtype, weight_dtype, magnitude, seed):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(rows, cols, generator=g) * magnitude).to(dtype)
    weight = (1 + torch.randn(cols, generator=g) / 4).to(weight_dtype)
    got = cpu_norm.rms_norm(x, weight, 1e-5)
    want = norm_torch.rms_norm(x, weight, 1e-5)
    assert got.dtype == want.dtype == dtype and got.shape == want.shape
    assert ((got.double() - want.double()).abs() <= allowed(want, cols, dtype)).all()


def test_nan_and_zero_rows():
    x = torch.randn(3, 64)
    x[1, 5] = math.nan
    x[2] = 0.0
    got = cpu_norm.rms_norm(x, torch.ones(64), 1e-5)
    assert torch.isfinite(got[0]).all() and got[1].isnan().all() and (got[2] == 0).all()


def test_the_native_path_takes_the_c_norm_for_decode_sized_inputs_only(monkeypatch):
    calls = []
    monkeypatch.setattr(cpu_norm, "rms_norm", lambda *a: calls.append(a[0].shape) or None)
    weight = torch.ones(64)
    for rows in (1, native_path.EXPERT_TOKENS, native_path.EXPERT_TOKENS + 1):
        x = torch.randn(1, rows, 64)
        assert torch.equal(native_path.rms_norm(x, weight, 1e-5), norm_torch.rms_norm(x, weight, 1e-5))
    assert [s[1] for s in calls] == [1, native_path.EXPERT_TOKENS]


def test_other_dtypes_and_shapes_are_left_to_the_twin():
    assert cpu_norm.rms_norm(torch.randn(2, 8, dtype=torch.float64), torch.ones(8), 1e-5) is None
    assert cpu_norm.rms_norm(torch.randn(2, 8), torch.ones(9), 1e-5) is None
