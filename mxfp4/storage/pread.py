"""Positioned reads of byte ranges from one file, safe to run from several threads at once.

Reads go straight into a buffer (fresh, or the caller's) rather than through a memory map: pages of a mapped multi-GB
checkpoint stay resident in the process once touched, while read() keeps memory at the slice in hand.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

from ..errors import CheckpointError

COPY_PIECE = 64 * 2**20


def copy_pieces(count: int) -> list[tuple[int, int]]:
    """(start, bytes) of the COPY_PIECE-sized pieces covering count bytes: the unit of kernel copies and of the
    progress bar's steps."""
    return [(done, min(COPY_PIECE, count - done)) for done in range(0, count, COPY_PIECE)]


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
        buffer = np.empty(count, dtype=np.uint8)
        self.read_into(buffer, offset, what=what)
        return buffer

    def read_into(self, buffer: np.ndarray, offset: int, *, what: str) -> None:
        """Fill ``buffer`` (a contiguous, writable uint8 array) with the bytes from absolute offset."""
        self._open()
        view, done, count = memoryview(buffer), 0, len(buffer)
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

    def copy_to(self, fd: int, offset: int, count: int, dst_offset: int, *, what: str) -> None:
        """count bytes from absolute offset into file descriptor fd at dst_offset, inside the kernel where it can
        (copy_file_range: no trip through this process's memory), else by read and pwrite in 64 MiB pieces."""
        self._open()
        done = 0
        if hasattr(os, "copy_file_range"):
            try:
                while done < count:
                    n = os.copy_file_range(self._handle.fileno(), fd, count - done, offset + done, dst_offset + done)
                    if not n:
                        raise CheckpointError(f"{self.path}: file ended inside {what}; it is truncated")
                    done += n
                return
            except OSError:  # a filesystem pair or kernel without it (EXDEV, ENOSYS, EINVAL): copy the rest here
                pass
        while done < count:
            piece = self.read(offset + done, min(count - done, COPY_PIECE), what=what)
            view, written = memoryview(piece), 0
            while written < len(view):
                written += os.pwrite(fd, view[written:], dst_offset + done + written)
            done += len(view)

    def _open(self) -> None:
        if self._handle is None:
            with self._lock:
                if self._handle is None:
                    self._handle = open(self.path, "rb", buffering=0)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
