"""The GPU kernel benchmark runs end to end at tiny shapes on the CPU (Triton interpreter), so a machine
with a GPU finds it working. Its times are not looked at: timings never go in a test."""

import subprocess
import sys


def test_kernel_benchmark_runs_at_tiny_shapes():
    result = subprocess.run(
        [sys.executable, "benchmarks/bench_kernels.py", "--smoke", "--sweep"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for section in (
        "dequantize -> bf16",
        "quantize bf16",
        "batch 1 (decode)",
        "tokens (prefill)",
        "tile sweep",
        "backend triton",
        "backend torch",
    ):
        assert section in result.stdout, (section, result.stdout)
