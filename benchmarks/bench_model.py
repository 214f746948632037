"""Decode speed of the reference model's torch path against transformers, same process, same weights.

    python benchmarks/bench_model.py            # a small gpt-oss-shaped model (8 layers, 16 experts)

Builds a synthetic MXFP4 checkpoint, then times greedy decoding (a 32-token prompt, 64 new tokens,
batch 1) with mxfp4.model (experts kept packed, decoded per routed expert) and with transformers'
GptOssForCausalLM (which dequantizes every expert to dense at load). Prints tokens/s and the ratio;
times are the best of --repeat runs.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from timing import best_time

import mxfp4.model
from mxfp4.testing import synthetic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=64)
    args = parser.parse_args()
    import transformers
    from transformers import AutoModelForCausalLM

    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    config = synthetic.hf_config(
        num_hidden_layers=8,
        num_local_experts=16,
        num_experts_per_tok=4,
        hidden_size=512,
        intermediate_size=512,
        head_dim=64,
        num_attention_heads=8,
        num_key_value_heads=2,
        vocab_size=8192,
        sliding_window=128,
    )
    directory = Path(tempfile.mkdtemp()) / "small"
    synthetic.write_checkpoint(directory, config)
    prompt = torch.randint(0, 8000, (1, 32))
    print(
        f"model: 8 layers, 16 experts (top 4), hidden 512, vocab 8192; {torch.get_num_threads()} threads; torch "
        f"{torch.__version__}"
    )
    print(f"{'implementation':42s} {'dtype':9s} {'tokens/s':>9s} {'vs transformers':>16s}")
    for dtype in (torch.float32, torch.bfloat16):
        ours = mxfp4.model.load(directory, dtype=dtype)
        theirs = AutoModelForCausalLM.from_pretrained(directory, dtype=dtype).eval()
        ours_s = best_time(lambda: ours.generate(prompt, args.new_tokens), args.repeat)
        with torch.no_grad():
            theirs_s = best_time(
                lambda: theirs.generate(
                    prompt, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False
                ),
                args.repeat,
            )
        name = str(dtype).removeprefix("torch.")
        print(
            f"{'mxfp4.model (torch path, packed experts)':42s} {name:9s} {args.new_tokens / ours_s:9.1f} "
            f"{theirs_s / ours_s:15.2f}x"
        )
        print(
            f"{'transformers GptOssForCausalLM (dense)':42s} {name:9s} {args.new_tokens / theirs_s:9.1f} {1.0:15.2f}x"
        )


if __name__ == "__main__":
    main()
