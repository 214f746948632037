"""The decode attention of _cpu_attention.c for CPU tensors: logits, sink, window and values in one call (no torch
op between them), float32 arithmetic, the (batch, KV head) pairs split over every core. attention_cpu takes it for
few queries; ``attention`` answers None where it does not apply and the caller keeps its torch path.

Arithmetic and its bound against the reference: see _cpu_attention.c (tests/model/test_attention_cpu.py holds it).
"""

from __future__ import annotations

import torch

from ...codec.native import thread_count
from .cpu_library import library

DTYPES = (torch.bfloat16, torch.float32)
MAX_HEAD_DIM = 128  # the kernel's MAX_DIM


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, sinks: torch.Tensor, *, window: int | None
) -> torch.Tensor | None:
    """attention_torch.attention for q [B, H, T, D] (the last T of the S positions of k and v [B, KV, S, D]), sinks
    [H]; None for other dtypes or devices, mixed dtypes, a head dim over MAX_HEAD_DIM, or an unbuilt extension."""
    lib = library()
    b, heads, t, d = q.shape
    kv, s = k.shape[1], k.shape[2]
    same = q.dtype == k.dtype == v.dtype
    if lib is None or not same or q.dtype not in DTYPES or q.device.type != "cpu" or d > MAX_HEAD_DIM:
        return None
    if heads % kv or (window is not None and window < 1):
        return None
    q = q.contiguous()
    capacity = _capacity(k, v)
    if capacity is None:  # not a cache's view: copied
        k, v, capacity = k.contiguous(), v.contiguous(), s
    sinks = sinks.to(torch.float32).contiguous()
    out = torch.empty_like(q)
    args = (q.data_ptr(), k.data_ptr(), v.data_ptr(), sinks.data_ptr(), out.data_ptr(), int(q.dtype == torch.bfloat16))
    shape = (b, heads, kv, t, s, capacity, d, window or 0, d**-0.5, thread_count())
    return out if lib.mxa_attention(*args, *shape) else None


def _capacity(k: torch.Tensor, v: torch.Tensor) -> int | None:
    """The positions between one KV head's first and the next one's where k and v are both the first S positions
    of a store [B, KV, capacity, D] (a LayerCache's views: read in place), else None."""
    b, kv, s, d = k.shape
    if k.stride() != v.stride() or k.stride(3) != 1 or k.stride(2) != d or k.stride(1) % d:
        return None
    capacity = k.stride(1) // d
    if capacity < s or (b > 1 and k.stride(0) != kv * k.stride(1)):
        return None
    return capacity
