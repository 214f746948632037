"""A file assembled from pieces given at any offset, written past the page cache (O_DIRECT) where the
filesystem takes it, in aligned windows sent to disk by a writer thread.

Why: converting means writing gigabytes once. Through the page cache every byte is copied by the kernel into
freshly allocated cache pages, a cost that varies widely on virtual machines whose freed memory goes back to
the host; with O_DIRECT the disk does the work, the CPU is left to the conversion, and a 61 GB output does not
push everything else out of memory (docs/design.md has the measurements, benchmarks/bench_output_file.py
makes them).

Every byte of the file is given exactly once (data, a copy from a source file, or zero() for padding);
close() checks it and names the first byte missing. With O_DIRECT, pieces land in page-aligned window
buffers of WINDOW bytes of the file; a complete window goes to the writer thread while the caller fills the
next. The converters give bytes nearly in file order, a few streams at a time (GGUF's gate and up tensors,
MLX's three expert tensors), so a few windows are open at once; past MAX_OPEN the least recently filled is
sent as it stands: its whole blocks now, its ragged edges kept as single blocks until their other bytes
arrive.

Where O_DIRECT is refused (tmpfs on older kernels, some FUSE and network filesystems: the open or a probe
write fails), each piece is written in place as it comes, by this thread, and copies go through the kernel
(copy_file_range): windows passed through the page cache by a second thread cost twice the CPU of that.
"""

from __future__ import annotations

import bisect
import mmap
import os
import queue
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from ..errors import CheckpointError

BLOCK = 4096  # O_DIRECT's unit of offset, length and memory address: 4 KiB suits 512-byte and 4Kn disks alike
WINDOW = 16 * 2**20
MAX_OPEN = 4  # windows being filled at once before the oldest is sent as it stands
IN_FLIGHT = 4  # complete windows queued for the writer thread; a run of them contiguous goes out as one write


def _aligned_buffer(nbytes: int) -> np.ndarray:
    """Zeroed, page-aligned memory (an anonymous map), as uint8."""
    return np.frombuffer(mmap.mmap(-1, nbytes), dtype=np.uint8)


def open_direct(path: Path) -> int | None:
    """path opened for writing with O_DIRECT, if the filesystem takes it: the open and one aligned block written
    at offset 0 (overwritten later) must both succeed. None where it does not."""
    if not hasattr(os, "O_DIRECT"):
        return None
    try:
        fd = os.open(path, os.O_WRONLY | os.O_DIRECT)
    except OSError:
        return None
    try:
        os.pwrite(fd, _aligned_buffer(BLOCK), 0)
    except OSError:
        os.close(fd)
        return None
    return fd


class Intervals:
    """Disjoint, sorted byte ranges [a, b), merged where they touch."""

    def __init__(self):
        self.starts: list[int] = []
        self.stops: list[int] = []
        self.total = 0

    def add(self, a: int, b: int) -> bool:
        """Add [a, b); False (and nothing added) if it overlaps a range already here."""
        i = bisect.bisect_right(self.starts, a)
        if (i and self.stops[i - 1] > a) or (i < len(self.starts) and self.starts[i] < b):
            return False
        self.total += b - a
        if i and self.stops[i - 1] == a:  # extends the range before it
            i -= 1
            self.stops[i] = b
        else:
            self.starts.insert(i, a)
            self.stops.insert(i, b)
        if i + 1 < len(self.starts) and self.starts[i + 1] == b:  # and meets the one after it
            self.stops[i] = self.stops.pop(i + 1)
            self.starts.pop(i + 1)
        return True

    def first_gap(self, a: int, b: int) -> int | None:
        """The first byte of [a, b) not covered, or None."""
        position = a
        for start, stop in zip(self.starts, self.stops):
            if start > position:
                break
            position = max(position, stop)
        return position if position < b else None

    def ranges(self) -> list[tuple[int, int]]:
        return list(zip(self.starts, self.stops))


class _Window:
    """WINDOW bytes of the file: which are given (covered), which sit in the buffer unsent (pending)."""

    __slots__ = ("start", "stop", "buffer", "covered", "pending")

    def __init__(self, start: int, stop: int):
        self.start, self.stop = start, stop
        self.buffer: np.ndarray | None = None
        self.covered = Intervals()
        self.pending = Intervals()


class _Seam:
    """One block whose bytes came from a window sent before it was complete."""

    __slots__ = ("start", "stop", "buffer", "have")

    def __init__(self, start: int, stop: int):
        self.start, self.stop = start, stop
        self.buffer = _aligned_buffer(BLOCK)
        self.have = 0


