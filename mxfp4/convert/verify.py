"""verify(): compare two checkpoints tensor by tensor, across formats.

exact: the same bytes (a lossless repack); equal values: the same numbers in another form (MXFP4
decoded to bf16, F32 that holds bf16 values, requantized MXFP4 with the same values); anything else is
a mismatch, reported with its largest absolute difference. Experts are compared one at a time.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..choices import ExpertLayout
from ..errors import CheckpointError
from ..gpt_oss.tensors import canonical_tensors
from .chat_template import effective_template, template_difference
from .registry import layout_needed, open_source
from .stream import Dense, Expert

HYPER_PARAMETERS = (
    "num_hidden_layers",
    "num_local_experts",
    "num_experts_per_tok",
    "hidden_size",
    "intermediate_size",
    "head_dim",
    "num_attention_heads",
    "num_key_value_heads",
    "vocab_size",
    "sliding_window",
    "layer_types",
)


@dataclass(frozen=True)
class TensorVerdict:
    name: str
    verdict: str  # "exact" | "equal values" | "mismatch"
    max_abs_diff: float
    form_a: str
    form_b: str


@dataclass(frozen=True)
class VerifyResult:
    kind_a: str
    kind_b: str
    tensors: list[TensorVerdict]
    template_difference: str | None = None  # where the chat templates differ (None: the same text)

    @property
    def ok(self) -> bool:
        return self.template_difference is None and all(t.verdict != "mismatch" for t in self.tensors)


def _as_float(tensor):
    return tensor.float()


def _compare(a, b) -> tuple[str, float]:
    """Two torch tensors of one shape -> (verdict, max |a - b|)."""
    import torch

    if a.dtype == b.dtype and torch.equal(
        a.contiguous().view(-1).view(torch.uint8), b.contiguous().view(-1).view(torch.uint8)
    ):
        return "exact", 0.0
    fa, fb = _as_float(a), _as_float(b)
    both_nan = torch.isnan(fa) & torch.isnan(fb)
    diff = (fa - fb).abs().masked_fill(both_nan, 0)
    worst = float(diff.max()) if diff.numel() else 0.0
    return ("equal values" if worst == 0 and not torch.isnan(diff).any() else "mismatch"), worst


def _compare_expert(a: Expert, b: Expert) -> tuple[str, float]:
    import torch

    verdicts, worst = set(), 0.0
    for e in range(a.shape[0]):
        if a.packed and b.packed:
            (ba, sa), (bb, sb) = a.load_expert(e), b.load_expert(e)
            if torch.equal(ba, bb) and torch.equal(sa, sb):
                verdicts.add("exact")
                continue
        verdict, diff = _compare(a.values_out_in(e, torch.float32), b.values_out_in(e, torch.float32))
        verdicts.add("equal values" if verdict == "exact" else verdict)
        worst = max(worst, diff)
    for verdict in ("mismatch", "equal values", "exact"):
        if verdict in verdicts:
            return verdict, worst
    return "exact", worst


def verify(path_a, path_b, *, strict: bool = False, expert_layout: ExpertLayout | None = None) -> VerifyResult:
    """A and B tensor by tensor, and their chat templates (the one transformers would use). strict: refuse a
    checkpoint saved wrong by a known tool instead of comparing what a correct save would hold. expert_layout: as
    for open_source, given to whichever checkpoint needs it (mxfp4.convert.registry.layout_needed)."""
    a = open_source(path_a, strict=strict, expert_layout=layout_needed(path_a, expert_layout))
    b = open_source(path_b, strict=strict, expert_layout=layout_needed(path_b, expert_layout))
    for key in HYPER_PARAMETERS:
        if getattr(a.config, key) != getattr(b.config, key):
            raise CheckpointError(
                f"{a.path} and {b.path} describe different models: {key} is {getattr(a.config, key)!r} vs "
                f"{getattr(b.config, key)!r}"
            )
    verdicts = []
    for tensor in canonical_tensors(a.config):
        ra, rb = a.read(tensor), b.read(tensor)
        if isinstance(ra, Dense):
            verdict, diff = _compare(ra.load(), rb.load())
            forms = (ra.dtype, rb.dtype)
        else:
            verdict, diff = _compare_expert(ra, rb)
            forms = ("MXFP4" if ra.packed else ra.dtype, "MXFP4" if rb.packed else rb.dtype)
        verdicts.append(TensorVerdict(tensor.name, verdict, diff, *forms))
    templates = template_difference(effective_template(a), effective_template(b))
    return VerifyResult(a.kind, b.kind, verdicts, templates)
