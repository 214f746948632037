"""Bad input gets a typed error whose text says what is wrong and what to do."""

import numpy as np
import pytest
import torch

import mxfp4
from mxfp4 import layout
from mxfp4.errors import DTypeError, MXFP4Error, NonFiniteError, OptionError, ShapeError


def test_last_axis_not_a_multiple_of_32():
    with pytest.raises(
        ShapeError, match=r"shape \(4, 100\).*last axis \(100\) is not a multiple of 32.*pad that axis to 128"
    ):
        mxfp4.quantize(np.zeros((4, 100), np.float32))


def test_scalar_input():
    with pytest.raises(ShapeError, match="scalar"):
        mxfp4.quantize(np.float32(1.0).reshape(()))


@pytest.mark.parametrize("dtype", [np.float64, np.int32, np.uint8])
def test_wrong_input_dtype(dtype):
    with pytest.raises(DTypeError, match=f"dtype {np.dtype(dtype).name}; MXFP4 quantizes float32, float16 or bfloat16"):
        mxfp4.quantize(np.zeros((1, 32), dtype))


def test_float64_hint_says_how_to_convert():
    with pytest.raises(DTypeError, match=r"astype\(np.float32\)"):
        mxfp4.quantize(np.zeros((1, 32)))


def test_name_appears_in_errors():
    with pytest.raises(ShapeError, match="tensor 'layers.0.mlp'"):
        mxfp4.quantize(np.zeros((2, 33), np.float32), name="layers.0.mlp")


@pytest.mark.parametrize("bad, shown", [(np.nan, "nan"), (np.inf, "inf"), (-np.inf, "-inf")])
def test_nonfinite_names_position_and_value(bad, shown, backend):
    x = np.zeros((3, 64), np.float32)
    x[2, 45] = bad
    with pytest.raises(NonFiniteError, match=rf"holds {shown} at index \(2, 45\).*nonfinite='nan_scale'"):
        mxfp4.quantize(x, backend=backend)


def test_nonfinite_in_torch_bfloat16_names_position():
    x = torch.zeros(2, 3, 32, dtype=torch.bfloat16)
    x[1, 2, 7] = float("nan")
    with pytest.raises(NonFiniteError, match=r"index \(1, 2, 7\)"):
        mxfp4.quantize(x)


def test_nan_scale_opt_in_marks_only_that_block(backend):
    x = np.ones((1, 96), np.float32)
    x[0, 40] = np.inf
    q = mxfp4.quantize(x, nonfinite="nan_scale", backend=backend)
    assert q.scales.tolist() == [[125, 0xFF, 125]]  # 1.0 = 1 * 2**0 -> X = -2
    out = q.dequantize()
    assert np.isnan(out[0, 32:64]).all() and (out[0, :32] == 1).all() and (out[0, 64:] == 1).all()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"scale_rule": "ceil"}, "scale_rule='ceil' is not one of 'floor', 'round_up', 'even', 'mse'"),
        ({"rounding": "rtz"}, "rounding='rtz' is not one of 'rne', 'ggml'"),
        ({"nonfinite": "skip"}, "nonfinite='skip'"),
        ({"backend": "cuda"}, "backend='cuda' is not one of"),
    ],
)
def test_bad_options(kwargs, message):
    with pytest.raises(OptionError, match=message):
        mxfp4.quantize(np.zeros((1, 32), np.float32), **kwargs)


def test_blocks_scales_shape_mismatch():
    with pytest.raises(ShapeError, match=r"blocks \(2, 3, 16\) and scales \(2, 4\) do not match"):
        mxfp4.dequantize(np.zeros((2, 3, 16), np.uint8), np.zeros((2, 4), np.uint8))


def test_blocks_last_axis_not_16():
    with pytest.raises(ShapeError, match=r"expected \[..., n_blocks, 16\]"):
        mxfp4.dequantize(np.zeros((2, 3, 17), np.uint8), np.zeros((2, 3), np.uint8))


def test_blocks_wrong_dtype():
    with pytest.raises(DTypeError, match="blocks must have dtype uint8, got float32"):
        mxfp4.dequantize(np.zeros((2, 16), np.float32), np.zeros(2, np.uint8))
    with pytest.raises(DTypeError, match="scales must have dtype uint8, got int8"):
        mxfp4.dequantize(np.zeros((2, 16), np.uint8), np.zeros(2, np.int8))


def test_bad_output_dtype():
    with pytest.raises(DTypeError, match="cannot dequantize to dtype int8"):
        mxfp4.dequantize(np.zeros((1, 16), np.uint8), np.zeros(1, np.uint8), np.int8)


def test_mixed_numpy_and_torch():
    with pytest.raises(OptionError, match="must both be numpy arrays or both torch tensors"):
        mxfp4.dequantize(torch.zeros(1, 16, dtype=torch.uint8), np.zeros(1, np.uint8))


def test_out_of_wrong_shape():
    q = mxfp4.quantize(np.ones((2, 64), np.float32))
    with pytest.raises(ShapeError, match=r"out has shape \(2, 32\).*shape \(2, 64\)"):
        mxfp4.dequantize(q.blocks, q.scales, out=np.empty((2, 32), np.float32))


def test_gguf_raw_with_wrong_block_size():
    with pytest.raises(ShapeError, match=r"expected \[..., n_blocks, 17\]"):
        layout.gguf_to_hf(np.zeros((3, 16), np.uint8))
    with pytest.raises(ShapeError, match="not a whole number of 17-byte blocks"):
        layout.gguf_rows_to_blocks(np.zeros((2, 30), np.uint8))


def test_pack_codes_rejects_five_bit_values():
    with pytest.raises(ShapeError, match="codes must lie in 0..15"):
        layout.pack_codes(np.full((1, 32), 16, np.uint8))


def test_every_error_is_an_mxfp4_error():
    for error in (ShapeError, DTypeError, NonFiniteError, OptionError):
        assert issubclass(error, MXFP4Error)


def test_without_native_kernels_auto_falls_back_and_native_says_why(monkeypatch):
    from mxfp4.codec import native
    from mxfp4.errors import BackendUnavailableError

    monkeypatch.setattr(native, "_library", lambda: None)
    x = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)
    assert mxfp4.codec.backend.resolve_backend("auto") == "numpy"
    assert np.array_equal(mxfp4.quantize(x).blocks, mxfp4.quantize(x, backend="numpy").blocks)
    with pytest.raises(BackendUnavailableError, match="native MXFP4 kernels are not built.*backend='numpy'"):
        mxfp4.quantize(x, backend="native")


def test_cpu_backends_refused_for_cuda_tensors():
    with pytest.raises(OptionError, match="CUDA tensors take backend='torch', 'triton' or 'auto'"):
        mxfp4.codec.backend.resolve_backend("native", on_cuda=True)
