"""A bounds-checked walk over a GGUF file's header before anything else reads it.

The gguf package's reader trusts its input: a string or array length of 2**60, a dimension product
that overflows, or tensor data past the end make it loop, allocate or misread. This walk checks every
length against the bytes that remain, every tensor's size with Python integers, and every tensor's data
against the file, so a hostile file costs a few reads and one clean error naming file (and tensor).

GGUF v2/v3 layout: 'GGUF', u32 version, u64 tensor count, u64 key/value count, the key/value pairs,
the tensor infos (name, u32 n_dims, u64 dims, u32 type, u64 offset), then data aligned to
general.alignment (default 32).
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

from ..errors import CheckpointError

# The GGUF spec's value type ids, as gguf.GGUFValueType numbers them (tests/storage/test_gguf_header.py holds
# them equal). Declared here so that checking a header does not import the gguf package (0.12 s), which a
# conversion that never touches GGUF would otherwise pay.
UINT8, INT8, UINT16, INT16, UINT32, INT32, FLOAT32, BOOL, STRING, ARRAY, UINT64, INT64, FLOAT64 = range(13)
SCALAR_FORMATS = {  # each scalar value type's struct format (its size follows; bool is one byte)
    UINT8: "B",
    INT8: "b",
    UINT16: "H",
    INT16: "h",
    UINT32: "I",
    INT32: "i",
    FLOAT32: "f",
    BOOL: "B",
    UINT64: "Q",
    INT64: "q",
    FLOAT64: "d",
}
SCALARS = {kind: struct.calcsize("<" + fmt) for kind, fmt in SCALAR_FORMATS.items()}  # value type -> bytes
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_ARRAY_DEPTH = 2


class _Walker:
    def __init__(self, data, path: Path):
        self.data, self.path, self.pos = data, path, 0

    def fail(self, what: str) -> CheckpointError:
        return CheckpointError(f"{self.path}: not a valid GGUF file: {what} (at byte {self.pos} of {len(self.data)})")

    def take(self, fmt: str):
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise self.fail("the file ends inside the header")
        value = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return value[0] if len(value) == 1 else value

    def string(self) -> str:
        length = self.take("<Q")
        if length > len(self.data) - self.pos:
            raise self.fail(f"a string claims {length} bytes, more than the file has left")
        raw = bytes(self.data[self.pos : self.pos + length])
        self.pos += length
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail("a string is not UTF-8") from None

    def value(self, kind: int, depth: int = 0, keep: bool = False):
        """The value of type ``kind`` at the cursor; arrays of fixed-size items are skipped (their count returned)
        unless ``keep``, then decoded as a list."""
        if kind in SCALARS:
            return self.take("<" + SCALAR_FORMATS[kind])
        if kind == STRING:
            return self.string()
        if kind == ARRAY:
            if depth >= MAX_ARRAY_DEPTH:
                raise self.fail("arrays nested too deeply")
            item, count = self.take("<I"), self.take("<Q")
            smallest = SCALARS.get(item, 8)  # a string or array item takes at least 8 bytes
            if item not in SCALARS and item not in (STRING, ARRAY):
                raise self.fail(f"unknown array item type {item}")
            if count * smallest > len(self.data) - self.pos:
                raise self.fail(f"an array claims {count} items, more than the file can hold")
            if item in SCALARS:
                if not keep:  # skip fixed-size items without decoding them
                    self.pos += count * smallest
                    return count
                fmt = "<" + SCALAR_FORMATS[item] * count
                values = list(struct.unpack_from(fmt, self.data, self.pos))
                self.pos += count * smallest
                return [bool(v) for v in values] if item == BOOL else values
            items = [self.value(item, depth + 1, keep) for _ in range(count)]
            return items if keep else count
        raise self.fail(f"unknown value type {kind}")


def is_gguf(path: Path) -> bool:
    """Whether a file starts with GGUF's magic (Ollama stores GGUF as extension-less blobs)."""
    with open(path, "rb") as f:
        return f.read(4) == b"GGUF"


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dims: tuple[int, ...]  # ggml order: innermost first
    type_id: int
    data_offset: int  # absolute, in the file
    nbytes: int
    type_field: int  # where the u32 type id sits in the file (test fixtures rewrite it)


@dataclass(frozen=True)
class GGUFHeader:
    fields: dict  # key -> value, arrays as lists
    tensors: dict[str, TensorInfo]  # in file order


