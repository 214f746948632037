"""A GGUF header's bytes in one piece: magic, version, counts, the key/value pairs, the tensor infos and the
padding that aligns the data section (the layout gguf_check walks).

gguf's GGUFWriter packs every value, array items included, with its own struct call: 0.5 s for a vocabulary of
200k tokens and its merges, spent before any tensor data can be written (the data's offsets follow the
header). Here a string array is one join and a number array one numpy conversion; the bytes are those it would
write for the same key/values (a test compares them). Keys and tensors are given as plain data: key -> (value,
value type, item type of an array) and (name, element shape, ggml type, bytes) per tensor.
"""

from __future__ import annotations

import struct

import numpy as np

from .gguf_check import ARRAY, BOOL, FLOAT32, INT32, SCALAR_FORMATS, STRING, UINT8

MAGIC = 0x46554747  # "GGUF" read as a little-endian u32
VERSION = 3


def aligned(offset: int, alignment: int) -> int:
    return -(-offset // alignment) * alignment


def _string(value) -> bytes:
    raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    return struct.pack("<Q", len(raw)) + raw


def _item_type(value) -> int:
    """The type gguf gives an array whose first item is ``value`` (GGUFValueType.get_type)."""
    if isinstance(value, (str, bytes, bytearray)):
        return STRING
    if isinstance(value, list):
        return ARRAY
    if isinstance(value, float):
        return FLOAT32
    if isinstance(value, bool):
        return BOOL
    if isinstance(value, int):
        return INT32
    raise ValueError(f"GGUF has no value type for {type(value).__name__}")


def _array(items, item_type: int | None) -> bytes:
    if len(items) == 0:
        raise ValueError("GGUF arrays cannot be empty")
    if item_type is None:
        item_type = UINT8 if isinstance(items, bytes) else _item_type(items[0])
    head = struct.pack("<IQ", int(item_type), len(items))
    if item_type == STRING:
        return head + _string_items(_encoded(items))
    if item_type == ARRAY:
        return head + b"".join(_value(item, ARRAY, None) for item in items)
    if isinstance(items, (bytes, bytearray)):
        items = list(items)
    dtype = np.bool_ if item_type == BOOL else np.dtype("<" + SCALAR_FORMATS[int(item_type)])
    return head + np.asarray(items, dtype=dtype).tobytes()


def _encoded(items) -> list[bytes]:
    try:
        return list(map(str.encode, items))  # all str, the usual case: encoded without a Python step per item
    except TypeError:
        return [s.encode("utf-8") if isinstance(s, str) else bytes(s) for s in items]


def _string_items(raw: list[bytes]) -> bytes:
    """Each item as its u64 length then its bytes, built with numpy: one scatter of all the lengths and one of all
    the text, not a Python step per item (a vocabulary and its merges are ~650k items)."""
    sizes = np.fromiter(map(len, raw), dtype=np.int64, count=len(raw))
    text = np.frombuffer(b"".join(raw), dtype=np.uint8)
    out = np.empty(8 * len(raw) + text.size, dtype=np.uint8)
    fields = (8 * np.arange(len(raw)) + np.cumsum(sizes) - sizes)[:, None] + np.arange(8)  # each length's 8 bytes
    out[fields] = sizes.astype("<u8").view(np.uint8).reshape(-1, 8)
    is_text = np.ones(out.size, dtype=bool)
    is_text[fields] = False
    out[is_text] = text
    return out.tobytes()


def _value(value, value_type: int, sub_type: int | None) -> bytes:
    if value_type == STRING:
        return _string(value)
    if value_type == ARRAY:
        return _array(value, sub_type)
    if value_type == BOOL:
        return struct.pack("<?", bool(value))
    return struct.pack("<" + SCALAR_FORMATS[int(value_type)], value)


def pack_header(kv: dict, tensors: list[tuple[str, tuple[int, ...], int, int]], alignment: int) -> bytes:
    """The header for key/values ``kv`` (key -> (value, value type, array item type or None)) and tensor infos
    ``tensors`` ((name, element shape, ggml type, bytes), in file order), padded with zeros to ``alignment``:
    tensor data starts right after it, each tensor at its own aligned offset."""
    parts = [struct.pack("<IIQQ", MAGIC, VERSION, len(tensors), len(kv))]
    for key, (value, value_type, item_type) in kv.items():
        item = None if item_type is None else int(item_type)
        parts += [_string(key), struct.pack("<I", int(value_type)), _value(value, int(value_type), item)]
    offset = 0
    for name, shape, ggml_type, nbytes in tensors:
        dims = tuple(int(d) for d in reversed(tuple(shape)))
        parts += [_string(name), struct.pack(f"<I{len(dims)}QIQ", len(dims), *dims, int(ggml_type), offset)]
        offset += aligned(int(nbytes), alignment)
    header = b"".join(parts)
    return header + bytes(aligned(len(header), alignment) - len(header))
