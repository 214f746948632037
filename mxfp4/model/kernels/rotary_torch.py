"""The rotary embedding's rotation in torch ops: the reference (transformers' order of operations, bit for bit)."""

from __future__ import annotations

import torch


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Half-split (neox) rotation of x [B, heads, T, D] by cos, sin [T, D/2]."""
    first, second = x.chunk(2, dim=-1)
    return torch.cat((first * cos - second * sin, second * cos + first * sin), dim=-1)
