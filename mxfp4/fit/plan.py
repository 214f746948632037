"""Does a model fit a device? Weights (exact, from the tensors' formats), KV cache (by layer type,
sliding layers capped at the window), activations and the runtime's reserve, against a target.

KV cache: per token and layer 2 (keys, values) x kv_heads x head_dim x 2 bytes (bf16): 2,048 bytes
for gpt-oss. Full-attention layers hold the whole context, sliding layers at most the window.
Activations: the working set of a prefill chunk (default 2,048 tokens) with a fused attention kernel,
estimated as chunk x hidden x 2 bytes x 16 live buffers plus float32 logits for the batch; a rough
allowance, not a measurement.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..codec.layout_reference import packed_nbytes
from ..errors import CheckpointError
from ..gpt_oss.config import GptOssConfig, read_json
from ..gpt_oss.presets import PRESETS, preset_config
from ..gpt_oss.tensors import canonical_tensors, dense_shape, mxfp4_shape
from .targets import TARGETS, Target

KV_BYTES_PER_VALUE = 2  # bf16 cache
ACTIVATION_BUFFERS = 16
PREFILL_CHUNK = 2048


@dataclass(frozen=True)
class FitReport:
    model: str
    target: str
    context: int
    batch: int
    weights_bytes: int
    kv_bytes: int
    activation_bytes: int
    runtime_bytes: int
    total_bytes: int
    budget_bytes: int
    headroom_bytes: int
    fits: bool
    max_context: int  # at this batch; 0 if even one token does not fit
    max_batch: int  # at this context

    def to_json(self) -> dict:
        return asdict(self)


def released_weight_bytes(config: GptOssConfig, *, dense_dtype_bytes: int = 2, experts_mxfp4: bool = True) -> int:
    """Bytes of the released layout: MXFP4 experts (17 bytes / 32 weights), everything else bf16."""
    total = 0
    for tensor in canonical_tensors(config):
        if tensor.expert:
            params = int(np.prod(mxfp4_shape(config, tensor.short)))
            total += packed_nbytes(params) if experts_mxfp4 else params * dense_dtype_bytes
        else:
            total += int(np.prod(dense_shape(config, tensor.short))) * dense_dtype_bytes
    return total


def _holds_only_a_config(directory) -> bool:
    """A directory with a config.json and no weights (neither safetensors nor an index of them)."""
    has_weights = any(directory.glob("*.safetensors")) or any(directory.glob("*.safetensors.index.json"))
    return (directory / "config.json").is_file() and not has_weights


def load_model_facts(spec: str, weights: str | None = None) -> tuple[str, GptOssConfig, int]:
    """(label, config, weight bytes) for a preset name, a config.json (or a directory holding only one),
    or any checkpoint (headers only).
    weights: None = as stored; 'mxfp4' or 'bf16' = that form of the model."""
    from pathlib import Path

    if spec in PRESETS:
        config = preset_config(spec)
        return spec, config, released_weight_bytes(config, experts_mxfp4=weights != "bf16")
    path = Path(spec)
    if path.is_dir() and _holds_only_a_config(path):
        path = path / "config.json"  # what fetching just the config of a hub model leaves: plan from it
    if path.is_file() and path.name.endswith(".json"):
        raw = read_json(path)
        config = (
            GptOssConfig.from_original_dict(raw, str(path))
            if "num_experts" in raw and "num_local_experts" not in raw
            else GptOssConfig.from_hf_dict(raw, str(path))
        )
        return str(path), config, released_weight_bytes(config, experts_mxfp4=weights != "bf16")
    from ..convert.summary import summarize

    source, rows = summarize(spec)
    if weights is None:
        return str(source.path), source.config, sum(r.nbytes for r in rows)
    return str(source.path), source.config, released_weight_bytes(source.config, experts_mxfp4=weights == "mxfp4")


def kv_bytes(config: GptOssConfig, context: int, batch: int) -> int:
    per_token_layer = 2 * config.num_key_value_heads * config.head_dim * KV_BYTES_PER_VALUE
    tokens = sum(
        min(context, config.sliding_window) if kind == "sliding_attention" else context for kind in config.layer_types
    )
    return per_token_layer * tokens * batch


def activation_bytes(config: GptOssConfig, context: int, batch: int) -> int:
    chunk = min(context, PREFILL_CHUNK)
    return batch * chunk * config.hidden_size * 2 * ACTIVATION_BUFFERS + batch * config.vocab_size * 4


def _total(config, weights, target: Target, context, batch) -> int:
    return (
        weights
        + kv_bytes(config, context, batch)
        + activation_bytes(config, context, batch)
        + target.runtime_reserve_bytes
    )


def _largest(fits, high: int) -> int:
    """Largest n in [0, high] with fits(n) (fits is monotone decreasing)."""
    if not fits(1):
        return 0
    low = 1
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if fits(mid) else (low, mid - 1)
    return low


def fit(spec: str, target: str, *, context: int = 4096, batch: int = 1, weights: str | None = None) -> FitReport:
    if target not in TARGETS:
        raise CheckpointError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")
    if context < 1 or batch < 1:
        raise CheckpointError(f"context ({context}) and batch ({batch}) must be at least 1")
    t = TARGETS[target]
    label, config, weights_bytes = load_model_facts(spec, weights)
    budget = int(t.memory_bytes * t.usable_fraction)
    total = _total(config, weights_bytes, t, context, batch)
    max_context = _largest(
        lambda n: _total(config, weights_bytes, t, n, batch) <= budget, config.max_position_embeddings
    )
    max_batch = _largest(lambda n: _total(config, weights_bytes, t, context, n) <= budget, 1 << 16)
    return FitReport(
        label,
        target,
        context,
        batch,
        weights_bytes,
        kv_bytes(config, context, batch),
        activation_bytes(config, context, batch),
        t.runtime_reserve_bytes,
        total,
        budget,
        budget - total,
        total <= budget,
        max_context,
        max_batch,
    )
