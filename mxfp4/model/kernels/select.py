"""The compute paths of the model: 'torch' (the reference, any device: bit parity with transformers), 'native' (the
CPU: torch plus the C products of cpu_gemv for decoding and small batches), 'native-int8' ('native' with the MoE's
activations quantized to int8 first, as llama.cpp computes: approximate, opt-in; see native_path.experts_int8) and
'triton' (kernels; a GPU, or the CPU under TRITON_INTERPRET=1 for tests). 'auto' takes 'native' for a CPU model when
the C kernels are built, else 'torch'. Each names its linear, attention (growing cache), ring attention (static
cache) and experts functions, its RMSNorm and rotary rotation, with the signatures of the torch twins."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable

from ...choices import MODEL_BACKENDS
from ...codec.backend import resolve_backend
from ...errors import BackendUnavailableError, OptionError

NATIVE_BACKENDS = ("native", "native-int8")  # the CPU path of the C kernels, exact and with int8 MoE activations


@dataclass(frozen=True)
class Kernels:
    name: str
    step: Callable  # step(tokens) -> the context manager one forward pass runs in
    linear: Callable
    attention: Callable
    ring_attention: Callable
    experts: Callable
    rms_norm: Callable
    rotary: Callable


def resolve_model_backend(backend: str, device) -> str:
    if backend not in MODEL_BACKENDS:
        raise OptionError(f"backend={backend!r}: the model runs on {', '.join(repr(b) for b in MODEL_BACKENDS)}")
    on_cpu = getattr(device, "type", device) in (None, "cpu")
    if backend == "auto":
        from . import cpu_gemv

        return "native" if on_cpu and cpu_gemv.available() else "torch"
    if backend in NATIVE_BACKENDS:
        from . import cpu_gemv

        if not on_cpu:
            raise OptionError(f"backend={backend!r} runs on the CPU; a GPU model takes 'torch' or 'triton'")
        if not cpu_gemv.available():
            raise BackendUnavailableError(f"backend={backend!r} needs the C kernels, not built in this install")
    return backend


def kernels(backend: str, device) -> Kernels:
    backend = resolve_model_backend(backend, device)
    if backend == "torch":
        from . import attention_torch, linear_torch, moe_torch, norm_torch, rotary_torch

        return Kernels(
            "torch",
            _no_context,
            linear_torch.linear,
            attention_torch.attention,
            attention_torch.ring_attention,
            moe_torch.experts,
            norm_torch.rms_norm,
            rotary_torch.apply_rotary,
        )
    if backend in NATIVE_BACKENDS:
        from . import attention_cpu, attention_torch, native_path

        return Kernels(
            backend,
            native_path.step,
            native_path.linear,
            attention_cpu.attention,
            attention_torch.ring_attention,
            native_path.experts if backend == "native" else native_path.experts_int8,
            native_path.rms_norm,
            native_path.rotary,
        )
    resolve_backend("triton", on_cuda=getattr(device, "type", device) == "cuda")  # a clear error when it can't run
    from . import attention_triton, linear_torch, moe_triton, norm_torch, rotary_torch

    return Kernels(
        "triton",
        _no_context,
        linear_torch.linear,
        attention_triton.attention,
        attention_triton.ring_attention,
        moe_triton.experts,
        norm_torch.rms_norm,
        rotary_torch.apply_rotary,
    )


def describe(name: str) -> str:
    """What a backend runs, for reports: 'native' and 'native-int8' name the instruction set their C kernels chose on
    this CPU."""
    if name in NATIVE_BACKENDS:
        from . import cpu_gemv

        return f"{name} (C kernels: {cpu_gemv.isa()})"
    return name


def _no_context(tokens: int):
    return nullcontext()
