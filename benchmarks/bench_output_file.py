"""Writing gigabytes to disk: through the page cache (what cp does) against mxfp4's OutputFile.

    python benchmarks/bench_output_file.py --work /big/disk/dir              # 4 GiB, 5 alternating rounds
    python benchmarks/bench_output_file.py --work DIR --gib 8 --rounds 3

Each round writes the same bytes from the same hot 16 MiB buffer three ways, in turn (each round starting
with the next), each timed until fsync returns: pwrite through the page cache; OutputFile (O_DIRECT where
the filesystem takes it); and OutputFile told not to use O_DIRECT (each piece written in place, as where a
filesystem refuses it). It prints every round, the medians, and the median of each round's ratio to the
page-cache write (the disk's speed drifts, so each round is its own baseline), with the CPU seconds spent.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from mxfp4.storage.output_file import OutputFile

PIECE = 16 * 2**20


def page_cache(path: Path, size: int, data: np.ndarray) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for offset in range(0, size, PIECE):
            view, done = memoryview(data[: min(PIECE, size - offset)]), 0
            while done < len(view):
                done += os.pwrite(fd, view[done:], offset + done)
        os.fsync(fd)
    finally:
        os.close(fd)


def output_file(path: Path, size: int, data: np.ndarray, direct: bool) -> None:
    with OutputFile(path, size, direct=direct) as out:
        for offset in range(0, size, PIECE):
            out.write(offset, data[: min(PIECE, size - offset)])


def timed(write) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one write, from a synced start."""
    os.sync()
    cpu, start = os.times(), time.perf_counter()
    write()
    after = os.times()
    return time.perf_counter() - start, (after.user - cpu.user) + (after.system - cpu.system)


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="a directory on the disk to measure")
    parser.add_argument("--gib", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    size = int(args.gib * 2**30)
    data = np.random.default_rng(0).integers(0, 256, PIECE, dtype=np.uint8)
    path = args.work / "bench_output_file.tmp"
    ways = {
        "page cache (as cp)": lambda: page_cache(path, size, data),
        "OutputFile": lambda: output_file(path, size, data, direct=True),
        "OutputFile, no O_DIRECT": lambda: output_file(path, size, data, direct=False),
    }
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in ways}
    with OutputFile(args.work / "probe.tmp", 1) as probe:
        probe.write(0, b"x")
    print(f"{args.gib:g} GiB to {args.work}; O_DIRECT {'taken' if probe.direct else 'refused'} there")
    (args.work / "probe.tmp").unlink()
    try:
        names = list(ways)
        for round_ in range(args.rounds):
            # Each round starts with the next way: on a VM that hands freed memory back to its host, a page-cache
            # write right after another one's file was deleted reuses still-backed pages and runs several times
            # faster than one that follows a pause; rotating spreads that over every way.
            for name in names[round_ % 3 :] + names[: round_ % 3]:
                results[name].append(timed(ways[name]))
                path.unlink()
            print(f"round {round_ + 1}: " + ", ".join(f"{n} {r[-1][0]:.2f} s" for n, r in results.items()), flush=True)
    finally:
        path.unlink(missing_ok=True)
    base = [wall for wall, _ in results["page cache (as cp)"]]
    print(f"{'':26s} {'median s':>9s} {'GB/s':>6s} {'CPU s':>6s} {'vs page cache (paired)':>23s}")
    for name, runs in results.items():
        walls = [wall for wall, _ in runs]
        paired = median([w / b for w, b in zip(walls, base)])
        print(
            f"{name:26s} {median(walls):9.2f} {size / median(walls) / 1e9:6.2f} {median([c for _, c in runs]):6.2f} "
            f"{paired:22.2f}x"
        )


if __name__ == "__main__":
    main()
