"""convert_calibrated() and merge_lora_calibrated(): the converters' targets written from a dense source (or a
base with a LoRA merged in) whose experts GPTQ quantizes on calibration tokens, with a per-layer report."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from ..choices import (
    CALIBRATE_SCALE_RULE,
    GPTQ_ORDERS,
    GPTQ_WEIGHTINGS,
    MXFP4_TARGETS,
    ExpertLayout,
    FloatName,
    GptqOrder,
    GptqWeighting,
    LoraLayout,
    Rounding,
    ScaleRule,
    Target,
)
from ..codec.rules import check_choice
from ..convert.api import WriteOptions, write
from ..convert.chat_template import chat_template_text, with_template
from ..convert.registry import open_source
from ..convert.result import ConvertResult
from ..distributed import current_world
from ..errors import CalibrationWarning, CheckpointError, OptionError
from ..eval.tokens import check_ids
from ..finetune.adapter import check_lora_layout, read_adapter
from ..finetune.merged_source import MergedSource
from .layerwise import MIN_TOKENS, CalibratedSource, LayerReport


@dataclass(frozen=True)
class CalibrationResult:
    """What was written (None on ranks other than 0 of a torchrun job, which write nothing) and the per-layer
    report (the same on every rank)."""

    written: ConvertResult | None
    layers: list[LayerReport]


def calibration_windows(ids: np.ndarray, *, vocab_size: int, context: int, samples: int | None, where: str):
    """Token ids -> [samples, context] windows (consecutive, from the start); too few or out-of-range ids are
    an error naming ``where`` (the file they came from)."""
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    check_ids(ids, vocab_size, where)
    if context < 2:
        raise OptionError(f"context={context}: a calibration window needs at least 2 tokens", parameter="context")
    available = ids.size // context
    wanted = available if samples is None else samples
    if wanted < 1 or wanted > available:
        raise CheckpointError(
            f"{where}: {ids.size} tokens make {available} windows of {context}; "
            f"{'at least one is' if samples is None else f'{samples} are'} needed (give more tokens, or a smaller "
            f"context / samples)"
        )
    return ids[: wanted * context].reshape(wanted, context)


def _calibrated(
    source,
    dst,
    tokens,
    options: WriteOptions,
    *,
    context,
    samples,
    min_tokens,
    order,
    weighting,
    device,
    where,
    chat_template=None,
):
    """Write ``source`` with its experts GPTQ-quantized on ``tokens``: the shared core of both entry points."""
    if options.to not in MXFP4_TARGETS:
        raise OptionError(
            f"calibration quantizes experts to MXFP4; to={options.to!r} keeps them dense "
            f"(one of {', '.join(map(repr, MXFP4_TARGETS))})",
            parameter="to",
        )
    windows = calibration_windows(
        tokens, vocab_size=source.config.vocab_size, context=context, samples=samples, where=where
    )
    calibrated = CalibratedSource(
        source,
        windows,
        scale_rule=options.scale_rule,
        rounding=options.rounding,
        min_tokens=min_tokens,
        order=order,
        weighting=weighting,
        device=device,
    )
    if not current_world().leader:  # another rank of a torchrun job: calibrate its share, rank 0 writes
        calibrated.calibrate_all()
        return CalibrationResult(None, calibrated.reports)
    written = write(with_template(calibrated, chat_template), dst, options)
    calibrated.calibrate_all()  # a target that skipped a layer's experts still takes part in its collectives
    _warn_if_starved(calibrated.reports, min_tokens, windows.shape)
    return CalibrationResult(written, calibrated.reports)


def _warn_if_starved(reports: list[LayerReport], min_tokens: int, windows: tuple[int, int]) -> None:
    """A CalibrationWarning when experts fell back to plain rounding for want of tokens (rank 0 only)."""
    starved = [r for r in reports if r.fallback]
    if not starved:
        return
    fallback = sum(r.fallback for r in starved)
    experts = sum(len(r.tokens_per_expert) for r in reports)
    worst = max(starved, key=lambda r: r.fallback)
    warnings.warn(
        f"{fallback} of {experts} experts saw fewer than {min_tokens} calibration tokens and were rounded plainly, "
        f"not calibrated ({len(starved)} of {len(reports)} layers; layer {worst.layer}: {worst.fallback}); "
        f"{windows[0] * windows[1]:,} tokens in windows of {windows[1]}: more calibration text reaches more experts",
        CalibrationWarning,
        stacklevel=3,
    )


def _calibration_options(context, samples, min_tokens, order, weighting, device) -> dict:
    """Both entry points' calibration settings for _calibrated, the choices checked."""
    check_choice("order", order, GPTQ_ORDERS)
    check_choice("weighting", weighting, GPTQ_WEIGHTINGS)
    return dict(
        context=context, samples=samples, min_tokens=min_tokens, order=order, weighting=weighting, device=device
    )


