"""Hugging Face gpt-oss directories: experts as MXFP4 (``NAME_blocks`` [E, out, in/32, 16] + ``NAME_scales``, as
openai released gpt-oss) or dense (transformers' [E, in, out], or [E, out, in] told apart by shapes). Detected as
any directory with a gpt_oss ``config.json`` that no other format claims; written as targets ``mxfp4`` and
``bf16``."""

from __future__ import annotations

import json
from pathlib import Path

from ...choices import FUSED_LAYOUTS, LINEAR_SPLITS
from ...codec.layout_reference import packed_shapes
from ...codec.tensor import BLOCKS_SUFFIX, SCALES_SUFFIX
from ...dtypes import SAFETENSORS_CODE_OF, raw_bytes, torch_cpu_empty
from ...errors import CheckpointError
from ...gpt_oss.config import GptOssConfig
from ...gpt_oss.tensors import (
    EXPERT_LAYOUT_KEY,
    Canonical,
    canonical_tensors,
    dense_expert_shape,
    dense_shape,
    mxfp4_shape,
)
from ...storage.safetensors_io import TensorEntry
from ...storage.shards import Job, Outputs
from ...storage.store import TensorStore
from ..anomalies import Anomaly, config_anomalies
from ..jobs import dense_job, packed_job, write_safetensors_directory
from ..options import WriteOptions
from ..orientation import SAMPLE_ROWS, stored_orientation
from ..probe import Probe
from ..repairs import FLOAT_CODES, float_scales, repair_hf_store
from ..result import ConvertResult
from ..stored_tensors import check_names, check_shape, packed_expert_reader
from ..stream import Dense, Expert, Source, stored_dense
from ..transform import dense_expert
from .linear_experts import LinearExperts, is_linear, serves

TARGETS = ("mxfp4", "bf16")


def _square_orientation(store: TensorStore, t: Canonical, expert_layout: str | None) -> str | None:
    """How a square dense expert tensor is stored: what the file shows (its content where that decides,
    mxfp4.convert.orientation, else the layout its writer recorded in the header, EXPERT_LAYOUT_KEY), else the
    caller's expert_layout; None when nothing does. A word that contradicts the file's evidence is an error."""
    where = f"{store.files[t.name]}: {t.name!r}"
    content = stored_orientation(store.get_first_rows(t.name, 0, SAMPLE_ROWS).float().numpy())
    recorded = store.metadata_of(t.name).get(EXPERT_LAYOUT_KEY)
    if recorded is not None and recorded not in FUSED_LAYOUTS:
        raise CheckpointError(
            f"{where}: the header's {EXPERT_LAYOUT_KEY!r} is {recorded!r}, not one of {FUSED_LAYOUTS}"
        )
    if recorded is not None and content not in (None, recorded):
        raise CheckpointError(f"{where} lies on the MXFP4 grid as {content!r}, not as its header's {recorded!r} says")
    shown, how = (content, "lies on the MXFP4 grid") if content else (recorded, "is recorded in its header")
    if expert_layout is not None and shown not in (None, expert_layout):
        raise CheckpointError(
            f"{where} {how} as {shown!r}, not as expert_layout={expert_layout!r} says", parameter="expert_layout"
        )
    return shown or expert_layout


