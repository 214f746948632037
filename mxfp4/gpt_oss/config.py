"""gpt-oss hyper-parameters: read and validated from an HF config.json or an original/ config.json,
and written back in either form."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError

MODULES_NOT_CONVERTED = ["model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head"]
"""What gpt-oss's quantization_config keeps in bf16 (everything but the experts)."""

LAYER_TYPES = ("sliding_attention", "full_attention")

# Far beyond any real model (gpt-oss-120b: 36 layers, 128 experts, width 2,880, vocab 201,088), but small
# enough that a hostile config cannot make the tensor tables themselves exhaust memory.
LIMITS = {
    "num_hidden_layers": 4096,
    "num_local_experts": 65536,
    "num_experts_per_tok": 65536,
    "hidden_size": 1 << 20,
    "intermediate_size": 1 << 20,
    "head_dim": 1 << 16,
    "num_attention_heads": 65536,
    "num_key_value_heads": 65536,
    "vocab_size": 1 << 24,
}


def alternating_layer_types(layers: object) -> list[str]:
    """gpt-oss's layer_types for ``layers`` layers (sliding window first); [] for a count that is not a plausible
    layer count (validation names it), so a hostile count never sizes a list."""
    if not isinstance(layers, int) or isinstance(layers, bool) or not 0 < layers <= LIMITS["num_hidden_layers"]:
        return []
    return [LAYER_TYPES[i % 2] for i in range(layers)]


def hf_config_dict(
    *,
    num_hidden_layers: int,
    num_local_experts: int,
    num_experts_per_tok: int,
    hidden_size: int,
    intermediate_size: int,
    head_dim: int,
    num_attention_heads: int,
    num_key_value_heads: int,
    vocab_size: int,
    sliding_window: int,
    rope_theta: float = 150000.0,
    rope_factor: float = 32.0,
    beta_fast: float = 32.0,
    beta_slow: float = 1.0,
    initial_context_length: int = 4096,
    max_position_embeddings: int = 131072,
    swiglu_limit: float = 7.0,
    rms_norm_eps: float = 1e-5,
) -> dict[str, Any]:
    """The HF config.json of a gpt-oss model with these sizes, with every key openai's release has
    (the fixed ones at their released values). Alternating layers: sliding window first."""
    layers = num_hidden_layers
    return {
        "architectures": ["GptOssForCausalLM"],
        "model_type": "gpt_oss",
        "num_hidden_layers": layers,
        "num_local_experts": num_local_experts,
        "num_experts_per_tok": num_experts_per_tok,
        "experts_per_token": num_experts_per_tok,
        "hidden_size": hidden_size,
        "intermediate_size": intermediate_size,
        "head_dim": head_dim,
        "num_attention_heads": num_attention_heads,
        "num_key_value_heads": num_key_value_heads,
        "vocab_size": vocab_size,
        "sliding_window": sliding_window,
        "layer_types": alternating_layer_types(layers),
        "rope_theta": rope_theta,
        "rope_scaling": {
            "rope_type": "yarn",
            "factor": rope_factor,
            "beta_fast": beta_fast,
            "beta_slow": beta_slow,
            "original_max_position_embeddings": initial_context_length,
            "truncate": False,
        },
        "max_position_embeddings": max_position_embeddings,
        "initial_context_length": initial_context_length,
        "swiglu_limit": swiglu_limit,
        "rms_norm_eps": rms_norm_eps,
        "attention_bias": True,
        "attention_dropout": 0.0,
        "hidden_act": "silu",
        "tie_word_embeddings": False,
        "router_aux_loss_coef": 0.9,
        "output_router_logits": False,
        "initializer_range": 0.02,
        "use_cache": True,
    }


