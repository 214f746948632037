"""`mxfp4 doctor`: what a checkpoint is and what a known broken save got wrong in it, read-only."""

from __future__ import annotations

import json
import sys

import click

from .group import main
from .signals import clean_errors
from .tables import format_table


@main.command()
@click.argument("checkpoint")
@click.option("--base", help="The checkpoint it was fine-tuned from (any format): finds expert deltas a merge dropped.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@clean_errors(input_error_exit=2)
def doctor(checkpoint, base, as_json) -> None:
    """Name CHECKPOINT's format and layout and every anomaly of a known broken save, with its known cause and
    whether readers repair it: exit 0 healthy, 1 anomalies found, 2 an error (unreadable, not gpt-oss)."""
    from ..convert.doctor import diagnose

    found = diagnose(checkpoint, base=base)
    if as_json:
        click.echo(json.dumps(found.to_json(), indent=2))
    else:
        click.echo(f"{found.path} ({found.kind})" + (f": {found.layout}" if found.layout else ""))
        if found.healthy:
            click.echo("healthy: no known anomaly")
        else:
            rows = [[str(a.form), a.kind, _verdict(a), a.detail, a.cause] for a in found.anomalies]
            click.echo(format_table(["form", "anomaly", "repaired", "found", "known cause"], rows))
    sys.exit(0 if found.healthy else 1)


def _verdict(anomaly) -> str:
    """The 'repaired' column: yes, NO (read, but not what a correct save holds), or REFUSED (readers stop)."""
    return "yes" if anomaly.repaired else "REFUSED" if anomaly.refused else "NO"
