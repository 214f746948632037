"""`mxfp4 fit`: whether a model fits a device's memory, and at what context and batch."""

from __future__ import annotations

import click

from ..progress import human_bytes
from .group import main
from .signals import clean_errors
from .tables import format_table


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

    from ..fit import TARGETS as DEVICE_TARGETS
    from ..fit import fit as run

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
