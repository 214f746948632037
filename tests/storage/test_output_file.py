"""OutputFile: bytes given at any offset, in any order, land exactly where they were given; every byte must be
given once; O_DIRECT is used where the filesystem takes it and given up where it refuses; errors of the writer
thread reach the caller."""

import errno
import mmap
import os

import numpy as np
import pytest

from mxfp4.errors import CheckpointError
from mxfp4.storage import output_file
from mxfp4.storage.output_file import BLOCK, Intervals, OutputFile
from mxfp4.storage.pread import PositionedFile


def _pieces(rng, size: int, max_piece: int) -> list[tuple[int, int]]:
    """Consecutive (offset, length) pieces covering [0, size)."""
    cuts = sorted(set(rng.integers(1, size, size=max(1, size // max_piece)).tolist()) | {0, size})
    return list(zip(cuts[:-1], np.diff(cuts).tolist()))


def _fill(out: OutputFile, expected: np.ndarray, pieces, rng, source: PositionedFile | None = None, base=0) -> None:
    """Give each piece by one of the three ways: write, zero (for zero bytes) or read_from."""
    for offset, count in pieces:
        data = expected[offset : offset + count]
        way = rng.integers(3)
        if way == 0 and not data.any():
            out.zero(offset, count)
        elif way == 1 and source is not None:
            out.read_from(source, base + offset, count, offset, what="a test piece")
        else:
            out.write(offset, data)


@pytest.mark.parametrize("direct", [True, False])
@pytest.mark.parametrize("seed", range(6))
def test_pieces_in_any_order_land_where_given(tmp_path, monkeypatch, direct, seed):
    if direct and not _filesystem_takes_o_direct(tmp_path / "probe"):
        pytest.skip(O_DIRECT_REFUSED)
    rng = np.random.default_rng(seed)
    monkeypatch.setattr(output_file, "MAX_OPEN", int(rng.integers(1, 4)))  # few windows open: sends them ragged
    window = BLOCK * int(rng.integers(1, 4))
    size = int(rng.integers(1, 12)) * window + int(rng.integers(0, 3 * BLOCK))  # rarely a whole block
    expected = rng.integers(0, 256, size, dtype=np.uint8)
    expected[rng.integers(0, size, size // 3)] = 0
    source_path = tmp_path / "source"
    source_path.write_bytes(b"xyz" + expected.tobytes())
    pieces = _pieces(rng, size, max_piece=int(rng.integers(100, 3 * window)))
    if seed % 2:  # wholly shuffled
        pieces = [pieces[i] for i in rng.permutation(len(pieces))]
    else:  # two interleaved streams, as GGUF's gate and up tensors
        half = len(pieces) // 2
        pieces = [p for pair in zip(pieces[:half], pieces[half:]) for p in pair] + pieces[2 * half :]
    with OutputFile(tmp_path / "out", size, direct=direct, window=window) as out:
        _fill(out, expected, pieces, rng, PositionedFile(source_path), base=3)
        assert out._buffers <= output_file.MAX_OPEN + output_file.IN_FLIGHT
    assert out.direct == direct  # the windows and the writer thread were the ones under test
    assert (tmp_path / "out").read_bytes() == expected.tobytes()


def test_a_byte_missing_or_given_twice_is_refused(tmp_path):
    out = OutputFile(tmp_path / "a", 3 * BLOCK + 5, window=BLOCK)
    out.write(0, bytes(BLOCK))
    out.write(BLOCK + 100, bytes(2 * BLOCK - 95))
    with pytest.raises(CheckpointError, match=f"byte {BLOCK} missing"):
        out.close()
    out = OutputFile(tmp_path / "b", 2 * BLOCK, window=BLOCK)
    out.write(0, bytes(BLOCK + 10))
    with pytest.raises(CheckpointError, match="given twice"):
        out.write(BLOCK + 5, bytes(10))
    with pytest.raises(CheckpointError, match="given twice"):
        out.write(5, bytes(1))  # its window has already gone to disk
    with pytest.raises(CheckpointError, match="overrun"):
        out.write(2 * BLOCK - 1, bytes(2))
    out.abort()


def test_an_empty_file_and_a_file_smaller_than_a_block(tmp_path):
    with OutputFile(tmp_path / "empty", 0):
        pass
    assert (tmp_path / "empty").read_bytes() == b""
    with OutputFile(tmp_path / "small", 7) as out:
        out.write(3, b"defg")
        out.write(0, b"abc")
    assert (tmp_path / "small").read_bytes() == b"abcdefg"


O_DIRECT_REFUSED = "O_DIRECT unsupported: this filesystem refuses it (the in-place writer is tested instead)"


def _filesystem_takes_o_direct(path) -> bool:
    if not hasattr(os, "O_DIRECT"):
        return False
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_DIRECT)
    except OSError:
        return False
    try:
        os.pwrite(fd, mmap.mmap(-1, BLOCK), 0)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
        os.unlink(path)


def test_o_direct_is_kept_where_the_filesystem_takes_it(tmp_path):
    if not _filesystem_takes_o_direct(tmp_path / "probe"):
        pytest.skip(O_DIRECT_REFUSED)
    data = np.arange(5 * BLOCK + 123, dtype=np.uint8)
    with OutputFile(tmp_path / "out", data.nbytes, window=2 * BLOCK) as out:
        out.write(0, data)
    assert out.direct and (tmp_path / "out").read_bytes() == data.tobytes()


def test_o_direct_refused_at_open_or_at_the_probe_write_falls_back_to_writing_in_place(tmp_path, monkeypatch):
    data = np.random.default_rng(0).integers(0, 256, 3 * BLOCK + 9, dtype=np.uint8)
    real_open, real_pwrite = os.open, os.pwrite

    def open_refusing(path, flags, *args):
        if flags & getattr(os, "O_DIRECT", 0):
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", open_refusing)
    with OutputFile(tmp_path / "a", data.nbytes, window=BLOCK) as out:
        out.write(0, data[:100])
        out.read_from(PositionedFile(_source(tmp_path, data)), 100, data.nbytes - 100, 100, what="the rest")
    assert not out.direct and (tmp_path / "a").read_bytes() == data.tobytes()
    monkeypatch.setattr(os, "open", real_open)

    direct_fds = set()

    def open_noting(path, flags, *args):
        fd = real_open(path, flags, *args)
        if flags & getattr(os, "O_DIRECT", 0):
            direct_fds.add(fd)
        return fd

    def pwrite_refusing(fd, view, offset):
        if fd in direct_fds:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_pwrite(fd, view, offset)

    monkeypatch.setattr(os, "open", open_noting)
    monkeypatch.setattr(os, "pwrite", pwrite_refusing)
    with OutputFile(tmp_path / "b", data.nbytes, window=BLOCK) as out:
        out.write(0, data)
    assert not out.direct and (tmp_path / "b").read_bytes() == data.tobytes()


def _source(tmp_path, data) -> os.PathLike:
    path = tmp_path / "source"
    path.write_bytes(data.tobytes())
    return path


@pytest.mark.parametrize("direct", [True, False])
def test_short_writes_are_completed(tmp_path, monkeypatch, direct):
    if direct and not _filesystem_takes_o_direct(tmp_path / "probe"):
        pytest.skip(O_DIRECT_REFUSED)
    real_pwrite = os.pwrite

    def short_pwritev(fd, views, offset):  # one block of the first view (O_DIRECT writes whole blocks)
        return real_pwrite(fd, views[0][:BLOCK], offset)

    def short_pwrite(fd, view, offset):
        return real_pwrite(fd, view[: BLOCK if direct else 777], offset)

    monkeypatch.setattr(os, "pwritev", short_pwritev)
    monkeypatch.setattr(os, "pwrite", short_pwrite)
    data = np.random.default_rng(1).integers(0, 256, 9 * BLOCK + 5, dtype=np.uint8)
    with OutputFile(tmp_path / "out", data.nbytes, window=2 * BLOCK, direct=direct) as out:
        for offset in range(0, data.nbytes, 3000):
            out.write(offset, data[offset : offset + 3000])
    assert out.direct == direct and (tmp_path / "out").read_bytes() == data.tobytes()


def test_a_failing_write_reaches_the_caller(tmp_path, monkeypatch):
    def full(fd, view, offset):
        raise OSError(errno.ENOSPC, "No space left on device")

    if _filesystem_takes_o_direct(tmp_path / "probe"):  # the writer thread's error, at a later call or at close
        monkeypatch.setattr(os, "pwritev", full)
        out = OutputFile(tmp_path / "out", 64 * BLOCK, window=BLOCK)
        assert out.direct
        with pytest.raises(OSError, match="No space left") as raised:
            for offset in range(0, 64 * BLOCK, BLOCK):
                out.write(offset, bytes(BLOCK))
            out.close()
        assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(tmp_path / "out")
        out.abort()
        assert not out._writer.is_alive()
    monkeypatch.setattr(os, "pwrite", full)  # the probe fails too: written in place, the error comes at once
    out = OutputFile(tmp_path / "in-place", 64 * BLOCK, window=BLOCK)
    with pytest.raises(OSError, match="No space left") as raised:
        out.write(0, bytes(BLOCK))
    assert not out.direct and raised.value.errno == errno.ENOSPC
    out.abort()


def test_an_interrupt_stops_the_writer_thread(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with OutputFile(tmp_path / "out", 10 * BLOCK, window=BLOCK) as out:
            out.write(0, bytes(3 * BLOCK))
            raise KeyboardInterrupt
    assert not out._writer.is_alive()


def test_read_from_a_truncated_source_names_it(tmp_path):
    (tmp_path / "short").write_bytes(bytes(100))
    with pytest.raises(CheckpointError, match="short: file ended inside a tensor; it is truncated"):
        with OutputFile(tmp_path / "out", 200) as out:
            out.read_from(PositionedFile(tmp_path / "short"), 0, 200, 0, what="a tensor")


def test_intervals_merge_and_refuse_overlaps():
    ranges = Intervals()
    assert ranges.add(10, 20) and ranges.add(30, 40) and ranges.add(20, 30)
    assert ranges.ranges() == [(10, 40)] and ranges.total == 30
    assert not ranges.add(39, 41) and not ranges.add(5, 11) and not ranges.add(15, 16)
    assert ranges.add(0, 10) and ranges.first_gap(0, 50) == 40 and ranges.first_gap(0, 40) is None
    assert Intervals().first_gap(3, 9) == 3
