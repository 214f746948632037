"""A short fuzzing run in CI: every target's seeds, every input that once crashed (fuzz_regressions/,
named TARGET-what), and a fixed number of hypothesis-generated inputs per target. The long coverage-guided
runs are `python -m fuzz TARGET --minutes 30` (README, 'Hardening')."""

from pathlib import Path

import pytest

from fuzz.__main__ import run_hypothesis
from fuzz.targets import TARGETS, run_one, seeds

SMOKE_EXAMPLES = 200  # generated inputs per target: a count, so every machine runs the same ones
REGRESSIONS = sorted((Path(__file__).parent / "fuzz_regressions").iterdir())


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_seeds_are_accepted(target):
    for seed in seeds(target):
        TARGETS[target](seed)  # valid inputs: no error at all


@pytest.mark.parametrize("path", REGRESSIONS, ids=[p.name for p in REGRESSIONS])
def test_inputs_that_once_crashed(path):
    run_one(path.name.split("-")[0], path.read_bytes())


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_short_fuzz_run(target):
    executions, crashes = run_hypothesis(target, examples=SMOKE_EXAMPLES)
    assert crashes == 0 and executions >= SMOKE_EXAMPLES
