"""The ``mxfp4`` command line: parse, call one library function, print."""

from . import codec_commands, convert_commands, doctor_commands, eval_commands, finetune_commands, fit_commands
from .group import main

__all__ = [
    "codec_commands",
    "convert_commands",
    "doctor_commands",
    "eval_commands",
    "finetune_commands",
    "fit_commands",
    "main",
]
