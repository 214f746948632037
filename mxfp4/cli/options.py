"""Options that several commands share, declared once."""

from __future__ import annotations

import click

from ..choices import EXPERT_LAYOUTS, ROUNDINGS, SCALE_RULES, TARGETS
from ..dtypes import FLOAT_NAMES


def target_options(*, scale_rule: str, scale_help: str, dtype_help: str):
    """--to, --scale-rule, --rounding, --dtype, --max-shard-size, --force: how a checkpoint is written."""
    options = [
        click.option("--to", "target", type=click.Choice(TARGETS), required=True, help="Output format."),
        click.option(
            "--scale-rule", type=click.Choice(SCALE_RULES), default=scale_rule, show_default=True, help=scale_help
        ),
        click.option(
            "--rounding",
            type=click.Choice(ROUNDINGS),
            help="Element rounding [default: rne; ggml with --scale-rule mlx].",
        ),
        click.option("--dtype", type=click.Choice(FLOAT_NAMES), default="bfloat16", show_default=True, help=dtype_help),
        click.option("--max-shard-size", metavar="SIZE", help="Split safetensors output into shards, e.g. 5GB."),
        click.option("--force", is_flag=True, help="Replace DST if it exists (only once the new output is complete)."),
    ]

    def apply(command):
        for option in reversed(options):
            command = option(command)
        return command

    return apply


def calibrate_options(command):
    """--calibrate TOKENS / --calibrate-text FILE, --calibrate-samples, --calibrate-context, --device."""
    options = [
        click.option(
            "--calibrate",
            "calibrate_tokens",
            type=click.Path(exists=True, dir_okay=False),
            help="GPTQ the experts on these token ids (.npy or whitespace-separated integers).",
        ),
        click.option(
            "--calibrate-text",
            type=click.Path(exists=True, dir_okay=False),
            help="GPTQ the experts on this text, through the checkpoint's tokenizer.",
        ),
        click.option("--calibrate-samples", type=int, help="Windows of calibration tokens (default: all that fit)."),
        click.option("--calibrate-context", type=int, default=256, show_default=True, help="Tokens per window."),
        click.option("--device", default="cpu", show_default=True, help="torch device for calibration, e.g. cuda."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


expert_layout_option = click.option(
    "--expert-layout",
    type=click.Choice(EXPERT_LAYOUTS),
    help="What nothing in the file shows (shapes, values, its writer's record): how a square dense expert is "
    "stored (in-out: transformers' [E, in, out]; out-in), or which columns of gate_up per-expert gate_proj / up_proj "
    "hold (gate-up-even-odd: gpt-oss's interleaving; gate-up-halves: llm-compressor's linearizer before #3100). "
    "`mxfp4 doctor CKPT --base BASE` tells.",
)


def reading_options(command):
    """--strict and --expert-layout, for commands that read checkpoints without writing one (verify, eval): how a
    checkpoint saved wrong by a known tool is read, as convert reads it."""
    command = expert_layout_option(command)
    return click.option(
        "--strict", is_flag=True, help="Refuse a checkpoint saved wrong by a known tool instead of repairing it."
    )(command)


chat_template_option = click.option(
    "--chat-template",
    help="The chat template the output carries: harmony (renders what openai-harmony renders), original (OpenAI's, "
    "from the trl wheel) or a jinja file. Default: the source's.",
)
