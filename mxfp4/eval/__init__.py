"""Evaluation: memory fit per hardware target (more to come: perplexity / KL parity, quality gates)."""

from .memory_fit import FitReport, fit
from .targets import TARGETS

__all__ = ["TARGETS", "FitReport", "fit"]
