"""Every Triton kernel compiles for the H100/H200 (sm_90) on this GPU-less machine: Triton's own ptxas
builds the cubin, so a kernel that only the interpreter accepts fails here. The cubin's resources are
checked too: shared memory within an H100's, and no register spills in the bfloat16 kernels at any tile
the launchers choose (a spill sends registers through local memory, the slow path a GPU run would
otherwise be the first to show). About a minute on a fresh machine; Triton caches it after."""

import os
import re
import subprocess
import sys

import pytest

pytest.importorskip("triton", reason="Triton is installed by .ci/run (the 'triton' extra)")

H100_SHARED_BYTES_PER_BLOCK = 227 * 1024  # the opt-in maximum on sm_90 (H100, H200)
LINE = re.compile(
    r"^sm_90 (?P<name>.+): compiled, (?P<shared>\d+) bytes of shared memory, (?P<registers>\d+) registers, "
    r"(?P<stack>\d+) bytes of stack, \d+ warps, (?P<use>launched|sweep only)$"
)


def test_every_kernel_compiles_for_sm90_within_its_resources():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run(
        [sys.executable, "-W", "ignore", "tests/tools/compile_kernels.py", "90"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    kernels = [LINE.match(line) for line in result.stdout.splitlines()]
    assert len(kernels) == 48 and all(kernels), result.stdout
    assert max(int(k["shared"]) for k in kernels) <= H100_SHARED_BYTES_PER_BLOCK, (
        result.stdout
    )  # else it would not launch there
    spilling = [k["name"] for k in kernels if "bf16" in k["name"] and k["use"] == "launched" and int(k["stack"])]
    assert spilling == [], spilling
