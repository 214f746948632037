"""The HF config.json of a gpt-oss GGUF, rebuilt from its metadata through the key table the writer uses
(mxfp4.convert.formats.gguf.keys): llama.cpp's keys for gpt-oss."""

from __future__ import annotations

from pathlib import Path

from gguf import Keys

from ....errors import CheckpointError
from .fields import read_field
from .keys import read_config

ARCH = "gpt-oss"
# What a llama.cpp GGUF may leave out, with gpt-oss's values (llama.cpp's converter writes the YaRN keys only
# when the source's rope scaling is YaRN).
DEFAULTS = {"rope_factor": 32.0, "beta_fast": 32.0, "beta_slow": 1.0, "initial_context_length": 4096}


def hf_config(fields: dict, path: Path, vocab_size: int) -> dict:
    """The HF-form config dict of the GGUF whose header ``fields`` are given (``path`` names it in errors);
    vocab_size: the embedding's rows, used when the file holds no token list."""

    def missing(key: str) -> None:
        raise CheckpointError(f"{path}: GGUF metadata key {key!r} is missing")

    tokens = read_field(fields, Keys.Tokenizer.LIST, path, default=[], required=False)
    config, _ = read_config(fields.get, ARCH, len(tokens) or vocab_size, DEFAULTS, missing)
    for key, name in ((Keys.Tokenizer.EOS_ID, "eos_token_id"), (Keys.Tokenizer.PAD_ID, "pad_token_id")):
        value = read_field(fields, key, path, required=False)
        if value is not None:
            config[name] = int(value)
    return config
