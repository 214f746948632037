"""Token ids for evaluation: from a token file (.npy, or whitespace-separated integers) or from text
through a checkpoint's own tokenizer.json (the `tokenizers` package)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import CheckpointError, MissingDependencyError


def read_token_file(path) -> np.ndarray:
    path = Path(path)
    if path.suffix == ".npy":
        ids = np.load(path, allow_pickle=False)  # never unpickle
    else:
        try:
            ids = np.array(path.read_text().split(), dtype=np.int64)
        except ValueError as error:
            raise CheckpointError(f"{path}: token files hold whitespace-separated integers ({error})") from None
    ids = np.asarray(ids).reshape(-1)
    if ids.dtype.kind not in "iu":
        raise CheckpointError(f"{path}: token ids must be integers, got {ids.dtype}")
    return ids.astype(np.int64)


def tokenize_text(text_path, tokenizer_dir) -> np.ndarray:
    tokenizer_json = Path(tokenizer_dir) / "tokenizer.json"
    if not tokenizer_json.is_file():
        raise CheckpointError(
            f"{tokenizer_dir}: no tokenizer.json to tokenize {text_path} with; give token ids instead"
        )
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise MissingDependencyError(
            "tokenizing text needs the 'tokenizers' package: pip install tokenizers (or give token ids)"
        ) from None
    tokenizer = Tokenizer.from_file(str(tokenizer_json))
    return np.array(tokenizer.encode(Path(text_path).read_text(), add_special_tokens=False).ids, dtype=np.int64)


def check_ids(ids: np.ndarray, vocab_size: int, where: str) -> None:
    if ids.size < 2:
        raise CheckpointError(f"{where}: need at least 2 tokens to score, got {ids.size}")
    if ids.min() < 0 or ids.max() >= vocab_size:
        raise CheckpointError(
            f"{where}: token ids must lie in 0..{vocab_size - 1}, found {int(ids.min())}..{int(ids.max())}"
        )
