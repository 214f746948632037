"""gpt-oss attention as a Triton kernel (flash-attention style, online softmax in float32), the same
signature as attention_torch.attention, its oracle.

One program covers a block of (query, head) rows that share a key/value head: the G = H / KV query
heads of a group are packed into the row dimension, so decode (one query) still fills a tile and each
key block is read once per group. Only the key blocks inside the causal / sliding-window band are
visited. The sink starts the running softmax (max = sink, sum = 1, no value). For decode against a long
cache the keys are split across programs (flash-decoding) and the partial results merged here.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

LOG2E = 1.4426950408889634
_LOG2E = tl.constexpr(LOG2E)  # the same number for the kernel (a kernel reads only constexpr globals)
NO_WINDOW = 1 << 62
# 8 warps: with 4, the sm_90 build spills registers to local memory (ptxas resource usage, checked by
# tests/test_kernels_compile.py for every tile the launcher uses)
NUM_WARPS = 8


@triton.jit
def _attention_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    sinks_ptr,
    out_ptr,
    m_ptr,
    l_ptr,
    T,
    S,
    q_start,
    q_start_ptr,
    window,
    scale_log2,
    keys_per_split,
    HEADS: tl.constexpr,
    KV_HEADS: tl.constexpr,
    G: tl.constexpr,
    D: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    FINAL: tl.constexpr,
    RING: tl.constexpr,
    PRECISION: tl.constexpr,
):
    batch_kv = tl.program_id(1)
    b, kv = batch_kv // KV_HEADS, batch_kv % KV_HEADS
    split = tl.program_id(2)
    r = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)  # row = query t * G + head-in-group g
    t, g = r // G, r % G
    row_mask = t < T
    head = kv * G + g
    d = tl.arange(0, BLOCK_D)
    d_mask = d < D
    q_rows = ((b * HEADS + head).to(tl.int64) * T + t) * D
    q = tl.load(q_ptr + q_rows[:, None] + d[None, :], mask=row_mask[:, None] & d_mask[None, :], other=0.0)
    if RING:  # a static cache: position from device memory (CUDA-graph replays), key p in slot p % S
        q_start = tl.load(q_start_ptr)
        key_start = q_start * 0  # until the ring wraps, slot j holds position j
    else:  # the keys are the latest S positions, the last being the last query's
        key_start = q_start + T - S
    position = q_start + t  # absolute position of each row's query
    last = q_start + T - 1
    # The band of keys any row of this block may see, intersected with this program's split.
    first_t = tl.program_id(0) * BLOCK_M // G
    last_t = tl.minimum((tl.program_id(0) * BLOCK_M + BLOCK_M - 1) // G, T - 1)
    lo = tl.maximum(q_start + first_t - window + 1 - key_start, 0)
    hi = tl.minimum(q_start + last_t - key_start + 1, S)
    if RING:  # once wrapped, positions are scattered over the slots: visit them all, mask by position
        lo = tl.where(last >= S, 0, lo)
        hi = tl.where(last >= S, S, hi)
    lo, hi = tl.maximum(lo, split * keys_per_split), tl.minimum(hi, (split + 1) * keys_per_split)
    if FINAL:  # the sink opens the running softmax: max = sink, sum = exp(0) = 1
        m = tl.load(sinks_ptr + head).to(tl.float32) * _LOG2E
        l = tl.full((BLOCK_M,), 1.0, tl.float32)
    else:  # a partial result; the sink joins when the splits are merged
        m = tl.full((BLOCK_M,), -1.0e30, tl.float32)
        l = tl.zeros((BLOCK_M,), tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)
    kv_base = (b * KV_HEADS + kv).to(tl.int64) * S * D
    for j0 in range(lo - lo % BLOCK_N, hi, BLOCK_N):
        j = j0 + tl.arange(0, BLOCK_N)
        j_mask = (j >= lo) & (j < hi)
        keys = tl.load(
            k_ptr + kv_base + j.to(tl.int64)[:, None] * D + d[None, :],
            mask=j_mask[:, None] & d_mask[None, :],
            other=0.0,
        )
        logits = tl.dot(q, tl.trans(keys), input_precision=PRECISION) * scale_log2  # base-2 logits
        if RING:
            key_position = last - (last - j) % S  # the latest position written to slot j (< 0: not yet)
            j_mask &= key_position >= 0
        else:
            key_position = key_start + j
        allowed = (
            j_mask[None, :]
            & (key_position[None, :] <= position[:, None])
            & (key_position[None, :] > position[:, None] - window)
        )
        logits = tl.where(allowed, logits, float("-inf"))
        m_new = tl.maximum(m, tl.max(logits, axis=1))
        alpha = tl.exp2(m - m_new)
        p = tl.exp2(logits - m_new[:, None])
        l = l * alpha + tl.sum(p, axis=1)
        values = tl.load(
            v_ptr + kv_base + j.to(tl.int64)[:, None] * D + d[None, :],
            mask=j_mask[:, None] & d_mask[None, :],
            other=0.0,
        )
        acc = acc * alpha[:, None] + tl.dot(p.to(values.dtype), values, input_precision=PRECISION)
        m = m_new
    if FINAL:
        tl.store(
            out_ptr + q_rows[:, None] + d[None, :],
            (acc / l[:, None]).to(out_ptr.dtype.element_ty),
            mask=row_mask[:, None] & d_mask[None, :],
        )
    else:  # partials [splits, B, H, T, (D)]
        batches = tl.num_programs(1) // KV_HEADS
        rows = ((split.to(tl.int64) * batches + b) * HEADS + head) * T + t
        tl.store(out_ptr + rows[:, None] * D + d[None, :], acc, mask=row_mask[:, None] & d_mask[None, :])
        tl.store(m_ptr + rows, m, mask=row_mask)
        tl.store(l_ptr + rows, l, mask=row_mask)


def _splits(t: int, s: int, window: int | None, programs: int, device) -> int:
    """How many programs share one row block's keys: 1 for prefill (enough row blocks already) and for
    short caches; for decode against a long cache, enough to occupy the GPU with >= 256 keys each."""
    if device.type != "cuda" or t > 16:
        return 1
    band = min(s, window) if window else s
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    return max(1, min(triton.cdiv(band, 256), triton.cdiv(2 * sms, programs)))


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    sinks: torch.Tensor,
    *,
    q_start: int,
    window: int | None,
    splits: int | None = None,
) -> torch.Tensor:
    """attention_torch.attention as a kernel. splits: key-range programs per row block (None: chosen)."""
    return _launch(q, k, v, sinks, q_start, None, window, splits)


def ring_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    sinks: torch.Tensor,
    *,
    q_start: torch.Tensor,
    window: int | None,
    splits: int | None = None,
) -> torch.Tensor:
    """attention_torch.ring_attention as a kernel: q_start is read on the device, so a CUDA graph that
    captured this call stays right when the position moves on."""
    return _launch(q, k, v, sinks, 0, q_start, window, splits)


def _launch(q, k, v, sinks, q_start: int, q_start_tensor, window, splits):
    ring = q_start_tensor is not None
    b, heads, t, d = q.shape
    kv_heads, s = k.shape[1], k.shape[2]
    groups = heads // kv_heads
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    block_m = max(16, min(64, triton.next_power_of_2(t * groups)))
    block_n = 64
    row_blocks = triton.cdiv(t * groups, block_m)
    splits = splits or _splits(t, s, window, row_blocks * b * kv_heads, q.device)
    keys_per_split = triton.cdiv(s, splits) if splits > 1 else s
    keys_per_split = triton.cdiv(keys_per_split, block_n) * block_n
    precision = "ieee" if q.dtype == torch.float32 else "tf32"
    start_ptr = q_start_tensor if ring else sinks  # an unused pointer when the start is an int
    common = dict(
        num_warps=NUM_WARPS,
        RING=ring,
        HEADS=heads,
        KV_HEADS=kv_heads,
        G=groups,
        D=d,
        BLOCK_D=triton.next_power_of_2(d),
        BLOCK_M=block_m,
        BLOCK_N=block_n,
        PRECISION=precision,
    )
    scale_log2 = d**-0.5 * LOG2E
    win = window if window is not None else NO_WINDOW
    if splits == 1:
        out = torch.empty_like(q)
        _attention_kernel[(row_blocks, b * kv_heads, 1)](
            q,
            k,
            v,
            sinks,
            out,
            out,
            out,
            t,
            s,
            q_start,
            start_ptr,
            win,
            scale_log2,
            keys_per_split,
            FINAL=True,
            **common,
        )
        return out
    acc = torch.empty((splits, b, heads, t, d), dtype=torch.float32, device=q.device)
    m = torch.empty((splits, b, heads, t), dtype=torch.float32, device=q.device)
    l = torch.empty_like(m)
    _attention_kernel[(row_blocks, b * kv_heads, splits)](
        q, k, v, sinks, acc, m, l, t, s, q_start, start_ptr, win, scale_log2, keys_per_split, FINAL=False, **common
    )
    sink = sinks.float().view(1, -1, 1) * LOG2E  # merge the splits with the sink, all in base 2
    top = torch.maximum(m.amax(0), sink)
    weight = torch.exp2(m - top)  # [splits, B, H, T]
    total = (l * weight).sum(0) + torch.exp2(sink - top)
    return ((acc * weight[..., None]).sum(0) / total[..., None]).to(q.dtype)
