"""A PEFT LoRA adapter read for merging: every lora_A / lora_B pair paired with the base tensor it changes,
its rank, its scale and, for expert parameters, the convention its factors follow.

PEFT's definitions (huggingface/peft: tuners/lora/layer.py): a linear's delta is scale * B @ A with A [r, in]
and B [out, r]; scale = alpha / r, or alpha / sqrt(r) with use_rslora; rank_pattern / alpha_pattern override r
and alpha for the modules whose name ends with a pattern (regex, `(.*\\.)?(pattern)$`). gpt-oss's expert
parameters ([E, in, out], targeted through `target_parameters`) are wrapped in registration order, so with both
targeted gate_up_proj is the inner wrapper (`mlp.experts.base_layer.lora_*`) and down_proj the outer one
(`mlp.experts.lora_*`); which one a pair belongs to is decided here from its shapes, which always differ
({hidden, 2 * intermediate} against {intermediate, hidden}).

Expert conventions (same keys, different meaning), see mxfp4.finetune.lora_math:
- ``peft``: A [E*r, in] expert-major rows, B [out, E*r] with stride-E columns (PEFT's current layout);
- ``swapped``: A [E*r, out], B [in, E*r] (PEFT 0.19.0 with transformers 5, PEFT >= 0.19.1 with transformers 4.5x);
- ``unsloth``: as ``peft`` but expert e uses B's contiguous columns e*r .. (e+1)*r.
Shapes tell ``peft`` from ``swapped`` wherever in != out; a square down_proj takes the orientation the
adapter's gate_up pairs show, and with none to show it an error asks for ``lora_layout``. Nothing in an
adapter tells ``unsloth`` from ``peft``: it is chosen only by ``lora_layout``.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from ..choices import LORA_LAYOUTS
from ..errors import AdapterError, OptionError
from ..gpt_oss.config import GptOssConfig
from ..gpt_oss.tensors import ROWS
from ..storage.hub import resolve
from ..storage.safetensors_io import refuse_pickle
from ..storage.store import TensorStore

# One expert's own pair: unsloth's gate_up_projs.{e} / down_projs.{e}, or vLLM / SGLang's {e}.gate_proj etc.
PER_EXPERT = re.compile(
    r"model\.layers\.(?P<layer>\d+)\.mlp\.experts\."
    r"(?:(?P<fused>gate_up|down)_projs\.(?P<e1>\d+)|(?P<e2>\d+)\.(?P<part>gate|up|down)_proj)"
)
ADAPTER_FILE = "adapter_model.safetensors"
# PEFT also saves the (frozen, unchanged) base weight of a targeted lm_head or embedding (save_embedding_layers).
SAVED_BASE_WEIGHT = re.compile(r"base_model\.model\.(lm_head|model\.embed_tokens)\.base_layer\.weight")
LINEAR_MODULES = {  # module path (after 'model.layers.N.') -> the canonical weight it changes
    "self_attn.q_proj": "self_attn.q_proj.weight",
    "self_attn.k_proj": "self_attn.k_proj.weight",
    "self_attn.v_proj": "self_attn.v_proj.weight",
    "self_attn.o_proj": "self_attn.o_proj.weight",
    "mlp.router": "mlp.router.weight",
}
GLOBAL_MODULES = {"lm_head": "lm_head.weight"}
EXPERT_PARAMETERS = ("mlp.experts.gate_up_proj", "mlp.experts.down_proj")
# Adapter features whose merge is not W + scale * B @ A: refused rather than merged wrongly.
REFUSED_OPTIONS = {
    "use_dora": "DoRA rescales each column by a learned magnitude",
    "lora_bias": "lora_bias adds a trained bias to lora_B",
    "fan_in_fan_out": "fan_in_fan_out stores the weights transposed (a Conv1D layout gpt-oss does not use)",
}


@dataclass(frozen=True)
class ExpertPart:
    """One expert's own LoRA pair (unsloth's gate_up_projs.{e} / down_projs.{e}, or vLLM-style {e}.gate_proj,
    {e}.up_proj, {e}.down_proj): delta_e[:, columns] += scale * (B @ A).T on the [in, out] parameter."""

    expert: int
    a: torch.Tensor  # [r, in]
    b: torch.Tensor  # [out part, r]
    scale: float
    columns: slice  # gate: 0::2 and up: 1::2 of gpt-oss's interleaved gate_up; everything else: all


@dataclass(frozen=True)
class LoraPair:
    """One trained delta: on the canonical tensor ``target`` (an HF name)."""

    target: str
    key: str  # the adapter's module key (without 'base_model.model.'), for messages
    a: torch.Tensor | None  # float32, as stored (None for per-expert parts)
    b: torch.Tensor | None
    rank: int
    scale: float
    expert: bool
    layout: str  # 'linear' for non-expert pairs; one of LORA_LAYOUTS, or 'per-expert' (then parts)
    parts: dict[int, list[ExpertPart]] | None = None


@dataclass(frozen=True)
class Adapter:
    path: Path
    config: dict
    pairs: dict[str, LoraPair]  # by target name


def _pattern_value(patterns: dict, key: str, default):
    """PEFT's get_pattern_key: the first pattern that the whole key ends with (as a dotted suffix)."""
    for pattern, value in patterns.items():
        if re.match(rf"(.*\.)?({pattern})$", key):
            return value
    return default


