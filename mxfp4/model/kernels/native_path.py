"""The model's CPU path with the C products of cpu_gemv where they are faster: decoding and small batches.

Experts: a routed expert with at most EXPERT_TOKENS tokens runs gate_up (fused with the clamped SwiGLU) and
down straight from its MXFP4 blocks; a larger group decodes the expert once and lets torch's matmul run
(moe_torch). Dense linears (attention, router, unembedding) in bf16 or float32 with at most LINEAR_TOKENS rows
run the C product; others stay torch's. The thresholds are the crossovers measured by
``benchmarks/bench_model.py --crossover`` on this project's 2-core machine (README, "CPU decoding").
Intermediates stay float32; results are cast to the activations' dtype.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext

import torch
import torch.nn.functional as F

from . import cpu_gemv
from .moe_torch import SWIGLU_ALPHA, expert_groups, expert_output

EXPERT_TOKENS = 8  # measured crossovers: see the module docstring
LINEAR_TOKENS = {torch.bfloat16: 4, torch.float32: 8}  # rows, per weight dtype


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


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear, with the C product for bf16 or float32 weights and few rows."""
    rows = x.numel() // x.shape[-1]
    if rows > LINEAR_TOKENS.get(weight.dtype, 0) or weight.device.type != "cpu":
        return F.linear(x, weight, bias)
    y = cpu_gemv.dense_linear(x.reshape(rows, x.shape[-1]), weight, bias)
    return y.to(x.dtype).reshape(x.shape[:-1] + (weight.shape[0],))


def experts(x, indices, scores, gate_up, gate_up_bias, down, down_bias, limit: float) -> torch.Tensor:
    """moe_torch.experts' signature and result (within float32 rounding), small groups from the blocks; one token
    (decoding) in a single C call."""
    packed = isinstance(gate_up, tuple) and isinstance(down, tuple)
    if packed and x.shape[0] == 1:
        y = cpu_gemv.moe_token(x[0], indices[0], scores[0], gate_up, gate_up_bias, down, down_bias, limit, SWIGLU_ALPHA)
        if y is not None:
            return y.to(x.dtype)[None]
    out = torch.zeros_like(x)
    for e, tokens, weight in expert_groups(indices, scores):
        if packed and tokens.numel() <= EXPERT_TOKENS:
            act = cpu_gemv.mxfp4_swiglu(x[tokens], gate_up[0][e], gate_up[1][e], gate_up_bias[e], limit, SWIGLU_ALPHA)
            # rounded to the activations' dtype, as the twin's SwiGLU output is (bf16 takes the AVX512-BF16 path)
            y = cpu_gemv.mxfp4_linear(act.to(x.dtype), down[0][e], down[1][e], down_bias[e]).to(x.dtype)
        else:
            y = expert_output(x[tokens], e, gate_up, gate_up_bias, down, down_bias, limit)
        out.index_add_(0, tokens, y * weight)
    return out
