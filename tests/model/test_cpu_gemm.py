"""The native path's many-token products and its instruction-set dispatch: the C panel GEMM (MXFP4, bf16, float32
weights) and the widened panels it falls back to, against the float32 matmul within the bound of two summation
orders (test_cpu_gemv.bound); the paths native_path takes per CPU; every instruction set below this CPU's, forced
in a child process."""

import os
import subprocess
import sys

import pytest
import torch
from test_cpu_gemv import U, bound, experts_bound, one_code_rows, random_moe, random_mxfp4

from mxfp4.codec import decode
from mxfp4.errors import ShapeError
from mxfp4.model.kernels import cpu_gemv, moe_torch, native_path, widened

pytestmark = pytest.mark.skipif(not cpu_gemv.available(), reason="the C kernels are built by pip install -e .")


needs_gemm = pytest.mark.skipif(
    not cpu_gemv.available() or cpu_gemv.isa() == "portable C", reason="the panel GEMM needs AVX2 + FMA"
)


@needs_gemm
# an 8-wide tile, a padded 16, whole 16s, a tail; 150: passes of 64 or 128 tokens (gemm_token_block), an 8-wide last
@pytest.mark.parametrize("tokens", [1, 8, 9, 16, 17, 40, 150])
# 6-row panels and a remainder; odd block counts; 150 rows go in pieces of 24 (12-row panels on AVX-512); 608: k
# in blocks of 256 (GEMM_KC), two whole ones and a tail
@pytest.mark.parametrize("rows, cols", [(37, 96), (12, 160), (150, 608)])
def test_gemm_mxfp4_product_within_the_bound(tokens, rows, cols):
    blocks, scales = random_mxfp4(rows, cols, tokens)
    w = decode.dequantize(blocks, scales, torch.float32)
    g = torch.Generator().manual_seed(tokens)
    bias = torch.randn(rows, generator=g)
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(tokens, cols, generator=g).to(dtype)
        want = x.float() @ w.T + bias
        got = cpu_gemv.mxfp4_gemm(x, blocks, scales, bias)
        assert got.dtype == torch.float32 and got.shape == (tokens, rows)
        assert ((got.double() - want.double()).abs() <= bound(x.float(), w, want)).all()


@needs_gemm
def test_gemm_decodes_every_code_at_every_position_under_every_scale():
    """One row per (code, element), a random scale per block from 0 (a denormal) to 252; x = e_j picks element j,
    so each product is one decoded value, exact whatever the order (test_cpu_gemv's case, through the GEMM)."""
    cols = 5 * 32
    blocks = one_code_rows(cols)
    scales = torch.randint(0, 253, (blocks.shape[0], 5), dtype=torch.uint8, generator=torch.Generator().manual_seed(7))
    scales[:5, :] = 0
    got = cpu_gemv.mxfp4_gemm(torch.eye(cols), blocks, scales)
    assert torch.equal(got, decode.dequantize(blocks, scales, torch.float32).reshape(-1, cols).T)


@needs_gemm
def test_gemm_nan_scale_gives_nan_in_its_row_only():
    blocks, scales = random_mxfp4(14, 96, 2)
    scales[9, 2] = 0xFF
    got = cpu_gemv.mxfp4_gemm(torch.randn(20, 96), blocks, scales)
    assert torch.isnan(got[:, 9]).all()
    assert torch.isfinite(got[:, [r for r in range(14) if r != 9]]).all()


@needs_gemm
def test_gemm_fused_swiglu_is_the_swiglu_of_its_own_product():
    rows, cols = 64, 128
    blocks, scales = random_mxfp4(rows, cols, 3, scale_range=(125, 131))  # pre-activations beyond +-7
    x = torch.randn(150, cols, generator=torch.Generator().manual_seed(1)) * 2  # passes of 64 tokens
    bias = torch.randn(rows, generator=torch.Generator().manual_seed(2))
    h = cpu_gemv.mxfp4_gemm(x, blocks, scales, bias)
    assert (h[:, 0::2] > 7).any() and (h[:, 1::2] < -7).any() and (h[:, 1::2] > 7).any()  # the clamp is exercised
    got = cpu_gemv.mxfp4_gemm(x, blocks, scales, bias, swiglu=True, limit=7.0, alpha=moe_torch.SWIGLU_ALPHA)
    # the same pre-activations (the GEMM's order does not depend on the epilogue); the C and torch sigmoid and
    # products round differently: a few float32 ulps of each output (as test_cpu_gemv's fused SwiGLU test)
    assert torch.allclose(got, moe_torch.clamped_swiglu(h, 7.0), rtol=8 * U * 8, atol=1e-30)


