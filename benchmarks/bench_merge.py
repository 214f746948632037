"""merge-lora at gpt-oss-120b width: time and peak RSS against a plain conversion of the same base.

Builds (once, in --work) two full-width 120b layers (128 experts, hidden 2880; 5.8 GB of MXFP4 experts) and a
PEFT-layout adapter of rank 16 on every expert parameter and on q/v (written directly: a PEFT run at this size
would need the whole dequantized model in memory, which is the problem merge-lora exists to avoid). Each run is
its own process, so its peak RSS (wait4) is its own; outputs are fsync'd before the clock stops.

    python benchmarks/bench_merge.py --work DIR [--layers 2] [--rank 16]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch
from bench_convert import run_measured, size_of
from safetensors.torch import save_file

from mxfp4.gpt_oss.presets import GPT_OSS_120B
from mxfp4.testing import synthetic


def write_adapter(path: Path, config: dict, rank: int, seed: int = 0) -> None:
    """A LoRA adapter in PEFT's layout (FORMATS.md): experts A [E r, in], B [out, E r]; linears A [r, in],
    B [out, r]."""
    generator = torch.Generator().manual_seed(seed)
    e, h, i = config["num_local_experts"], config["hidden_size"], config["intermediate_size"]
    q, kv = config["num_attention_heads"] * config["head_dim"], config["num_key_value_heads"] * config["head_dim"]
    tensors = {}

    def pair(module: str, a_shape, b_shape):
        stem = f"base_model.model.{module}"
        tensors[f"{stem}.lora_A.weight"] = torch.randn(a_shape, generator=generator) * 0.01
        tensors[f"{stem}.lora_B.weight"] = torch.randn(b_shape, generator=generator) * 0.01

    for layer in range(config["num_hidden_layers"]):
        base = f"model.layers.{layer}"
        pair(f"{base}.mlp.experts.base_layer", (e * rank, h), (2 * i, e * rank))  # gate_up
        pair(f"{base}.mlp.experts", (e * rank, i), (h, e * rank))  # down
        pair(f"{base}.self_attn.q_proj", (rank, h), (q, rank))
        pair(f"{base}.self_attn.v_proj", (rank, h), (kv, rank))
    path.mkdir(parents=True, exist_ok=True)
    save_file(tensors, path / "adapter_model.safetensors", metadata={"format": "pt"})
    settings = {
        "peft_type": "LORA",
        "r": rank,
        "lora_alpha": 2 * rank,
        "target_modules": ["q_proj", "v_proj"],
        "target_parameters": ["mlp.experts.gate_up_proj", "mlp.experts.down_proj"],
    }
    (path / "adapter_config.json").write_text(json.dumps(settings, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--rank", type=int, default=16)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    config = synthetic.hf_config(**{**GPT_OSS_120B, "num_hidden_layers": args.layers})
    base, adapter = args.work / f"gpt-oss-120b-{args.layers}-layers", args.work / f"adapter-r{args.rank}"
    if not (base / "config.json").exists():
        synthetic.write_checkpoint(base, config, max_shard_size=5 * 10**9)
    if not (adapter / "adapter_config.json").exists():
        write_adapter(adapter, config, args.rank)
    print(f"base {size_of(base) / 2**30:.2f} GiB, adapter {size_of(adapter) / 2**20:.1f} MiB", flush=True)
    cli = [sys.executable, "-m", "mxfp4.cli"]
    runs = {}
    for target in ("mxfp4", "gguf"):
        out = args.work / ("merged.gguf" if target == "gguf" else "merged")
        convert_out = args.work / ("converted.gguf" if target == "gguf" else "converted")
        seconds, rss = run_measured(
            [*cli, "convert", str(base), str(convert_out), "--to", target, "--quiet", "--force"]
        )
        runs[f"convert -> {target}"] = (seconds, rss)
        merge = [*cli, "merge-lora", str(base), str(adapter), str(out), "--to", target, "--quiet", "--force"]
        runs[f"merge-lora -> {target}"] = run_measured(merge)
        for path in (out, convert_out):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    print(f"\n{'run':24s} {'seconds':>8s} {'peak RSS GiB':>13s} {'vs convert':>11s}")
    for name, (seconds, rss) in runs.items():
        target = name.split("-> ")[1]
        ratio = seconds / runs[f"convert -> {target}"][0]
        print(f"{name:24s} {seconds:8.1f} {rss:13.2f} {ratio:10.2f}x")


if __name__ == "__main__":
    main()
