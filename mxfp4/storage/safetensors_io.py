"""Reading safetensors headers safely and writing safetensors files one tensor at a time.

File layout (huggingface/safetensors): 8-byte little-endian header length N, N bytes of JSON
{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}, then the data;
offsets are relative to the end of the header. The writer knows every tensor's dtype and shape up front,
so it writes the header first and streams the data after it: memory holds one tensor at a time.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..dtypes import DTYPE_SIZES
from ..errors import CheckpointError
from .output_file import OutputFile

MAX_HEADER_BYTES = 100 * 1024 * 1024  # the safetensors library's own limit


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: str  # safetensors dtype string, e.g. "BF16"
    shape: tuple[int, ...]
    offset: int = -1  # absolute file offset of the first byte, when read from a file

    @property
    def nbytes(self) -> int:
        n = DTYPE_SIZES[self.dtype]
        for d in self.shape:
            n *= d
        return n


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def refuse_pickle(path: Path) -> None:
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise CheckpointError(
            f"{path}: pickle-based checkpoints can run arbitrary code when loaded, so mxfp4 never opens them; "
            f"convert it to safetensors with a tool and environment you trust"
        )


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _unique_keys(pairs):
    out = {}
    for key, value in pairs:
        if key in out:
            raise CheckpointError(f"tensor {key!r} appears twice")
        out[key] = value
    return out


def read_header(path: str | os.PathLike) -> tuple[list[TensorEntry], dict[str, str]]:
    """Validated tensor entries (in file order) and metadata, reading only the header.

    Checked before anything is allocated: the header length against the file size (and a 100 MiB cap),
    JSON syntax, duplicate names, dtypes, integer shapes and offsets, each tensor's byte count against
    its offsets, offsets inside the data section, and no two tensors overlapping.
    """
    path = Path(path)
    refuse_pickle(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise CheckpointError(f"{path}: {size} bytes is too short for a safetensors file (no header length)")
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len > MAX_HEADER_BYTES or 8 + header_len > size:
            raise CheckpointError(
                f"{path}: header length {header_len} does not fit in a file of {size} bytes; the file is truncated or "
                "not safetensors"
            )
        try:
            header = json.loads(f.read(header_len), object_pairs_hook=_unique_keys)
        except CheckpointError as error:
            raise CheckpointError(f"{path}: {error}") from None
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
            raise CheckpointError(
                f"{path}: header is not valid JSON ({type(error).__name__}: {str(error)[:200]})"
            ) from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise CheckpointError(f"{path}: __metadata__ must map strings to strings")
    entries, data_size, spans = [], size - 8 - header_len, []
    for name, info in header.items():
        if not isinstance(info, dict):
            raise CheckpointError(f"{path}: tensor {name!r} has a malformed header entry {str(info)[:100]!r}")
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
            raise CheckpointError(
                f"{path}: tensor {name!r} has shape {str(shape)[:100]}; expected a list of non-negative integers"
            )
        if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_int(o) for o in offsets):
            raise CheckpointError(
                f"{path}: tensor {name!r} has data_offsets {str(offsets)[:100]}; expected [begin, end] integers"
            )
        if not isinstance(dtype, str) or dtype not in DTYPE_SIZES:
            raise CheckpointError(f"{path}: tensor {name!r} has unknown dtype {str(dtype)[:40]!r}")
        begin, end = offsets
        entry = TensorEntry(name, dtype, tuple(shape), 8 + header_len + begin)
        if not (0 <= begin <= end <= data_size) or end - begin != entry.nbytes:
            raise CheckpointError(
                f"{path}: tensor {name!r} ({dtype} {list(shape)} = {entry.nbytes} bytes) has data offsets "
                f"[{begin}, {end}] that do not fit its size or the file's {data_size} data bytes"
            )
        entries.append((begin, entry))
        spans.append((begin, end, name))
    spans.sort()
    for (b0, e0, n0), (b1, _, n1) in zip(spans, spans[1:]):
        if b1 < e0:
            raise CheckpointError(f"{path}: tensors {n0!r} and {n1!r} overlap in the file")
    return [entry for _, entry in sorted(entries, key=lambda pair: pair[0])], dict(metadata)


class SafetensorsWriter:
    """Writes a safetensors file whose entries are declared up front.

    The header (and so every tensor's place) is fixed first; data may then arrive whole (``write``) or
    in parts at any byte offset within a tensor (``write_part``, e.g. one expert at a time). Closing
    checks that every declared byte was written exactly once.
    """

    def __init__(self, path: str | os.PathLike, entries: list[TensorEntry], metadata: dict[str, str] | None = None):
        self.path = Path(path)
        header: dict[str, object] = {"__metadata__": dict(metadata)} if metadata else {}
        self._places: dict[str, tuple[int, int]] = {}
        self._written: dict[str, int] = {}
        offset = 0
        for entry in entries:
            header[entry.name] = {
                "dtype": entry.dtype,
                "shape": list(entry.shape),
                "data_offsets": [offset, offset + entry.nbytes],
            }
            self._places[entry.name] = (offset, entry.nbytes)
            self._written[entry.name] = 0
            offset += entry.nbytes
        text = json.dumps(header, separators=(",", ":")).encode()
        text += b" " * (-len(text) % 8)  # data starts 8-byte aligned
        self._data_start = 8 + len(text)
        self._out = OutputFile(path, self._data_start + offset)
        try:
            self._out.write(0, struct.pack("<Q", len(text)) + text)
        except BaseException:  # no caller holds the writer yet to abort it
            self._out.abort()
            raise

    def _place(self, name: str, byte_offset: int, count: int) -> int:
        start, size = self._places[name]
        if byte_offset < 0 or byte_offset + count > size:
            raise CheckpointError(
                f"internal: {count} bytes at offset {byte_offset} overrun tensor {name!r} ({size} bytes)"
            )
        self._written[name] += count
        return self._data_start + start + byte_offset

    def write_part(self, name: str, byte_offset: int, array: np.ndarray) -> None:
        data = np.ascontiguousarray(array).view(np.uint8).reshape(-1)
        self._out.write(self._place(name, byte_offset, data.nbytes), data)

    def write(self, name: str, array: np.ndarray) -> None:
        self.write_part(name, 0, array)

    def copy_part(self, name: str, byte_offset: int, source, source_offset: int, count: int) -> None:
        """count bytes of ``source`` (a storage.pread.PositionedFile) from source_offset into tensor name at
        byte_offset, read straight into the output's buffers."""
        self._out.read_from(source, source_offset, count, self._place(name, byte_offset, count), what=name)

    def close(self) -> None:
        short = [n for n, (_, size) in self._places.items() if self._written[n] != size]
        if short:
            self._out.abort()
            raise CheckpointError(f"internal: tensor {short[0]!r} of {self.path} was not written completely")
        self._out.close()  # fsynced: on disk before the caller renames it into place

    def __enter__(self) -> "SafetensorsWriter":
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self.close()
        else:
            self._out.abort()
