"""Whole safetensors files: pack float tensors to MXFP4 pairs, unpack pairs to dense, describe a file.

Tensors stream one at a time from a memory map into a file written under a temporary name (see
mxfp4.storage.safetensors_io), so memory holds about one tensor and a failure leaves nothing behind.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..codec.constants import BLOCK_SIZE, PACKED_BYTES_PER_BLOCK
from ..codec.quantization_error import ErrorReport, measure_error
from ..codec.rules import check_options, resolve_rounding
from ..codec.tensor import BLOCKS_SUFFIX, SCALES_SUFFIX
from ..dtypes import raw_bytes
from ..errors import CheckpointError
from ..progress import progress_bar
from ..storage.atomic import atomic_output
from ..storage.safetensors_io import SafetensorsWriter, TensorEntry, read_header

FLOAT_DTYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}
DEFAULT_EXCLUDE = r"bias$"  # biases stay in high precision, as in gpt-oss checkpoints


def quantizable(entry: TensorEntry, include: str | None, exclude: str | None) -> bool:
    """Float tensors of two or more axes whose last axis is whole blocks, filtered by name patterns."""
    if entry.dtype not in FLOAT_DTYPES or len(entry.shape) < 2 or entry.shape[-1] % BLOCK_SIZE:
        return False
    if include is not None and not re.search(include, entry.name):
        return False
    return exclude is None or not re.search(exclude, entry.name)


def _packed_entries(entry: TensorEntry) -> list[TensorEntry]:
    blocks_shape = entry.shape[:-1] + (entry.shape[-1] // BLOCK_SIZE, PACKED_BYTES_PER_BLOCK)
    return [
        TensorEntry(entry.name + BLOCKS_SUFFIX, "U8", blocks_shape),
        TensorEntry(entry.name + SCALES_SUFFIX, "U8", blocks_shape[:-1]),
    ]


@dataclass(frozen=True)
class PackResult:
    output: Path
    reports: list[ErrorReport]
    copied: list[str]
    bytes_in: int
    bytes_out: int


def quantize_file(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    scale_rule: str = "floor",
    rounding: str | None = None,
    include: str | None = None,
    exclude: str | None = DEFAULT_EXCLUDE,
    force: bool = False,
    progress: bool = False,
) -> PackResult:
    """Write ``dst``: every quantizable tensor of ``src`` as NAME_blocks + NAME_scales, the rest as is."""
    from safetensors import safe_open

    from ..codec.encode import quantize

    rounding = resolve_rounding(scale_rule, rounding)
    check_options(scale_rule, rounding)
    for what, pattern in (("include", include), ("exclude", exclude)):
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as error:
                raise CheckpointError(f"--{what} {pattern!r} is not a valid regular expression: {error}") from None
    src, dst = Path(src), Path(dst)
    if src.resolve() == dst.resolve():
        raise CheckpointError(f"{dst} is the source file; write the output elsewhere (the source is never modified)")
    entries, metadata = read_header(src)
    names = {e.name for e in entries}
    plan, out_entries = [], []
    for entry in entries:
        pack = quantizable(entry, include, exclude)
        produced = _packed_entries(entry) if pack else [entry]
        clash = [p.name for p in produced if pack and p.name in names]
        if clash:
            raise CheckpointError(
                f"{src}: tensor {entry.name!r} cannot be packed: {clash[0]!r} already exists in the file"
            )
        plan.append((entry, pack))
        out_entries += produced
    if not any(pack for _, pack in plan):
        raise CheckpointError(
            f"{src}: no tensor to quantize (float, 2+ axes, last axis a multiple of "
            f"32{', matching the patterns' if include or exclude else ''})"
        )
    metadata = {
        **metadata,
        "format": metadata.get("format", "pt"),
        "mxfp4.scale_rule": scale_rule,
        "mxfp4.rounding": rounding,
    }
    reports, copied = [], []
    with (
        atomic_output(dst, force=force) as temporary,
        safe_open(str(src), framework="pt") as reader,
        SafetensorsWriter(temporary, out_entries, metadata) as writer,
        progress_bar(sum(e.nbytes for e in entries), progress, "quantize") as bar,
    ):
        for entry, pack in plan:
            tensor = reader.get_tensor(entry.name)
            if pack:
                q = quantize(tensor, scale_rule=scale_rule, rounding=rounding, name=f"{src.name}:{entry.name}")
                writer.write(entry.name + BLOCKS_SUFFIX, q.blocks.numpy())
                writer.write(entry.name + SCALES_SUFFIX, q.scales.numpy())
                reports.append(measure_error(entry.name, tensor, q.blocks, q.scales))
            else:
                writer.write(entry.name, raw_bytes(tensor))
                copied.append(entry.name)
            bar.update(entry.nbytes)
    return PackResult(dst, reports, copied, sum(e.nbytes for e in entries), sum(e.nbytes for e in out_entries))


def dequantize_file(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    dtype: str = "bfloat16",
    force: bool = False,
    progress: bool = False,
) -> Path:
    """Write ``dst`` with every NAME_blocks + NAME_scales pair of ``src`` decoded to a dense NAME tensor."""
    import torch
    from safetensors import safe_open

    from ..codec.decode import dequantize
    from ..dtypes import output_name

    dtype = output_name(dtype)
    safetensors_dtype = {v: k for k, v in FLOAT_DTYPES.items()}[dtype]
    src, dst = Path(src), Path(dst)
    if src.resolve() == dst.resolve():
        raise CheckpointError(f"{dst} is the source file; write the output elsewhere (the source is never modified)")
    entries, metadata = read_header(src)
    by_name = {e.name: e for e in entries}
    plan, out_entries = [], []
    for entry in entries:
        if entry.name.endswith(SCALES_SUFFIX) and entry.name[: -len(SCALES_SUFFIX)] + BLOCKS_SUFFIX in by_name:
            continue  # handled with its _blocks partner
        if entry.name.endswith(BLOCKS_SUFFIX):
            base = entry.name[: -len(BLOCKS_SUFFIX)]
            scales = by_name.get(base + SCALES_SUFFIX)
            if scales is None:
                raise CheckpointError(f"{src}: tensor {entry.name!r} has no {base + SCALES_SUFFIX!r} partner")
            if (
                entry.dtype != "U8"
                or scales.dtype != "U8"
                or entry.shape[-1:] != (16,)
                or entry.shape[:-1] != scales.shape
            ):
                raise CheckpointError(
                    f"{src}: MXFP4 pair {base!r} is malformed: blocks {entry.dtype} {list(entry.shape)}, scales "
                    f"{scales.dtype} {list(scales.shape)} (expected U8 [..., n, 16] and U8 [..., n])"
                )
            plan.append((base, True))
            out_entries.append(TensorEntry(base, safetensors_dtype, entry.shape[:-2] + (entry.shape[-2] * BLOCK_SIZE,)))
        else:
            if entry.name.endswith(SCALES_SUFFIX):
                raise CheckpointError(
                    f"{src}: tensor {entry.name!r} has no {entry.name[: -len(SCALES_SUFFIX)] + BLOCKS_SUFFIX!r} partner"
                )
            plan.append((entry.name, False))
            out_entries.append(entry)
    metadata = {k: v for k, v in metadata.items() if not k.startswith("mxfp4.")}
    with (
        atomic_output(dst, force=force) as temporary,
        safe_open(str(src), framework="pt") as reader,
        SafetensorsWriter(temporary, out_entries, metadata or {"format": "pt"}) as writer,
        progress_bar(sum(e.nbytes for e in out_entries), progress, "dequantize") as bar,
    ):
        for (name, paired), out_entry in zip(plan, out_entries):
            if paired:
                values = dequantize(
                    reader.get_tensor(name + BLOCKS_SUFFIX),
                    reader.get_tensor(name + SCALES_SUFFIX),
                    getattr(torch, dtype),
                )
                writer.write(name, raw_bytes(values))
            else:
                writer.write(name, raw_bytes(reader.get_tensor(name)))
            bar.update(out_entry.nbytes)
    return dst


@dataclass(frozen=True)
class InspectRow:
    name: str
    kind: str  # "MXFP4" for a blocks/scales pair, else the safetensors dtype
    shape: tuple[int, ...]  # logical element shape
    nbytes: int

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def bits_per_param(self) -> float:
        return self.nbytes * 8 / self.numel if self.numel else 0.0


def inspect_file(path: str | os.PathLike) -> list[InspectRow]:
    """One row per logical tensor (an MXFP4 pair is one row), from the header alone."""
    entries, _ = read_header(path)
    by_name = {e.name: e for e in entries}
    rows = []
    for entry in entries:
        if entry.name.endswith(BLOCKS_SUFFIX) and entry.name[: -len(BLOCKS_SUFFIX)] + SCALES_SUFFIX in by_name:
            base = entry.name[: -len(BLOCKS_SUFFIX)]
            scales = by_name[base + SCALES_SUFFIX]
            rows.append(
                InspectRow(
                    base, "MXFP4", entry.shape[:-2] + (entry.shape[-2] * BLOCK_SIZE,), entry.nbytes + scales.nbytes
                )
            )
        elif entry.name.endswith(SCALES_SUFFIX) and entry.name[: -len(SCALES_SUFFIX)] + BLOCKS_SUFFIX in by_name:
            continue
        else:
            rows.append(InspectRow(entry.name, entry.dtype, entry.shape, entry.nbytes))
    return rows