def _type_size(kind: int, extra_types: dict[int, tuple[int, int]]) -> tuple[int, int, str]:
    """(block elements, block bytes, name) of a tensor type id."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    if kind in extra_types:
        block, size = extra_types[kind]
        return block, size, f"type {kind}"
    qtype = GGMLQuantizationType(kind)
    block, size = GGML_QUANT_SIZES[qtype]
    return block, size, qtype.name


def validate_gguf(path: str | Path, extra_types: dict[int, tuple[int, int]] | None = None) -> GGUFHeader:
    """Raise CheckpointError unless the file's header and tensor table are consistent with its size; return
    the header. extra_types: (block elements, block bytes) of type ids the gguf package does not know (Ollama's
    type 4 MXFP4)."""
    extra_types = extra_types or {}
    path = Path(path)
    with open(path, "rb") as f:
        size = f.seek(0, 2)
        if size < 24:
            raise CheckpointError(f"{path}: {size} bytes is too short for a GGUF file")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            w = _Walker(data, path)
            if w.take("<4s") != b"GGUF":
                raise CheckpointError(f"{path}: not a GGUF file (bad magic; big-endian GGUF is not supported either)")
            version = w.take("<I")
            if version not in (2, 3):
                raise CheckpointError(f"{path}: GGUF version {version} is not supported (2 and 3 are)")
            n_tensors, n_kv = w.take("<Q"), w.take("<Q")
            if n_kv * 12 > size or n_tensors * 32 > size:
                raise w.fail(f"{n_kv} keys and {n_tensors} tensors cannot fit in {size} bytes")
            alignment, fields = 32, {}
            for _ in range(n_kv):
                key = w.string()
                if key in fields:
                    raise w.fail(f"key {key!r} appears twice")
                kind = w.take("<I")
                value = w.value(kind, keep=True)
                fields[key] = value
                if key == "general.alignment":
                    if kind != 4 or not value or value & (value - 1):
                        raise w.fail(f"general.alignment must be a power of two (u32), got {value!r}")
                    alignment = value
            tensors, infos = [], []
            for _ in range(n_tensors):
                name = w.string()
                n_dims = w.take("<I")
                if not 1 <= n_dims <= MAX_DIMS:
                    raise w.fail(f"tensor {name!r} has {n_dims} dimensions (1 to {MAX_DIMS} allowed)")
                dims = [w.take("<Q") for _ in range(n_dims)]
                type_field = w.pos
                kind, offset = w.take("<I"), w.take("<Q")
                try:
                    block, type_size, type_name = _type_size(kind, extra_types)
                except (ValueError, KeyError):
                    raise w.fail(f"tensor {name!r} has unknown type {kind}") from None
                elements = 1
                for d in dims:
                    elements *= d  # Python integers: no overflow
                if dims[0] % block:
                    raise w.fail(
                        f"tensor {name!r}: first dimension {dims[0]} is not a multiple of {type_name}'s block of "
                        f"{block}"
                    )
                nbytes = elements // block * type_size
                if offset % alignment:
                    raise w.fail(f"tensor {name!r}: data offset {offset} is not aligned to {alignment}")
                tensors.append((name, offset, nbytes))
                infos.append((name, tuple(dims), kind, offset, nbytes, type_field))
            data_start = -(-w.pos // alignment) * alignment
            seen = set()
            for name, offset, nbytes in sorted(tensors, key=lambda t: t[1]):
                if name in seen:
                    raise CheckpointError(f"{path}: tensor {name!r} appears twice")
                seen.add(name)
                if data_start + offset + nbytes > size:
                    raise CheckpointError(
                        f"{path}: tensor {name!r} ({nbytes} bytes at offset {offset}) runs past the end of the file "
                        f"({size} bytes); the file is truncated or corrupt"
                    )
            ordered = sorted(tensors, key=lambda t: t[1])
            for (n0, o0, b0), (n1, o1, _) in zip(ordered, ordered[1:]):
                if o1 < o0 + b0:
                    raise CheckpointError(f"{path}: tensors {n0!r} and {n1!r} overlap")
    return GGUFHeader(
        fields,
        {
            name: TensorInfo(name, dims, kind, data_start + offset, nbytes, field)
            for name, dims, kind, offset, nbytes, field in infos
        },
    )