def _read_config(path: Path) -> dict:
    config_path = path / "adapter_config.json"
    try:
        config = json.loads(config_path.read_text())
    except FileNotFoundError:
        raise AdapterError(f"{path}: no adapter_config.json; give a PEFT adapter directory") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise AdapterError(f"{config_path}: not valid JSON ({error})") from None
    if not isinstance(config, dict):
        raise AdapterError(f"{config_path}: expected a JSON object")
    if config.get("peft_type", "LORA") != "LORA":
        raise AdapterError(f"{config_path}: peft_type is {config.get('peft_type')!r}; merge-lora merges LoRA adapters")
    for option, why in REFUSED_OPTIONS.items():
        if config.get(option):
            raise AdapterError(f"{config_path}: {option} is set; {why}, which merge-lora does not merge")
    if config.get("modules_to_save"):
        raise AdapterError(
            f"{config_path}: modules_to_save {config['modules_to_save']} replaces whole modules; "
            f"merge-lora merges low-rank deltas only"
        )
    for key in ("r", "lora_alpha"):
        value = config.get(key)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
            raise AdapterError(f"{config_path}: {key} = {value!r}; it must be a positive number")
    return config


def _open_weights(path: Path) -> TensorStore:
    """The adapter's safetensors file, header validated; a pickled adapter is refused unopened."""
    if not (path / ADAPTER_FILE).is_file():
        for pickled in ("adapter_model.bin", "adapter_model.pt"):
            if (path / pickled).exists():
                refuse_pickle(path / pickled)
        raise AdapterError(f"{path}: no {ADAPTER_FILE}")
    return TensorStore.open_dir(path, pattern=ADAPTER_FILE)


def _split_key(name: str, path: Path) -> tuple[str, str]:
    """'base_model.model.X.lora_A.weight' -> ('X', 'A'); anything else is an unknown key."""
    match = re.fullmatch(r"base_model\.model\.(.+)\.lora_([AB])\.weight", name)
    if not match:
        raise AdapterError(
            f"{path / ADAPTER_FILE}: unknown key {name!r}; merge-lora reads LoRA pairs "
            f"'base_model.model.<module>.lora_A.weight' / '.lora_B.weight'"
        )
    return match.group(1), match.group(2)


FACTOR_DTYPES = {"F64", "F32", "F16", "BF16"}  # what PEFT saves; integers would be read as numbers they never were


def _factor(store: TensorStore, name: str, path: Path) -> torch.Tensor:
    dtype = store.entries[name].dtype
    if dtype not in FACTOR_DTYPES:
        raise AdapterError(
            f"{path / ADAPTER_FILE}: {name} is {dtype}; LoRA factors are floats ({', '.join(sorted(FACTOR_DTYPES))})"
        )
    value = store.get(name).to(torch.float32)
    if not bool(torch.isfinite(value).all()):
        bad = int((~torch.isfinite(value)).sum())
        raise AdapterError(f"{path / ADAPTER_FILE}: {name} holds {bad} NaN or Inf values; the delta would be too")
    return value


def _linear_target(module: str, config: GptOssConfig, path: Path) -> str | None:
    if module in GLOBAL_MODULES:
        return GLOBAL_MODULES[module]
    match = re.fullmatch(r"model\.layers\.(\d+)\.(.+)", module)
    if not match or match.group(2) not in LINEAR_MODULES and not match.group(2).startswith("mlp.experts"):
        raise AdapterError(f"{path}: LoRA on {module!r}, which is not a gpt-oss linear or expert parameter")
    layer = int(match.group(1))
    if layer >= config.num_hidden_layers:
        raise AdapterError(
            f"{path}: {module!r} is layer {layer}, but the base model has {config.num_hidden_layers} layers; "
            f"the adapter was trained on another model"
        )
    rest = match.group(2)
    return f"model.layers.{layer}.{LINEAR_MODULES[rest]}" if rest in LINEAR_MODULES else None


