"""Calibrated (GPTQ) quantization against the rounding rules: quality on held-out tokens, and the cost.

1. The bundled trained model (its bf16 form as the source). Calibration: 64 windows of 256 tokens drawn from the
   training split of its corpus (Python's standard library; examples/train_tiny_gpt_oss.py); held out: its
   heldout.tokens, which calibration never sees.
2. A fine-tune, where rounding hurts most: the bundled LoRA (examples/finetune_lora_tiny.py, English prose)
   merged in float32 as the source; calibration from the prose training topics, held out: docs-heldout.tokens.
Each row is measured against its float source: KL mean / p99, delta perplexity, top-1, and the experts' weight
SQNR.
2b. Unseen text: both models calibrated on Python sources they never saw (half of click's and hypothesis's files,
   in three seeded subsets) and held out on the other half and on prose; GPTQ's variants (VARIANTS: column order,
   Hessian weighting) as KL over the best rounding rule's, mean / min / max over the seeds. Goal: at most 0.35x.
3. Cost: a two-layer gpt-oss-20b- (or 120b-) shaped model (32 experts, hidden 2880, dense bf16 experts) calibrated on
   the CPU in its own process (peak RSS from wait4); each layer's seconds from the calibration's report: the first
   a sliding-attention layer that computes the next layer's input, the second a full-attention layer (the last,
   which computes none), extrapolated to 20b (24 layers) and 120b (36 layers of 128 experts), half of each kind.

    python benchmarks/bench_calibrate.py --work DIR [--skip-cost]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
from bench_convert import run_measured

from mxfp4.calibrate.run import convert_calibrated
from mxfp4.convert import convert
from mxfp4.eval.errors_report import aggregate_sqnr, expert_errors
from mxfp4.eval.parity import compare
from mxfp4.finetune import merge_lora
from mxfp4.gpt_oss.presets import GPT_OSS_20B, GPT_OSS_120B
from mxfp4.model import load
from mxfp4.testing import synthetic

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TRAINED = EXAMPLES / "tiny-gpt-oss-trained"
RULES = ("floor", "round_up", "even", "mse")
# GPTQ's variants on unseen text, one change at a time: (column order, Hessian weighting); the last is the default
VARIANTS = (("sequential", "uniform"), ("act", "uniform"), ("act", "routing"))


def _tokenizer():
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(TRAINED / "mxfp4" / "tokenizer.json"))


def code_calibration(windows: int, context: int) -> np.ndarray:
    sys.path.insert(0, str(EXAMPLES))
    from train_tiny_gpt_oss import corpus

    train, _ = corpus()
    tokenizer = _tokenizer()
    picked = [train[i] for i in np.random.default_rng(1).choice(len(train), 4 * windows, replace=False)]
    return np.concatenate([tokenizer.encode(t).ids for t in picked])[: windows * context]


def prose_calibration(windows: int, context: int) -> np.ndarray:
    from pydoc_data.topics import topics

    tokenizer = _tokenizer()
    train = [topics[n] for n in sorted(topics) if hashlib.sha1(n.encode()).digest()[0] >= 26]
    return np.concatenate([tokenizer.encode(t).ids for t in train])[: windows * context]


def quality_table(source: Path, heldout: np.ndarray, calibration: np.ndarray, work: Path, context: int) -> list[dict]:
    reference = load(source)
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    candidates = [(rule, False) for rule in RULES] + [("floor", True), ("mse", True)]
    for rule, gptq in candidates:
        out = work / f"{'gptq' if gptq else 'round'}-{rule}"
        start = time.perf_counter()
        if gptq:
            convert_calibrated(source, out, calibration, scale_rule=rule, context=256, force=True)
        else:
            convert(source, out, to="mxfp4", scale_rule=rule, force=True)
        seconds = time.perf_counter() - start
        parity = compare(reference, load(out), heldout, context=context)
        rows.append(
            {
                "method": f"GPTQ + {rule}" if gptq else rule,
                "kl_mean": parity.kl_mean,
                "kl_p99": parity.kl_p99,
                "delta_ppl": parity.delta_ppl,
                "top1": parity.top1_agreement,
                "expert_sqnr_db": aggregate_sqnr(expert_errors(source, out)),
                "seconds": seconds,
            }
        )
    return rows


def unseen_code() -> tuple[list[Path], list[Path]]:
    """Python sources the bundled model never saw (it trained on the standard library): click's and hypothesis's,
    installed with the package and its dev extra, shuffled once and split into calibration and held-out files."""
    import random

    import click
    import hypothesis

    files = sorted(p for package in (click, hypothesis) for p in Path(package.__file__).parent.rglob("*.py"))
    random.Random(0).shuffle(files)
    return files[: len(files) // 2], files[len(files) // 2 :]


def ids_of(files: list[Path], count: int) -> np.ndarray:
    tokenizer, ids = _tokenizer(), []
    for file in files:
        ids += tokenizer.encode(file.read_text(errors="replace")).ids
        if len(ids) >= count:
            break
    return np.array(ids[:count], dtype=np.int64)


def heldout_ratios(source: Path, work: Path, heldout: dict[str, np.ndarray], seeds: int, tokens: int) -> list[dict]:
    """Mean KL of GPTQ (each variant: column order and Hessian weighting) over the best rounding rule's, on each
    held-out set, for calibration subsets drawn from the unseen code with ``seeds`` seeds: nothing calibration sees
    is in a held-out set."""
    import random

    reference = load(source)
    work.mkdir(parents=True, exist_ok=True)
    best = {}
    for rule in RULES:
        convert(source, work / rule, to="mxfp4", scale_rule=rule, force=True)
        model = load(work / rule)
        for name, ids in heldout.items():
            kl = compare(reference, model, ids, context=256).kl_mean
            best[name] = min(best.get(name, kl), kl)
    calibration_files, _ = unseen_code()
    rows = []
    for order, weighting in VARIANTS:
        for seed in range(seeds):
            files = list(calibration_files)
            random.Random(seed + 1).shuffle(files)
            ids = ids_of(files, tokens)
            convert_calibrated(source, work / "gptq", ids, order=order, weighting=weighting, context=256, force=True)
            model = load(work / "gptq")
            for name, ids in heldout.items():
                kl = compare(reference, model, ids, context=256).kl_mean
                row = {"order": order, "weighting": weighting, "seed": seed, "heldout": name, "kl_mean": kl}
                rows.append({**row, "ratio": kl / best[name]})
    return rows


def print_ratios(title: str, rows: list[dict]) -> None:
    print(f"\n{title}")
    print("| GPTQ column order | Hessian weighting | held-out set | KL / best rounding rule: mean | min | max |")
    print("|---|---|---|---:|---:|---:|")
    for order, weighting in VARIANTS:
        for name in dict.fromkeys(r["heldout"] for r in rows):
            ratios = [
                r["ratio"] for r in rows if (r["order"], r["weighting"], r["heldout"]) == (order, weighting, name)
            ]
            print(f"| {order} | {weighting} | {name} | {np.mean(ratios):.3f} | {min(ratios):.3f} | {max(ratios):.3f} |")


def heldout(work: Path, results: dict, seeds: int, tokens: int) -> None:
    _, eval_files = unseen_code()
    sets = {
        "unseen code (click, hypothesis)": ids_of(eval_files, 8192),
        "prose (docs-heldout.tokens)": np.loadtxt(TRAINED / "docs-heldout.tokens", dtype=np.int64),
    }
    results["heldout_bundled"] = heldout_ratios(TRAINED / "bf16", work / "heldout-bundled", sets, seeds, tokens)
    print_ratios(
        f"Bundled model, GPTQ on {tokens:,} unseen code tokens, {seeds} calibration seeds", results["heldout_bundled"]
    )
    float_merge = work / "docs-float"
    if not (float_merge / "config.json").exists():
        merge_lora(TRAINED / "mxfp4", TRAINED / "lora-docs", float_merge, to="bf16", dtype="float32", force=True)
    results["heldout_fine_tune"] = heldout_ratios(float_merge, work / "heldout-docs", sets, seeds, tokens)
    print_ratios(
        f"LoRA fine-tune, GPTQ on {tokens:,} unseen code tokens, {seeds} calibration seeds",
        results["heldout_fine_tune"],
    )


def print_table(title: str, rows: list[dict]) -> None:
    best = min(r["kl_mean"] for r in rows if not r["method"].startswith("GPTQ"))
    print(f"\n{title}")
    print("| method | KL mean | KL p99 | delta ppl | top-1 | expert SQNR dB | KL / best rounding |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['method']} | {r['kl_mean']:.6f} | {r['kl_p99']:.5f} | {r['delta_ppl']:+.4f} "
            f"| {100 * r['top1']:.2f}% | {r['expert_sqnr_db']:.2f} | {r['kl_mean'] / best:.2f} |"
        )


COST_CHILD = """
import json, sys, numpy as np
from mxfp4.calibrate.run import convert_calibrated
src, dst, windows, context, report = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
ids = np.random.default_rng(0).integers(0, 2048, size=windows * context)
result = convert_calibrated(src, dst, ids, context=context, scale_rule="mse", force=True)
seconds = [layer.seconds for layer in result.layers]
json.dump({"tokens_per_expert": result.layers[0].tokens_per_expert, "layer_seconds": seconds}, open(report, "w"))
"""


def cost(work: Path, windows: int, context: int, model: str = "20b") -> dict:
    """Seconds of one 20b- or 120b-shaped layer (the first of two) and peak RSS (read from the kernel) of the whole
    calibrated conversion, in a child."""
    src = work / f"gpt-oss-{model}-2-layer-dense"
    if not (src / "config.json").exists():
        shape = GPT_OSS_20B if model == "20b" else GPT_OSS_120B
        config = synthetic.hf_config(**{**shape, "num_hidden_layers": 2, "vocab_size": 2048})
        synthetic.write_checkpoint(src, config, dense_experts=True)
    report = work / "calibrated-layer.json"
    child = [sys.executable, "-c", COST_CHILD, str(src), str(work / "calibrated-layer"), str(windows), str(context)]
    seconds, rss = run_measured([*child, str(report)])  # the same measurement as the conversion benchmark's
    return {
        "total_seconds": seconds,
        "peak_rss_gib": rss,
        "tokens": windows * context,
        **json.loads(report.read_text()),
    }


def quality(work: Path, results: dict) -> None:
    heldout = np.loadtxt(TRAINED / "heldout.tokens", dtype=np.int64)
    results["bundled"] = quality_table(TRAINED / "bf16", heldout, code_calibration(64, 256), work / "bundled", 256)
    print_table("Bundled trained model (bf16 source), 4,096 held-out code tokens", results["bundled"])

    float_merge = work / "docs-float"
    merge_lora(TRAINED / "mxfp4", TRAINED / "lora-docs", float_merge, to="bf16", dtype="float32", force=True)
    prose = np.loadtxt(TRAINED / "docs-heldout.tokens", dtype=np.int64)
    results["fine_tune"] = quality_table(float_merge, prose, prose_calibration(64, 256), work / "docs", 128)
    print_table("LoRA fine-tune merged in float32 (source), 2,048 held-out prose tokens", results["fine_tune"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--skip-cost", action="store_true")
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--skip-heldout", action="store_true", help="Skip the unseen-text ratios over seeds.")
    parser.add_argument("--seeds", type=int, default=3, help="Calibration subsets for the unseen-text ratios.")
    parser.add_argument("--heldout-tokens", type=int, default=16384, help="Calibration tokens for those ratios.")
    parser.add_argument("--cost-windows", type=int, default=16)
    parser.add_argument("--cost-context", type=int, default=1024)
    parser.add_argument("--cost-model", choices=["20b", "120b"], default="20b", help="The layer's shape.")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    results = {}

    if not args.skip_quality:
        quality(args.work, results)
    if not args.skip_heldout:
        heldout(args.work, results, args.seeds, args.heldout_tokens)
    if not args.skip_cost:
        measured = cost(args.work, args.cost_windows, args.cost_context, args.cost_model)
        results["cost"] = measured
        sliding, full = measured["layer_seconds"]
        layers, experts = (24, 32) if args.cost_model == "20b" else (36, 128)
        print(
            f"\ngpt-oss-{args.cost_model}-shaped layers ({experts} experts, hidden 2880), {measured['tokens']:,} "
            f"calibration tokens: {sliding:.1f} s a sliding-attention layer (computing the next layer's input), "
            f"{full:.1f} s a full-attention one (the last: no next input); the whole conversion "
            f"{measured['total_seconds']:.1f} s, peak RSS {measured['peak_rss_gib']:.2f} GiB; extrapolated to the "
            f"whole model ({layers} layers, half of each kind): {layers * (sliding + full) / 2 / 60:.0f} min"
        )
    (args.work / "bench_calibrate.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
