"""Synthetic gpt-oss checkpoints: real tensor names, dtypes, layouts and config keys, random weights.

Experts are random MXFP4 codes with scales near 2**-8 (as released checkpoints hold), or with
dense_experts, Gaussian bf16 (as a fine-tune holds, off the MXFP4 grid); everything else is bf16 noise
of a plausible size. Used by the tests (tiny sizes, several layers of both attention types) and by the
conversion benchmark (full gpt-oss-20b / 120b shapes). Output streams one expert at a time, so a 13 GB
checkpoint is written in a few hundred MB of memory.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..codec.layout_reference import packed_shapes
from ..codec.tensor import BLOCKS_SUFFIX, SCALES_SUFFIX
from ..convert.formats.gguf.vocab import byte_level_bpe
from ..gpt_oss.config import MODULES_NOT_CONVERTED, GptOssConfig, hf_config_dict
from ..gpt_oss.harmony_tokenizer import byte_to_unicode
from ..gpt_oss.tensors import EXPERT_LAYOUT_KEY, canonical_tensors, dense_expert_shape, dense_shape, mxfp4_shape
from ..storage.safetensors_io import TensorEntry
from ..storage.shards import Job, write_shards

SPECIAL_TOKENS = [
    "<|startoftext|>",
    "<|endoftext|>",
    "<|return|>",
    "<|start|>",
    "<|message|>",
    "<|end|>",
    "<|channel|>",
]


def hf_config(
    *,
    num_hidden_layers=4,
    num_local_experts=4,
    num_experts_per_tok=2,
    hidden_size=64,
    intermediate_size=64,
    head_dim=16,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=384,
    sliding_window=8,
    **overrides,
) -> dict:
    """An HF gpt-oss config.json (defaults tiny; pass mxfp4.gpt_oss.presets.GPT_OSS_20B for full size)."""
    config = hf_config_dict(
        num_hidden_layers=num_hidden_layers,
        num_local_experts=num_local_experts,
        num_experts_per_tok=num_experts_per_tok,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        head_dim=head_dim,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads,
        vocab_size=vocab_size,
        sliding_window=sliding_window,
    )
    eos = vocab_size - len(SPECIAL_TOKENS) + 1
    config.update(eos_token_id=eos, pad_token_id=eos, torch_dtype="bfloat16")
    config["quantization_config"] = {"quant_method": "mxfp4", "modules_to_not_convert": list(MODULES_NOT_CONVERTED)}
    config.update(overrides)
    return config


def tokenizer_files(vocab_size: int) -> dict[str, dict]:
    """A byte-level BPE tokenizer.json (256 bytes, merges up to the vocab, special tokens last)."""
    alphabet = byte_to_unicode()
    vocab = {alphabet[b]: b for b in range(256)}
    merges = []
    words = (
        "the and of to in is that for it with as was on be by this are from at or an not have def return self "
        "import if else print"
    ).split()
    n_regular = vocab_size - len(SPECIAL_TOKENS)
    for word in words:
        for token in [alphabet[32] + word, word]:
            pieces = list(token)
            while len(pieces) > 1 and len(vocab) < n_regular:
                left, right = pieces[0], pieces[1]
                merged = left + right
                if merged not in vocab:
                    vocab[merged] = len(vocab)
                    merges.append(f"{left} {right}")
                pieces = [merged] + pieces[2:]
    while len(vocab) < n_regular:  # pad the regular vocab with unique two-byte tokens
        a, b = alphabet[97 + len(vocab) % 26], alphabet[65 + (len(vocab) // 26) % 26]
        token = a + b + str(len(vocab))
        vocab[token] = len(vocab)
    added = [
        {
            "id": n_regular + i,
            "content": t,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": True,
        }
        for i, t in enumerate(SPECIAL_TOKENS)
    ]
    tokenizer = byte_level_bpe(vocab, merges, added)
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<|startoftext|>",
        "eos_token": "<|return|>",
        "pad_token": "<|endoftext|>",
        "model_max_length": 131072,
        "clean_up_tokenization_spaces": False,
        "added_tokens_decoder": {str(t["id"]): {k: v for k, v in t.items() if k != "id"} for t in added},
    }
    generation = {
        "bos_token_id": n_regular,
        "eos_token_id": [n_regular + 2, n_regular + 1],
        "pad_token_id": n_regular + 1,
    }
    return {
        "tokenizer.json": tokenizer,
        "tokenizer_config.json": tokenizer_config,
        "generation_config.json": generation,
    }


def write_checkpoint(
    out_dir,
    config: dict,
    *,
    seed: int = 0,
    dense_experts: bool = False,
    max_shard_size: int | None = None,
    with_tokenizer: bool = True,
    float32: bool = False,
) -> Path:
    """Write an HF gpt-oss checkpoint directory with random weights (MXFP4 experts unless dense_experts).

    float32: non-expert tensors in F32 instead of bf16 (for tight comparisons across runtimes)."""
    import torch

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = GptOssConfig.from_hf_dict(config)
    rng = np.random.default_rng(seed)

    def bf16_noise(shape, std, mean=0.0, keep_float32=False):
        values = rng.standard_normal(shape, dtype=np.float32) * np.float32(std) + np.float32(mean)
        tensor = torch.from_numpy(values)
        return tensor if keep_float32 else tensor.bfloat16()

    def expert_codes(shape):
        e, rows, cols = shape
        blocks_shape, scales_shape = packed_shapes((e, rows, cols))
        blocks = rng.integers(0, 256, size=blocks_shape, dtype=np.uint8)
        scales = rng.integers(116, 122, size=scales_shape, dtype=np.uint8)
        return blocks, scales

    jobs = []
    for tensor in canonical_tensors(cfg):
        short = tensor.short
        if tensor.expert:
            shape = mxfp4_shape(cfg, short)
            if dense_experts:
                entry = TensorEntry(tensor.name, "BF16", dense_expert_shape(cfg, short))

                def run(out_, name=tensor.name, shape=shape, entry=entry):
                    per = entry.nbytes // shape[0]
                    for e in range(shape[0]):  # like a bf16 fine-tune: Gaussian, not on the MXFP4 grid
                        dense = bf16_noise(entry.shape[1:], 0.02)  # [in, out]
                        out_.write_part(name, e * per, dense.view(torch.uint8).numpy().reshape(-1))

                jobs.append(Job([entry], run))
            else:
                e, rows, cols = shape
                blocks_shape, scales_shape = packed_shapes((e, rows, cols))
                entries = [
                    TensorEntry(tensor.name + BLOCKS_SUFFIX, "U8", blocks_shape),
                    TensorEntry(tensor.name + SCALES_SUFFIX, "U8", scales_shape),
                ]

                def run(out_, name=tensor.name, shape=shape, entries=entries):
                    per_b, per_s = entries[0].nbytes // shape[0], entries[1].nbytes // shape[0]
                    for e in range(shape[0]):
                        b, s = expert_codes((1,) + shape[1:])
                        out_.write_part(name + BLOCKS_SUFFIX, e * per_b, b)
                        out_.write_part(name + SCALES_SUFFIX, e * per_s, s)

                jobs.append(Job(entries, run))
            continue
        shape = dense_shape(cfg, short)
        if short.endswith(("layernorm.weight", "model.norm.weight")):
            std, mean = 0.05, 1.0
        elif short.endswith("sinks"):
            std, mean = 0.5, 0.0
        elif short.endswith("bias"):
            std, mean = 0.01, 0.0
        elif short in ("model.embed_tokens.weight", "lm_head.weight"):
            std, mean = 0.5, 0.0
        else:
            std, mean = cfg.hidden_size**-0.5, 0.0
        entry = TensorEntry(tensor.name, "F32" if float32 else "BF16", shape)

        def run(out_, name=tensor.name, shape=shape, std=std, mean=mean):
            if len(shape) == 2 and shape[0] * shape[1] > 1 << 24:  # large: write in row chunks
                per_row = shape[1] * (4 if float32 else 2)
                for start in range(0, shape[0], 4096):
                    rows = min(4096, shape[0] - start)
                    out_.write_part(
                        name,
                        start * per_row,
                        bf16_noise((rows, shape[1]), std, mean, float32).view(torch.uint8).numpy().reshape(-1),
                    )
            else:
                out_.write(name, bf16_noise(shape, std, mean, float32).view(torch.uint8).numpy().reshape(-1))

        jobs.append(Job([entry], run))

    class _NoBar:
        def update(self, n):
            pass

    metadata = {"format": "pt", EXPERT_LAYOUT_KEY: "in-out"} if dense_experts else {"format": "pt"}
    write_shards(out, jobs, max_shard_size=max_shard_size, metadata=metadata, progress=_NoBar())
    config = dict(config)
    if dense_experts:
        config.pop("quantization_config", None)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    if with_tokenizer:
        for name, content in tokenizer_files(cfg.vocab_size).items():
            (out / name).write_text(json.dumps(content, indent=2, ensure_ascii=False) + "\n")
    return out
