"""A gpt-oss checkpoint written as mlx-lm writes it (mlx_lm.convert of the released HF MXFP4 checkpoint).

MXFP4 experts move as bytes (blocks become uint32 words, gate and up split from the interleaved rows);
dense experts (a fine-tune) are quantized once with the chosen scale rule (``mlx`` reproduces
mx.quantize). Other tensors keep their HF names; floats are cast to the config's torch_dtype as
mlx_lm.convert casts them. Sharded at 5 GiB like mlx_lm, with its index (total_size, total_parameters).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from ....codec.constants import PACKED_BYTES_PER_BLOCK
from ....dtypes import DTYPE_SIZES, SAFETENSORS_CODE_OF, raw_bytes
from ....gpt_oss.config import read_json
from ....gpt_oss.tensors import canonical_tensors
from ....progress import progress_bar
from ....storage.atomic import atomic_directory
from ....storage.safetensors_io import TensorEntry
from ....storage.shards import Job, Outputs, plan_shards, shard_names, total_bytes, write_shards
from ....storage.space import check_free_space, parse_size
from ....storage.store import INDEX_NAME
from ...jobs import copy_packed_experts, dense_job
from ...result import ConvertResult
from ...stream import Dense, Expert, Source
from ...transform import packed_expert
from .layout import (
    CONVERSION_DTYPES,
    MLX_METADATA,
    MLX_SHARD_BYTES,
    dense_names,
    expert_modules,
    mlx_config,
    split_rows,
    total_parameters,
    words_from_blocks,
)

GENERATION_CONFIG = "generation_config.json"


def _expert_job(modules: tuple[str, ...], read: Expert, *, scale_rule: str, rounding: str, label: str) -> Job:
    """Per module (gate, up or down): .weight uint32 [E, rows, in/8] and .scales uint8 [E, rows, in/32]."""
    experts, out_rows, cols = read.shape if read.packed else (read.shape[0], read.shape[2], read.shape[1])
    rows = out_rows // len(modules)
    entries = []
    for module in modules:
        entries += [
            TensorEntry(f"{module}.weight", "U32", (experts, rows, cols // 8)),
            TensorEntry(f"{module}.scales", "U8", (experts, rows, cols // 32)),
        ]
    per_weight, per_scales = rows * cols // 2, rows * cols // 32

    def produce(e: int):
        blocks, scales = packed_expert(read, e, scale_rule=scale_rule, rounding=rounding, name=label)
        blocks, scales = blocks.reshape(out_rows, -1, PACKED_BYTES_PER_BLOCK), scales.reshape(out_rows, -1)
        if len(modules) == 1:
            return [(blocks, scales)]
        (gate_b, up_b), (gate_s, up_s) = split_rows(blocks, 0), split_rows(scales, 0)
        return [(gate_b, gate_s), (up_b, up_s)]

    def run(out: Outputs) -> None:
        if read.copy_blocks is not None and len(modules) == 1:  # down_proj: HF's bytes are mlx's words, as they are
            copy_packed_experts(out, read, f"{modules[0]}.weight", f"{modules[0]}.scales", label)
            return
        for e in range(experts):  # in turn, no producer thread: see mxfp4.convert.row_chunks
            for module, (blocks, scales) in zip(modules, produce(e)):
                out.write_part(f"{module}.weight", e * per_weight, words_from_blocks(blocks).view(np.uint8))
                out.write_part(f"{module}.scales", e * per_scales, np.ascontiguousarray(scales).reshape(-1))

    return Job(entries, run)


def _split_bias_job(names: tuple[str, str], read: Dense, cast: str | None) -> Job:
    """gate (columns 0::2) and up (1::2) of an interleaved gate_up bias [E, 2I]."""
    dtype = read.dtype if cast is None else SAFETENSORS_CODE_OF[cast]
    shape = tuple(read.shape[:-1]) + (read.shape[-1] // 2,)

    def run(out: Outputs) -> None:
        if read.extent is not None and dtype == read.dtype:  # a byte move: split the elements as raw words
            source, offset, count = read.extent
            words = source.read(offset, count, what=names[0]).view(f"u{DTYPE_SIZES[dtype]}").reshape(read.shape)
            for name, part in zip(names, split_rows(words, -1)):
                out.write(name, part)
            return
        import torch

        values = read.load()
        values = values if cast is None else values.to(getattr(torch, cast))
        for name, part in zip(names, (values[..., 0::2], values[..., 1::2])):
            out.write(name, raw_bytes(part.contiguous()))

    return Job([TensorEntry(n, dtype, shape) for n in names], run)


def conversion_dtype(source: Source) -> str | None:
    """What mlx_lm.convert casts floating tensors to: the source config's torch_dtype when it names one."""
    dtype = source.config.hf.get("torch_dtype")
    return dtype if dtype in CONVERSION_DTYPES else None


