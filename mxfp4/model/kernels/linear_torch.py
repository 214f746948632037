"""The torch linear of every backend, for weights that may be stored in another dtype than the activations (a
float32 model on the native path keeps bf16 weights as the checkpoint holds them)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear, the weight and bias cast to the activations' dtype for the call where they differ (exact from bf16
    to float32). Equal dtypes: F.linear itself, untouched (bit parity with transformers)."""
    if weight.dtype != x.dtype:
        weight = weight.to(x.dtype)
    if bias is not None and bias.dtype != x.dtype:
        bias = bias.to(x.dtype)
    return F.linear(x, weight, bias)
