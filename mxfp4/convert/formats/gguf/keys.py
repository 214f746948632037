"""gpt-oss's GGUF metadata, one table: each key on the gguf package's own names (gguf.Keys) with its value type
(gguf.GGUFValueType), what the writer stores from a config, and which HF config field a reader fills from it.
The GGUF writer, the GGUF reader and the reader of Ollama's older forms all walk this table; ``Metadata`` holds
the key/values of a file being written (what the header packer reads)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from gguf import GGUFValueType, Keys

from ....errors import CheckpointError
from ....gpt_oss.config import GptOssConfig, hf_config_dict
from .fields import undo_float32

FILE_TYPE_MXFP4_MOE = 38  # llama.cpp's LLAMA_FTYPE_MOSTLY_MXFP4_MOE
QUANTIZATION_VERSION = 2  # ggml's GGML_QNT_VERSION


def _yarn(name: str) -> Callable[[GptOssConfig], Any]:
    """A YaRN parameter, written only when the config's rope scaling is YaRN (as llama.cpp's converter does)."""

    def value(c: GptOssConfig):
        rope = c.rope_scaling
        return rope.get(name) if rope.get("rope_type") == "yarn" and rope.get("factor") is not None else None

    return value


@dataclass(frozen=True)
class ConfigKey:
    key: str  # a gguf.Keys template; {arch} is the architecture
    value_type: GGUFValueType
    value: Callable[[GptOssConfig], Any]  # what the writer stores (None: the key is left out)
    field: str | None = None  # the hf_config_dict argument a reader fills from it (None: not read back)
    read: Callable[[Any], Any] = int  # stored value -> config value (floats were stored as float32)


U32, F32, STR = GGUFValueType.UINT32, GGUFValueType.FLOAT32, GGUFValueType.STRING

# In the order llama.cpp's converter writes them for gpt-oss.
CONFIG_KEYS: tuple[ConfigKey, ...] = (
    ConfigKey(Keys.LLM.BLOCK_COUNT, U32, lambda c: c.num_hidden_layers, "num_hidden_layers"),
    ConfigKey(Keys.LLM.CONTEXT_LENGTH, U32, lambda c: c.max_position_embeddings, "max_position_embeddings"),
    ConfigKey(Keys.LLM.EMBEDDING_LENGTH, U32, lambda c: c.hidden_size, "hidden_size"),
    ConfigKey(Keys.LLM.FEED_FORWARD_LENGTH, U32, lambda c: c.intermediate_size),
    ConfigKey(Keys.Attention.HEAD_COUNT, U32, lambda c: c.num_attention_heads, "num_attention_heads"),
    ConfigKey(Keys.Attention.HEAD_COUNT_KV, U32, lambda c: c.num_key_value_heads, "num_key_value_heads"),
    ConfigKey(Keys.Rope.SCALING_TYPE, STR, lambda c: "yarn" if _yarn("factor")(c) is not None else None),
    ConfigKey(Keys.Rope.SCALING_FACTOR, F32, _yarn("factor"), "rope_factor", undo_float32),
    ConfigKey(Keys.Rope.SCALING_ORIG_CTX_LEN, U32, _yarn("original_max_position_embeddings"), "initial_context_length"),
    ConfigKey(Keys.Rope.SCALING_YARN_BETA_FAST, F32, _yarn("beta_fast"), "beta_fast", undo_float32),
    ConfigKey(Keys.Rope.SCALING_YARN_BETA_SLOW, F32, _yarn("beta_slow"), "beta_slow", undo_float32),
    ConfigKey(Keys.Rope.FREQ_BASE, F32, lambda c: c.rope_theta, "rope_theta", undo_float32),
    ConfigKey(Keys.Attention.LAYERNORM_RMS_EPS, F32, lambda c: c.rms_norm_eps, "rms_norm_eps", undo_float32),
    ConfigKey(Keys.LLM.EXPERT_COUNT, U32, lambda c: c.num_local_experts, "num_local_experts"),
    ConfigKey(Keys.LLM.EXPERT_USED_COUNT, U32, lambda c: c.num_experts_per_tok, "num_experts_per_tok"),
    ConfigKey(Keys.Attention.KEY_LENGTH, U32, lambda c: c.head_dim, "head_dim"),
    ConfigKey(Keys.Attention.VALUE_LENGTH, U32, lambda c: c.head_dim),
    ConfigKey(Keys.General.FILE_TYPE, U32, lambda c: FILE_TYPE_MXFP4_MOE),
    ConfigKey(Keys.Attention.SLIDING_WINDOW, U32, lambda c: c.sliding_window, "sliding_window"),
    ConfigKey(Keys.LLM.EXPERT_FEED_FORWARD_LENGTH, U32, lambda c: c.intermediate_size, "intermediate_size"),
    ConfigKey(Keys.General.QUANTIZATION_VERSION, U32, lambda c: QUANTIZATION_VERSION),
)


@dataclass
class Metadata:
    """A GGUF file's key/values in the order they are added: key -> (value, type, item type of an array)."""

    values: dict[str, tuple[Any, GGUFValueType, GGUFValueType | None]] = field(default_factory=dict)

    def add(self, key: str, value: Any, value_type: GGUFValueType, item_type: GGUFValueType | None = None) -> None:
        if key in self.values:
            raise CheckpointError(f"GGUF metadata key {key!r} added twice")
        self.values[key] = (value, value_type, item_type)

    def add_array(self, key: str, items, item_type: GGUFValueType) -> None:
        self.add(key, items, GGUFValueType.ARRAY, item_type)


def add_config(metadata: Metadata, config: GptOssConfig, arch: str) -> None:
    """Every key of CONFIG_KEYS the config gives a value for."""
    for row in CONFIG_KEYS:
        value = row.value(config)
        if value is not None:
            metadata.add(row.key.format(arch=arch), value, row.value_type)


def read_config(
    lookup: Callable[[str], Any], arch: str, vocab_size: int, defaults: dict[str, Any], missing: Callable[[str], None]
) -> tuple[dict, list[str]]:
    """The HF-form config of a file whose metadata ``lookup(key)`` gives (None when absent). A field the file
    lacks takes ``defaults[field]``; without a default, ``missing(key)`` raises. Returns the config and the keys
    that were filled from defaults."""
    fields, filled = {}, []
    for row in CONFIG_KEYS:
        if row.field is None:
            continue
        key = row.key.format(arch=arch)
        value = lookup(key)
        if value is None:
            if row.field not in defaults:
                missing(key)
            filled.append(key)
            fields[row.field] = defaults[row.field]
        else:
            fields[row.field] = row.read(value)
    config = hf_config_dict(vocab_size=vocab_size, swiglu_limit=7.0, **fields)  # llama.cpp fixes gpt-oss's limit
    return config, filled
