"""Full-size conversion benchmark (on demand; minutes and tens of GB of disk).

    python benchmarks/bench_convert.py --work /big/disk/dir            # gpt-oss-20b shapes + 2 layers of 120b
    python benchmarks/bench_convert.py --work DIR --skip-120b
    python benchmarks/bench_convert.py --work DIR --every-target wide    # every --to against cp (issue 14's shape)

--every-target times each --to against cp of the source and against cp of the output it wrote (bf16 writes
2.2x the bytes it reads, so its floor is the disk's price for its own output), in alternating rounds.

Builds a synthetic checkpoint with real gpt-oss-20b shapes (random MXFP4 experts, ~13 GB, 3 shards),
then times `mxfp4 convert` to GGUF and to bf16 next to a plain copy of the same bytes and the disk's
measured write speed, and reads each conversion's peak RSS from the kernel (wait4). Each conversion
runs in its own process, so its peak RSS is its own. Outputs are deleted after measuring.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from mxfp4.gpt_oss.presets import GPT_OSS_20B, GPT_OSS_120B
from mxfp4.testing import synthetic


def measure_child(args: list[str]) -> dict:
    """Wall seconds until the output is on disk, peak RSS (GiB) and CPU seconds (user, system) of a child."""
    os.sync()
    start = time.perf_counter()
    child = subprocess.Popen(args)
    _, status, usage = os.wait4(child.pid, 0)
    os.sync()  # the copy baseline is timed to the disk too
    seconds = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"{' '.join(args)} failed with status {status}")
    return {"seconds": seconds, "rss": usage.ru_maxrss / 2**20, "user": usage.ru_utime, "sys": usage.ru_stime}


def run_measured(args: list[str]) -> tuple[float, float]:
    """(wall seconds until the output is on disk, peak RSS in GiB) of a child process."""
    measured = measure_child(args)
    return measured["seconds"], measured["rss"]  # ru_maxrss is KiB on Linux: converted


def size_of(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def timed_copy(files: list[Path], dst: Path) -> float:
    """Seconds for cp (+ sync) of files into a fresh folder dst, removed afterwards."""
    dst.mkdir()
    os.sync()
    start = time.perf_counter()
    for i, path in enumerate(files):
        shutil.copyfile(path, dst / f"{i}-{path.name}")
    os.sync()
    seconds = time.perf_counter() - start
    shutil.rmtree(dst)
    return seconds


def copy_time(src: Path, dst: Path) -> float:
    """Seconds for cp (+ sync) of a checkpoint's safetensors: the baseline every conversion is held to."""
    return timed_copy(sorted(src.glob("*.safetensors")), dst)


def copy_output_time(output: Path, dst: Path) -> float:
    """Seconds for cp (+ sync) of a conversion's output, file or folder: the disk's price for those bytes."""
    return timed_copy(sorted(p for p in output.rglob("*") if p.is_file()) if output.is_dir() else [output], dst)


def write_speed(path: Path, gib: int = 4) -> float:
    """GB/s of writing gib GiB from memory to the disk, fsync included."""
    block = os.urandom(64 * 2**20)
    start = time.perf_counter()
    with open(path, "wb") as f:
        for _ in range(gib * 16):
            f.write(block)
        f.flush()
        os.fsync(f.fileno())
    seconds = time.perf_counter() - start
    path.unlink()
    return gib * 2**30 / seconds / 1e9


def convert(src: Path, dst: Path, target: str) -> dict:
    seconds, rss = run_measured(
        [sys.executable, "-m", "mxfp4.cli", "convert", str(src), str(dst), "--to", target, "--quiet", "--force"]
    )
    out_bytes = size_of(dst)
    shutil.rmtree(dst) if dst.is_dir() else dst.unlink()
    return {"seconds": seconds, "peak_rss_gib": rss, "bytes_out": out_bytes, "write_gb_s": out_bytes / seconds / 1e9}


def median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def alternate(
    src: Path, dst: Path, target: str, rounds: int, work: Path
) -> tuple[float, dict, list[tuple[float, float]]]:
    """Copy and conversion timed in alternation (the disk's speed drifts); medians of each, and the pairs."""
    pairs, runs = [], []
    for _ in range(rounds):
        copy = copy_time(src, work / "copy")
        run = convert(src, dst, target)
        pairs.append((copy, run["seconds"]))
        runs.append(run)
    med = median([r["seconds"] for r in runs])
    chosen = next(r for r in runs if r["seconds"] == med)
    chosen = {
        **chosen,
        "peak_rss_gib": max(r["peak_rss_gib"] for r in runs),
        "all_seconds": [r["seconds"] for r in runs],
    }
    return median([c for c, _ in pairs]), chosen, pairs


WIDE = dict(
    num_hidden_layers=4, num_local_experts=32, num_experts_per_tok=4, hidden_size=2880, intermediate_size=2880,
    head_dim=64, num_attention_heads=64, num_key_value_heads=8, vocab_size=201088, sliding_window=128,
)  # fmt: skip
TARGET_FILES = {"gguf": "out.gguf"}


EVERY_TARGET = ("gguf", "mxfp4", "original", "mlx", "bf16")


