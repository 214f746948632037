"""How mlx-lm stores gpt-oss (mlx_lm/models/gpt_oss.py, mlx_lm.utils.save): names, the expert split, configs.

Pure format logic, no I/O. Experts are SwitchLinear modules: ``mlp.experts.{gate_proj,up_proj,down_proj}``
with ``.weight`` uint32 [E, out, in/8] (the HF block bytes read as little-endian words: 8 codes a word,
element i in bits 4i..4i+3), ``.scales`` uint8 [E, out, in/32] and ``.bias`` [E, out]; gate is HF's
gate_up rows 0::2, up rows 1::2 (weights, scales and bias alike). Every other tensor keeps its HF name.
Community re-quantizations (``-Q8``, ``-Q4``) store other linear layers affine-quantized: ``.weight``
uint32 holding ``bits``-bit codes, ``.scales`` and ``.biases`` per group of ``group_size`` inputs.
"""

from __future__ import annotations

import copy

import numpy as np

from ....gpt_oss.tensors import Canonical

MLX_QUANTIZATION = {"group_size": 32, "bits": 4, "mode": "mxfp4"}
MLX_METADATA = {"format": "mlx"}
MLX_SHARD_BYTES = 5 << 30  # mlx_lm.utils.MAX_FILE_SIZE_GB
CONVERSION_DTYPES = ("float16", "bfloat16", "float32")  # mlx_lm.convert casts floats to one of these

_EXPERT_MODULES = {
    "mlp.experts.gate_up_proj": ("mlp.experts.gate_proj", "mlp.experts.up_proj"),
    "mlp.experts.down_proj": ("mlp.experts.down_proj",),
}
_EXPERT_BIASES = {
    "mlp.experts.gate_up_proj_bias": ("mlp.experts.gate_proj.bias", "mlp.experts.up_proj.bias"),
    "mlp.experts.down_proj_bias": ("mlp.experts.down_proj.bias",),
}


def _in_layer(tensor: Canonical, short_names: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(f"model.layers.{tensor.layer}.{name}" for name in short_names)


def expert_modules(tensor: Canonical) -> tuple[str, ...]:
    """The SwitchLinear module(s) holding an expert weight: (gate, up) for gate_up, (down,) for down."""
    return _in_layer(tensor, _EXPERT_MODULES[tensor.short])


def dense_names(tensor: Canonical) -> tuple[str, ...]:
    """MLX name(s) of a non-expert tensor or an expert bias: (gate, up) biases for gate_up's."""
    if tensor.layer is not None and tensor.short in _EXPERT_BIASES:
        return _in_layer(tensor, _EXPERT_BIASES[tensor.short])
    return (tensor.name,)


def split_rows(array: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """HF's interleaved gate_up along ``axis``: (gate = 0::2, up = 1::2), contiguous."""
    index = [slice(None)] * array.ndim
    index[axis] = slice(0, None, 2)
    gate = np.ascontiguousarray(array[tuple(index)])
    index[axis] = slice(1, None, 2)
    return gate, np.ascontiguousarray(array[tuple(index)])


def interleave_rows(gate: np.ndarray, up: np.ndarray, axis: int) -> np.ndarray:
    """Inverse of split_rows: gate rows even, up rows odd."""
    stacked = np.stack([gate, up], axis=axis + 1)
    shape = list(gate.shape)
    shape[axis] *= 2
    return stacked.reshape(shape)


def words_from_blocks(blocks: np.ndarray) -> np.ndarray:
    """HF blocks uint8 [..., n, 16] -> mlx's uint32 words [..., n * 4] (the same bytes, little-endian)."""
    flat = np.ascontiguousarray(blocks).reshape(blocks.shape[:-2] + (blocks.shape[-2] * 16,))
    return flat.view("<u4")


def blocks_from_words(words: np.ndarray) -> np.ndarray:
    """mlx's uint32 words [..., in/8] -> HF blocks uint8 [..., in/32, 16]."""
    raw = np.ascontiguousarray(words).astype("<u4", copy=False).view(np.uint8)
    return raw.reshape(words.shape[:-1] + (words.shape[-1] // 4, 16))


def mlx_config(hf_config: dict, generation_config: dict | None, rope_scaling: dict, rope_theta: float) -> dict:
    """config.json as mlx_lm.convert writes it for an MXFP4 gpt-oss: the HF keys sorted, ``quantization`` and
    ``quantization_config`` both the mxfp4 block, eos_token_id taken from generation_config.json.

    mlx-lm reads YaRN from ``rope_scaling`` and the base from ``rope_theta`` only; transformers 5 saves both
    inside ``rope_parameters``, and mlx-lm then runs such a fine-tune without YaRN (wrong logits at every
    position: YaRN also scales attention). So both are written top-level when the source lacks them."""
    out = copy.deepcopy(hf_config)
    out.setdefault("rope_scaling", dict(rope_scaling))
    out.setdefault("rope_theta", rope_theta)
    out.pop("_name_or_path", None)
    out.pop("vision_config", None)
    eos = (generation_config or {}).get("eos_token_id")
    if eos:
        out["eos_token_id"] = eos
    out["quantization"] = dict(MLX_QUANTIZATION)
    out["quantization_config"] = dict(MLX_QUANTIZATION)
    return dict(sorted(out.items()))


def hf_config_of_mlx(config: dict) -> dict:
    """The HF-form config of an MLX gpt-oss config: its quantization blocks removed (they describe MLX's
    storage; the writers add what their own format needs)."""
    out = copy.deepcopy(config)
    out.pop("quantization", None)
    out.pop("quantization_config", None)
    return out


def total_parameters(entries) -> int:
    """mlx_lm's index 'total_parameters': a quantized module counts weight words * 32 / bits (+ its bias),
    scales not counted; every other tensor counts its elements, except the attention sinks (mlx_lm counts the
    parameters of leaf modules only, and the sinks belong to the attention block). entries: (name, shape)."""
    shapes = dict(entries)
    total = 0
    for name, shape in shapes.items():
        count = int(np.prod(shape, dtype=np.int64))
        if name.endswith(".scales") or name.endswith(".biases") or name.endswith(".self_attn.sinks"):
            continue
        if name.endswith(".weight") and name[: -len(".weight")] + ".scales" in shapes:
            count = count * 32 // 4  # mxfp4: 4 bits a value
        total += count
    return total


def unpack_affine(words: np.ndarray, bits: int) -> np.ndarray:
    """Affine codes from mlx's uint32 words [..., n]: a little-endian bit stream, code i in bits
    i*bits .. i*bits + bits - 1 (mlx packs 3, 5 and 6 bits across word boundaries the same way)."""
    raw = np.ascontiguousarray(words).astype("<u4", copy=False).view(np.uint8)
    stream = np.unpackbits(raw.reshape(words.shape[:-1] + (-1,)), axis=-1, bitorder="little")
    codes = stream.reshape(stream.shape[:-1] + (-1, bits))
    return (codes.astype(np.uint32) << np.arange(bits, dtype=np.uint32)).sum(axis=-1, dtype=np.uint32)
