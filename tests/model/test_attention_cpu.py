"""The native path's prefill attention (torch's fused CPU flash attention, the sink applied from its logsumexp)
against the reference attention_torch, within the float rounding of two evaluation orders.

The bound, to first order in the unit roundoff u of the dtype: each logit l_j = scale * q.k_j is a D-term dot
product, so two evaluations differ by at most 2 * gamma(D) * scale * sum_i |q_i k_ji|; the fused kernel also
rounds the scale to float32 (torch's FlashAttentionKernel.cpp keeps it as a float whatever the dtype), which
moves a logit by up to 2**-24 of its size. With delta the sum of the two, a weight exp(l_j - L) moves by a factor
of at most exp(2 delta) (its own logit and the logsumexp); the kernel's exponential is torch's exp_u20, "ULP=20"
in its source (relative error 20 * 2**-23, counted in the numerator and the denominator); the normalisation,
the sink's sigmoid and the S-term weighted sum of values add at most gamma(2S + 16) relative to
sum_j p_j |v_j| <= max |v|. Both sides carry such errors, hence the factor 2 on the whole."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mxfp4.model.kernels import attention_cpu, attention_torch, cpu_attention, cpu_gemv
from mxfp4.model.layers import LayerCache

UNIT = {torch.float32: 2.0**-24, torch.float64: 2.0**-53}
EXP_ERROR = 20 * 2.0**-23  # torch's exp_u20, used by its fused CPU attention
SCALE_ROUNDING = 2.0**-24


def gamma(n: int, u: float) -> float:
    return n * u / (1 - n * u)


def bound(q, k, v, dtype) -> float:
    u, d, s = UNIT[dtype], q.shape[-1], k.shape[2]
    groups = q.shape[1] // k.shape[1]
    kk, vv = k.repeat_interleave(groups, 1).double(), v.repeat_interleave(groups, 1).double()
    magnitude = (q.double().abs() @ kk.abs().transpose(-1, -2)).max().item() * d**-0.5
    delta = (2 * gamma(d, u) + SCALE_ROUNDING) * magnitude
    return 2 * ((math.exp(2 * delta) - 1) + 2 * EXP_ERROR + gamma(2 * s + 16, u)) * vv.abs().max().item()


@settings(max_examples=30, deadline=None)
@given(
    queries=st.integers(1, 70),
    cached=st.integers(0, 40),  # keys already in the cache before these queries: chunked prefill
    kv_heads=st.integers(1, 3),
    groups=st.integers(1, 4),
    head_dim=st.sampled_from([8, 16, 64]),
    window=st.one_of(st.none(), st.integers(1, 80)),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    seed=st.integers(0, 2**31),
)
def test_fused_attention_equals_the_reference_within_the_bound(
    queries, cached, kv_heads, groups, head_dim, window, dtype, seed
):
    g = torch.Generator().manual_seed(seed)
    heads, keys = kv_heads * groups, cached + queries
    q = torch.randn(1, heads, queries, head_dim, generator=g, dtype=dtype) * 2
    k = torch.randn(1, kv_heads, keys, head_dim, generator=g, dtype=dtype) * 2
    v = torch.randn(1, kv_heads, keys, head_dim, generator=g, dtype=dtype)
    sinks = torch.randn(heads, generator=g, dtype=dtype) * 3
    want = attention_torch.attention(q, k, v, sinks, q_start=cached, window=window)
    fused = (attention_cpu.fused_attention,) if attention_cpu.available() else ()  # torch >= 2.2
    for path in (*fused, attention_cpu.grouped_attention, attention_cpu.attention, c_kernel):
        got = path(q, k, v, sinks, q_start=cached, window=window)
        if got is None:  # the C kernel takes bf16 and float32 only
            assert path is c_kernel and dtype == torch.float64
            continue
        assert got.dtype == dtype and got.shape == want.shape
        assert (got - want).abs().max().item() <= bound(q, k, v, dtype), path.__name__


def c_kernel(q, k, v, sinks, *, q_start, window):
    """cpu_attention.attention under the other paths' signature (its result does not depend on q_start)."""
    return cpu_attention.attention(q, k, v, sinks, window=window)


