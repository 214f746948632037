"""Writing a checkpoint as safetensors shards from a list of jobs.

A job declares the output tensors it produces (name, dtype, shape) and then writes them, whole or one
expert at a time. Declaring first fixes every shard's header, the index and the total size before any
data is read, so free space is checked up front and memory holds one job's slice at a time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np

from ..storage.safetensors_io import SafetensorsWriter, TensorEntry
from ..storage.store import INDEX_NAME

SAFETENSORS_DTYPES = {"bfloat16": "BF16", "float16": "F16", "float32": "F32"}


@lru_cache(maxsize=None)
def torch_dtype(code: str):
    """safetensors dtype string -> torch dtype."""
    import torch

    return {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32, "F64": torch.float64, "U8": torch.uint8,
            "I8": torch.int8, "I16": torch.int16, "I32": torch.int32, "I64": torch.int64, "BOOL": torch.bool,
            "U16": torch.uint16, "U32": torch.uint32, "U64": torch.uint64,
            "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2}[code]


@dataclass
class Job:
    entries: list[TensorEntry]
    run: Callable[["Outputs"], None]


class Outputs:
    """Routes each tensor's writes to the shard that holds it; counts bytes for the progress bar."""

    def __init__(self, writers: dict[str, SafetensorsWriter], bar):
        self._writers, self._bar = writers, bar

    def write_part(self, name: str, byte_offset: int, array: np.ndarray) -> None:
        self._writers[name].write_part(name, byte_offset, array)
        self._bar.update(array.nbytes)

    def write(self, name: str, array: np.ndarray) -> None:
        self.write_part(name, 0, array)


def plan_shards(entries: list[TensorEntry], max_shard_size: int | None) -> list[list[TensorEntry]]:
    if not max_shard_size:
        return [entries]
    shards, current, size = [], [], 0
    for entry in entries:
        if current and size + entry.nbytes > max_shard_size:
            shards.append(current)
            current, size = [], 0
        current.append(entry)
        size += entry.nbytes
    return shards + ([current] if current else [])


def shard_names(count: int, stem: str = "model") -> list[str]:
    if count == 1:
        return [f"{stem}.safetensors"]
    return [f"{stem}-{i:05d}-of-{count:05d}.safetensors" for i in range(1, count + 1)]


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


def bounded_parallel(run: Callable[[object], object], items: list, *, workers: int):
    """run(item) for every item on `workers` threads, at most 2 * workers in flight (bounded memory);
    yields results in order and re-raises the first failure."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mxfp4-write") as pool:
        pending = []
        for item in items:
            pending.append(pool.submit(run, item))
            if len(pending) >= 2 * workers:
                yield pending.pop(0).result()
        for future in pending:
            yield future.result()


def prefetched(produce: Callable[[int], object], count: int):
    """Yield produce(0), ..., produce(count - 1), computing item i + 1 on a helper thread while the
    caller consumes item i. Reads, the C kernels and writes all release the GIL, so reading and
    repacking the next expert overlaps with writing this one."""
    from concurrent.futures import ThreadPoolExecutor

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


def total_bytes(jobs: list[Job]) -> int:
    return sum(e.nbytes for job in jobs for e in job.entries)


def write_shards(out_dir: Path, jobs: list[Job], *, max_shard_size: int | None, metadata: dict[str, str], progress, stem: str = "model", index: bool = True) -> list[Path]:
    """Write jobs into out_dir as one file or several shards (+ model.safetensors.index.json)."""
    entries = [e for job in jobs for e in job.entries]
    shards = plan_shards(entries, max_shard_size)
    names = shard_names(len(shards), stem)
    writers, paths = {}, []
    try:
        for shard, file_name in zip(shards, names):
            writer = SafetensorsWriter(out_dir / file_name, shard, metadata)
            paths.append(out_dir / file_name)
            for entry in shard:
                writers[entry.name] = writer
        outputs = Outputs(writers, progress)
        for job in jobs:
            job.run(outputs)
    except BaseException:
        for writer in set(writers.values()):
            writer.__exit__(Exception, None, None)
        raise
    for writer in {id(w): w for w in writers.values()}.values():
        writer.close()
    if len(shards) > 1 and index:
        weight_map = {e.name: file_name for shard, file_name in zip(shards, names) for e in shard}
        (out_dir / INDEX_NAME).write_text(json.dumps({"metadata": {"total_size": sum(e.nbytes for e in entries)}, "weight_map": weight_map}, indent=2) + "\n")
    return paths
