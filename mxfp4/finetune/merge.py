"""merge_lora(): a base checkpoint in any format the converters read plus a PEFT LoRA adapter, written as
any converter target, with a report of how much of each delta the output kept."""

from __future__ import annotations

from dataclasses import dataclass

from ..choices import (
    MERGE_SCALE_RULE,
    MXFP4_TARGETS,
    ExpertLayout,
    FloatName,
    LoraLayout,
    Rounding,
    ScaleRule,
    Target,
)
from ..convert.api import WriteOptions, write
from ..convert.chat_template import chat_template_text, with_template
from ..convert.registry import open_source
from ..convert.result import ConvertResult
from ..errors import AdapterError
from ..gpt_oss.tensors import canonical_tensors
from .adapter import check_lora_layout, read_adapter
from .merged_source import MergedSource
from .survival import Survival, overall_kept


@dataclass(frozen=True)
class MergeResult:
    written: ConvertResult
    survival: list[Survival]  # one per merged tensor, in model order

    @property
    def kept(self) -> float:
        return overall_kept(self.survival)

    @property
    def lost(self) -> list[Survival]:
        return [s for s in self.survival if s.lost]


def merge_lora(
    base,
    adapter,
    dst,
    *,
    to: Target,
    scale_rule: ScaleRule = MERGE_SCALE_RULE,
    rounding: Rounding | None = None,
    dtype: FloatName = "bfloat16",
    lora_layout: LoraLayout | None = None,
    max_shard_size: str | int | None = None,
    force: bool = False,
    progress: bool = False,
    strict: bool = False,
    expert_layout: ExpertLayout | None = None,
    chat_template: str | None = None,
) -> MergeResult:
    """Merge ``adapter`` (a PEFT LoRA directory or hub id) into ``base`` and write ``dst`` as ``to``.

    W' = W + scale * B @ A per PEFT's definitions, in float32, then cast once to ``dtype`` (non-expert
    tensors; experts too for ``to='bf16'``) or quantized once with (scale_rule, rounding) (experts of the
    MXFP4 targets). The default rule is ``mse``: a base's blocks sit exactly on the MXFP4 grid, where round_up
    and floor tip a block to the next scale for an arbitrarily small delta (its largest value is at their
    boundary), adding a whole block of rounding noise; mse keeps the scale unless another one is closer.
    Every tensor the adapter does not touch is copied byte for byte. lora_layout: the expert LoRA convention
    when the adapter's shapes cannot tell ('peft', 'swapped', 'unsloth'; see mxfp4.finetune.adapter).
    Nothing is written when anything is wrong; an interrupted merge leaves nothing. A base saved wrong by a known
    tool is read correctly with a RepairWarning (mxfp4.convert.anomalies); strict=True refuses it instead.
    expert_layout: how a dense base's square experts are stored, where neither shape nor content tells (as for
    mxfp4.convert.convert). chat_template: the template the output carries, 'harmony', 'original' or a jinja file
    (default: the base's).
    """
    options = WriteOptions(to, scale_rule, rounding, dtype, max_shard_size, force, progress)
    check_lora_layout(lora_layout)  # every option refused before anything is read
    template = chat_template_text(chat_template)  # a wrong choice is refused before anything is read
    source = open_source(base, strict=strict, expert_layout=expert_layout)
    lora = read_adapter(adapter, source.config, lora_layout=lora_layout)
    if not lora.pairs:
        raise AdapterError(f"{lora.path}: the adapter holds no LoRA pairs; there is nothing to merge")
    merged = MergedSource(
        source, lora, packed=to in MXFP4_TARGETS, scale_rule=scale_rule, rounding=options.rounding, dtype=dtype
    )
    written = write(with_template(merged, template), dst, options)
    order = {tensor.name: i for i, tensor in enumerate(canonical_tensors(source.config))}
    rows = sorted(merged.survival.values(), key=lambda s: order[s.name])
    return MergeResult(written, rows)
