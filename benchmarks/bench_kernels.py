"""GPU kernels at gpt-oss shapes, each against a peer in the same process (issue 4's targets).

    python benchmarks/bench_kernels.py                 # gpt-oss-20b shapes, on the GPU
    python benchmarks/bench_kernels.py --model 120b
    python benchmarks/bench_kernels.py --smoke         # tiny shapes on the CPU under TRITON_INTERPRET=1:
                                                       # checks the script runs; its times mean nothing

Prints, with the device name:
- codec: Triton dequantize / quantize throughput in TB/s (bytes read + written) and % of the device's HBM
  bandwidth; the torch twin on the same GPU as the peer;
- MoE layer at batch 1 (top-k of E experts, MXFP4 decoded in registers) and at prefill (2048 tokens)
  against the same layer with bf16 weights as a grouped GEMM (one cuBLAS matmul per expert over its
  routed tokens, the routing resolved before timing, so the peer pays only for its arithmetic);
- whole-model batch-1 greedy decode tokens/s (decode steps only), Triton backend eager and with a CUDA
  graph against the torch backend, and the peak GPU memory with a 4k (20b) / 64k (120b) context against
  what `mxfp4 fit` predicts for it (issue 5 asks for agreement within 10%).
"""

from __future__ import annotations

import argparse
import os
import sys

if "--smoke" in sys.argv:
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported

import torch

import mxfp4
from mxfp4.fit import plan as memory_fit
from mxfp4.gpt_oss.config import GptOssConfig
from mxfp4.model.kernels import moe_torch, moe_triton
from mxfp4.model.random_weights import random_experts, random_model
from mxfp4.testing import synthetic

HBM_BYTES_PER_S = {"H100": 3.35e12, "H200": 4.8e12, "A100": 2.0e12}  # SXM parts, the vendors' figures
SMOKE_SHAPE = dict(
    num_hidden_layers=2,
    num_local_experts=8,
    num_experts_per_tok=4,
    hidden_size=64,
    intermediate_size=64,
    vocab_size=256,
)


def seconds(fn, smoke: bool) -> float:
    if smoke:
        import time

        start = time.perf_counter()
        fn()
        return time.perf_counter() - start
    import triton.testing

    return triton.testing.do_bench(fn, warmup=25, rep=200) / 1e3  # median of CUDA-event timings, L2 flushed


