"""`mxfp4 quantize`, `dequantize` and `inspect`: safetensors files and checkpoints."""

from __future__ import annotations

import click

from ..codec.rules import ROUNDINGS, SCALE_RULES, resolve_rounding
from ..convert.safetensors_files import DEFAULT_EXCLUDE
from ..dtypes import FLOAT_NAMES
from ..progress import human_bytes
from .group import main
from .signals import clean_errors
from .tables import format_db, format_table


@main.command()
@click.argument("src", type=click.Path(exists=True, dir_okay=False))
@click.argument("dst", type=click.Path(dir_okay=False))
@click.option(
    "--scale-rule",
    type=click.Choice(SCALE_RULES),
    default="floor",
    show_default=True,
    help="How each block's scale is chosen (see mxfp4.rules).",
)
@click.option(
    "--rounding",
    type=click.Choice(ROUNDINGS),
    help="Element rounding: rne (OCP; the default) or ggml (llama.cpp; the default with --scale-rule mlx).",
)
@click.option("--include", metavar="REGEX", help="Only quantize tensors whose name matches.")
@click.option(
    "--exclude",
    metavar="REGEX",
    default=DEFAULT_EXCLUDE,
    show_default=True,
    help="Never quantize tensors whose name matches ('' for none).",
)
@click.option("--force", is_flag=True, help="Overwrite DST if it exists.")
@click.option("--quiet", is_flag=True, help="No progress bar and no table.")
@clean_errors
def quantize(src, dst, scale_rule, rounding, include, exclude, force, quiet) -> None:
    """Pack the float tensors of safetensors file SRC into MXFP4 NAME_blocks/NAME_scales pairs in DST."""
    from ..convert.safetensors_files import quantize_file

    result = quantize_file(
        src,
        dst,
        scale_rule=scale_rule,
        rounding=rounding,
        include=include,
        exclude=exclude or None,
        force=force,
        progress=not quiet,
    )
    if quiet:
        return
    rows = [
        [
            r.name,
            "x".join(map(str, r.shape)),
            format_db(r.sqnr_db),
            f"{r.max_abs_error:.3g}",
            f"{100 * r.clipped_share:.3f}%",
        ]
        for r in result.reports
    ]
    click.echo(format_table(["tensor", "shape", "SQNR dB", "max |err|", "clipped"], rows))
    rounding = resolve_rounding(scale_rule, rounding)
    click.echo(
        f"\nwrote {result.output}: {len(result.reports)} tensors packed ({scale_rule}, {rounding}), "
        f"{len(result.copied)} copied; {human_bytes(result.bytes_in)} -> {human_bytes(result.bytes_out)}"
    )


@main.command()
@click.argument("src", type=click.Path(exists=True, dir_okay=False))
@click.argument("dst", type=click.Path(dir_okay=False))
@click.option("--dtype", type=click.Choice(FLOAT_NAMES), default="bfloat16", show_default=True)
@click.option("--force", is_flag=True, help="Overwrite DST if it exists.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@clean_errors
def dequantize(src, dst, dtype, force, quiet) -> None:
    """Decode every NAME_blocks/NAME_scales pair of SRC into a dense NAME tensor in DST."""
    from ..convert.safetensors_files import dequantize_file

    out = dequantize_file(src, dst, dtype=dtype, force=force, progress=not quiet)
    if not quiet:
        click.echo(f"wrote {out}")


@main.command()
@click.argument("path")
@clean_errors
def inspect(path) -> None:
    """Describe PATH: a checkpoint (HF directory, original/, .gguf, hub id) or one safetensors file."""
    from pathlib import Path

    if Path(path).is_file() and path.endswith(".safetensors"):
        from ..convert.safetensors_files import inspect_file

        rows = inspect_file(path)
        table = [
            [r.name, r.kind, "x".join(map(str, r.shape)), human_bytes(r.nbytes), f"{r.bits_per_param:.2f}"]
            for r in rows
        ]
        click.echo(format_table(["tensor", "format", "shape", "bytes", "bits/param"], table))
        total_bytes, total_params = sum(r.nbytes for r in rows), sum(r.numel for r in rows)
        mx = [r for r in rows if r.kind == "MXFP4"]
        click.echo(
            f"\n{len(rows)} tensors, {total_params:,} parameters, {human_bytes(total_bytes)} "
            f"({8 * total_bytes / max(total_params, 1):.2f} bits/param); {len(mx)} MXFP4 tensors hold "
            f"{sum(r.numel for r in mx):,} parameters"
        )
        return
    from ..convert.summary import summarize

    source, rows = summarize(path)
    c = source.config
    click.echo(
        f"{source.path} ({source.kind}): gpt-oss, {c.num_hidden_layers} layers, {c.num_local_experts} experts "
        f"(top {c.num_experts_per_tok}), hidden {c.hidden_size}, expert width {c.intermediate_size}, "
        f"{c.num_attention_heads}/{c.num_key_value_heads} heads of {c.head_dim}, vocab {c.vocab_size}, "
        f"sliding window {c.sliding_window}" + (f"\n{source.layout}" if source.layout else "") + "\n"
    )
    table = [
        [
            r.tensor,
            r.form,
            str(r.count),
            "x".join(map(str, r.shape)),
            f"{r.params:,}",
            human_bytes(r.nbytes),
            f"{8 * r.nbytes / r.params:.2f}",
        ]
        for r in rows
    ]
    click.echo(format_table(["tensor", "format", "count", "shape", "parameters", "bytes", "bits/param"], table))
    params, nbytes = sum(r.params for r in rows), sum(r.nbytes for r in rows)
    click.echo(f"\n{params:,} parameters, {human_bytes(nbytes)} of weights ({8 * nbytes / params:.2f} bits/param)")
    for anomaly in source.anomalies:  # what a known broken save got wrong (mxfp4 doctor explains each)
        click.echo(f"anomaly: {anomaly.line()}")
