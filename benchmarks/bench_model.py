"""Prefill and decode speed and peak memory of mxfp4.model against llama.cpp and transformers, same weights.

    python benchmarks/bench_model.py                      # small: 8 layers, 16 experts, hidden 512, vocab 8192
    python benchmarks/bench_model.py --shape wide         # 20b width cut to 4 layers, 32 experts top 4, vocab 201,088
    python benchmarks/bench_model.py --shape wide --layers 24    # gpt-oss-20b's whole geometry (13 GB of weights)
    python benchmarks/bench_model.py --crossover          # where the native C products stop paying (batch sizes)
    python benchmarks/bench_model.py --shape wide --interleave   # native and llama.cpp decode steps taken in turn
    python benchmarks/bench_model.py --shape wide --breakdown    # where a decode step's time goes (+ --int8)
    python benchmarks/bench_model.py --shape wide --int8         # also native-int8 (int8 MoE activations, opt-in)

Builds a synthetic MXFP4 checkpoint (and its GGUF, written by mxfp4 convert), then runs each implementation in
its own child process: prefill of --prompt tokens (batch 1) with the logits of every position (--last-logits:
the last one only), then --new-tokens greedy decode steps from the KV cache. Ours runs with bf16 and with float32
activations (both keep the checkpoint's bf16 weights). Prints the instruction set the C kernels chose, the
machine's read bandwidth measured in the same run (a streaming sum over every core), tokens/s, the ratio to
llama.cpp, each child's peak RSS, and for decoding the bytes of weights one token reads (unembedding + attention
+ the routed experts of every layer), the bandwidth that implies and its share of the floor (bytes / measured
bandwidth: the fastest a decode step can be).
Times are the best of --repeat runs inside each child, and with --rounds N the best of N children per implementation,
run in alternation (this machine's memory bandwidth drifts between minutes); compare ratios, not absolutes.
--interleave loads mxfp4 native and llama.cpp into one process and takes their decode steps in turn, one each,
so both see the same moment of the machine: it prints the median step of each and the median of the per-step
ratios (the least drift-prone decode figure here).
--breakdown times --new-tokens native decode steps (with --int8, native-int8 ones too; bf16 and float32
activations, after a 64-token prompt and 4 steps not counted) with the C entry points wrapped: the dense products,
the one-token MoE, the attention kernel, and the rest (torch's small ops and Python between them), in ms a step,
with the bytes each part reads; and the rest by the module it is spent in (each module's time outside the C calls
and the modules it calls).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from timing import best_time as best

SHAPES = {
    "small": dict(
        num_hidden_layers=8, num_local_experts=16, num_experts_per_tok=4, hidden_size=512, intermediate_size=512,
        head_dim=64, num_attention_heads=8, num_key_value_heads=2, vocab_size=8192, sliding_window=128,
    ),
    "wide": dict(
        num_hidden_layers=4, num_local_experts=32, num_experts_per_tok=4, hidden_size=2880, intermediate_size=2880,
        head_dim=64, num_attention_heads=64, num_key_value_heads=8, vocab_size=201088, sliding_window=128,
    ),
}  # fmt: skip
FMA_STEPS = 50_000_000  # of twelve FMAs a thread: a fraction of a second
IMPLEMENTATIONS = ("mxfp4 native bf16", "mxfp4 native float32", "mxfp4 torch bf16", "llama.cpp", "transformers")
# opt-in (--int8): the native path with int8 activations in each decode step's MoE (approximate, as llama.cpp)
INT8 = ("mxfp4 native-int8 bf16", "mxfp4 native-int8 float32")


def routed_expert_bytes(c: dict, dtype_bytes: int = 2) -> int:
    """Bytes one token's routed experts read in every layer: MXFP4 at 17 bytes per 32 weights, biases bf16."""
    h, i, k = c["hidden_size"], c["intermediate_size"], c["num_experts_per_tok"]
    return c["num_hidden_layers"] * k * ((2 * i * h + h * i) * 17 // 32 + (2 * i + h) * dtype_bytes)


def attention_widths(c: dict) -> tuple[int, int]:
    """The query and the key (= value) projections' widths: heads x head_dim."""
    return c["num_attention_heads"] * c["head_dim"], c["num_key_value_heads"] * c["head_dim"]


def bytes_per_token(c: dict, context: float = 0, dtype_bytes: int = 2) -> int:
    """Bytes one decode step reads at `context` cached positions: the weights (unembedding, each layer's attention
    and router, the routed experts, one embedding row) and the KV cache in bf16 (every position in full-attention
    layers, the window in sliding ones)."""
    h, e = c["hidden_size"], c["num_local_experts"]
    q, kv = attention_widths(c)
    attention = (h * (q + 2 * kv) + q * h) * dtype_bytes + e * h * dtype_bytes
    kept = [context if kind == "full_attention" else min(context, c["sliding_window"]) for kind in c["layer_types"]]
    cache = int(sum(kept) * 2 * kv * dtype_bytes)
    weights = c["vocab_size"] * h * dtype_bytes + c["num_hidden_layers"] * attention + h * dtype_bytes
    return weights + routed_expert_bytes(c, dtype_bytes) + cache


def prefill_flops(c: dict, prompt: int, all_logits: bool) -> float:
    """Floating-point operations of a prefill of `prompt` tokens: the products (attention projections, router, the
    top-k experts, the unembedding of every position or the last) and attention's logits and weighted sums (each
    query against the keys its causal, and for sliding layers windowed, mask allows)."""
    h, i, e, k = c["hidden_size"], c["intermediate_size"], c["num_local_experts"], c["num_experts_per_tok"]
    q, kv = attention_widths(c)
    per_token = c["num_hidden_layers"] * (h * (q + 2 * kv) + q * h + e * h + k * 3 * i * h)
    products = 2.0 * (prompt * per_token + (prompt if all_logits else 1) * c["vocab_size"] * h)
    keys = 0
    for kind in c["layer_types"]:
        window = prompt if kind == "full_attention" else c["sliding_window"]
        keys += sum(min(t + 1, window) for t in range(prompt))
    return products + 2.0 * 2 * q * keys


# ---- children: one implementation each, printing {"prefill_s", "decode_s"} --------------------------------------


def child_mxfp4(directory: Path, backend: str, dtype: str, prompt, new: int, repeat: int, all_logits: bool) -> dict:
    import torch

    import mxfp4.model
    from mxfp4.model.greedy import greedy_token

    model = mxfp4.model.load(directory, backend=backend, dtype=getattr(torch, dtype))
    ids = torch.tensor([prompt])

    def prefill():
        cache = model.new_cache()
        return cache, model(ids, cache, last_only=not all_logits)

    def decode():
        cache, logits = prefill()
        token = greedy_token(logits[:, -1])
        start = time.perf_counter()
        for step in range(new):
            token = greedy_token(model(token, cache, start=len(prompt) + step)[:, -1])
        return time.perf_counter() - start

    with torch.no_grad():
        return {"prefill_s": best(prefill, repeat), "decode_s": min(decode() for _ in range(repeat))}


def open_llama(gguf: Path, prompt, new: int, all_logits: bool = False):
    """llama.cpp on gguf with room for the prompt and `new` tokens, on every core; all_logits: every position's."""
    import llama_cpp

    return llama_cpp.Llama(
        model_path=str(gguf), n_ctx=len(prompt) + new + 8, n_batch=len(prompt), n_threads=os.cpu_count(),
        logits_all=all_logits, verbose=False,
    )  # fmt: skip


def llama_greedy(model) -> int:
    """The argmax of the last evaluated position's logits. Without logits_all llama-cpp-python keeps no scores,
    so the context's last row is read directly."""
    import numpy as np

    if model._logits_all:  # every position kept: the last evaluated row of the scores
        return int(model.scores[model.n_tokens - 1].argmax())
    return int(np.ctypeslib.as_array(model._ctx.get_logits(), shape=(model.n_vocab(),)).argmax())


def child_llama(gguf: Path, prompt, new: int, repeat: int, all_logits: bool) -> dict:
    model = open_llama(gguf, prompt, new, all_logits)

    def prefill():
        model.reset()
        model.eval(prompt)

    def decode():
        prefill()
        token = llama_greedy(model)
        start = time.perf_counter()
        for _ in range(new):
            model.eval([token])
            token = llama_greedy(model)
        return time.perf_counter() - start

    return {"prefill_s": best(prefill, repeat), "decode_s": min(decode() for _ in range(repeat))}


def child_interleaved(directory: Path, gguf: Path, prompt, new: int) -> dict:
    """mxfp4 native and llama.cpp in one process, after a prefill each, decode steps alternating: the per-step
    times of both (each follows its own greedy tokens)."""
    import torch

    import mxfp4.model
    from mxfp4.model.greedy import greedy_token

    llama = open_llama(gguf, prompt, new)
    ours = mxfp4.model.load(directory, backend="native", dtype=torch.bfloat16)
    llama.reset()
    llama.eval(prompt)
    theirs_token = llama_greedy(llama)
    theirs_s, ours_s = [], []
    with torch.no_grad():
        cache = ours.new_cache()
        token = greedy_token(ours(torch.tensor([prompt]), cache, last_only=True)[:, -1])
        for step in range(new):
            start = time.perf_counter()
            llama.eval([theirs_token])
            theirs_token = llama_greedy(llama)
            middle = time.perf_counter()
            token = greedy_token(ours(token, cache, start=len(prompt) + step)[:, -1])
            ours_s.append(time.perf_counter() - middle)
            theirs_s.append(middle - start)
    return {"ours_s": ours_s, "llama_s": theirs_s}


def child_breakdown(directory: Path, backend: str, dtype: str, new: int) -> dict:
    """Seconds a native decode step spends in each C entry point (Python wrapper included) and in the rest."""
    import functools

    import torch

    import mxfp4.model
    from mxfp4.model.greedy import greedy_token
    from mxfp4.model.kernels import cpu_attention, cpu_gemv

    spent = {"dense products": 0.0, "one-token MoE": 0.0, "attention": 0.0}
    for module, name, part in (
        (cpu_gemv, "dense_linear", "dense products"),
        (cpu_gemv, "moe_token", "one-token MoE"),
        (cpu_attention, "attention", "attention"),
    ):

        def timed(*args, _fn=getattr(module, name), _part=part, **kwargs):
            start = time.perf_counter()
            try:
                return _fn(*args, **kwargs)
            finally:
                spent[_part] += time.perf_counter() - start

        setattr(module, name, functools.wraps(getattr(module, name))(timed))
    outside = _time_modules_outside(spent)
    model = mxfp4.model.load(directory, backend=backend, dtype=getattr(torch, dtype))
    with torch.no_grad():
        cache = model.new_cache()
        token = greedy_token(model(torch.tensor([list(range(64))]), cache, last_only=True)[:, -1])
        for step in range(4 + new):
            if step == 4:  # the first steps warm the caches and the pool
                spent.update(dict.fromkeys(spent, 0.0))
                outside.update(dict.fromkeys(outside, 0.0))
                start = time.perf_counter()
            token = greedy_token(model(token, cache, start=64 + step)[:, -1])
        total = time.perf_counter() - start
    parts = {part: seconds / new for part, seconds in spent.items()}
    return {"step_s": total / new, **parts, "outside": {part: seconds / new for part, seconds in outside.items()}}


def _time_modules_outside(c_spent: dict) -> dict:
    """Wraps the model's modules so each adds up its own time outside the C entry points timed in c_spent and
    outside the modules it calls: where the rest of a decode step goes. Returns the dict they add to."""
    from mxfp4.model import layers, model

    outside = {}
    nested = []  # per module being run: the time of the modules it called
    for cls, part in (
        (layers.RMSNorm, "norms"),
        (layers.Attention, "attention block"),
        (layers.MoE, "router and top-k"),
        (layers.Experts, "experts' wrapper"),
        (layers.Block, "residual adds"),
        (model.GptOss, "embedding and unembedding wrappers"),
    ):
        outside[part] = 0.0

        def forward(self, *args, _forward=cls.forward, _part=part, **kwargs):
            start, c_start = time.perf_counter(), sum(c_spent.values())
            nested.append(0.0)
            try:
                return _forward(self, *args, **kwargs)
            finally:
                inner = nested.pop()
                own = time.perf_counter() - start - (sum(c_spent.values()) - c_start)
                outside[_part] += own - inner
                if nested:
                    nested[-1] += own

        cls.forward = forward
    return outside


def breakdown_report(directory: Path, config: dict, new: int, bandwidth: float, backends: tuple) -> None:
    """Prints child_breakdown's table for each backend with bf16 and float32 activations."""
    moe = routed_expert_bytes(config)
    dense = bytes_per_token(config, context=64 + 4 + new / 2) - moe
    reads = {"dense products": dense, "one-token MoE": moe}
    print(f"a native decode step after a 64-token prompt, {new} steps (ms a step; GB/s of the bytes each part reads)")
    header = f"{'backend, activations':25s} {'step':>7s} {'dense products':>20s} {'one-token MoE':>20s}"
    print(header + f" {'attention':>9s} {'rest':>7s}")
    for backend, dtype in itertools.product(backends, ("bfloat16", "float32")):
        child = ["--child", f"breakdown {backend} {dtype}", "--path", str(directory), "--new-tokens", str(new)]
        result, _ = run_child(child)
        parts = []
        for part in ("dense products", "one-token MoE"):
            seconds = result[part]
            parts.append(f"{seconds * 1e3:8.1f} ({reads[part] / seconds / 1e9:5.1f} GB/s)")
        rest = result["step_s"] - sum(result[p] for p in ("dense products", "one-token MoE", "attention"))
        print(
            f"{backend + ' ' + dtype:25s} {result['step_s'] * 1e3:7.1f} {parts[0]:>20s} {parts[1]:>20s} "
            f"{result['attention'] * 1e3:9.1f} {rest * 1e3:7.1f}"
        )
        modules = ", ".join(f"{part} {seconds * 1e3:.2f}" for part, seconds in result["outside"].items())
        print(f"{'':25s} the rest by module (ms): {modules}")
    print(f"(the machine read {bandwidth / 1e9:.1f} GB/s in a streaming sum)")


def child_machine() -> dict:
    """The CPU, the instruction set of the C kernels and the read bandwidth (B/s): the best of 5 streaming sums of
    1 GiB over every core (in a child, so the parent's peak RSS, which each implementation's child starts from
    at fork, stays small)."""
    import platform

    import torch

    from mxfp4.model.kernels import cpu_gemv

    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "")
    data = torch.ones(2**28)
    seconds = best(lambda: cpu_gemv.stream_sum(data), 5)
    flops = cpu_gemv.fma_chains(FMA_STEPS)
    fma = flops / best(lambda: cpu_gemv.fma_chains(FMA_STEPS), 5) if flops else 0.0
    return {
        "cpu": model or platform.processor(),
        "isa": cpu_gemv.isa(),
        "token_block": cpu_gemv.gemm_token_block(SHAPES["wide"]["hidden_size"]),
        "bandwidth": data.numel() * 4 / seconds,
        "fma": fma,
    }


