"""A gpt-oss GGUF file read back as canonical tensors (GGUF -> HF, bf16, original), by positioned reads.

Inverse of mxfp4.convert.formats.gguf.writer: ffn_gate_exps / ffn_up_exps are re-interleaved into
gate_up_proj rows, GGUF blocks become HF blocks/scales (a byte move), and tensors llama.cpp widened to
F32 come back as bf16 when that is exact (so HF -> GGUF -> HF gives the same bytes); otherwise they stay
F32 and nothing is lost. The tokenizer is rebuilt as tokenizer.json from the GGUF vocabulary.

The header is parsed by mxfp4.storage.gguf_check (bounds-checked); subclasses (Ollama's forms) change the
names, the expert block layout and the config keys.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ....codec import layout
from ....codec.layout_reference import packed_nbytes, packed_shapes
from ....errors import CheckpointError
from ....gpt_oss.config import GptOssConfig
from ....gpt_oss.tensors import LAYER_TENSORS, Canonical, canonical_tensors, dense_shape, gguf_names, mxfp4_shape
from ....storage.gguf_check import GGUFHeader, TensorInfo, validate_gguf
from ....storage.pread import PositionedFile
from ...stream import Dense, Expert, Source
from .config import ARCH, hf_config
from .fields import read_field
from .vocab import tokenizer_files

MXFP4_BLOCK_BYTES = 17  # one scale byte and 16 bytes of codes per 32 elements
DENSE_TYPES = {"F32", "BF16", "F16"}


def type_name(info: TensorInfo) -> str:
    from gguf import GGMLQuantizationType

    try:
        return GGMLQuantizationType(info.type_id).name
    except ValueError:
        return f"type {info.type_id}"


class GGUFSource(Source):
    kind = "gguf"
    layout = "experts GGML MXFP4 (block_mxfp4), gate and up split, as llama.cpp's converter writes them"
    default_pre: str | None = None  # the pre-tokenizer of a file that names none (only Ollama's may)

    def __init__(self, path: Path, header: GGUFHeader | None = None):
        self.path = path
        self._file = PositionedFile(path)
        self.header = header or validate_gguf(path)  # bounds-checked before anything reads a tensor
        self.fields = self.header.fields
        self.tensors = self.header.tensors
        self._check_architecture()
        self.config = GptOssConfig.from_hf_dict(self._hf_config(), f"{path} (metadata)")
        # the layer count against the tensor table first: a hostile block_count must not size any loop
        per_layer = len({n for short in LAYER_TENSORS for n in self.names(Canonical(f"model.layers.0.{short}", 0))})
        implied = 3 + per_layer * self.config.num_hidden_layers
        if implied != len(self.tensors):
            raise CheckpointError(
                f"{path}: the metadata describes {self.config.num_hidden_layers} layers ({implied} tensors) but the "
                f"file holds {len(self.tensors)}"
            )
        expected = {n for t in canonical_tensors(self.config) for n in self.names(t)}
        unknown, missing = sorted(set(self.tensors) - expected), sorted(expected - set(self.tensors))
        if unknown:
            raise CheckpointError(
                f"{path}: unknown tensor {unknown[0]!r}: not part of a gpt-oss model with this metadata"
            )
        if missing:
            raise CheckpointError(f"{path}: tensor {missing[0]!r} is missing ({len(missing)} missing in all)")
        self._validate_tensors()

    # -- what a subclass changes ------------------------------------------------------------------------------

    def _check_architecture(self) -> None:
        arch = read_field(self.fields, "general.architecture", self.path)
        if arch != ARCH:
            raise CheckpointError(f"{self.path}: GGUF architecture is {arch!r}; mxfp4 converts gpt-oss")

    def _hf_config(self) -> dict:
        embedding = self.tensors.get("token_embd.weight")
        return hf_config(self.fields, self.path, embedding.dims[-1] if embedding else 0)

    def names(self, tensor: Canonical) -> tuple[str, ...]:
        """The GGUF tensor(s) holding a canonical tensor: two when gate and up are split."""
        return gguf_names(tensor)

    def expert_types(self) -> set[str]:
        return {"MXFP4"}

    def _hf_blocks(self, raw: np.ndarray, info: TensorInfo) -> tuple[np.ndarray, np.ndarray]:
        """Rows of GGUF blocks uint8 [rows, n * 17] -> HF (blocks [rows, n, 16], scales [rows, n])."""
        return layout.gguf_to_hf(layout.gguf_rows_to_blocks(raw))

    # -- checks and reads -------------------------------------------------------------------------------------

    def _validate_tensors(self) -> None:
        """Every tensor's storage type and shape against what the metadata implies, before any is read."""
        for tensor in canonical_tensors(self.config):
            names = self.names(tensor)
            if tensor.expert:
                e, rows, cols = mxfp4_shape(self.config, tensor.short)
                want, types = (e, rows // len(names), cols), self.expert_types()
            else:
                shape = dense_shape(self.config, tensor.short)
                want, types = self._dense_part_shape(tensor, shape, len(names)), DENSE_TYPES
            for name in names:
                info = self.tensors[name]
                shape = tuple(reversed(info.dims))  # ggml lists dimensions innermost first
                kind = type_name(info)
                if kind not in types or shape != want:
                    raise CheckpointError(
                        f"{self.path}: tensor {name!r} is {kind} {list(shape)}; the metadata implies "
                        f"{'/'.join(sorted(types))} {list(want)}"
                    )

    def _dense_part_shape(self, tensor: Canonical, shape: tuple[int, ...], parts: int) -> tuple[int, ...]:
        return shape[:-1] + (shape[-1] // parts,)

    def _bytes(self, name: str, start: int, count: int) -> np.ndarray:
        """count bytes of a tensor's data from byte start, by a positioned read (thread-safe; nothing is
        memory-mapped, so a 20b model's 13 GB never stays resident)."""
        return self._file.read(self.tensors[name].data_offset + start, count, what=f"tensor {name!r}")

    def _dense(self, name: str, shape: tuple[int, ...]):
        """Tensor as torch: BF16/F16 as stored; F32 as bf16 when exact, else F32."""
        import torch

        info = self.tensors[name]  # type and size checked at open (_validate_tensors)
        kind = type_name(info)
        raw = torch.from_numpy(self._bytes(name, 0, info.nbytes))
        if kind == "F32":
            values = raw.view(torch.float32).reshape(shape)
            narrow = values.bfloat16()
            return narrow if torch.equal(narrow.float(), values) else values
        return raw.view(torch.bfloat16 if kind == "BF16" else torch.float16).reshape(shape)

    def _expert(self, tensor: Canonical, names: tuple[str, ...]) -> Expert:
        import torch

        e, rows, cols = mxfp4_shape(self.config, tensor.short)
        part_rows = rows // len(names)
        per_expert = part_rows * packed_nbytes(cols)
        blocks_shape, scales_shape = packed_shapes((rows, cols))

        def load_expert(index: int):
            pieces = []
            for name in names:
                raw = self._bytes(name, index * per_expert, per_expert).reshape(part_rows, -1)
                pieces.append(self._hf_blocks(raw, self.tensors[name]))
            if len(pieces) == 1:
                blocks, scales = pieces[0]
            else:  # re-interleave: gate rows even, up rows odd
                blocks = np.stack([pieces[0][0], pieces[1][0]], axis=1).reshape(blocks_shape)
                scales = np.stack([pieces[0][1], pieces[1][1]], axis=1).reshape(scales_shape)
            return torch.from_numpy(np.ascontiguousarray(blocks)), torch.from_numpy(np.ascontiguousarray(scales))

        return Expert(True, (e, rows, cols), "MXFP4", load_expert)

    def read(self, tensor: Canonical) -> Dense | Expert:

        names = self.names(tensor)
        if tensor.expert:
            return self._expert(tensor, names)
        return self.dense_read(names, dense_shape(self.config, tensor.short))

    def dense_read(self, names: tuple[str, ...], shape: tuple[int, ...]) -> Dense:
        """A dense tensor of ``shape`` stored as one GGUF tensor, or as two holding its columns 0::2 and 1::2."""
        import torch

        if len(names) == 2:  # gate_up bias: interleave columns

            def load():
                halves = [self._dense(n, shape[:-1] + (shape[-1] // 2,)) for n in names]
                return torch.stack(halves, dim=-1).reshape(shape)
        else:

            def load():
                return self._dense(names[0], shape)

        kinds = {type_name(self.tensors[n]) for n in names}
        stored = ("/".join(sorted(kinds)), sum(self.tensors[n].nbytes for n in names))
        if kinds <= {"BF16", "F16"} and len(kinds) == 1 and len(names) == 1:
            wide = torch.bfloat16 if kinds == {"BF16"} else torch.float16
            row_bytes = int(np.prod(shape[1:])) * 2

            def rows(start: int, stop: int):  # large 2-D tensors (embeddings) stream in row chunks
                part = self._bytes(names[0], start * row_bytes, (stop - start) * row_bytes)
                return torch.from_numpy(part).view(wide).reshape((stop - start,) + tuple(shape[1:]))

            info = self.tensors[names[0]]
            extent = (self._file, info.data_offset, info.nbytes)
            kind = "BF16" if kinds == {"BF16"} else "F16"
            return Dense(kind, shape, load, rows if len(shape) == 2 else None, stored, extent)
        # F32: bf16 when every value fits exactly (small tensors only; large F32 stays F32)
        if int(np.prod(shape)) > 1 << 22:
            return Dense("F32", shape, lambda: load().float(), stored=stored)
        sample = load()
        dtype = {torch.bfloat16: "BF16", torch.float32: "F32", torch.float16: "F16"}[sample.dtype]
        return Dense(dtype, shape, lambda s=sample: s, stored=stored)

    def source_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors.values())

    def extra_files(self) -> list[Path]:
        return []

    def generated_files(self) -> dict[str, str]:
        """tokenizer.json, tokenizer_config.json, generation_config.json rebuilt from the GGUF vocab."""
        return tokenizer_files(self.fields, self.path, self.default_pre)
