"""convert(): open any source, plan the target, check space, write atomically."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..choices import CONVERT_SCALE_RULE, TARGETS, FloatName, Rounding, ScaleRule, Target
from ..codec.rules import check_options, resolve_rounding
from ..dtypes import FLOAT_NAMES
from ..errors import CheckpointError, OptionError
from ..progress import progress_bar
from ..storage.atomic import atomic_directory
from ..storage.shards import total_bytes, write_shards
from ..storage.space import check_free_space, parse_size
from .formats.gguf.writer import write_gguf
from .formats.mlx.writer import write_mlx
from .jobs import hf_jobs, original_dtypes, original_jobs
from .result import ConvertResult
from .sources import open_source
from .stream import Source


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
) -> ConvertResult:
    """Convert checkpoint ``src`` (directory, .gguf or hub id) into ``dst`` in format ``to``.

    Lossless where the target keeps MXFP4 (experts' bytes move, never requantized). scale_rule and
    rounding apply only when dense experts must become MXFP4; the default is mxfp4.choices.CONVERT_SCALE_RULE
    (``mse``, measured best on held-out text; ``round_up`` matches the quantizer of transformers and OpenAI's
    triton_kernels byte for byte). dtype: the dense experts' dtype for bf16.
    """
    options = WriteOptions(to, scale_rule, rounding, dtype, max_shard_size, force, progress)
    return write_target(open_source(src), dst, options)


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


def write_target(source: Source, dst, options: WriteOptions) -> ConvertResult:
    """Write an open source (any Source, e.g. a base checkpoint with a LoRA merged in) as ``options.to``,
    atomically."""
    to, scale_rule, rounding, dtype = options.to, options.scale_rule, options.rounding, options.dtype
    max_shard_size, force, progress = options.max_shard_size, options.force, options.progress
    shard_bytes = parse_size(max_shard_size)
    dst = Path(dst)
    if dst.resolve() == source.path.resolve() or source.path.resolve() in dst.resolve().parents:
        raise CheckpointError(
            f"{dst} is inside the source {source.path}; write the output elsewhere (the source is never modified)"
        )
    if to == "mlx":
        return write_mlx(source, dst, options)
    if to == "gguf":
        return write_gguf(source, dst, force=force, progress=progress, scale_rule=scale_rule, rounding=rounding)
    if to == "original":
        jobs = original_jobs(source, scale_rule=scale_rule, rounding=rounding)
    else:
        jobs = hf_jobs(source, mxfp4=(to == "mxfp4"), dtype=dtype, scale_rule=scale_rule, rounding=rounding)
    size = total_bytes(jobs)
    check_free_space(dst.resolve().parent, size)
    metadata = {"format": "pt"}
    with atomic_directory(dst, force=force) as out, progress_bar(size, progress, f"convert -> {to}") as bar:
        files = write_shards(out, jobs, max_shard_size=shard_bytes, metadata=metadata, progress=bar)
        if to == "original":
            (out / "config.json").write_text(json.dumps(source.config.original_dict(), indent=2) + "\n")
            (out / "dtypes.json").write_text(json.dumps(original_dtypes(jobs), indent=2) + "\n")
        else:
            (out / "config.json").write_text(json.dumps(source.config.hf_dict(mxfp4=(to == "mxfp4")), indent=2) + "\n")
            for extra in source.extra_files():
                shutil.copy2(extra, out / extra.name)
            for name, text in source.generated_files().items():
                (out / name).write_text(text)
    return ConvertResult(dst, source.kind, to, source.source_bytes(), size, [dst / f.name for f in files])
