"""The MoE expert computation as Triton kernels, with MXFP4 weights decoded in registers (no bf16 copy of
any expert is made). Same signature as moe_torch.experts, its oracle.

Three kernels, over the tiles of mxfp4.model.kernels.routing (routed slots grouped per expert):
1. gate_up: for each tile, x[tokens] @ W_gate_up[e].T + bias with the clamped SwiGLU fused; the gate and
   linear rows (interleaved 2j, 2j+1 in the checkpoint) are decoded side by side, so the [n, 2I]
   pre-activation never reaches memory; writes act [slots, I] in sorted order.
2. down: act @ W_down[e].T + bias, times the slot's routing weight, written per slot in float32.
3. top-k sum: out[t] = sum over the k slots of token t, in a fixed order (deterministic, no atomics).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ...codec.triton_decode import e2m1_values, e8m0_values
from ...errors import OptionError
from . import moe_torch
from .routing import Routing, route

# 8 warps: with 4, the sm_90 build of the matmul kernels spills registers to local memory (ptxas
# resource usage, checked by tests/test_kernels_compile.py for every tile block_sizes chooses)
NUM_WARPS = 8


@triton.jit
def _decode_tile(blocks_ptr, scales_ptr, rows, row_mask, k0, K, BN: tl.constexpr, BLOCK_K: tl.constexpr):
    """Rows `rows` (int32 [BN], of the expert whose bytes start at blocks_ptr / scales_ptr), elements
    [k0, k0 + BLOCK_K) -> float32 [BN, BLOCK_K]. A row's K/2 bytes hold element 2i in the low nibble
    and 2i + 1 in the high nibble; its K/32 scales are E8M0 (0xFF: the block is NaN)."""
    byte = k0 // 2 + tl.arange(0, BLOCK_K // 2)
    packed = tl.load(
        blocks_ptr + rows[:, None] * (K // 2) + byte[None, :],
        mask=row_mask[:, None] & (byte < K // 2)[None, :],
        other=0,
    ).to(tl.int32)
    group = k0 // 32 + tl.arange(0, BLOCK_K // 32)
    s = tl.load(
        scales_ptr + rows[:, None] * (K // 32) + group[None, :],
        mask=row_mask[:, None] & (group < K // 32)[None, :],
        other=127,
    ).to(tl.int32)
    value = e2m1_values(packed, BN, BLOCK_K)
    scale = tl.where(s == 255, float("nan"), e8m0_values(s))
    value = tl.reshape(value, (BN, BLOCK_K // 32, 32)) * scale[:, :, None]
    return tl.reshape(value, (BN, BLOCK_K))


@triton.jit
def _gate_up_kernel(
    x_ptr,
    order_ptr,
    tile_expert_ptr,
    tile_start_ptr,
    tile_end_ptr,
    blocks_ptr,
    scales_ptr,
    bias_ptr,
    act_ptr,
    H,
    I,
    num_experts,
    limit,
    ALPHA: tl.constexpr,
    TOPK: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    PRECISION: tl.constexpr,
):
    tile = tl.program_id(0)
    e = tl.load(tile_expert_ptr + tile)
    if e >= num_experts:  # a spare tile: fewer experts were hit than the bound allows for
        return
    r = tl.load(tile_start_ptr + tile) + tl.arange(0, BLOCK_M)
    row_mask = r < tl.load(tile_end_ptr + tile)
    token = (tl.load(order_ptr + r, mask=row_mask, other=0) // TOPK).to(tl.int64)
    n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = n < I
    gate_rows = 2 * n  # int32 offsets inside the expert; the expert's base pointers carry the 64-bit part
    blocks_ptr += e.to(tl.int64) * (2 * I) * (H // 2)
    scales_ptr += e.to(tl.int64) * (2 * I) * (H // 32)
    acc_gate = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    acc_up = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, H, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        xs = tl.load(x_ptr + token[:, None] * H + k[None, :], mask=row_mask[:, None] & (k < H)[None, :], other=0.0)
        w_gate = _decode_tile(blocks_ptr, scales_ptr, gate_rows, n_mask, k0, H, BLOCK_N, BLOCK_K).to(xs.dtype)
        w_up = _decode_tile(blocks_ptr, scales_ptr, gate_rows + 1, n_mask, k0, H, BLOCK_N, BLOCK_K).to(xs.dtype)
        acc_gate = tl.dot(xs, tl.trans(w_gate), acc_gate, input_precision=PRECISION)
        acc_up = tl.dot(xs, tl.trans(w_up), acc_up, input_precision=PRECISION)
    bias_row = bias_ptr + e.to(tl.int64) * (2 * I)
    gate = acc_gate + tl.load(bias_row + 2 * n, mask=n_mask, other=0.0).to(tl.float32)[None, :]
    up = acc_up + tl.load(bias_row + 2 * n + 1, mask=n_mask, other=0.0).to(tl.float32)[None, :]
    # NaN (from a 0xFF scale) must survive the clamp, as in torch: Triton's min/max drop it by default.
    gate = tl.minimum(gate, limit, propagate_nan=tl.PropagateNan.ALL)
    up = tl.minimum(tl.maximum(up, -limit, propagate_nan=tl.PropagateNan.ALL), limit, propagate_nan=tl.PropagateNan.ALL)
    act = gate * tl.sigmoid(ALPHA * gate) * (up + 1.0)
    tl.store(
        act_ptr + r.to(tl.int64)[:, None] * I + n[None, :],
        act.to(act_ptr.dtype.element_ty),
        mask=row_mask[:, None] & n_mask[None, :],
    )


@triton.jit
def _down_kernel(
    act_ptr,
    order_ptr,
    scores_ptr,
    tile_expert_ptr,
    tile_start_ptr,
    tile_end_ptr,
    blocks_ptr,
    scales_ptr,
    bias_ptr,
    y_ptr,
    H,
    I,
    num_experts,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    PRECISION: tl.constexpr,
):
    tile = tl.program_id(0)
    e = tl.load(tile_expert_ptr + tile)
    if e >= num_experts:
        return
    r = tl.load(tile_start_ptr + tile) + tl.arange(0, BLOCK_M)
    row_mask = r < tl.load(tile_end_ptr + tile)
    slot = tl.load(order_ptr + r, mask=row_mask, other=0).to(tl.int64)
    n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = n < H
    blocks_ptr += e.to(tl.int64) * H * (I // 2)
    scales_ptr += e.to(tl.int64) * H * (I // 32)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, I, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        a = tl.load(
            act_ptr + r.to(tl.int64)[:, None] * I + k[None, :], mask=row_mask[:, None] & (k < I)[None, :], other=0.0
        )
        w = _decode_tile(blocks_ptr, scales_ptr, n, n_mask, k0, I, BLOCK_N, BLOCK_K).to(a.dtype)
        acc = tl.dot(a, tl.trans(w), acc, input_precision=PRECISION)
    acc += tl.load(bias_ptr + e.to(tl.int64) * H + n, mask=n_mask, other=0.0).to(tl.float32)[None, :]
    weight = tl.load(scores_ptr + slot, mask=row_mask, other=0.0).to(tl.float32)
    tl.store(y_ptr + slot[:, None] * H + n[None, :], acc * weight[:, None], mask=row_mask[:, None] & n_mask[None, :])


@triton.jit
def _top_k_sum_kernel(y_ptr, out_ptr, H, TOPK: tl.constexpr, BLOCK: tl.constexpr):
    token = tl.program_id(0).to(tl.int64)
    c = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = c < H
    total = tl.zeros((BLOCK,), dtype=tl.float32)
    for j in tl.static_range(TOPK):
        total += tl.load(y_ptr + (token * TOPK + j) * H + c, mask=mask, other=0.0)
    tl.store(out_ptr + token * H + c, total.to(out_ptr.dtype.element_ty), mask=mask)


def block_sizes(slots: int, num_experts: int) -> tuple[int, int, int]:
    """(BLOCK_M, BLOCK_N, BLOCK_K). BLOCK_M follows the expected rows per expert: 16 (tl.dot's minimum)
    for decode, up to 128 for prefill. Why large: each weight element costs ~10 ALU operations to decode
    per M-tile against 2 * BLOCK_M tensor-core FLOPs, and an H100 has ~15x more tensor than ALU
    throughput, so below ~128 rows the decoding, not the matmul, would bound prefill. Not yet tuned on a
    GPU: benchmarks/bench_kernels.py --sweep measures the alternatives."""
    per_expert = slots / num_experts
    if per_expert > 64:
        return 128, 32, 64  # a narrower N keeps the 128-row accumulators in registers (no spills on sm_90)
    return (16 if per_expert <= 16 else 32 if per_expert <= 32 else 64), 64, 64


def experts(
    x: torch.Tensor,
    indices: torch.Tensor,
    scores: torch.Tensor,
    gate_up,
    gate_up_bias: torch.Tensor,
    down,
    down_bias: torch.Tensor,
    limit: float,
    routing: Routing | None = None,
    tiles: tuple[int, int, int] | None = None,
) -> torch.Tensor:
    """moe_torch.experts with MXFP4 weights decoded in registers. Dense (fine-tuned) expert weights have
    no kernel here and run through the torch path. tiles: (BLOCK_M, BLOCK_N, BLOCK_K) instead of
    block_sizes()' choice (BLOCK_M >= 16, BLOCK_K in 32..256; powers of two); for tests and sweeps."""
    if not (isinstance(gate_up, tuple) and isinstance(down, tuple)):
        return moe_torch.experts(x, indices, scores, gate_up, gate_up_bias, down, down_bias, limit)
    (gu_blocks, gu_scales), (d_blocks, d_scales) = gate_up, down
    n, hidden = x.shape
    num_experts, two_i = gu_blocks.shape[0], gu_blocks.shape[1]
    inter = two_i // 2
    top_k = indices.shape[1]
    block_m, block_n, block_k = tiles or block_sizes(n * top_k, num_experts)
    if routing is not None and routing.block_m != block_m:
        raise OptionError(
            f"routing was built for BLOCK_M {routing.block_m}, the kernels use {block_m}: pass tiles with that BLOCK_M"
        )
    routing = routing or route(indices, num_experts, block_m)
    precision = "ieee" if x.dtype == torch.float32 else "tf32"  # float32 stays float32; bf16/f16 ignore it
    x = x.contiguous()
    act = torch.empty((n * top_k, inter), dtype=x.dtype, device=x.device)
    tiles = (routing.tiles,)
    _gate_up_kernel[tiles + (triton.cdiv(inter, block_n),)](
        x,
        routing.order,
        routing.tile_expert,
        routing.tile_row_start,
        routing.tile_row_end,
        gu_blocks,
        gu_scales,
        gate_up_bias.contiguous(),
        act,
        hidden,
        inter,
        num_experts,
        float(limit),
        ALPHA=moe_torch.SWIGLU_ALPHA,
        TOPK=top_k,
        BLOCK_M=block_m,
        BLOCK_N=block_n,
        BLOCK_K=block_k,
        PRECISION=precision,
        num_warps=NUM_WARPS,
    )
    per_slot = torch.empty((n * top_k, hidden), dtype=torch.float32, device=x.device)
    _down_kernel[tiles + (triton.cdiv(hidden, block_n),)](
        act,
        routing.order,
        scores.contiguous().reshape(-1),
        routing.tile_expert,
        routing.tile_row_start,
        routing.tile_row_end,
        d_blocks,
        d_scales,
        down_bias.contiguous(),
        per_slot,
        hidden,
        inter,
        num_experts,
        BLOCK_M=block_m,
        BLOCK_N=block_n,
        BLOCK_K=block_k,
        PRECISION=precision,
        num_warps=NUM_WARPS,
    )
    out = torch.empty_like(x)
    _top_k_sum_kernel[(n, triton.cdiv(hidden, 256))](per_slot, out, hidden, TOPK=top_k, BLOCK=256)
    return out