def _dense_expert_orientations(
    store: TensorStore, config: GptOssConfig, experts, path: Path, expert_layout: str | None = None
) -> tuple[set[str], tuple[str, ...], list[Anomaly]]:
    """The dense expert tensors stored [E, out, in] rather than transformers' [E, in, out], those nothing decided,
    and the anomalies found deciding it. Shapes decide where the matrix is not square (gate_up always:
    2 * intermediate != hidden); a square down_proj is decided by _square_orientation, and where nothing decides it
    is an undecided anomaly, which readers refuse (it is never read by a guess). Shapes that fit neither layout are
    an error."""
    by_shape: dict[str, str] = {}
    square = []
    for t in experts:
        entry = store.entries.get(t.name)
        if entry is None:
            continue  # reported as missing by the name check
        found = {"in-out"} if tuple(entry.shape) == dense_expert_shape(config, t.short) else set()
        found |= {"out-in"} if tuple(entry.shape) == mxfp4_shape(config, t.short) else set()
        if not found:
            raise CheckpointError(
                f"{store.files[t.name]}: tensor {t.name!r} is {entry.dtype} {list(entry.shape)}; dense experts are "
                f"[E, in, out] = {list(dense_expert_shape(config, t.short))} (transformers) or [E, out, in] = "
                f"{list(mxfp4_shape(config, t.short))}"
            )
        if len(found) == 1:
            by_shape[t.name] = found.pop()
        else:
            square.append(t)
    orientations, anomalies, undecided = dict(by_shape), [], []
    for t in square:
        orientation = _square_orientation(store, t, expert_layout)
        if orientation is None:
            undecided.append(t.name)
            orientation = "in-out"  # served so doctor and inspect can go on; open_source refuses the checkpoint
        orientations[t.name] = orientation
    if undecided:
        detail = (
            f"{store.files[undecided[0]]}: {undecided[0]!r} is square and its values lie on no MXFP4 grid, so neither "
            f"shape nor content shows whether it is stored [E, in, out] or [E, out, in] ({len(undecided)} such "
            "tensors); say which with --expert-layout in-out (transformers' layout) or out-in (expert_layout= in "
            "Python), or let `mxfp4 doctor CHECKPOINT --base BASE` tell it from the model it was trained from"
        )
        anomalies.append(Anomaly("orientation-undecided", detail, repaired=False, refused=True))
    transposed = {name for name, orientation in orientations.items() if orientation == "out-in"}
    stored = {orientations[t.name] for t in experts if t.name in orientations}
    if len(stored) > 1:
        detail = (
            f"{path}: {len(transposed)} expert tensors stored [E, out, in] beside [E, in, out] ones (first: "
            f"{sorted(transposed)[0]!r}); each read its own way"
        )
        anomalies.append(Anomaly("down-proj-transposed-alone", detail, repaired=True))
    elif stored == {"out-in"}:
        detail = f"{path}: dense experts are [E, out, in], not transformers' [E, in, out]; read transposed"
        anomalies.append(Anomaly("experts-transposed", detail, repaired=True))
    return transposed, tuple(undecided), anomalies


class HFSource(Source):
    """An HF gpt-oss directory: experts either MXFP4 (NAME_blocks + NAME_scales) or dense bf16/f32."""

    def __init__(self, path: Path, config: GptOssConfig, store: TensorStore, expert_layout: str | None = None):
        tensors = canonical_tensors(config)
        experts = [t for t in tensors if t.expert]
        store, self.anomalies = repair_hf_store(store, experts, path)
        self.scales_readings, found = float_scales(store, experts)
        self.anomalies += found
        self.path, self.config, self.store = path, config, store
        packed = [t.name + BLOCKS_SUFFIX in store.entries or t.name + SCALES_SUFFIX in store.entries for t in experts]
        self.packed = all(packed)
        if any(packed) and not self.packed:
            raise CheckpointError(
                f"{path}: some expert weights are MXFP4 and some dense; convert needs one form throughout"
            )
        self.kind = "hf-mxfp4" if self.packed else "hf-dense"
        self.transposed: set[str] = set()  # dense expert tensors stored [E, out, in]
        self.linear = LinearExperts(store, config, path, expert_layout) if is_linear(store) else None
        if self.linear is not None:
            self.anomalies += self.linear.anomalies
        elif not self.packed:
            if expert_layout in LINEAR_SPLITS:
                raise CheckpointError(
                    f"{path}: expert_layout={expert_layout!r} describes per-expert linear modules; these experts are "
                    f"fused (give one of {', '.join(FUSED_LAYOUTS)})",
                    parameter="expert_layout",
                )
            self.transposed, self.undecided, found = _dense_expert_orientations(
                store, config, experts, path, expert_layout
            )
            self.anomalies += found
        if self.linear is not None:
            self.layout = (
                "experts as per-expert linear modules (experts.{e}.gate_proj / up_proj / down_proj [out, in]), as MoE "
                + (
                    f"linearizers save them; gate and up read as {self.linear.split}"
                    if self.linear.decided
                    else "linearizers save them; which gate_up columns gate_proj / up_proj hold is undecided"
                )
            )
        elif self.packed:
            self.layout = "experts MXFP4 (_blocks [E, out, in/32, 16] + _scales), as openai released gpt-oss"
        elif len(self.transposed) == len(experts):
            self.layout = "experts dense [E, out, in] (transposed from transformers' layout)"
        elif self.transposed:
            self.layout = f"experts dense, {len(self.transposed)} tensors [E, out, in] and the rest [E, in, out]"
        else:
            self.layout = "experts dense [E, in, out], as transformers saves a dequantized or fine-tuned gpt-oss"
        self.anomalies += config_anomalies(config.hf, self.packed, f"{path / 'config.json'}")
        expected = set(self.linear.names) if self.linear is not None else set()
        for t in tensors:
            if self.linear is not None and serves(t):
                continue
            expected |= {t.name + BLOCKS_SUFFIX, t.name + SCALES_SUFFIX} if t.expert and self.packed else {t.name}
        check_names(store, expected, path)
        for t in tensors:
            if self.linear is not None and serves(t):
                continue  # checked by LinearExperts
            if t.expert and self.packed:
                blocks_shape, scales_shape = packed_shapes(mxfp4_shape(config, t.short))
                check_shape(store, t.name + BLOCKS_SUFFIX, {"U8"}, blocks_shape)
                floats = t.name + SCALES_SUFFIX in self.scales_readings  # form 6: cast to a float dtype
                check_shape(store, t.name + SCALES_SUFFIX, FLOAT_CODES if floats else {"U8"}, scales_shape)
            elif t.expert:
                transposed = t.name in self.transposed
                shape = mxfp4_shape(config, t.short) if transposed else dense_expert_shape(config, t.short)
                check_shape(store, t.name, {"BF16", "F16", "F32"}, shape)
            else:
                check_shape(store, t.name, {"BF16", "F16", "F32"}, dense_shape(config, t.short))

    def read(self, tensor: Canonical) -> Dense | Expert:
        store, name = self.store, tensor.name
        if self.linear is not None and serves(tensor):
            return self.linear.read(tensor)
        if tensor.expert and self.packed:
            blocks, scales = name + BLOCKS_SUFFIX, name + SCALES_SUFFIX
            reading = self.scales_readings.get(scales)
            return packed_expert_reader(store, mxfp4_shape(self.config, tensor.short), blocks, scales, reading)
        entry = store.entries[name]
        if tensor.expert and name in self.transposed:  # stored [E, out, in]: served as [E, in, out] like the rest
            shape = dense_expert_shape(self.config, tensor.short)
            return Expert(False, shape, entry.dtype, lambda e: store.get_first(name, e).transpose(0, 1))
        if tensor.expert:
            return Expert(False, tuple(entry.shape), entry.dtype, lambda e: store.get_first(name, e))
        return stored_dense(store, name)

    def source_bytes(self) -> int:
        return self.store.source_bytes()


