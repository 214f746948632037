"""The ``mxfp4`` command group; the command modules add themselves to it."""

from __future__ import annotations

import click

from .. import __version__


@click.group()
@click.version_option(__version__, prog_name="mxfp4")
def main() -> None:
    """Exact, fast MXFP4 for gpt-oss-style checkpoints."""
