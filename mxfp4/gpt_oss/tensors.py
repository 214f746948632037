"""Tensor name maps, built from the config: the canonical (HF) names and their original/ counterparts.

Every tensor is paired by name through these tables, never by position; a tensor found in a file but
not in the table is an error that names it.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import GptOssConfig

EXPERT_WEIGHTS = ("gate_up_proj", "down_proj")  # MXFP4 in the released checkpoints


@dataclass(frozen=True)
class Canonical:
    """One tensor of the model under its HF name. expert: an MoE weight (MXFP4 or dense)."""

    name: str
    layer: int | None
    expert: bool = False

    @property
    def short(self) -> str:
        """The name without 'model.layers.N.' (e.g. 'mlp.experts.down_proj')."""
        prefix = f"model.layers.{self.layer}."
        return self.name[len(prefix):] if self.layer is not None else self.name


LAYER_TENSORS = (
    "input_layernorm.weight",
    "self_attn.q_proj.weight", "self_attn.q_proj.bias",
    "self_attn.k_proj.weight", "self_attn.k_proj.bias",
    "self_attn.v_proj.weight", "self_attn.v_proj.bias",
    "self_attn.o_proj.weight", "self_attn.o_proj.bias",
    "self_attn.sinks",
    "post_attention_layernorm.weight",
    "mlp.router.weight", "mlp.router.bias",
    "mlp.experts.gate_up_proj", "mlp.experts.gate_up_proj_bias",
    "mlp.experts.down_proj", "mlp.experts.down_proj_bias",
)


def canonical_tensors(config: GptOssConfig) -> list[Canonical]:
    """Every tensor of the model, in a fixed order: embeddings, layers 0..L-1, final norm, lm_head."""
    out = [Canonical("model.embed_tokens.weight", None)]
    for layer in range(config.num_hidden_layers):
        for short in LAYER_TENSORS:
            expert = short.rsplit(".", 1)[-1] in EXPERT_WEIGHTS
            out.append(Canonical(f"model.layers.{layer}.{short}", layer, expert))
    out += [Canonical("model.norm.weight", None), Canonical("lm_head.weight", None)]
    return out


def mxfp4_shape(config: GptOssConfig, short: str) -> tuple[int, int, int]:
    """Logical [E, out, in] of an expert weight as MXFP4 stores it (blocks along the input axis)."""
    e, h, i = config.num_local_experts, config.hidden_size, config.intermediate_size
    return (e, 2 * i, h) if short.endswith("gate_up_proj") else (e, h, i)


def dense_expert_shape(config: GptOssConfig, short: str) -> tuple[int, int, int]:
    """[E, in, out], the dense layout transformers keeps (the transpose of the MXFP4 one)."""
    e, out, inp = mxfp4_shape(config, short)
    return (e, inp, out)


def dense_shape(config: GptOssConfig, short: str) -> tuple[int, ...]:
    """Shape of a non-expert tensor (or an expert bias)."""
    h, e, v = config.hidden_size, config.num_local_experts, config.vocab_size
    q, kv = config.num_attention_heads * config.head_dim, config.num_key_value_heads * config.head_dim
    shapes = {
        "model.embed_tokens.weight": (v, h), "model.norm.weight": (h,), "lm_head.weight": (v, h),
        "input_layernorm.weight": (h,), "post_attention_layernorm.weight": (h,),
        "self_attn.q_proj.weight": (q, h), "self_attn.q_proj.bias": (q,),
        "self_attn.k_proj.weight": (kv, h), "self_attn.k_proj.bias": (kv,),
        "self_attn.v_proj.weight": (kv, h), "self_attn.v_proj.bias": (kv,),
        "self_attn.o_proj.weight": (h, q), "self_attn.o_proj.bias": (h,),
        "self_attn.sinks": (config.num_attention_heads,),
        "mlp.router.weight": (e, h), "mlp.router.bias": (e,),
        "mlp.experts.gate_up_proj_bias": (e, 2 * config.intermediate_size), "mlp.experts.down_proj_bias": (e, h),
    }
    return shapes[short]


# original/ (openai/gpt-oss) names. q, k and v are stacked into one qkv tensor (rows q, then k, then v).
ORIGINAL_GLOBAL = {"model.embed_tokens.weight": "embedding.weight", "model.norm.weight": "norm.scale", "lm_head.weight": "unembedding.weight"}
ORIGINAL_LAYER = {
    "input_layernorm.weight": "attn.norm.scale",
    "self_attn.o_proj.weight": "attn.out.weight", "self_attn.o_proj.bias": "attn.out.bias",
    "self_attn.sinks": "attn.sinks",
    "post_attention_layernorm.weight": "mlp.norm.scale",
    "mlp.router.weight": "mlp.gate.weight", "mlp.router.bias": "mlp.gate.bias",
    "mlp.experts.gate_up_proj": "mlp.mlp1_weight", "mlp.experts.gate_up_proj_bias": "mlp.mlp1_bias",
    "mlp.experts.down_proj": "mlp.mlp2_weight", "mlp.experts.down_proj_bias": "mlp.mlp2_bias",
}
QKV = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")


def original_name(tensor: Canonical) -> str:
    """original/ name of a canonical tensor (q/k/v map to the shared 'attn.qkv'; experts get no suffix)."""
    if tensor.layer is None:
        return ORIGINAL_GLOBAL[tensor.name]
    short = tensor.short
    for part in QKV:
        if short.startswith(part):
            return f"block.{tensor.layer}.attn.qkv.{short.rsplit('.', 1)[1]}"
    return f"block.{tensor.layer}.{ORIGINAL_LAYER[short]}"