def machine_report() -> dict:
    """Prints child_machine's findings and returns them."""
    machine, _ = run_child(["--child", "machine", "--path", "-"])
    print(
        f"CPU {machine['cpu']}; C kernels: {machine['isa']} (the panel GEMM takes {machine['token_block']} tokens a "
        f"pass at 20b's width); read bandwidth {machine['bandwidth'] / 1e9:.1f} GB/s; "
        f"float32 FMA rate {machine['fma'] / 1e9:.0f} GFLOP/s at that level ({os.cpu_count()} threads)"
    )
    return machine


def interleaved_report(result: dict, per_token: int) -> None:
    import statistics

    ours, theirs = result["ours_s"], result["llama_s"]
    ratios = [t / o for t, o in zip(theirs, ours)]
    print(f"decode steps taken in turn ({len(ours)} each):")
    print(f"{'implementation':14s} {'median ms/token':>15s} {'fastest':>8s} {'GB/s at median':>14s}")
    for name, times in (("mxfp4 native", ours), ("llama.cpp", theirs)):
        median = statistics.median(times)
        print(f"{name:14s} {median * 1e3:15.1f} {min(times) * 1e3:8.1f} {per_token / median / 1e9:14.1f}")
    quartiles = statistics.quantiles(ratios, n=4)
    print(
        f"native decode speed vs llama.cpp, per step: median {statistics.median(ratios):.2f}x "
        f"(quartiles {quartiles[0]:.2f}x-{quartiles[2]:.2f}x)"
    )


