"""Known broken gpt-oss saves, rebuilt from a healthy checkpoint with exactly the on-disk symptoms their tools
left (names, dtypes, shapes, config keys; mxfp4.convert.anomalies lists the causes). For tests of the repairs and
of `mxfp4 doctor`; nothing here is used by the converters."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from safetensors.torch import save_file

from ..codec.tensor import BLOCKS_SUFFIX, SCALES_SUFFIX
from ..storage.store import TensorStore

INDEX = "model.safetensors.index.json"


def _copy_with(src: Path, dst: Path, rename, config_edit=None, index_edit=None, tensor_edit=None) -> Path:
    """dst: src's files, its tensors in one model.safetensors with rename(name) -> new name (and
    tensor_edit(name, tensor) -> the tensor to store), its config.json passed through config_edit, and an index
    (index_edit may make it wrong)."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.safetensors", INDEX))
    store = TensorStore.open_dir(src)
    edit = tensor_edit or (lambda name, tensor: tensor)
    tensors = {rename(name): edit(name, store.get(name).clone()) for name in store.entries}
    save_file(tensors, str(dst / "model.safetensors"), metadata={"format": "pt"})
    store.close()
    if config_edit is not None:
        config = json.loads((dst / "config.json").read_text())
        config_edit(config)
        (dst / "config.json").write_text(json.dumps(config, indent=2))
    weight_map = {name: "model.safetensors" for name in tensors}
    if index_edit is not None:
        index_edit(weight_map)
    (dst / INDEX).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}, indent=2))
    return dst


def _rope_parameters_only(config: dict) -> None:
    """transformers 5's config: rope_parameters (rope_theta inside), no rope_scaling, no quantization_config."""
    config["rope_parameters"] = {**config.pop("rope_scaling"), "rope_theta": config.pop("rope_theta")}
    config.pop("quantization_config", None)


def transformers_5_23_dequantized_save(dense_dir: Path, dst: Path) -> Path:
    """Form 1, from a healthy dense checkpoint (experts [E, in, out]): each dense expert weight saved under its
    packed name ``*_proj_blocks`` (BF16 [E, H, 2I] and [E, I, H]), no ``*_scales``, biases as they are, no
    quantization_config, rope_parameters and no rope_scaling."""

    def rename(name: str) -> str:
        return name + BLOCKS_SUFFIX if name.endswith(("experts.gate_up_proj", "experts.down_proj")) else name

    return _copy_with(dense_dir, dst, rename, _rope_parameters_only)


def transformers_5_4_resave(mxfp4_dir: Path, dst: Path) -> Path:
    """Form 2, from a healthy MXFP4 checkpoint: every packed expert tensor renamed ``*_proj_blocks_blocks`` (4-D) and
    ``*_proj_blocks_scales`` (3-D), bytes and quantization_config intact."""

    def rename(name: str) -> str:
        if name.endswith(("_proj" + BLOCKS_SUFFIX, "_proj" + SCALES_SUFFIX)):
            base, suffix = name.rsplit("_", 1)
            return f"{base}{BLOCKS_SUFFIX}_{suffix}"
        return name

    return _copy_with(mxfp4_dir, dst, rename)


def ghost_index(healthy_dir: Path, dst: Path) -> Path:
    """Form 7: an index naming a tensor no shard holds, and leaving out one the shard does hold."""

    def edit(weight_map: dict) -> None:
        weight_map["model.layers.0.mlp.experts.gate_up_proj_lora_A"] = "model.safetensors"
        del weight_map["model.norm.weight"]

    return _copy_with(healthy_dir, dst, lambda name: name, index_edit=edit)


def resaved_without_metadata(healthy_dir: Path, dst: Path) -> Path:
    """The same tensors saved as transformers does (its __metadata__ {"format": "pt"} only): without the record of
    the layout mxfp4's writers leave (EXPERT_LAYOUT_KEY). Not broken; undecidable when square and off the grid."""
    return _copy_with(healthy_dir, dst, rename=lambda name: name)


def _transpose_experts(names: tuple[str, ...]):
    def edit(name: str, tensor):
        return tensor.transpose(1, 2).contiguous() if name.endswith(names) else tensor

    return edit


