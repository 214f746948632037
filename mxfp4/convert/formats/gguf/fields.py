"""Reading GGUF metadata fields with errors that name the file and the key."""

from __future__ import annotations

from pathlib import Path

from ....errors import CheckpointError


def read_field(fields: dict, key: str, path: Path, default=None, required: bool = True):
    """fields: a GGUF header's key/value pairs (the fields of a mxfp4.storage.gguf_check.GGUFHeader)."""
    value = fields.get(key)
    if value is None:
        if required and default is None:
            raise CheckpointError(f"{path}: GGUF metadata key {key!r} is missing")
        return default
    return value


def undo_float32(value) -> float:
    return float(f"{float(value):.7g}")  # undo float32 storage: 9.99999974e-06 -> 1e-05
