"""Shared timing for the benchmark scripts (run as `python benchmarks/NAME.py`, so this is importable)."""

import time


def best_time(fn, repeat: int) -> float:
    """The fastest of `repeat` calls, in seconds: on a shared machine the minimum is the least noisy."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)
