"""Reading sources in bounded pieces: dense tensors in row chunks.

Every piece is read and transformed in turn on one thread, then handed to the output file, whose own thread
writes it (mxfp4.storage.output_file). No helper thread produces the next piece meanwhile: measured, it was
slower for every target (docs/design.md), since the C kernels already use every core and the kernel's own
readahead keeps sequential reads ahead of the reader; a helper only competes with the writer."""

from __future__ import annotations

import numpy as np

ROW_CHUNK_BYTES = 64 * 2**20  # dense tensors larger than this are read and written in row chunks


def row_ranges(read, itemsize: int | None = None) -> list[tuple[int, int]] | None:
    """Row ranges of about ROW_CHUNK_BYTES covering a Dense read, or None to read it whole (small, or
    the source cannot read rows)."""
    shape = read.shape
    per_row = int(np.prod(shape[1:], dtype=np.int64)) * (itemsize or 2) if len(shape) > 1 else 0
    if read.rows is None or per_row == 0 or per_row * shape[0] <= ROW_CHUNK_BYTES:
        return None
    step = max(1, ROW_CHUNK_BYTES // per_row)
    return [(a, min(a + step, shape[0])) for a in range(0, shape[0], step)]


def row_chunks(read, itemsize: int | None = None):
    """Yield a Dense read as consecutive row blocks of about ROW_CHUNK_BYTES."""
    ranges = row_ranges(read, itemsize)
    if ranges is None:
        yield read.load()
        return
    for a, b in ranges:
        yield read.rows(a, b)
