"""The model's CPU path with the C products of cpu_gemv where they are faster than torch's.

Decoding and small batches (at most EXPERT_TOKENS tokens an expert, linear_tokens() rows a dense linear): the
row-at-a-time C products, MXFP4 straight from the blocks (gate_up fused with the clamped SwiGLU). More tokens, in
float32 arithmetic: the C panel GEMM (cpu_gemv.mxfp4_gemm / dense_gemm: a few weight rows decoded or widened at a
time into float32, register-blocked against tiles of 16 tokens), for MXFP4 experts and bf16 matrices, wherever
the activations are float32 (a float32 model keeps the checkpoint's bf16 weights) or the CPU lacks AVX512-BF16
(torch's bf16 matmul runs at about a fifth of its float32 rate there: 18.5 against 95 GFLOP/s on an AVX2-only
Zen 3). With bf16 activations on AVX512-BF16 CPUs, torch's bf16 matmul on a decoded expert (moe_torch). The
thresholds are the crossovers of ``benchmarks/bench_model.py --crossover`` (docs/benchmarks.md).
Intermediates stay float32; results are cast to the activations' dtype. RMSNorm and the rotary rotation of
decode-sized inputs are one C call each (cpu_norm, cpu_rotary) where torch takes seven and eight ops.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext

import torch

from . import cpu_gemv, cpu_norm, cpu_rotary, linear_torch, norm_torch, rotary_torch, widened
from .moe_torch import SWIGLU_ALPHA, clamped_swiglu, expert_groups, expert_output

EXPERT_TOKENS = 8  # measured crossovers: see the module docstring
# rows, per weight dtype, by whether the CPU has AVX512-BF16 (where torch's bf16 matmul is fast from 5 rows); on
# AVX2 the row-at-a-time product beats the panel GEMM up to the 8 rows one call takes (2026-12-02, Zen 3, the
# bf16 unembedding: 147 against 217 ms at 8 rows)
LINEAR_TOKENS = {True: {torch.bfloat16: 4, torch.float32: 8}, False: {torch.bfloat16: 8, torch.float32: 8}}
DENSE_ROWS = 128  # rows of one panel GEMM call: the unembedding's float32 result is then 103 MB at most
# torch's bf16 matmul (oneDNN) compiles and keeps a primitive per distinct row count: routed groups of every size
# from 9 to 512 tokens filled that cache with hundreds of them. Groups padded with zero rows to a multiple of this
# leave 32 sizes at most (no row's products change): on the Intel Xeon VM (2026-12-03) a 24-layer bf16 prefill's
# peak RSS 13.65 -> 13.41 GiB, the benchmark's 13.88 -> 13.62 (the goal: weights + 1 GiB = 13.82); the 4-layer
# prefill 267 -> 257 tok/s, medians of 6 fresh prompts alternated in one process (each spread over 216-299).
ONEDNN_ROWS = 16


@contextmanager
def _torch_single_threaded():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def step(tokens: int):
    """The context of one forward pass over ``tokens`` tokens. A decode-sized step runs torch's own ops on one
    thread: the C products have every core, and torch's OpenMP workers, which spin for a while after each of
    its parallel regions, would otherwise hold a core through the next product (measured on the wide shape:
    118 ms a token with both, 76 ms this way)."""
    return _torch_single_threaded() if tokens <= EXPERT_TOKENS else nullcontext()


def linear_tokens(dtype: torch.dtype) -> int:
    """The most rows a dense linear with weights of dtype runs in the row-at-a-time C product on this CPU."""
    return LINEAR_TOKENS[cpu_gemv.native_bf16()].get(dtype, 0)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear, with the row-at-a-time C product for bf16 or float32 weights and few rows, and float32 products
    (dense_many) for bf16 weights where torch's bf16 matmul would be slow or the activations are float32."""
    rows = x.numel() // x.shape[-1]
    if weight.device.type != "cpu":
        return linear_torch.linear(x, weight, bias)
    flat = x.reshape(rows, x.shape[-1])
    if rows <= linear_tokens(weight.dtype):
        y = cpu_gemv.dense_linear(flat, weight, bias)
    elif weight.dtype == torch.bfloat16 and (
        x.dtype == torch.float32 or (x.dtype == torch.bfloat16 and not cpu_gemv.native_bf16())
    ):
        y = dense_many(flat, weight, bias, x.dtype)
    else:
        return linear_torch.linear(x, weight, bias)
    return y.to(x.dtype).reshape(x.shape[:-1] + (weight.shape[0],))


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """norm_torch.rms_norm, in one C call for decode-sized inputs (at most EXPERT_TOKENS rows): its seven torch ops
    would each run with cold caches between decode steps."""
    if x.numel() <= EXPERT_TOKENS * x.shape[-1]:
        y = cpu_norm.rms_norm(x, weight, eps)
        if y is not None:
            return y
    return norm_torch.rms_norm(x, weight, eps)


def rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """rotary_torch.apply_rotary, in one C call (bit for bit) for decode-sized inputs (at most EXPERT_TOKENS
    positions)."""
    if x.shape[-2] <= EXPERT_TOKENS:
        y = cpu_rotary.rotary(x, cos, sin)
        if y is not None:
            return y
    return rotary_torch.apply_rotary(x, cos, sin)


def experts(
    x, indices, scores, gate_up, gate_up_bias, down, down_bias, limit: float, int8: bool = False
) -> torch.Tensor:
    """moe_torch.experts' signature and result (within float32 rounding), small groups from the blocks; one token
    (decoding) in a single C call. int8 (experts_int8): packed experts' activations quantized to int8 before each
    product, one token's in that call, more tokens' through int8_expert."""
    packed = isinstance(gate_up, tuple) and isinstance(down, tuple)
    if packed and x.shape[0] == 1:
        y = cpu_gemv.moe_token(
            x[0], indices[0], scores[0], gate_up, gate_up_bias, down, down_bias, limit, SWIGLU_ALPHA, int8=int8
        )
        if y is not None:
            return y.to(x.dtype)[None]
    out = torch.zeros_like(x)
    # float32 products where torch's bf16 matmul is slow, the activations are float32, or dense expert weights are
    # kept in bf16 for float32 work; torch's bf16 matmul on CPUs with AVX512-BF16
    widen = x.dtype == torch.float32 or (
        x.dtype == torch.bfloat16 and (not cpu_gemv.native_bf16() or (not packed and gate_up.dtype != x.dtype))
    )
    for e, tokens, weight in expert_groups(indices, scores):
        if packed and int8:
            y = int8_expert(x[tokens], e, gate_up, gate_up_bias, down, down_bias, limit).to(x.dtype)
        elif packed and tokens.numel() <= EXPERT_TOKENS:
            act = cpu_gemv.mxfp4_swiglu(x[tokens], gate_up[0][e], gate_up[1][e], gate_up_bias[e], limit, SWIGLU_ALPHA)
            # rounded to the activations' dtype, as the twin's SwiGLU output is (bf16 takes the AVX512-BF16 path)
            y = cpu_gemv.mxfp4_linear(act.to(x.dtype), down[0][e], down[1][e], down_bias[e]).to(x.dtype)
        elif widen:
            y = float32_expert(x[tokens], e, gate_up, gate_up_bias, down, down_bias, limit).to(x.dtype)
        else:
            y = _row_padded_expert(x[tokens], e, gate_up, gate_up_bias, down, down_bias, limit)
        out.index_add_(0, tokens, y * weight)
    return out


def experts_int8(x, indices, scores, gate_up, gate_up_bias, down, down_bias, limit: float) -> torch.Tensor:
    """experts() with the activations quantized to int8 with a float32 scale a block of 32 before each MXFP4
    product (cpu_gemv.quantize_int8: llama.cpp's q8_0 arithmetic, with the scale kept in float32), a decode step's
    in the one-token MoE call, a prompt's through the int8 panel GEMM: on AVX2 these loops need no widening
    shuffles and multiply 32 pairs an instruction (docs/cpu.md). Approximate: each activation moves by at most
    half its block's scale (max |x| / 254)."""
    return experts(x, indices, scores, gate_up, gate_up_bias, down, down_bias, limit, int8=True)


