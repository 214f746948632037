"""How the tests load a checkpoint into transformers: an MXFP4 one with its experts dequantized to bf16, the path
transformers itself takes on a CPU that lacks its hub kernels.

From 5.25 transformers depends on the `kernels` package; with it and triton >= 3.5 installed, an MXFP4 checkpoint
on the CPU loads through a kernel fetched from the Hugging Face hub (kernels-community/gpt-oss-triton-kernels),
which fails offline ("could not verify publisher trust status"). Up to 5.24, without `kernels`, it dequantized the
experts; asking for that (Mxfp4Config(dequantize=True)) takes the same path in every release. (tests/conftest.py
puts this folder on sys.path.)"""

import json
from pathlib import Path


def causal_lm(path, **options):
    """AutoModelForCausalLM.from_pretrained(path, **options), MXFP4 checkpoints dequantized (above)."""
    from transformers import AutoModelForCausalLM, Mxfp4Config

    config = json.loads((Path(path) / "config.json").read_text())
    quantized = (config.get("quantization_config") or {}).get("quant_method") == "mxfp4"
    if quantized and "quantization_config" not in options:
        options["quantization_config"] = Mxfp4Config(dequantize=True)
    return AutoModelForCausalLM.from_pretrained(path, **options)
