"""Memory-fit planning: a model's weights (exact, from its tensors' formats), KV cache and activations against the
memory of a hardware target, with the largest context and batch that fit."""

from .plan import FitReport, fit
from .targets import TARGETS, Target

__all__ = ["TARGETS", "FitReport", "Target", "fit"]
