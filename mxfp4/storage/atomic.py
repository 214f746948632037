"""Outputs that appear under their final name only when complete.

Work happens under a temporary name beside the destination (same filesystem, so the final rename is
atomic); any exception, KeyboardInterrupt included, deletes it. An existing destination is replaced
only with force, and only once the new output is whole. A lock file beside the destination makes a
second writer refuse while the first is at work (a lock left by a dead process is taken over).
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..errors import CheckpointError

COMMITTED: list[Path] = []
"""Outputs this process has completed (renamed into place), so an interrupt that comes later can be
reported truthfully: 'interrupted after X was completely written', not 'no output was written'."""


def _refuse_existing(path: Path, force: bool) -> None:
    if path.exists() and not force:
        raise CheckpointError(f"{path} already exists; pass force=True to replace it", parameter="force")


def _temporary_beside(path: Path, force: bool) -> Path:
    _refuse_existing(path, force)  # early, before any work; checked again under the lock
    if not path.parent.is_dir():
        raise CheckpointError(f"{path.parent} is not a directory; create it first")
    return path.with_name(f".{path.name}.partial-{os.getpid()}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def destination_lock(path: Path) -> Iterator[None]:
    """Hold .NAME.lock beside path (created exclusively, holding our pid) for the duration."""
    lock = path.with_name(f".{path.name}.lock")
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            break
        except FileExistsError:
            try:
                holder = int(lock.read_text().strip() or 0)
            except (OSError, ValueError):
                holder = 0
            if holder and holder != os.getpid() and _alive(holder):
                raise CheckpointError(
                    f"another process (pid {holder}) is writing {path}; wait for it to finish (or remove {lock} if it "
                    "is gone)"
                ) from None
            lock.unlink(missing_ok=True)  # stale: its writer died
    else:
        raise CheckpointError(f"could not take the lock {lock}")
    try:
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        yield
    finally:
        lock.unlink(missing_ok=True)


@contextmanager
def atomic_output(path: str | os.PathLike, *, force: bool = False) -> Iterator[Path]:
    """Yield a temporary file path; it becomes ``path`` when the block completes."""
    path = Path(path)
    temporary = _temporary_beside(path, force)
    with destination_lock(path):
        _refuse_existing(path, force)  # another writer may have finished meanwhile
        try:
            yield temporary
            os.replace(temporary, path)
            COMMITTED.append(path)
        except BaseException:
            if temporary.exists():
                temporary.unlink()
            elif path not in COMMITTED:  # interrupted just after the rename: the output is whole
                COMMITTED.append(path)
            raise


@contextmanager
def atomic_directory(path: str | os.PathLike, *, force: bool = False) -> Iterator[Path]:
    """Yield an empty temporary directory; it replaces ``path`` when the block completes."""
    path = Path(path)
    temporary = _temporary_beside(path, force)
    with destination_lock(path):
        _refuse_existing(path, force)
        shutil.rmtree(temporary, ignore_errors=True)
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        try:  # the directory is made inside the try: a signal landing just after mkdir still cleans up
            temporary.mkdir()
            yield temporary
            if path.exists():
                os.replace(path, old)  # the previous output steps aside only now
            os.replace(temporary, path)
            COMMITTED.append(path)
            _remove(old)
        except BaseException:
            _settle(temporary, path, old)
            raise


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink()


def _settle(temporary: Path, path: Path, old: Path) -> None:
    """After a failure or interrupt anywhere in atomic_directory: the new output either made it into
    place (then it counts as written) or is discarded, and a previous output set aside comes back."""
    if temporary.exists():  # the swap did not happen
        shutil.rmtree(temporary, ignore_errors=True)
        if old.exists() and not path.exists():
            os.replace(old, path)
    else:  # the new output is in place
        if path not in COMMITTED:
            COMMITTED.append(path)
        _remove(old)
