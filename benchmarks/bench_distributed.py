"""One process against N ranks of torchrun on the same job: GPTQ calibration (`mxfp4 convert --calibrate`) and a
windowed comparison (`mxfp4 eval compare`), wall-clock per job, the speed-up, and whether the N-rank output is the
one-process output (bytes for calibration, every figure for the comparison).

Each job runs as its own command line, as a user runs it. The one-process runs are made twice: with every thread
this machine has, and with as many threads per process as each rank gets (torchrun gives each rank
OMP_NUM_THREADS=1 unless told otherwise), the run the ranks' output is compared with: LAPACK's blocked Cholesky,
inside GPTQ, rounds differently with a different thread count, so bytes are equal at equal threads per process.

    python benchmarks/bench_distributed.py --work DIR [--ranks 2] [--device cuda] [--shape small|20b-layer]

--device cuda: one GPU per rank (nccl), and the one-process run on one GPU.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from mxfp4.gpt_oss.presets import GPT_OSS_20B
from mxfp4.testing import synthetic

SHAPES = {
    # several layers of experts wide enough that GPTQ, not process start-up, dominates
    "small": dict(num_hidden_layers=4, num_local_experts=8, hidden_size=512, intermediate_size=512, head_dim=64),
    # one gpt-oss-20b layer (32 experts, hidden 2880): the shape issue 25's cost figure uses
    "20b-layer": {**GPT_OSS_20B, "num_hidden_layers": 1, "vocab_size": 2048},
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(args: list[str], *, ranks: int, threads: int, cwd: Path) -> tuple[float, str]:
    """Wall-clock seconds and stdout of `mxfp4 ARGS` in one process (ranks=1) or under torchrun."""
    command = [sys.executable, "-m", "mxfp4", *args]
    if ranks > 1:
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(ranks)]
        command += ["--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{_free_port()}", "-m", "mxfp4", *args]
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return seconds, done.stdout


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        h.update(path.name.encode() + path.read_bytes())
    return h.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="A scratch folder (checkpoints are written there).")
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="small")
    parser.add_argument("--windows", type=int, default=16, help="Calibration / evaluation windows of --context.")
    parser.add_argument("--context", type=int, default=128)
    options = parser.parse_args()

    work = options.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    config = synthetic.hf_config(**SHAPES[options.shape])
    dense = work / f"dense-{options.shape}"
    if not dense.exists():
        synthetic.write_checkpoint(dense, config, dense_experts=True)
    tokens = work / "tokens.npy"
    rng = np.random.default_rng(0)
    np.save(tokens, rng.integers(0, config["vocab_size"], size=options.windows * options.context))
    cores = os.cpu_count() or 1
    per_rank = max(1, cores // options.ranks) if options.device == "cpu" else 1

    def calibrate(out: str):
        return ["convert", str(dense), out, "--to", "mxfp4", "--calibrate", str(tokens), "--force", "--quiet"] + [
            "--calibrate-context",
            str(options.context),
            "--device",
            options.device,
        ]

    def evaluate():
        reference = work / "out-alone-all"
        return ["eval", "compare", str(dense), str(reference), "--tokens", str(tokens), "--json"] + [
            "--context",
            str(options.context),
            "--device",
            options.device,
        ]

    rows = []
    alone_all, _ = run(calibrate("out-alone-all"), ranks=1, threads=cores, cwd=work)
    alone_same, _ = run(calibrate("out-alone-same"), ranks=1, threads=per_rank, cwd=work)
    ranked, _ = run(calibrate("out-ranks"), ranks=options.ranks, threads=per_rank, cwd=work)
    equal = digest(work / "out-ranks") == digest(work / "out-alone-same")
    rows.append(["calibrate (convert --calibrate)", alone_all, alone_same, ranked, "bytes " + str(equal).lower()])
    alone_all, _ = run(evaluate(), ranks=1, threads=cores, cwd=work)
    alone_same, expected = run(evaluate(), ranks=1, threads=per_rank, cwd=work)
    ranked, got = run(evaluate(), ranks=options.ranks, threads=per_rank, cwd=work)
    equal = json.loads(got) == json.loads(expected)
    rows.append(["evaluate (eval compare)", alone_all, alone_same, ranked, "figures " + str(equal).lower()])

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "")
    print(
        f"machine: {cpu or platform.machine()}, {cores} cores; device {options.device}; "
        f"shape {options.shape}; {options.windows} windows of {options.context} tokens"
    )
    header = (
        f"{'job':<32} {'1 process, ' + str(cores) + ' thr':>18} {'1 process, ' + str(per_rank) + ' thr':>18} "
        f"{str(options.ranks) + ' ranks x ' + str(per_rank) + ' thr':>18} {'speed-up':>9}  same as 1 process"
    )
    print(header)
    for job, alone_all, alone_same, ranked, equal in rows:
        print(
            f"{job:<32} {alone_all:>16.1f} s {alone_same:>16.1f} s {ranked:>16.1f} s {alone_all / ranked:>8.2f}x  "
            f"{equal}"
        )


if __name__ == "__main__":
    main()
