"""Outputs that appear only when complete (mxfp4.storage.atomic): a file or directory is built under a temporary
name and renamed at the end; a failure leaves nothing new; an existing output is kept unless force, and then
replaced only once the new one is whole; a second writer is turned away."""

import subprocess
import sys

import pytest

from mxfp4.errors import CheckpointError
from mxfp4.storage.atomic import atomic_directory, atomic_output


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_a_file_appears_only_when_complete(tmp_path):
    target = tmp_path / "out.bin"
    with atomic_output(target) as temporary:
        temporary.write_bytes(b"abc")
        assert not target.exists() and temporary.parent == tmp_path
    assert target.read_bytes() == b"abc" and leftovers(tmp_path) == []


def test_a_failure_leaves_nothing_and_keeps_the_old_output(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError):
        with atomic_output(target) as temporary:
            temporary.write_bytes(b"half")
            raise RuntimeError("disk on fire")
    assert not target.exists() and leftovers(tmp_path) == []
    target.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_output(target, force=True) as temporary:
            temporary.write_bytes(b"new, half")
            raise KeyboardInterrupt
    assert target.read_bytes() == b"old" and leftovers(tmp_path) == []


def test_an_existing_output_needs_force(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "mine.txt").write_text("keep")
    with pytest.raises(CheckpointError, match="already exists; pass force=True") as refused:
        with atomic_directory(target):
            pass
    assert refused.value.parameter == "force" and (target / "mine.txt").read_text() == "keep"
    with atomic_directory(target, force=True) as temporary:
        (temporary / "new.txt").write_text("new")
        assert (target / "mine.txt").exists()  # the old output stays until the new one is whole
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"] and leftovers(tmp_path) == []


def test_a_directory_that_fails_midway_leaves_nothing(tmp_path):
    with pytest.raises(OSError):
        with atomic_directory(tmp_path / "out") as temporary:
            (temporary / "a.safetensors").write_bytes(b"x" * 100)
            raise OSError(28, "No space left on device")
    assert list(tmp_path.iterdir()) == []


def test_a_second_writer_is_turned_away_and_a_dead_ones_lock_is_taken(tmp_path):
    target = tmp_path / "out.bin"
    lock = tmp_path / ".out.bin.lock"
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock.write_text(str(other.pid))  # a live writer holds the destination
        with pytest.raises(CheckpointError, match=f"another process \\(pid {other.pid}\\) is writing"):
            with atomic_output(target):
                pass
    finally:
        other.kill()
        other.wait()
    with atomic_output(target) as temporary:  # its writer is gone: the lock is stale
        temporary.write_bytes(b"ok")
    assert target.read_bytes() == b"ok" and leftovers(tmp_path) == []
