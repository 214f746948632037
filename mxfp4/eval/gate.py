"""Quality gates for CI: measure a checkpoint against thresholds stored in a baseline JSON.

    {
      "tokens": "heldout.tokens",          # token file, relative to the baseline's folder; or instead
      "text": "heldout.txt",               #   a text file, tokenized with the checkpoint's tokenizer
      "reference": "../ref-bf16",          # optional: a checkpoint to compare against (KL, top-1, delta): a
                                           #   path relative to the baseline's folder, a hub id, a GGUF, ...
      "context": 256, "stride": 256,
      "thresholds": {"perplexity_max": 14.2, "delta_ppl_max": 0.3, "kl_mean_max": 0.05,
                     "kl_p99_max": 0.5, "top1_agreement_min": 0.9}
    }

A measure passes when it is within its threshold; `mxfp4 eval gate` exits 0 when all pass, 1 on any
failure (a regression) and 2 on a usage or input error (a missing or malformed baseline, a broken checkpoint).
`make_baseline` measures once and stores thresholds with a margin, for a project to commit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..choices import ExpertLayout
from ..distributed import current_world
from ..errors import CheckpointError, OptionError
from ..gpt_oss.config import read_json
from ..storage.ollama_store import PREFIX as OLLAMA_PREFIX
from .parity import compare, perplexity
from .tokens import check_ids, read_token_file, tokenize_text

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

    def to_json(self) -> dict:
        return {
            "measure": self.measure,
            "value": self.value,
            "threshold": self.limit,
            "direction": self.direction,
            "passed": self.passed,
        }


def gate_json(values: dict[str, float], checks: list[Check]) -> dict:
    """`mxfp4 eval gate --json`: the verdict, each check with its threshold, and every measured value."""
    return {"passed": all(c.passed for c in checks), "checks": [c.to_json() for c in checks], "measured": values}


def measure_checkpoint(
    checkpoint,
    tokens,
    *,
    reference=None,
    context: int = 256,
    stride: int | None = None,
    device=None,
    backend: str = "torch",
    strict: bool = False,
    expert_layout: ExpertLayout | None = None,
) -> dict[str, float]:
    """perplexity of checkpoint; with a reference also delta_ppl, kl_mean, kl_p99, top1_agreement.
    device, backend, strict, expert_layout: where and how the models run and are read (mxfp4.model.load's
    arguments)."""
    from ..convert.registry import layout_needed
    from ..model import load as load_model

    def load(spec):  # the one expert_layout given to whichever checkpoint needs it
        return load_model(
            spec, device=device, backend=backend, strict=strict, expert_layout=layout_needed(spec, expert_layout)
        )

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
    if not path.is_file():
        raise CheckpointError(f"{path}: no such baseline file (make one with make_baseline / mxfp4 eval baseline)")
    data = read_json(path)
    if ("tokens" in data) == ("text" in data) or not isinstance(data.get("thresholds"), dict):
        raise CheckpointError(f"{path}: a baseline needs one of 'tokens' and 'text', and a 'thresholds' object")
    unknown = set(data["thresholds"]) - set(LIMITS)
    if unknown:
        raise CheckpointError(f"{path}: unknown threshold {sorted(unknown)[0]!r}; known: {', '.join(LIMITS)}")
    return data, path.parent


def _reference(value: str, folder: Path):
    """A baseline's reference: a path relative to its folder when one exists there, else a checkpoint spec as
    given (a hub id, an absolute path, 'ollama:NAME')."""
    local = folder / value
    return local if not value.startswith(OLLAMA_PREFIX) and local.exists() else value


def _spec_to_store(reference, folder: Path) -> str:
    """How make_baseline records a reference: relative to the baseline's folder when it is a local path."""
    path = Path(str(reference))
    return _relative(path, folder) if not str(reference).startswith(OLLAMA_PREFIX) and path.exists() else str(reference)


def evaluation_tokens(checkpoint, tokens=None, text=None):
    """Token ids from exactly one of a token file (.npy or whitespace-separated ids) and a text file (tokenized
    with ``checkpoint``'s tokenizer.json)."""
    if (tokens is None) == (text is None):
        raise OptionError("give exactly one of tokens (a token file) and text (a text file)", parameter="tokens")
    if tokens is not None:
        return read_token_file(tokens)
    from ..convert import open_source

    return tokenize_text(text, open_source(checkpoint).tokenizer_dir())


def gate(
    checkpoint,
    baseline_path,
    *,
    device=None,
    backend: str = "torch",
    strict: bool = False,
    expert_layout: ExpertLayout | None = None,
) -> tuple[dict[str, float], list[Check]]:
    """Measure ``checkpoint`` as the baseline file says; returns the measured values and one Check per threshold."""
    data, folder = _baseline(Path(baseline_path))
    if "tokens" in data:
        tokens = read_token_file(folder / data["tokens"])
    else:
        tokens = evaluation_tokens(checkpoint, text=folder / data["text"])
    reference = _reference(data["reference"], folder) if data.get("reference") else None
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
        strict=strict,
        expert_layout=expert_layout,
    )
    checks = [
        Check(LIMITS[k][0], values[LIMITS[k][0]], float(limit), LIMITS[k][1]) for k, limit in data["thresholds"].items()
    ]
    return values, checks


def make_baseline(
    checkpoint,
    tokens_path=None,
    out_path=None,
    *,
    text=None,
    reference=None,
    context: int = 256,
    stride: int | None = None,
    margin: float = 0.1,
    force: bool = False,
    device=None,
    backend: str = "torch",
    strict: bool = False,
    expert_layout: ExpertLayout | None = None,
) -> dict:
    """Measure checkpoint once on the token file ``tokens_path`` or the text file ``text`` and write a baseline
    to ``out_path`` whose thresholds allow ``margin`` (relative) of slack. reference: any checkpoint (a path in
    any format, a hub id). The file appears only when complete, and replaces an existing one only with force.
    Under torchrun every rank measures its share of the windows and rank 0 writes the file."""
    from ..storage.atomic import atomic_output

    if out_path is None:
        raise OptionError("out_path is required: where the baseline JSON goes", parameter="out_path")
    out_path = Path(out_path)
    tokens = evaluation_tokens(checkpoint, tokens_path, text)
    values = measure_checkpoint(
        checkpoint,
        tokens,
        reference=reference,
        context=context,
        stride=stride,
        device=device,
        backend=backend,
        strict=strict,
        expert_layout=expert_layout,
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
        "tokens" if text is None else "text": _relative(tokens_path if text is None else text, folder),
        "context": context,
        "stride": context if stride is None else stride,
        "measured": values,
        "thresholds": thresholds,
    }
    if reference is not None:
        data["reference"] = _spec_to_store(reference, folder)
    if current_world().leader:  # under torchrun every rank measured the same values; rank 0 writes them
        with atomic_output(out_path, force=force) as temporary:
            temporary.write_text(json.dumps(data, indent=2) + "\n")
    return data


def _relative(path, folder: Path) -> str:
    import os

    return os.path.relpath(Path(path).resolve(), folder)
