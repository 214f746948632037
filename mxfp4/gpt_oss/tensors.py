"""Every tensor of gpt-oss, one row each: its HF name, original/ name, GGUF name(s), the attribute of
mxfp4.model that holds it, and its shape rule. Name maps are built from this table and the config;
tensors are paired by name through them, never by position, and a tensor found in a file but not here is
an error that names it.

GGUF names and storage types follow llama.cpp's convert_hf_to_gguf.py (GptOssModel): gate_up_proj is
split into ffn_gate_exps (even rows) and ffn_up_exps (odd rows), its bias likewise by columns. original/
(openai/gpt-oss) stacks q, k and v into one qkv tensor (rows q, then k, then v).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .config import GptOssConfig

Shape = Callable[[GptOssConfig], tuple[int, ...]]


def _q(c: GptOssConfig) -> int:
    return c.num_attention_heads * c.head_dim


def _kv(c: GptOssConfig) -> int:
    return c.num_key_value_heads * c.head_dim


def _hidden(c: GptOssConfig) -> tuple[int, ...]:
    return (c.hidden_size,)


@dataclass(frozen=True)
class TensorRow:
    hf: str  # the full name for a global tensor; the name after 'model.layers.N.' for a layer's
    original: str  # original/ name (after 'block.N.'); q/k/v share 'attn.qkv'
    gguf: tuple[str, ...]  # GGUF name(s) (after 'blk.N.'); two when llama.cpp splits gate and up
    module: str  # attribute path in mxfp4.model (after 'layers.N.' for a layer's)
    shape: Shape  # non-expert tensors and expert biases: the shape; expert weights: [E, out, in]
    expert: bool = False  # an MoE weight: MXFP4 in the released checkpoints, dense in a fine-tune


GLOBAL_ROWS = (
    TensorRow(
        "model.embed_tokens.weight",
        "embedding.weight",
        ("token_embd.weight",),
        "embed_tokens.weight",
        lambda c: (c.vocab_size, c.hidden_size),
    ),
    TensorRow("model.norm.weight", "norm.scale", ("output_norm.weight",), "norm.weight", _hidden),
    TensorRow(
        "lm_head.weight",
        "unembedding.weight",
        ("output.weight",),
        "lm_head.weight",
        lambda c: (c.vocab_size, c.hidden_size),
    ),
)

LAYER_ROWS = (
    TensorRow("input_layernorm.weight", "attn.norm.scale", ("attn_norm.weight",), "input_layernorm.weight", _hidden),
    TensorRow(
        "self_attn.q_proj.weight",
        "attn.qkv.weight",
        ("attn_q.weight",),
        "self_attn.q_proj.weight",
        lambda c: (_q(c), c.hidden_size),
    ),
    TensorRow("self_attn.q_proj.bias", "attn.qkv.bias", ("attn_q.bias",), "self_attn.q_proj.bias", lambda c: (_q(c),)),
    TensorRow(
        "self_attn.k_proj.weight",
        "attn.qkv.weight",
        ("attn_k.weight",),
        "self_attn.k_proj.weight",
        lambda c: (_kv(c), c.hidden_size),
    ),
    TensorRow("self_attn.k_proj.bias", "attn.qkv.bias", ("attn_k.bias",), "self_attn.k_proj.bias", lambda c: (_kv(c),)),
    TensorRow(
        "self_attn.v_proj.weight",
        "attn.qkv.weight",
        ("attn_v.weight",),
        "self_attn.v_proj.weight",
        lambda c: (_kv(c), c.hidden_size),
    ),
    TensorRow("self_attn.v_proj.bias", "attn.qkv.bias", ("attn_v.bias",), "self_attn.v_proj.bias", lambda c: (_kv(c),)),
    TensorRow(
        "self_attn.o_proj.weight",
        "attn.out.weight",
        ("attn_output.weight",),
        "self_attn.o_proj.weight",
        lambda c: (c.hidden_size, _q(c)),
    ),
    TensorRow("self_attn.o_proj.bias", "attn.out.bias", ("attn_output.bias",), "self_attn.o_proj.bias", _hidden),
    TensorRow(
        "self_attn.sinks", "attn.sinks", ("attn_sinks.weight",), "self_attn.sinks", lambda c: (c.num_attention_heads,)
    ),
    TensorRow(
        "post_attention_layernorm.weight",
        "mlp.norm.scale",
        ("post_attention_norm.weight",),
        "post_attention_layernorm.weight",
        _hidden,
    ),
    TensorRow(
        "mlp.router.weight",
        "mlp.gate.weight",
        ("ffn_gate_inp.weight",),
        "mlp.router.weight",
        lambda c: (c.num_local_experts, c.hidden_size),
    ),
    TensorRow(
        "mlp.router.bias", "mlp.gate.bias", ("ffn_gate_inp.bias",), "mlp.router.bias", lambda c: (c.num_local_experts,)
    ),
    TensorRow(
        "mlp.experts.gate_up_proj",
        "mlp.mlp1_weight",
        ("ffn_gate_exps.weight", "ffn_up_exps.weight"),
        "gate_up",
        lambda c: (c.num_local_experts, 2 * c.intermediate_size, c.hidden_size),
        expert=True,
    ),
    TensorRow(
        "mlp.experts.gate_up_proj_bias",
        "mlp.mlp1_bias",
        ("ffn_gate_exps.bias", "ffn_up_exps.bias"),
        "mlp.experts.gate_up_bias",
        lambda c: (c.num_local_experts, 2 * c.intermediate_size),
    ),
    TensorRow(
        "mlp.experts.down_proj",
        "mlp.mlp2_weight",
        ("ffn_down_exps.weight",),
        "down",
        lambda c: (c.num_local_experts, c.hidden_size, c.intermediate_size),
        expert=True,
    ),
    TensorRow(
        "mlp.experts.down_proj_bias",
        "mlp.mlp2_bias",
        ("ffn_down_exps.bias",),
        "mlp.experts.down_bias",
        lambda c: (c.num_local_experts, c.hidden_size),
    ),
)

ROWS = {row.hf: row for row in GLOBAL_ROWS + LAYER_ROWS}
LAYER_TENSORS = tuple(row.hf for row in LAYER_ROWS)
QKV = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")


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
        return self.name[len(prefix) :] if self.layer is not None else self.name

    @property
    def row(self) -> TensorRow:
        return ROWS[self.short]


def canonical_tensors(config: GptOssConfig) -> list[Canonical]:
    """Every tensor of the model, in a fixed order: embeddings, layers 0..L-1, final norm, lm_head."""
    out = [Canonical(GLOBAL_ROWS[0].hf, None)]
    for layer in range(config.num_hidden_layers):
        out += [Canonical(f"model.layers.{layer}.{row.hf}", layer, row.expert) for row in LAYER_ROWS]
    out += [Canonical(row.hf, None) for row in GLOBAL_ROWS[1:]]
    return out


def mxfp4_shape(config: GptOssConfig, short: str) -> tuple[int, int, int]:
    """Logical [E, out, in] of an expert weight as MXFP4 stores it (blocks along the input axis)."""
    return ROWS[short].shape(config)


def dense_expert_shape(config: GptOssConfig, short: str) -> tuple[int, int, int]:
    """[E, in, out], the dense layout transformers keeps (the transpose of the MXFP4 one)."""
    e, out, inp = mxfp4_shape(config, short)
    return (e, inp, out)


# The safetensors __metadata__ key by which a writer that knows says how its dense experts are stored ('in-out':
# transformers' [E, in, out]). mxfp4's own writers set it; a square expert matrix (gpt-oss's down_proj) is read by
# it where its values cannot show the orientation, instead of being refused.
EXPERT_LAYOUT_KEY = "mxfp4:expert_layout"


def dense_shape(config: GptOssConfig, short: str) -> tuple[int, ...]:
    """Shape of a non-expert tensor (or an expert bias)."""
    return ROWS[short].shape(config)


def original_name(tensor: Canonical) -> str:
    """original/ name of a canonical tensor (q/k/v map to the shared 'attn.qkv'; experts get no suffix)."""
    if tensor.layer is None:
        return tensor.row.original
    return f"block.{tensor.layer}.{tensor.row.original}"


def gguf_names(tensor: Canonical) -> tuple[str, ...]:
    """GGUF name(s) of a canonical tensor: two for gate_up (gate part, up part: rows or columns 0::2, 1::2)."""
    if tensor.layer is None:
        return tensor.row.gguf
    return tuple(f"blk.{tensor.layer}.{name}" for name in tensor.row.gguf)


def module_path(tensor: Canonical) -> str:
    """Attribute path in mxfp4.model's GptOss: global ones from the model, a layer's from its block;
    expert weights name the Experts slot ('gate_up', 'down')."""
    return tensor.row.module


def keeps_float32(gguf_name: str, n_dims: int) -> bool:
    """llama.cpp stores these in F32 whatever the source dtype: 1-D tensors, norms, anything that is not
    a '.weight' (biases), and the router (ffn_gate_inp)."""
    return (
        n_dims <= 1
        or gguf_name.endswith("_norm.weight")
        or not gguf_name.endswith(".weight")
        or ".ffn_gate_inp." in gguf_name
    )
