"""YaRN rotary embeddings as gpt-oss uses them (NTK-by-parts), with transformers' `truncate` switch.

inv_freq blends interpolated (1 / (factor * base^(2i/d))) and extrapolated (1 / base^(2i/d))
frequencies with a linear ramp between the correction dimensions of beta_fast and beta_slow
rotations; cos and sin are scaled by the attention factor 0.1 * ln(factor) + 1.
"""

from __future__ import annotations

import math

import torch

from .kernels.rotary_torch import apply_rotary  # the rotation itself is a kernel pair (torch, C)

__all__ = ["apply_rotary", "rotary_tables", "yarn_inv_freq"]


def yarn_inv_freq(head_dim: int, base: float, rope: dict) -> tuple[torch.Tensor, float]:
    """(inv_freq [head_dim / 2] float32, attention factor) for the rope_scaling dict of config.json."""
    dim = head_dim
    freqs = base ** (torch.arange(0, dim, 2, dtype=torch.float) / dim)
    if rope.get("rope_type") != "yarn":
        return 1.0 / freqs, 1.0
    factor = rope["factor"]
    attention_factor = rope.get("attention_factor") or (0.1 * math.log(factor) + 1.0 if factor > 1 else 1.0)
    beta_fast, beta_slow = rope.get("beta_fast") or 32, rope.get("beta_slow") or 1
    original = rope["original_max_position_embeddings"]

    def correction_dim(rotations: float) -> float:
        return dim * math.log(original / (rotations * 2 * math.pi)) / (2 * math.log(base))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if rope.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001  # avoid a zero-width ramp
    ramp = ((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    extrapolation = 1 - ramp  # 1 where the original frequencies are kept
    inv_freq = (1.0 / (factor * freqs)) * (1 - extrapolation) + (1.0 / freqs) * extrapolation
    return inv_freq, attention_factor


def rotary_tables(
    inv_freq: torch.Tensor, attention_factor: float, positions: torch.Tensor, dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [T, head_dim / 2] for absolute positions [T]."""
    angles = positions.float()[:, None] * inv_freq.to(positions.device)[None, :]
    return (angles.cos() * attention_factor).to(dtype), (angles.sin() * attention_factor).to(dtype)
