"""Ollama's own gpt-oss GGUF files (forms 1-3 of mxfp4.convert.formats.ollama.layout) read as canonical tensors.

Lossless: MXFP4 blocks move as bytes (type 4's are already HF's nibble order; type 39's are permuted back),
fused gate/up rows are HF's interleaving as they stand, split ones are re-interleaved, a fused attn_qkv is
cut into q, k and v. What llama.cpp needs and Ollama never wrote is filled from gpt-oss's known values and
listed in ``layout`` (inspect shows it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ....errors import CheckpointError
from ....gpt_oss.tensors import QKV, Canonical
from ....storage.gguf_check import GGUFHeader, TensorInfo
from ...stream import Dense, Expert
from ..gguf.fields import read_field
from ..gguf.source import MXFP4_BLOCK_BYTES, GGUFSource
from .layout import ARCH, FORMS, OPENAI_MXFP4_TYPE, detect_form, hf_config_of_ollama, ollama_names, qkv_rows


class OllamaSource(GGUFSource):
    kind = "ollama"

    def __init__(self, path: Path, header: GGUFHeader):
        self.form, self.fused_qkv = detect_form(set(header.tensors), {n: t.type_id for n, t in header.tensors.items()})
        self.filled: list[str] = []
        super().__init__(path, header)
        if "tokenizer.ggml.pre" not in self.fields:
            self.default_pre = "gpt-4o"  # gpt-oss's o200k: what Ollama's own tokenizer runs
            self.filled.append("tokenizer.ggml.pre = gpt-4o")
        self.layout = f"form {self.form} ({FORMS[self.form]})" + (", q/k/v fused as attn_qkv" if self.fused_qkv else "")
        if self.filled:
            self.layout += "; llama.cpp keys filled from gpt-oss's known values: " + ", ".join(self.filled)

    def _check_architecture(self) -> None:
        arch = read_field(self.fields, "general.architecture", self.path)
        if arch != ARCH:
            raise CheckpointError(f"{self.path}: GGUF architecture is {arch!r}; Ollama's gpt-oss forms say {ARCH!r}")

    def _hf_config(self) -> dict:
        def missing(key: str) -> None:
            raise CheckpointError(f"{self.path}: GGUF metadata key {key!r} is missing")

        embedding = self.tensors.get("token_embd.weight")
        tokens = read_field(self.fields, "tokenizer.ggml.tokens", self.path, default=[], required=False)
        vocab_size = len(tokens) or (embedding.dims[-1] if embedding else 0)
        config, self.filled = hf_config_of_ollama(self.fields.get, missing, vocab_size)
        eos = read_field(self.fields, "tokenizer.ggml.eos_token_id", self.path, required=False)
        if eos is not None and 0 <= int(eos) < config["vocab_size"]:
            config["eos_token_id"] = int(eos)
        return config

    def names(self, tensor: Canonical) -> tuple[str, ...]:
        return ollama_names(tensor, split_gate_up=self.form == 3, fused_qkv=self.fused_qkv)

    def expert_types(self) -> set[str]:
        return {f"type {OPENAI_MXFP4_TYPE}"} if self.form == 1 else {"MXFP4"}

    def _hf_blocks(self, raw: np.ndarray, info: TensorInfo) -> tuple[np.ndarray, np.ndarray]:
        if info.type_id != OPENAI_MXFP4_TYPE:
            return super()._hf_blocks(raw, info)
        blocks = raw.reshape(raw.shape[0], -1, MXFP4_BLOCK_BYTES)  # scale byte, then HF's 16 bytes
        return blocks[..., 1:], blocks[..., 0]

    def _qkv(self, short: str) -> tuple[int, int]:
        c = self.config
        return qkv_rows(short, c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim)

    def _dense_part_shape(self, tensor: Canonical, shape: tuple[int, ...], parts: int) -> tuple[int, ...]:
        if self.fused_qkv and tensor.layer is not None and tensor.short.startswith(QKV):
            _, rows = self._qkv("self_attn.v_proj")  # all of q, k and v
            return (rows,) + tuple(shape[1:])
        return super()._dense_part_shape(tensor, shape, parts)

    def read(self, tensor: Canonical) -> Dense | Expert:
        if not (self.fused_qkv and tensor.layer is not None and tensor.short.startswith(QKV)):
            return super().read(tensor)
        (name,) = self.names(tensor)
        info = self.tensors[name]
        full = tuple(reversed(info.dims))
        start, stop = self._qkv(tensor.short)
        whole = self.dense_read((name,), full)
        shape = (stop - start,) + full[1:]
        return Dense(whole.dtype, shape, lambda: whole.load()[start:stop].contiguous())