def int8_expert(xs: torch.Tensor, e: int, gate_up, gate_up_bias, down, down_bias, limit: float) -> torch.Tensor:
    """moe_torch.expert_output of packed expert e with each product's activations quantized to int8 (the input,
    then the SwiGLU output in float32) -> float32 [n, H]: the int8 panel GEMM for many tokens, the one-token
    products for one token or where the panel GEMM cannot run (no AVX2)."""
    up_blocks, up_scales, down_blocks, down_scales = gate_up[0][e], gate_up[1][e], down[0][e], down[1][e]
    if xs.shape[0] > 1:
        act = cpu_gemv.mxfp4_gemm_int8(
            xs, up_blocks, up_scales, gate_up_bias[e], swiglu=True, limit=limit, alpha=SWIGLU_ALPHA
        )
        y = None if act is None else cpu_gemv.mxfp4_gemm_int8(act, down_blocks, down_scales, down_bias[e])
        if y is not None:
            return y
    rows = []
    for x in xs:
        act = cpu_gemv.mxfp4_swiglu_int8(x, up_blocks, up_scales, gate_up_bias[e], limit, SWIGLU_ALPHA)
        rows.append(cpu_gemv.mxfp4_linear_int8(act, down_blocks, down_scales, down_bias[e]))
    return torch.cat(rows)


def _row_padded_expert(xs: torch.Tensor, e: int, gate_up, gate_up_bias, down, down_bias, limit: float):
    """expert_output on xs [n, H] padded with zero rows to a multiple of ONEDNN_ROWS, those rows dropped after.
    Groups of at most EXPERT_TOKENS (a dense fine-tune's decoding: one token an expert) are left as they are: their
    few row counts need no bound, and sixteen rows for one would be sixteen times the arithmetic."""
    n = xs.shape[0]
    if n > EXPERT_TOKENS and n % ONEDNN_ROWS:
        xs = torch.cat([xs, xs.new_zeros(ONEDNN_ROWS - n % ONEDNN_ROWS, xs.shape[1])])
    return expert_output(xs, e, gate_up, gate_up_bias, down, down_bias, limit)[:n]


def float32_expert(xs: torch.Tensor, e: int, gate_up, gate_up_bias, down, down_bias, limit: float) -> torch.Tensor:
    """moe_torch.expert_output in float32 arithmetic through the C panel GEMM (widened panels and torch where it
    cannot run), packed experts or dense ones -> float32 [n, H]; with bf16 activations the SwiGLU output is rounded
    to bf16 before down, as the twin's is."""
    act = None
    if isinstance(gate_up, tuple):
        blocks, scales = gate_up[0][e], gate_up[1][e]
        act = cpu_gemv.mxfp4_gemm(xs, blocks, scales, gate_up_bias[e], swiglu=True, limit=limit, alpha=SWIGLU_ALPHA)
    if act is None:
        act = clamped_swiglu(_float32_product(xs, gate_up, e, gate_up_bias[e]), limit)
    return _float32_product(act.to(xs.dtype), down, e, down_bias[e])


def _float32_product(x: torch.Tensor, weight, e: int, bias: torch.Tensor) -> torch.Tensor:
    if isinstance(weight, tuple):
        y = cpu_gemv.mxfp4_gemm(x, weight[0][e], weight[1][e], bias)
        return y if y is not None else widened.mxfp4_linear(x, weight[0][e], weight[1][e], bias)
    return dense_many(x, weight[e], bias)


def dense_many(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, dtype=torch.float32) -> torch.Tensor:
    """x [T, K] @ weight.T (+ bias) in float32 for many rows -> [T, N] in dtype: the C panel GEMM, or widened panels
    through torch's float32 matmul where it cannot run. Rows go DENSE_ROWS at a time, so the float32 result of a
    wide weight never exists whole beside its dtype copy (a 512-token prefill's logits: 412 MB in float32). A
    float32 result is written in place, chunk by chunk: a copy of each chunk into fresh pages cost 0.1-0.15 s of a
    512-token prefill's logits (page faults)."""
    if x.shape[0] <= DENSE_ROWS:
        return _float32_rows(x, weight, bias).to(dtype)
    out = torch.empty((x.shape[0], weight.shape[0]), dtype=dtype)
    for start in range(0, x.shape[0], DENSE_ROWS):
        chunk = out[start : start + DENSE_ROWS]
        y = _float32_rows(x[start : start + DENSE_ROWS], weight, bias, chunk if dtype == torch.float32 else None)
        if y.data_ptr() != chunk.data_ptr():
            chunk.copy_(y)
    return out


def _float32_rows(x, weight, bias, out: torch.Tensor | None = None) -> torch.Tensor:
    """dense_many's product of one chunk in float32, into `out` where the panel GEMM runs and out is given."""
    y = cpu_gemv.dense_gemm(x, weight, bias, out) if weight.dtype in (torch.bfloat16, torch.float32) else None
    return y if y is not None else widened.dense_linear(x, weight, bias)