class OutputFile:
    """``size`` bytes at ``path`` (created or truncated), written as described in the module docstring.

    write(offset, data), zero(offset, count) and read_from(source, ...) give bytes; close() waits for the
    writer, checks that every byte was given, sets the size and fsyncs; abort() stops without checking.
    As a context manager, an exception aborts. ``direct``: whether O_DIRECT is in use (False: not asked for,
    or refused).
    """

    def __init__(self, path: str | os.PathLike, size: int, *, direct: bool = True, window: int = WINDOW):
        if window % BLOCK:
            raise ValueError(f"window must be a multiple of {BLOCK} bytes")
        self.path, self.size, self.window = Path(path), int(size), window
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        self._direct_fd = open_direct(self.path) if direct else None
        self.direct = self._direct_fd is not None
        self._windows: OrderedDict[int, _Window] = OrderedDict()  # by index; most recently filled last
        self._done: set[int] = set()  # windows whose every byte is given (and, with O_DIRECT, sent)
        self._seams: dict[int, _Seam] = {}
        self._given = 0
        self._free: queue.Queue = queue.Queue()
        self._buffers = 0
        self._jobs: queue.Queue = queue.Queue()
        self._error: BaseException | None = None
        self._closed = False
        self._writer = threading.Thread(target=self._write_jobs, name="mxfp4-output", daemon=True)
        if self.direct:
            self._writer.start()

    # -- giving bytes --------------------------------------------------------------------------------------

    def write(self, offset: int, data) -> None:
        """data (bytes-like or a numpy array, read as its raw bytes) at offset."""
        raw = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data
        raw = np.ascontiguousarray(raw).reshape(-1).view(np.uint8)

        def fill(view: np.ndarray, done: int) -> None:
            view[:] = raw[done : done + len(view)]

        self._fill(offset, raw.nbytes, fill, lambda: self._pwrite(self._fd, raw, offset))

    def zero(self, offset: int, count: int) -> None:
        """count zero bytes at offset (padding)."""
        self._fill(offset, count, lambda view, done: view.fill(0), lambda: self._pwrite(self._fd, bytes(count), offset))

    def read_from(self, source, source_offset: int, count: int, offset: int, *, what: str) -> None:
        """count bytes of ``source`` (a storage.pread.PositionedFile) from source_offset: read straight into the
        windows with O_DIRECT, else copied by the kernel."""
        self._fill(
            offset,
            count,
            lambda view, done: source.read_into(view, source_offset + done, what=what),
            lambda: source.copy_to(self._fd, source_offset, count, offset, what=what),
        )

    def _fill(self, offset: int, count: int, fill, write_in_place) -> None:
        """Account for [offset, offset + count) window by window (given once, within the file); with O_DIRECT
        ``fill`` each window's part of it, else ``write_in_place`` the whole."""
        self._raise_writer_error()
        if offset < 0 or count < 0 or offset + count > self.size:
            raise CheckpointError(f"internal: {count} bytes at {offset} overrun {self.path} ({self.size} bytes)")
        position, end = offset, offset + count
        while position < end:
            index = position // self.window
            if index in self._done:
                raise CheckpointError(f"internal: byte {position} of {self.path} given twice")
            w = self._windows.get(index)
            if w is None:
                start = index * self.window
                w = self._windows[index] = _Window(start, min(start + self.window, self.size))
            stop = min(end, w.stop)
            if not w.covered.add(position, stop):
                raise CheckpointError(f"internal: byte range [{position}, {stop}) of {self.path} given twice")
            if self.direct:
                if w.buffer is None:
                    w.buffer = self._take_buffer(index)
                fill(w.buffer[position - w.start : stop - w.start], position - offset)
                w.pending.add(position, stop)
                self._windows.move_to_end(index)
            self._given += stop - position
            if w.covered.total == w.stop - w.start:
                if self.direct:
                    self._send(w)
                del self._windows[index]
                self._done.add(index)
            position = stop
        if not self.direct:
            write_in_place()

    # -- windows, buffers, seams (O_DIRECT) ----------------------------------------------------------------

    def _take_buffer(self, index: int) -> np.ndarray:
        holding = [i for i, w in self._windows.items() if w.buffer is not None and i != index]
        if len(holding) >= MAX_OPEN:
            self._send(self._windows[holding[0]])  # the least recently filled, as it stands
        if self._free.empty() and self._buffers < MAX_OPEN + IN_FLIGHT:
            self._buffers += 1
            return _aligned_buffer(self.window)
        buffer = self._free.get()  # back pressure: wait for the writer to finish one
        self._raise_writer_error()
        return buffer

    def _is_edge(self, position: int) -> bool:
        return position % BLOCK == 0 or position == self.size

    def _send(self, w: _Window) -> None:
        """Queue w's pending bytes: whole blocks straight from its buffer, ragged edges into seams."""
        writes = []
        for a, b in w.pending.ranges():
            first = a if self._is_edge(a) else min(b, a + (-a % BLOCK))
            last = b if self._is_edge(b) else max(first, b - b % BLOCK)
            if a < first:
                self._to_seams(w, a, first)
            if first < last:
                padded = last + (-last % BLOCK)  # only the file's end is unaligned: its block goes out zero-padded
                w.buffer[last - w.start : padded - w.start] = 0
                writes.append((first, first - w.start, padded - first))
            if last < b:
                self._to_seams(w, last, b)
        self._jobs.put((w.buffer, writes, True))
        w.buffer, w.pending = None, Intervals()

    def _to_seams(self, w: _Window, a: int, b: int) -> None:
        while a < b:
            block = a // BLOCK
            seam = self._seams.get(block)
            if seam is None:
                seam = self._seams[block] = _Seam(block * BLOCK, min(block * BLOCK + BLOCK, self.size))
            stop = min(b, seam.stop)
            seam.buffer[a - seam.start : stop - seam.start] = w.buffer[a - w.start : stop - w.start]
            seam.have += stop - a
            if seam.have == seam.stop - seam.start:
                self._jobs.put((seam.buffer, [(seam.start, 0, BLOCK)], False))
                del self._seams[block]
            a = stop

    # -- the writer thread (O_DIRECT) ----------------------------------------------------------------------

    def _write_jobs(self) -> None:
        """Take the queued jobs, as many as are waiting (up to IN_FLIGHT), and write each run of them that
        is contiguous in the file with one call: when the disk is behind, writes grow from one window to
        several (one 64 MiB write took 1.8 s per 3.9 GB here where 16 MiB ones took 2.0 to 2.5 s)."""
        while True:
            batch = [self._jobs.get()]
            while batch[-1] is not None and len(batch) < IN_FLIGHT:
                try:
                    batch.append(self._jobs.get_nowait())
                except queue.Empty:
                    break
            last = batch[-1] is None
            jobs = batch[:-1] if last else batch
            if self._error is None:
                try:
                    self._write_runs([(o, buffer[s : s + n]) for buffer, writes, _ in jobs for o, s, n in writes])
                except BaseException as error:  # reported to the caller at its next call; the rest is skipped
                    self._error = error
            for buffer, _, reusable in jobs:
                if reusable and self._given < self.size:  # kept for the next window; a finished file lets go
                    self._free.put(buffer)
            if last:
                return

    def _write_runs(self, pieces: list[tuple[int, np.ndarray]]) -> None:
        """(file offset, bytes) pieces, in the order given; neighbours in the file go out as one pwritev."""
        run: list[np.ndarray] = []
        start = end = 0
        for offset, view in pieces + [(-1, None)]:
            if run and offset != end:
                self._pwritev(run, start)
                run = []
            if view is None:
                break
            if not run:
                start = end = offset
            run.append(view)
            end += len(view)

    def _pwritev(self, views: list[np.ndarray], offset: int) -> None:
        done = os.pwritev(self._direct_fd, views, offset) if hasattr(os, "pwritev") else 0
        for view in views:  # whatever a short write (or a system without pwritev) left, view by view
            if done < len(view):
                self._pwrite(self._direct_fd, view[done:], offset + done)
                done = len(view)
            done -= len(view)
            offset += len(view)

    @staticmethod
    def _pwrite(fd: int, data, offset: int) -> None:
        view, done = memoryview(data).cast("B"), 0
        while done < len(view):
            done += os.pwrite(fd, view[done:], offset + done)

    def _raise_writer_error(self) -> None:
        error = self._error
        if isinstance(error, OSError):  # as if this thread had written: the same errno, naming the file
            raise OSError(error.errno, error.strerror, str(self.path)) from error
        if error is not None:
            raise CheckpointError(f"{self.path}: writing failed: {error!r}") from error

    # -- finishing -----------------------------------------------------------------------------------------

    def _stop_writer(self) -> None:
        if self._writer.is_alive():
            self._jobs.put(None)
            self._writer.join()

    def _close_files(self) -> None:
        if self._direct_fd is not None:
            os.close(self._direct_fd)
        os.close(self._fd)
        self._closed = True

    def first_missing(self) -> int | None:
        """The first byte not given yet, or None when all are."""
        if self._given == self.size:
            return None
        for index in range(-(-self.size // self.window)):
            if index in self._done:
                continue
            w = self._windows.get(index)
            if w is None:
                return index * self.window
            gap = w.covered.first_gap(w.start, w.stop)
            if gap is not None:
                return gap
        return None

    def close(self) -> None:
        """Wait for the writer, check every byte was given, set the size, fsync."""
        if self._closed:
            return
        missing = self.first_missing()
        if missing is not None:
            self.abort()
            raise CheckpointError(f"internal: {self.path} was not written completely (byte {missing} missing)")
        self._stop_writer()
        try:
            self._raise_writer_error()
            os.ftruncate(self._fd, self.size)  # the last block went out zero-padded (and the probe is undone)
            os.fsync(self._fd)  # on disk before the caller renames it into place
        finally:
            self._close_files()

    def abort(self) -> None:
        if self._closed:
            return
        self._error = self._error or CheckpointError("aborted")
        self._stop_writer()
        self._close_files()

    def __enter__(self) -> "OutputFile":
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()
