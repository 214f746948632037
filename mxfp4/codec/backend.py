"""Which codec backend runs: ``numpy`` (the reference, mxfp4.codec.reference), ``native`` (C kernels on
every core, equal to the reference byte for byte), ``torch`` (torch ops on the tensor's own device),
``triton`` (Triton kernels; GPU, or the CPU under TRITON_INTERPRET=1). ``auto`` takes ``native`` for CPU
data when it is built, else ``numpy``; CUDA tensors take ``triton`` when it is installed, else ``torch``.
"""

from __future__ import annotations

import os
from importlib.util import find_spec

from ..choices import CODEC_BACKENDS
from ..errors import BackendUnavailableError, OptionError
from . import native
from .rules import check_choice

REFERENCE_CHUNK_BLOCKS = 1 << 14  # bounds the numpy reference's temporaries to a few MiB


BACKENDS = CODEC_BACKENDS


def triton_available() -> bool:
    return find_spec("triton") is not None


def resolve_backend(backend: str, on_cuda: bool = False) -> str:
    check_choice("backend", backend, BACKENDS)
    if backend == "triton":
        if not triton_available():
            raise BackendUnavailableError("backend='triton' needs Triton: pip install 'mxfp4[triton]'")
        if not on_cuda and os.environ.get("TRITON_INTERPRET") != "1":
            raise BackendUnavailableError(
                "backend='triton' runs on a GPU; for CPU data set TRITON_INTERPRET=1 (slow: for tests)"
            )
        return "triton"
    if on_cuda:
        if backend not in ("auto", "torch"):
            raise OptionError(
                f"backend={backend!r} runs on the CPU; CUDA tensors take backend='torch', 'triton' or 'auto'"
            )
        return "triton" if backend == "auto" and triton_available() else "torch"
    if backend == "auto":
        return "native" if native.available() else "numpy"
    if backend == "native":
        native.require()
    return backend


def torch_kernels(backend: str):
    """The module of encode_blocks / decode_blocks for torch tensors: the Triton kernels or the torch twin."""
    if backend == "triton":
        from . import triton_codec

        return triton_codec
    from . import torch_codec

    return torch_codec
