"""The HF config.json of a gpt-oss GGUF, rebuilt from its metadata: the inverse of what
mxfp4.convert.formats.gguf.writer.add_metadata writes (llama.cpp's keys for gpt-oss)."""

from __future__ import annotations

from pathlib import Path

from ....gpt_oss.config import hf_config_dict
from .fields import read_field, undo_float32

ARCH = "gpt-oss"


def hf_config(fields: dict, path: Path, vocab_size: int) -> dict:
    """The HF-form config dict of the GGUF whose header ``fields`` are given (``path`` names it in errors);
    vocab_size: the embedding's rows, used when the file holds no token list."""

    def number(key: str, default=None):
        return read_field(fields, f"{ARCH}.{key}", path, default, required=default is None)

    tokens = read_field(fields, "tokenizer.ggml.tokens", path, default=[], required=False)
    config = hf_config_dict(
        num_hidden_layers=int(number("block_count")),
        num_local_experts=int(number("expert_count")),
        num_experts_per_tok=int(number("expert_used_count")),
        hidden_size=int(number("embedding_length")),
        intermediate_size=int(number("expert_feed_forward_length")),
        head_dim=int(number("attention.key_length")),
        num_attention_heads=int(number("attention.head_count")),
        num_key_value_heads=int(number("attention.head_count_kv")),
        vocab_size=len(tokens) or vocab_size,
        sliding_window=int(number("attention.sliding_window")),
        rope_theta=undo_float32(number("rope.freq_base")),
        rope_factor=undo_float32(number("rope.scaling.factor", 32.0)),
        beta_fast=undo_float32(number("rope.scaling.yarn_beta_fast", 32.0)),
        beta_slow=undo_float32(number("rope.scaling.yarn_beta_slow", 1.0)),
        initial_context_length=int(number("rope.scaling.original_context_length", 4096)),
        max_position_embeddings=int(number("context_length")),
        swiglu_limit=7.0,  # llama.cpp fixes it for gpt-oss; GGUF does not store it
        rms_norm_eps=undo_float32(number("attention.layer_norm_rms_epsilon")),
    )
    for key, name in (("eos", "eos_token_id"), ("padding", "pad_token_id")):
        value = read_field(fields, f"tokenizer.ggml.{key}_token_id", path, required=False)
        if value is not None:
            config[name] = int(value)
    return config
