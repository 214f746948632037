"""What int8 activations cost in quality: backend 'native-int8' against 'native' on a trained model.

    python benchmarks/bench_int8_quality.py                     # the bundled tiny trained model, both held-out files
    python benchmarks/bench_int8_quality.py MODEL a.tokens ...  # any checkpoint, token files (whitespace-separated ids)

'native-int8' quantizes the MoE's activations in decode steps and in prompts (each token's alone, so the two
differ only where float32 rounding moves an activation across a rounding edge). Each held-out text goes through
both backends on the same model twice: one token a step from the KV cache (teacher forcing: decoding), and whole
as one prompt (the int8 panel GEMM). Prints, per text and way: perplexity under each backend, the mean and
largest KL divergence of the int8 next-token distribution from the exact one, and how often their top tokens
agree. Texts the model never trained on; the quantization has no seed (it is deterministic).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

import mxfp4.model
from mxfp4.model.kernels.select import describe

TINY = Path(__file__).resolve().parent.parent / "examples" / "tiny-gpt-oss-trained"


def teacher_forced(model, tokens: list[int]) -> dict[str, torch.Tensor]:
    """Each backend's next-token log-probabilities after tokens[:-1], decoded one token a step: [n - 1, vocab]."""
    out = {}
    with torch.no_grad():
        for name in ("native", "native-int8"):
            backend = model.use_backend(name)
            cache = backend.new_cache()
            steps = [backend(torch.tensor([[t]]), cache, start=i)[0, -1] for i, t in enumerate(tokens[:-1])]
            out[name] = torch.log_softmax(torch.stack(steps).double(), -1)
    return out


def prompted(model, tokens: list[int]) -> dict[str, torch.Tensor]:
    """The same log-probabilities from tokens[:-1] fed as one prompt."""
    ids = torch.tensor([tokens[:-1]])
    with torch.no_grad():
        return {
            name: torch.log_softmax(model.use_backend(name)(ids)[0].double(), -1) for name in ("native", "native-int8")
        }


def compare(logp: dict[str, torch.Tensor], tokens: list[int]) -> dict:
    """Perplexity of tokens[1:] under each backend, KL(native || int8) a position (mean, max), top-1 agreement."""
    targets = torch.tensor(tokens[1:])
    nll = {name: -float(lp.gather(1, targets[:, None]).mean()) for name, lp in logp.items()}
    exact, int8 = logp["native"], logp["native-int8"]
    kl = (exact.exp() * (exact - int8)).sum(-1)
    return {
        "tokens": len(targets),
        "ppl": {name: math.exp(v) for name, v in nll.items()},
        "kl_mean": float(kl.mean()),
        "kl_max": float(kl.max()),
        "top1": float((exact.argmax(-1) == int8.argmax(-1)).double().mean()),
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
        f"{'text':24s} {'as':7s} {'tokens':>6s} {'ppl native':>11s} {'ppl int8':>9s} {'KL mean':>9s} {'KL max':>9s} "
        f"{'top-1':>6s}"
    )
    for text in args.texts:
        tokens = [int(t) for t in Path(text).read_text().split()][: args.tokens + 1]
        decoded, prompt = teacher_forced(model, tokens), prompted(model, tokens)
        # the exact backend's two ways are one computation in other orders: a gap means a position went wrong
        gap = float((decoded["native"] - prompt["native"]).abs().max())
        if gap > 1e-3:
            raise SystemExit(f"{text}: native decode steps and prompt differ by {gap:.3g} in log-probability")
        for way, logp in (("decode", decoded), ("prompt", prompt)):
            r = compare(logp, tokens)
            print(
                f"{Path(text).name:24s} {way:7s} {r['tokens']:6d} {r['ppl']['native']:11.4f} "
                f"{r['ppl']['native-int8']:9.4f} {r['kl_mean']:9.2e} {r['kl_max']:9.2e} {r['top1']:6.1%}"
            )


if __name__ == "__main__":
    main()
