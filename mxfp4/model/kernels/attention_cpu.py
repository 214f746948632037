"""gpt-oss attention for the native CPU path. Long prompts: torch's fused flash attention for the CPU, with the
sink applied afterwards from the logsumexp the kernel returns; decoding and short prompts: the C kernel of
cpu_attention (one call a layer); a few queries against a cache, or where the C kernel does not apply (float64,
an unbuilt extension): the query heads of each KV head as one matrix.
Same signature and result as attention_torch.attention (within the float rounding of a different evaluation
order; tests/model/test_attention_cpu.py states the bound).

Why the sink can come afterwards: with logits l_j over the allowed keys and L = logsumexp(l), the sink s joins
only the denominator, so each weight is exp(l_j) / (exp(L) + exp(s)) = softmax(l)_j * sigmoid(L - s). The fused
kernel never writes the [T, S] logits, which is most of the reference's time on long prompts (measured on the
wide shape, 512 tokens, 64 heads: 160 ms a full layer in attention_torch, 54 ms here). Between decode steps the
weights stream through the caches, and each of grouped_attention's ~25 torch ops then costs several times what it
does in a loop (measured on the wide shape: 0.75 ms a layer in the model, 0.2 ms alone): the C kernel's one call
is what decoding takes.
"""

from __future__ import annotations

import torch

from . import attention_torch, cpu_attention

# Where each path is fastest, from `bench_model.py --crossover` (docs/cpu.md, docs/benchmarks.md): the C
# kernel up to 2 queries against a cache and up to 128 with nothing cached (a prompt); otherwise grouped_attention
# below MIN_QUERIES queries and torch's fused kernel from there.
C_QUERIES_CACHED = 2
C_QUERIES_UNCACHED = 128
MIN_QUERIES = 32
_FLASH = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)  # torch >= 2.2


def available() -> bool:
    return _FLASH is not None


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, sinks: torch.Tensor, *, q_start: int, window: int | None
) -> torch.Tensor:
    """attention_torch.attention: q [B, H, T, D] at positions q_start.., k and v [B, KV, S, D] at the latest S
    positions, sinks [H] -> [B, H, T, D]."""
    t, s = q.shape[2], k.shape[2]
    if q.device.type != "cpu":
        return attention_torch.attention(q, k, v, sinks, q_start=q_start, window=window)
    if t <= (C_QUERIES_UNCACHED if s == t else C_QUERIES_CACHED):
        out = cpu_attention.attention(q, k, v, sinks, window=window)
        if out is not None:
            return out
    if t < MIN_QUERIES or _FLASH is None:
        return grouped_attention(q, k, v, sinks, q_start=q_start, window=window)
    return fused_attention(q, k, v, sinks, q_start=q_start, window=window)


def fused_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, sinks: torch.Tensor, *, q_start: int, window: int | None
) -> torch.Tensor:
    """attention() through torch's fused CPU flash attention (where available()), the sink from its logsumexp."""
    t, s = q.shape[2], k.shape[2]
    groups = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    mask, causal = _mask(t, s, q_start, window, q.dtype)
    out, lse = _FLASH(q, k, v, 0.0, causal, attn_mask=mask, scale=q.shape[-1] ** -0.5)
    wide = torch.promote_types(q.dtype, torch.float32)  # bf16 outputs are scaled in float32, float64 in float64
    kept = torch.sigmoid(lse.to(wide) - sinks.to(wide).view(1, -1, 1))  # the keys' share; the sink takes the rest
    return (out.to(wide) * kept.unsqueeze(-1)).to(q.dtype)


def grouped_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, sinks: torch.Tensor, *, q_start: int, window: int | None
) -> torch.Tensor:
    """attention() for few queries: the G query heads of each KV head are one matrix [G * T, D] against that
    head's keys, so the keys and values are neither repeated per query head (the reference's repeat_interleave)
    nor split into 64 tiny products. Logits in the inputs' dtype, as the reference computes them; the softmax
    with its sink in float32 (or float64)."""
    b, heads, t, d = q.shape
    kv, s = k.shape[1], k.shape[2]
    groups = heads // kv
    logits = q.reshape(b, kv, groups * t, d) @ k.transpose(-1, -2)  # rows g * T + i: head kv * G + g, query i
    wide = torch.promote_types(q.dtype, torch.float32)
    logits = logits.to(wide) * d**-0.5
    logits = logits.masked_fill(~_allowed(t, s, q_start, window).repeat(groups, 1), float("-inf"))
    sink = sinks.to(wide).view(1, kv, groups, 1).expand(b, kv, groups, t).reshape(b, kv, groups * t, 1)
    top = torch.maximum(logits.amax(-1, keepdim=True), sink)
    weights = torch.exp(logits - top)
    total = weights.sum(-1, keepdim=True) + torch.exp(sink - top)  # the sink joins the denominator only
    out = (weights / total).to(v.dtype) @ v  # [B, KV, G * T, D]
    return out.reshape(b, heads, t, d)


def _mask(t: int, s: int, q_start: int, window: int | None, dtype: torch.dtype):
    """(additive mask [T, S] or None, is_causal). The kernel's own causal flag aligns query 0 with key 0, which is
    right only when the keys are exactly the queries' positions and no window cuts in."""
    if s == t and (window is None or window >= t):
        return None, True
    return torch.zeros(t, s, dtype=dtype).masked_fill_(~_allowed(t, s, q_start, window), float("-inf")), False


def _allowed(t: int, s: int, q_start: int, window: int | None) -> torch.Tensor:
    """[T, S]: query i (position q_start + i) sees key j (the latest S positions) when i - window < j <= i."""
    positions = q_start + torch.arange(t)
    keys = q_start + t - s + torch.arange(s)
    allowed = keys[None, :] <= positions[:, None]
    if window is not None:
        allowed &= keys[None, :] > positions[:, None] - window
    return allowed