def _expert_parameter(a: torch.Tensor, b: torch.Tensor, config: GptOssConfig) -> str:
    """Which expert parameter a pair belongs to, from its outer dimensions (A's columns, B's rows)."""
    dims = {a.shape[1], b.shape[0]}
    h, i = config.hidden_size, config.intermediate_size
    if dims == {h, 2 * i}:
        return "mlp.experts.gate_up_proj"
    if dims == {i, h}:
        return "mlp.experts.down_proj"
    return ""


def _orientation(a: torch.Tensor, b: torch.Tensor, shape: tuple[int, int, int]) -> str | None:
    """'peft' (A [E r, in], B [out, E r]), 'swapped' (A [E r, out], B [in, E r]), or None when in == out."""
    _, inp, out = shape
    if inp == out:
        return None
    return "peft" if (a.shape[1], b.shape[0]) == (inp, out) else "swapped"


def check_lora_layout(lora_layout: str | None) -> None:
    """Refuse a lora_layout that is not one of mxfp4.choices.LORA_LAYOUTS (None: read it from the shapes)."""
    if lora_layout is not None and lora_layout not in LORA_LAYOUTS:
        raise OptionError(
            f"lora_layout={lora_layout!r} is not one of {', '.join(map(repr, LORA_LAYOUTS))}", parameter="lora_layout"
        )


def read_adapter(spec, config: GptOssConfig, *, lora_layout: str | None = None) -> Adapter:
    """Read and check a PEFT LoRA adapter (directory or hub id) against the base model's config."""
    check_lora_layout(lora_layout)
    path = resolve(spec)
    if path.is_file():
        refuse_pickle(path)
        raise AdapterError(f"{path}: give the adapter directory (adapter_config.json + {ADAPTER_FILE})")
    config_json = _read_config(path)
    store = _open_weights(path)
    halves: dict[str, dict[str, str]] = {}
    for name in store.entries:
        if SAVED_BASE_WEIGHT.fullmatch(name):
            continue  # the frozen base weight PEFT saves beside an embedding-like target: the base has its own
        module, half = _split_key(name, path)
        halves.setdefault(module, {})[half] = name
    raw = []
    for module, names in sorted(halves.items()):
        if set(names) != {"A", "B"}:
            missing = ({"A", "B"} - set(names)).pop()
            raise AdapterError(f"{path / ADAPTER_FILE}: {module} has no lora_{missing}")
        target = _linear_target(module, config, path)
        raw.append((module, target, _factor(store, names["A"], path), _factor(store, names["B"], path)))
    store.close()
    pairs, experts, per_expert = {}, [], []
    for module, target, a, b in raw:
        if a.ndim != 2 or b.ndim != 2:
            raise AdapterError(f"{path}: {module} lora_A {list(a.shape)} / lora_B {list(b.shape)} are not matrices")
        if target is not None:
            pairs[target] = _linear_pair(path, config_json, config, module, target, a, b)
        elif PER_EXPERT.fullmatch(module):
            per_expert.append((module, a, b))
        elif re.fullmatch(r"model\.layers\.\d+\.mlp\.experts(\.base_layer)*", module):
            experts.append((module, a, b))
        else:
            raise AdapterError(f"{path}: LoRA on {module!r}, which is not a gpt-oss linear or expert parameter")
    _add_expert_pairs(path, config_json, config, experts, lora_layout, pairs)
    _add_per_expert_parts(path, config_json, config, per_expert, pairs)
    return Adapter(path, config_json, pairs)


def _scale(config_json: dict, key: str, rank: int) -> float:
    alpha = _pattern_value(config_json.get("alpha_pattern") or {}, key, config_json["lora_alpha"])
    return alpha / math.sqrt(rank) if config_json.get("use_rslora") else alpha / rank


def _check_rank(path: Path, config_json: dict, key: str, rank: int) -> None:
    expected = _pattern_value(config_json.get("rank_pattern") or {}, key, config_json["r"])
    if expected != rank:
        raise AdapterError(f"{path}: {key} has rank {rank} in its factors but {expected} in adapter_config.json")


def _linear_pair(path, config_json, config, module, target, a, b) -> LoraPair:
    out, inp = ROWS[target.split(".", 3)[-1] if target.startswith("model.layers.") else target].shape(config)
    rank = a.shape[0]
    if a.shape != (rank, inp) or b.shape != (out, rank):
        raise AdapterError(
            f"{path}: {module} lora_A is {list(a.shape)} and lora_B {list(b.shape)}; the base's {target} "
            f"[{out}, {inp}] needs [r, {inp}] and [{out}, r]: the adapter was trained on another model"
        )
    key = module
    _check_rank(path, config_json, key, rank)
    return LoraPair(target, module, a, b, rank, _scale(config_json, key, rank), False, "linear")


