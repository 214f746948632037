"""A small program written against the public API, as a user would: mypy checks it (tests/typing/test_typing.py),
so the annotations it relies on stay true. It also runs, as an ordinary script."""

import numpy as np
import torch
from typing_extensions import assert_type

import mxfp4
import mxfp4.layout
import mxfp4.rules
from mxfp4.convert import convert
from mxfp4.eval import gate, make_baseline

weights = np.linspace(-6.0, 6.0, 4 * 64, dtype=np.float32).reshape(4, 64)
packed = mxfp4.quantize(weights, scale_rule="mse", rounding="rne")
assert_type(packed, mxfp4.MXFP4Tensor[np.ndarray])
assert_type(packed.dequantize(), np.ndarray)
assert_type(mxfp4.dequantize(packed.blocks, packed.scales, "bfloat16"), np.ndarray)
assert_type(packed[1:3], mxfp4.MXFP4Tensor[np.ndarray])
assert_type(packed.to_gguf(), np.ndarray)

on_torch = mxfp4.quantize(torch.from_numpy(weights))
assert_type(on_torch, mxfp4.MXFP4Tensor[torch.Tensor])
assert_type(on_torch.dequantize(torch.bfloat16), torch.Tensor)
assert_type(packed.to("cpu").dequantize(), torch.Tensor)
assert_type(mxfp4.dequantize(on_torch.blocks, on_torch.scales), torch.Tensor)

rule: mxfp4.rules.ScaleRule = mxfp4.rules.QUANTIZE_SCALE_RULE
gguf_bytes = mxfp4.layout.hf_to_gguf(packed.blocks, packed.scales)
blocks, scales = mxfp4.layout.gguf_to_hf(gguf_bytes)
assert (blocks == packed.blocks).all() and (scales == packed.scales).all()

try:
    mxfp4.quantize(weights[:, :48])
except mxfp4.ShapeError as error:
    message: str = str(error)
    assert "32" in message

entry_points = (convert, gate, make_baseline)
