import os
import random
import re

import numpy as np
import pytest
import torch
from hypothesis import settings

from mxfp4.codec import native

# Without a GPU the Triton kernels run under Triton's interpreter (numpy on the CPU). It is chosen when a
# kernel is defined, so it must be set before anything imports triton.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Hypothesis in CI: the same examples every run (derandomize), and a failing one printed as a blob to replay it.
# `pytest --hypothesis-profile=dev` explores new examples instead.
settings.register_profile("ci", derandomize=True, print_blob=True, deadline=None)
settings.register_profile("dev", print_blob=True, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# The only reasons a test may be skipped in CI (scripts/setup-and-test.sh sets MXFP4_STRICT_SKIPS=1): hardware or a
# filesystem the machine lacks. Any other skip (a missing package, say) fails the run, so nothing drops silently.
# CI machines differ in CPU (AVX2-only and AVX-512 ones): a test of an instruction set the CPU lacks skips, and
# tests/model/test_cpu_gemm.py holds the level the kernels report to the CPU's flags, so such a skip cannot hide
# kernels that failed to build or chose a level below the CPU's.
ALLOWED_SKIPS = [
    re.compile(r"needs a CUDA GPU"),
    re.compile(r"needs an? (x86 )?CPU with "),
    re.compile(r"O_DIRECT unsupported"),
]

CPU_BACKENDS = ["numpy", "torch"] + (["native"] if native.available() else [])


def block(*values: float, fill: float = 0.0) -> np.ndarray:
    """One block of 32 float32: the given leading values, the rest ``fill``."""
    out = np.full((1, 32), fill, dtype=np.float32)
    out[0, : len(values)] = values
    return out


@pytest.fixture(autouse=True)
def seeded_generators():
    """Every test starts from the same state of the global generators (torch, numpy, random), so a test that draws
    from them without a generator of its own still sees the same numbers on every run."""
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)


@pytest.fixture(params=CPU_BACKENDS)
def backend(request) -> str:
    return request.param


def pytest_collection_modifyitems(config, items):
    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA GPU")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


def unexpected_skips(reports) -> list[str]:
    """The skipped tests whose reason is not in ALLOWED_SKIPS, as 'test id: reason'."""
    found = []
    for report in reports:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        if not any(pattern.search(reason) for pattern in ALLOWED_SKIPS):
            found.append(f"{report.nodeid}: {reason}")
    return found


def pytest_sessionfinish(session, exitstatus):
    """Under MXFP4_STRICT_SKIPS=1, a skip outside ALLOWED_SKIPS fails the run (exit 1) and is listed."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if os.environ.get("MXFP4_STRICT_SKIPS") != "1" or reporter is None:
        return
    unexpected = unexpected_skips(reporter.stats.get("skipped", []))
    if unexpected:
        reporter.write_sep("=", "skips outside the allowed list (tests/conftest.py ALLOWED_SKIPS)", red=True)
        for line in unexpected:
            reporter.write_line(line)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """A Hugging Face cache under tmp_path, offline: ``add(repo_id, folder)`` places a checkpoint there as the
    snapshot a download would have left, so code that resolves hub ids finds it without a network."""
    import shutil

    import huggingface_hub.constants as constants

    cache = tmp_path / "hub-cache"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)

    def add(repo_id: str, folder) -> None:
        repo = cache / ("models--" + repo_id.replace("/", "--"))
        revision = "0123456789abcdef0123456789abcdef01234567"
        shutil.copytree(folder, repo / "snapshots" / revision)
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text(revision)

    return add
