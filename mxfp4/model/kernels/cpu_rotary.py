"""The rotary embedding of _cpu_rotary.c for a few positions of CPU tensors (decoding): one C call where
rotary_torch.apply_rotary takes eight torch ops, which between decode steps run with cold caches; bit for bit the same
result. ``rotary`` answers None where it does not apply and the caller keeps the torch twin.
"""

from __future__ import annotations

import torch

from .cpu_library import library

DTYPES = (torch.bfloat16, torch.float32)


def rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor | None:
    """rotary_torch.apply_rotary for CPU x [B, H, T, D] (any strides, the last dimension contiguous) and cos, sin
    [T, D/2] of x's dtype (bf16 or float32) -> a new contiguous [B, H, T, D]; None otherwise or without the
    extension."""
    lib = library()
    if lib is None or x.dtype not in DTYPES or cos.dtype != x.dtype or sin.dtype != x.dtype or x.dim() != 4:
        return None
    b, heads, t, d = x.shape
    if x.device.type != "cpu" or d % 2 or cos.shape != (t, d // 2) or sin.shape != cos.shape or x.stride(3) != 1:
        return None
    cos, sin = cos.contiguous(), sin.contiguous()
    out = torch.empty((b, heads, t, d), dtype=x.dtype)
    lib.mxr_rotary(x.data_ptr(), int(x.dtype == torch.bfloat16), b, heads, t, d, x.stride(0), x.stride(1),
                   x.stride(2), cos.data_ptr(), sin.data_ptr(), out.data_ptr())  # fmt: skip
    return out
