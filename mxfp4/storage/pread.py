"""Positioned reads of byte ranges from one file, safe to run from several threads at once.

Reads go straight into a fresh buffer rather than through a memory map: pages of a mapped multi-GB
checkpoint stay resident in the process once touched, while read() keeps memory at the slice in hand.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

from ..errors import CheckpointError


class PositionedFile:
    """One file opened unbuffered on first use; ``read`` shares no file offset between callers (preadv)
    where the OS has it, and serialises seek + read where it does not."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._handle = None
        self._lock = threading.Lock()

    def read(self, offset: int, count: int, *, what: str) -> np.ndarray:
        """count bytes from absolute offset, as a fresh uint8 array; a short file is a CheckpointError
        naming the file and ``what`` was being read."""
        if self._handle is None:
            with self._lock:
                if self._handle is None:
                    self._handle = open(self.path, "rb", buffering=0)
        buffer = np.empty(count, dtype=np.uint8)
        view, done = memoryview(buffer), 0
        while done < count:
            if hasattr(os, "preadv"):
                n = os.preadv(self._handle.fileno(), [view[done:]], offset + done)
            else:
                with self._lock:
                    self._handle.seek(offset + done)
                    n = self._handle.readinto(view[done:])
            if not n:
                raise CheckpointError(f"{self.path}: file ended inside {what}; it is truncated")
            done += n
        return buffer

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
