"""gpt-oss attention in torch (the oracle of attention_triton, same signature): causal, optionally a
sliding window, grouped-query heads, and a learned per-head sink that joins the softmax denominator
without contributing a value."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def key_positions(q_start: int, t: int, s: int, device) -> torch.Tensor:
    """Absolute positions of the s keys: the cache holds the latest s, the last being the last query's."""
    return q_start + t - s + torch.arange(s, device=device)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, sinks: torch.Tensor, *, q_start: int, window: int | None) -> torch.Tensor:
    """q [B, H, T, D] at positions q_start.., k and v [B, KV, S, D] (H a multiple of KV), sinks [H]
    -> [B, H, T, D]. Query i sees keys j with i - window < j <= i (no lower bound without a window)."""
    b, heads, t, d = q.shape
    s = k.shape[2]
    positions = q_start + torch.arange(t, device=q.device)
    keys = key_positions(q_start, t, s, q.device)
    allowed = keys[None, :] <= positions[:, None]  # causal [T, S]
    if window is not None:
        allowed &= keys[None, :] > positions[:, None] - window
    groups = heads // k.shape[1]
    k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)  # [B, H, S, D]
    logits = (q @ k.transpose(-1, -2)) * d**-0.5  # [B, H, T, S]
    logits = logits.masked_fill(~allowed, float("-inf"))
    sink = sinks.to(logits.dtype).view(1, -1, 1, 1).expand(b, -1, t, 1)
    combined = torch.cat([logits, sink], dim=-1)  # the sink joins the denominator only
    combined = combined - combined.max(dim=-1, keepdim=True).values
    weights = F.softmax(combined, dim=-1)[..., :-1]
    return weights.to(v.dtype) @ v