def test_a_dominant_sink_takes_the_weight_from_every_key():
    """A sink far above every logit leaves the output near zero; one far below leaves plain softmax attention."""
    q, k, v = torch.randn(1, 2, 6, 8), torch.randn(1, 2, 6, 8), torch.randn(1, 2, 6, 8)
    high = attention_cpu.attention(q, k, v, torch.full((2,), 60.0), q_start=0, window=None)
    assert high.abs().max() < 1e-20
    low = attention_cpu.attention(q, k, v, torch.full((2,), -60.0), q_start=0, window=None)
    plain = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert (low - plain).abs().max() <= 2 * bound(q, k, v, torch.float32)


def test_bf16_decoding_within_the_bf16_bound_of_the_exact_result():
    """One query against a bf16 cache, against the float64 evaluation of the same bf16 inputs (the grouped path,
    which decoding takes where the C kernel does not apply; the C kernel's own bf16 test is below). It
    rounds each logit to bf16 (u = 2**-8, after a float32 D-term sum), each softmax weight to bf16, and the
    output; so with delta = (u + gamma(D)) * scale * max sum |q k| the error is at most
    (exp(2 delta) - 1 + u + gamma(S)) * max |v| + u * max |out|."""
    g = torch.Generator().manual_seed(3)
    q, k, v = (
        torch.randn(1, 64, 1, 64, generator=g),
        torch.randn(1, 8, 300, 64, generator=g),
        torch.randn(1, 8, 300, 64, generator=g),
    )
    b = [t.bfloat16() for t in (q, k, v, torch.randn(64, generator=g))]
    exact = attention_torch.attention(*[t.double() for t in b], q_start=299, window=None)
    ours = attention_cpu.grouped_attention(*b, q_start=299, window=None).double()  # decoding takes C here
    u, u32 = 2.0**-8, UNIT[torch.float32]
    qq, kk, vv = b[0].double(), b[1].double().repeat_interleave(8, 1), b[2].double()
    delta = (u + gamma(64, u32)) * 64**-0.5 * (qq.abs() @ kk.abs().transpose(-1, -2)).max().item()
    tolerance = (math.exp(2 * delta) - 1 + u + gamma(300, u32)) * vv.abs().max().item() + u * exact.abs().max().item()
    assert (ours - exact).abs().max().item() <= tolerance


@pytest.mark.skipif(not cpu_gemv.available(), reason="the C kernels are built by pip install -e .")
@pytest.mark.parametrize("queries, window, batch", [(1, None, 1), (1, 128, 2), (5, 40, 1), (31, None, 2)])
def test_the_c_kernel_on_bf16_within_float32_rounding_of_the_exact_result(queries, window, batch):
    """bf16 inputs, float32 arithmetic, rounded once to bf16 at the end: against the float64 evaluation of the same
    inputs the error is the float32 bound (the logits' D-term sums, exp, the S-term weighted sum) plus the bf16
    rounding of the output (unit roundoff 2**-8). More keys than one chunk of the online softmax (300 against 64),
    windows that cut in, several queries and batches."""
    g = torch.Generator().manual_seed(queries)
    q = torch.randn(batch, 64, queries, 64, generator=g).bfloat16()
    k = (torch.randn(batch, 8, 300, 64, generator=g) * 2).bfloat16()
    v = torch.randn(batch, 8, 300, 64, generator=g).bfloat16()
    sinks = torch.randn(64, generator=g).bfloat16()
    got = cpu_attention.attention(q, k, v, sinks, window=window)
    assert got is not None and got.dtype == torch.bfloat16
    exact = attention_torch.attention(q.double(), k.double(), v.double(), sinks.double(), q_start=299, window=window)
    u = UNIT[torch.float32]
    magnitude = (q.double().abs() @ k.double().repeat_interleave(8, 1).abs().transpose(-1, -2)).max().item() / 8
    delta = 2 * gamma(64, u) * magnitude
    vmax = v.double().abs().max().item()
    tolerance = ((math.exp(2 * delta) - 1) + 4 * u + gamma(2 * 300 + 16, u)) * vmax + 2.0**-8 * exact.abs().max().item()
    assert (got.double() - exact).abs().max().item() <= tolerance


