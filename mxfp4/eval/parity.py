"""Perplexity of a model and the parity of two models on the same tokens.

Sliding-window evaluation: windows of `context` tokens start every `stride` tokens; each window scores
only the tokens no earlier window scored, each predicted with up to context - 1 tokens before it. So
every token after the first is scored exactly once, with at least context - stride tokens of history
once the first window has passed (stride = context: disjoint windows, the fastest; smaller strides give
more history).

Comparison (the measures llama.cpp's perplexity tool reports; absolute perplexity of a chat model is not
comparable across tools, its change is): perplexity of A and B, delta = ppl_b - ppl_a, per-token KL(A || B)
between their next-token distributions (mean and 99th percentile), and top-1 agreement.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..distributed import World, current_world, gather_rows
from ..errors import OptionError


def windows(n: int, context: int, stride: int):
    """(start, stop, first scored index within the window) covering tokens 1..n-1 once each."""
    if context < 2 or not 1 <= stride <= context:
        raise OptionError(f"need context >= 2 and 1 <= stride <= context, got context={context}, stride={stride}")
    scored_until = 1  # token 0 has no history
    start = 0
    while scored_until < n:
        stop = min(start + context, n)
        yield start, stop, scored_until - start
        scored_until = stop
        if stop == n:
            break
        start = min(start + stride, stop - 1)


@torch.no_grad()
def _log_probs(model, ids: np.ndarray, spans):
    """Yield (log-probabilities [k, vocab] float32, targets [k]) for each window's scored tokens."""
    device = next(model.parameters()).device
    tokens = torch.from_numpy(ids).to(device)
    for start, stop, first in spans:
        logits = model(tokens[start:stop][None])[0].float()  # [T, vocab]
        yield F.log_softmax(logits[first - 1 : -1], dim=-1), tokens[start + first : stop]


def _my_windows(n: int, context: int, stride: int, world: World) -> list:
    """This rank's contiguous share of the windows (all of them in one process)."""
    spans = list(windows(n, context, stride))
    if len(spans) < world.size:
        raise OptionError(
            f"{len(spans)} evaluation windows for {world.size} ranks: every rank needs at least one (give more "
            f"tokens, a smaller context, or run fewer ranks)"
        )
    share = world.share(len(spans))
    return spans[share.start : share.stop]


def _in_order(values: torch.Tensor) -> float:
    """A sum taken one value after another in window order, whichever rank measured each window: the
    one-process sum, bit for bit."""
    total = 0.0
    for value in values.tolist():
        total += value
    return total


def perplexity(model, ids: np.ndarray, *, context: int = 1024, stride: int | None = None) -> float:
    """Under torchrun, each rank scores its share of the windows and every rank returns the same value,
    equal to one process's."""
    world = current_world()
    per_window = []  # [negative log-likelihood, tokens] of each of this rank's windows
    for log_probs, targets in _log_probs(model, ids, _my_windows(len(ids), context, stride or context, world)):
        per_window.append([-float(log_probs.gather(1, targets[:, None]).sum()), targets.numel()])
    gathered = gather_rows(torch.tensor(per_window, dtype=torch.float64).reshape(-1, 2), world, "perplexity")
    return float(np.exp(_in_order(gathered[:, 0]) / int(gathered[:, 1].sum())))


@dataclass(frozen=True)
class Comparison:
    tokens: int
    ppl_a: float
    ppl_b: float
    delta_ppl: float
    kl_mean: float
    kl_p99: float
    top1_agreement: float

    def to_json(self) -> dict:
        return asdict(self)


def compare(model_a, model_b, ids: np.ndarray, *, context: int = 1024, stride: int | None = None) -> Comparison:
    """Both models on the same windows; B is measured against A (the reference). Under torchrun, as for
    perplexity: the windows split over the ranks, the same result on every rank as in one process."""
    world = current_world()
    spans = _my_windows(len(ids), context, stride or context, world)
    per_window, kls = [], []  # [nll A, nll B, top-1 agreements, tokens] of each window; KL per token
    for (lp_a, targets), (lp_b, _) in zip(_log_probs(model_a, ids, spans), _log_probs(model_b, ids, spans)):
        nll_a = -float(lp_a.gather(1, targets[:, None]).sum())
        nll_b = -float(lp_b.gather(1, targets[:, None]).sum())
        agree = int((lp_a.argmax(-1) == lp_b.argmax(-1)).sum())
        per_window.append([nll_a, nll_b, agree, targets.numel()])
        kls.append((lp_a.exp() * (lp_a - lp_b)).sum(-1).cpu())  # KL(A || B) per token
    stats = gather_rows(torch.tensor(per_window, dtype=torch.float64).reshape(-1, 4), world, "compare")
    kl = gather_rows(torch.cat(kls), world, "compare").clamp(min=0).numpy()
    count = int(stats[:, 3].sum())
    ppl_a, ppl_b = float(np.exp(_in_order(stats[:, 0]) / count)), float(np.exp(_in_order(stats[:, 1]) / count))
    agree = int(stats[:, 2].sum())
    return Comparison(count, ppl_a, ppl_b, ppl_b - ppl_a, float(kl.mean()), float(np.percentile(kl, 99)), agree / count)
