"""Products of weights stored narrower than float32 (bf16 matrices, MXFP4 experts) with many activation rows, in
float32 arithmetic: the weight is widened a panel of rows at a time into a cache-sized float32 buffer and each
panel is one float32 GEMM (torch's). This is the native path's prefill on CPUs without AVX512-BF16, where torch's
own bf16 matmul runs at about a fifth of its float32 rate, and its product of bf16 weights with float32
activations (a float32 model keeps bf16 weights as they are: no float32 copy of the 2.3 GB unembedding).

Arithmetic: the widened values are exact (bf16 and MXFP4 values are float32 values), so each output is a float32
sum of the same exact products as the twin's float32 matmul, in the BLAS's order; the result is returned in
float32 and callers round once to their dtype. Panel sizes: ``benchmarks/bench_model.py --crossover`` on an
AVX2-only Zen 3 (docs/benchmarks.md): 512 bf16 rows and 576 MXFP4 rows were the fastest of
128-2048 at 2880 columns.
"""

from __future__ import annotations

import torch

from ...codec import decode

DENSE_PANEL_ROWS = 512
MXFP4_PANEL_ROWS = 576


def dense_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x [T, K] @ weight.T (+ bias) for a weight of any float dtype [N, K] -> float32 [T, N]."""
    x = x.to(torch.float32)
    out = torch.empty((x.shape[0], weight.shape[0]), dtype=torch.float32)
    for start in range(0, weight.shape[0], DENSE_PANEL_ROWS):
        panel = weight[start : start + DENSE_PANEL_ROWS].to(torch.float32)
        torch.mm(x, panel.T, out=out[:, start : start + panel.shape[0]])
    if bias is not None:
        out += bias.to(torch.float32)
    return out


def mxfp4_linear(
    x: torch.Tensor, blocks: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """x [T, K] @ W.T (+ bias) for MXFP4 W = (blocks [N, K/32, 16], scales [N, K/32]) -> float32 [T, N]."""
    x = x.to(torch.float32)
    rows = blocks.shape[0]
    out = torch.empty((x.shape[0], rows), dtype=torch.float32)
    for start in range(0, rows, MXFP4_PANEL_ROWS):
        stop = min(start + MXFP4_PANEL_ROWS, rows)
        panel = decode.dequantize(blocks[start:stop], scales[start:stop], torch.float32)
        torch.mm(x, panel.T, out=out[:, start:stop])
    if bias is not None:
        out += bias.to(torch.float32)
    return out
