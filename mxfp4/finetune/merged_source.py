"""A base checkpoint with a LoRA adapter merged in, seen as one more Source of canonical tensors, so every
converter target writes it. Tensors the adapter does not touch are the base's reads, untouched: their bytes
are copied (packed experts keep their blocks and scales). Touched ones are merged in float32 one tensor, or
one expert, at a time, W' = W + delta, and cast or quantized once; each records how much of its delta the
output kept (mxfp4.finetune.survival).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..codec import decode, encode
from ..convert.stream import Dense, Expert, Source
from ..dtypes import SAFETENSORS_CODE_OF, torch_dtype
from ..gpt_oss.tensors import Canonical, dense_expert_shape, mxfp4_shape
from .adapter import Adapter, LoraPair
from .lora_math import expert_delta, linear_delta, per_expert_delta
from .survival import Survival


class MergedSource(Source):
    """``base`` with ``adapter`` merged. packed: touched experts become MXFP4 with (scale_rule, rounding);
    otherwise dense float32 for the writer to cast. dtype: what merged non-expert tensors are cast to."""

    def __init__(self, base: Source, adapter: Adapter, *, packed: bool, scale_rule: str, rounding: str, dtype: str):
        self.base, self.adapter = base, adapter
        self.kind, self.path, self.config = f"{base.kind} + LoRA", base.path, base.config
        self.packed, self.scale_rule, self.rounding, self.dtype = packed, scale_rule, rounding, dtype
        self.survival: dict[str, Survival] = {}

    def read(self, tensor: Canonical) -> Dense | Expert:
        read = self.base.read(tensor)
        pair = self.adapter.pairs.get(tensor.name)
        if pair is None:
            return read
        self.survival[tensor.name] = Survival(tensor.name, quantized=pair.expert and self.packed)
        if isinstance(read, Dense):
            return self._merged_dense(tensor, read, pair)
        return self._merged_expert(tensor, read, pair)

    def _merged_dense(self, tensor: Canonical, read: Dense, pair: LoraPair) -> Dense:
        survival, out_dtype = self.survival[tensor.name], torch_dtype(self.dtype)

        def load():
            weight = read.load().float()
            delta = linear_delta(pair.a, pair.b, pair.scale)
            merged = (weight + delta).to(out_dtype)
            survival.record("all", weight, delta, merged.float())
            return merged

        return Dense(SAFETENSORS_CODE_OF[self.dtype], read.shape, load)

    def _merged_expert(self, tensor: Canonical, read: Expert, pair: LoraPair) -> Expert:
        survival, experts = self.survival[tensor.name], self.config.num_local_experts
        label = f"{self.path}: {tensor.name} + LoRA"

        _, inp, out = dense_expert_shape(self.config, tensor.short)

        def delta_in_out(e: int) -> torch.Tensor | None:
            if pair.layout == "per-expert":
                return per_expert_delta(pair.parts.get(e), (inp, out))
            return expert_delta(pair.a, pair.b, pair.scale, e, experts, pair.layout)

        def merged_out_in(e: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            weight = read.values_out_in(e, torch.float32)  # the base's expert, MXFP4 decoded exactly
            delta = delta_in_out(e)
            delta = torch.zeros_like(weight) if delta is None else delta.transpose(0, 1)
            return weight, delta, weight + delta

        def quantized(e: int):
            if read.packed and pair.layout == "per-expert" and e not in pair.parts:
                return read.load_expert(e)  # an expert the adapter did not train keeps its bytes
            weight, delta, merged = merged_out_in(e)
            q = encode.quantize(merged.contiguous(), scale_rule=self.scale_rule, rounding=self.rounding, name=label)
            before = weight if read.packed else self._requantized(weight)
            after = decode.dequantize(q.blocks, q.scales, torch.float32)
            survival.record(e, before, delta, after)
            return q.blocks, q.scales

        def dense(e: int) -> torch.Tensor:
            weight, delta, merged = merged_out_in(e)
            survival.record(e, weight, delta, merged.to(torch_dtype(self.dtype)).float())
            return merged.transpose(0, 1)  # [in, out]; the writer casts it once

        if self.packed:
            return Expert(True, mxfp4_shape(self.config, tensor.short), "MXFP4", quantized)
        return Expert(False, dense_expert_shape(self.config, tensor.short), "F32", dense)

    def _requantized(self, weight: torch.Tensor) -> torch.Tensor:
        """Q(W) for a dense base: what the base alone would have become under the same rule."""
        q = encode.quantize(weight.contiguous(), scale_rule=self.scale_rule, rounding=self.rounding)
        return decode.dequantize(q.blocks, q.scales, torch.float32)

    def extra_files(self) -> list[Path]:
        return self.base.extra_files()

    def generated_files(self) -> dict[str, str]:
        return self.base.generated_files()

    def source_bytes(self) -> int:
        return self.base.source_bytes()

    def tokenizer_dir(self) -> Path:
        return self.base.tokenizer_dir()
