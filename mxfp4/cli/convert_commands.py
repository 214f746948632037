"""`mxfp4 convert` and `verify`: gpt-oss checkpoints between formats, compared tensor by tensor."""

from __future__ import annotations

import sys

import click

from ..choices import CONVERT_SCALE_RULE
from ..progress import human_bytes
from .calibration import calibration_tokens, echo_layer_report
from .group import main
from .options import (
    calibrate_options,
    chat_template_option,
    expert_layout_option,
    reading_options,
    target_options,
)
from .ranks import require_calibration, torchrun_job
from .signals import clean_errors
from .tables import format_table


@main.command()
@click.argument("src")
@click.argument("dst", type=click.Path())
@target_options(
    scale_rule=CONVERT_SCALE_RULE,
    scale_help="Only when dense experts become MXFP4 (calibrated or not).",
    dtype_help="Dense experts' dtype (--to bf16).",
)
@calibrate_options
@click.option("--strict", is_flag=True, help="Refuse a known broken save instead of repairing it on the fly.")
@expert_layout_option
@chat_template_option
@click.option("--quiet", is_flag=True, help="No progress bar.")
@clean_errors
@torchrun_job
def convert(
    src,
    dst,
    target,
    scale_rule,
    rounding,
    dtype,
    max_shard_size,
    force,
    calibrate_tokens,
    calibrate_text,
    calibrate_samples,
    calibrate_context,
    device,
    strict,
    expert_layout,
    chat_template,
    quiet,
) -> None:
    """Convert gpt-oss checkpoint SRC (HF directory, original/, .gguf or hub id) to DST. With --calibrate,
    dense experts are quantized by GPTQ on the given tokens (mxfp4.calibrate) instead of rounded."""
    require_calibration(bool(calibrate_tokens or calibrate_text), "convert")
    import time

    from ..convert import convert as run

    start = time.perf_counter()
    options = dict(
        to=target,
        scale_rule=scale_rule,
        rounding=rounding,
        dtype=dtype,
        max_shard_size=max_shard_size,
        force=force,
        progress=not quiet,
    )
    layers = None
    if calibrate_tokens or calibrate_text:
        from ..calibrate.run import convert_calibrated

        ids, where = calibration_tokens(src, calibrate_tokens, calibrate_text)
        calibrated = convert_calibrated(
            src,
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
        result, layers = calibrated.written, calibrated.layers
        if result is None:  # a rank other than 0 of a torchrun job: rank 0 wrote and reports
            return
    else:
        result = run(src, dst, strict=strict, expert_layout=expert_layout, chat_template=chat_template, **options)
    if not quiet:
        if layers:
            echo_layer_report(layers)
        click.echo(
            f"wrote {result.output} ({result.source_kind} -> {result.target}): {human_bytes(result.bytes_in)} read, "
            f"{human_bytes(result.bytes_out)} written, {len(result.files)} file(s), {time.perf_counter() - start:.1f} s"
        )


@main.command()
@click.argument("a")
@click.argument("b")
@click.option("--all", "show_all", is_flag=True, help="List every tensor, not only mismatches.")
@reading_options
@clean_errors(input_error_exit=2)
def verify(a, b, show_all, strict, expert_layout) -> None:
    """Compare checkpoints A and B tensor by tensor (any formats), and their chat templates: exit 0 when they agree,
    1 on any mismatch (a tensor or the template), 2 on a usage or input error (an unreadable checkpoint)."""
    from ..convert.verify import verify as run

    result = run(a, b, strict=strict, expert_layout=expert_layout)
    shown = [t for t in result.tensors if show_all or t.verdict == "mismatch"]
    if shown:
        click.echo(
            format_table(
                ["tensor", "A", "B", "verdict", "max |diff|"],
                [[t.name, t.form_a, t.form_b, t.verdict, f"{t.max_abs_diff:.3g}"] for t in shown],
            )
        )
    counts = {v: sum(t.verdict == v for t in result.tensors) for v in ("exact", "equal values", "mismatch")}
    click.echo(
        f"{result.kind_a} vs {result.kind_b}: {counts['exact']} exact, {counts['equal values']} equal values, "
        f"{counts['mismatch']} mismatched"
    )
    click.echo(result.template_difference or "chat templates: the same")
    if not result.ok:
        sys.exit(1)
