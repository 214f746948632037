"""gpt-oss attention in torch (the oracle of attention_triton, same signatures): causal, optionally a
sliding window, grouped-query heads, and a learned per-head sink that joins the softmax denominator
without contributing a value.

Two ways to hold the keys: `attention` takes the latest S positions in order (the growing cache);
`ring_attention` takes a static cache of C slots where position p lives in slot p % C (full layers:
C >= every position; sliding layers: a ring a little longer than the window), with the start position
as a device tensor so that a captured CUDA graph can replay it."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, sinks: torch.Tensor, *, q_start: int, window: int | None
) -> torch.Tensor:
    """q [B, H, T, D] at positions q_start.., k and v [B, KV, S, D] (H a multiple of KV) at the latest
    S positions, sinks [H] -> [B, H, T, D]. Query i sees keys j with i - window < j <= i."""
    t, s = q.shape[2], k.shape[2]
    positions = q_start + torch.arange(t, device=q.device)
    return _attend(q, k, v, sinks, positions, q_start + t - s + torch.arange(s, device=q.device), window)


def ring_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, sinks: torch.Tensor, *, q_start: torch.Tensor, window: int | None
) -> torch.Tensor:
    """As attention, with k and v [B, KV, C, D] a ring (position p in slot p % C, the queries' own keys
    already written) and q_start a 0-dim integer tensor. Slots not written yet are ignored."""
    t, c = q.shape[2], k.shape[2]
    positions = q_start + torch.arange(t, device=q.device)
    last = positions[-1]
    keys = last - torch.remainder(last - torch.arange(c, device=q.device), c)  # the latest position in each slot
    return _attend(q, k, v, sinks, positions, keys, window)


def _attend(q, k, v, sinks, positions, key_positions, window):
    b, heads, t, d = q.shape
    allowed = (key_positions[None, :] <= positions[:, None]) & (key_positions[None, :] >= 0)  # causal [T, S]
    if window is not None:
        allowed &= key_positions[None, :] > positions[:, None] - window
    groups = heads // k.shape[1]
    k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)  # [B, H, S, D]
    logits = (q @ k.transpose(-1, -2)) * d**-0.5  # [B, H, T, S]
    logits = logits.masked_fill(~allowed, float("-inf"))
    sink = sinks.to(logits.dtype).view(1, -1, 1, 1).expand(b, -1, t, 1)
    combined = torch.cat([logits, sink], dim=-1)  # the sink joins the denominator only
    combined = combined - combined.max(dim=-1, keepdim=True).values
    weights = F.softmax(combined, dim=-1)[..., :-1]
    return weights.to(v.dtype) @ v
