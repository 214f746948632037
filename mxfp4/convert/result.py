"""What a conversion wrote."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ConvertResult:
    output: Path
    source_kind: str
    target: str
    bytes_in: int
    bytes_out: int
    files: list[Path]
