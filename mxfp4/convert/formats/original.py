"""openai's ``original/`` layout: ``block.N.attn.qkv`` (q, k and v stacked), ``mlp1_weight`` / ``mlp2_weight`` as
``.blocks`` + ``.scales`` (the HF bytes), its own ``config.json`` and ``dtypes.json``. Detected by its config (experts
counted as ``num_experts``); written as target ``original``."""

from __future__ import annotations

import json
from pathlib import Path

from ...codec.layout_reference import packed_shapes
from ...dtypes import raw_bytes
from ...errors import CheckpointError
from ...gpt_oss.config import GptOssConfig
from ...gpt_oss.tensors import QKV, Canonical, canonical_tensors, dense_shape, mxfp4_shape, original_name
from ...storage.safetensors_io import TensorEntry
from ...storage.shards import Job, Outputs
from ...storage.store import TensorStore
from ..jobs import dense_job, packed_job, write_safetensors_directory
from ..options import WriteOptions
from ..probe import Probe
from ..result import ConvertResult
from ..stored_tensors import check_names, check_shape, packed_expert_reader
from ..stream import Dense, Expert, Source, carried_files, stored_dense

TARGETS = ("original",)


class OriginalSource(Source):
    """The openai original/ layout: block.N.attn.qkv (q, k, v stacked), mlp1_weight.blocks, ..."""

    kind = "original"
    layout = "experts MXFP4 (mlp1_weight / mlp2_weight .blocks + .scales), openai's original/ layout"

    def __init__(self, path: Path, config: GptOssConfig, store: TensorStore):
        self.path, self.config, self.store = path, config, store
        expected = set()
        for t in canonical_tensors(config):
            base = original_name(t)
            expected |= {base + ".blocks", base + ".scales"} if t.expert else {base}
        check_names(store, expected, path)
        c = config
        q, kv = c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim
        for t in canonical_tensors(config):
            base = original_name(t)
            if t.expert:
                blocks_shape, scales_shape = packed_shapes(mxfp4_shape(config, t.short))
                check_shape(store, base + ".blocks", {"U8"}, blocks_shape)
                check_shape(store, base + ".scales", {"U8"}, scales_shape)
            elif base.endswith("attn.qkv.weight"):
                check_shape(store, base, None, (q + 2 * kv, c.hidden_size))
            elif base.endswith("attn.qkv.bias"):
                check_shape(store, base, None, (q + 2 * kv,))
            else:
                check_shape(store, base, None, dense_shape(config, t.short))

    def read(self, tensor: Canonical) -> Dense | Expert:
        store, base = self.store, original_name(tensor)
        if tensor.expert:
            return packed_expert_reader(
                store, mxfp4_shape(self.config, tensor.short), base + ".blocks", base + ".scales"
            )
        entry = store.entries[base]
        part = next((i for i, p in enumerate(QKV) if tensor.short.startswith(p)), None)
        if part is None:
            return stored_dense(store, base)
        c = self.config
        q, kv = c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim
        start, stop = [(0, q), (q, q + kv), (q + kv, q + 2 * kv)][part]
        shape = (stop - start,) + tuple(entry.shape[1:])
        return Dense(entry.dtype, shape, lambda: store.get(base)[start:stop].contiguous())

    def extra_files(self) -> list[Path]:
        """original/ holds no tokenizer; take the enclosing HF repo's when there is one."""
        directory = self.tokenizer_dir()
        return [] if directory == self.path else carried_files(directory)

    def source_bytes(self) -> int:
        return self.store.source_bytes()


def _qkv_job(source: Source, tensor: Canonical) -> Job:
    kind = tensor.short.rsplit(".", 1)[1]  # weight or bias
    parts = [Canonical(f"model.layers.{tensor.layer}.{p}.{kind}", tensor.layer) for p in QKV]
    reads = [source.read(p) for p in parts]
    dtypes = {r.dtype for r in reads}
    if len(dtypes) != 1:
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
                packed_job(
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


def detect(probe: Probe) -> bool:
    config = probe.config
    return config is not None and "num_experts" in config and "num_local_experts" not in config


def open_original(probe: Probe) -> OriginalSource:
    config = GptOssConfig.from_original_dict(probe.config, str(probe.config_path))
    return OriginalSource(probe.path, config, probe.store)


def write(source: Source, dst: Path, options: WriteOptions) -> ConvertResult:
    """q, k and v stacked as attn.qkv; experts always MXFP4 (.blocks / .scales); original/'s config and dtypes."""
    jobs = original_jobs(source, scale_rule=options.scale_rule, rounding=options.rounding)
    files: list[tuple[str, str | Path]] = [
        ("config.json", json.dumps(source.config.original_dict(), indent=2) + "\n"),
        ("dtypes.json", json.dumps(original_dtypes(jobs), indent=2) + "\n"),
    ]
    return write_safetensors_directory(source, dst, jobs, options, files)
