"""The named choices of MXFP4 quantization: scale rules (how a block's shared exponent is chosen: ``floor``,
``round_up``, ``even``, ``mse``, ``mlx``), element roundings (``rne``, ``ggml``) and what non-finite input does
(``error``, ``nan_scale``). The formula of each is in mxfp4.codec.rules and docs/codec.md."""

from .choices import (
    CALIBRATE_SCALE_RULE,
    CONVERT_SCALE_RULE,
    MERGE_SCALE_RULE,
    NONFINITE_MODES,
    QUANTIZE_SCALE_RULE,
    ROUNDINGS,
    SCALE_RULES,
    NonFinite,
    Rounding,
    ScaleRule,
)
from .codec.rules import KERNEL_RULES, default_rounding

__all__ = [
    "CALIBRATE_SCALE_RULE",
    "CONVERT_SCALE_RULE",
    "KERNEL_RULES",
    "MERGE_SCALE_RULE",
    "NONFINITE_MODES",
    "QUANTIZE_SCALE_RULE",
    "ROUNDINGS",
    "SCALE_RULES",
    "NonFinite",
    "Rounding",
    "ScaleRule",
    "default_rounding",
]
