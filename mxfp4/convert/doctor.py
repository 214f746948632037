"""diagnose(): what a checkpoint is and everything a known broken save got wrong in it, read-only. With a base,
also what only a comparison shows: experts left equal to the base's while the rest changed (a merge that dropped
the expert LoRA)."""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field

import torch

from ..errors import RepairWarning
from ..gpt_oss.tensors import canonical_tensors
from .anomalies import Anomaly
from .orientation import DECISIVE
from .registry import open_unreported
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
    fine-tuned from (any format), to find deltas a merge dropped and to tell how an undecided square expert is
    stored."""
    with warnings.catch_warnings():  # the anomalies are the report here, not warnings
        warnings.simplefilter("ignore", RepairWarning)
        source = open_unreported(spec)
        anomalies = list(source.anomalies)
        if base is not None:
            base_source = open_unreported(base)
            anomalies = [
                split_from_base(orientation_from_base(a, source, base_source), source, base_source) for a in anomalies
            ]
            anomalies += compare_with_base(source, base_source)
    return Diagnosis(str(source.path), source.kind, source.layout, anomalies)


def _same_values(a, b) -> bool:
    if isinstance(a, Dense):
        return tuple(a.shape) == tuple(b.shape) and torch.equal(a.load().float(), b.load().float())
    return all(
        torch.equal(a.values_out_in(e, torch.float32), b.values_out_in(e, torch.float32)) for e in range(a.shape[0])
    )


def orientation_from_base(anomaly: Anomaly, source: Source, base: Source) -> Anomaly:
    """An undecided square expert's orientation told by the base: a fine-tune stays far closer to its base in its
    stored orientation than transposed. The anomaly, its detail saying what the base shows (readers still refuse
    it: a convert names the layout with --expert-layout)."""
    if anomaly.kind != "orientation-undecided" or source.config.hf_dict(mxfp4=True) != base.config.hf_dict(mxfp4=True):
        return anomaly
    said = set()
    for t in canonical_tensors(source.config):
        if t.name not in source.undecided:
            continue
        # served as stored, read as [E, in, out]: closer to the base transposed means stored [E, out, in]
        as_read, want = source.read(t).values_out_in(0, torch.float32), base.read(t).values_out_in(0, torch.float32)
        kept, turned = float((as_read - want).norm()), float((as_read.T - want).norm())
        if turned < DECISIVE * kept:
            said.add("out-in")
        elif kept < DECISIVE * turned:
            said.add("in-out")
        else:
            return anomaly
    if len(said) != 1:
        return anomaly
    layout = said.pop()
    detail = f"{anomaly.detail}. Compared with the base, it is stored {layout!r}: --expert-layout {layout}"
    return dataclasses.replace(anomaly, detail=detail)


def split_from_base(anomaly: Anomaly, source: Source, base: Source) -> Anomaly:
    """Per-expert linear modules whose gate / up split nothing showed, told by the base: gate_up as read (the
    even / odd split) and as the halves split would give it, each compared with the base's."""
    if anomaly.kind != "gate-up-split-undecided" or source.config.hf_dict(mxfp4=True) != base.config.hf_dict(
        mxfp4=True
    ):
        return anomaly
    said = set()
    for t in canonical_tensors(source.config):
        if t.short != "mlp.experts.gate_up_proj":
            continue
        as_read, want = source.read(t).values_out_in(0, torch.float32), base.read(t).values_out_in(0, torch.float32)
        halves = torch.cat([as_read[0::2], as_read[1::2]])  # what gate_proj and up_proj hold, one after the other
        even_odd, other = float((as_read - want).norm()), float((halves - want).norm())
        if other < DECISIVE * even_odd:
            said.add("gate-up-halves")
        elif even_odd < DECISIVE * other:
            said.add("gate-up-even-odd")
        else:
            return anomaly
    if len(said) != 1:
        return anomaly
    split = said.pop()
    detail = f"{anomaly.detail}. Compared with the base, the split is {split!r}: --expert-layout {split}"
    return dataclasses.replace(anomaly, detail=detail)


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
