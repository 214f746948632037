"""A gpt-oss GGUF file read back as canonical tensors (GGUF -> HF, bf16, original), memory-mapped.

Inverse of mxfp4.convert.gguf_writer: ffn_gate_exps / ffn_up_exps are re-interleaved into
gate_up_proj rows, GGUF blocks become HF blocks/scales (a byte move), and tensors llama.cpp widened to
F32 come back as bf16 when that is exact (so HF -> GGUF -> HF gives the same bytes); otherwise they stay
F32 and nothing is lost. The tokenizer is rebuilt as tokenizer.json from the GGUF vocabulary.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..codec import repack
from ..codec.layout import packed_nbytes, packed_shapes
from ..errors import CheckpointError
from ..gpt_oss.config import GptOssConfig
from ..gpt_oss.tensors import LAYER_TENSORS, Canonical, canonical_tensors, dense_shape, gguf_names, mxfp4_shape
from ..storage.pread import PositionedFile
from .gguf_config import ARCH, hf_config
from .gguf_fields import read_field
from .gguf_vocab import tokenizer_files
from .stream import Dense, Expert, Source


class GGUFSource(Source):
    kind = "gguf"
    layout = "experts GGML MXFP4 (block_mxfp4), gate and up split, as llama.cpp's converter writes them"

    def __init__(self, path: Path):
        from gguf import GGUFReader

        from ..storage.gguf_check import validate_gguf

        self.path = path
        self._file = PositionedFile(path)
        validate_gguf(path)  # bounds-checked before the gguf package's reader sees the file
        try:
            self.reader = GGUFReader(path)
        except Exception as error:  # the reader raises assorted errors on bad files; name the file
            raise CheckpointError(f"{path}: not a readable GGUF file ({type(error).__name__}: {error})") from None
        arch = read_field(self.reader, "general.architecture", path)
        if arch != ARCH:
            raise CheckpointError(f"{path}: GGUF architecture is {arch!r}; mxfp4 converts gpt-oss")
        self.config = GptOssConfig.from_hf_dict(hf_config(self.reader, path), f"{path} (metadata)")
        self.tensors = {t.name: t for t in self.reader.tensors}
        per_layer = sum(len(gguf_names(Canonical(f"model.layers.0.{short}", 0))) for short in LAYER_TENSORS)
        implied = 3 + per_layer * self.config.num_hidden_layers
        if implied != len(self.tensors):
            raise CheckpointError(
                f"{path}: the metadata describes {self.config.num_hidden_layers} layers ({implied} tensors) but the "
                f"file holds {len(self.tensors)}"
            )
        expected = {n for t in canonical_tensors(self.config) for n in gguf_names(t)}
        unknown, missing = sorted(set(self.tensors) - expected), sorted(expected - set(self.tensors))
        if unknown:
            raise CheckpointError(
                f"{path}: unknown tensor {unknown[0]!r}: not part of a gpt-oss model with this metadata"
            )
        if missing:
            raise CheckpointError(f"{path}: tensor {missing[0]!r} is missing ({len(missing)} missing in all)")
        self._validate_tensors()

    def _validate_tensors(self) -> None:
        """Every tensor's storage type and shape against what the metadata implies, before any is read."""
        from gguf import GGML_QUANT_SIZES

        for tensor in canonical_tensors(self.config):
            names = gguf_names(tensor)
            if tensor.expert:
                e, rows, cols = mxfp4_shape(self.config, tensor.short)
                want, types = (e, rows // len(names), cols), {"MXFP4"}
            else:
                shape = dense_shape(self.config, tensor.short)
                want, types = shape[:-1] + (shape[-1] // len(names),), {"F32", "BF16", "F16"}
            for name in names:
                t = self.tensors[name]
                shape = tuple(int(d) for d in reversed(t.shape))  # ggml lists dimensions innermost first
                if t.tensor_type.name not in types or shape != want:
                    raise CheckpointError(
                        f"{self.path}: tensor {name!r} is {t.tensor_type.name} {list(shape)}; the metadata implies "
                        f"{'/'.join(sorted(types))} {list(want)}"
                    )
                block, type_size = GGML_QUANT_SIZES[t.tensor_type]
                expected_bytes = int(np.prod(want)) // block * type_size
                if int(t.n_bytes) != int(expected_bytes) or np.asarray(t.data).nbytes != int(expected_bytes):
                    raise CheckpointError(
                        f"{self.path}: tensor {name!r} holds {np.asarray(t.data).nbytes} bytes; its shape needs "
                        f"{int(expected_bytes)}"
                    )

    def _bytes(self, name: str, start: int, count: int) -> np.ndarray:
        """count bytes of a tensor's data from byte start, by a positioned read (thread-safe). The gguf
        package's reader memory-maps the file; reading its data through the map would leave every
        touched page resident (14 GB for a 20b model), so only its metadata is used."""
        offset = int(self.tensors[name].data_offset) + start
        return self._file.read(offset, count, what=f"tensor {name!r}")

    def _dense(self, name: str, shape: tuple[int, ...]):
        """Tensor as torch: BF16/F16 as stored; F32 as bf16 when exact, else F32."""
        import torch

        tensor = self.tensors[name]  # type and size checked at open (_validate_tensors)
        kind = tensor.tensor_type.name
        raw = torch.from_numpy(self._bytes(name, 0, int(tensor.n_bytes)))
        if kind == "F32":
            values = raw.view(torch.float32).reshape(shape)
            narrow = values.bfloat16()
            return narrow if torch.equal(narrow.float(), values) else values
        return raw.view(torch.bfloat16 if kind == "BF16" else torch.float16).reshape(shape)

    def read(self, tensor: Canonical) -> Dense | Expert:
        import torch

        names = gguf_names(tensor)
        if tensor.expert:
            e, rows, cols = mxfp4_shape(self.config, tensor.short)
            part_rows = rows // len(names)
            per_expert = part_rows * packed_nbytes(cols)
            blocks_shape, scales_shape = packed_shapes((rows, cols))

            def load_expert(index: int):
                pieces = []
                for name in names:
                    raw = self._bytes(name, index * per_expert, per_expert).reshape(part_rows, -1)
                    pieces.append(repack.gguf_to_hf(repack.gguf_rows_to_blocks(raw)))
                if len(pieces) == 1:
                    blocks, scales = pieces[0]
                else:  # re-interleave: gate rows even, up rows odd
                    blocks = np.stack([pieces[0][0], pieces[1][0]], axis=1).reshape(blocks_shape)
                    scales = np.stack([pieces[0][1], pieces[1][1]], axis=1).reshape(scales_shape)
                return torch.from_numpy(blocks), torch.from_numpy(scales)

            return Expert(True, (e, rows, cols), "MXFP4", load_expert)
        shape = dense_shape(self.config, tensor.short)
        if len(names) == 2:  # gate_up bias: interleave columns

            def load():
                halves = [self._dense(n, shape[:-1] + (shape[-1] // 2,)) for n in names]
                return torch.stack(halves, dim=-1).reshape(shape)
        else:

            def load():
                return self._dense(names[0], shape)

        kinds = {self.tensors[n].tensor_type.name for n in names}
        stored = ("/".join(sorted(kinds)), sum(int(self.tensors[n].n_bytes) for n in names))
        if kinds <= {"BF16", "F16"} and len(kinds) == 1 and len(names) == 1:
            wide = torch.bfloat16 if kinds == {"BF16"} else torch.float16
            row_bytes = int(np.prod(shape[1:])) * 2

            def rows(start: int, stop: int):  # large 2-D tensors (embeddings) stream in row chunks
                part = self._bytes(names[0], start * row_bytes, (stop - start) * row_bytes)
                return torch.from_numpy(part).view(wide).reshape((stop - start,) + tuple(shape[1:]))

            return Dense("BF16" if kinds == {"BF16"} else "F16", shape, load, rows if len(shape) == 2 else None, stored)
        # F32: bf16 when every value fits exactly (small tensors only; large F32 stays F32)
        if int(np.prod(shape)) > 1 << 22:
            return Dense("F32", shape, lambda: load().float(), stored=stored)
        sample = load()
        dtype = {torch.bfloat16: "BF16", torch.float32: "F32"}[sample.dtype]
        return Dense(dtype, shape, lambda s=sample: s, stored=stored)

    def source_bytes(self) -> int:
        return sum(int(t.n_bytes) for t in self.reader.tensors)

    def extra_files(self) -> list[Path]:
        return []

    def generated_files(self) -> dict[str, str]:
        """tokenizer.json, tokenizer_config.json, generation_config.json rebuilt from the GGUF vocab."""
        return tokenizer_files(self.reader, self.path)
