"""Evaluation: perplexity and KL parity between checkpoints, quality gates for CI, per-tensor error
reports, the scale rules compared, and memory fit per hardware target."""

from .memory_fit import FitReport, fit
from .targets import TARGETS

__all__ = ["TARGETS", "FitReport", "fit"]
