"""Calibration and evaluation under torchrun (2 ranks, gloo on this CPU): the same bytes and figures as one
process, and a rank that dies leaves nothing behind and makes the job fail naming it."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mxfp4.testing.checkpoints import make_checkpoint

# 6 windows of 32: rank 0 takes windows 0-2, rank 1 windows 3-5; experts alternate between the ranks.
TOKENS = np.random.default_rng(1).integers(0, 370, size=6 * 32)
CALIBRATE = ["--to", "mxfp4", "--calibrate-context", "32"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _environment() -> dict:
    # The same thread count in every process: results must not hinge on it, but a difference would hide
    # behind a thread-count effect instead of showing the split's.
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def one_process(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mxfp4", *args], cwd=cwd, env=_environment(), capture_output=True, text=True
    )


def two_ranks(*args: str, cwd: Path, program: list[str] | None = None) -> subprocess.CompletedProcess:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    launcher += ["--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{_free_port()}"]
    return subprocess.run(
        [*launcher, *(program or ["-m", "mxfp4"]), *args],
        cwd=cwd,
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("torchrun")
    dense = make_checkpoint(root, "dense", dense=True, hidden_size=64, intermediate_size=96)
    np.save(root / "tokens.npy", TOKENS)
    return root, dense


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_two_ranks_write_the_one_process_bytes(work):
    root, dense = work
    args = ["convert", str(dense), "OUT", "--calibrate", "tokens.npy", *CALIBRATE, "--calibrate-samples", "6"]
    alone = one_process(*[a.replace("OUT", "alone") for a in args], cwd=root)
    assert alone.returncode == 0, alone.stderr
    ranks = two_ranks(*[a.replace("OUT", "ranks") for a in args], cwd=root)
    assert ranks.returncode == 0, ranks.stderr
    assert _files(root / "ranks") == _files(root / "alone")
    assert ranks.stdout.count("wrote") == 1  # rank 0 reports; rank 1 prints nothing
    # the same report but for its last column, each layer's seconds
    table = [line.rsplit(maxsplit=1)[0] for line in alone.stdout.splitlines() if not line.startswith("wrote")]
    assert table == [line.rsplit(maxsplit=1)[0] for line in ranks.stdout.splitlines() if not line.startswith("wrote")]
    assert table[0].split()[-1] == "ratio" and len(table) > 2


def test_two_ranks_evaluate_as_one_process(work):
    root, dense = work
    rounded = root / "rounded"
    assert one_process("convert", str(dense), str(rounded), "--to", "mxfp4", "--quiet", cwd=root).returncode == 0
    for command in (
        ["eval", "compare", str(dense), str(rounded), "--tokens", "tokens.npy", "--context", "16", "--json"],
        ["eval", "ppl", str(rounded), "--tokens", "tokens.npy", "--context", "24", "--stride", "8", "--json"],
    ):
        alone, ranks = one_process(*command, cwd=root), two_ranks(*command, cwd=root)
        assert alone.returncode == 0 and ranks.returncode == 0, alone.stderr + ranks.stderr
        assert json.loads(ranks.stdout) == json.loads(alone.stdout)  # equal, not close: the sums' order is fixed


def test_a_baseline_and_its_gate_under_two_ranks(work):
    root, dense = work
    made = two_ranks(
        "eval", "baseline", str(dense), "--tokens", "tokens.npy", "--context", "16", "--out", "q.json", cwd=root
    )
    assert made.returncode == 0, made.stderr
    alone = one_process("eval", "gate", str(dense), "--baseline", "q.json", "--json", cwd=root)
    gated = two_ranks("eval", "gate", str(dense), "--baseline", "q.json", "--json", cwd=root)
    assert gated.returncode == alone.returncode == 0, gated.stderr
    assert json.loads(gated.stdout) == json.loads(alone.stdout)


DYING_RANK = """
import os, signal
from mxfp4.calibrate import layerwise
calibrate = layerwise.CalibratedSource._calibrate
def _calibrate(self, layer):
    if layer == 2 and self.world.rank == 1:
        os.kill(os.getpid(), signal.SIGKILL)  # rank 1 dies mid-run, as if the machine lost it
    return calibrate(self, layer)
layerwise.CalibratedSource._calibrate = _calibrate
from mxfp4.cli import main
main()
"""


def test_a_rank_killed_mid_run_leaves_nothing(work, tmp_path):
    _, dense = work
    np.save(tmp_path / "tokens.npy", TOKENS)
    (tmp_path / "dying.py").write_text(DYING_RANK)
    before = set(tmp_path.iterdir())
    args = ["convert", str(dense), "out", "--calibrate", "tokens.npy", *CALIBRATE]
    run = two_ranks(*args, cwd=tmp_path, program=["dying.py"])
    assert run.returncode != 0
    assert set(tmp_path.iterdir()) == before  # no output, no temporary
    assert ": 1 (local_rank: 1)" in run.stderr  # torchrun names the dead rank
    # rank 0 either saw its peer go (the collective it waited in failed) or was stopped by torchrun first
    assert "error: rank 0 of 2: layer 2:" in run.stderr or "terminated: no output was written" in run.stderr


def test_commands_that_cannot_split_refuse_torchrun(work):
    root, dense = work
    plain = two_ranks("convert", str(dense), "plain", "--to", "mxfp4", cwd=root)
    assert plain.returncode != 0 and "--calibrate" in plain.stderr
    assert not (root / "plain").exists()
    verify = two_ranks("verify", str(dense), str(dense), cwd=root)
    assert verify.returncode != 0 and "runs in one process" in verify.stderr


def test_a_calibrated_merge_under_two_ranks_writes_the_one_process_bytes(tmp_path):
    trained = Path(__file__).resolve().parents[2] / "examples" / "tiny-gpt-oss-trained"
    args = ["merge-lora", str(trained / "mxfp4"), str(trained / "lora-docs"), "OUT", "--to", "mxfp4", "--quiet"]
    args += ["--calibrate", str(trained / "heldout.tokens"), "--calibrate-context", "64", "--calibrate-samples", "6"]
    alone = one_process(*[a.replace("OUT", "alone") for a in args], cwd=tmp_path)
    ranks = two_ranks(*[a.replace("OUT", "ranks") for a in args], cwd=tmp_path)
    assert alone.returncode == 0 and ranks.returncode == 0, alone.stderr + ranks.stderr
    assert _files(tmp_path / "ranks") == _files(tmp_path / "alone")