def _dense_expert_job(name: str, read: Expert, dtype: str, label: str) -> Job:
    experts, rows, cols = read.shape if read.packed else (read.shape[0], read.shape[2], read.shape[1])
    entry = TensorEntry(name, SAFETENSORS_CODE_OF[dtype], (experts, cols, rows))  # [E, in, out]
    per_expert = entry.nbytes // experts

    def run(out: Outputs) -> None:
        buffer = torch_cpu_empty((cols, rows), dtype) if read.packed else None  # one decode buffer, reused

        for e in range(experts):  # (a dense source's expert is cast, out unused)
            out.write_part(name, e * per_expert, raw_bytes(dense_expert(read, e, dtype, label, out=buffer)))

    return Job([entry], run)


def hf_jobs(source: Source, *, mxfp4: bool, dtype: str, scale_rule: str, rounding: str) -> list[Job]:
    """HF layout: experts as NAME_blocks/NAME_scales (mxfp4) or dense [E, in, out] of dtype."""
    jobs = []
    for tensor in canonical_tensors(source.config):
        read = source.read(tensor)
        label = f"{source.path}: {tensor.name}"
        if isinstance(read, Dense):
            jobs.append(dense_job(tensor.name, read))
        elif mxfp4:
            jobs.append(
                packed_job(
                    tensor.name + BLOCKS_SUFFIX,
                    tensor.name + SCALES_SUFFIX,
                    read,
                    scale_rule=scale_rule,
                    rounding=rounding,
                    label=label,
                )
            )
        else:
            jobs.append(_dense_expert_job(tensor.name, read, dtype, label))
    return jobs


def detect(probe: Probe) -> bool:
    return probe.is_directory and probe.gpt_oss_config is not None


def open_hf(probe: Probe) -> HFSource:
    config = GptOssConfig.from_hf_dict(probe.gpt_oss_config, str(probe.config_path))
    return HFSource(probe.path, config, probe.store, probe.expert_layout)


def write(source: Source, dst: Path, options: WriteOptions) -> ConvertResult:
    """``mxfp4``: experts as NAME_blocks / NAME_scales with gpt-oss's quantization_config; ``bf16``: dense experts
    [E, in, out] of options.dtype, a plain model for transformers. Tokenizer and other small files come along."""
    mxfp4 = options.to == "mxfp4"
    jobs = hf_jobs(source, mxfp4=mxfp4, dtype=options.dtype, scale_rule=options.scale_rule, rounding=options.rounding)
    config = json.dumps(source.config.hf_dict(mxfp4=mxfp4), indent=2) + "\n"
    files: list[tuple[str, str | Path]] = [("config.json", config)]
    files += [(extra.name, extra) for extra in source.extra_files()]
    files += list(source.generated_files().items())
    metadata = {"format": "pt"} if mxfp4 else {"format": "pt", EXPERT_LAYOUT_KEY: "in-out"}
    return write_safetensors_directory(source, dst, jobs, options, files, metadata)
