"""A gpt-oss GGUF file read back as canonical tensors (GGUF -> HF, bf16, original), memory-mapped.

Inverse of mxfp4.convert.gguf_writer: ffn_gate_exps / ffn_up_exps are re-interleaved into
gate_up_proj rows, GGUF blocks become HF blocks/scales (a byte move), and tensors llama.cpp widened to
F32 come back as bf16 when that is exact (so HF -> GGUF -> HF gives the same bytes); otherwise they stay
F32 and nothing is lost. The tokenizer is rebuilt as tokenizer.json from the GGUF vocabulary.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..codec import layout
from ..storage.safetensors_io import CheckpointError
from ..gpt_oss.config import LAYER_TYPES, GptOssConfig
from ..gpt_oss.gguf_names import gguf_names
from .gguf_vocab import CONTROL, UNUSED, USER_DEFINED
from ..gpt_oss.tensors import LAYER_TENSORS, Canonical, canonical_tensors, dense_shape, mxfp4_shape
from .sources import Dense, Expert, Source

ARCH = "gpt-oss"


def _field(reader, key: str, path: Path, default=None, required: bool = True):
    field = reader.fields.get(key)
    if field is None:
        if required and default is None:
            raise CheckpointError(f"{path}: GGUF metadata key {key!r} is missing")
        return default
    return field.contents()


def _float(value) -> float:
    return float(f"{float(value):.7g}")  # undo float32 storage: 9.99999974e-06 -> 1e-05


class GGUFSource(Source):
    kind = "gguf"

    def __init__(self, path: Path):
        from gguf import GGUFReader

        from ..storage.gguf_check import validate_gguf

        self.path = path
        self._handle = None
        validate_gguf(path)  # bounds-checked before the gguf package's reader sees the file
        try:
            self.reader = GGUFReader(path)
        except Exception as error:  # the reader raises assorted errors on bad files; name the file
            raise CheckpointError(f"{path}: not a readable GGUF file ({type(error).__name__}: {error})") from None
        arch = _field(self.reader, "general.architecture", path)
        if arch != ARCH:
            raise CheckpointError(f"{path}: GGUF architecture is {arch!r}; mxfp4 converts gpt-oss")
        self.config = GptOssConfig.from_hf_dict(self._hf_config(), f"{path} (metadata)")
        self.tensors = {t.name: t for t in self.reader.tensors}
        per_layer = sum(len(gguf_names(Canonical(f"model.layers.0.{short}", 0))) for short in LAYER_TENSORS)
        implied = 3 + per_layer * self.config.num_hidden_layers
        if implied != len(self.tensors):
            raise CheckpointError(f"{path}: the metadata describes {self.config.num_hidden_layers} layers ({implied} tensors) but the file holds {len(self.tensors)}")
        expected = {n for t in canonical_tensors(self.config) for n in gguf_names(t)}
        unknown, missing = sorted(set(self.tensors) - expected), sorted(expected - set(self.tensors))
        if unknown:
            raise CheckpointError(f"{path}: unknown tensor {unknown[0]!r}: not part of a gpt-oss model with this metadata")
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
                    raise CheckpointError(f"{self.path}: tensor {name!r} is {t.tensor_type.name} {list(shape)}; the metadata implies {'/'.join(sorted(types))} {list(want)}")
                block, type_size = GGML_QUANT_SIZES[t.tensor_type]
                expected_bytes = int(np.prod(want)) // block * type_size
                if int(t.n_bytes) != int(expected_bytes) or np.asarray(t.data).nbytes != int(expected_bytes):
                    raise CheckpointError(f"{self.path}: tensor {name!r} holds {np.asarray(t.data).nbytes} bytes; its shape needs {int(expected_bytes)}")

    def _hf_config(self) -> dict:
        r, p, a = self.reader, self.path, ARCH
        layers = int(_field(r, f"{a}.block_count", p))
        tokens = _field(r, "tokenizer.ggml.tokens", p, default=[], required=False)
        vocab = len(tokens) or int(self.reader.tensors[0].shape[-1])
        rope = {"rope_type": "yarn", "factor": _float(_field(r, f"{a}.rope.scaling.factor", p, 32.0, False)),
                "beta_fast": _float(_field(r, f"{a}.rope.scaling.yarn_beta_fast", p, 32.0, False)),
                "beta_slow": _float(_field(r, f"{a}.rope.scaling.yarn_beta_slow", p, 1.0, False)),
                "original_max_position_embeddings": int(_field(r, f"{a}.rope.scaling.original_context_length", p, 4096, False)),
                "truncate": False}
        special = {k: _field(r, f"tokenizer.ggml.{k}_token_id", p, required=False) for k in ("bos", "eos", "padding")}
        config = {
            "architectures": ["GptOssForCausalLM"], "model_type": "gpt_oss",
            "num_hidden_layers": layers,
            "num_local_experts": int(_field(r, f"{a}.expert_count", p)),
            "num_experts_per_tok": int(_field(r, f"{a}.expert_used_count", p)),
            "hidden_size": int(_field(r, f"{a}.embedding_length", p)),
            "intermediate_size": int(_field(r, f"{a}.expert_feed_forward_length", p)),
            "head_dim": int(_field(r, f"{a}.attention.key_length", p)),
            "num_attention_heads": int(_field(r, f"{a}.attention.head_count", p)),
            "num_key_value_heads": int(_field(r, f"{a}.attention.head_count_kv", p)),
            "vocab_size": vocab,
            "sliding_window": int(_field(r, f"{a}.attention.sliding_window", p)),
            "layer_types": [LAYER_TYPES[i % 2] for i in range(layers)],
            "rope_theta": _float(_field(r, f"{a}.rope.freq_base", p)),
            "rope_scaling": rope,
            "max_position_embeddings": int(_field(r, f"{a}.context_length", p)),
            "initial_context_length": rope["original_max_position_embeddings"],
            "rms_norm_eps": _float(_field(r, f"{a}.attention.layer_norm_rms_epsilon", p)),
            "swiglu_limit": 7.0,  # llama.cpp fixes it for gpt-oss; GGUF does not store it
            "attention_bias": True, "attention_dropout": 0.0, "hidden_act": "silu", "tie_word_embeddings": False,
            "router_aux_loss_coef": 0.9, "output_router_logits": False, "initializer_range": 0.02, "use_cache": True,
        }
        if special["eos"] is not None:
            config["eos_token_id"] = int(special["eos"])
        if special["padding"] is not None:
            config["pad_token_id"] = int(special["padding"])
        return config

    def _bytes(self, name: str, start: int, count: int) -> np.ndarray:
        """count bytes of a tensor's data from byte start, by a positioned read (thread-safe). The gguf
        package's reader memory-maps the file; reading its data through the map would leave every
        touched page resident (14 GB for a 20b model), so only its metadata is used."""
        if self._handle is None:
            self._handle = open(self.path, "rb", buffering=0)
        buffer = np.empty(count, dtype=np.uint8)
        view, done, offset = memoryview(buffer), 0, int(self.tensors[name].data_offset) + start
        while done < count:
            n = os.preadv(self._handle.fileno(), [view[done:]], offset + done)
            if not n:
                raise CheckpointError(f"{self.path}: file ended inside tensor {name!r}")
            done += n
        return buffer

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
            per_expert = rows // len(names) * (cols // 32) * 17

            def load_expert(index: int):
                pieces = [layout.gguf_to_hf(self._bytes(n, index * per_expert, per_expert).reshape(rows // len(names), cols // 32, 17)) for n in names]
                if len(pieces) == 1:
                    blocks, scales = pieces[0]
                else:  # re-interleave: gate rows even, up rows odd
                    blocks = np.stack([pieces[0][0], pieces[1][0]], axis=1).reshape(rows, cols // 32, 16)
                    scales = np.stack([pieces[0][1], pieces[1][1]], axis=1).reshape(rows, cols // 32)
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
        r, p = self.reader, self.path
        tokens = _field(r, "tokenizer.ggml.tokens", p, default=[], required=False)
        if not tokens:
            return {}
        types = _field(r, "tokenizer.ggml.token_type", p, default=[1] * len(tokens), required=False)
        merges = _field(r, "tokenizer.ggml.merges", p, default=[], required=False)
        vocab, added = {}, []
        for i, (token, kind) in enumerate(zip(tokens, types)):
            if kind == UNUSED:
                continue
            if kind in (CONTROL, USER_DEFINED):
                added.append({"id": i, "content": token, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": kind == CONTROL})
            else:
                vocab[token] = i
        tokenizer = {
            "version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
            "post_processor": None, "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
            "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None, "end_of_word_suffix": None,
                      "fuse_unk": False, "byte_fallback": False, "ignore_merges": False, "vocab": vocab, "merges": list(merges)},
        }
        special = {k: _field(r, f"tokenizer.ggml.{k}_token_id", p, required=False) for k in ("bos", "eos", "padding")}
        names = {"bos": "bos_token", "eos": "eos_token", "padding": "pad_token"}
        tokenizer_config = {"tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": False,
                            **{names[k]: tokens[int(v)] for k, v in special.items() if v is not None}}
        template = _field(r, "tokenizer.chat_template", p, required=False)
        if template:
            tokenizer_config["chat_template"] = template
        generation = {k + "_token_id": int(v) for k, v in (("bos", special["bos"]), ("eos", special["eos"]), ("pad", special["padding"])) if v is not None}
        return {name: json.dumps(content, indent=2, ensure_ascii=False) + "\n" for name, content in
                {"tokenizer.json": tokenizer, "tokenizer_config.json": tokenizer_config, "generation_config.json": generation}.items()}