def mlx_jobs(source: Source, *, scale_rule: str, rounding: str) -> list[Job]:
    cast = conversion_dtype(source)
    jobs = []
    for tensor in canonical_tensors(source.config):
        read = source.read(tensor)
        label = f"{source.path}: {tensor.name}"
        if isinstance(read, Expert):
            jobs.append(
                _expert_job(expert_modules(tensor), read, scale_rule=scale_rule, rounding=rounding, label=label)
            )
            continue
        names = dense_names(tensor)
        if len(names) == 2:
            jobs.append(_split_bias_job(names, read, cast))
        else:
            jobs.append(dense_job(names[0], read, cast=cast if read.dtype != _code(cast) else None))
    return jobs


def _code(dtype: str | None) -> str | None:
    return SAFETENSORS_CODE_OF.get(dtype) if dtype else None


def _generation_config(source: Source) -> dict | None:
    for path in source.extra_files():
        if path.name == GENERATION_CONFIG:
            return read_json(path)
    text = source.generated_files().get(GENERATION_CONFIG)
    return json.loads(text) if text else None


def write_mlx(source: Source, dst: Path, options) -> ConvertResult:
    """Write ``source`` as an MLX gpt-oss directory (options: a convert.api.WriteOptions), atomically."""
    jobs = mlx_jobs(source, scale_rule=options.scale_rule, rounding=options.rounding)
    entries = [e for job in jobs for e in job.entries]
    size = total_bytes(jobs)
    check_free_space(dst.resolve().parent, size)
    shard_bytes = parse_size(options.max_shard_size) or MLX_SHARD_BYTES
    shards = plan_shards(entries, shard_bytes)
    weight_map = {e.name: name for shard, name in zip(shards, shard_names(len(shards))) for e in shard}
    with (
        atomic_directory(dst, force=options.force) as out,
        progress_bar(size, options.progress, "convert -> mlx") as bar,
    ):
        files = write_shards(
            out, jobs, max_shard_size=shard_bytes, metadata=dict(MLX_METADATA), progress=bar, index=False
        )
        index = {
            "metadata": {
                "total_size": size,
                "total_parameters": total_parameters((e.name, e.shape) for e in entries),
            },
            "weight_map": dict(sorted(weight_map.items())),
        }
        (out / INDEX_NAME).write_text(json.dumps(index, indent=4))
        hf = source.config.hf_dict(mxfp4=False)
        hf.update({k: v for k, v in source.config.hf.items() if k in ("torch_dtype", "dtype")})
        c = source.config
        config = mlx_config(hf, _generation_config(source), c.rope_scaling, c.rope_theta)
        (out / "config.json").write_text(json.dumps(config, indent=4))
        for extra in source.extra_files():
            shutil.copy2(extra, out / extra.name)
        for name, text in source.generated_files().items():
            (out / name).write_text(text)
    return ConvertResult(dst, source.kind, "mlx", source.source_bytes(), size, [dst / f.name for f in files])
