"""CUDA tensors stay on the GPU and give the reference's bytes (runs only where a GPU is present)."""

import numpy as np
import pytest
import torch

import mxfp4

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("rule", mxfp4.rules.SCALE_RULES)
@pytest.mark.parametrize("rounding", mxfp4.rules.ROUNDINGS)
def test_cuda_quantize_equals_reference(rule, rounding):
    x = (torch.randn(64, 2048, generator=torch.Generator().manual_seed(0)) * 0.02).bfloat16()
    want = mxfp4.quantize(x, scale_rule=rule, rounding=rounding, backend="numpy")
    got = mxfp4.quantize(x.cuda(), scale_rule=rule, rounding=rounding)
    assert got.blocks.device.type == "cuda"
    assert torch.equal(got.blocks.cpu(), want.blocks) and torch.equal(got.scales.cpu(), want.scales)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_cuda_dequantize_equals_reference(dtype):
    rng = np.random.default_rng(0)
    blocks = torch.from_numpy(rng.integers(0, 256, (512, 16), dtype=np.uint8))
    scales = torch.from_numpy(rng.integers(0, 256, 512, dtype=np.uint8))
    want = mxfp4.dequantize(blocks, scales, dtype, backend="numpy")
    got = mxfp4.dequantize(blocks.cuda(), scales.cuda(), dtype)
    assert got.device.type == "cuda"
    assert torch.equal(got.cpu().view(torch.uint8), want.view(torch.uint8))
