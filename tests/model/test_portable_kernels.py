"""The native path's C kernels built without any x86 code (-DMXFP4_PORTABLE: what an ARM machine compiles): they
compile, report the portable level, and their products keep the bound against the decoded float32 matmul. The
installed build's portable loops are the same code, run in a child process by test_cpu_gemm.py; this holds the
build itself (a packing function outside the x86 section had stopped it compiling anywhere else)."""

import ctypes
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest
import torch
from test_cpu_gemv import bound, random_mxfp4
from test_int8_activations import check_product

from mxfp4.codec import decode
from mxfp4.model.kernels import cpu_gemv, cpu_library

SOURCES = ["_cpu_gemv.c", "_cpu_attention.c", "_cpu_moe.c", "_cpu_norm.c", "_cpu_rotary.c", "cpu_pool.c"]
COMPILER = (sysconfig.get_config_var("CC") or "cc").split()[0]


@pytest.fixture(scope="module")
def portable(tmp_path_factory):
    if shutil.which(COMPILER) is None or not cpu_gemv.available():
        pytest.skip("no C compiler: the native kernels are not built here either")
    folder = Path(cpu_library.__file__).parent
    out = tmp_path_factory.mktemp("portable") / "_cpu_gemv_portable.so"
    flags = ["-O3", "-fno-fast-math", "-pthread", "-shared", "-fPIC", "-DMXFP4_PORTABLE", "-Werror=implicit"]
    include = f"-I{sysconfig.get_paths()['include']}"
    subprocess.run([COMPILER, *flags, include, *(str(folder / s) for s in SOURCES), "-o", str(out)], check=True)
    return cpu_library.configured(ctypes.CDLL(str(out)))


@pytest.fixture
def use_portable(portable, monkeypatch):
    monkeypatch.setattr(cpu_gemv, "_library", lambda: portable)
    cpu_gemv._isa_level.cache_clear()
    yield
    cpu_gemv._isa_level.cache_clear()


def test_the_portable_build_reports_the_portable_level(use_portable):
    assert cpu_gemv.isa() == "portable C"


@pytest.mark.parametrize("tokens", [1, 3])
def test_the_portable_build_keeps_the_bound(use_portable, tokens):
    g = torch.Generator().manual_seed(tokens)
    blocks, scales = random_mxfp4(37, 160, tokens)
    w = decode.dequantize(blocks, scales, torch.float32)
    x = torch.randn(tokens, 160, generator=g)
    want = x @ w.T
    got = cpu_gemv.mxfp4_linear(x, blocks, scales)
    assert ((got.double() - want.double()).abs() <= bound(x, w, want)).all()
    dense = torch.randn(29, 70, generator=g).bfloat16()
    want = x[:, :70] @ dense.float().T
    got = cpu_gemv.dense_linear(x[:, :70], dense)
    assert ((got.double() - want.double()).abs() <= bound(x[:, :70], dense.float(), want)).all()
    if tokens == 1:  # int8 activations (one token)
        check_product(37, 5, 7, True)
    assert cpu_gemv.mxfp4_gemm(x, blocks, scales) is None  # the panel GEMM is x86 code: callers fall back
    assert cpu_gemv.gemm_token_block(160) == 0
