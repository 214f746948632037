"""Trains examples/tiny-gpt-oss-trained/: a small gpt-oss-architecture model whose perplexity means
something, shipped with the repo for evaluation and as the bundled default.

Corpus: the Python standard library's own .py files (present offline on any machine with Python).
A file is held out when the first byte of sha1(its path relative to the stdlib) is below 26 (~10%),
a fixed rule, so the split is the same everywhere. Tokenizer: byte-level BPE with 1,024 tokens
(the `tokenizers` package), special tokens last. Model: gpt-oss architecture (both attention types,
sinks, 4 experts, top-2, YaRN), ~1.3 M parameters, trained with transformers' GptOssForCausalLM on
the CPU (batches of 8 x 128 tokens), deterministic (seed 0), minutes on 2 cores.

Writes:  tiny-gpt-oss-trained/bf16/      HF checkpoint, dense bf16 experts (the "fine-tune")
         tiny-gpt-oss-trained/mxfp4/     the same model converted to MXFP4 (mxfp4 convert, round_up)
         tiny-gpt-oss-trained/heldout.tokens   4,096 held-out token ids (whitespace-separated)
Run: python examples/train_tiny_gpt_oss.py [--steps 600]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sysconfig
import time
from pathlib import Path

import numpy as np
import torch

OUT = Path(__file__).with_name("tiny-gpt-oss-trained")
SPECIAL = ["<|startoftext|>", "<|endoftext|>", "<|return|>", "<|start|>", "<|message|>", "<|end|>", "<|channel|>"]
VOCAB = 1024
SEQUENCE, BATCH = 128, 8


def corpus() -> tuple[list[str], list[str]]:
    root = Path(sysconfig.get_paths()["stdlib"])
    train, heldout = [], []
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root).as_posix()
        if "site-packages" in relative or relative.startswith(("test/", "idlelib/", "lib2to3/tests")):
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        (heldout if hashlib.sha1(relative.encode()).digest()[0] < 26 else train).append(text)
    return train, heldout


def train_tokenizer(texts: list[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB - len(SPECIAL), initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tokenizer.train_from_iterator(texts, trainer)
    tokenizer.add_special_tokens(SPECIAL)
    return tokenizer


def config(vocab: int) -> dict:
    from mxfp4.testing import synthetic

    c = synthetic.hf_config(
        num_hidden_layers=4,
        num_local_experts=4,
        num_experts_per_tok=2,
        hidden_size=128,
        intermediate_size=128,
        head_dim=32,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=vocab,
        sliding_window=64,
    )
    c.pop("quantization_config")
    c["rope_scaling"]["factor"] = 4.0  # YaRN over a 4x longer context than trained on, as gpt-oss does (32x)
    c["rope_scaling"]["original_max_position_embeddings"] = SEQUENCE
    c["max_position_embeddings"] = 4 * SEQUENCE
    c["initial_context_length"] = SEQUENCE
    c["bos_token_id"], c["eos_token_id"], c["pad_token_id"] = vocab - 7, vocab - 5, vocab - 6
    return c


def record_expert_layout(path: Path) -> None:
    """Say in the file's header that its experts are transformers' [E, in, out]: the model is square (hidden ==
    intermediate) and trained from scratch, so neither shape nor content can show it, and readers refuse what
    nothing shows (this script knows: it saved them)."""
    from safetensors.torch import load_file, save_file

    from mxfp4.gpt_oss.tensors import EXPERT_LAYOUT_KEY

    save_file(load_file(str(path)), str(path), metadata={"format": "pt", EXPERT_LAYOUT_KEY: "in-out"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=600)
    args = parser.parse_args()
    from transformers import GptOssConfig, GptOssForCausalLM

    torch.manual_seed(0)
    np.random.seed(0)
    train_texts, heldout_texts = corpus()
    tokenizer = train_tokenizer(train_texts)
    eos = tokenizer.token_to_id("<|endoftext|>")
    ids = np.concatenate([np.array(tokenizer.encode(t).ids + [eos]) for t in train_texts]).astype(np.int64)
    heldout = np.concatenate([np.array(tokenizer.encode(t).ids + [eos]) for t in heldout_texts]).astype(np.int64)
    print(
        f"{len(train_texts)} train files ({ids.size:,} tokens), {len(heldout_texts)} held-out files ({heldout.size:,} "
        "tokens)"
    )

    cfg = config(VOCAB)
    model = GptOssForCausalLM(GptOssConfig(**cfg)).float().train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=args.steps, pct_start=0.1)
    rng = np.random.default_rng(0)
    start = time.time()
    for step in range(args.steps):
        offsets = rng.integers(0, ids.size - SEQUENCE - 1, size=BATCH)
        batch = torch.from_numpy(np.stack([ids[o : o + SEQUENCE] for o in offsets]))
        loss = model(batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        if step % 100 == 0 or step == args.steps - 1:
            print(f"step {step}: loss {loss.item():.3f} ({time.time() - start:.0f} s)", flush=True)

    shutil.rmtree(OUT, ignore_errors=True)
    (OUT / "bf16").mkdir(parents=True)
    model.eval().to(torch.bfloat16).save_pretrained(OUT / "bf16", safe_serialization=True)
    record_expert_layout(OUT / "bf16" / "model.safetensors")
    tokenizer.save(str(OUT / "bf16" / "tokenizer.json"))
    (OUT / "bf16" / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": "<|startoftext|>",
                "eos_token": "<|endoftext|>",
                "pad_token": "<|endoftext|>",
                "model_max_length": 4 * SEQUENCE,
                "clean_up_tokenization_spaces": False,
            },
            indent=2,
        )
        + "\n"
    )
    np.savetxt(OUT / "heldout.tokens", heldout[:4096][None], fmt="%d")

    from mxfp4.convert import convert

    convert(OUT / "bf16", OUT / "mxfp4", to="mxfp4", scale_rule="round_up")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
