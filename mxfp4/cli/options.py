"""Options that several commands share, declared once."""

from __future__ import annotations

import click

from ..codec.rules import ROUNDINGS, SCALE_RULES
from ..convert import TARGETS
from ..dtypes import FLOAT_NAMES


def target_options(*, scale_rule: str, scale_help: str, dtype_help: str):
    """--to, --scale-rule, --rounding, --dtype, --max-shard-size, --force: how a checkpoint is written."""
    options = [
        click.option("--to", "target", type=click.Choice(TARGETS), required=True, help="Output format."),
        click.option(
            "--scale-rule", type=click.Choice(SCALE_RULES), default=scale_rule, show_default=True, help=scale_help
        ),
        click.option("--rounding", type=click.Choice(ROUNDINGS), default="rne", show_default=True),
        click.option("--dtype", type=click.Choice(FLOAT_NAMES), default="bfloat16", show_default=True, help=dtype_help),
        click.option("--max-shard-size", metavar="SIZE", help="Split safetensors output into shards, e.g. 5GB."),
        click.option("--force", is_flag=True, help="Replace DST if it exists (only once the new output is complete)."),
    ]

    def apply(command):
        for option in reversed(options):
            command = option(command)
        return command

    return apply
