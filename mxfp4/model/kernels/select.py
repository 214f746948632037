"""The two compute paths of the model: 'torch' (the reference, any device) and 'triton' (kernels; a GPU,
or the CPU under TRITON_INTERPRET=1 for tests). Each names its attention (growing cache), ring attention
(static cache) and experts functions, with the signatures of the torch twins."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ...codec.backend import resolve_backend
from ...errors import OptionError

MODEL_BACKENDS = ("torch", "triton")


@dataclass(frozen=True)
class Kernels:
    name: str
    attention: Callable
    ring_attention: Callable
    experts: Callable


def kernels(backend: str, device) -> Kernels:
    if backend not in MODEL_BACKENDS:
        raise OptionError(f"backend={backend!r}: the model runs on {' or '.join(repr(b) for b in MODEL_BACKENDS)}")
    if backend == "torch":
        from . import attention_torch, moe_torch

        return Kernels("torch", attention_torch.attention, attention_torch.ring_attention, moe_torch.experts)
    resolve_backend("triton", on_cuda=getattr(device, "type", device) == "cuda")  # a clear error when it can't run
    from . import attention_triton, moe_triton

    return Kernels("triton", attention_triton.attention, attention_triton.ring_attention, moe_triton.experts)