@dataclass(frozen=True)
class GptOssConfig:
    num_hidden_layers: int
    num_local_experts: int
    num_experts_per_tok: int
    hidden_size: int
    intermediate_size: int
    head_dim: int
    num_attention_heads: int
    num_key_value_heads: int
    vocab_size: int
    sliding_window: int
    layer_types: tuple[str, ...]
    rope_theta: float
    rope_scaling: dict[str, Any]
    max_position_embeddings: int
    swiglu_limit: float
    rms_norm_eps: float
    hf: dict[str, Any] = field(repr=False, compare=False)  # the full HF-form config.json, unknown keys kept

    @classmethod
    def from_hf_dict(cls, raw: dict[str, Any], source: str = "config.json") -> "GptOssConfig":
        def need(key: str) -> Any:
            if key not in raw:
                raise ConfigError(f"{source}: missing key {key!r} (a gpt-oss config.json has it)")
            return raw[key]

        layers = need("num_hidden_layers")
        default_types = alternating_layer_types(layers)
        # openai's release and transformers 4.x write rope_scaling + rope_theta; transformers 5 writes
        # rope_parameters with rope_theta inside. Read either.
        rope = dict(raw.get("rope_scaling") or raw.get("rope_parameters") or {})
        if not isinstance(raw.get("rope_scaling") or raw.get("rope_parameters") or {}, dict):
            raise ConfigError(f"{source}: rope_scaling / rope_parameters must be an object")
        theta = raw.get("rope_theta", rope.pop("rope_theta", 150000.0))
        rope.pop("rope_theta", None)
        config = cls(
            num_hidden_layers=layers,
            num_local_experts=need("num_local_experts"),
            num_experts_per_tok=raw.get("num_experts_per_tok", raw.get("experts_per_token", 4)),
            hidden_size=need("hidden_size"),
            intermediate_size=need("intermediate_size"),
            head_dim=raw.get("head_dim", 64),
            num_attention_heads=need("num_attention_heads"),
            num_key_value_heads=need("num_key_value_heads"),
            vocab_size=need("vocab_size"),
            sliding_window=raw.get("sliding_window", 128),
            layer_types=tuple(raw.get("layer_types") or default_types),
            rope_theta=float(theta),
            rope_scaling=rope,
            max_position_embeddings=raw.get("max_position_embeddings", 131072),
            swiglu_limit=float(raw.get("swiglu_limit", 7.0)),
            rms_norm_eps=float(raw.get("rms_norm_eps", 1e-5)),
            hf=dict(raw),
        )
        config.validate(source)
        return config

    @classmethod
    def from_original_dict(cls, raw: dict[str, Any], source: str = "original/config.json") -> "GptOssConfig":
        """The openai/gpt-oss original config (num_experts, experts_per_token, rope_scaling_factor, ...)."""
        for key in (
            "num_hidden_layers",
            "num_experts",
            "hidden_size",
            "intermediate_size",
            "num_attention_heads",
            "num_key_value_heads",
            "vocab_size",
        ):
            if key not in raw:
                raise ConfigError(f"{source}: missing key {key!r} (an original gpt-oss config.json has it)")
        layers = raw["num_hidden_layers"]
        hf = hf_config_dict(
            num_hidden_layers=layers,
            num_local_experts=raw["num_experts"],
            num_experts_per_tok=raw.get("experts_per_token", 4),
            hidden_size=raw["hidden_size"],
            intermediate_size=raw["intermediate_size"],
            head_dim=raw.get("head_dim", 64),
            num_attention_heads=raw["num_attention_heads"],
            num_key_value_heads=raw["num_key_value_heads"],
            vocab_size=raw["vocab_size"],
            sliding_window=raw.get("sliding_window", 128),
            rope_theta=raw.get("rope_theta", 150000.0),
            rope_factor=raw.get("rope_scaling_factor", 32.0),
            beta_fast=raw.get("rope_ntk_beta", 32.0),
            beta_slow=raw.get("rope_ntk_alpha", 1.0),
            initial_context_length=raw.get("initial_context_length", 4096),
            swiglu_limit=raw.get("swiglu_limit", 7.0),
        )
        return cls.from_hf_dict(hf, source)

    def validate(self, source: str) -> None:
        ints = {
            "num_hidden_layers": self.num_hidden_layers,
            "num_local_experts": self.num_local_experts,
            "num_experts_per_tok": self.num_experts_per_tok,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "head_dim": self.head_dim,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "vocab_size": self.vocab_size,
        }
        for key, value in ints.items():
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{source}: {key} = {value!r}; it must be a positive integer")
            if value > LIMITS[key]:
                raise ConfigError(f"{source}: {key} = {value} is beyond any plausible model (limit {LIMITS[key]})")
        for key in ("hidden_size", "intermediate_size"):
            if ints[key] % 32:
                raise ConfigError(
                    f"{source}: {key} = {ints[key]} is not a multiple of 32, so its MXFP4 blocks cannot be whole"
                )
        if self.num_experts_per_tok > self.num_local_experts:
            raise ConfigError(
                f"{source}: num_experts_per_tok = {self.num_experts_per_tok} exceeds num_local_experts = "
                f"{self.num_local_experts}"
            )
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError(
                f"{source}: num_attention_heads = {self.num_attention_heads} is not a multiple of num_key_value_heads "
                f"= {self.num_key_value_heads}"
            )
        if len(self.layer_types) != self.num_hidden_layers or any(t not in LAYER_TYPES for t in self.layer_types):
            raise ConfigError(
                f"{source}: layer_types must list {self.num_hidden_layers} entries, each one of {LAYER_TYPES}"
            )

    def hf_dict(self, *, mxfp4: bool) -> dict[str, Any]:
        """The HF config.json: with gpt-oss's quantization_config when the experts are MXFP4, without it
        (a plain bf16 model for transformers) otherwise; the keys gpt-oss always has written even where the source
        dropped them (their values as read), so no reader falls back to its own default."""
        out = dict(self.hf)
        out.setdefault("layer_types", list(self.layer_types))
        out.setdefault("sliding_window", self.sliding_window)
        out.setdefault("swiglu_limit", self.swiglu_limit)
        out.pop("quantization_config", None)
        if mxfp4:
            out["quantization_config"] = {
                "quant_method": "mxfp4",
                "modules_to_not_convert": list(MODULES_NOT_CONVERTED),
            }
        out["torch_dtype" if "torch_dtype" in out else "dtype"] = "bfloat16"
        return out

    def original_dict(self) -> dict[str, Any]:
        rope = self.rope_scaling
        return {
            "num_hidden_layers": self.num_hidden_layers,
            "num_experts": self.num_local_experts,
            "experts_per_token": self.num_experts_per_tok,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "swiglu_limit": self.swiglu_limit,
            "head_dim": self.head_dim,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "sliding_window": self.sliding_window,
            "initial_context_length": rope.get("original_max_position_embeddings", 4096),
            "rope_theta": self.rope_theta,
            "rope_scaling_factor": rope.get("factor", 32.0),
            "rope_ntk_alpha": rope.get("beta_slow", 1.0),
            "rope_ntk_beta": rope.get("beta_fast", 32.0),
        }


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    return data