def convert_calibrated(
    src,
    dst,
    tokens,
    *,
    to: Target = "mxfp4",
    scale_rule: ScaleRule = CALIBRATE_SCALE_RULE,
    rounding: Rounding | None = None,
    context: int = 256,
    samples: int | None = None,
    min_tokens: int = MIN_TOKENS,
    order: GptqOrder = "act",
    weighting: GptqWeighting = "routing",
    device=None,
    dtype: FloatName = "bfloat16",
    max_shard_size=None,
    force: bool = False,
    progress: bool = False,
    where: str = "calibration tokens",
    strict: bool = False,
    expert_layout: ExpertLayout | None = None,
    chat_template: str | None = None,
) -> CalibrationResult:
    """``src`` (dense experts: a bf16 / float fine-tune) written as ``to`` with GPTQ-quantized experts. strict:
    refuse a save written wrong by a known tool (mxfp4.convert.anomalies) instead of repairing it. expert_layout: as
    for mxfp4.convert.convert. order: GPTQ's column order (mxfp4.calibrate.gptq.gptq_quantize; 'act' measured
    better on held-out text, docs/calibration.md). weighting: 'routing' weights each token's share of an expert's
    Hessians by its routing weight to that expert (the MoE scales the expert's output, and so its error, by it),
    'uniform' counts every routed token alike ('routing' measured better on held-out text)."""
    options = WriteOptions(to, scale_rule, rounding, dtype, max_shard_size, force, progress)
    calibration = _calibration_options(context, samples, min_tokens, order, weighting, device)
    template = chat_template_text(chat_template)  # a wrong choice is refused before anything is read
    source = open_source(src, strict=strict, expert_layout=expert_layout)
    return _calibrated(source, dst, tokens, options, **calibration, where=where, chat_template=template)


def merge_lora_calibrated(
    base,
    adapter,
    dst,
    tokens,
    *,
    to: Target = "mxfp4",
    scale_rule: ScaleRule = CALIBRATE_SCALE_RULE,
    rounding: Rounding | None = None,
    context: int = 256,
    samples: int | None = None,
    min_tokens: int = MIN_TOKENS,
    order: GptqOrder = "act",
    weighting: GptqWeighting = "routing",
    device=None,
    dtype: FloatName = "bfloat16",
    lora_layout: LoraLayout | None = None,
    max_shard_size=None,
    force: bool = False,
    progress: bool = False,
    where: str = "calibration tokens",
    strict: bool = False,
    expert_layout: ExpertLayout | None = None,
    chat_template: str | None = None,
) -> CalibrationResult:
    """merge_lora with the merged experts GPTQ-quantized (every expert, trained by the adapter or not)."""
    options = WriteOptions(to, scale_rule, rounding, dtype, max_shard_size, force, progress)
    check_lora_layout(lora_layout)
    source = open_source(base, strict=strict, expert_layout=expert_layout)
    lora = read_adapter(adapter, source.config, lora_layout=lora_layout)
    merged = MergedSource(source, lora, packed=False, scale_rule=scale_rule, rounding=options.rounding, dtype=dtype)
    calibration = _calibration_options(context, samples, min_tokens, order, weighting, device)
    template = chat_template_text(chat_template)
    return _calibrated(merged, dst, tokens, options, **calibration, where=where, chat_template=template)
