"""The codec's C kernels built without their AVX2 clones (what a machine without AVX2, or a compiler without
target_clones, runs): the same bytes as the installed build and the torch twins. An AVX2 machine's loader never
picks the portable clone, so this builds it on its own, with the flags setup.py gives."""

import ctypes
import shutil
import subprocess
import sysconfig
from pathlib import Path

import numpy as np
import pytest
import torch

from mxfp4.calibrate.gptq import gptq_quantize
from mxfp4.codec import encode, native

SOURCE = Path(native.__file__).with_name("_native.c")
COMPILER = (sysconfig.get_config_var("CC") or "cc").split()[0]


@pytest.fixture(scope="module")
def portable(tmp_path_factory):
    if shutil.which(COMPILER) is None or not native.available():
        pytest.skip("no C compiler: the native kernels are not built here either")
    out = tmp_path_factory.mktemp("portable") / "_native_portable.so"
    flags = ["-O3", "-ffp-contract=off", "-fno-fast-math", "-shared", "-fPIC", "-DMXFP4_PORTABLE"]
    include = f"-I{sysconfig.get_paths()['include']}"
    subprocess.run([COMPILER, *flags, include, str(SOURCE), "-o", str(out)], check=True)
    return native.configured(ctypes.CDLL(str(out)))


@pytest.fixture
def use_portable(portable, monkeypatch):
    monkeypatch.setattr(native, "_library", lambda: portable)


def _case(seed: int, rows: int, columns: int):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, columns, generator=g) * 10.0 ** float(torch.randint(-3, 3, (1,), generator=g))
    w[:, ::11] = 0.0
    w[::3, ::13] = -0.0
    x = torch.randn(300, 40, generator=g) @ torch.randn(40, columns, generator=g)
    return w, x.double().T @ x.double()


@pytest.mark.parametrize("rule", ["floor", "round_up", "even", "mse"])
@pytest.mark.parametrize("rounding", ["rne", "ggml"])
def test_the_portable_build_encodes_as_the_installed_one(rule, rounding, use_portable):
    w = _case(0, 37, 320)[0]
    ours = encode.quantize(w, scale_rule=rule, rounding=rounding, backend="native")
    reference = encode.quantize(w, scale_rule=rule, rounding=rounding, backend="numpy")
    assert torch.equal(ours.blocks, reference.blocks) and torch.equal(ours.scales, reference.scales)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("order", ["act", "sequential"])
@pytest.mark.parametrize("rounding", ["rne", "ggml"])
def test_the_portable_gptq_loop_writes_the_torch_loops_bytes(seed, order, rounding, use_portable):
    # 37 rows: tiles of 8 and a remainder row by row; 2.5 column blocks
    w, h = _case(seed, 37, 320)
    c = gptq_quantize(w, h, scale_rule="mse", rounding=rounding, order=order, column_loop="c")
    reference = gptq_quantize(w, h, scale_rule="mse", rounding=rounding, order=order, column_loop="torch")
    assert torch.equal(c.blocks, reference.blocks) and torch.equal(c.scales, reference.scales)
    assert c.error == pytest.approx(reference.error, rel=320 * 2**-24)


def test_the_portable_squared_error_is_the_installed_ones(portable, monkeypatch):
    w = _case(1, 70, 256)[0].numpy()
    q = encode.quantize(w, scale_rule="even")
    blocks, scales = np.asarray(q.blocks), np.asarray(q.scales)
    installed = native.column_squared_error(w, blocks, scales)
    monkeypatch.setattr(native, "_library", lambda: portable)
    assert np.array_equal(native.column_squared_error(w, blocks, scales), installed)
