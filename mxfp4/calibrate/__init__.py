"""Calibrated quantization: GPTQ into MXFP4 on the tokens each expert is routed, layer by layer."""
