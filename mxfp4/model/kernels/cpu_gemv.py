"""The C products of _cpu_gemv.c for CPU torch tensors: MXFP4 (blocks decoded in registers, optionally fused
with the clamped SwiGLU) and bf16 weights times a few activation rows, float32 accumulation, rows split over
every core. ``available()`` is False where the extension was not built; callers then keep the torch path.

Arithmetic and its bound against the torch twin: see _cpu_gemv.c (tests/model/test_cpu_gemv.py holds it).
"""

from __future__ import annotations

import ctypes
from functools import lru_cache

import torch

from ...codec.native import thread_count

_P, _I64, _INT, _F32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_float


@lru_cache(maxsize=1)
def _library():
    try:
        from . import _cpu_gemv
    except ImportError:
        return None
    lib = ctypes.CDLL(_cpu_gemv.__file__)
    lib.mxg_mxfp4.argtypes = [_P, _P, _I64, _I64, _P, _I64, _P, _P, _P, _INT, _F32, _F32, _P, _INT]
    lib.mxg_bf16.argtypes = [_P, _I64, _I64, _P, _I64, _P, _P, _INT]
    lib.mxg_f32.argtypes = lib.mxg_bf16.argtypes
    lib.mxg_f32.restype = None
    lib.mxg_mxfp4_bf16x.argtypes = lib.mxg_mxfp4.argtypes
    lib.mxg_mxfp4.restype = lib.mxg_bf16.restype = None
    lib.mxg_mxfp4_bf16x.restype = ctypes.c_int
    lib.mxg_max_tokens.restype = ctypes.c_int
    return lib


def available() -> bool:
    return _library() is not None


def max_tokens() -> int:
    """The most activation rows one call takes (a decoded block is reused across them)."""
    return _library().mxg_max_tokens()


def _ptr(t: torch.Tensor | None):
    return None if t is None else t.data_ptr()


def _rows_of(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.float32).contiguous()


def _in_chunks(x: torch.Tensor, run) -> torch.Tensor:
    """run(x_chunk) over chunks of at most max_tokens() rows, concatenated."""
    limit = max_tokens()
    if x.shape[0] <= limit:
        return run(x)
    return torch.cat([run(x[i : i + limit]) for i in range(0, x.shape[0], limit)])


def _mxfp4(x, blocks, scales, bias, swiglu: bool, limit: float = 0.0, alpha: float = 0.0) -> torch.Tensor:
    rows, cols = blocks.shape[0], blocks.shape[1] * 32
    lib = _library()
    blocks, scales = blocks.contiguous(), scales.contiguous()
    bias = None if bias is None else bias.to(torch.float32).contiguous()

    def run(chunk: torch.Tensor) -> torch.Tensor:
        y = torch.empty((chunk.shape[0], rows), dtype=torch.float32)
        out = torch.empty((chunk.shape[0], rows // 2), dtype=torch.float32) if swiglu else None
        common = (_ptr(bias), _ptr(y))
        tail = (int(swiglu), limit, alpha, _ptr(out), thread_count())
        done = False
        if chunk.dtype == torch.bfloat16:  # AVX512-BF16 takes bf16 activations as they are
            chunk = chunk.contiguous()
            scratch = torch.empty_like(chunk)
            head = (_ptr(blocks), _ptr(scales), rows, cols, _ptr(chunk), chunk.shape[0])
            done = bool(lib.mxg_mxfp4_bf16x(*head, *common, _ptr(scratch), *tail))
        if not done:
            chunk = _rows_of(chunk)
            scratch = torch.empty_like(chunk)
            head = (_ptr(blocks), _ptr(scales), rows, cols, _ptr(chunk), chunk.shape[0])
            lib.mxg_mxfp4(*head, *common, _ptr(scratch), *tail)
        return out if swiglu else y

    return _in_chunks(x, run)


def mxfp4_linear(x: torch.Tensor, blocks: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None = None):
    """x [T, K] @ W.T (+ bias) for MXFP4 W = (blocks [N, K/32, 16], scales [N, K/32]) -> float32 [T, N]. bf16 x
    is taken as it is on CPUs with AVX512-BF16, else widened to float32 (the same products either way)."""
    return _mxfp4(x, blocks, scales, bias, swiglu=False)


def mxfp4_swiglu(
    x: torch.Tensor, blocks: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor, limit: float, alpha: float
) -> torch.Tensor:
    """clamped_swiglu(x @ W.T + bias) for gpt-oss's interleaved gate_up W, in one pass -> float32 [T, N/2]."""
    return _mxfp4(x, blocks, scales, bias, swiglu=True, limit=limit, alpha=alpha)


def dense_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x [T, K] @ W.T (+ bias) for bf16 or float32 W [N, K] -> float32 [T, N]."""
    rows, cols = weight.shape
    lib = _library()
    kernel = {torch.bfloat16: lib.mxg_bf16, torch.float32: lib.mxg_f32}[weight.dtype]
    weight = weight.contiguous()
    bias = None if bias is None else bias.to(torch.float32).contiguous()

    def run(chunk: torch.Tensor) -> torch.Tensor:
        chunk = _rows_of(chunk)
        y = torch.empty((chunk.shape[0], rows), dtype=torch.float32)
        kernel(_ptr(weight), rows, cols, _ptr(chunk), chunk.shape[0], _ptr(bias), _ptr(y), thread_count())
        return y

    return _in_chunks(x, run)