def every_target(work: Path, shape: str, rounds: int, targets=EVERY_TARGET) -> None:
    """Every --to against a plain copy of the same files, in alternation (medians), with CPU seconds."""
    src = work / f"{shape}-synthetic"
    if not (src / "config.json").exists():
        config = synthetic.hf_config(**(WIDE if shape == "wide" else GPT_OSS_20B))
        synthetic.write_checkpoint(src, config, max_shard_size=5 * 10**9)
    source_bytes = sum(p.stat().st_size for p in src.glob("*.safetensors"))
    print(f"{shape}: {source_bytes / 2**30:.2f} GiB of safetensors; {os.cpu_count()} cores", flush=True)
    print(
        f"{'--to':9s} {'copy s':>7s} {'convert s':>9s} {'vs copy':>8s} {'paired':>7s} {'out GiB':>8s} "
        f"{'copy out s':>10s} {'vs copy out':>11s} {'CPU user+sys s':>15s} {'peak RSS GiB':>12s}"
    )
    for target in targets:
        copies, runs, out_copies, out_bytes = [], [], [], 0
        for _ in range(rounds):
            copies.append(copy_time(src, work / "copy"))
            dst = work / TARGET_FILES.get(target, "out")
            runs.append(
                measure_child(
                    [sys.executable, "-m", "mxfp4.cli", "convert", str(src), str(dst), "--to", target, "--quiet"]
                )
            )
            out_bytes = size_of(dst)
            out_copies.append(copy_output_time(dst, work / "copy"))
            shutil.rmtree(dst) if dst.is_dir() else dst.unlink()
        copy, out_copy = median(copies), median(out_copies)
        run = sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]
        paired = median([r["seconds"] / c for r, c in zip(runs, copies)])  # each round against its own copy
        print(
            f"{target:9s} {copy:7.1f} {run['seconds']:9.1f} {run['seconds'] / copy:7.2f}x {paired:6.2f}x "
            f"{out_bytes / 2**30:8.2f} "
            f"{out_copy:10.1f} {run['seconds'] / out_copy:10.2f}x {run['user']:7.1f}+{run['sys']:<7.1f} "
            f"{max(r['rss'] for r in runs):12.2f}",
            flush=True,
        )
        print(
            f"{'':9s} rounds (copy / convert / copy of output, s): "
            + ", ".join(f"{c:.1f}/{r['seconds']:.1f}/{o:.1f}" for c, r, o in zip(copies, runs, out_copies)),
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="a directory with ~60 GB free")
    parser.add_argument("--every-target", choices=["wide", "20b"], help="every --to against cp on this shape")
    parser.add_argument(
        "--targets", default=",".join(EVERY_TARGET), help="with --every-target: these --to, comma-separated"
    )
    parser.add_argument("--skip-120b", action="store_true")
    parser.add_argument("--layers-120b", type=int, default=2)
    parser.add_argument("--only", choices=["gguf", "bf16"], help="convert to this target only")
    parser.add_argument(
        "--rounds", type=int, default=3, help="alternating copy / GGUF rounds for the 20b ratio (default 3)"
    )
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.every_target:
        return every_target(args.work, args.every_target, args.rounds, args.targets.split(","))
    results: dict[str, dict] = {}

    disk = write_speed(args.work / "speed.bin")
    print(f"disk write speed: {disk:.2f} GB/s", flush=True)

    src = args.work / "gpt-oss-20b-synthetic"
    if not (src / "config.json").exists():
        start = time.perf_counter()
        synthetic.write_checkpoint(src, synthetic.hf_config(**GPT_OSS_20B), max_shard_size=5 * 10**9)
        print(f"built {src} ({size_of(src) / 2**30:.2f} GiB) in {time.perf_counter() - start:.0f} s", flush=True)
    source_bytes = sum(p.stat().st_size for p in src.glob("*.safetensors"))
    copy = None
    if args.only in (None, "gguf"):
        copy, results["20b -> gguf"], pairs = alternate(src, args.work / "20b.gguf", "gguf", args.rounds, args.work)
        print(
            "copy / gguf seconds per round:",
            ", ".join(f"{c:.1f} / {g:.1f} ({g / c:.2f}x)" for c, g in pairs),
            flush=True,
        )
    if copy is None:
        copy = copy_time(src, args.work / "copy")
    results = {"20b copy": {"seconds": copy, "bytes_out": source_bytes}, **results}
    print(f"plain copy of {source_bytes / 2**30:.2f} GiB: {copy:.1f} s (median)", flush=True)
    if args.only in (None, "bf16"):
        results["20b -> bf16"] = convert(src, args.work / "20b-bf16", "bf16")
        print("bf16", json.dumps(results["20b -> bf16"]), flush=True)

    if not args.skip_120b:
        src120 = args.work / "gpt-oss-120b-layers"
        if not (src120 / "config.json").exists():
            config = synthetic.hf_config(**{**GPT_OSS_120B, "num_hidden_layers": args.layers_120b})
            synthetic.write_checkpoint(src120, config, max_shard_size=5 * 10**9)
        for target, out in [
            t
            for t in (("gguf", args.work / "120b.gguf"), ("bf16", args.work / "120b-bf16"))
            if args.only in (None, t[0])
        ]:
            results[f"120b ({args.layers_120b} layers) -> {target}"] = convert(src120, out, target)
            print(target, json.dumps(results[f"120b ({args.layers_120b} layers) -> {target}"]), flush=True)

    print(
        f"\n{'conversion':28s} {'seconds':>8s} {'vs copy':>8s} {'peak RSS GiB':>13s} {'written GB/s':>13s} "
        f"{'of disk speed':>14s}"
    )
    for name, r in results.items():
        vs_copy = f"{r['seconds'] / copy:7.2f}x" if name.startswith("20b") else ""
        rss = f"{r['peak_rss_gib']:13.2f}" if "peak_rss_gib" in r else ""
        speed = f"{r['bytes_out'] / r['seconds'] / 1e9:13.2f}"
        print(
            f"{name:28s} {r['seconds']:8.1f} {vs_copy:>8s} {rss:>13s} {speed} "
            f"{r['bytes_out'] / r['seconds'] / 1e9 / disk:13.0%}"
        )
    (args.work / "results.json").write_text(json.dumps({"disk_write_gb_s": disk, **results}, indent=2))


if __name__ == "__main__":
    main()
