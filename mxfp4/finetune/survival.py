"""How much of a fine-tune's delta survives the output's rounding, per merged tensor.

With W the base, D the delta and Q the output's storage (MXFP4 for experts of a quantized target, else the
cast to the output dtype), the change the output actually carries is C = Q(W + D) - Q(W), where Q(W) is
what the base alone would have been stored as (for an MXFP4 base, W itself). Reported:
- ``delta_rel`` = |D| / |W|: how large the fine-tune's change is;
- ``kept`` = 1 - |C - D|^2 / |D|^2: the share of the delta's energy the output reproduces, which is how much
  closer the output lies to the fine-tuned weights W + D than the base alone did (1: all of the delta; 0:
  rounding erased it; below 0: the output is further from the fine-tune than the base was, as when a tiny
  delta tips whole MXFP4 blocks to the next scale);
- ``changed`` = the share of stored values that differ from Q(W) (for MXFP4: weights whose code or
  block scale moved).
Norms are float32 per piece, accumulated over pieces (one expert at a time) in float64.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field

import torch

LOST_BELOW = 0.5  # a tensor that keeps less than half of its delta gets a warning


@dataclass
class Survival:
    name: str
    quantized: bool  # stored as MXFP4 (else cast to a float dtype)
    weight_sq: float = 0.0
    delta_sq: float = 0.0
    residual_sq: float = 0.0  # |C - D|^2
    changed: int = 0
    total: int = 0
    _seen: set = field(default_factory=set, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, part, before: torch.Tensor, delta: torch.Tensor, after: torch.Tensor) -> None:
        """One piece (an expert, or the whole tensor): Q(W), D and Q(W + D), all float32 of one shape.
        A piece recorded again (a writer that reads a tensor twice) is counted once."""
        # float32 norms (torch sums them in a cascade, accurate to ~1e-6, plenty for a report) rather than
        # float64 copies: recording would otherwise cost more than merging the expert.
        weight_sq = float(torch.linalg.vector_norm(before)) ** 2
        delta_sq = float(torch.linalg.vector_norm(delta)) ** 2
        residual_sq = float(torch.linalg.vector_norm(after - before - delta)) ** 2
        changed = int(torch.count_nonzero(after != before))
        with self._lock:
            if part in self._seen:
                return
            self._seen.add(part)
            self.weight_sq += weight_sq
            self.delta_sq += delta_sq
            self.residual_sq += residual_sq
            self.changed += changed
            self.total += after.numel()

    @property
    def delta_rel(self) -> float:
        return math.sqrt(self.delta_sq / self.weight_sq) if self.weight_sq else math.inf

    @property
    def kept(self) -> float:
        return 1.0 - self.residual_sq / self.delta_sq if self.delta_sq else 1.0

    @property
    def changed_share(self) -> float:
        return self.changed / self.total if self.total else 0.0

    @property
    def lost(self) -> bool:
        return self.kept < LOST_BELOW

    def to_json(self) -> dict:
        return {
            "tensor": self.name,
            "stored": "MXFP4" if self.quantized else "float",
            "delta_rel": self.delta_rel,
            "kept": self.kept,
            "changed_share": self.changed_share,
        }


def overall_kept(rows: list[Survival]) -> float:
    """``kept`` of all deltas together (energies summed over tensors, not an average of shares)."""
    delta_sq = sum(r.delta_sq for r in rows)
    return 1.0 - sum(r.residual_sq for r in rows) / delta_sq if delta_sq else 1.0