def child_transformers(directory: Path, prompt, new: int, repeat: int, all_logits: bool) -> dict:
    import warnings

    import torch
    import transformers
    from transformers import AutoModelForCausalLM, Mxfp4Config

    transformers.logging.set_verbosity_error()
    warnings.filterwarnings("ignore", category=FutureWarning)  # the past_key_values keyword's rename
    # the experts dequantized to bf16, as transformers does on a CPU without its hub kernels: from 5.25 (which
    # installs `kernels`) it would fetch one from the hub instead, and offline fail
    dequantized = Mxfp4Config(dequantize=True)
    model = AutoModelForCausalLM.from_pretrained(directory, quantization_config=dequantized, dtype=torch.bfloat16)
    model = model.eval()
    ids = torch.tensor([prompt])

    def prefill():
        return model(ids, use_cache=True, logits_to_keep=0 if all_logits else 1)

    def decode():
        out = prefill()
        past, token = out.past_key_values, out.logits[:, -1:].argmax(-1)
        start = time.perf_counter()
        for _ in range(new):
            out = model(token, past_key_values=past, use_cache=True)
            past, token = out.past_key_values, out.logits[:, -1:].argmax(-1)
        return time.perf_counter() - start

    with torch.no_grad():
        return {"prefill_s": best(prefill, repeat), "decode_s": min(decode() for _ in range(repeat))}


