"""MXFP4Tensor: logical shape, sizes, the *_blocks / *_scales pair, GGUF bytes, safetensors files."""

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file

import mxfp4
from mxfp4 import MXFP4Error, MXFP4Tensor


def gpt_oss_like(experts=2, rows=48, cols=96, seed=0):
    return np.random.default_rng(seed).standard_normal((experts, rows, cols)).astype(np.float32) * 0.02


def test_shapes_sizes_and_bits_per_param():
    q = mxfp4.quantize(gpt_oss_like())
    assert q.blocks.shape == (2, 48, 3, 16) and q.scales.shape == (2, 48, 3)
    assert q.shape == (2, 48, 96) and q.numel == 2 * 48 * 96
    assert q.nbytes == 2 * 48 * 3 * 17
    assert q.bits_per_param == 4.25 == mxfp4.BITS_PER_PARAM


def test_torch_tensor_sizes():
    q = mxfp4.quantize(torch.from_numpy(gpt_oss_like()).bfloat16())
    assert isinstance(q.blocks, torch.Tensor) and q.blocks.dtype == torch.uint8
    assert q.nbytes == 2 * 48 * 3 * 17 and q.shape == (2, 48, 96)
    assert q.dequantize(torch.bfloat16).shape == (2, 48, 96)


def test_state_dict_pair_round_trip_through_safetensors(tmp_path):
    x = gpt_oss_like()
    q = mxfp4.quantize(x)
    state = q.to_state_dict("model.layers.0.mlp.experts.down_proj")
    assert set(state) == {"model.layers.0.mlp.experts.down_proj_blocks", "model.layers.0.mlp.experts.down_proj_scales"}
    path = tmp_path / "w.safetensors"
    save_file(state, str(path))
    back = MXFP4Tensor.from_state_dict(load_file(str(path)), "model.layers.0.mlp.experts.down_proj")
    assert np.array_equal(back.blocks, q.blocks) and np.array_equal(back.scales, q.scales)
    assert np.array_equal(back.dequantize(), q.dequantize())


def test_missing_half_of_the_pair_is_named():
    q = mxfp4.quantize(gpt_oss_like())
    state = q.to_state_dict("w")
    del state["w_scales"]
    with pytest.raises(MXFP4Error, match="'w' needs both 'w_blocks' and 'w_scales'; missing 'w_scales'"):
        MXFP4Tensor.from_state_dict(state, "w")


def test_mismatched_pair_is_named():
    state = {"w_blocks": np.zeros((2, 3, 16), np.uint8), "w_scales": np.zeros((2, 2), np.uint8)}
    with pytest.raises(MXFP4Error, match="MXFP4 tensor 'w': blocks .* do not match"):
        MXFP4Tensor.from_state_dict(state, "w")


def test_gguf_bytes_round_trip_and_decode_equal():
    q = mxfp4.quantize(gpt_oss_like())
    raw = q.to_gguf()
    assert raw.shape == (2, 48, 3, 17)
    back = MXFP4Tensor.from_gguf(raw)
    assert np.array_equal(back.blocks, q.blocks) and np.array_equal(back.scales, q.scales)


def test_quantize_roundtrip_error_is_small_for_weights():
    x = gpt_oss_like(seed=4)
    rel = np.linalg.norm(mxfp4.quantize(x).dequantize() - x) / np.linalg.norm(x)
    assert 0.05 < rel < 0.2  # ~4.25 bits: SQNR around 18-20 dB on Gaussian weights


def test_empty_leading_axis():
    q = mxfp4.quantize(np.zeros((0, 64), np.float32))
    assert q.blocks.shape == (0, 2, 16) and q.dequantize().shape == (0, 64)
