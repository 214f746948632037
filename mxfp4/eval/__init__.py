"""Evaluation: perplexity and KL parity between checkpoints, quality gates for CI, per-tensor error
reports, the scale rules compared, and memory fit per hardware target."""

from ..fit.plan import FitReport, fit
from ..fit.targets import TARGETS
from .gate import Check, gate, make_baseline
from .parity import Comparison, compare, perplexity

__all__ = ["TARGETS", "Check", "Comparison", "FitReport", "compare", "fit", "gate", "make_baseline", "perplexity"]
