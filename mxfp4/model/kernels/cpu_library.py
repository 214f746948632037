"""The C kernels of the native CPU path (_cpu_gemv.c, _cpu_attention.c, _cpu_moe.c, _cpu_norm.c, _cpu_rotary.c:
one extension, one thread pool), loaded through ctypes with their signatures; None where it was not built."""

from __future__ import annotations

import ctypes
from functools import lru_cache

_P, _I64, _INT, _F32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_float


@lru_cache(maxsize=1)
def library():
    try:
        from . import _cpu_gemv
    except ImportError:
        return None
    return configured(ctypes.CDLL(_cpu_gemv.__file__))


def configured(lib: ctypes.CDLL) -> ctypes.CDLL:
    """lib (a build of the kernels' sources) with the entry points' signatures set."""
    lib.mxg_mxfp4.argtypes = [_P, _P, _I64, _I64, _P, _I64, _P, _P, _P, _INT, _F32, _F32, _P, _INT]
    lib.mxg_bf16.argtypes = [_P, _I64, _I64, _P, _I64, _P, _P, _INT]
    lib.mxg_f32.argtypes = lib.mxg_bf16.argtypes
    lib.mxg_bf16_bf16x.argtypes = lib.mxg_bf16.argtypes
    lib.mxg_bf16_bf16x.restype = ctypes.c_int
    lib.mxg_f32.restype = None
    lib.mxg_mxfp4_bf16x.argtypes = lib.mxg_mxfp4.argtypes
    lib.mxg_mxfp4.restype = lib.mxg_bf16.restype = None
    lib.mxg_mxfp4_bf16x.restype = ctypes.c_int
    lib.mxg_max_tokens.restype = ctypes.c_int
    lib.mxg_isa.restype = ctypes.c_int
    lib.mxg_gemm.argtypes = [_INT, _P, _P, _P, _I64, _I64, _P, _I64, _P, _P, _INT, _F32, _F32, _P, _INT]
    lib.mxg_gemm.restype = ctypes.c_int
    lib.mxg_gemm_int8.argtypes = [_P, _P, _I64, _I64, _P, _I64, _P, _P, _INT, _F32, _F32, _P, _INT]
    lib.mxg_gemm_int8.restype = ctypes.c_int
    lib.mxg_gemm_token_block.argtypes = [_I64]
    lib.mxg_gemm_token_block.restype = _I64
    lib.mxg_stream_sum.argtypes = [_P, _I64, _INT]
    lib.mxg_stream_sum.restype = _F32
    lib.mxg_fma_chains.argtypes = [_I64, _INT]
    lib.mxg_fma_chains.restype = ctypes.c_double
    lib.mxa_attention.argtypes = [_P, _P, _P, _P, _P, _INT, _I64, _I64, _I64, _I64, _I64, _I64, _I64, _I64, _F32, _INT]
    lib.mxa_attention.restype = ctypes.c_int
    lib.mxa_exp.argtypes = [_P, _P, _I64]
    lib.mxa_exp.restype = ctypes.c_int
    lib.mxm_token.argtypes = [_P, _INT, _I64, _I64, _I64, _P, _P, _P, _P, _P, _P, _P, _P, _F32, _F32, _INT, _P, _INT]
    lib.mxg_mxfp4_int8.argtypes = [_P, _P, _I64, _I64, _P, _P, _P, _P, _INT, _F32, _F32, _P, _INT]
    lib.mxg_mxfp4_int8.restype = None
    lib.mxg_quantize_int8.argtypes = [_P, _I64, _P, _P]
    lib.mxg_quantize_int8.restype = None
    lib.mxm_token.restype = ctypes.c_int
    lib.mxn_rms_norm.argtypes = [_P, _INT, _P, _INT, _I64, _I64, _F32, _P, _INT]
    lib.mxn_rms_norm.restype = None
    lib.mxr_rotary.argtypes = [_P, _INT, _I64, _I64, _I64, _I64, _I64, _I64, _I64, _P, _P, _P]
    lib.mxr_rotary.restype = None
    return lib
