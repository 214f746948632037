"""The tokenizer as GGUF metadata, read from tokenizer.json the way llama.cpp's converter lays it out
(model 'gpt2', pre-tokenizer 'gpt-4o' for gpt-oss), without loading transformers."""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..storage.safetensors_io import CheckpointError

NORMAL, CONTROL, USER_DEFINED, UNUSED = 1, 3, 4, 5
LOOKS_SPECIAL = re.compile(r"^<\|.*\|>$")


def vocab_tokens(tokenizer_json: Path, vocab_size: int) -> tuple[list[str], list[int]]:
    """Tokens 0..vocab_size-1 and their GGUF types; ids the tokenizer lacks become '[PADn]' (unused)."""
    try:
        data = json.loads(tokenizer_json.read_text())
        vocab = dict(data["model"]["vocab"])
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{tokenizer_json}: not a BPE tokenizer.json ({type(error).__name__}: {error})") from None
    added = {t["id"]: t for t in data.get("added_tokens", [])}
    by_id = {i: t for t, i in vocab.items()}
    by_id.update({i: t["content"] for i, t in added.items()})
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(UNUSED)
        elif i in added:
            token = by_id[i]
            tokens.append(token)
            types.append(CONTROL if added[i].get("special") or LOOKS_SPECIAL.match(token) else USER_DEFINED)
        else:
            tokens.append(by_id[i])
            types.append(NORMAL)
    return tokens, types


def add_tokenizer(writer, directory: Path, vocab_size: int) -> None:
    """tokenizer.ggml.* keys: tokens, types, merges, special ids, chat template."""
    import gguf

    tokenizer_json = directory / "tokenizer.json"
    if not tokenizer_json.is_file():
        raise CheckpointError(f"{directory}: no tokenizer.json; llama.cpp needs the tokenizer inside the GGUF")
    tokens, types = vocab_tokens(tokenizer_json, vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-4o")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    # Merges, bos/eos/pad ids and the chat template: the gguf package's SpecialVocab reads
    # tokenizer.json, tokenizer_config.json and config.json exactly as llama.cpp's converter does.
    gguf.SpecialVocab(directory, load_merges=True, n_vocab=len(tokens)).add_to_gguf(writer)
