"""diagnose(): what a checkpoint is and everything a known broken save got wrong in it, read-only. With a base,
also what only a comparison shows: experts left equal to the base's while the rest changed (a merge that dropped
the expert LoRA)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import torch

from ..errors import RepairWarning
from ..gpt_oss.tensors import canonical_tensors
from .anomalies import Anomaly
from .registry import open_source
from .stream import Dense, Source


@dataclass(frozen=True)
class Diagnosis:
    path: str
    kind: str
    layout: str
    anomalies: list[Anomaly] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.anomalies

    def to_json(self) -> dict:
        return {
            "path": self.path,
            "kind": self.kind,
            "layout": self.layout,
            "healthy": self.healthy,
            "anomalies": [a.to_json() for a in self.anomalies],
        }


def diagnose(spec, *, base=None) -> Diagnosis:
    """The format, the experts' layout and every anomaly of checkpoint ``spec``; ``base``: the checkpoint it was
    fine-tuned from (any format), to find deltas a merge dropped."""
    with warnings.catch_warnings():  # the anomalies are the report here, not warnings
        warnings.simplefilter("ignore", RepairWarning)
        source = open_source(spec)
        anomalies = list(source.anomalies)
        if base is not None:
            anomalies += compare_with_base(source, open_source(base))
    return Diagnosis(str(source.path), source.kind, source.layout, anomalies)


def _same_values(a, b) -> bool:
    if isinstance(a, Dense):
        return tuple(a.shape) == tuple(b.shape) and torch.equal(a.load().float(), b.load().float())
    return all(
        torch.equal(a.values_out_in(e, torch.float32), b.values_out_in(e, torch.float32)) for e in range(a.shape[0])
    )


def compare_with_base(source: Source, base: Source) -> list[Anomaly]:
    """Form 9: every expert weight equal to the base's (values, whatever the two formats) while some other tensor
    differs. One expert at a time; stops at the first expert that differs."""
    if source.config.hf_dict(mxfp4=True) != base.config.hf_dict(mxfp4=True):
        return []  # another model: nothing to compare
    tensors = canonical_tensors(source.config)
    experts = [t for t in tensors if t.expert]
    if not all(_same_values(source.read(t), base.read(t)) for t in experts):
        return []
    changed = [t.name for t in tensors if not t.expert and not _same_values(source.read(t), base.read(t))]
    if not changed:
        return []
    detail = (
        f"{source.path}: all {len(experts)} expert weights equal the base's while {len(changed)} other tensors "
        f"differ (first: {changed[0]!r})"
    )
    return [Anomaly("expert-deltas-dropped", detail, repaired=False)]