def unsloth_merged_16bit(dense_dir: Path, dst: Path) -> Path:
    """Form 3, from a healthy dense checkpoint: both expert weights transposed to [E, out, in] (gate_up_proj
    [E, 2I, H], down_proj [E, H, I]), as Unsloth's merged_16bit export wrote them before unsloth-zoo#272."""
    both = _transpose_experts(("experts.gate_up_proj", "experts.down_proj"))
    return _copy_with(dense_dir, dst, lambda name: name, tensor_edit=both)


def megatron_bridge_export(dense_dir: Path, dst: Path) -> Path:
    """Form 4, from a healthy dense checkpoint: only down_proj transposed ([E, H, I]; square for gpt-oss's sizes),
    as Megatron-Bridge's exports of 2026-04 wrote it."""
    return _copy_with(dense_dir, dst, lambda name: name, tensor_edit=_transpose_experts(("experts.down_proj",)))


def linearized_experts(dense_dir: Path, dst: Path, split: str = "gate-up-halves") -> Path:
    """Form 5, from a healthy dense checkpoint: each expert as three linear modules
    ``mlp.experts.{e}.{gate_proj,up_proj,down_proj}.{weight [out, in],bias}`` as an MoE linearizer saves them, gate /
    up split 'gate-up-halves' (llm-compressor's generic linearizer before #3100: gate_proj holds gate_up's first
    intermediate_size columns, a mix of gate and up) or 'gate-up-even-odd' (its gpt-oss linearizer: the true
    gate and up)."""
    import re

    from safetensors.torch import load_file

    fused_names = re.compile(r"^(model\.layers\.\d+\.mlp\.experts)\.(gate_up_proj|down_proj)(_bias)?$")
    dst = _copy_with(dense_dir, dst, lambda name: name)
    tensors, out = load_file(str(dst / "model.safetensors")), {}
    for name, tensor in tensors.items():
        match = fused_names.match(name)
        if match is None:
            out[name] = tensor
            continue
        prefix, weight, bias = match.group(1), match.group(2), match.group(3)
        part = "bias" if bias else "weight"
        for e in range(tensor.shape[0]):
            t = tensor[e] if bias else tensor[e].T  # [in, out] -> nn.Linear's [out, in]
            if weight == "down_proj":
                out[f"{prefix}.{e}.down_proj.{part}"] = t.contiguous()
                continue
            half = t.shape[0] // 2
            gate, up = (t[:half], t[half:]) if split == "gate-up-halves" else (t[0::2], t[1::2])
            out[f"{prefix}.{e}.gate_proj.{part}"] = gate.contiguous()
            out[f"{prefix}.{e}.up_proj.{part}"] = up.contiguous()
    save_file(out, str(dst / "model.safetensors"), metadata={"format": "pt"})
    (dst / INDEX).write_text(json.dumps({"metadata": {}, "weight_map": dict.fromkeys(out, "model.safetensors")}))
    return dst


def config_drift(healthy_dir: Path, dst: Path) -> Path:
    """Form 8, from a healthy checkpoint whose config holds gpt-oss's values: config.json without layer_types,
    sliding_window and swiglu_limit, and its quantization_config disagreeing with the tensors (dropped beside packed
    experts, an MXFP4 one added beside dense experts)."""
    from ..gpt_oss.config import MODULES_NOT_CONVERTED

    def drift(config: dict) -> None:
        for key in ("layer_types", "sliding_window", "swiglu_limit"):
            config.pop(key)
        if config.pop("quantization_config", None) is None:
            config["quantization_config"] = {"quant_method": "mxfp4", "modules_to_not_convert": MODULES_NOT_CONVERTED}

    return _copy_with(healthy_dir, dst, lambda name: name, config_edit=drift)


def float_scales(mxfp4_dir: Path, dst: Path, dtype: str, reading: str) -> Path:
    """Form 6, from a healthy MXFP4 checkpoint: every ``*_scales`` tensor cast to ``dtype`` ('bfloat16', 'float16' or
    'float32'), holding the E8M0 bytes as numbers (reading 'codes') or the decoded 2**(s - 127) ('powers')."""
    import torch

    def edit(name: str, tensor):
        if not name.endswith(SCALES_SUFFIX):
            return tensor
        values = tensor.double() if reading == "codes" else torch.exp2(tensor.double() - 127)
        return values.to(getattr(torch, dtype))

    return _copy_with(mxfp4_dir, dst, lambda name: name, tensor_edit=edit)