@pytest.mark.skipif(not cpu_gemv.available(), reason="the C kernels are built by pip install -e .")
@pytest.mark.parametrize("window", [None, 16])
def test_the_c_kernel_reads_a_caches_views_in_place_with_the_contiguous_result(window):
    """A LayerCache's keys and values are views of a store with room to spare (heads `capacity` positions apart):
    the kernel reads them where they are and gives, bit for bit, what it gives on contiguous copies."""
    g = torch.Generator().manual_seed(3)
    cache = LayerCache(window=window)
    cache.extend(torch.randn(2, 3, 40, 64, generator=g).bfloat16(), torch.randn(2, 3, 40, 64, generator=g).bfloat16())
    for _ in range(3):
        k, v = torch.randn(2, 3, 1, 64, generator=g).bfloat16(), torch.randn(2, 3, 1, 64, generator=g).bfloat16()
        keys, values = cache.extend(k, v)
        assert not keys.is_contiguous() and cpu_attention._capacity(keys, values) == cache._store[0].shape[2]
        q, sinks = torch.randn(2, 6, 1, 64, generator=g).bfloat16(), torch.randn(6, generator=g)
        got = cpu_attention.attention(q, keys, values, sinks, window=window)
        copied = cpu_attention.attention(q, keys.contiguous(), values.contiguous(), sinks, window=window)
        assert got is not None and torch.equal(got, copied)


def test_the_c_kernels_exp_is_within_two_ulp_of_exp_over_every_weight_it_makes():
    """The attention kernel's vector exp on x <= 0 against float64 exp: 2**22 points evenly over [-87.3, 0], 2**20
    random ones, every float32 in the ulp neighbourhood of the range reduction's switch points (n ln 2 + ln 2 / 2),
    and the edges; within 2 ulp of the result, 0 below -87.33654 (where it flushes what would be a denormal) and NaN
    for NaN."""
    import ctypes

    import numpy as np

    from mxfp4.model.kernels.cpu_library import library

    lib = library()
    if lib is None:
        pytest.skip("the C kernels are built by pip install -e .")
    switches = (np.arange(-126, 1) + 0.5) * np.log(2.0)
    near = (switches[:, None].astype(np.float32).view(np.int32) + np.arange(-64, 64)[None, :]).view(np.float32)
    edges = np.array([0.0, -0.0, -1e-30, -1e-7, -87.33654, -87.3365, -87.33, -80.0, -1.0, -0.5], dtype=np.float32)
    x = np.concatenate([
        np.linspace(-87.3365, 0.0, 2**22, dtype=np.float32),
        -np.random.default_rng(0).uniform(0, 87.3365, 2**20).astype(np.float32),
        near.ravel()[(near.ravel() <= 0) & (near.ravel() >= -87.3365)],
        edges,
    ])  # fmt: skip
    x = np.concatenate([x, np.zeros(-len(x) % 8, dtype=np.float32)])  # whole vectors of 8: no scalar tail
    y = np.empty_like(x)
    if not lib.mxa_exp(x.ctypes.data_as(ctypes.c_void_p), y.ctypes.data_as(ctypes.c_void_p), len(x)):
        pytest.skip("needs a CPU with AVX2 + FMA: without them the kernel uses expf")
    want = np.exp(x.astype(np.float64))
    ulp = 2.0 ** (np.floor(np.log2(want)) - 23)
    assert (np.abs(y - want) <= 2 * ulp).all(), np.max(np.abs(y - want) / ulp)
    special = np.array([-87.34, -100.0, -np.inf, np.nan, -1e30, np.nan, -88.0, -200.0], dtype=np.float32)
    out = np.empty_like(special)
    lib.mxa_exp(special.ctypes.data_as(ctypes.c_void_p), out.ctypes.data_as(ctypes.c_void_p), 8)
    assert np.array_equal(out[[0, 1, 2, 4, 6, 7]], np.zeros(6, dtype=np.float32))
    assert np.isnan(out[[3, 5]]).all()
