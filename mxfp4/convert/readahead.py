"""Reading sources in bounded pieces and overlapping the work: dense tensors in row chunks, the next
piece read ahead on a helper thread."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable

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
    """Yield a Dense read as consecutive row blocks of about ROW_CHUNK_BYTES, the next one read ahead."""
    ranges = row_ranges(read, itemsize)
    if ranges is None:
        yield read.load()
        return
    yield from prefetched(lambda i: read.rows(*ranges[i]), len(ranges))


def prefetched(produce: Callable[[int], object], count: int):
    """Yield produce(0), ..., produce(count - 1), computing item i + 1 on a helper thread while the
    caller consumes item i. Reads, the C kernels and writes all release the GIL, so reading and
    repacking the next expert overlaps with writing this one. produce(i + 2) starts only once the caller
    asks for item i + 1, so two buffers used in turn (i % 2) are never overwritten while in use."""
    if count <= 1:
        for i in range(count):
            yield produce(i)
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mxfp4-prefetch") as pool:
        pending = pool.submit(produce, 0)
        for i in range(count):
            item = pending.result()
            if i + 1 < count:
                pending = pool.submit(produce, i + 1)
            yield item
