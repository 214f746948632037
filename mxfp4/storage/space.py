"""Output checks: free disk space up front, and shard sizes given as text."""

from __future__ import annotations

import shutil
from pathlib import Path

from ..errors import CheckpointError
from ..progress import human_bytes

SPACE_MARGIN = 64 * 2**20  # headers, config and tokenizer files


def check_free_space(directory: Path, needed: int) -> None:
    """Refuse an output that cannot fit in ``directory`` (or whose directory does not exist) before writing."""
    if not Path(directory).is_dir():
        raise CheckpointError(f"{directory}: the output's directory does not exist; create it first")
    free = shutil.disk_usage(directory).free
    if free < needed + SPACE_MARGIN:
        raise CheckpointError(
            f"{directory}: the output needs about {human_bytes(needed)} but only {human_bytes(free)} is free; "
            f"free some space or write elsewhere"
        )


def parse_size(text: str | int | None) -> int | None:
    """'5GB', '500MiB', '2000000' -> bytes (GB = 10**9, GiB = 2**30); None stays None."""
    if text is None or isinstance(text, int):
        return text
    units = {
        "": 1,
        "B": 1,
        "KB": 10**3,
        "MB": 10**6,
        "GB": 10**9,
        "TB": 10**12,
        "KIB": 2**10,
        "MIB": 2**20,
        "GIB": 2**30,
        "TIB": 2**40,
    }
    s = str(text).strip().upper().replace(" ", "")
    number = s.rstrip("KMGTIB")
    unit = s[len(number) :]
    try:
        value = float(number)
    except ValueError:
        value = -1
    if unit not in units or value <= 0:
        raise CheckpointError(f"max shard size {text!r} is not a size like 5GB, 500MiB or 2000000")
    return int(value * units[unit])
