"""Under MXFP4_STRICT_SKIPS=1 only hardware the machine lacks may skip a test: no GPU, an instruction set the CPU
lacks (CI machines run AVX2-only and AVX-512 CPUs), a filesystem without O_DIRECT. Anything else fails the run."""

from types import SimpleNamespace

from conftest import unexpected_skips


def skipped(reason: str) -> SimpleNamespace:
    return SimpleNamespace(nodeid="tests/x.py::test", longrepr=("tests/x.py", 1, f"Skipped: {reason}"))


def test_hardware_the_machine_lacks_may_skip():
    reasons = [
        "needs a CUDA GPU",
        "needs a CPU with AVX-512",
        "needs a CPU with AVX512-BF16: without it bf16 groups take float32 products (test above)",
        "needs an x86 CPU with /proc/cpuinfo flags",
        "O_DIRECT unsupported on this filesystem",
    ]
    assert unexpected_skips([skipped(r) for r in reasons]) == []


def test_any_other_skip_is_listed():
    reasons = ["could not import 'llama_cpp'", "this CPU has no AVX-512", "the C kernels are built by pip install -e ."]
    assert unexpected_skips([skipped(r) for r in reasons]) == [f"tests/x.py::test: Skipped: {r}" for r in reasons]
