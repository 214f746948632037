"""Writing a checkpoint as safetensors shards from a list of jobs.

A job declares the output tensors it produces (name, dtype, shape) and then writes them, whole or one
expert at a time. Declaring first fixes every shard's header, the index and the total size before any
data is read, so free space is checked up front and memory holds one job's slice at a time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .pread import copy_pieces
from .safetensors_io import SafetensorsWriter, TensorEntry
from .store import INDEX_NAME


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

    def copy_part(self, name: str, byte_offset: int, extent) -> None:
        """Bytes stored elsewhere as they are (extent: file, offset, count) into tensor name, read straight into
        the output file in 64 MiB pieces (the progress bar moves with them)."""
        source, offset, count = extent
        for done, piece in copy_pieces(count):
            self._writers[name].copy_part(name, byte_offset + done, source, offset + done, piece)
            self._bar.update(piece)


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


def total_bytes(jobs: list[Job]) -> int:
    return sum(e.nbytes for job in jobs for e in job.entries)


def write_shards(
    out_dir: Path,
    jobs: list[Job],
    *,
    max_shard_size: int | None,
    metadata: dict[str, str],
    progress,
    stem: str = "model",
    index: bool = True,
) -> list[Path]:
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
        (out_dir / INDEX_NAME).write_text(
            json.dumps({"metadata": {"total_size": sum(e.nbytes for e in entries)}, "weight_map": weight_map}, indent=2)
            + "\n"
        )
    return paths
