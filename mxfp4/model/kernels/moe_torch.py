"""The MoE expert computation in torch: the oracle the Triton kernel (moe_triton) is held to, with the
same signature. Packed experts are decoded one routed expert at a time, never all at once."""

from __future__ import annotations

import torch

from ...codec import decode

SWIGLU_ALPHA = 1.702


def clamped_swiglu(h: torch.Tensor, limit: float) -> torch.Tensor:
    """gpt-oss's activation on interleaved gate/up columns [..., 2I] -> [..., I]: the gate clamped from
    above, the linear half clamped both ways and shifted by +1."""
    gate, up = h[..., 0::2].clamp(max=limit), h[..., 1::2].clamp(-limit, limit)
    return gate * torch.sigmoid(SWIGLU_ALPHA * gate) * (up + 1)


def expert_matrix(weight, e: int, dtype: torch.dtype) -> torch.Tensor:
    """Expert e's [out, in] matrix from (blocks [E, out, in/32, 16], scales [E, out, in/32]) or a dense
    [E, out, in] tensor; decoded now if packed (transient: one expert at a time)."""
    if isinstance(weight, tuple):
        return decode.dequantize(weight[0][e], weight[1][e], dtype)
    return weight[e].to(dtype)


def experts(
    x: torch.Tensor,
    indices: torch.Tensor,
    scores: torch.Tensor,
    gate_up,
    gate_up_bias: torch.Tensor,
    down,
    down_bias: torch.Tensor,
    limit: float,
) -> torch.Tensor:
    """x [N, H]; top-k expert ids and routing weights [N, k]; gate_up / down as (blocks, scales) or dense
    [E, out, in]; biases [E, 2I] and [E, H] -> sum over the k choices of weight * expert(x), [N, H]."""
    return grouped_experts(x, expert_groups(indices, scores), gate_up, gate_up_bias, down, down_bias, limit)


def expert_groups(indices: torch.Tensor, scores: torch.Tensor) -> list[tuple[int, torch.Tensor, torch.Tensor]]:
    """(expert, token ids [n], routing weights [n, 1]) for every expert hit (asks the host which)."""
    groups = []
    for e in indices.unique().tolist():
        tokens, slot = torch.where(indices == e)
        groups.append((e, tokens, scores[tokens, slot, None]))
    return groups


def grouped_experts(
    x: torch.Tensor, groups, gate_up, gate_up_bias: torch.Tensor, down, down_bias: torch.Tensor, limit: float
) -> torch.Tensor:
    """experts() with the routing already grouped: one matmul per expert over its tokens."""
    out = torch.zeros_like(x)
    for e, tokens, weight in groups:
        out.index_add_(0, tokens, expert_output(x[tokens], e, gate_up, gate_up_bias, down, down_bias, limit) * weight)
    return out


def expert_output(xs: torch.Tensor, e: int, gate_up, gate_up_bias, down, down_bias, limit: float) -> torch.Tensor:
    """Expert e on its tokens xs [n, H] -> [n, H]: one matmul each for gate_up and down."""
    h = xs @ expert_matrix(gate_up, e, xs.dtype).T + gate_up_bias[e]  # [n, 2I]
    return clamped_swiglu(h, limit) @ expert_matrix(down, e, xs.dtype).T + down_bias[e]
