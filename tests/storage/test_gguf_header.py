"""pack_header against the gguf package's own GGUFWriter: the same key/values and tensor infos give the same
bytes, for every value type gguf writes (scalars, strings, typed and inferred arrays, nested arrays, bytes)."""

import gguf
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mxfp4.storage.gguf_check import validate_gguf
from mxfp4.storage.gguf_header import pack_header

T = gguf.GGUFValueType


def written_by_gguf(path, fill) -> bytes:
    writer = gguf.GGUFWriter(path, "gpt-oss")
    fill(writer)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    raw = path.read_bytes()
    align = writer.data_alignment
    return raw + bytes(-len(raw) % align), writer


def plain(writer):
    """What a GGUFWriter collected, in pack_header's plain form (read here only to compare with it)."""
    kv = {key: (v.value, v.type, v.sub_type) for key, v in writer.kv_data[0].items()}
    tensors = [(name, info.shape, info.dtype, info.nbytes) for name, info in writer.tensors[0].items()]
    return kv, tensors


def fill_every_type(writer):
    writer.add_uint8("t.u8", 7)
    writer.add_int8("t.i8", -7)
    writer.add_uint16("t.u16", 65535)
    writer.add_int16("t.i16", -300)
    writer.add_uint32("t.u32", 2**32 - 1)
    writer.add_int32("t.i32", -(2**31))
    writer.add_float32("t.f32", 0.1)
    writer.add_uint64("t.u64", 2**64 - 1)
    writer.add_int64("t.i64", -(2**63))
    writer.add_float64("t.f64", 1e-300)
    writer.add_bool("t.bool", True)
    writer.add_string("t.str", "héllo ✓")
    writer.add_array("t.strings", ["a", "", "ü" * 70, "\x00x"])
    writer.add_array("t.ints", [1, -2, 3])
    writer.add_array("t.floats", [0.5, -1.25])
    writer.add_array("t.bools", [True, False, True])
    writer.add_array("t.nested", [[1, 2], ["x", "y"]])
    writer.add_key_value("t.bytes", b"\x00\xff\x10", T.ARRAY)
    writer.add_key_value("t.typed", [1, 2, 3], T.ARRAY, sub_type=T.UINT16)
    writer.add_tensor_info("a.weight", (3, 64), np.dtype(np.float32), 3 * 64 * 4)
    writer.add_tensor_info(
        "b.mxfp4", (5, 2, 17), np.dtype(np.uint8), 5 * 2 * 17, raw_dtype=gguf.GGMLQuantizationType.MXFP4
    )
    writer.add_tensor_info("c.bias", (7,), np.dtype(np.float32), 28)


def test_every_value_type_packs_as_gguf_writes_it(tmp_path):
    want, writer = written_by_gguf(tmp_path / "a.gguf", fill_every_type)
    got = pack_header(*plain(writer), writer.data_alignment)
    assert got == want
    header = tmp_path / "b.gguf"
    header.write_bytes(got + bytes(3 * 64 * 4 + 4 + 5 * 2 * 17 + 28 + 128))
    info = validate_gguf(header)  # our own walker reads it back: every tensor, in order
    assert list(info.tensors) == ["a.weight", "b.mxfp4", "c.bias"]


@settings(max_examples=25, deadline=None)
@given(
    tokens=st.lists(st.text(max_size=12), min_size=1, max_size=40),
    scores=st.lists(st.floats(width=32, allow_nan=False), min_size=1, max_size=40),
    alignment=st.sampled_from([8, 32, 64]),
)
def test_vocabulary_like_arrays_pack_as_gguf_writes_them(tmp_path_factory, tokens, scores, alignment):
    def fill(writer):
        writer.add_uint32("general.alignment", alignment)
        writer.data_alignment = alignment
        writer.add_token_list(tokens)
        writer.add_token_scores(scores)
        writer.add_token_types([1] * len(tokens))
        writer.add_tensor_info("x", (len(tokens), 4), np.dtype(np.float32), len(tokens) * 16)

    want, writer = written_by_gguf(tmp_path_factory.mktemp("h") / "v.gguf", fill)
    assert pack_header(*plain(writer), alignment) == want


def test_an_empty_array_is_refused_like_gguf_does():
    with pytest.raises(ValueError, match="empty"):
        pack_header({"k": ([], T.ARRAY, None)}, [], 32)


def test_the_value_type_ids_are_ggufs():
    from mxfp4.storage import gguf_check

    for kind in T:
        assert getattr(gguf_check, kind.name) == int(kind), kind.name
