"""convert(): open any source and write it as any target (mxfp4.convert.registry decides which reader and which
writer), checked and atomic; write(): the same for a source already open, e.g. a base with a LoRA merged in or a
calibrated stream (the fine-tune and calibration entry points are this with another source)."""

from __future__ import annotations

from pathlib import Path

from ..choices import CONVERT_SCALE_RULE, ExpertLayout, FloatName, Rounding, ScaleRule, Target
from ..errors import CheckpointError
from .chat_template import chat_template_text, settle_templates, with_template
from .options import WriteOptions
from .registry import open_source, writer_for
from .result import ConvertResult
from .stream import Source

__all__ = ["ConvertResult", "WriteOptions", "convert", "write"]


def convert(
    src,
    dst,
    *,
    to: Target,
    scale_rule: ScaleRule = CONVERT_SCALE_RULE,
    rounding: Rounding | None = None,
    dtype: FloatName = "bfloat16",
    max_shard_size: str | int | None = None,
    force: bool = False,
    progress: bool = False,
    strict: bool = False,
    expert_layout: ExpertLayout | None = None,
    chat_template: str | None = None,
) -> ConvertResult:
    """Convert checkpoint ``src`` (directory, .gguf or hub id) into ``dst`` in format ``to``.

    Lossless where the target keeps MXFP4 (experts' bytes move, never requantized). scale_rule and
    rounding apply only when dense experts must become MXFP4; the default is mxfp4.choices.CONVERT_SCALE_RULE
    (``mse``, measured best on held-out text; ``round_up`` matches the quantizer of transformers and OpenAI's
    triton_kernels byte for byte). dtype: the dense experts' dtype for bf16. A known broken save is read correctly
    with a RepairWarning per repair (mxfp4.convert.anomalies); strict=True refuses it instead. expert_layout
    ('in-out' or 'out-in'): how a square dense expert is stored, where neither its shape nor its content tells.
    chat_template: the template the output carries, 'harmony', 'original' or a jinja file (default: the source's;
    mxfp4.convert.chat_template).
    """
    options = WriteOptions(to, scale_rule, rounding, dtype, max_shard_size, force, progress)
    template = chat_template_text(chat_template)  # a wrong choice is refused before anything is read
    return write(with_template(open_source(src, strict=strict, expert_layout=expert_layout), template), dst, options)


def write(source: Source, dst, options: WriteOptions) -> ConvertResult:
    """Write an open source (any Source: a checkpoint, a base with a LoRA merged in, a calibrated stream) as
    ``options.to``, atomically, by the writer mxfp4.convert.registry names for it."""
    dst = Path(dst)
    if dst.resolve() == source.path.resolve() or source.path.resolve() in dst.resolve().parents:
        raise CheckpointError(
            f"{dst} is inside the source {source.path}; write the output elsewhere (the source is never modified)"
        )
    return writer_for(options.to)(settle_templates(source), dst, options)
