"""A dense source whose experts come out GPTQ-quantized, computed layer by layer through the reference model.

Layer l's inputs are computed from the calibration tokens with layers < l already quantized (their experts
replaced by the MXFP4 this module wrote for them). In layer l, after attention, the router sends each token to
its top-k experts; expert e's gate_up sees the normed hidden states of the tokens routed to it, and its down
projection sees the clamped-SwiGLU activations those tokens give through the *quantized* gate_up. Each matrix
is quantized by GPTQ (mxfp4.calibrate.gptq) with the Hessian of exactly those inputs; an expert routed fewer
than ``min_tokens`` tokens falls back to the rule's plain rounding (counted in the report). Only one layer's
dense weights, its quantized experts and the [tokens, hidden] activations are in memory at a time: the
converters pull experts in layer order, and a layer is calibrated when its first expert is asked for.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..codec import decode, encode
from ..convert.stream import Dense, Expert, Source
from ..errors import CheckpointError
from ..gpt_oss.tensors import Canonical, canonical_tensors, module_path, mxfp4_shape
from ..model.kernels.moe_torch import clamped_swiglu
from ..model.loading import load_block
from ..model.rope import rotary_tables, yarn_inv_freq
from .gptq import gptq_quantize, output_error, weighted_error

MIN_TOKENS = 64  # fewer routed tokens than this: plain rounding (a Hessian from a handful of tokens overfits)


@dataclass
class LayerReport:
    layer: int
    tokens_per_expert: list[int]
    fallback: int  # experts quantized by plain rounding for want of tokens
    error_rounding: float  # sum over experts and both matrices of tr((W - Q) H (W - Q)^T), plain rounding
    error_gptq: float  # the same with GPTQ (equal to the rounding's for fallback experts)
    matrices: dict = field(default_factory=dict, repr=False)

    def to_json(self) -> dict:
        out = asdict(self)
        out.pop("matrices")
        return out


class CalibratedSource(Source):
    """``base`` (dense experts) with every expert weight GPTQ-quantized on ``ids`` [samples, context]."""

    def __init__(
        self,
        base: Source,
        ids: np.ndarray,
        *,
        scale_rule: str,
        rounding: str = "rne",
        min_tokens: int = MIN_TOKENS,
        device=None,
        damp: float = 0.01,
    ):
        self.base, self.kind, self.path, self.config = base, f"{base.kind} + GPTQ", base.path, base.config
        self.layout = base.layout
        self.ids = torch.from_numpy(np.asarray(ids, dtype=np.int64))
        self.scale_rule, self.rounding, self.min_tokens, self.damp = scale_rule, rounding, min_tokens, damp
        self.device = torch.device(device or "cpu")
        self.reports: list[LayerReport] = []
        self._lock = threading.Lock()
        self._done = -1  # the last layer calibrated
        self._hidden: torch.Tensor | None = None  # the next layer's input [samples, context, hidden]
        self._bytes: dict[str, list] = {}  # expert weight name -> per-expert (blocks, scales), last two layers

    def read(self, tensor):
        read = self.base.read(tensor)
        if not tensor.expert:
            return read
        if read.packed:
            raise CheckpointError(
                f"{self.base.path}: {tensor.name} is MXFP4 already; calibrated quantization starts from dense "
                f"(bf16 / float) experts, such as a fine-tune's"
            )
        return Expert(True, mxfp4_shape(self.config, tensor.short), "MXFP4", lambda e, t=tensor: self._expert(t, e))

    def _expert(self, tensor, e: int):
        with self._lock:
            while self._done < tensor.layer:
                self._calibrate(self._done + 1)
            blocks, scales = self._bytes[tensor.name][e]
        return blocks, scales

    def _embedded(self) -> torch.Tensor:
        read = self.base.read(Canonical("model.embed_tokens.weight", None))
        assert isinstance(read, Dense)
        return F.embedding(self.ids.to(self.device), read.load().to(self.device, torch.float32))

    @torch.no_grad()
    def _calibrate(self, layer: int) -> None:
        c = self.config
        x = self._embedded() if self._hidden is None else self._hidden
        block = load_block(self.base, layer, dtype=torch.float32, device=self.device, experts=False)
        inv_freq, factor = yarn_inv_freq(c.head_dim, c.rope_theta, c.rope_scaling)
        positions = torch.arange(x.shape[1], device=self.device)
        cos, sin = rotary_tables(inv_freq.to(self.device), factor, positions, x.dtype)
        # One window at a time through attention: its scores are [heads, context, context] per window, which for
        # a whole batch of long windows would dwarf everything else calibration holds.
        h = torch.cat([w + block.self_attn(block.input_layernorm(w), cos, sin, 0, None) for w in x.split(1)])
        normed = block.post_attention_layernorm(h).reshape(-1, c.hidden_size)  # [N, H]
        _, indices = block.mlp.router(normed).topk(c.num_experts_per_tok, dim=-1)
        experts = block.mlp.experts
        # 'gate_up' and 'down': the dense experts, read one expert at a time
        reads = {module_path(t): self.base.read(t) for t in canonical_tensors(c) if t.layer == layer and t.expert}
        report = LayerReport(layer, [], 0, 0.0, 0.0)
        quantized = {"gate_up": [], "down": []}
        for e in range(c.num_local_experts):
            routed = normed[(indices == e).any(dim=-1)]  # [n_e, H]
            report.tokens_per_expert.append(int(routed.shape[0]))
            plain = routed.shape[0] < self.min_tokens
            gate_up = reads["gate_up"].load_out_in(e).to(self.device, torch.float32)  # [2I, H]
            first = self._quantize(gate_up, routed, report, plain)
            pre = routed @ decode.dequantize(*first, torch.float32).T + experts.gate_up_bias[e]
            act = clamped_swiglu(pre, experts.limit)  # [n_e, I]: what down sees after the quantized gate_up
            down = reads["down"].load_out_in(e).to(self.device, torch.float32)  # [H, I]
            second = self._quantize(down, act, report, plain)
            report.fallback += int(plain)
            quantized["gate_up"].append(first)
            quantized["down"].append(second)
        for name in ("gate_up", "down"):
            blocks = torch.stack([b for b, _ in quantized[name]])
            scales = torch.stack([s for _, s in quantized[name]])
            experts.set_weight(name, (blocks, scales))
            self._bytes[f"model.layers.{layer}.mlp.experts.{name}_proj"] = quantized[name]
        # the next layer's input, through this layer with its experts quantized (one window at a time, as above)
        self._hidden = torch.cat([block(w, cos, sin, 0, None) for w in x.split(1)])
        for name in [n for n in self._bytes if int(n.split(".")[2]) < layer - 1]:
            del self._bytes[name]  # keep two layers: a writer's read-ahead may still ask for the previous one
        self.reports.append(report)
        self._done = layer

    def _quantize(self, weight: torch.Tensor, inputs: torch.Tensor, report: LayerReport, plain: bool):
        """(blocks, scales) of one expert matrix [out, in] for inputs [n, in]; its errors into the report."""
        rounded = encode.quantize(weight.contiguous(), scale_rule=self.scale_rule, rounding=self.rounding)
        rounded = (rounded.blocks, rounded.scales)
        hessian = None if plain else (inputs.T @ inputs).double()  # float32 products; GPTQ factors in float64

        def error(q) -> float:
            values = decode.dequantize(*q, torch.float32)
            if hessian is None or inputs.shape[0] < inputs.shape[1]:
                return output_error(weight, values, inputs)
            return weighted_error(weight, values, hessian)

        error_rounding = error(rounded)
        chosen = rounded
        if not plain:
            chosen = gptq_quantize(weight, hessian, scale_rule=self.scale_rule, rounding=self.rounding, damp=self.damp)
        report.error_rounding += error_rounding
        report.error_gptq += error_rounding if plain else error(chosen)
        return tuple(t.cpu() for t in chosen)

    def extra_files(self):
        return self.base.extra_files()

    def generated_files(self):
        return self.base.generated_files()

    def source_bytes(self) -> int:
        return self.base.source_bytes()

    def tokenizer_dir(self):
        return self.base.tokenizer_dir()
