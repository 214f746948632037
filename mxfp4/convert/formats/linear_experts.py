"""Experts saved as per-expert linear modules, as MoE linearizers leave them (llm-compressor; vLLM-style names):
``model.layers.L.mlp.experts.{e}.{gate_proj,up_proj,down_proj}.{weight,bias}``, each weight nn.Linear's [out, in].

gpt-oss interleaves gate and up in its fused gate_up_proj (gate: the even output columns, up: the odd ones).
llm-compressor's gpt-oss linearizer (#3100) splits it that way; its generic one before split it in halves, so each
expert's ``gate_proj`` holds the first intermediate_size columns (a mix of gate and up) and ``up_proj`` the rest.
Both write the same names, shapes and dtypes, and a row permutation moves no value off the MXFP4 grid, so nothing
in the file shows which: the caller says it (expert_layout 'gate-up-even-odd' or 'gate-up-halves') or a comparison
with the base tells it (``mxfp4 doctor CKPT --base BASE``). Read either way, the experts come back in HF's fused
form, so every target writes what a correct save holds."""

from __future__ import annotations

import re

from ...choices import LINEAR_SPLITS
from ...errors import CheckpointError
from ...gpt_oss.config import GptOssConfig
from ...gpt_oss.tensors import Canonical
from ...storage.store import TensorStore
from ..anomalies import Anomaly
from ..stream import Dense, Expert

FLOATS = {"BF16", "F16", "F32"}
_LINEAR_GATE = re.compile(r"\.mlp\.experts\.\d+\.gate_proj\.weight$")


def is_linear(store: TensorStore) -> bool:
    return any(_LINEAR_GATE.search(name) for name in store.entries)


def linear_name(layer: int, e: int, projection: str, part: str) -> str:
    return f"model.layers.{layer}.mlp.experts.{e}.{projection}.{part}"


def linear_shapes(config: GptOssConfig) -> dict[str, tuple[int, ...]]:
    """Every per-expert tensor's name -> its shape."""
    hidden, inter = config.hidden_size, config.intermediate_size
    shapes = {
        "gate_proj": ((inter, hidden), (inter,)),
        "up_proj": ((inter, hidden), (inter,)),
        "down_proj": ((hidden, inter), (hidden,)),
    }
    out = {}
    for layer in range(config.num_hidden_layers):
        for e in range(config.num_local_experts):
            for projection, (weight, bias) in shapes.items():
                out[linear_name(layer, e, projection, "weight")] = weight
                out[linear_name(layer, e, projection, "bias")] = bias
    return out


def fused_rows(gate, up, split: str):
    """gate_up's output rows (first axis) from what a split put in gate_proj and up_proj (torch tensors; torch is
    imported here, not with the module: a byte-moving convert never loads it)."""
    import torch

    if split == "gate-up-halves":
        return torch.cat([gate, up])
    fused = torch.empty((2 * gate.shape[0], *gate.shape[1:]), dtype=gate.dtype)
    fused[0::2], fused[1::2] = gate, up
    return fused


class LinearExperts:
    """The per-expert modules of an HF store served as canonical fused tensors, gate and up put back by ``split``
    (None: not known; served as 'gate-up-even-odd', with a refused anomaly)."""

    def __init__(self, store: TensorStore, config: GptOssConfig, path, split: str | None):
        self.store, self.config = store, config
        self.split = split or "gate-up-even-odd"
        self.decided = split is not None
        shapes = linear_shapes(config)
        present = [name for name in shapes if name in store.entries]
        self.dtype = store.entries[present[0]].dtype if present else "BF16"  # (none present: reported missing)
        for name in present:
            entry = store.entries[name]
            if tuple(entry.shape) != shapes[name] or entry.dtype != self.dtype or entry.dtype not in FLOATS:
                raise CheckpointError(
                    f"{store.files[name]}: tensor {name!r} is {entry.dtype} {list(entry.shape)}; per-expert linear "
                    f"modules of this config are {self.dtype if self.dtype in FLOATS else 'BF16/F16/F32'} "
                    f"{list(shapes[name])}"
                )
        self.names = set(shapes)
        self.anomalies: list[Anomaly] = []
        first = linear_name(0, 0, "gate_proj", "weight")
        where = f"{store.files.get(first, path)}: {first!r}"
        if split is None:
            detail = (
                f"{where} and the other per-expert gate_proj / up_proj may hold gpt-oss's even / odd gate_up columns "
                "(llm-compressor's gpt-oss linearizer) or its halves (its generic one before #3100), and nothing in "
                "the file shows which; say which with --expert-layout gate-up-even-odd or gate-up-halves "
                "(expert_layout= in Python), or let `mxfp4 doctor CHECKPOINT --base BASE` tell it"
            )
            self.anomalies.append(Anomaly("gate-up-split-undecided", detail, repaired=False, refused=True))
        elif split == "gate-up-halves":
            detail = f"{where} and the other per-expert gate_proj / up_proj hold gate_up's halves; re-interleaved"
            self.anomalies.append(Anomaly("gate-up-halves", detail, repaired=True))
        elif split not in LINEAR_SPLITS:
            raise CheckpointError(
                f"{path}: the experts are per-expert linear modules; expert_layout={split!r} describes fused "
                f"experts (give one of {', '.join(LINEAR_SPLITS)})",
                parameter="expert_layout",
            )

    def _get(self, layer: int, e: int, projection: str, part: str):
        return self.store.get(linear_name(layer, e, projection, part))

    def _gate_up_out_in(self, layer: int, e: int, part: str):
        gate, up = self._get(layer, e, "gate_proj", part), self._get(layer, e, "up_proj", part)
        return fused_rows(gate, up, self.split)

    def read(self, tensor: Canonical) -> Dense | Expert:
        layer, short, c = tensor.layer, tensor.short, self.config
        experts = c.num_local_experts
        if short == "mlp.experts.gate_up_proj":  # served [E, in, out] like transformers' dense experts
            shape = (experts, c.hidden_size, 2 * c.intermediate_size)
            return Expert(False, shape, self.dtype, lambda e: self._gate_up_out_in(layer, e, "weight").T)
        if short == "mlp.experts.down_proj":
            shape = (experts, c.intermediate_size, c.hidden_size)
            return Expert(False, shape, self.dtype, lambda e: self._get(layer, e, "down_proj", "weight").T)
        if short == "mlp.experts.gate_up_proj_bias":
            return self._stacked(lambda e: self._gate_up_out_in(layer, e, "bias"), (experts, 2 * c.intermediate_size))
        if short == "mlp.experts.down_proj_bias":
            return self._stacked(lambda e: self._get(layer, e, "down_proj", "bias"), (experts, c.hidden_size))
        raise KeyError(tensor.name)

    def _stacked(self, one, shape: tuple[int, int]) -> Dense:
        def rows(start: int, stop: int):
            import torch

            return torch.stack([one(e) for e in range(start, stop)])

        return Dense(self.dtype, shape, lambda: rows(0, shape[0]), rows)


def serves(tensor: Canonical) -> bool:
    """Whether LinearExperts serves this canonical tensor (the expert weights and their biases)."""
    return tensor.short in (
        "mlp.experts.gate_up_proj",
        "mlp.experts.down_proj",
        "mlp.experts.gate_up_proj_bias",
        "mlp.experts.down_proj_bias",
    )
