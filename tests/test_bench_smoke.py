"""The benchmarks run end to end at small shapes on the CPU (the GPU kernel benchmark under the Triton interpreter),
so a machine that runs them for figures finds them working. Their times are not looked at: timings never go in a
test."""

import subprocess
import sys

import pytest


def run_benchmark(script: str, *args: str, timeout: int = 600) -> str:
    """The benchmark's output; it must exit 0."""
    result = subprocess.run(
        [sys.executable, f"benchmarks/{script}", *args], capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def assert_prints(output: str, *lines: str) -> None:
    for line in lines:
        assert line in output, (line, output)


def test_kernel_benchmark_runs_at_tiny_shapes():
    output = run_benchmark("bench_kernels.py", "--smoke", "--sweep")
    assert_prints(
        output,
        "dequantize -> bf16",
        "quantize bf16",
        "batch 1 (decode)",
        "tokens (prefill)",
        "tile sweep",
        "backend triton",
        "backend torch",
    )


def test_model_benchmark_runs_on_the_small_shape():
    """bench_model.py end to end on its small shape with a short prompt: ours in both dtypes (and with int8 MoE
    activations) and llama.cpp, each in its own child, the machine line (CPU, kernels, bandwidth) and the table
    with the decode floor's share."""
    pytest.importorskip("llama_cpp")
    ours = ("mxfp4 native bf16", "mxfp4 native float32", "llama.cpp", "mxfp4 native-int8 bf16")
    only = [word for name in ours for word in ("--only", name)]
    output = run_benchmark("bench_model.py", "--prompt", "12", "--new-tokens", "2", "--repeat", "1", *only)
    assert_prints(output, "C kernels: ", "tokens a pass", "read bandwidth", "FMA rate", "GFLOP a token", "% floor")
    assert_prints(output, *ours)


def test_int8_quality_benchmark_runs_on_the_bundled_model():
    """bench_int8_quality.py: both held-out texts through both backends, decoded and as one prompt, a row each with
    perplexities and KL."""
    output = run_benchmark("bench_int8_quality.py", "--tokens", "12", timeout=300)
    assert_prints(output, "native-int8 (C kernels: ", "heldout.tokens", "docs-heldout.tokens", "KL mean", "top-1")
    assert_prints(output, " decode ", " prompt ")


@pytest.mark.parametrize("option", ["--layers", "--prompt", "--new-tokens", "--repeat", "--rounds"])
def test_model_benchmark_refuses_counts_below_one(option):
    """A zero count would divide by zero after minutes of building: refused before anything runs."""
    result = subprocess.run(
        [sys.executable, "benchmarks/bench_model.py", option, "0"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2 and "take 1 or more" in result.stderr, result.stderr[-2000:]


def test_model_benchmark_breaks_a_decode_step_down_on_the_small_shape():
    """--breakdown --int8: both backends' rows in both dtypes, with every part (the C entry points wrapped in a
    child) and the rest."""
    output = run_benchmark("bench_model.py", "--breakdown", "--int8", "--new-tokens", "2")
    assert_prints(output, "dense products", "one-token MoE", "attention", "rest", "GB/s)", "norms ")
    assert_prints(output, "native bfloat16 ", "native float32 ", "native-int8 bfloat16 ", "native-int8 float32 ")
