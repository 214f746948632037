"""Every named choice the library and the CLI offer, in one torch-free module both import: conversion targets,
backends, LoRA layouts, scale rules, roundings, and the default scale rule of each operation.

The defaults, one per operation, the same in the library and the CLI (docs/codec.md gives the measurements):

| operation | default scale rule | why |
|---|---|---|
| ``mxfp4.quantize`` | ``floor`` | the OCP MX v1.0 rule; equal byte for byte to ggml, torchao and microxcaling |
| ``convert`` (dense experts -> MXFP4) | ``mse`` | the lowest perplexity change and KL of the rules on held-out text |
| ``merge_lora`` | ``mse`` | as convert: the merged dense experts become MXFP4 |
| calibrated (GPTQ) convert or merge | ``mse`` | GPTQ's starting grid; each block's scale is then fixed |
"""

from __future__ import annotations

from typing import Literal

ScaleRule = Literal["floor", "round_up", "even", "mse", "mlx"]
Rounding = Literal["rne", "ggml"]
NonFinite = Literal["error", "nan_scale"]
CodecBackend = Literal["auto", "numpy", "native", "torch", "triton"]
LayoutBackend = Literal["auto", "native", "numpy"]
ModelBackend = Literal["auto", "torch", "native", "native-int8", "triton"]
Target = Literal["mxfp4", "bf16", "original", "gguf", "mlx"]
LoraLayout = Literal["peft", "swapped", "unsloth"]
FloatName = Literal["float32", "float16", "bfloat16"]
# A fused dense expert stored [E, in, out] (transformers) or [E, out, in]; or, for per-expert linear modules, which
# columns of gate_up_proj their gate_proj / up_proj hold: the even / odd ones, or the first / second halves
ExpertLayout = Literal["in-out", "out-in", "gate-up-even-odd", "gate-up-halves"]

# GPTQ's column order: decreasing Hessian diagonal (static groups), or as stored
GptqOrder = Literal["act", "sequential"]
# How an expert's Hessian counts the tokens routed to it: weighted by the token's routing weight, or alike
GptqWeighting = Literal["routing", "uniform"]

SCALE_RULES: tuple[ScaleRule, ...] = ("floor", "round_up", "even", "mse", "mlx")
ROUNDINGS: tuple[Rounding, ...] = ("rne", "ggml")
NONFINITE_MODES: tuple[NonFinite, ...] = ("error", "nan_scale")
CODEC_BACKENDS: tuple[CodecBackend, ...] = ("auto", "numpy", "native", "torch", "triton")
LAYOUT_BACKENDS: tuple[LayoutBackend, ...] = ("auto", "native", "numpy")
MODEL_BACKENDS: tuple[ModelBackend, ...] = ("auto", "torch", "native", "native-int8", "triton")
TARGETS: tuple[Target, ...] = ("mxfp4", "bf16", "original", "gguf", "mlx")
MXFP4_TARGETS: tuple[Target, ...] = ("mxfp4", "gguf", "original", "mlx")  # the targets that store experts as MXFP4
GPTQ_ORDERS: tuple[GptqOrder, ...] = ("act", "sequential")
GPTQ_WEIGHTINGS: tuple[GptqWeighting, ...] = ("routing", "uniform")
LORA_LAYOUTS: tuple[LoraLayout, ...] = ("peft", "swapped", "unsloth")
EXPERT_LAYOUTS: tuple[ExpertLayout, ...] = ("in-out", "out-in", "gate-up-even-odd", "gate-up-halves")
FUSED_LAYOUTS: tuple[ExpertLayout, ...] = ("in-out", "out-in")
LINEAR_SPLITS: tuple[ExpertLayout, ...] = ("gate-up-even-odd", "gate-up-halves")

QUANTIZE_SCALE_RULE: ScaleRule = "floor"
CONVERT_SCALE_RULE: ScaleRule = "mse"
MERGE_SCALE_RULE: ScaleRule = "mse"
CALIBRATE_SCALE_RULE: ScaleRule = "mse"