def peak_bandwidth(device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((bw for key, bw in HBM_BYTES_PER_S.items() if key in name), None)


def codec(device, smoke: bool) -> None:
    rows, cols = (64, 256) if smoke else (32 * 5760, 2880)  # one layer's gate_up of gpt-oss-20b
    x = (torch.randn(rows, cols, device=device) * 0.02).bfloat16()
    packed = mxfp4.quantize(x, backend="triton")
    out = torch.empty_like(x)
    n = rows * cols
    peak = peak_bandwidth(device)
    print(f"\ncodec ({rows}x{cols} bf16)           TB/s   % of HBM   vs torch twin")
    for name, bytes_moved, ours, twin in (
        (
            "dequantize -> bf16",
            n // 2 + n // 32 + 2 * n,
            lambda: mxfp4.dequantize(packed.blocks, packed.scales, torch.bfloat16, backend="triton", out=out),
            lambda: mxfp4.dequantize(packed.blocks, packed.scales, torch.bfloat16, backend="torch", out=out),
        ),
        (
            "quantize bf16 (floor)",
            2 * n + n // 2 + n // 32,
            lambda: mxfp4.quantize(x, backend="triton"),
            lambda: mxfp4.quantize(x, backend="torch"),
        ),
    ):
        t_ours, t_twin = seconds(ours, smoke), seconds(twin, smoke)
        rate = bytes_moved / t_ours
        share = f"{100 * rate / peak:9.1f}%" if peak else "        -"
        print(f"  {name:30s} {rate / 1e12:6.3f} {share}   {t_twin / t_ours:10.2f}x")


def moe_layer(config: GptOssConfig, device, smoke: bool) -> None:
    e, h, i, k = config.num_local_experts, config.hidden_size, config.intermediate_size, config.num_experts_per_tok
    gate_up, down = random_experts(config, device, torch.Generator(device=device).manual_seed(0))
    dtype = torch.float32 if smoke else torch.bfloat16
    gate_up_bias, down_bias = (
        torch.zeros(e, 2 * i, dtype=dtype, device=device),
        torch.zeros(e, h, dtype=dtype, device=device),
    )
    dense = [mxfp4.dequantize(*w, dtype) for w in (gate_up, down)]  # the bf16 peer's weights
    expert_bytes = k * (2 * i * h + h * i) * 17 // 32
    print(
        f"\nMoE layer ({e} experts, top {k}, hidden {h}, intermediate {i}; {expert_bytes / 1e6:.1f} MB of MXFP4 "
        "expert bytes per token)"
    )
    for tokens in (1, 64) if smoke else (1, 2048):
        x = torch.randn(tokens, h, dtype=dtype, device=device)
        top, indices = torch.randn(tokens, e, device=device).topk(k, dim=-1)
        scores = top.softmax(-1).to(dtype)
        ours = seconds(
            lambda: moe_triton.experts(x, indices, scores, gate_up, gate_up_bias, down, down_bias, 7.0), smoke
        )
        groups = moe_torch.expert_groups(
            indices, scores
        )  # resolved before the clock starts: the peer pays only for its matmuls
        peer = seconds(
            lambda: moe_torch.grouped_experts(x, groups, dense[0], gate_up_bias, dense[1], down_bias, 7.0), smoke
        )
        a = moe_triton.experts(x, indices, scores, gate_up, gate_up_bias, down, down_bias, 7.0).float()
        b = moe_torch.grouped_experts(x, groups, dense[0], gate_up_bias, dense[1], down_bias, 7.0).float()
        agreement = float((a - b).norm() / b.norm())  # the two compute the same layer: a check that the race is fair
        label = "batch 1 (decode)" if tokens == 1 else f"{tokens} tokens (prefill)"
        print(
            f"  {label:24s} MXFP4 kernel {ours * 1e6:9.1f} us   bf16 weights {peer * 1e6:9.1f} us   bf16/MXFP4 time "
            f"{peer / ours:6.2f}x"
            f"   (outputs differ by {agreement:.1e} relative)"
        )


def sweep(config: GptOssConfig, device, smoke: bool) -> None:
    """Time the MoE kernels over tile shapes at decode and prefill sizes: the data for
    moe_triton.block_sizes, whose defaults are not yet tuned on a GPU."""
    import itertools

    from mxfp4.model.kernels.moe_triton import block_sizes

    e, h, i, k = config.num_local_experts, config.hidden_size, config.intermediate_size, config.num_experts_per_tok
    weights = random_experts(config, device, torch.Generator(device=device).manual_seed(0))
    dtype = torch.float32 if smoke else torch.bfloat16
    biases = torch.zeros(e, 2 * i, dtype=dtype, device=device), torch.zeros(e, h, dtype=dtype, device=device)
    print("\nMoE tile sweep (BLOCK_M, BLOCK_N, BLOCK_K): us, fastest first; * = block_sizes()' current choice")
    for tokens in (1, 64) if smoke else (1, 8, 64, 2048):
        x = torch.randn(tokens, h, dtype=dtype, device=device)
        top, indices = torch.randn(tokens, e, device=device).topk(k, dim=-1)
        scores = top.softmax(-1).to(dtype)
        chosen = block_sizes(tokens * k, e)
        results = []
        # --smoke runs the sweep's code on four shapes: the interpreter takes a second or more a shape
        shapes = ((16, 64), (32, 128)) if smoke else ((16, 32, 64, 128), (32, 64, 128, 256))
        for block_n, block_k in itertools.product(*shapes):
            tiles = (chosen[0], block_n, block_k)
            try:
                t = seconds(
                    lambda: moe_triton.experts(
                        x, indices, scores, weights[0], biases[0], weights[1], biases[1], 7.0, tiles=tiles
                    ),
                    smoke,
                )
            except Exception as error:  # a tile that does not fit the GPU's shared memory or registers
                print(f"  {tiles}: failed ({type(error).__name__})")
                continue
            results.append((t, tiles))
        results.sort()
        line = ", ".join(f"{tiles}{'*' if tiles == chosen else ''} {t * 1e6:.1f}" for t, tiles in results[:6])
        print(f"  {tokens:5d} tokens: {line}")


def decode(config: GptOssConfig, device, smoke: bool, context: int) -> None:
    dtype = torch.float32 if smoke else torch.bfloat16
    new_tokens = 4 if smoke else 64
    print(
        f"\nwhole model, batch-1 greedy decode ({config.num_hidden_layers} layers, {config.num_local_experts} experts)"
    )
    for backend in ("triton", "torch"):
        model = random_model(config, device=device, dtype=dtype, backend=backend)
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        prompt = torch.randint(0, config.vocab_size, (1, 16), device=device)
        model.generate(prompt, 2)  # warm-up (kernel compilation)
        elapsed = (
            seconds(lambda m=model: m.generate(prompt, new_tokens), True)
            if smoke
            else _timed_generate(model, prompt, new_tokens)
        )
        print(f"  backend {backend:7s} eager       {new_tokens / elapsed:9.1f} tokens/s")
        if device.type == "cuda" and backend == "triton":
            graphed = _timed_generate(model, prompt, new_tokens, cuda_graph=True)
            print(f"  backend {backend:7s} CUDA graph  {new_tokens / graphed:9.1f} tokens/s")
        if device.type == "cuda" and backend == "triton":
            cache, chunk = model.new_cache(), memory_fit.PREFILL_CHUNK
            with torch.no_grad():  # prefill in chunks, as mxfp4 fit assumes: the cache holds the whole context
                for start in range(0, context, chunk):
                    model(
                        torch.randint(0, config.vocab_size, (1, min(chunk, context - start)), device=device),
                        cache,
                        start=start,
                        last_only=True,
                    )
            measured = torch.cuda.max_memory_allocated()
            weights = sum(t.nbytes for t in list(model.parameters()) + list(model.buffers()))
            predicted = (
                weights + memory_fit.kv_bytes(config, context, 1) + memory_fit.activation_bytes(config, context, 1)
            )
            print(
                f"  peak GPU memory, {context}-token context (chunked prefill): {measured / 2**30:.2f} GiB; "
                f"mxfp4 fit predicts {predicted / 2**30:.2f} GiB without the runtime reserve (measured/predicted "
                f"{measured / predicted:.3f})"
            )
            del cache
        del model


def _timed_generate(model, prompt, new_tokens: int, cuda_graph: bool = False) -> float:
    """Seconds for new_tokens decode steps alone: the time of 2N tokens minus that of N (best of 3
    each), so the prefill and the graph capture, paid once per call, cancel out."""

    def best(n: int) -> float:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        times = []
        for _ in range(3):
            start.record()
            model.generate(prompt, n, cuda_graph=cuda_graph)
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        return min(times)

    return best(2 * new_tokens) - best(new_tokens)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["20b", "120b"], default="20b")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--skip-model", action="store_true", help="Only the codec and MoE-layer figures.")
    parser.add_argument("--sweep", action="store_true", help="Also time the MoE kernels over tile shapes.")
    args = parser.parse_args()
    if not args.smoke and not torch.cuda.is_available():
        parser.error("needs a CUDA GPU (or --smoke to check the script on the CPU)")
    device = torch.device("cpu" if args.smoke else "cuda")
    # The full shapes are mxfp4 fit's presets, so the memory figure is compared with its prediction.
    config = (
        GptOssConfig.from_hf_dict(synthetic.hf_config(**SMOKE_SHAPE))
        if args.smoke
        else memory_fit.load_model_facts(f"gpt-oss-{args.model}")[1]
    )
    name = "CPU (Triton interpreter: times mean nothing)" if args.smoke else torch.cuda.get_device_name(device)
    print(f"device: {name}; torch {torch.__version__}")
    codec(device, args.smoke)
    moe_layer(config, device, args.smoke)
    if args.sweep:
        sweep(config, device, args.smoke)
    if not args.skip_model:
        decode(config, device, args.smoke, context=64 if args.smoke else (4096 if args.model == "20b" else 65536))


if __name__ == "__main__":
    main()
