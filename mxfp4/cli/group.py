"""The ``mxfp4`` command group; the command modules add themselves to it."""

from __future__ import annotations

import click

from .. import __version__
from .ranks import TORCHRUN_COMMANDS, refuse_outside


@click.group()
@click.version_option(__version__, prog_name="mxfp4")
@click.pass_context
def main(context: click.Context) -> None:
    """Exact, fast MXFP4 for gpt-oss-style checkpoints."""
    refuse_outside(context.invoked_subcommand, TORCHRUN_COMMANDS)
