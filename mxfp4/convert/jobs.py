"""Jobs that write a canonical stream as HF safetensors (MXFP4 or dense experts) or as original/."""

from __future__ import annotations

from ..codec.layout_reference import packed_shapes
from ..codec.tensor import BLOCKS_SUFFIX, SCALES_SUFFIX
from ..dtypes import SAFETENSORS_CODE_OF, raw_bytes, torch_cpu_empty
from ..gpt_oss.tensors import QKV, Canonical, canonical_tensors, original_name
from ..storage.safetensors_io import TensorEntry
from ..storage.shards import Job, Outputs
from .row_chunks import row_chunks
from .stream import Dense, Expert, Source
from .transform import check_scales, dense_expert, packed_expert


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


def _packed_job(blocks_name: str, scales_name: str, read: Expert, *, scale_rule: str, rounding: str, label: str) -> Job:
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


def _dense_expert_job(name: str, read: Expert, dtype: str, label: str) -> Job:
    experts, rows, cols = read.shape if read.packed else (read.shape[0], read.shape[2], read.shape[1])
    entry = TensorEntry(name, SAFETENSORS_CODE_OF[dtype], (experts, cols, rows))  # [E, in, out]
    per_expert = entry.nbytes // experts

    def run(out: Outputs) -> None:
        buffer = torch_cpu_empty((cols, rows), dtype) if read.packed else None  # one decode buffer, reused

        for e in range(experts):  # (a dense source's expert is cast, out unused)
            out.write_part(name, e * per_expert, raw_bytes(dense_expert(read, e, dtype, label, out=buffer)))

    return Job([entry], run)


def hf_jobs(source: Source, *, mxfp4: bool, dtype: str, scale_rule: str, rounding: str) -> list[Job]:
    """HF layout: experts as NAME_blocks/NAME_scales (mxfp4) or dense [E, in, out] of dtype."""
    jobs = []
    for tensor in canonical_tensors(source.config):
        read = source.read(tensor)
        label = f"{source.path}: {tensor.name}"
        if isinstance(read, Dense):
            jobs.append(dense_job(tensor.name, read))
        elif mxfp4:
            jobs.append(
                _packed_job(
                    tensor.name + BLOCKS_SUFFIX,
                    tensor.name + SCALES_SUFFIX,
                    read,
                    scale_rule=scale_rule,
                    rounding=rounding,
                    label=label,
                )
            )
        else:
            jobs.append(_dense_expert_job(tensor.name, read, dtype, label))
    return jobs


def _qkv_job(source: Source, tensor: Canonical) -> Job:
    kind = tensor.short.rsplit(".", 1)[1]  # weight or bias
    parts = [Canonical(f"model.layers.{tensor.layer}.{p}.{kind}", tensor.layer) for p in QKV]
    reads = [source.read(p) for p in parts]
    dtypes = {r.dtype for r in reads}
    if len(dtypes) != 1:
        from ..errors import CheckpointError

        raise CheckpointError(
            f"{source.path}: q, k and v {kind} of layer {tensor.layer} have different dtypes {sorted(dtypes)}; "
            "original/ stacks them into one tensor"
        )
    name = original_name(tensor)
    shape = (sum(r.shape[0] for r in reads),) + tuple(reads[0].shape[1:])

    def run(out: Outputs) -> None:
        if all(r.extent is not None for r in reads):  # q, k and v stacked by copying their bytes in turn
            offset = 0
            for r in reads:
                out.copy_part(name, offset, r.extent)
                offset += r.extent[2]
            return
        import torch

        out.write(name, raw_bytes(torch.cat([r.load() for r in reads])))

    return Job([TensorEntry(name, reads[0].dtype, shape)], run)


def original_jobs(source: Source, *, scale_rule: str, rounding: str) -> list[Job]:
    """openai original/ layout: q, k, v stacked as attn.qkv; experts always MXFP4 (.blocks/.scales)."""
    jobs = []
    for tensor in canonical_tensors(source.config):
        if tensor.layer is not None and tensor.short.startswith(QKV[1:]):
            continue  # k and v travel with q in attn.qkv
        if tensor.layer is not None and tensor.short.startswith(QKV[0]):
            jobs.append(_qkv_job(source, tensor))
            continue
        read = source.read(tensor)
        name = original_name(tensor)
        if isinstance(read, Dense):
            jobs.append(dense_job(name, read))
        else:
            jobs.append(
                _packed_job(
                    name + ".blocks",
                    name + ".scales",
                    read,
                    scale_rule=scale_rule,
                    rounding=rounding,
                    label=f"{source.path}: {tensor.name}",
                )
            )
    return jobs


def original_dtypes(jobs: list[Job]) -> dict[str, str]:
    """original/dtypes.json: BF16 etc. for plain tensors, FP4 / UE8 for the MXFP4 pairs."""
    out = {}
    for job in jobs:
        for entry in job.entries:
            out[entry.name] = (
                "FP4" if entry.name.endswith(".blocks") else "UE8" if entry.name.endswith(".scales") else entry.dtype
            )
    return out
