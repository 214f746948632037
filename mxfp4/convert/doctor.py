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
            anomalies = [layout_from_base(a, source, base_source) for a in anomalies]
            anomalies += compare_with_base(source, base_source)
    return Diagnosis(str(source.path), source.kind, source.layout, anomalies)


def _same_values(a, b) -> bool:
    if isinstance(a, Dense):
        return tuple(a.shape) == tuple(b.shape) and torch.equal(a.load().float(), b.load().float())
    return all(
        torch.equal(a.values_out_in(e, torch.float32), b.values_out_in(e, torch.float32)) for e in range(a.shape[0])
    )


# For each anomaly a comparison with the base can settle: which tensors to compare, and for each layout the file
# might hold, what the tensor as read (expert 0, [out, in]) would be in the base's form if the file held it.
_BASE_TELLS = {
    # an undecided square expert is served as stored, read as [E, in, out]
    "orientation-undecided": (
        lambda t, source: t.name in source.undecided,
        {"in-out": lambda w: w, "out-in": lambda w: w.T},
    ),
    # per-expert linear modules are served split even / odd; the halves split holds gate_proj's rows, then up_proj's
    "gate-up-split-undecided": (
        lambda t, source: t.short == "mlp.experts.gate_up_proj",
        {"gate-up-even-odd": lambda w: w, "gate-up-halves": lambda w: torch.cat([w[0::2], w[1::2]])},
    ),
}


def layout_from_base(anomaly: Anomaly, source: Source, base: Source) -> Anomaly:
    """What an undecided anomaly could not tell, told by the base: a fine-tune stays far closer to its base read
    the way it is stored than any other way. The anomaly, its detail saying the layout and the option that reads
    it (readers still refuse the file until the option is given); unchanged when the base does not decide."""
    if anomaly.kind not in _BASE_TELLS or source.config.hf_dict(mxfp4=True) != base.config.hf_dict(mxfp4=True):
        return anomaly
    compared, readings = _BASE_TELLS[anomaly.kind]
    said = set()
    for t in canonical_tensors(source.config):
        if not compared(t, source):
            continue
        as_read, want = source.read(t).values_out_in(0, torch.float32), base.read(t).values_out_in(0, torch.float32)
        distance = {layout: float((read(as_read) - want).norm()) for layout, read in readings.items()}
        closest = min(distance, key=distance.__getitem__)
        if any(distance[closest] >= DECISIVE * d for layout, d in distance.items() if layout != closest):
            return anomaly
        said.add(closest)
    if len(said) != 1:
        return anomaly
    layout = said.pop()
    detail = f"{anomaly.detail}. Compared with the base, the file holds {layout!r}: --expert-layout {layout}"
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
