"""Routed tokens grouped per expert, as tiles a grouped matmul walks: pure index arithmetic on the
device, with a tile count fixed by the shapes alone (no host synchronisation, so a CUDA graph can
capture it).

A *slot* is one (token, choice) pair: slot s = token * k + choice. Slots are sorted by expert; tile t
covers sorted rows [row_start[t], row_end[t]) of one expert, at most block_m of them. Tiles past the
real ones carry expert = num_experts and are skipped by the kernels."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Routing:
    order: torch.Tensor  # int32 [N * k]: slot ids sorted by expert (stable: token order within an expert)
    tile_expert: torch.Tensor  # int32 [tiles]
    tile_row_start: torch.Tensor  # int32 [tiles]
    tile_row_end: torch.Tensor  # int32 [tiles]
    block_m: int

    @property
    def tiles(self) -> int:
        return self.tile_expert.shape[0]


def max_tiles(slots: int, num_experts: int, block_m: int) -> int:
    """An upper bound on sum over experts of ceil(count / block_m): each tile holds >= 1 slot, and at
    most one tile per expert is partly filled."""
    return max(1, min(slots, -(-slots // block_m) + num_experts))


def route(indices: torch.Tensor, num_experts: int, block_m: int) -> Routing:
    """indices [N, k] (the router's top-k expert ids) -> the tiles of a grouped matmul."""
    n, k = indices.shape
    flat = indices.reshape(-1).long()
    order = torch.argsort(flat, stable=True)
    counts = torch.zeros(num_experts, dtype=torch.long, device=flat.device).scatter_add_(
        0, flat, torch.ones_like(flat)
    )  # bincount syncs on CUDA
    tiles_per_expert = (counts + block_m - 1) // block_m
    tile_ends = torch.cumsum(tiles_per_expert, 0)  # inclusive
    row_ends = torch.cumsum(counts, 0)
    tile = torch.arange(max_tiles(n * k, num_experts, block_m), device=indices.device)
    expert = torch.searchsorted(tile_ends, tile, right=True)  # == num_experts past the last real tile
    real = expert < num_experts
    e = expert.clamp(max=num_experts - 1)
    first_tile = tile_ends[e] - tiles_per_expert[e]
    start = row_ends[e] - counts[e] + (tile - first_tile) * block_m
    end = torch.minimum(start + block_m, row_ends[e])
    as_int = dict(dtype=torch.int32)
    return Routing(
        order.to(**as_int),
        expert.to(**as_int),
        torch.where(real, start, 0).to(**as_int),
        torch.where(real, end, 0).to(**as_int),
        block_m,
    )
