"""Triton codec kernels equal the numpy reference byte for byte: on the CPU under TRITON_INTERPRET=1
(small shapes: the interpreter is slow), and on a GPU where there is one (gpu marker)."""

import os
import subprocess
import sys

import pytest

pytest.importorskip("triton", reason="Triton is installed by .ci/run (the 'triton' extra)")

SCRIPT = r"""
import numpy as np, torch, mxfp4
from mxfp4.testing.exhaustive import all_bytes_at_every_scale
rng = np.random.default_rng(0)
x = (rng.standard_normal((96, 64)) * rng.lognormal(0, 3, (96, 1))).astype(np.float32)
x[0] = 0; x[1] = -0.0; x[2, 3] = np.nan; x[3, :7] = [0.25, 0.75, -1.25, 1.75, 2.5, 3.5, 5]
x[4] = 1e-42; x[5, 0] = 3e38; x[6, 9] = -np.inf
for dtype in (torch.float32, torch.float16, torch.bfloat16):
    t = torch.from_numpy(x).to(dtype) if dtype != torch.float16 else torch.from_numpy(np.clip(x, -6e4, 6e4)).to(dtype)
    for rule in mxfp4.rules.KERNEL_RULES:
        for rounding in mxfp4.rules.ROUNDINGS:
            got = mxfp4.quantize(t, scale_rule=rule, rounding=rounding, nonfinite="nan_scale", backend="triton")
            want = mxfp4.quantize(t, scale_rule=rule, rounding=rounding, nonfinite="nan_scale", backend="numpy")
            same = torch.equal(got.blocks, want.blocks) and torch.equal(got.scales, want.scales)
            assert same, (dtype, rule, rounding)
blocks, scales = all_bytes_at_every_scale()
for dtype in (torch.float32, torch.float16, torch.bfloat16):
    got = mxfp4.dequantize(torch.from_numpy(blocks), torch.from_numpy(scales), dtype, backend="triton")
    want = mxfp4.dequantize(torch.from_numpy(blocks), torch.from_numpy(scales), dtype, backend="numpy")
    assert torch.equal(got.view(torch.uint8), want.view(torch.uint8)), dtype
print("triton codec: byte-identical")
"""


def test_triton_kernels_equal_the_reference_under_the_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    result = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "byte-identical" in result.stdout


def test_triton_backend_refuses_cpu_data_without_the_interpreter(monkeypatch):
    import numpy as np

    import mxfp4
    from mxfp4.errors import BackendUnavailableError

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(BackendUnavailableError, match="runs on a GPU; for CPU data set TRITON_INTERPRET=1"):
        mxfp4.quantize(np.zeros((1, 32), np.float32), backend="triton")


@pytest.mark.gpu
def test_triton_kernels_on_the_gpu():
    import torch

    import mxfp4

    x = torch.randn(4096, 2880, device="cuda").bfloat16()
    for rule in ("floor", "round_up", "even"):
        got = mxfp4.quantize(x, scale_rule=rule, backend="triton")
        want = mxfp4.quantize(x.cpu(), scale_rule=rule, backend="numpy")
        assert torch.equal(got.blocks.cpu(), want.blocks) and torch.equal(got.scales.cpu(), want.scales)
        assert torch.equal(got.dequantize(torch.bfloat16).cpu(), want.dequantize(torch.bfloat16))
