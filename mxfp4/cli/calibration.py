"""What --calibrate adds to convert and merge-lora: reading the tokens, and the per-layer report."""

from __future__ import annotations

import click

from .tables import format_table


def calibration_tokens(checkpoint, tokens_path, text_path):
    """The calibration ids from --calibrate or --calibrate-text (not both), and where they came from."""
    from ..convert import open_source
    from ..eval.tokens import read_token_file, tokenize_text

    if tokens_path and text_path:
        raise click.UsageError("give one of --calibrate TOKENS and --calibrate-text FILE, not both")
    if tokens_path:
        return read_token_file(tokens_path), str(tokens_path)
    return tokenize_text(text_path, open_source(checkpoint).tokenizer_dir()), str(text_path)


def echo_layer_report(layers) -> None:
    """Per layer: tokens routed per expert, fallbacks to rounding, Hessian-weighted error before and after, and the
    time it took."""
    rows = []
    for r in layers:
        counts = sorted(r.tokens_per_expert)
        ratio = r.error_gptq / r.error_rounding if r.error_rounding else 1.0
        rows.append(
            [
                str(r.layer),
                f"{counts[0]} / {counts[len(counts) // 2]} / {counts[-1]}",
                str(r.fallback),
                f"{r.error_rounding:.4g}",
                f"{r.error_gptq:.4g}",
                f"{ratio:.3f}",
                f"{r.seconds:.1f}",
            ]
        )
    headers = [
        "layer",
        "tokens per expert (min/median/max)",
        "rounded",
        "error, rounding",
        "error, GPTQ",
        "ratio",
        "seconds",
    ]
    click.echo(format_table(headers, rows))
