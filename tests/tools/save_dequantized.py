"""Load an MXFP4 gpt-oss checkpoint with transformers' Mxfp4Config(dequantize=True) and save_pretrained it, as a user
does: python save_dequantized.py SRC DST VERSION (VERSION: the transformers release that must be the one imported,
put first on PYTHONPATH by the caller)."""

import sys

import torch
import transformers
from transformers import AutoModelForCausalLM, Mxfp4Config

src, dst, version = sys.argv[1:4]
assert transformers.__version__ == version, f"imported transformers {transformers.__version__}, not {version}"
transformers.logging.set_verbosity_error()
model = AutoModelForCausalLM.from_pretrained(
    src, quantization_config=Mxfp4Config(dequantize=True), dtype=torch.bfloat16
)
model.save_pretrained(dst)