def _add_expert_pairs(path, config_json, config, experts, lora_layout, pairs) -> None:
    """Expert pairs into ``pairs``: parameter from shapes, convention from shapes or lora_layout."""
    e = config.num_local_experts
    found = []
    for module, a, b in experts:
        layer = int(module.split(".")[2])
        parameter = _expert_parameter(a, b, config)
        if not parameter:
            raise AdapterError(
                f"{path}: {module} lora_A {list(a.shape)} / lora_B {list(b.shape)} fit neither gate_up_proj nor "
                f"down_proj of the base (hidden {config.hidden_size}, intermediate {config.intermediate_size}): "
                f"the adapter was trained on another model"
            )
        if a.shape[0] % e or b.shape[1] != a.shape[0]:
            raise AdapterError(
                f"{path}: {module} lora_A has {a.shape[0]} rows and lora_B {b.shape[1]} columns; "
                f"with {e} experts both must be experts x rank"
            )
        shape = ROWS[parameter].shape(config)  # [E, out, in] of the packed form; the parameter is [E, in, out]
        param_shape = (shape[0], shape[2], shape[1])
        found.append((module, layer, parameter, a, b, param_shape, _orientation(a, b, param_shape)))
    shown = {o for *_, o in found if o is not None}
    if len(shown) > 1:
        mixed = ", ".join(sorted(shown))
        raise AdapterError(f"{path}: its expert pairs mix orientations ({mixed}); the adapter is inconsistent")
    adapter_wide = next(iter(shown), None)
    for module, layer, parameter, a, b, param_shape, orientation in found:
        layout = lora_layout or orientation or adapter_wide
        if layout is None:
            raise AdapterError(
                f"{path}: {module} ({parameter.split('.')[-1]}) is square, so its shapes cannot tell whether lora_A "
                f"holds the input or the output side, and the adapter has no other expert pair to show it; "
                f"give lora_layout ({', '.join(LORA_LAYOUTS)}: peft for adapters saved by PEFT >= 0.19.1 "
                f"with transformers 5, swapped for PEFT 0.19.0 with transformers 5 or PEFT >= 0.19.1 with "
                f"transformers 4.5x)",
                parameter="lora_layout",
            )
        if orientation is not None and orientation != ("swapped" if layout == "swapped" else "peft"):
            raise AdapterError(
                f"{path}: {module} has the shapes of the {orientation!r} orientation, not those of lora_layout="
                f"{layout!r}",
                parameter="lora_layout",
            )
        rank = a.shape[0] // param_shape[0]
        key = f"model.layers.{layer}.{parameter}"
        _check_rank(path, config_json, key, rank)
        if key in pairs:
            raise AdapterError(f"{path}: two LoRA pairs change {key}")
        pairs[key] = LoraPair(key, module, a, b, rank, _scale(config_json, key, rank), True, layout)


def _add_per_expert_parts(path, config_json, config, per_expert, pairs) -> None:
    """Per-expert pairs into ``pairs``, grouped by the expert parameter they change."""
    h, i, experts = config.hidden_size, config.intermediate_size, config.num_local_experts
    for module, a, b in per_expert:
        match = PER_EXPERT.fullmatch(module)
        layer, e = int(match["layer"]), int(match["e1"] or match["e2"])
        if layer >= config.num_hidden_layers or e >= experts:
            raise AdapterError(
                f"{path}: {module!r} names layer {layer}, expert {e}; the base model has {config.num_hidden_layers} "
                f"layers of {experts} experts: the adapter was trained on another model"
            )
        part = match["fused"] or match["part"]
        parameter = "down_proj" if part == "down" else "gate_up_proj"
        inp, out = {"gate_up": (h, 2 * i), "gate": (h, i), "up": (h, i), "down": (i, h)}[part]
        rank = a.shape[0]
        if a.shape != (rank, inp) or b.shape != (out, rank):
            raise AdapterError(
                f"{path}: {module} lora_A is {list(a.shape)} and lora_B {list(b.shape)}; this expert part needs "
                f"[r, {inp}] and [{out}, r]: the adapter was trained on another model"
            )
        _check_rank(path, config_json, module, rank)
        columns = {"gate": slice(0, None, 2), "up": slice(1, None, 2)}.get(part, slice(None))
        target = f"model.layers.{layer}.mlp.experts.{parameter}"
        pair = pairs.get(target)
        if pair is not None and pair.layout != "per-expert":
            raise AdapterError(f"{path}: {target} has both a fused expert LoRA pair and per-expert pairs ({module})")
        if pair is None:
            pair = pairs[target] = LoraPair(target, module, None, None, rank, 0.0, True, "per-expert", {})
        pair.parts.setdefault(e, []).append(ExpertPart(e, a, b, _scale(config_json, module, rank), columns))
