"""Evaluation: perplexity and KL parity between checkpoints, quality gates for CI, per-tensor error
reports, the scale rules compared, and memory fit per hardware target."""

from .gate import Check, gate, make_baseline
from .memory_fit import FitReport, fit
from .parity import Comparison, compare, perplexity
from .targets import TARGETS

__all__ = ["TARGETS", "Check", "Comparison", "FitReport", "compare", "fit", "gate", "make_baseline", "perplexity"]
