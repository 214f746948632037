"""Bytes that move unchanged are read straight into the output's windows where it is written with O_DIRECT;
where it is written in place they are copied by the kernel (copy_file_range), or where that is refused by read
and pwrite: the same files every way."""

import errno
import os
from pathlib import Path

import pytest

from mxfp4.convert import convert
from mxfp4.storage import output_file
from mxfp4.storage.pread import PositionedFile
from mxfp4.testing.checkpoints import all_tensors, same_tensors

TINY = Path(__file__).resolve().parents[2] / "examples" / "tiny-gpt-oss"


def test_copy_to_moves_the_bytes_and_refuses_a_short_file(tmp_path):
    src = tmp_path / "src"
    src.write_bytes(bytes(range(256)) * 1000)
    with open(tmp_path / "dst", "wb") as out:
        out.truncate(300_000)
        PositionedFile(src).copy_to(out.fileno(), 1000, 200_000, 5000, what="a test range")
    data = (tmp_path / "dst").read_bytes()
    assert data[5000:205_000] == src.read_bytes()[1000:201_000] and data[:5000] == bytes(5000)
    with open(tmp_path / "dst", "r+b") as out, pytest.raises(Exception, match="truncated"):
        PositionedFile(src).copy_to(out.fileno(), 255_000, 2000, 0, what="past the end")


@pytest.mark.parametrize("to", ["mxfp4", "original", "gguf", "mlx"])
def test_conversions_are_the_same_without_copy_file_range(tmp_path, monkeypatch, to):
    suffix = ".gguf" if to == "gguf" else ""
    convert(TINY, tmp_path / f"direct{suffix}", to=to)  # O_DIRECT where this filesystem takes it
    monkeypatch.setattr(output_file, "open_direct", lambda path: None)  # written in place from here on
    calls = []
    real = getattr(os, "copy_file_range", None)

    def counting(*args):
        calls.append(args[2])
        return real(*args)

    if real is not None:
        monkeypatch.setattr(os, "copy_file_range", counting)
    convert(TINY, tmp_path / f"kernel{suffix}", to=to)
    if real is not None:
        assert sum(calls) > 0  # the embeddings at least went through the kernel

    def refused(*args):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "copy_file_range", refused, raising=False)
    convert(TINY, tmp_path / f"fallback{suffix}", to=to)
    if to == "gguf":
        from gguf import GGUFReader

        readers = [GGUFReader(tmp_path / f"{way}.gguf") for way in ("direct", "kernel", "fallback")]
        a, b, c = [[(t.name, bytes(t.data)) for t in r.tensors] for r in readers]
        assert a == b == c
    else:
        assert same_tensors(all_tensors(tmp_path / "kernel"), all_tensors(tmp_path / "fallback"))
        assert same_tensors(all_tensors(tmp_path / "direct"), all_tensors(tmp_path / "kernel"))
