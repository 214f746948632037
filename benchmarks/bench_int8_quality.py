"""What int8 activations cost in quality: backend 'native-int8' against 'native' on a trained model, token by token.

    python benchmarks/bench_int8_quality.py                     # the bundled tiny trained model, both held-out files
    python benchmarks/bench_int8_quality.py MODEL a.tokens ...  # any checkpoint, token files (whitespace-separated ids)

'native-int8' quantizes only a decode step's MoE activations, so each held-out text is fed one token a step from the
KV cache (teacher forcing), every step through both backends on the same model. Prints, per text: perplexity under
each, the mean and largest KL divergence of the int8 next-token distribution from the exact one, and how often their
top tokens agree. Texts the model never trained on; the quantization has no seed (it is deterministic).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

import mxfp4.model
from mxfp4.model.kernels.select import describe

TINY = Path(__file__).resolve().parent.parent / "examples" / "tiny-gpt-oss-trained"


def teacher_forced(model, tokens: list[int]) -> dict:
    """NLLs (nats) of tokens[1:] under native and native-int8, decoded one token a step, and their KLs and
    top-1 agreement."""
    caches = {name: model.use_backend(name).new_cache() for name in ("native", "native-int8")}
    nll = {name: 0.0 for name in caches}
    kls, agree = [], 0
    with torch.no_grad():
        for position in range(len(tokens) - 1):
            step = torch.tensor([[tokens[position]]])
            logp = {}
            for name, cache in caches.items():
                logits = model.use_backend(name)(step, cache)[0, -1].double()
                logp[name] = torch.log_softmax(logits, -1)
                nll[name] -= float(logp[name][tokens[position + 1]])
            kls.append(float((logp["native"].exp() * (logp["native"] - logp["native-int8"])).sum()))
            agree += int(logp["native"].argmax() == logp["native-int8"].argmax())
    n = len(tokens) - 1
    return {
        "tokens": n,
        "ppl": {name: math.exp(total / n) for name, total in nll.items()},
        "kl_mean": sum(kls) / n,
        "kl_max": max(kls),
        "top1": agree / n,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", default=str(TINY / "mxfp4"))
    parser.add_argument("texts", nargs="*", default=[str(TINY / "heldout.tokens"), str(TINY / "docs-heldout.tokens")])
    parser.add_argument("--tokens", type=int, default=1024, help="tokens of each text to feed (default 1024)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    args = parser.parse_args()
    model = mxfp4.model.load(args.model, backend="native", dtype=getattr(torch, args.dtype))
    print(f"{args.model} ({args.dtype}); {describe('native-int8')} against {describe('native')}")
    print(
        f"{'text':24s} {'tokens':>6s} {'ppl native':>11s} {'ppl int8':>9s} {'KL mean':>9s} {'KL max':>9s} {'top-1':>6s}"
    )
    for text in args.texts:
        tokens = [int(t) for t in Path(text).read_text().split()][: args.tokens + 1]
        r = teacher_forced(model, tokens)
        print(
            f"{Path(text).name:24s} {r['tokens']:6d} {r['ppl']['native']:11.4f} {r['ppl']['native-int8']:9.4f} "
            f"{r['kl_mean']:9.2e} {r['kl_max']:9.2e} {r['top1']:6.1%}"
        )


if __name__ == "__main__":
    main()
