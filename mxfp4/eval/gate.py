"""Quality gates for CI: measure a checkpoint against thresholds stored in a baseline JSON.

    {
      "tokens": "heldout.tokens",          # token file, relative to the baseline's folder
      "reference": "../ref-bf16",          # optional: a checkpoint to compare against (KL, top-1, delta)
      "context": 256, "stride": 256,
      "thresholds": {"perplexity_max": 14.2, "delta_ppl_max": 0.3, "kl_mean_max": 0.05,
                     "kl_p99_max": 0.5, "top1_agreement_min": 0.9}
    }

A measure passes when it is within its threshold; any failure makes `mxfp4 eval gate` exit 1.
`make_baseline` measures once and stores thresholds with a margin, for a project to commit.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import CheckpointError
from ..gpt_oss.config import read_json
from .parity import compare, perplexity
from .tokens import check_ids, read_token_file

LIMITS = {  # threshold key -> (measure, direction)
    "perplexity_max": ("perplexity", "max"),
    "delta_ppl_max": ("delta_ppl", "max"),
    "kl_mean_max": ("kl_mean", "max"),
    "kl_p99_max": ("kl_p99", "max"),
    "top1_agreement_min": ("top1_agreement", "min"),
}


@dataclass(frozen=True)
class Check:
    measure: str
    value: float
    limit: float
    direction: str  # "max" or "min"

    @property
    def passed(self) -> bool:
        return self.value <= self.limit if self.direction == "max" else self.value >= self.limit


def measure_checkpoint(
    checkpoint,
    tokens,
    *,
    reference=None,
    context: int = 256,
    stride: int | None = None,
    device=None,
    backend: str = "torch",
) -> dict[str, float]:
    """perplexity of checkpoint; with a reference also delta_ppl, kl_mean, kl_p99, top1_agreement.
    device, backend: where and how the models run (mxfp4.model.load's arguments)."""
    from ..model import load as load_model

    load = functools.partial(load_model, device=device, backend=backend)

    model = load(checkpoint)
    check_ids(tokens, model.config.vocab_size, str(checkpoint))
    if reference is None:
        return {"perplexity": perplexity(model, tokens, context=context, stride=stride)}
    result = compare(load(reference), model, tokens, context=context, stride=stride)
    return {
        "perplexity": result.ppl_b,
        "reference_perplexity": result.ppl_a,
        "delta_ppl": result.delta_ppl,
        "kl_mean": result.kl_mean,
        "kl_p99": result.kl_p99,
        "top1_agreement": result.top1_agreement,
    }


def _baseline(path: Path) -> tuple[dict, Path]:
    data = read_json(path)
    if "tokens" not in data or not isinstance(data.get("thresholds"), dict):
        raise CheckpointError(f"{path}: a baseline needs 'tokens' and a 'thresholds' object")
    unknown = set(data["thresholds"]) - set(LIMITS)
    if unknown:
        raise CheckpointError(f"{path}: unknown threshold {sorted(unknown)[0]!r}; known: {', '.join(LIMITS)}")
    return data, path.parent


def gate(checkpoint, baseline_path, *, device=None, backend: str = "torch") -> tuple[dict[str, float], list[Check]]:
    data, folder = _baseline(Path(baseline_path))
    tokens = read_token_file(folder / data["tokens"])
    reference = folder / data["reference"] if data.get("reference") else None
    needs_reference = any(LIMITS[k][0] != "perplexity" for k in data["thresholds"])
    if needs_reference and reference is None:
        raise CheckpointError(f"{baseline_path}: thresholds on KL, top-1 or delta need a 'reference' checkpoint")
    values = measure_checkpoint(
        checkpoint,
        tokens,
        reference=reference,
        context=data.get("context", 256),
        stride=data.get("stride"),
        device=device,
        backend=backend,
    )
    checks = [
        Check(LIMITS[k][0], values[LIMITS[k][0]], float(limit), LIMITS[k][1]) for k, limit in data["thresholds"].items()
    ]
    return values, checks


def make_baseline(
    checkpoint,
    tokens_path,
    out_path,
    *,
    reference=None,
    context: int = 256,
    margin: float = 0.1,
    force: bool = False,
    device=None,
    backend: str = "torch",
) -> dict:
    """Measure checkpoint once and write a baseline whose thresholds allow `margin` (relative) of slack.
    The file appears only when complete, and replaces an existing one only with force."""
    from ..storage.atomic import atomic_output

    out_path = Path(out_path)
    tokens = read_token_file(tokens_path)
    values = measure_checkpoint(
        checkpoint, tokens, reference=reference, context=context, device=device, backend=backend
    )
    thresholds = {"perplexity_max": values["perplexity"] * (1 + margin)}
    if reference is not None:
        thresholds.update(
            {
                "delta_ppl_max": max(values["delta_ppl"], 0.0) * (1 + margin) + 1e-3,
                "kl_mean_max": values["kl_mean"] * (1 + margin) + 1e-6,
                "kl_p99_max": values["kl_p99"] * (1 + margin) + 1e-6,
                "top1_agreement_min": values["top1_agreement"] * (1 - margin),
            }
        )
    folder = out_path.resolve().parent
    data = {
        "tokens": _relative(tokens_path, folder),
        "context": context,
        "stride": context,
        "measured": values,
        "thresholds": thresholds,
    }
    if reference is not None:
        data["reference"] = _relative(reference, folder)
    with atomic_output(out_path, force=force) as temporary:
        temporary.write_text(json.dumps(data, indent=2) + "\n")
    return data


def _relative(path, folder: Path) -> str:
    import os

    return os.path.relpath(Path(path).resolve(), folder)