def run_child(args: list[str]) -> tuple[dict, float]:
    """(the child's JSON result, its peak RSS in GiB)."""
    with tempfile.TemporaryFile("w+") as out:
        child = subprocess.Popen([sys.executable, __file__, *args], stdout=out)
        _, status, usage = os.wait4(child.pid, 0)
        if status != 0:
            raise SystemExit(f"child {' '.join(args)} failed with status {status}")
        out.seek(0)
        return json.loads(out.read().strip().splitlines()[-1]), usage.ru_maxrss / 2**20


# ---- the crossover of the native products ----------------------------------------------------------------------


def crossover(repeat: int) -> None:
    """The native C products against each other and torch per batch size, at 20b's expert and unembedding shapes:
    the thresholds of mxfp4.model.kernels.native_path come from this table. 'rows' is the row-at-a-time product
    (decoding), 'gemm' the panel GEMM (many tokens), 'torch' the matmul on a decoded bf16 expert (or the bf16
    weight as it is) and 'torch f32' the same in float32."""
    import torch

    from mxfp4.codec import decode
    from mxfp4.model.kernels import cpu_gemv

    print(f"C kernels: {cpu_gemv.isa()}; {os.cpu_count()} threads; times in ms, GFLOP/s of the fastest")
    rows, cols = 5760, 2880
    blocks = torch.randint(0, 256, (rows, cols // 32, 16), dtype=torch.uint8)
    scales = torch.randint(118, 130, (rows, cols // 32), dtype=torch.uint8)
    print(f"MXFP4 expert gate_up [{rows}, {cols}], bf16 activations")
    print(f"{'tokens':>6s} {'rows':>8s} {'gemm':>8s} {'torch':>8s} {'torch f32':>9s} {'GFLOP/s':>8s}")
    for tokens in (1, 2, 4, 8, 9, 12, 16, 32, 64, 128, 512):
        x = torch.randn(tokens, cols).bfloat16()
        times = [
            best(lambda: cpu_gemv.mxfp4_linear(x, blocks, scales), repeat),
            best(lambda: cpu_gemv.mxfp4_gemm(x, blocks, scales), repeat),
            best(lambda: x @ decode.dequantize(blocks, scales, torch.bfloat16).T, repeat),
            best(lambda: x.float() @ decode.dequantize(blocks, scales, torch.float32).T, repeat),
        ]
        flops = 2 * rows * cols * tokens / min(times) / 1e9
        print(f"{tokens:6d} " + " ".join(f"{t * 1e3:8.2f}" for t in times) + f" {flops:8.1f}")
    for dtype in (torch.bfloat16, torch.float32):
        weight = torch.randn(201088, 2880).to(dtype)
        print(f"{str(dtype).removeprefix('torch.')} unembedding [{weight.shape[0]}, {weight.shape[1]}]")
        print(f"{'tokens':>6s} {'rows':>8s} {'gemm':>8s} {'torch':>8s} {'GFLOP/s':>8s}")
        for tokens in (1, 2, 4, 8, 16, 64):
            x = torch.randn(tokens, 2880).to(dtype)
            times = [
                best(lambda: cpu_gemv.dense_linear(x, weight), repeat) if tokens <= 8 else float("nan"),
                best(lambda: cpu_gemv.dense_gemm(x, weight), repeat),
                best(lambda: torch.nn.functional.linear(x, weight), repeat),
            ]
            flops = 2 * weight.numel() * tokens / min(t for t in times if t == t) / 1e9
            print(f"{tokens:6d} " + " ".join(f"{t * 1e3:8.2f}" for t in times) + f" {flops:8.1f}")
    crossover_attention(repeat)


def crossover_attention(repeat: int) -> None:
    """The decode paths (the C kernel of cpu_attention, and grouped_attention where it does not apply) against fused
    flash attention per query count, 64 heads of 64 over 8 KV heads, bf16, with no cache and with 512 cached
    positions: attention_cpu.MIN_QUERIES comes from this table."""
    import torch

    from mxfp4.model.kernels import attention_cpu, cpu_attention

    print("attention, 64 query heads / 8 KV heads of 64, bf16 (ms)")
    print(f"{'queries':>7s} {'cached':>6s} {'C':>8s} {'grouped':>8s} {'fused':>8s} {'fused / C':>10s}")
    for cached in (0, 512):
        for queries in (1, 2, 4, 8, 16, 32, 64) + ((128, 256) if cached == 0 else ()):
            keys = queries + cached
            q = torch.randn(1, 64, queries, 64).bfloat16()
            k, v = torch.randn(1, 8, keys, 64).bfloat16(), torch.randn(1, 8, keys, 64).bfloat16()
            sinks = torch.randn(64).bfloat16()
            c = best(lambda: cpu_attention.attention(q, k, v, sinks, window=None), repeat)
            grouped = best(lambda: attention_cpu.grouped_attention(q, k, v, sinks, q_start=cached, window=None), repeat)
            fused = best(lambda: attention_cpu.fused_attention(q, k, v, sinks, q_start=cached, window=None), repeat)
            print(f"{queries:7d} {cached:6d} {c * 1e3:8.2f} {grouped * 1e3:8.2f} {fused * 1e3:8.2f} {fused / c:9.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="small")
    parser.add_argument(
        "--layers", type=int, help="layers instead of the shape's (--shape wide --layers 24: gpt-oss-20b's geometry)"
    )
    parser.add_argument("--prompt", type=int, default=512, help="prefill tokens")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument(
        "--rounds", type=int, default=1, help="run every implementation this many times, alternating; best of each"
    )
    parser.add_argument("--only", action="append", choices=IMPLEMENTATIONS + INT8, help="run only these (repeatable)")
    parser.add_argument("--int8", action="store_true", help="also run native-int8 (int8 MoE activations in decode)")
    parser.add_argument("--crossover", action="store_true", help="time the native products per batch size")
    parser.add_argument(
        "--interleave", action="store_true", help="native and llama.cpp decode steps in turn in one process"
    )
    parser.add_argument("--breakdown", action="store_true", help="where a native decode step's time goes")
    parser.add_argument("--last-logits", action="store_true", help="prefill computes the last position's logits only")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if min(args.prompt, args.new_tokens, args.repeat, args.rounds, 1 if args.layers is None else args.layers) < 1:
        parser.error("--layers, --prompt, --new-tokens, --repeat and --rounds take 1 or more")
    if args.crossover:
        return crossover(max(args.repeat, 5))
    import random

    prompt = [random.Random(0).randrange(0, 8000) for _ in range(args.prompt)]
    if args.child:
        path, new, repeat, every = Path(args.path), args.new_tokens, args.repeat, not args.last_logits
        if args.child == "machine":
            result = child_machine()
        elif args.child.startswith("breakdown"):
            _, backend, dtype = args.child.split()
            result = child_breakdown(path, backend, dtype, new)
        elif args.child == "interleaved":
            result = child_interleaved(path, path.parent / "model.gguf", prompt, new)
        elif args.child.startswith("mxfp4"):
            _, backend, dtype = args.child.split()
            dtype = {"bf16": "bfloat16"}.get(dtype, dtype)
            result = child_mxfp4(path, backend, dtype, prompt, new, repeat, every)
        elif args.child == "llama.cpp":
            result = child_llama(path, prompt, new, repeat, every)
        else:
            result = child_transformers(path, prompt, new, repeat, every)
        print(json.dumps(result))
        return

    from mxfp4.convert import convert
    from mxfp4.testing import synthetic

    shape = SHAPES[args.shape] | ({} if args.layers is None else {"num_hidden_layers": args.layers})
    config = synthetic.hf_config(**shape)
    work = Path(tempfile.mkdtemp(prefix="bench-model-"))
    try:
        directory, gguf = work / "hf", work / "model.gguf"
        synthetic.write_checkpoint(directory, config)
        convert(directory, gguf, to="gguf")
        weights = sum(p.stat().st_size for p in directory.glob("*.safetensors"))
        per_token = bytes_per_token(config, context=args.prompt + args.new_tokens / 2)  # the steps' mean
        logits = "the last position's logits" if args.last_logits else "logits at every position"
        print(
            f"shape {args.shape}: {shape['num_hidden_layers']} layers, {shape['num_local_experts']} experts (top "
            f"{shape['num_experts_per_tok']}), hidden {shape['hidden_size']}, vocab {shape['vocab_size']:,}; "
            f"weights {weights / 2**30:.2f} GiB (bf16 and MXFP4); prefill {args.prompt} tokens with {logits}, "
            f"decode {args.new_tokens}; {os.cpu_count()} threads; one decode step reads {per_token / 2**20:.0f} MiB "
            "of weights and KV cache"
        )
        machine = machine_report()
        bandwidth = machine["bandwidth"]
        if args.breakdown:
            backends = ("native", "native-int8") if args.int8 else ("native",)
            return breakdown_report(directory, config, args.new_tokens, bandwidth, backends)
        if args.interleave:
            child = ["--child", "interleaved", "--path", str(directory), "--prompt", str(args.prompt)]
            result, _ = run_child(child + ["--new-tokens", str(args.new_tokens)])
            return interleaved_report(result, per_token)
        rows = {}
        for _ in range(args.rounds):  # implementations alternate, so a slow spell of the machine hits them all alike
            for name in args.only or IMPLEMENTATIONS + (INT8 if args.int8 else ()):
                path = gguf if name == "llama.cpp" else directory
                child = ["--child", name, "--path", str(path), "--prompt", str(args.prompt)]
                child += ["--new-tokens", str(args.new_tokens), "--repeat", str(args.repeat)]
                child += ["--last-logits"] if args.last_logits else []
                result, rss = run_child(child)
                row = (name, args.prompt / result["prefill_s"], args.new_tokens / result["decode_s"], rss)
                print(
                    f"  {name}: prefill {row[1]:.1f} tok/s, decode {row[2]:.2f} tok/s, peak RSS {rss:.2f} GiB",
                    flush=True,
                )
                best = rows.get(name, row)
                rows[name] = (name, max(best[1], row[1]), max(best[2], row[2]), max(best[3], row[3]))
        rows = list(rows.values())
        llama = next((r for r in rows if r[0] == "llama.cpp"), None)
        floor_s = per_token / bandwidth
        flops = prefill_flops(config, args.prompt, not args.last_logits)
        header = f"{'implementation':25s} {'prefill tok/s':>13s} {'GFLOP/s':>8s} {'decode tok/s':>12s} {'ms/token':>9s}"
        header += f" {'GB/s':>6s} {'% floor':>7s} {'prefill vs llama':>16s} {'decode vs llama':>15s}"
        print(header + f" {'peak RSS GiB':>12s}")
        for name, prefill, decode, rss in rows:
            vs = (f"{prefill / llama[1]:15.2f}x", f"{decode / llama[2]:14.2f}x") if llama else ("", "")
            print(
                f"{name:25s} {prefill:13.1f} {flops * prefill / args.prompt / 1e9:8.1f} {decode:12.1f} "
                f"{1e3 / decode:9.1f} {per_token * decode / 1e9:6.1f} {100 * floor_s * decode:6.0f}% {vs[0]:>16s} "
                f"{vs[1]:>15s} {rss:12.2f}"
            )
        print(
            f"(decode floor: {per_token / 1e6:.0f} MB a token at {bandwidth / 1e9:.1f} GB/s = {floor_s * 1e3:.1f} ms; "
            f"prefill: {flops / args.prompt / 1e9:.2f} GFLOP a token, the float32 FMA rate "
            f"{machine['fma'] / 1e9:.0f} GFLOP/s)"
        )
        print(f"(weights on disk {weights / 2**30:.2f} GiB: the goal is peak RSS <= weights + 1 GiB)")
    finally:
        shutil.rmtree(work, ignore_errors=True)  # the checkpoint and its GGUF: 8 GB on the wide shape


if __name__ == "__main__":
    main()
