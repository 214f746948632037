"""The scale rules compared on one dense model: quantize its experts with each rule, then measure
weight SQNR and, against the dense model on the same tokens, delta perplexity, KL and top-1."""

from __future__ import annotations

import functools
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..choices import ExpertLayout
from ..codec.rules import SCALE_RULES
from ..convert import convert
from .errors_report import aggregate_sqnr, expert_errors
from .parity import Comparison, compare


@dataclass(frozen=True)
class RuleResult:
    scale_rule: str
    weight_sqnr_db: float
    parity: Comparison  # the quantized model against the dense one

    def to_json(self) -> dict:
        return {"scale_rule": self.scale_rule, "weight_sqnr_db": self.weight_sqnr_db, **self.parity.to_json()}


def compare_rules(
    dense_path,
    tokens,
    *,
    rules=SCALE_RULES,
    rounding: str | None = None,
    context: int = 256,
    stride: int | None = None,
    device=None,
    backend: str = "torch",
    expert_layout: ExpertLayout | None = None,
) -> tuple[float, list[RuleResult]]:
    """(perplexity of the dense model, one result per rule). rounding: None gives each rule its own (ggml for
    mlx, rne for the others). device, backend: as for mxfp4.model.load; expert_layout: how the dense model's
    experts are stored where nothing in the file shows it (as for mxfp4.convert.convert)."""
    from ..model import load as load_model

    load = functools.partial(load_model, device=device, backend=backend)

    reference = load(dense_path, expert_layout=expert_layout)
    results, base_ppl = [], None
    with tempfile.TemporaryDirectory(prefix="mxfp4-rules-") as work:
        for rule in rules:
            out = Path(work) / rule
            convert(dense_path, out, to="mxfp4", scale_rule=rule, rounding=rounding, expert_layout=expert_layout)
            sqnr = aggregate_sqnr(expert_errors(dense_path, out, expert_layout=expert_layout))
            parity = compare(reference, load(out), tokens, context=context, stride=stride)
            base_ppl = parity.ppl_a
            results.append(RuleResult(rule, sqnr, parity))
    return base_ppl, results
