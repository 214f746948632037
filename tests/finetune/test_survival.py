"""The delta-survival measures (mxfp4.finetune.survival) on hand-made pieces whose answers are known."""

import math

import pytest
import torch

from mxfp4.finetune.survival import LOST_BELOW, Survival, overall_kept


def test_a_delta_kept_whole_erased_and_overshot():
    before = torch.tensor([1.0, 2.0, 2.0, 0.0])  # |W| = 3
    delta = torch.tensor([0.0, 0.0, 0.0, 0.5])
    whole = Survival("whole", quantized=True)
    whole.record(0, before, delta, before + delta)
    assert whole.kept == 1.0 and whole.changed_share == 0.25 and whole.delta_rel == pytest.approx(0.5 / 3)
    erased = Survival("erased", quantized=True)
    erased.record(0, before, delta, before)  # rounding undid the change
    assert erased.kept == 0.0 and erased.lost and erased.changed_share == 0.0
    overshot = Survival("overshot", quantized=True)
    overshot.record(0, before, delta, before + torch.tensor([1.0, 0.0, 0.0, 0.5]))  # a block tipped: extra error 1
    assert overshot.kept == pytest.approx(1 - 1.0 / 0.25) and overshot.kept < 0 and overshot.lost
    assert LOST_BELOW == 0.5


def test_pieces_accumulate_and_a_piece_recorded_twice_counts_once():
    row = Survival("experts", quantized=True)
    before, delta = torch.ones(2, 4), torch.full((2, 4), 0.5)
    row.record(0, before, delta, before + delta)
    row.record(1, before, delta, before)
    row.record(1, before, delta, before)  # a writer that reads expert 1 twice
    assert row.total == 16 and row.delta_sq == pytest.approx(2 * 8 * 0.25) and row.kept == pytest.approx(0.5)


def test_overall_kept_weighs_by_delta_energy_not_by_tensor():
    big, small = Survival("big", True), Survival("small", True)
    big.record(0, torch.zeros(4), torch.full((4,), 2.0), torch.full((4,), 2.0))  # kept 1, energy 16
    small.record(0, torch.zeros(4), torch.full((4,), 1.0), torch.zeros(4))  # kept 0, energy 4
    assert overall_kept([big, small]) == pytest.approx(1 - 4 / 20)
    assert overall_kept([]) == 1.0 and Survival("none", False).delta_rel == math.inf
