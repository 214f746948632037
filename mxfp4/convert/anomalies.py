"""Known ways real tools have written gpt-oss checkpoints wrong, as data: each anomaly a reader finds names its
form, its known cause, and whether the reader repaired it on the fly (without guessing) or the file cannot be
trusted. ``mxfp4 doctor`` lists them; every reader warns once per kind, or refuses under ``strict``."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

from ..errors import CheckpointError, RepairWarning

# kind -> (the form's number in the list of known broken saves, its known cause)
KNOWN = {
    "dense-under-packed-names": (
        1,
        "transformers 5.23's save of a dequantized gpt-oss writes dense experts under the packed names "
        "(*_proj_blocks, no *_scales)",
    ),
    "doubled-packed-suffix": (
        2,
        "transformers 5.4's save of an untouched MXFP4 checkpoint renames the packed experts *_proj_blocks_blocks / "
        "*_proj_blocks_scales (p-e-w/heretic#211)",
    ),
    "experts-transposed": (
        3,
        "dense experts stored [E, out, in], as Unsloth's merged_16bit exports wrote them before unsloth-zoo#272",
    ),
    "down-proj-transposed-alone": (
        4,
        "only down_proj stored [E, out, in] beside gate_up's [E, in, out], as Megatron-Bridge exports of 2026-04 "
        "wrote it (Megatron-Bridge#3162, NeMo-RL before #2249); a square one is told by its content",
    ),
    "orientation-undecided": (
        4,
        "a square expert matrix whose shape cannot show its orientation, whose values lie on no MXFP4 grid (a "
        "from-scratch or heavily trained model, or a lone transposed down_proj of one) and whose writer did not "
        "record it; refused until --expert-layout or a comparison with the base says which",
    ),
    "gate-up-halves": (
        5,
        "per-expert gate_proj / up_proj holding the first and second halves of gpt-oss's interleaved gate_up, as "
        "llm-compressor's generic MoE linearizer split it before #3100",
    ),
    "gate-up-split-undecided": (
        5,
        "per-expert linear gate_proj / up_proj whose split of gate_up (gpt-oss's even / odd columns, or halves as "
        "llm-compressor's generic linearizer wrote before #3100) nothing in the file shows; refused until "
        "--expert-layout or a comparison with the base says which",
    ),
    "float-scales": (
        6,
        "packed experts' *_scales cast to a float dtype (bf16 / fp16 / fp32) holding the E8M0 bytes or their decoded "
        "powers of two, as a generic dtype cast of every tensor writes them",
    ),
    "index-names-absent-tensor": (
        7,
        "the safetensors index names a tensor no shard holds (an interrupted or faulty export)",
    ),
    "tensor-missing-from-index": (7, "a shard holds a tensor the safetensors index does not name"),
    "config-key-missing": (8, "config.json lacks a key gpt-oss always has; gpt-oss's value is used"),
    "quantization-config-mismatch": (
        8,
        "config.json's quantization_config disagrees with the tensors (MXFP4 config on dense experts, or none on "
        "packed ones)",
    ),
    "expert-deltas-dropped": (
        9,
        "every expert equals the base's while other tensors differ: a merge that dropped the expert LoRA "
        "(unsloth-zoo#290, #885); only the adapter can repair it",
    ),
}


@dataclass(frozen=True)
class Anomaly:
    kind: str  # a key of KNOWN
    detail: str  # what was found, naming the file and tensor or key
    repaired: bool  # True: read correctly anyway (the output is what a correct save holds)
    refused: bool = False  # True: no reader goes on without the decision it lacks (strict or not)

    @property
    def form(self) -> int:
        return KNOWN[self.kind][0]

    @property
    def cause(self) -> str:
        return KNOWN[self.kind][1]

    def line(self) -> str:
        what = "repaired" if self.repaired else "refused" if self.refused else "not repaired"
        return f"{self.detail} ({what}; known cause: {self.cause})"

    def to_json(self) -> dict:
        return {
            "kind": self.kind,
            "form": self.form,
            "detail": self.detail,
            "repaired": self.repaired,
            "refused": self.refused,
        }


def report(anomalies: list[Anomaly], *, strict: bool) -> None:
    """Refuse a checkpoint with an anomaly no reader can go on with (naming what decides it), and under ``strict``
    one with any anomaly; otherwise one RepairWarning per kind."""
    if not anomalies:
        return
    refused = [a for a in anomalies if a.refused]
    if refused:
        raise CheckpointError(refused[0].detail, parameter="expert_layout")
    if strict:
        raise CheckpointError(
            f"{anomalies[0].line()}; strict reading refuses it ({len(anomalies)} anomalies in all)", parameter="strict"
        )
    seen = set()
    for anomaly in anomalies:
        if anomaly.kind not in seen:
            seen.add(anomaly.kind)
            warnings.warn(anomaly.line(), RepairWarning, stacklevel=3)


# Keys every gpt-oss config.json has, which readers fill with gpt-oss's values when a save drops them.
ALWAYS_PRESENT = ("layer_types", "sliding_window", "swiglu_limit")


def config_anomalies(raw: dict, packed: bool, where: str) -> list[Anomaly]:
    """Config drift in an HF-form config.json (``packed``: whether the tensors hold MXFP4 experts). Every one is
    repaired: the config a converter writes is complete. (rope_parameters without rope_scaling is transformers 5's
    own form, not drift: it is read, and every output carries rope_scaling as well.)"""
    found = []
    for key in ALWAYS_PRESENT:
        if key not in raw:
            found.append(Anomaly("config-key-missing", f"{where}: no {key!r}", True))
    quantization = raw.get("quantization_config")
    says_mxfp4 = isinstance(quantization, dict) and quantization.get("quant_method") == "mxfp4"
    if says_mxfp4 != packed:
        said = "an MXFP4 quantization_config" if says_mxfp4 else "no MXFP4 quantization_config"
        held = "MXFP4" if packed else "dense"
        found.append(Anomaly("quantization-config-mismatch", f"{where}: {said}, but the experts are {held}", True))
    return found
