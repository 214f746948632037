"""The RMSNorm of _cpu_norm.c for a few rows of CPU tensors (decoding): one C call where torch takes seven ops,
which between decode steps run with cold caches. ``rms_norm`` answers None where it does not apply and the caller
keeps the torch twin (norm_torch).

Arithmetic and its bound against the twin: see _cpu_norm.c (tests/model/test_cpu_norm.py holds it).
"""

from __future__ import annotations

import torch

from .cpu_library import library

DTYPES = (torch.bfloat16, torch.float32)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor | None:
    """norm_torch.rms_norm for CPU x [..., C] and weight [C] of bf16 or float32; None for other dtypes or devices
    or an unbuilt extension."""
    lib = library()
    if lib is None or x.dtype not in DTYPES or weight.dtype not in DTYPES:
        return None
    if x.device.type != "cpu" or weight.device.type != "cpu" or weight.shape != x.shape[-1:]:
        return None
    x, weight = x.contiguous(), weight.contiguous()
    y = torch.empty_like(x)
    cols = x.shape[-1]
    rows = x.numel() // cols if cols else 0
    bf16 = x.dtype == torch.bfloat16
    lib.mxn_rms_norm(x.data_ptr(), int(bf16), weight.data_ptr(), int(weight.dtype == torch.bfloat16), rows, cols,
                     eps, y.data_ptr(), int(bf16))  # fmt: skip
    return y
