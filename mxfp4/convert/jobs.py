"""The jobs every safetensors target shares (a dense tensor in row chunks, an expert weight packed or copied as
MXFP4), and the writing of a whole safetensors directory from jobs, atomically."""

from __future__ import annotations

import shutil
from pathlib import Path

from ..codec.layout_reference import packed_shapes
from ..dtypes import SAFETENSORS_CODE_OF, raw_bytes
from ..progress import progress_bar
from ..storage.atomic import atomic_directory
from ..storage.safetensors_io import TensorEntry
from ..storage.shards import Job, Outputs, total_bytes, write_shards
from ..storage.space import check_free_space, parse_size
from .options import WriteOptions
from .result import ConvertResult
from .row_chunks import row_chunks
from .stream import Dense, Expert, Source
from .transform import check_scales, packed_expert


def dense_job(name: str, read: Dense, cast: str | None = None) -> Job:
    """A dense tensor copied in row chunks; cast: a torch dtype name to convert it to on the way (mlx_lm's)."""
    dtype = read.dtype if cast is None else SAFETENSORS_CODE_OF[cast]

    def run(out: Outputs) -> None:
        if read.extent is not None and cast is None:  # the bytes as they are, read straight into the output
            out.copy_part(name, 0, read.extent)
            return
        import torch

        offset = 0
        for chunk in row_chunks(read):
            data = raw_bytes(chunk if cast is None else chunk.to(getattr(torch, cast)))
            out.write_part(name, offset, data)
            offset += data.nbytes

    return Job([TensorEntry(name, dtype, read.shape)], run)


def packed_job(blocks_name: str, scales_name: str, read: Expert, *, scale_rule: str, rounding: str, label: str) -> Job:
    experts, rows, cols = read.shape if read.packed else (read.shape[0], read.shape[2], read.shape[1])
    blocks_shape, scales_shape = packed_shapes((experts, rows, cols))
    blocks = TensorEntry(blocks_name, "U8", blocks_shape)
    scales = TensorEntry(scales_name, "U8", scales_shape)
    per_blocks, per_scales = blocks.nbytes // experts, scales.nbytes // experts

    def run(out: Outputs) -> None:
        if read.copy_blocks is not None:  # the same block layout: blocks copied as they are, scales checked
            copy_packed_experts(out, read, blocks_name, scales_name, label)
            return
        for e in range(experts):
            b, s = packed_expert(read, e, scale_rule=scale_rule, rounding=rounding, name=label)
            out.write_part(blocks_name, e * per_blocks, b)
            out.write_part(scales_name, e * per_scales, s)

    return Job([blocks, scales], run)


def copy_packed_experts(out: Outputs, read: Expert, blocks_name: str, scales_name: str, label: str) -> None:
    """Every expert of a packed weight whose source stores HF's block bytes: blocks copied as they are into
    blocks_name, scales (read, and refused if they hold the NaN byte) written to scales_name."""
    for e in range(read.shape[0]):
        (source, offset, count), scales = read.copy_blocks(e)  # scales: uint8 numpy
        check_scales(scales, label, e)
        out.copy_part(blocks_name, e * count, (source, offset, count))
        out.write_part(scales_name, e * scales.size, scales.reshape(-1))


def write_safetensors_directory(
    source: Source,
    dst: Path,
    jobs: list[Job],
    options: WriteOptions,
    files: list[tuple[str, str | Path]],
    metadata: dict[str, str] | None = None,
) -> ConvertResult:
    """Write ``jobs`` as (sharded) safetensors in a new directory ``dst`` (each shard's __metadata__ ``metadata``,
    {"format": "pt"} by default), then ``files`` in order: (name, text) or (name, a file to copy). Free space is
    checked first; the directory appears only when complete."""
    size = total_bytes(jobs)
    check_free_space(dst.resolve().parent, size)
    shard_bytes = parse_size(options.max_shard_size)
    with (
        atomic_directory(dst, force=options.force) as out,
        progress_bar(size, options.progress, f"convert -> {options.to}") as bar,
    ):
        written = write_shards(
            out, jobs, max_shard_size=shard_bytes, metadata=metadata or {"format": "pt"}, progress=bar
        )
        for name, content in files:
            if isinstance(content, Path):
                shutil.copy2(content, out / name)
            else:
                (out / name).write_text(content)
    return ConvertResult(dst, source.kind, options.to, source.source_bytes(), size, [dst / f.name for f in written])
