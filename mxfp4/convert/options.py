"""WriteOptions: how a checkpoint is written, the one set of options every target and entry point shares."""

from __future__ import annotations

from dataclasses import dataclass

from ..choices import CONVERT_SCALE_RULE, TARGETS, FloatName, Rounding, ScaleRule, Target
from ..codec.rules import check_options, resolve_rounding
from ..dtypes import FLOAT_NAMES
from ..errors import OptionError


@dataclass(frozen=True)
class WriteOptions:
    """How a checkpoint is written: target format, how dense experts become MXFP4, the dtype of dense output,
    shard size, whether an existing output is replaced, and the progress bar. Checked when made."""

    to: Target
    scale_rule: ScaleRule = CONVERT_SCALE_RULE
    rounding: Rounding | None = None  # None: the scale rule's own (mxfp4.codec.rules.default_rounding)
    dtype: FloatName = "bfloat16"
    max_shard_size: str | int | None = None
    force: bool = False
    progress: bool = False

    def __post_init__(self) -> None:  # refuse a bad choice before anything is read
        if self.to not in TARGETS:
            raise OptionError(f"to={self.to!r} is not one of {', '.join(map(repr, TARGETS))}", parameter="to")
        object.__setattr__(self, "rounding", resolve_rounding(self.scale_rule, self.rounding))
        check_options(self.scale_rule, self.rounding)
        if self.dtype not in FLOAT_NAMES:
            raise OptionError(
                f"dtype={self.dtype!r} is not one of {', '.join(map(repr, FLOAT_NAMES))}", parameter="dtype"
            )
