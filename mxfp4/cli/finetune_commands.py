"""`mxfp4 merge-lora`: a LoRA adapter merged into a base checkpoint, written as any target, with the
delta-survival report."""

from __future__ import annotations

import json

import click

from ..choices import LORA_LAYOUTS, MERGE_SCALE_RULE
from ..progress import human_bytes
from .calibration import calibration_tokens, echo_layer_report
from .group import main
from .options import calibrate_options, chat_template_option, expert_layout_option, target_options
from .ranks import require_calibration, torchrun_job
from .signals import clean_errors
from .tables import format_table


@main.command(name="merge-lora")
@click.argument("base")
@click.argument("adapter")
@click.argument("dst", type=click.Path())
@target_options(
    scale_rule=MERGE_SCALE_RULE,
    scale_help="How merged experts are requantized (MXFP4 targets; mse adds no noise where a delta is small).",
    dtype_help="What merged tensors are cast to (and dense experts, --to bf16).",
)
@click.option(
    "--lora-layout",
    type=click.Choice(LORA_LAYOUTS),
    help="The expert LoRA convention, when the adapter's shapes cannot tell (square down_proj only).",
)
@calibrate_options
@click.option("--json", "as_json", is_flag=True, help="The delta-survival report as JSON.")
@click.option("--strict", is_flag=True, help="Refuse a base saved wrong by a known tool instead of repairing it.")
@expert_layout_option
@chat_template_option
@click.option("--quiet", is_flag=True, help="No progress bar and no table.")
@clean_errors
@torchrun_job
def merge_lora(
    base,
    adapter,
    dst,
    target,
    scale_rule,
    rounding,
    dtype,
    lora_layout,
    max_shard_size,
    force,
    calibrate_tokens,
    calibrate_text,
    calibrate_samples,
    calibrate_context,
    device,
    as_json,
    strict,
    expert_layout,
    chat_template,
    quiet,
) -> None:
    """Merge PEFT LoRA ADAPTER into BASE (any checkpoint format, or a hub id) and write DST. With --calibrate,
    the merged experts are quantized by GPTQ on the given tokens instead of rounded."""
    require_calibration(bool(calibrate_tokens or calibrate_text), "merge-lora")
    from ..finetune import merge_lora as run

    options = dict(
        to=target,
        scale_rule=scale_rule,
        rounding=rounding,
        dtype=dtype,
        lora_layout=lora_layout,
        max_shard_size=max_shard_size,
        force=force,
        progress=not quiet and not as_json,
    )
    if calibrate_tokens or calibrate_text:
        from ..calibrate.run import merge_lora_calibrated

        ids, where = calibration_tokens(base, calibrate_tokens, calibrate_text)
        calibrated = merge_lora_calibrated(
            base,
            adapter,
            dst,
            ids,
            context=calibrate_context,
            samples=calibrate_samples,
            device=device,
            where=where,
            strict=strict,
            expert_layout=expert_layout,
            chat_template=chat_template,
            **options,
        )
        if calibrated.written is None:  # a rank other than 0 of a torchrun job: rank 0 wrote and reports
            return
        if as_json:
            layers = [r.to_json() for r in calibrated.layers]
            click.echo(json.dumps(_merge_json(calibrated.written.output, None, [], layers), indent=2))
        elif not quiet:
            echo_layer_report(calibrated.layers)
            click.echo(f"\nwrote {calibrated.written.output}: the adapter merged, experts quantized by GPTQ")
        return
    result = run(base, adapter, dst, strict=strict, expert_layout=expert_layout, chat_template=chat_template, **options)
    if as_json:
        tensors = [s.to_json() for s in result.survival]
        click.echo(json.dumps(_merge_json(result.written.output, result.kept, tensors, []), indent=2))
        return
    for lost in result.lost:
        why = (
            "the output lies further from the fine-tuned weights than the base did: rounding noise exceeds the delta"
            if lost.kept < 0
            else "rounding erased most of the fine-tune there"
        )
        click.echo(
            f"warning: {lost.name} kept {100 * lost.kept:.0f}% of its delta (|delta| / |W| = {lost.delta_rel:.2e}); "
            f"{why}",
            err=True,
        )
    if quiet:
        return
    rows = []
    for s in result.survival:
        stored = "MXFP4" if s.quantized else dtype
        rows.append([s.name, stored, f"{s.delta_rel:.3e}", f"{100 * s.kept:.1f}%", f"{100 * s.changed_share:.2f}%"])
    click.echo(format_table(["merged tensor", "stored", "|delta|/|W|", "delta kept", "values changed"], rows))
    written = result.written
    click.echo(
        f"\nwrote {written.output} ({written.source_kind} -> {written.target}): {len(result.survival)} tensors "
        f"merged, {100 * result.kept:.1f}% of the whole delta kept, {len(result.lost)} tensors kept less than half; "
        f"{human_bytes(written.bytes_out)} written"
    )


def _merge_json(output, kept: float | None, tensors: list, layers: list) -> dict:
    """`merge-lora --json`, one schema with or without --calibrate: the delta-survival report (kept: the share of
    the whole delta kept, null when GPTQ quantized the experts; tensors: one row per merged tensor) and the
    calibration report (layers: one row per layer, empty without --calibrate)."""
    return {"output": str(output), "kept": kept, "tensors": tensors, "layers": layers}
