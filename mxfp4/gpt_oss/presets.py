"""The released gpt-oss models' sizes, stated once (openai's config.json for each; docs/formats.md)."""

from __future__ import annotations

from .config import GptOssConfig, hf_config_dict

GPT_OSS_20B = {
    "num_hidden_layers": 24,
    "num_local_experts": 32,
    "num_experts_per_tok": 4,
    "hidden_size": 2880,
    "intermediate_size": 2880,
    "head_dim": 64,
    "num_attention_heads": 64,
    "num_key_value_heads": 8,
    "vocab_size": 201088,
    "sliding_window": 128,
}
GPT_OSS_120B = {**GPT_OSS_20B, "num_hidden_layers": 36, "num_local_experts": 128}
PRESETS = {"gpt-oss-20b": GPT_OSS_20B, "gpt-oss-120b": GPT_OSS_120B}


def preset_config(name: str, **overrides) -> GptOssConfig:
    """The config of a released model by name ('gpt-oss-20b', 'gpt-oss-120b'), sizes overridable
    (e.g. num_hidden_layers=2 for a benchmark cut to two full-width layers)."""
    return GptOssConfig.from_hf_dict(hf_config_dict(**{**PRESETS[name], **overrides}), name)