@needs_gemm
def test_fused_swiglu_at_its_edges_is_torchs():
    """Zero weights, so the pre-activations are the bias: NaN and infinite gates and ups, gates far below zero (where
    the vector sigmoid's exp(-|z|) flushes to 0: outputs under ~1e-36 in magnitude become -0), around 0 and the
    limit, 13 pairs (a step of eight and a padded tail). Through the panel GEMM and the one-token product."""
    gates = [float("nan"), -float("inf"), -200.0, -60.0, -51.0, -10.0, -1e-3, 0.0, 1e-3, 3.0, 7.0, 8.0, float("inf")]
    ups = [0.5, float("nan"), -float("inf"), float("inf"), -8.0, -7.0, 0.0, 6.5, 7.5, -1.0, 2.0, 1e4, -3.0]
    bias = torch.tensor([v for pair in zip(gates, ups) for v in pair])
    rows, cols = bias.numel(), 64
    blocks = torch.zeros(rows, cols // 32, 16, dtype=torch.uint8)
    scales = torch.full((rows, cols // 32), 127, dtype=torch.uint8)
    x = torch.randn(3, cols, generator=torch.Generator().manual_seed(5))
    want = moe_torch.clamped_swiglu(bias.expand(3, rows), 7.0)
    for got in (
        cpu_gemv.mxfp4_gemm(x, blocks, scales, bias, swiglu=True, limit=7.0, alpha=moe_torch.SWIGLU_ALPHA),
        cpu_gemv.mxfp4_swiglu(x[:1], blocks, scales, bias, 7.0, moe_torch.SWIGLU_ALPHA).expand(3, -1),
    ):
        assert torch.equal(torch.isnan(got), torch.isnan(want))
        finite = ~torch.isnan(want)
        assert torch.allclose(got[finite], want[finite], rtol=8 * U, atol=1e-35)


@needs_gemm
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("tokens", [3, 16, 33, 150])
@pytest.mark.parametrize("cols", [70, 556])  # a widening tail past the whole 8s; k-blocks of 256 and a tail of 44
def test_gemm_dense_product_within_the_bound(dtype, tokens, cols):
    g = torch.Generator().manual_seed(tokens)
    w = torch.randn(29, cols, generator=g).to(dtype)
    x = torch.randn(tokens, cols, generator=g)
    bias = torch.randn(29, generator=g)
    want = x @ w.float().T + bias
    got = cpu_gemv.dense_gemm(x, w, bias)
    assert ((got.double() - want.double()).abs() <= bound(x, w.float(), want)).all()


@needs_gemm
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("threads", [1, 3])
def test_dense_rows_in_groups_give_the_panel_by_panel_bits(monkeypatch, dtype, threads):
    """Past two tiles (32 tokens) the AVX2 GEMM runs dense rows in groups of 8 panels (48 rows), k-block by
    k-block over the group; up to two tiles, a panel at a time. Each output is the same float32 sum over k in
    order either way, and one token's output does not depend on the others, so a prompt in 32-token chunks gives
    the grouped result bit for bit: 101 rows (two whole groups and a part one), three k-blocks (the last partial)."""
    monkeypatch.setattr(cpu_gemv, "thread_count", lambda: threads)
    g = torch.Generator().manual_seed(7)
    w = torch.randn(101, 556, generator=g).to(dtype)
    x = torch.randn(150, 556, generator=g)
    grouped = cpu_gemv.dense_gemm(x, w)
    by_panel = torch.cat([cpu_gemv.dense_gemm(x[i : i + 32], w) for i in range(0, 150, 32)])
    assert torch.equal(grouped, by_panel)
    want = x.double() @ w.double().T
    assert ((grouped.double() - want).abs() <= bound(x, w.float(), want)).all()


SMALL_STACK_CHILD = """
import threading, torch
from mxfp4.model.kernels import cpu_gemv
g = torch.Generator().manual_seed(8)
w, x = torch.randn(101, 556, generator=g).bfloat16(), torch.randn(150, 556, generator=g)
got = {}
threading.stack_size(128 * 1024)
thread = threading.Thread(target=lambda: got.update(y=cpu_gemv.dense_gemm(x, w)))
thread.start()
thread.join()
assert torch.equal(got["y"], cpu_gemv.dense_gemm(x, w))
"""


@needs_gemm
def test_grouped_gemm_runs_on_a_thread_with_a_small_stack():
    """A group's panels and sums (147 KB) are not on the stack: a thread of 128 KB (musl's default for threads
    created without a size) runs the grouped GEMM and gets what the main thread gets. In a child process: with them
    on the stack the thread overflowed it (a segmentation fault)."""
    child = subprocess.run([sys.executable, "-c", SMALL_STACK_CHILD], capture_output=True, text=True, timeout=120)
    assert child.returncode == 0, child.stderr


@needs_gemm
@pytest.mark.parametrize("threads", [2, 3, 7])
def test_gemm_any_thread_count_gives_the_one_thread_result_bit_for_bit(monkeypatch, threads):
    blocks, scales = random_mxfp4(70, 608, 4)  # three k-blocks (GEMM_KC 256), the last partial
    x = torch.randn(19, 608, generator=torch.Generator().manual_seed(3))
    weight = torch.randn(70, 300, generator=torch.Generator().manual_seed(4)).bfloat16()

    def results():
        return (
            cpu_gemv.mxfp4_gemm(x, blocks, scales),
            cpu_gemv.mxfp4_gemm(x, blocks, scales, swiglu=True, limit=7.0, alpha=moe_torch.SWIGLU_ALPHA),
            cpu_gemv.dense_gemm(x[:, :300], weight),
        )

    monkeypatch.setattr(cpu_gemv, "thread_count", lambda: 1)
    alone = results()
    monkeypatch.setattr(cpu_gemv, "thread_count", lambda: threads)
    for got, want in zip(results(), alone):
        assert torch.equal(got, want)


@pytest.mark.parametrize("panel", [7, 512])  # panels that cut the rows unevenly, and one that takes them all
def test_widened_dense_product_within_the_bound(monkeypatch, panel):
    monkeypatch.setattr(widened, "DENSE_PANEL_ROWS", panel)
    g = torch.Generator().manual_seed(11)
    weight = torch.randn(45, 70, generator=g).bfloat16()
    bias = torch.randn(45, generator=g)
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(13, 70, generator=g).to(dtype)
        want = x.float() @ weight.float().T + bias
        got = widened.dense_linear(x, weight, bias)
        assert got.dtype == torch.float32 and got.shape == (13, 45)
        assert ((got.double() - want.double()).abs() <= bound(x.float(), weight.float(), want)).all()


@pytest.mark.parametrize("panel", [5, 576])
def test_widened_mxfp4_product_within_the_bound(monkeypatch, panel):
    monkeypatch.setattr(widened, "MXFP4_PANEL_ROWS", panel)
    blocks, scales = random_mxfp4(37, 96, 3)
    w = decode.dequantize(blocks, scales, torch.float32)
    x = torch.randn(20, 96, generator=torch.Generator().manual_seed(4))
    bias = torch.randn(37, generator=torch.Generator().manual_seed(5))
    want = x @ w.T + bias
    got = widened.mxfp4_linear(x, blocks, scales, bias)
    assert ((got.double() - want.double()).abs() <= bound(x, w, want)).all()


@pytest.mark.parametrize("gemm_runs", [True, False])  # False: the widened panels a CPU without AVX2 gets
def test_many_rows_of_bf16_go_to_float32_products_exactly_where_torch_bf16_is_slow(monkeypatch, gemm_runs):
    """bf16 weights with many rows: float32 activations always take float32 products (a float32 model keeps bf16
    weights); bf16 activations do on CPUs without AVX512-BF16 and stay torch's bf16 matmul on those with it."""
    calls = []
    real = native_path.dense_many
    monkeypatch.setattr(native_path, "dense_many", lambda *a: calls.append(a[0].dtype) or real(*a))
    if not gemm_runs:
        monkeypatch.setattr(cpu_gemv, "dense_gemm", lambda *a: None)
    w = torch.randn(40, 64, generator=torch.Generator().manual_seed(6)).bfloat16()
    many = native_path.linear_tokens(torch.bfloat16) + 1
    x = torch.randn(2, many, 64, generator=torch.Generator().manual_seed(7))
    for dtype in (torch.float32, torch.bfloat16):
        got = native_path.linear(x.to(dtype), w)
        assert got.dtype == dtype and got.shape == (2, many, 40)
        flat = x.to(dtype).float().reshape(-1, 64)
        want = flat @ w.float().T
        rounding = 2**-8 if dtype == torch.bfloat16 else 0.0  # the result rounded once to bf16
        allowed = bound(flat, w.float(), want) + rounding * want.double().abs()
        assert ((got.reshape(-1, 40).double() - want.double()).abs() <= allowed).all()
    assert calls == [torch.float32] + ([] if cpu_gemv.native_bf16() else [torch.bfloat16])


@pytest.mark.parametrize("gemm_runs", [True, False])
def test_large_expert_groups_take_float32_products_within_the_bound(monkeypatch, gemm_runs):
    """Groups above EXPERT_TOKENS with float32 activations: float32 products (the panel GEMM with its fused SwiGLU,
    or widened panels where it cannot run); the result is the twin's within the bound of the C path's test."""
    monkeypatch.setattr(native_path, "EXPERT_TOKENS", 2)
    if not gemm_runs:
        monkeypatch.setattr(cpu_gemv, "mxfp4_gemm", lambda *a, **k: None)
    args = random_moe(9, experts=3, hidden=64, inter=64, seed=8)
    indices = args[1]
    calls = []
    real = native_path.float32_expert
    monkeypatch.setattr(native_path, "float32_expert", lambda *a: calls.append(1) or real(*a))
    got = native_path.experts(*args)
    want = moe_torch.experts(*args)
    assert len(calls) == len(indices.unique())
    assert want.abs().max() > 0.1
    assert ((got.double() - want.double()).abs() <= experts_bound(*args, want)).all()


def test_bf16_expert_groups_on_torch_are_padded_to_few_row_counts(monkeypatch):
    """bf16 groups above EXPERT_TOKENS on AVX512-BF16 CPUs go to torch's bf16 matmul with their rows padded to a
    multiple of ONEDNN_ROWS (oneDNN keeps a compiled primitive per row count); the padding's rows are dropped, and
    the result is the twin's within twice the twin's own bf16 error against float32 arithmetic. Groups within
    EXPERT_TOKENS (a dense fine-tune's decoding) keep their row counts."""
    if not cpu_gemv.native_bf16():
        pytest.skip("needs a CPU with AVX512-BF16: without it bf16 groups take float32 products (test above)")
    monkeypatch.setattr(native_path, "EXPERT_TOKENS", 2)
    x, indices, scores, gate_up, up_bias, down, down_bias, limit = random_moe(
        23, experts=3, hidden=64, inter=64, seed=9
    )
    bf16 = (x.bfloat16(), indices, scores.bfloat16(), gate_up, up_bias.bfloat16(), down, down_bias.bfloat16(), limit)
    rows = []
    real = native_path.expert_output
    monkeypatch.setattr(native_path, "expert_output", lambda xs, *a: rows.append(xs.shape[0]) or real(xs, *a))
    got = native_path.experts(*bf16).float()
    assert rows and all(r % native_path.ONEDNN_ROWS == 0 for r in rows) and max(rows) < 23 + native_path.ONEDNN_ROWS
    rows.clear()  # a dense fine-tune's experts, one token (decoding): groups within EXPERT_TOKENS are not padded
    monkeypatch.setattr(native_path, "EXPERT_TOKENS", 8)
    dense = [moe_torch.expert_matrix(w, slice(None), torch.bfloat16) for w in (gate_up, down)]
    one = native_path.experts(bf16[0][:1], indices[:1], bf16[2][:1], dense[0], bf16[4], dense[1], bf16[6], limit)
    assert rows == [1, 1] and one.shape == (1, 64)
    theirs = moe_torch.experts(*bf16).float()
    exact = moe_torch.experts(
        *(t.float() if isinstance(t, torch.Tensor) and t.is_floating_point() else t for t in bf16)
    )
    assert exact.abs().max() > 0.1
    assert (got - exact).abs().max() <= 2 * (theirs - exact).abs().max()


def test_the_isa_reported_is_the_cpus():
    flags = set()
    if os.path.exists("/proc/cpuinfo"):
        flags = set(next((line for line in open("/proc/cpuinfo") if line.startswith("flags")), "").split())
    if {"avx2", "fma", "avx512f", "avx512bw", "avx512_bf16"} <= flags:
        expected = "AVX512-BF16"
    elif {"avx2", "fma", "avx512f", "avx512bw"} <= flags:
        expected = "AVX-512"
    elif {"avx2", "fma"} <= flags:
        expected = "AVX2+FMA"
    else:
        pytest.skip("needs an x86 CPU with /proc/cpuinfo flags")
    assert cpu_gemv.isa() == expected
    assert cpu_gemv.native_bf16() == (expected == "AVX512-BF16")


LEVELS = ("portable C", "AVX2+FMA", "AVX-512", "AVX512-BF16")


@pytest.mark.parametrize("cap, name", [("avx512", "AVX-512"), ("avx2", "AVX2+FMA"), ("portable", "portable C")])
def test_every_instruction_set_below_the_cpus_keeps_the_bound(cap, name):
    """MXFP4_CPU_ISA caps the kernels' instruction set in a fresh process: on an AVX512-BF16 machine 'avx512' runs
    the AVX-512 loops without AVX512-BF16 (bf16 activations widened), 'avx2' the AVX2 loops, everywhere 'portable'
    the plain C ones; each product (one token, a few, the one-token MoE) within the bound, every code exact at
    every position, and the path reported."""
    if LEVELS.index(cpu_gemv.isa()) < LEVELS.index(name):
        pytest.skip(f"needs a CPU with {name}")
    script = f"""
import torch, sys
sys.path.insert(0, "tests/model")
import test_cpu_gemv as t
from mxfp4.codec import decode
from mxfp4.model.kernels import cpu_gemv
assert cpu_gemv.isa() == {name!r}, cpu_gemv.isa()
for cols in (96, 160, 2880):  # an odd block count (a block alone after the pairs), even, the 20b width
    blocks, scales = t.random_mxfp4(37, cols, 9)
    w = decode.dequantize(blocks, scales, torch.float32)
    for tokens in (1, 3, 8):
        x = torch.randn(tokens, cols, generator=torch.Generator().manual_seed(tokens)).bfloat16()
        want = x.float() @ w.T
        got = cpu_gemv.mxfp4_linear(x, blocks, scales)
        assert ((got.double() - want.double()).abs() <= t.bound(x.float(), w, want)).all()
    for dtype in (torch.float32, torch.bfloat16):
        d = torch.randn(33, cols + 5).to(dtype)  # a tail past the whole 16s
        for tokens in (1, 5):
            x = torch.randn(tokens, cols + 5)
            want = x @ d.float().T
            got = cpu_gemv.dense_linear(x, d)
            assert ((got.double() - want.double()).abs() <= t.bound(x, d.float(), want)).all()
    x = torch.randn(20, cols)
    got = cpu_gemv.mxfp4_gemm(x, blocks, scales)
    if {cap!r} == "portable":
        assert got is None  # the panel GEMM is AVX2 code: callers fall back to widened panels
    else:
        want = x @ w.T
        assert ((got.double() - want.double()).abs() <= t.bound(x, w, want)).all()
for dtype in (torch.float32, torch.bfloat16):
    t.test_one_token_moe_is_the_per_expert_products_summed(dtype)
for dtype in (torch.float32, torch.bfloat16):
    for col_blocks in (5, 10, 11):
        t.test_every_code_at_every_position_of_a_group_and_its_tail_under_every_scale(dtype, col_blocks, True)
        t.test_every_code_at_every_position_of_a_group_and_its_tail_under_every_scale(dtype, col_blocks, False)
    for block in (0, 3, 4, 9):
        t.test_a_nan_scale_anywhere_in_a_row_gives_nan_in_that_row_only(dtype, block, 1)
print("ok")
"""
    env = {**os.environ, "MXFP4_CPU_ISA": cap}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


_GEMM_CASES = """
import sys, torch
sys.path.insert(0, "tests/model")
import test_cpu_gemv as t
from mxfp4.model.kernels import cpu_gemv
results = {"isa": cpu_gemv.isa()}
# two whole tiles, two with an 8-wide or a 16-wide tail, a lone last tile; 150: passes of 128 and 22 tokens where
# the AVX-512 kernels take 128 a pass, of 64, 64 and 22 capped at AVX2
for tokens in (17, 33, 40, 48, 73, 150):
    g = torch.Generator().manual_seed(tokens)
    # 38 rows go in pieces of 6 over two threads; 150 in pieces of 24 and a last 6 (twelve rows at a time on AVX-512)
    for rows in (38, 150):
        blocks, scales = t.random_mxfp4(rows, 608, tokens)  # k-blocks of 256: two whole ones and a tail of 96
        x = torch.randn(tokens, 608, generator=g)
        bias = torch.randn(rows, generator=g)
        results[f"mxfp4 {rows} {tokens}"] = cpu_gemv.mxfp4_gemm(x, blocks, scales, bias)
        swiglu = cpu_gemv.mxfp4_gemm(x, blocks, scales, bias, swiglu=True, limit=7.0, alpha=1.702)
        results[f"swiglu {rows} {tokens}"] = swiglu
    for dtype in (torch.bfloat16, torch.float32):
        for rows in (13, 150):
            d = torch.randn(rows, 300, generator=g).to(dtype)
            results[f"{dtype} {rows} {tokens}"] = cpu_gemv.dense_gemm(torch.randn(tokens, 300, generator=g), d)
torch.save(results, sys.argv[1])
"""


@needs_gemm
def test_gemm_gives_the_same_bits_at_every_instruction_set(tmp_path):
    """On AVX-512 CPUs the panel GEMM takes two 16-token tiles at once in 512-bit registers; each output is still
    one float32 sum over k in order, so the results equal an AVX2-capped process's bit for bit (MXFP4 with and
    without the fused SwiGLU, bf16 and float32 weights, token counts on every tile edge, passes of 128 tokens
    against 64), and on AVX512-BF16 CPUs an AVX-512-capped one's too. An AVX2 machine has one GEMM level: nothing
    to compare."""
    if LEVELS.index(cpu_gemv.isa()) < LEVELS.index("AVX-512"):
        pytest.skip("needs a CPU with AVX-512: an AVX2 one has one panel GEMM level, nothing to compare it with")
    runs = {}
    caps = ("", "avx512", "avx2") if cpu_gemv.native_bf16() else ("", "avx2")
    for cap in caps:
        env = {k: v for k, v in os.environ.items() if k != "MXFP4_CPU_ISA"} | ({"MXFP4_CPU_ISA": cap} if cap else {})
        out = tmp_path / f"gemm-{cap or 'native'}.pt"
        result = subprocess.run(
            [sys.executable, "-c", _GEMM_CASES, str(out)], env=env, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, result.stderr[-2000:]
        runs[cap] = torch.load(out)
    native = runs.pop("")
    assert native.pop("isa") == cpu_gemv.isa()
    for cap, capped in runs.items():
        assert capped.pop("isa") == {"avx512": "AVX-512", "avx2": "AVX2+FMA"}[cap]
        assert native.keys() == capped.keys()
        for name in native:
            assert torch.equal(native[name], capped[name]), (cap, name)


@needs_gemm
def test_a_pass_takes_128_tokens_where_the_rule_for_the_cpus_kernels_says():
    """The pass size follows the rule _cpu_gemv.c states: at AVX-512, 128 tokens where their float32 tiles fit in 3/4
    of one core's L2, else 64; at AVX2, 64 where their tiles fit there, else 128 (the tiles come from L3 either
    way); 64 where the L2 size is unknown. The same-bits test above holds the results independent of it."""
    try:  # the C library's sysconf, as the kernels ask it (Python's os.sysconf does not know this name)
        answer = subprocess.run(["getconf", "LEVEL2_CACHE_SIZE"], capture_output=True, text=True).stdout.strip()
    except FileNotFoundError:
        pytest.skip("no getconf to ask the L2 size")
    l2 = int(answer) if answer.isdigit() else 0
    avx512 = LEVELS.index(cpu_gemv.isa()) >= LEVELS.index("AVX-512")
    for cols in (64, 608, 2880, 4096, 1 << 20):
        if avx512:
            expected = 128 if 4 * 128 * cols * 4 <= 3 * l2 else 64
        else:
            expected = 128 if l2 > 0 and 4 * 64 * cols * 4 > 3 * l2 else 64
        assert cpu_gemv.gemm_token_block(cols) == expected, cols


def test_the_fma_chains_count_the_operations_they_ran(monkeypatch):
    """The benchmark's FMA rate is these operations over their time: 16 units a thread of steps / 16 + 1 steps, 12
    chains of 8 (AVX2) or 16 (AVX-512) lanes, 2 operations an FMA; nothing on the portable level."""
    monkeypatch.setattr(cpu_gemv, "thread_count", lambda: 3)
    lanes = {"AVX512-BF16": 16, "AVX-512": 16, "AVX2+FMA": 8}.get(cpu_gemv.isa(), 0)
    assert cpu_gemv.fma_chains(1600) == 3 * 16 * 101 * 12 * lanes * 2


def test_stream_sum_reads_every_float_once():
    x = torch.arange(200_003, dtype=torch.float32) % 7  # past a chunk of 65,536, with a ragged last one
    assert cpu_gemv.stream_sum(x) == float(x.double().sum())
    with pytest.raises(TypeError):
        cpu_gemv.stream_sum(x.double())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_many_rows_go_in_row_chunks_into_the_activations_dtype(monkeypatch, dtype):
    """dense_many cuts the rows into DENSE_ROWS-row calls (the float32 logits of a long prompt never exist whole
    beside their bf16 copy): chunks that divide the rows unevenly give each row its one-call result."""
    monkeypatch.setattr(native_path, "DENSE_ROWS", 4)
    g = torch.Generator().manual_seed(9)
    w = torch.randn(30, 64, generator=g).bfloat16()
    x = torch.randn(11, 64, generator=g)
    got = native_path.dense_many(x, w, None, dtype)
    assert got.dtype == dtype and got.shape == (11, 30)
    monkeypatch.setattr(native_path, "DENSE_ROWS", 64)
    assert torch.equal(got, native_path.dense_many(x, w, None, dtype))


@needs_gemm
def test_dense_gemm_writes_into_the_output_given_or_refuses_it():
    g = torch.Generator().manual_seed(10)
    w, x = torch.randn(30, 64, generator=g).bfloat16(), torch.randn(11, 64, generator=g)
    out = torch.full((11, 30), float("nan"))
    assert cpu_gemv.dense_gemm(x, w, None, out) is out
    assert torch.equal(out, cpu_gemv.dense_gemm(x, w))
    for wrong in (torch.empty(11, 30, dtype=torch.bfloat16), torch.empty(30, 11).T, torch.empty(11, 29)):
        with pytest.raises(ShapeError, match="dense_gemm: out"):
            cpu_gemv.dense_gemm(x, w, None, wrong)
