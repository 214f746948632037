"""Fine-tunes the bundled model (examples/tiny-gpt-oss-trained, trained on Python code) with a PEFT LoRA on
another offline text, English prose: the documentation topics that ship inside Python
(pydoc_data/topics.py). The adapter covers attention (q, k, v, o) and both expert parameters, as a
gpt-oss fine-tune would. A topic is held out when the first byte of sha1(its name) is below 26 (~10%).

The base is what a fine-tuner starts from: the MXFP4 release dequantized to bf16 (mxfp4 convert --to bf16),
trained on in float32 by transformers + PEFT on the CPU, deterministic (seed 0), a few minutes on 2 cores.

Writes:  tiny-gpt-oss-trained/lora-docs/            the adapter (adapter_config.json + adapter_model.safetensors)
         tiny-gpt-oss-trained/docs-heldout.tokens   2,048 held-out prose token ids
Run: python examples/finetune_lora_tiny.py [--steps 1000]
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mxfp4.convert import convert

TRAINED = Path(__file__).with_name("tiny-gpt-oss-trained")
SEQUENCE, BATCH = 128, 8


def prose() -> tuple[list[str], list[str]]:
    from pydoc_data.topics import topics

    train, heldout = [], []
    for name in sorted(topics):
        (heldout if hashlib.sha1(name.encode()).digest()[0] < 26 else train).append(topics[name])
    return train, heldout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1000)
    args = parser.parse_args()
    from peft import LoraConfig, get_peft_model
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    tokenizer = Tokenizer.from_file(str(TRAINED / "mxfp4" / "tokenizer.json"))
    eos = tokenizer.token_to_id("<|endoftext|>")
    train_texts, heldout_texts = prose()
    ids = np.concatenate([np.array(tokenizer.encode(t).ids + [eos]) for t in train_texts]).astype(np.int64)
    heldout = np.concatenate([np.array(tokenizer.encode(t).ids + [eos]) for t in heldout_texts]).astype(np.int64)
    print(f"{len(train_texts)} train topics ({ids.size:,} tokens), {len(heldout_texts)} held out ({heldout.size:,})")

    with tempfile.TemporaryDirectory() as scratch:
        base = Path(scratch) / "bf16"
        convert(TRAINED / "mxfp4", base, to="bf16")  # the dequantized release a fine-tuner trains on
        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    lora = LoraConfig(
        r=8,
        lora_alpha=16,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        target_parameters=["mlp.experts.gate_up_proj", "mlp.experts.down_proj"],
    )
    model = get_peft_model(model, lora).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-4)
    rng = np.random.default_rng(0)
    start = time.time()
    for step in range(args.steps):
        offsets = rng.integers(0, ids.size - SEQUENCE - 1, size=BATCH)
        batch = torch.from_numpy(np.stack([ids[o : o + SEQUENCE] for o in offsets]))
        loss = model(batch, labels=batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step % 50 == 0 or step == args.steps - 1:
            print(f"step {step}: loss {loss.item():.3f} ({time.time() - start:.0f} s)", flush=True)
    out = TRAINED / "lora-docs"
    shutil.rmtree(out, ignore_errors=True)
    model.save_pretrained(out)
    (out / "README.md").unlink(missing_ok=True)  # PEFT's model-card template says nothing about this adapter
    np.savetxt(TRAINED / "docs-heldout.tokens", heldout[None, :2048], fmt="%d")
    print(f"wrote {out} and {TRAINED / 'docs-heldout.tokens'}")


if __name__ == "__main__":
    main()
