"""Typed errors. Each message says what is wrong, the offending value, and what to do."""

from __future__ import annotations


class MXFP4Error(Exception):
    """Base class of every error this package raises on purpose. ``parameter``: the library parameter that
    decides the matter, when one does (the CLI names its flag beside the message)."""

    def __init__(self, *args: object, parameter: str | None = None):
        super().__init__(*args)
        self.parameter = parameter


class ShapeError(MXFP4Error, ValueError):
    """A tensor has a shape the MXFP4 format cannot hold (e.g. last axis not a multiple of 32)."""


class DTypeError(MXFP4Error, TypeError):
    """A tensor has a dtype the operation does not accept."""


class NonFiniteError(MXFP4Error, ValueError):
    """The input to quantization holds NaN or +-Inf, which E2M1 cannot represent."""


class OptionError(MXFP4Error, ValueError):
    """An option (scale rule, rounding, backend, ...) has a value that is not one of its choices, or values
    that cannot go together."""


class BackendUnavailableError(MXFP4Error, RuntimeError):
    """A requested backend cannot run here (missing extra, no GPU, native kernels not built)."""


class CheckpointError(MXFP4Error):
    """A checkpoint file is malformed, or an output cannot be written safely."""


class ConfigError(MXFP4Error):
    """config.json is missing, unreadable, or describes an impossible gpt-oss model."""


class MissingDependencyError(MXFP4Error, ImportError):
    """An optional package a feature needs is not installed; the message names the extra to install."""


class AdapterError(MXFP4Error):
    """A LoRA adapter is malformed, of a kind that cannot be merged exactly, or made for another model."""


class RepairWarning(UserWarning):
    """A checkpoint written wrong by a known tool was read correctly anyway; the message names what was repaired.
    (A warning, not an error: pass strict=True to refuse such files instead.)"""


class CalibrationWarning(UserWarning):
    """Calibration left some experts plainly rounded (too few calibration tokens reached them); the message counts
    them and says what would reach more."""


class TemplateWarning(UserWarning):
    """A checkpoint's chat templates disagree (chat_template.jinja and tokenizer_config.json); the message says
    which one was written."""
