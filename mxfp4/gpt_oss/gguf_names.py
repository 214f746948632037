"""GGUF names and storage types for gpt-oss, as llama.cpp's convert_hf_to_gguf.py (GptOssModel) writes
them. gate_up_proj is split into ffn_gate_exps (even rows) and ffn_up_exps (odd rows)."""

from __future__ import annotations

from .tensors import Canonical

GLOBAL = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight", "lm_head.weight": "output.weight"}
LAYER = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight", "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.weight": "attn_k.weight", "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.weight": "attn_v.weight", "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.o_proj.weight": "attn_output.weight", "self_attn.o_proj.bias": "attn_output.bias",
    "self_attn.sinks": "attn_sinks.weight",
    "post_attention_layernorm.weight": "post_attention_norm.weight",
    "mlp.router.weight": "ffn_gate_inp.weight", "mlp.router.bias": "ffn_gate_inp.bias",
    "mlp.experts.down_proj": "ffn_down_exps.weight", "mlp.experts.down_proj_bias": "ffn_down_exps.bias",
}
SPLIT = {  # one canonical tensor -> (gate part, up part): rows (weights) or columns (biases) 0::2 and 1::2
    "mlp.experts.gate_up_proj": ("ffn_gate_exps.weight", "ffn_up_exps.weight"),
    "mlp.experts.gate_up_proj_bias": ("ffn_gate_exps.bias", "ffn_up_exps.bias"),
}


def gguf_names(tensor: Canonical) -> tuple[str, ...]:
    if tensor.layer is None:
        return (GLOBAL[tensor.name],)
    parts = SPLIT.get(tensor.short) or (LAYER[tensor.short],)
    return tuple(f"blk.{tensor.layer}.{p}" for p in parts)


def keeps_float32(gguf_name: str, n_dims: int) -> bool:
    """llama.cpp stores these in F32 whatever the source dtype: 1-D tensors, norms, anything that is not
    a '.weight' (biases), and the router (ffn_gate_inp)."""
    return n_dims <= 1 or gguf_name.endswith("_norm.weight") or not gguf_name.endswith(".weight") or ".ffn_gate_inp." in gguf_name
