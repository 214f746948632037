"""The gpt-oss GGUF forms Ollama's converter wrote (ollama/ollama convert/convert_gptoss.go), as format facts.

Pure logic, no I/O. Forms 1-3 have architecture ``gptoss`` (keys ``gptoss.*``) and Ollama's tensor names:

1. Ollama <= 0.11.7: MXFP4 as ggml type 4 (a slot llama.cpp retired), each 17-byte block the scale byte then the
   16 HF bytes in OpenAI's nibble order (element 2j low, 2j + 1 high); gate/up fused in one
   ``ffn_gate_up_exps`` [E, 2I, H] with HF's interleaved rows, its bias fused likewise.
2. 0.11.8 - 0.12.5: as 1 but type 39, ggml's block_mxfp4 (element j low, j + 16 high).
3. 0.12.6 - 0.29: gate and up split into ``ffn_gate_exps`` / ``ffn_up_exps`` (weights and biases), type 39.
4. >= 0.30: llama.cpp's own ``gpt-oss`` architecture and names (read by mxfp4.convert.formats.gguf.source).

From an original/ checkpoint Ollama kept q, k and v fused as ``attn_qkv`` (rows q, then k, then v).
Missing against llama.cpp: expert_feed_forward_length, the YaRN type and betas, ``tokenizer.ggml.pre``; gpt-oss's
values for them are known and filled.
"""

from __future__ import annotations

from ....gpt_oss.config import hf_config_dict
from ....gpt_oss.tensors import QKV, Canonical
from ..gguf.fields import undo_float32

ARCH = "gptoss"
OPENAI_MXFP4_TYPE = 4
EXTRA_TYPES = {OPENAI_MXFP4_TYPE: (32, 17)}  # (block elements, block bytes) of form 1's type 4
FORMS = {
    1: "Ollama <= 0.11.7: gptoss, MXFP4 as type 4 in OpenAI's nibble order, gate/up fused",
    2: "Ollama 0.11.8-0.12.5: gptoss, MXFP4 type 39, gate/up fused",
    3: "Ollama 0.12.6-0.29: gptoss, MXFP4 type 39, gate/up split",
}

GLOBAL_NAMES = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight"}
GLOBAL_NAMES["lm_head.weight"] = "output.weight"
LAYER_NAMES = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.o_proj.weight": "attn_out.weight",
    "self_attn.o_proj.bias": "attn_out.bias",
    "self_attn.sinks": "attn_sinks",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.router.weight": "ffn_gate_inp.weight",
    "mlp.router.bias": "ffn_gate_inp.bias",
    "mlp.experts.down_proj": "ffn_down_exps.weight",
    "mlp.experts.down_proj_bias": "ffn_down_exps.bias",
}
GATE_UP = {"mlp.experts.gate_up_proj": "weight", "mlp.experts.gate_up_proj_bias": "bias"}
FUSED_QKV = "attn_qkv"


def ollama_names(tensor: Canonical, *, split_gate_up: bool, fused_qkv: bool) -> tuple[str, ...]:
    """Ollama's tensor name(s) for a canonical tensor: (gate, up) when split; q, k and v all name attn_qkv when
    fused."""
    if tensor.layer is None:
        return (GLOBAL_NAMES[tensor.name],)
    prefix, short = f"blk.{tensor.layer}.", tensor.short
    if short in GATE_UP:
        kind = GATE_UP[short]
        parts = ("ffn_gate_exps", "ffn_up_exps") if split_gate_up else ("ffn_gate_up_exps",)
        return tuple(f"{prefix}{p}.{kind}" for p in parts)
    if fused_qkv and short.startswith(QKV):
        return (f"{prefix}{FUSED_QKV}.{short.rsplit('.', 1)[1]}",)
    return (prefix + LAYER_NAMES[short],)


def qkv_rows(short: str, q: int, kv: int) -> tuple[int, int]:
    """The rows of q, k or v inside a fused attn_qkv (rows q, then k, then v)."""
    part = next(i for i, p in enumerate(QKV) if short.startswith(p))
    return [(0, q), (q, q + kv), (q + kv, q + 2 * kv)][part]


def detect_form(names: set[str], type_ids: dict[str, int]) -> tuple[int, bool]:
    """(form 1, 2 or 3, whether q/k/v are fused) of a gptoss file from its tensor names and types."""
    fused_qkv = any(n.endswith(f".{FUSED_QKV}.weight") for n in names)
    fused = [n for n in names if n.endswith(".ffn_gate_up_exps.weight")]
    if not fused:
        return 3, fused_qkv
    return (1 if type_ids[fused[0]] == OPENAI_MXFP4_TYPE else 2), fused_qkv


# gpt-oss's values for what llama.cpp reads and Ollama never wrote: (llama.cpp key, HF config field, value)
def hf_config_of_ollama(number, vocab_size: int) -> tuple[dict, list[str]]:
    """The HF-form config of a gptoss file. number(key, default) reads ``gptoss.<key>`` (default None: required).
    Returns (config, the llama.cpp keys filled from gpt-oss's known values because the file lacks them)."""
    filled = []

    def known(key: str, llama_key: str, value):
        found = number(key, "absent")
        if found == "absent":
            filled.append(f"gpt-oss.{llama_key} = {value}")
            return value
        return found

    intermediate = int(number("feed_forward_length"))
    expert_width = int(known("expert_feed_forward_length", "expert_feed_forward_length", intermediate))
    beta_fast = undo_float32(known("rope.scaling.yarn_beta_fast", "rope.scaling.yarn_beta_fast", 32.0))
    beta_slow = undo_float32(known("rope.scaling.yarn_beta_slow", "rope.scaling.yarn_beta_slow", 1.0))
    known("rope.scaling.type", "rope.scaling.type", "yarn")
    config = hf_config_dict(
        num_hidden_layers=int(number("block_count")),
        num_local_experts=int(number("expert_count")),
        num_experts_per_tok=int(number("expert_used_count")),
        hidden_size=int(number("embedding_length")),
        intermediate_size=expert_width,
        head_dim=int(number("attention.key_length")),
        num_attention_heads=int(number("attention.head_count")),
        num_key_value_heads=int(number("attention.head_count_kv")),
        vocab_size=vocab_size,
        sliding_window=int(number("attention.sliding_window")),
        rope_theta=undo_float32(number("rope.freq_base")),
        rope_factor=undo_float32(number("rope.scaling.factor")),
        beta_fast=beta_fast,
        beta_slow=beta_slow,
        initial_context_length=int(number("rope.scaling.original_context_length")),
        max_position_embeddings=int(number("context_length")),
        swiglu_limit=7.0,  # fixed in gpt-oss; no GGUF stores it
        rms_norm_eps=undo_float32(number("attention.layer_norm_rms_epsilon", 1e-5)),
    )
    return config, filled
