"""Conversions that are interrupted, run out of disk, or race each other, as real processes:
the destination holds the complete previous state or nothing new, no temporary or lock file is left,
the source is byte-identical to before, and the message says what happened."""

import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time

import pytest

from mxfp4.convert.verify import verify
from mxfp4.testing.checkpoints import make_checkpoint, tree_digest

# Big enough that a conversion to bf16 takes a few seconds here (8 experts, width 1024: ~200 MB out).
MEDIUM = dict(
    num_hidden_layers=4,
    num_local_experts=8,
    hidden_size=1024,
    intermediate_size=1024,
    head_dim=64,
    num_attention_heads=8,
    num_key_value_heads=2,
)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("src"), **MEDIUM)


def start(src, dst, *extra, limit_bytes=None):
    def limit():
        # A terminal delivers Ctrl-C; a process started from a background job may inherit SIGINT ignored
        # (and keep it across exec), so give the child the default, as a terminal session would have.
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        if limit_bytes is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return subprocess.Popen(
        [sys.executable, "-m", "mxfp4.cli", "convert", str(src), str(dst), "--to", "bf16", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=limit,
    )


def leftovers(directory):
    return sorted(
        p.name for p in directory.iterdir() if ".partial-" in p.name or p.name.endswith(".lock") or ".old-" in p.name
    )


@pytest.mark.parametrize("sig, code, word", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")])
def test_signal_at_random_points(source, tmp_path, sig, code, word):
    before = tree_digest(source)
    rng = random.Random(sig)
    started = time.monotonic()  # an uninterrupted run sets the time scale (the machine's load varies)
    assert start(source, tmp_path / "timing").wait(timeout=120) == 0
    whole = time.monotonic() - started
    shutil.rmtree(tmp_path / "timing")
    # Three moments inside the conversion's second half (after start-up), three anywhere.
    fractions = [rng.uniform(0.55, 0.9) for _ in range(3)] + [rng.uniform(0.1, 1.2) for _ in range(3)]
    outcomes = []
    delays = sorted(f * whole for f in fractions)
    extra = [rng.uniform(0.6, 0.8) * whole for _ in range(6)]  # used only until one lands mid-conversion
    i = 0
    while delays or (word not in outcomes and extra):
        delay = delays.pop(0) if delays else extra.pop(0)
        dst = tmp_path / f"out{i}"
        i += 1
        process = start(source, dst)
        time.sleep(delay)
        process.send_signal(sig)
        _, err = process.communicate(timeout=120)
        if process.returncode == 0:  # it finished before the signal: the output must be whole
            assert verify(source, dst).ok
            outcomes.append("finished")
        elif process.returncode == -sig:  # killed while Python was still starting, before any output existed
            assert not dst.exists(), outcomes
            outcomes.append("killed at start-up")
        elif "was completely written" in err:  # the signal came after the output was renamed into place
            assert process.returncode == code and f"{word} after {dst} was completely written" in err
            assert verify(source, dst).ok
            outcomes.append(f"{word} after the output was complete")
        else:
            assert process.returncode == code and f"{word}: no output was written" in err, (
                process.returncode,
                err[-500:],
                outcomes,
            )
            assert not dst.exists(), outcomes
            outcomes.append(word)
        assert leftovers(tmp_path) == [], outcomes
    assert tree_digest(source) == before
    assert word in outcomes, outcomes  # at least one signal landed mid-conversion


def test_disk_full_mid_write_leaves_nothing(source, tmp_path):
    before = tree_digest(source)
    process = start(source, tmp_path / "out", limit_bytes=20 * 2**20)  # the output needs ~200 MB
    _, err = process.communicate(timeout=120)
    assert process.returncode == 1 and "File too large" in err and "the output was not written" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    assert tree_digest(source) == before


def test_disk_full_while_replacing_keeps_the_previous_output(source, tmp_path):
    dst = tmp_path / "out"
    assert start(source, dst).wait(timeout=120) == 0
    previous = tree_digest(dst)
    process = start(source, dst, "--force", limit_bytes=20 * 2**20)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 1 and "File too large" in err
    assert tree_digest(dst) == previous and leftovers(tmp_path) == []


def test_two_writers_to_one_destination(source, tmp_path):
    dst = tmp_path / "out"
    first = start(source, dst)
    deadline = time.monotonic() + 60  # past start-up (slow on a loaded machine): the first holds the lock
    while not (tmp_path / ".out.lock").exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert (tmp_path / ".out.lock").exists(), "the first conversion never took the lock"
    second = start(source, dst)
    _, err2 = second.communicate(timeout=120)
    _, err1 = first.communicate(timeout=120)
    assert first.returncode == 0, err1
    assert second.returncode == 1 and ("another process" in err2 or "already exists" in err2), err2
    assert verify(source, dst).ok and leftovers(tmp_path) == []


def test_stale_lock_from_a_dead_process_is_taken_over(source, tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / ".out.lock").write_text(str(dead.pid))
    assert start(source, tmp_path / "out").wait(timeout=120) == 0
    assert leftovers(tmp_path) == []


def test_lock_of_a_live_process_is_respected(source, tmp_path):
    (tmp_path / ".out.lock").write_text(str(os.getppid()))  # a process that is certainly alive
    process = start(source, tmp_path / "out")
    _, err = process.communicate(timeout=120)
    assert process.returncode == 1 and f"another process (pid {os.getppid()}) is writing" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("step", [1, 2])
def test_interrupt_inside_the_swap_restores_the_previous_output(tmp_path, monkeypatch, step):
    # An interrupt between "previous output steps aside" and "new output moves in" (step 1), or just
    # after the new output moved in (step 2): the previous output comes back, or the new one counts.
    from mxfp4.storage import atomic

    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("previous")
    calls = {"n": 0}
    real = os.replace

    def replace(a, b):
        real(a, b)
        calls["n"] += 1
        if calls["n"] == step:
            raise KeyboardInterrupt

    monkeypatch.setattr(atomic.os, "replace", replace)
    monkeypatch.setattr(atomic, "COMMITTED", [])
    with pytest.raises(KeyboardInterrupt):
        with atomic.atomic_directory(out, force=True) as temporary:
            (temporary / "new.txt").write_text("new")
    monkeypatch.setattr(atomic.os, "replace", real)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["out"]  # no .partial, .old or .lock left
    if step == 1:
        assert (out / "old.txt").read_text() == "previous" and atomic.COMMITTED == []
    else:
        assert (out / "new.txt").read_text() == "new" and atomic.COMMITTED == [out]


HELD_SIGNAL_SCRIPT = """
import os, signal, sys, time
sys.path.insert(0, sys.argv[1])
from mxfp4.cli import signals as cli
cli.install_signal_handlers()
try:
    import signals_itself  # sends the signal from inside its own import, then finishes importing
    time.sleep(5)
    print("never raised")
except cli.Terminated:
    print("Terminated" if signals_itself.finished else "raised inside the import")
except KeyboardInterrupt:
    print("KeyboardInterrupt" if signals_itself.finished else "raised inside the import")
"""


@pytest.mark.parametrize("sig, raised", [(signal.SIGTERM, "Terminated"), (signal.SIGINT, "KeyboardInterrupt")])
def test_signal_during_an_import_is_raised_once_the_import_is_over(tmp_path, sig, raised):
    # Raising inside an import that C++ code started (torch's) aborts the process: the CLI holds it back.
    (tmp_path / "signals_itself.py").write_text(
        f"import os, time\nos.kill(os.getpid(), {int(sig)})\ntime.sleep(0.3)\nfinished = True\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", HELD_SIGNAL_SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert result.stdout.strip() == raised, (result.stdout, result.stderr)
