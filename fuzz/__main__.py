"""python -m fuzz TARGET [--minutes N | --seconds N] [--engine atheris|hypothesis] [--out DIR]

Runs one fuzz target (fuzz/targets.py) for the given time and prints one summary line:
    TARGET: N executions in S s, K crashes (engine)
atheris (coverage-guided, libFuzzer) runs in a child process whose final statistics are parsed;
reproducers of any crash are written to --out. hypothesis runs in this process. Exit status 1 if
anything crashed.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

from .targets import TARGETS


def run_atheris(target: str, seconds: int, out: Path, rss_limit_mb: int = 4096) -> tuple[int, int]:
    from .targets import seeds

    # inputs up to 64 KiB, or a little over the largest seed so libFuzzer does not cut every seed short
    max_len = max([65536] + [len(seed) + 4096 for seed in seeds(target)])
    corpus = out / f"corpus-{target}"
    corpus.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "fuzz.atheris_entry",
        target,
        str(corpus),
        f"-max_total_time={seconds}",
        "-print_final_stats=1",
        f"-max_len={max_len}",
        f"-rss_limit_mb={rss_limit_mb}",
        "-timeout=60",
        f"-artifact_prefix={out}/{target}-",
        "-close_fd_mask=1",
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    log = result.stdout + result.stderr
    (out / f"{target}.log").write_text(log)
    executions = int(m.group(1)) if (m := re.search(r"stat::number_of_executed_units:\s*(\d+)", log)) else 0
    crashes = (
        len(list(out.glob(f"{target}-crash-*")))
        + len(list(out.glob(f"{target}-timeout-*")))
        + len(list(out.glob(f"{target}-oom-*")))
    )
    if result.returncode != 0 and crashes == 0:
        crashes = 1  # died without an artifact: still a failure
    return executions, crashes


def run_hypothesis(target: str, seconds: float | None = None, examples: int | None = None) -> tuple[int, int]:
    """(executions, crashes) of hypothesis-generated inputs to ``target``: for ``seconds`` (batches of 500 until the
    time is up), or exactly one batch of ``examples`` inputs (what a test asks for: a count, not a time, so a slow
    machine runs the same inputs)."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from .targets import run_one, seeds

    if (seconds is None) == (examples is None):
        raise ValueError("give exactly one of seconds and examples")
    for seed in seeds(target):
        run_one(target, seed)
    count = 0

    @settings(max_examples=examples or 500, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(
        st.binary(max_size=4096)
        | st.sampled_from(seeds(target)).flatmap(
            lambda s: st.binary(max_size=64).map(lambda p: s[: len(s) // 2] + p + s[len(s) // 2 + len(p) :])
        )
    )
    def check(data):
        nonlocal count
        count += 1
        run_one(target, data)

    deadline = time.monotonic() + (seconds or 0)
    while True:
        try:
            check()
        except Exception as error:  # hypothesis shrinks and re-raises the failure
            print(f"{target}: crash: {type(error).__name__}: {error}", file=sys.stderr)
            return count, 1
        if examples is not None or time.monotonic() >= deadline:
            break
    return count, 0


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m fuzz", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("target", choices=sorted(TARGETS))
    parser.add_argument("--minutes", type=float)
    parser.add_argument("--seconds", type=float)
    parser.add_argument("--engine", choices=["atheris", "hypothesis"], default="atheris")
    parser.add_argument("--out", type=Path, default=Path("fuzz-out"))
    parser.add_argument(
        "--rss-limit-mb", type=int, default=4096, help="libFuzzer's memory limit for the atheris child (default 4096)"
    )
    args = parser.parse_args()
    seconds = args.seconds if args.seconds is not None else (args.minutes or 1) * 60
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    if args.engine == "atheris":
        executions, crashes = run_atheris(args.target, max(1, int(seconds)), args.out, args.rss_limit_mb)
    else:
        executions, crashes = run_hypothesis(args.target, seconds)
    print(
        f"{args.target}: {executions} executions in {time.monotonic() - start:.0f} s, {crashes} crashes ({args.engine})"
    )
    sys.exit(1 if crashes else 0)


if __name__ == "__main__":
    main()
