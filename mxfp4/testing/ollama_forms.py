"""Ollama's gpt-oss GGUF forms 1-3 written from an HF MXFP4 checkpoint, from the format facts alone
(docs/formats.md, Ollama's convert_gptoss.go): what Ollama's converter of each version would have written
for the same weights. Tests read these back; nothing here is used by the converters.

Dense storage types follow Ollama's tensorBase.Kind(): F32 for biases, the router and 1-D tensors; 2-D
tensors ``dense`` (BF16 keeps the source's bytes; the oldest versions wrote F16).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..codec import layout
from ..convert.formats.gguf.keys import Metadata
from ..convert.formats.gguf.vocab import add_tokenizer
from ..convert.formats.ollama.layout import ARCH, FUSED_QKV, OPENAI_MXFP4_TYPE, ollama_names
from ..convert.registry import open_source
from ..gpt_oss.tensors import QKV, Canonical, canonical_tensors
from ..storage.gguf_check import validate_gguf

OLLAMA_BOS, OLLAMA_EOS, OLLAMA_EOS_IDS = 199998, 199999, [199999, 200002, 200012]


def _kinds(name: str, ndim: int, dense: str) -> str:
    return "F32" if name.endswith(".bias") or ".ffn_gate_inp." in name or ndim == 1 else dense


def _dense_array(values, kind: str) -> np.ndarray:
    import torch

    target = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}[kind]
    return values.to(target).contiguous().view(torch.uint8 if kind == "BF16" else target).numpy()


def write_ollama_gguf(
    hf_dir, dst, *, form: int, fused_qkv: bool = False, dense: str = "BF16", drop_keys: tuple[str, ...] = ()
) -> Path:
    """Write ``hf_dir`` (an HF gpt-oss with MXFP4 experts) as Ollama's gptoss form 1, 2 or 3 at ``dst``.
    drop_keys: metadata keys to leave out (tests of files missing them)."""
    import gguf
    import torch

    source = open_source(hf_dir)
    c = source.config
    dst = Path(dst)
    writer = gguf.GGUFWriter(dst, ARCH)
    writer.add_uint32("general.file_type", 4)
    for key, value in {
        "context_length": c.max_position_embeddings,
        "block_count": c.num_hidden_layers,
        "embedding_length": c.hidden_size,
        "feed_forward_length": c.intermediate_size,
        "expert_count": c.num_local_experts,
        "expert_used_count": c.num_experts_per_tok,
        "attention.head_count": c.num_attention_heads,
        "attention.head_count_kv": c.num_key_value_heads,
        "attention.key_length": c.head_dim,
        "attention.value_length": c.head_dim,
        "attention.sliding_window": c.sliding_window,
        "rope.scaling.original_context_length": c.rope_scaling["original_max_position_embeddings"],
    }.items():
        writer.add_uint32(f"{ARCH}.{key}", int(value))
    writer.add_float32(f"{ARCH}.attention.layer_norm_rms_epsilon", c.rms_norm_eps)
    writer.add_float32(f"{ARCH}.rope.freq_base", c.rope_theta)
    writer.add_float32(f"{ARCH}.rope.scaling.factor", c.rope_scaling["factor"])
    tokenizer = Metadata()
    add_tokenizer(tokenizer, source.tokenizer_dir(), c.vocab_size)
    for key, (value, value_type, item_type) in tokenizer.values.items():
        if key not in ("tokenizer.ggml.pre", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id"):
            writer.add_key_value(key, value, value_type, sub_type=item_type)  # Ollama writes no pre-tokenizer
            # name, and gpt-oss's ids below
    writer.add_bos_token_id(OLLAMA_BOS)
    writer.add_eos_token_id(OLLAMA_EOS)
    writer.add_array("tokenizer.ggml.eos_token_ids", OLLAMA_EOS_IDS)
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(False)
    for key in drop_keys:
        del writer.kv_data[0][key]

    type4 = []
    for tensor in canonical_tensors(c):
        names = ollama_names(tensor, split_gate_up=form == 3, fused_qkv=fused_qkv)
        if fused_qkv and tensor.layer is not None and tensor.short.startswith(QKV):
            if not tensor.short.startswith(QKV[0]):
                continue  # k and v travel with q
            kind = tensor.short.rsplit(".", 1)[1]
            parts = [source.read(Canonical(f"model.layers.{tensor.layer}.{p}.{kind}", tensor.layer)) for p in QKV]
            values = torch.cat([p.load() for p in parts])
            name = f"blk.{tensor.layer}.{FUSED_QKV}.{kind}"
            stored = _kinds(name, values.dim(), dense)
            writer.add_tensor(name, _dense_array(values, stored), raw_dtype=_qtype(stored))
            continue
        read = source.read(tensor)
        if tensor.expert:
            e, rows, cols = read.shape
            per = []
            for index in range(e):
                blocks, scales = (x.numpy() for x in read.load_expert(index))
                if form == 1:  # the scale byte, then HF's 16 bytes as they are
                    per.append([np.concatenate([scales[..., None], blocks], axis=-1)])
                elif len(names) == 1:
                    per.append([layout.hf_to_gguf(blocks, scales)])
                else:  # form 3's gate and up: the even and the odd rows
                    per.append(list(layout.hf_to_gguf_split_rows(blocks, scales)))
            for i, name in enumerate(names):
                data = np.stack([p[i] for p in per]).reshape(e, rows // len(names), -1)
                writer.add_tensor(name, data, raw_dtype=gguf.GGMLQuantizationType.MXFP4)  # shape in bytes
                if form == 1:
                    type4.append(name)
            continue
        values = read.load()
        halves = [values] if len(names) == 1 else [values[..., 0::2], values[..., 1::2]]
        for name, part in zip(names, halves):
            stored = _kinds(name, part.dim(), dense)
            writer.add_tensor(name, _dense_array(part.contiguous(), stored), raw_dtype=_qtype(stored))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    if type4:  # Ollama <= 0.11.7 labelled these blocks type 4; the gguf package only knows 39
        header = validate_gguf(dst)
        with open(dst, "r+b") as f:
            for name in type4:
                f.seek(header.tensors[name].type_field)
                f.write(np.uint32(OPENAI_MXFP4_TYPE).tobytes())
    return dst


def _qtype(kind: str):
    import gguf

    return {"F32": gguf.GGMLQuantizationType.F32, "F16": gguf.GGMLQuantizationType.F16}.get(
        kind, gguf.GGMLQuantizationType.BF16
    )
