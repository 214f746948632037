"""`mxfp4 convert`, `verify` and `fit`: gpt-oss checkpoints between formats, and whether they fit a device."""

from __future__ import annotations

import sys

import click

from ..choices import CONVERT_SCALE_RULE
from ..progress import human_bytes
from .calibration import calibration_tokens, echo_layer_report
from .group import main
from .options import calibrate_options, target_options
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
@click.option("--quiet", is_flag=True, help="No progress bar.")
@clean_errors
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
    quiet,
) -> None:
    """Convert gpt-oss checkpoint SRC (HF directory, original/, .gguf or hub id) to DST. With --calibrate,
    dense experts are quantized by GPTQ on the given tokens (mxfp4.calibrate) instead of rounded."""
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
            src, dst, ids, context=calibrate_context, samples=calibrate_samples, device=device, where=where, **options
        )
        result, layers = calibrated.written, calibrated.layers
    else:
        result = run(src, dst, **options)
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
@clean_errors(input_error_exit=2)
def verify(a, b, show_all) -> None:
    """Compare checkpoints A and B tensor by tensor (any formats): exit 0 when they agree, 1 on any mismatch, 2
    on a usage or input error (an unreadable checkpoint)."""
    from ..convert.verify import verify as run

    result = run(a, b)
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
    if not result.ok:
        sys.exit(1)


@main.command()
@click.argument("model")
@click.option("--target", help="One target (default: a table of all). Names: see `mxfp4 fit --list`.")
@click.option("--context", type=int, default=4096, show_default=True, help="Tokens of context per sequence.")
@click.option("--batch", type=int, default=1, show_default=True, help="Sequences at once.")
@click.option(
    "--weights", type=click.Choice(["mxfp4", "bf16"]), help="Size the model in this form instead of as stored."
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--list", "list_targets", is_flag=True, help="List the targets and exit.")
@clean_errors
def fit(model, target, context, batch, weights, as_json, list_targets) -> None:
    """Does MODEL fit? MODEL: a checkpoint (any format, headers only), a config.json, a hub id, or the
    preset gpt-oss-20b / gpt-oss-120b."""
    import json

    from ..eval import TARGETS as DEVICE_TARGETS
    from ..eval import fit as run

    if list_targets:
        click.echo(
            format_table(
                ["target", "device", "memory"],
                [[t.name, t.description, human_bytes(t.memory_bytes)] for t in DEVICE_TARGETS.values()],
            )
        )
        return
    names = [target] if target else list(DEVICE_TARGETS)
    reports = [run(model, name, context=context, batch=batch, weights=weights) for name in names]
    if as_json:
        click.echo(json.dumps(reports[0].to_json() if target else [r.to_json() for r in reports], indent=2))
        return
    r0 = reports[0]
    click.echo(
        f"{r0.model}: weights {human_bytes(r0.weights_bytes)}, KV cache {human_bytes(r0.kv_bytes)} "
        f"(context {context}, batch {batch}), activations ~{human_bytes(r0.activation_bytes)}\n"
    )
    rows = [
        [
            r.target,
            "yes" if r.fits else "no",
            human_bytes(r.total_bytes),
            human_bytes(r.budget_bytes),
            ("" if r.headroom_bytes >= 0 else "-") + human_bytes(abs(r.headroom_bytes)),
            f"{r.max_context:,}" if r.max_context else "-",
            str(r.max_batch) if r.max_batch else "-",
        ]
        for r in reports
    ]
    click.echo(format_table(["target", "fits", "needs", "usable", "headroom", "max context", "max batch"], rows))
