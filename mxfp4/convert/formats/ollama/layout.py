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

from ....gpt_oss.tensors import QKV, Canonical

ARCH = "gptoss"
LLAMA_ARCH = "gpt-oss"  # llama.cpp's name, under which the filled keys are reported
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


def hf_config_of_ollama(lookup, missing, vocab_size: int) -> tuple[dict, list[str]]:
    """The HF-form config of a gptoss file through the GGUF key table (mxfp4.convert.formats.gguf.keys) under
    Ollama's architecture name. lookup(key) gives a metadata value or None; missing(key) raises. Returns (config,
    the llama.cpp keys filled from gpt-oss's known values because the file lacks them)."""
    from gguf import Keys  # the gguf package (0.12 s to import) only when an Ollama file is read

    from ..gguf.keys import read_config

    # Ollama wrote the expert width as feed_forward_length only, and no YaRN betas or type: gpt-oss's are known.
    feed_forward = lookup(Keys.LLM.FEED_FORWARD_LENGTH.format(arch=ARCH))
    if feed_forward is None:
        missing(Keys.LLM.FEED_FORWARD_LENGTH.format(arch=ARCH))
    defaults = {"intermediate_size": int(feed_forward), "beta_fast": 32.0, "beta_slow": 1.0, "rms_norm_eps": 1e-5}
    config, absent = read_config(lookup, ARCH, vocab_size, defaults, missing)
    llama = {key: key.replace(f"{ARCH}.", f"{LLAMA_ARCH}.", 1) for key in absent}
    filled = [f"{llama[key]} = {value}" for key, value in _filled_values(absent, config)]
    if lookup(Keys.Rope.SCALING_TYPE.format(arch=ARCH)) is None:
        filled.append(f"{Keys.Rope.SCALING_TYPE.format(arch=LLAMA_ARCH)} = yarn")
    return config, filled


def _filled_values(absent: list[str], config: dict):
    """(key, the value it was given) for each key filled from a default."""
    from gguf import Keys

    values = {
        Keys.LLM.EXPERT_FEED_FORWARD_LENGTH: config["intermediate_size"],
        Keys.Rope.SCALING_YARN_BETA_FAST: config["rope_scaling"]["beta_fast"],
        Keys.Rope.SCALING_YARN_BETA_SLOW: config["rope_scaling"]["beta_slow"],
        Keys.Attention.LAYERNORM_RMS_EPS: config["rms_norm_eps"],
    }
    by_key = {template.format(arch=ARCH): value for template, value in values.items()}
    return [(key, by_key[key]) for key in absent]
