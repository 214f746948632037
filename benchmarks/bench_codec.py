"""Codec throughput against the gguf package's numpy MXFP4, in the same process on the same data.

    python benchmarks/bench_codec.py            # 256 MiB bf16 tensor (128 Mi elements)
    python benchmarks/bench_codec.py --mib 64   # smaller, quicker

Prints Gelem/s per operation, the ratio to the peer, and each call's temporary memory (peak traced
allocation minus the output's own size; numpy reports its buffers to tracemalloc). The peer quantizes
at ~0.01 Gelem/s, so it runs on a 2 Mi-element slice of the same tensor; its speed does not depend on
size. Times are the best of --repeat runs: this machine is shared and noisy, so compare ratios.
"""

from __future__ import annotations

import argparse
import os
import platform
import tracemalloc

import torch
from gguf import GGMLQuantizationType
from gguf import quants as gguf_quants
from timing import best_time

import mxfp4
from mxfp4 import layout
from mxfp4.codec import native

PEER_QUANT_ELEMENTS = 1 << 21


def temporary_bytes(fn, output_bytes: int) -> int:
    tracemalloc.start()
    tracemalloc.reset_peak()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return max(0, peak - output_bytes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=256, help="size of the bf16 input tensor in MiB (default 256)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    n = args.mib * 2**20 // 2
    rows = n // 4096
    generator = torch.Generator().manual_seed(0)
    x_bf16 = (torch.randn(rows, 4096, generator=generator) * 0.02).bfloat16()
    x_f32 = x_bf16.float()
    q = mxfp4.quantize(x_bf16)
    blocks, scales = q.blocks.numpy(), q.scales.numpy()
    raw_rows = layout.hf_to_gguf(blocks, scales).reshape(rows, -1)
    print(
        f"mxfp4 {mxfp4.__version__}, native kernels: {native.available()}, threads: {native.thread_count()}, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
    )
    print(f"input: {rows}x4096 = {n / 2**20:.0f} Mi elements ({args.mib} MiB bf16, {2 * args.mib} MiB f32)\n")

    results = []

    def record(what, seconds, elements, peer_seconds=None, peer_elements=None, temp=None):
        rate = elements / seconds / 1e9
        peer = peer_elements / peer_seconds / 1e9 if peer_seconds else None
        results.append((what, rate, peer, temp))

    # --- dequantize ---
    out_bf16 = torch.empty(rows, 4096, dtype=torch.bfloat16)
    out_bf16.zero_()
    t_peer = best_time(lambda: gguf_quants.dequantize(raw_rows, GGMLQuantizationType.MXFP4), 1)
    t = best_time(lambda: mxfp4.dequantize(q.blocks, q.scales, torch.bfloat16), args.repeat)
    temp = temporary_bytes(lambda: mxfp4.dequantize(blocks, scales, "bfloat16"), n * 2)
    record("dequantize -> bf16 (new array)", t, n, t_peer, n, temp)
    t = best_time(lambda: mxfp4.dequantize(q.blocks, q.scales, torch.bfloat16, out=out_bf16), args.repeat)
    record("dequantize -> bf16 (out= reused)", t, n, t_peer, n)
    t = best_time(lambda: mxfp4.dequantize(blocks, scales, "float32"), args.repeat)
    record(
        "dequantize -> f32 (new array)",
        t,
        n,
        t_peer,
        n,
        temporary_bytes(lambda: mxfp4.dequantize(blocks, scales), n * 4),
    )

    # --- quantize ---
    peer_x = x_f32.numpy()[: PEER_QUANT_ELEMENTS // 4096]
    t_peer = best_time(lambda: gguf_quants.quantize(peer_x, GGMLQuantizationType.MXFP4), 1)
    out_bytes = n // 32 * 17
    for label, x, rule, rounding in [
        ("quantize bf16 floor/rne", x_bf16, "floor", "rne"),
        ("quantize bf16 round_up/rne", x_bf16, "round_up", "rne"),
        ("quantize bf16 even/rne", x_bf16, "even", "rne"),
        ("quantize bf16 mse/rne", x_bf16, "mse", "rne"),
        ("quantize f32 floor/ggml (= gguf bytes)", x_f32, "floor", "ggml"),
        ("quantize f32 floor/rne", x_f32, "floor", "rne"),
    ]:
        t = best_time(lambda: mxfp4.quantize(x, scale_rule=rule, rounding=rounding), args.repeat)
        temp = temporary_bytes(
            lambda: mxfp4.quantize(x.numpy() if x.dtype == torch.float32 else x, scale_rule=rule, rounding=rounding),
            out_bytes,
        )
        record(label, t, n, t_peer, PEER_QUANT_ELEMENTS, temp)

    floor_rate = next(r for w, r, *_ in results if w == "quantize bf16 floor/rne")
    mse_rate = next(r for w, r, *_ in results if w == "quantize bf16 mse/rne")
    print(f"{'operation':42s} {'mxfp4 Gelem/s':>14s} {'gguf Gelem/s':>13s} {'ratio':>8s} {'temp memory':>12s}")
    for what, rate, peer, temp in results:
        ratio = f"{rate / peer:7.1f}x" if peer else ""
        temp_text = f"{temp / 2**20:9.1f} MiB" if temp is not None else ""
        print(f"{what:42s} {rate:14.3f} {peer or 0:13.4f} {ratio:>8s} {temp_text:>12s}")
    print(f"\nmse costs {floor_rate / mse_rate:.2f}x floor")


if __name__ == "__main__":
    main()
