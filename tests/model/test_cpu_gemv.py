"""The C products of the native CPU path against their torch twins, within the bound _cpu_gemv.c states:
two float32 sums of the same exact products in different orders differ by at most
2 * gamma(K) * sum_k |x_k w_k| (gamma(K) = K u / (1 - K u), u = 2**-24), plus one rounding of the bias add."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mxfp4.codec import decode
from mxfp4.model.kernels import cpu_gemv, moe_torch, native_path

pytestmark = pytest.mark.skipif(not cpu_gemv.available(), reason="the C kernels are built by pip install -e .")

U = 2.0**-24


def gamma(k: int) -> float:
    return k * U / (1 - k * U)


def bound(x: torch.Tensor, w: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per output: 2 gamma(K) sum |x w| + u |y| (the bias add), in float64."""
    x64, w64 = x.double(), w.double()
    return 2 * gamma(x.shape[-1]) * (x64.abs() @ w64.abs().T) + U * y.double().abs()


def random_mxfp4(rows: int, cols: int, seed: int, scale_range=(118, 130)):
    g = torch.Generator().manual_seed(seed)
    blocks = torch.randint(0, 256, (rows, cols // 32, 16), dtype=torch.uint8, generator=g)
    scales = torch.randint(*scale_range, (rows, cols // 32), dtype=torch.uint8, generator=g)
    return blocks, scales


@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(1, 70),
    col_blocks=st.integers(1, 12),
    tokens=st.integers(1, 40),  # past the 16 one call takes: chunked
    seed=st.integers(0, 2**31),
    with_bias=st.booleans(),
)
def test_mxfp4_product_equals_the_decoded_matmul_within_the_bound(rows, col_blocks, tokens, seed, with_bias):
    cols = 32 * col_blocks
    blocks, scales = random_mxfp4(rows, cols, seed)
    w = decode.dequantize(blocks, scales, torch.float32)
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(tokens, cols, generator=g) * 3
    bias = torch.randn(rows, generator=g) if with_bias else None
    want = x @ w.T + (bias if with_bias else 0)
    got = cpu_gemv.mxfp4_linear(x, blocks, scales, bias)
    assert got.dtype == torch.float32 and got.shape == (tokens, rows)
    assert ((got.double() - want.double()).abs() <= bound(x, w, want)).all()


@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(1, 70),
    col_blocks=st.integers(1, 12),
    tokens=st.integers(1, 12),  # one to past the 8 one call takes
    seed=st.integers(0, 2**31),
    with_bias=st.booleans(),
)
def test_mxfp4_product_of_bf16_activations_within_the_bound(rows, col_blocks, tokens, seed, with_bias):
    """bf16 activations as they are (AVX512-BF16 where the CPU has it, else widened): the same exact products,
    so the same bound against the float32 matmul of the decoded matrix."""
    cols = 32 * col_blocks
    blocks, scales = random_mxfp4(rows, cols, seed)
    w = decode.dequantize(blocks, scales, torch.float32)
    g = torch.Generator().manual_seed(seed + 1)
    x = (torch.randn(tokens, cols, generator=g) * 3).bfloat16()
    bias = torch.randn(rows, generator=g) if with_bias else None
    want = x.float() @ w.T + (bias if with_bias else 0)
    got = cpu_gemv.mxfp4_linear(x, blocks, scales, bias)
    assert got.dtype == torch.float32 and got.shape == (tokens, rows)
    assert ((got.double() - want.double()).abs() <= bound(x.float(), w, want)).all()


def test_a_nan_scale_gives_nan_in_its_row_only():
    blocks, scales = random_mxfp4(8, 96, 0)
    scales[3, 1] = 0xFF
    x = torch.randn(2, 96)
    got = cpu_gemv.mxfp4_linear(x, blocks, scales)
    want = x @ decode.dequantize(blocks, scales, torch.float32).T
    assert torch.isnan(got[:, 3]).all() and torch.isnan(want[:, 3]).all()
    keep = [r for r in range(8) if r != 3]
    assert torch.isfinite(got[:, keep]).all()


def one_code_rows(cols: int) -> torch.Tensor:
    """HF blocks [16 * cols, cols / 32, 16]: one row per (code, element), that element holding the code and every
    other element code 0 (the value 0)."""
    rows = []
    for code in range(16):
        for j in range(cols):
            nibbles = torch.zeros(cols, dtype=torch.uint8)
            nibbles[j] = code
            rows.append(nibbles[0::2] | (nibbles[1::2] << 4))
    return torch.stack(rows).reshape(-1, cols // 32, 16)


def test_every_code_at_every_position_decodes_as_the_spec_says():
    """One row per (code, element): x = e_j picks element j of the block, so the product is its value."""
    blocks = one_code_rows(32)
    scales = torch.full((blocks.shape[0], 1), 127, dtype=torch.uint8)
    got = cpu_gemv.mxfp4_linear(torch.eye(32), blocks, scales)  # [32 elements, 16 * 32 rows]
    want = decode.dequantize(blocks, scales, torch.float32).reshape(-1, 32).T
    assert torch.equal(got, want)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("col_blocks", [5, 10, 11])  # four-block groups, then 1, 2 or 3 blocks of tail
@pytest.mark.parametrize("one_token", [False, True])  # eight tokens a call, or decoding's own loop
def test_every_code_at_every_position_of_a_group_and_its_tail_under_every_scale(dtype, col_blocks, one_token):
    """One row per (code, element), the AVX-512 kernel's four-block groups then a tail of 1-3 blocks; a random
    E8M0 scale per block from 0 (2**-127, a denormal) to 252 (the largest whose values stay finite); x = e_j picks
    element j, so each product is one decoded value, exact whatever the order. One token at a time takes
    decoding's loop (two groups a step); eight a call the loop shared by a few tokens."""
    cols = col_blocks * 32
    blocks = one_code_rows(cols)
    g = torch.Generator().manual_seed(col_blocks)
    scales = torch.randint(0, 253, (blocks.shape[0], col_blocks), dtype=torch.uint8, generator=g)
    scales[:col_blocks, :] = 0  # the denormal scale in every block position
    scales[col_blocks : 2 * col_blocks, :] = 127 + torch.arange(col_blocks)  # rows with no 0 scale (no fix-up)
    eye = torch.eye(cols, dtype=dtype)
    picks = [eye[j : j + 1] for j in range(cols)] if one_token else [eye]
    got = torch.cat([cpu_gemv.mxfp4_linear(x, blocks, scales) for x in picks])
    want = decode.dequantize(blocks, scales, torch.float32).reshape(-1, cols).T
    assert torch.equal(got, want)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("block", [0, 2, 3, 4, 8, 9])  # in a four-block group, its last block, the tail
@pytest.mark.parametrize("tokens", [1, 2])
def test_a_nan_scale_anywhere_in_a_row_gives_nan_in_that_row_only(dtype, block, tokens):
    blocks, scales = random_mxfp4(8, 10 * 32, block)
    scales[3, block] = 0xFF
    got = cpu_gemv.mxfp4_linear(torch.randn(tokens, 10 * 32).to(dtype), blocks, scales)
    assert torch.isnan(got[:, 3]).all()
    assert torch.isfinite(got[:, [r for r in range(8) if r != 3]]).all()


def test_fused_swiglu_clamps_and_matches_the_twin_on_our_own_pre_activations():
    rows, cols = 64, 128
    blocks, scales = random_mxfp4(rows, cols, 3, scale_range=(125, 131))  # pre-activations beyond +-7
    x = torch.randn(5, cols) * 2
    bias = torch.randn(rows)
    h = cpu_gemv.mxfp4_linear(x, blocks, scales, bias)
    assert (h[:, 0::2] > 7).any() and (h[:, 1::2] < -7).any() and (h[:, 1::2] > 7).any()  # the clamp is exercised
    got = cpu_gemv.mxfp4_swiglu(x, blocks, scales, bias, 7.0, moe_torch.SWIGLU_ALPHA)
    want = moe_torch.clamped_swiglu(h, 7.0)
    # same inputs; the C and torch sigmoid and products round differently: a few float32 ulps of each output
    assert torch.allclose(got, want, rtol=8 * U * 8, atol=1e-30)


def test_bf16_product_equals_the_float32_matmul_within_the_bound():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(300, 2880 + 7, generator=g).bfloat16()  # a tail that is not a multiple of the vector width
    x = torch.randn(3, 2887, generator=g)
    bias = torch.randn(300, generator=g)
    want = x @ w.float().T + bias
    got = cpu_gemv.dense_linear(x, w, bias)
    assert ((got.double() - want.double()).abs() <= bound(x, w.float(), want)).all()


def swiglu_slopes(limit: float, alpha: float = moe_torch.SWIGLU_ALPHA) -> tuple[float, float]:
    """Bounds of |d f / d gate| and |d f / d up| for f = g * sigmoid(alpha g) * (u + 1), g <= limit, |u| <= limit:
    (max over g of sigmoid(alpha g) (1 + alpha g (1 - sigmoid(alpha g)))) * (limit + 1), and limit."""
    g = torch.linspace(-50, limit, 200001, dtype=torch.float64)
    s = torch.sigmoid(alpha * g)
    return float((s * (1 + alpha * g * (1 - s))).abs().max()) * (limit + 1), limit


def random_moe(n: int, experts: int, hidden: int, inter: int, seed: int, limit: float = 7.0) -> tuple:
    """moe_torch.experts' arguments for n tokens routed top-2 over packed random experts (biases ~0.1, x ~0.1)."""
    gate_up = random_mxfp4(experts * 2 * inter, hidden, 1)
    down = random_mxfp4(experts * hidden, inter, 2)
    gate_up = (gate_up[0].reshape(experts, 2 * inter, -1, 16), gate_up[1].reshape(experts, 2 * inter, -1))
    down = (down[0].reshape(experts, hidden, -1, 16), down[1].reshape(experts, hidden, -1))
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, hidden, generator=g) * 0.1
    indices = torch.stack([torch.randperm(experts, generator=g)[:2] for _ in range(n)])
    scores = torch.softmax(torch.randn(n, 2, generator=g), -1)
    gate_up_bias = torch.randn(experts, 2 * inter, generator=g) * 0.1
    down_bias = torch.randn(experts, hidden, generator=g) * 0.1
    return x, indices, scores, gate_up, gate_up_bias, down, down_bias, limit


def experts_bound(x, indices, scores, gate_up, gate_up_bias, down, down_bias, limit, want) -> torch.Tensor:
    """How far two float32 evaluations of the packed experts may differ (float32 activations): gate_up's product
    bound, times the SwiGLU's slopes, plus a few ulps for the two SwiGLU evaluations, carried through down's |W|
    and its own product bound, then weighted by the routing scores, plus the weighting and the sum."""
    slope_gate, slope_up = swiglu_slopes(limit)
    allowed = torch.zeros(x.shape, dtype=torch.float64)
    for t in range(x.shape[0]):
        for k in range(indices.shape[1]):
            e = int(indices[t, k])
            w1 = decode.dequantize(gate_up[0][e], gate_up[1][e], torch.float32)
            w2 = decode.dequantize(down[0][e], down[1][e], torch.float32)
            h = x[t : t + 1] @ w1.T + gate_up_bias[e]
            dh = bound(x[t : t + 1], w1, h)[0]
            act = moe_torch.clamped_swiglu(h, limit)[0].double()
            dact = slope_gate * dh[0::2] + slope_up * dh[1::2] + 32 * U * act.abs()
            y = act.float()[None] @ w2.T + down_bias[e]
            dy = w2.double().abs() @ dact + bound(act.float()[None], w2, y)[0]
            allowed[t] += scores[t, k].double() * dy
    return allowed + 4 * U * want.double().abs()  # the weighting and the sum of the k contributions


@pytest.mark.parametrize("n", [1, 6])  # one token: the whole MoE in one C call (moe_token); more: per expert
def test_native_experts_equal_the_torch_twin_and_never_decode_an_expert(monkeypatch, n):
    """Decode-sized groups (<= EXPERT_TOKENS tokens an expert) run from the blocks, and the result is the twin's
    within the bound propagated through both products: gate_up's product bound, times the SwiGLU's slopes, plus
    a few ulps for the two SwiGLU evaluations, carried through down's |W| and its own product bound, then
    weighted by the routing scores; float32 throughout."""
    args = random_moe(n, experts=4, hidden=128, inter=96, seed=5)
    want = moe_torch.experts(*args)
    allowed = experts_bound(*args, want)

    def no_dense(*_, **__):
        raise AssertionError("an expert was decoded to a dense matrix")

    monkeypatch.setattr(decode, "dequantize", no_dense)
    calls = []
    monkeypatch.setattr(cpu_gemv, "moe_token", lambda *a, **k: calls.append(1) or moe_token(*a, **k))
    got = native_path.experts(*args)
    assert len(calls) == (n == 1)
    assert want.abs().max() > 0.1
    assert ((got.double() - want.double()).abs() <= allowed).all()


moe_token = cpu_gemv.moe_token


def _moe_case(dtype):
    experts, hidden, inter = 8, 256, 160  # 8 blocks (two groups) in, 5 (a group and a tail) down
    gate_up = random_mxfp4(experts * 2 * inter, hidden, 11)
    down = random_mxfp4(experts * hidden, inter, 12)
    gate_up = (gate_up[0].reshape(experts, 2 * inter, -1, 16), gate_up[1].reshape(experts, 2 * inter, -1))
    down = (down[0].reshape(experts, hidden, -1, 16), down[1].reshape(experts, hidden, -1))
    g = torch.Generator().manual_seed(13)
    x = (torch.randn(hidden, generator=g) * 0.1).to(dtype)
    up_bias = (torch.randn(experts, 2 * inter, generator=g) * 0.1).to(dtype)
    down_bias = (torch.randn(experts, hidden, generator=g) * 0.1).to(dtype)
    return x, gate_up, up_bias, down, down_bias


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_one_token_moe_is_the_per_expert_products_summed(dtype):
    """moe_token (a layer's gate_ups in one pool job, then its downs) is, per expert, the fused gate_up product and
    down on its SwiGLU output (rounded to bf16 with bf16 activations; the products tested above), weighted and
    summed in float32: equal to that composition within the float32 rounding of the k-term weighted sum."""
    x, gate_up, up_bias, down, down_bias = _moe_case(dtype)
    limit = 7.0
    chosen, weights = torch.tensor([5, 0, 3, 6]), torch.softmax(torch.randn(4, generator=torch.Generator()), -1)
    got = cpu_gemv.moe_token(x, chosen, weights, gate_up, up_bias, down, down_bias, limit, moe_torch.SWIGLU_ALPHA)
    terms = []
    for c, e in enumerate(chosen.tolist()):
        act = cpu_gemv.mxfp4_swiglu(x[None], gate_up[0][e], gate_up[1][e], up_bias[e], limit, moe_torch.SWIGLU_ALPHA)
        y = cpu_gemv.mxfp4_linear(act.to(dtype), down[0][e], down[1][e], down_bias[e])[0]
        terms.append(weights[c].double() * y.double())
    want = torch.stack(terms).sum(0)
    assert got.dtype == torch.float32 and want.abs().max() > 0.1
    assert ((got.double() - want).abs() <= 2 * gamma(4) * torch.stack(terms).abs().sum(0)).all()


def test_one_token_moe_past_the_batch_limit_is_left_to_the_caller():
    """More routed experts than one C batch takes (32): moe_token answers None, and native_path's per-expert
    products take the token."""
    x, gate_up, up_bias, down, down_bias = _moe_case(torch.float32)
    chosen = torch.arange(33) % 8
    assert cpu_gemv.moe_token(x, chosen, torch.full((33,), 1 / 33), gate_up, up_bias, down, down_bias, 7.0, 1.7) is None
    assert (
        cpu_gemv.moe_token(x, chosen[:32], torch.full((32,), 1 / 32), gate_up, up_bias, down, down_bias, 7.0, 1.7)
        is not None
    )


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_dense_product_equals_the_float32_matmul_within_the_bound(dtype):
    g = torch.Generator().manual_seed(1)
    w = torch.randn(257, 1000 + 3, generator=g).to(dtype)  # a tail past the vector width
    x = torch.randn(6, 1003, generator=g)  # past the 4 rows that share each load
    want = x @ w.float().T
    got = cpu_gemv.dense_linear(x, w)
    assert ((got.double() - want.double()).abs() <= bound(x, w.float(), want)).all()


@pytest.mark.parametrize("tokens", [1, 6])  # decoding (widened everywhere), and a few tokens (vdpbf16ps where present)
@pytest.mark.parametrize("cols", [1003, 1024, 31, 64 + 5, 128 + 64 + 5])  # tails of every kind past a step
def test_bf16_product_of_bf16_activations_within_the_bound(cols, tokens):
    """bf16 x on bf16 W (vdpbf16ps for a few rows where the CPU has it; one row, and every row elsewhere, widened):
    the same exact products, the same bound."""
    g = torch.Generator().manual_seed(cols)
    w = torch.randn(257, cols, generator=g).bfloat16()
    x = torch.randn(tokens, cols, generator=g).bfloat16()
    bias = torch.randn(257, generator=g)
    want = x.float() @ w.float().T + bias
    got = cpu_gemv.dense_linear(x, w, bias)
    assert ((got.double() - want.double()).abs() <= bound(x.float(), w.float(), want)).all()


@pytest.mark.parametrize("cols", [2880, 1003, 40, 17])  # whole 16s, tails past them, a row shorter than one
def test_one_bf16_row_is_the_widened_row_bit_for_bit(cols):
    """Decoding's one row of bf16 activations on bf16 weights runs the float32-activation loop on the row widened
    (in C where the CPU has AVX512-BF16): the very result of the widened row."""
    if not cpu_gemv.native_bf16():
        pytest.skip("needs a CPU with AVX512-BF16: without it the caller widens the row itself (both sides one call)")
    g = torch.Generator().manual_seed(cols)
    w = torch.randn(301, cols, generator=g).bfloat16()
    x = torch.randn(1, cols, generator=g).bfloat16()
    bias = torch.randn(301, generator=g)
    assert torch.equal(cpu_gemv.dense_linear(x, w, bias), cpu_gemv.dense_linear(x.float(), w, bias))


def test_native_linear_takes_few_rows_and_leaves_the_rest_to_torch():
    """Few rows: the C product; more: torch's matmul (bf16 weights on CPUs without AVX512-BF16: test_widened)."""
    w = torch.randn(40, 64)
    for dtype in (torch.bfloat16, torch.float32):
        wd = w.to(dtype)
        many = torch.randn(native_path.linear_tokens(dtype) + 1, 64).to(dtype)
        if dtype == torch.float32 or cpu_gemv.native_bf16():  # else widened panels: test_widened.py
            assert torch.equal(native_path.linear(many, wd), torch.nn.functional.linear(many, wd))
        few = torch.randn(1, 1, 64).to(dtype)
        got = native_path.linear(few, wd)
        assert got.dtype == dtype and got.shape == (1, 1, 40)
        flat = few.float().reshape(1, 64)
        want = flat @ wd.float().T
        rounding = 2**-8 if dtype == torch.bfloat16 else 0.0  # the result rounded once to bf16
        allowed = bound(flat, wd.float(), want) + rounding * want.double().abs()
        assert ((got.reshape(1, 40).double() - want.double()).abs() <= allowed).all()
    half = torch.randn(1, 64).half()
    assert torch.equal(native_path.linear(half, w.half()), torch.nn.functional.linear(half, w.half()))


def test_the_portable_loops_keep_the_same_bound():
    """MXFP4_CPU_PORTABLE=1 runs the plain C loops (what a CPU without AVX2 gets: products, the one-token MoE's
    widening fallback, the int8 activations' products, the attention kernel), in a fresh process."""
    import subprocess
    import sys

    script = """
import torch, sys
sys.path.insert(0, "tests/model")
import test_cpu_gemv as t
from mxfp4.codec import decode
from mxfp4.model.kernels import cpu_gemv
blocks, scales = t.random_mxfp4(37, 160, 9)
w = decode.dequantize(blocks, scales, torch.float32)
for dtype in (torch.float32, torch.bfloat16):
    x = torch.randn(11, 160, generator=torch.Generator().manual_seed(2)).to(dtype)
    want = x.float() @ w.T
    got = cpu_gemv.mxfp4_linear(x, blocks, scales)
    assert ((got.double() - want.double()).abs() <= t.bound(x.float(), w, want)).all()
for dtype in (torch.float32, torch.bfloat16):
    d = torch.randn(33, 70).to(dtype)
    x = torch.randn(5, 70).to(dtype)  # bf16 x on bf16 W: the widening fallback of the vdpbf16ps loop
    want = x.float() @ d.float().T
    got = cpu_gemv.dense_linear(x, d)
    assert ((got.double() - want.double()).abs() <= t.bound(x.float(), d.float(), want)).all()
for dtype in (torch.float32, torch.bfloat16):  # bf16 activations widened for each product
    t.test_one_token_moe_is_the_per_expert_products_summed(dtype)
import test_int8_activations as q  # the int8 activations' plain loop: pairs of blocks and a lone last one
for col_blocks in (1, 2, 5, 90):
    q.check_product(37, col_blocks, col_blocks, True)
q.test_every_code_meets_every_activation_position(0)
q.test_one_token_int8_moe_is_the_per_expert_int8_products_summed(torch.float32)
import test_attention_cpu as a
a.test_fused_attention_equals_the_reference_within_the_bound()  # the C kernel's plain loops among the paths
for args in ((1, 128, 2), (5, 40, 1)):
    a.test_the_c_kernel_on_bf16_within_float32_rounding_of_the_exact_result(*args)
a.test_the_c_kernel_reads_a_caches_views_in_place_with_the_contiguous_result(16)  # heads a store's capacity apart
print("ok")
"""
    env = {**__import__("os").environ, "MXFP4_CPU_PORTABLE": "1"}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


@pytest.mark.parametrize("threads", [2, 3, 7, 64])
def test_any_thread_count_gives_the_one_thread_result_bit_for_bit(monkeypatch, threads):
    """The pool cuts a call into pieces that threads take from a shared counter: every row is computed once by the
    same code whoever takes it, and a SwiGLU pair never straddles two pieces, so any split is the one-thread result.
    More threads than this machine's cores still split (they only wait for each other)."""
    blocks, scales = random_mxfp4(70, 160, 4)
    x = torch.randn(3, 160).bfloat16()
    bias = torch.randn(70)
    weight = torch.randn(70, 100).bfloat16()

    def results():
        return (
            cpu_gemv.mxfp4_linear(x, blocks, scales, bias),
            cpu_gemv.mxfp4_swiglu_int8(x[0], blocks, scales, bias, 7.0, moe_torch.SWIGLU_ALPHA),
            cpu_gemv.mxfp4_swiglu(x, blocks, scales, bias, 7.0, moe_torch.SWIGLU_ALPHA),
            cpu_gemv.dense_linear(x[:, :100], weight, bias),
        )

    monkeypatch.setattr(cpu_gemv, "thread_count", lambda: 1)
    alone = results()
    monkeypatch.setattr(cpu_gemv, "thread_count", lambda: threads)
    for got, want in zip(results(), alone):
        assert torch.equal(got, want)
