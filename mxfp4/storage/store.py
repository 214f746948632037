"""A directory of safetensors files (one file, or shards listed by an index), validated on open and
read one tensor, one expert or a few rows at a time.

Reads are positioned file reads straight into the destination buffer rather than memory maps: pages
of a mapped 13 GB checkpoint stay resident in the process once touched, so a mapped conversion's memory
grows with the source, while read() keeps it at the size of the slice in hand.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..dtypes import torch_dtype_of_code
from ..errors import CheckpointError
from .pread import PositionedFile
from .safetensors_io import TensorEntry, read_header

INDEX_NAME = "model.safetensors.index.json"


def _inside(root: Path, relative: str, index_path: Path) -> Path:
    """The shard path an index names, refused when it leaves the checkpoint directory."""
    try:
        if "\0" in relative or os.path.isabs(relative) or Path(relative).drive:
            raise CheckpointError(
                f"{index_path}: shard {relative[:200]!r} is an absolute path or holds a NUL byte; shards must lie "
                f"inside {root}"
            )
        candidate = root / relative
        resolved = candidate.resolve()
        if root.resolve() not in resolved.parents:
            raise CheckpointError(
                f"{index_path}: shard {relative[:200]!r} points outside the checkpoint directory {root}"
            )
        if not candidate.is_file():
            raise CheckpointError(f"{index_path}: shard {relative[:200]!r} is listed but missing from {root}")
    except (OSError, ValueError, RuntimeError) as error:  # name too long, symlink loop, ...
        raise CheckpointError(
            f"{index_path}: shard {relative[:200]!r} cannot be opened ({type(error).__name__}: {error})"
        ) from None
    return candidate


class TensorStore:
    """Tensor name -> (file, header entry) over one or more safetensors files, with lazy readers."""

    def __init__(
        self,
        files: dict[str, Path],
        entries: dict[str, TensorEntry],
        index_anomalies: list | None = None,
        metadata: dict[Path, dict[str, str]] | None = None,
    ):
        self.files = files
        self.entries = entries
        self.metadata = metadata or {}  # each file's __metadata__ (strings to strings), as its header holds it
        # (kind, detail) for what the index says wrongly but reading can do without: a name no shard holds
        # ("index-names-absent-tensor"), a tensor it leaves out ("tensor-missing-from-index")
        self.index_anomalies: list[tuple[str, str]] = index_anomalies or []
        self._readers: dict[Path, PositionedFile] = {}  # one per shard, opened on first read

    @classmethod
    def open_dir(cls, root: Path, pattern: str = "*.safetensors") -> "TensorStore":
        index_path = root / INDEX_NAME
        if index_path.is_file():
            try:
                index = json.loads(index_path.read_text())
                weight_map = index["weight_map"]
            except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError, RecursionError):
                raise CheckpointError(f"{index_path}: not a safetensors index (needs a 'weight_map' object)") from None
            if not isinstance(weight_map, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()
            ):
                raise CheckpointError(f"{index_path}: 'weight_map' must map tensor names to shard file names (strings)")
            shards = {rel: _inside(root, rel, index_path) for rel in sorted(set(weight_map.values()))}
        else:
            shards = {p.name: p for p in sorted(root.glob(pattern)) if p.is_file()}
            if not shards:
                raise CheckpointError(f"{root}: no {pattern} files and no {INDEX_NAME}")
            weight_map = None
        files, entries, metadata = {}, {}, {}
        for rel, path in shards.items():
            found, metadata[path] = read_header(path)
            for entry in found:
                if entry.name in entries:
                    raise CheckpointError(f"{path}: tensor {entry.name!r} is also in {files[entry.name]}")
                files[entry.name], entries[entry.name] = path, entry
        anomalies = []
        if weight_map is not None:
            for name, rel in weight_map.items():
                if name not in entries:  # a ghost: the reader of the model says whether it was needed
                    anomalies.append(("index-names-absent-tensor", f"{index_path}: {name!r} is in no shard"))
                elif files[name] != shards[rel]:
                    raise CheckpointError(
                        f"{index_path}: tensor {name!r} is mapped to {rel!r} but that shard does not hold it (it is in "
                        f"{files[name].name})"
                    )
            for name in sorted(set(entries) - set(weight_map)):
                detail = f"{index_path}: tensor {name!r} is in {files[name].name} but not in the index"
                anomalies.append(("tensor-missing-from-index", detail))
        return cls(files, entries, anomalies, metadata)

    def metadata_of(self, name: str) -> dict[str, str]:
        """The __metadata__ of the file holding tensor ``name``."""
        return self.metadata.get(self.files[name], {})

    def _read(self, name: str, start: int, count: int) -> np.ndarray:
        """count bytes of tensor name from byte start, as a fresh uint8 array (thread-safe)."""
        return self._reader(name).read(self.entries[name].offset + start, count, what=f"tensor {name!r}")

    def _reader(self, name: str) -> PositionedFile:
        """The positioned reader of the file holding tensor name (one per file, shared by threads)."""
        path = self.files[name]
        return self._readers.get(path) or self._readers.setdefault(path, PositionedFile(path))

    def _tensor(self, name: str, start: int, shape: tuple[int, ...]):
        import torch

        dtype = torch_dtype_of_code(self.entries[name].dtype)
        count = int(np.prod(shape, dtype=np.int64)) * torch.empty((), dtype=dtype).element_size()
        return torch.from_numpy(self._read(name, start, count)).view(dtype).reshape(shape)

    def get(self, name: str):
        """The whole tensor as a CPU torch tensor."""
        return self._tensor(name, 0, self.entries[name].shape)

    def get_rows(self, name: str, start: int, stop: int):
        """tensor[start:stop] along the first axis, reading only those rows."""
        shape = self.entries[name].shape
        row_bytes = self.entries[name].nbytes // shape[0]
        return self._tensor(name, start * row_bytes, (stop - start,) + tuple(shape[1:]))

    def extent(self, name: str, start: int = 0, count: int | None = None):
        """(file, absolute offset, bytes) of tensor name's stored bytes (from byte start): for copies that need
        not pass through memory."""
        entry = self.entries[name]
        return self._reader(name), entry.offset + start, entry.nbytes - start if count is None else count

    def first_bytes(self, name: str, index: int) -> np.ndarray:
        """tensor[index]'s raw bytes as uint8 numpy [row bytes] (no torch: copies and byte moves need none)."""
        entry = self.entries[name]
        row = entry.nbytes // entry.shape[0]
        return self._read(name, index * row, row)

    def get_first_rows(self, name: str, index: int, rows: int):
        """tensor[index, :rows] (at most the rows there are), reading only those bytes."""
        shape = self.entries[name].shape
        per_index = self.entries[name].nbytes // shape[0]
        return self._tensor(name, index * per_index, (min(rows, shape[1]),) + tuple(shape[2:]))

    def get_first(self, name: str, index: int):
        """tensor[index] along the first axis, reading only that slice."""
        return self.get_rows(name, index, index + 1)[0]

    def close(self) -> None:
        for reader in self._readers.values():
            reader.close()
        self._readers.clear()

    def source_bytes(self) -> int:
        return sum(e.nbytes for e in self.entries.values())
