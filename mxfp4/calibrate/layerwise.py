"""A dense source whose experts come out GPTQ-quantized, computed layer by layer through the reference model.

Layer l's inputs are computed from the calibration tokens with layers < l already quantized (their experts
replaced by the MXFP4 this module wrote for them). In layer l, after attention, the router sends each token to
its top-k experts; expert e's gate_up sees the normed hidden states of the tokens routed to it, and its down
projection sees the clamped-SwiGLU activations those tokens give through the *quantized* gate_up. Each matrix
is quantized by GPTQ (mxfp4.calibrate.gptq) with the Hessian of exactly those inputs, each token's share x x^T
weighted by its routing weight to the expert by default (weighting='routing', MoEQuant's affinity weighting: the MoE
scales the expert's output by that weight; 'uniform' counts every routed token alike; routing measured better on
held-out text, and better than weighting by the weight's square, which the squared output error would suggest:
docs/calibration.md); an expert routed fewer
than ``min_tokens`` tokens falls back to the rule's plain rounding (counted in the report). Only one layer's
dense weights, its quantized experts and the [tokens, hidden] activations are in memory at a time: the
converters pull experts in layer order, and a layer is calibrated when its first expert is asked for.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .. import distributed
from ..choices import GptqOrder, GptqWeighting
from ..codec import decode, encode, native
from ..codec.constants import BLOCK_SIZE
from ..convert.stream import Dense, Expert, Source
from ..errors import CheckpointError
from ..gpt_oss.tensors import Canonical, canonical_tensors, module_path, mxfp4_shape
from ..model.kernels.moe_torch import clamped_swiglu
from ..model.layers import LayerCache
from ..model.loading import load_block
from ..model.rope import rotary_tables, yarn_inv_freq
from .gptq import gptq_quantize, gram, output_error, weighted_error

MIN_TOKENS = 64  # fewer routed tokens than this: plain rounding (a Hessian from a handful of tokens overfits)


@dataclass
class LayerReport:
    layer: int
    tokens_per_expert: list[int]
    fallback: int  # experts quantized by plain rounding for want of tokens
    error_rounding: float  # sum over experts and both matrices of tr((W - Q) H (W - Q)^T), plain rounding
    error_gptq: float  # the same with GPTQ (equal to the rounding's for fallback experts)
    seconds: float = 0.0  # the layer's wall time, computing the next layer's input included

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class _Expert:
    """One expert's calibration: plain rounding or not, (blocks, scales) of gate_up and of down, each matrix's
    (rounding error, chosen error), and the quantized expert's outputs for its tokens (None in the last layer)."""

    plain: bool
    matrices: tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
    errors: tuple[tuple[float, float], tuple[float, float]]
    output: torch.Tensor | None


FULL_CHUNK = 256  # queries per chunk of a full-attention layer's window


def _attention(block, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Block's attention over one calibration window x [1, T, H] (one at a time: its scores are [heads, T, T],
    which for a whole batch of long windows would dwarf everything else calibration holds), in chunks of queries
    through the model's own cache, as a chunked prefill does, so that no query scores keys it cannot see: a sliding
    layer's chunks are its sliding window (each query scores at most twice the window of keys, not all T), a full
    layer's FULL_CHUNK (the keys after a chunk's last query are never scored: about half of T^2). The same sums but
    for the masked terms."""
    attention, t = block.self_attn, x.shape[1]
    step = FULL_CHUNK if attention.window is None else attention.window
    if t <= 2 * step:
        return attention(x, cos, sin, 0, None)
    cache = LayerCache(window=attention.window)
    chunks = [attention(x[:, a : a + step], cos[a : a + step], sin[a : a + step], a, cache) for a in range(0, t, step)]
    return torch.cat(chunks, dim=1)


TOKEN_SLICE = 512  # tokens a slice of an expert's activation products
ROUTER_ROWS = 4096  # rows of the MoE's input normed at a time for the router


def _statistics(weight: torch.Tensor, rounded, inputs: torch.Tensor, plain: bool):
    """(the Hessian of inputs [n, in], None when plain; plain rounding's error tr((W - Q) H (W - Q)^T)). A function
    of its own so that the (weighted) inputs and the decoded rounding are freed before GPTQ runs."""
    hessian = None if plain else gram(inputs)  # float32 products; GPTQ damps and factors in float64
    values = decode.dequantize(*rounded, torch.float32)
    if hessian is None or inputs.shape[0] < inputs.shape[1]:
        return hessian, output_error(weight, values, inputs)
    return hessian, weighted_error(weight, values, hessian)


SIDE_BY_SIDE = 4  # experts calibrated at once at most: each holds ~0.3 GB of temporaries (a 20b/120b expert)


def _side_by_side(work, count: int, device: torch.device):
    """work(0), ..., work(count - 1), yielded in order, on the CPU computed side by side: up to SIDE_BY_SIDE experts
    at once, every core given out among them (on a 2-core machine one expert a core, each on one thread: its torch
    ops and its C codec calls alike), at most one an expert slot ahead of the one yielded.

    Why: an expert is a chain of products, C loops and small ops. Run one at a time with every core, each small op
    forks and joins, and torch's OpenMP workers, which spin for a while after each parallel region, hold a core
    through the C loop that follows (GPTQ's column loop ran 40% slower after a product than alone). One expert a
    core avoids both: a 20b-shaped layer took 55 s against 63 s on 2 cores (docs/calibration.md). With one thread
    an expert the results are one thread's, whichever thread computes them. The cost is the other experts' working
    sets, hence the cap, and each expert's large temporaries are short-lived (see _quantize_expert)."""
    cores = native.thread_count() if torch.device(device).type == "cpu" else 1
    workers = min(cores, SIDE_BY_SIDE)
    if workers == 1:
        yield from (work(e) for e in range(count))
        return
    # torch threads a worker, every core given out (each worker leads its own OpenMP team); list.pop is atomic
    shares = [cores // workers + (i < cores % workers) for i in range(workers)]

    def alone(e: int):
        inline = native.in_calling_thread() if torch.get_num_threads() == 1 else nullcontext()
        with inline, torch.no_grad():  # grad mode is per thread
            return work(e)

    before = torch.get_num_threads()
    try:
        with ThreadPoolExecutor(
            workers, initializer=lambda: torch.set_num_threads(shares.pop()), thread_name_prefix="mxfp4-expert"
        ) as pool:
            pending = [pool.submit(alone, e) for e in range(min(workers, count))]
            for e in range(count):
                result = pending[e].result()
                if e + workers < count:
                    pending.append(pool.submit(alone, e + workers))
                pending[e] = None
                yield result
    finally:
        torch.set_num_threads(before)


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
        order: GptqOrder = "act",
        weighting: GptqWeighting = "routing",
    ):
        self.base, self.kind, self.path, self.config = base, f"{base.kind} + GPTQ", base.path, base.config
        self.layout = base.layout
        self.ids = torch.from_numpy(np.asarray(ids, dtype=np.int64))
        self.scale_rule, self.rounding, self.min_tokens, self.damp = scale_rule, rounding, min_tokens, damp
        self.order, self.weighting = order, weighting
        self.device = distributed.rank_device(device)
        self.world = distributed.current_world()
        if self.ids.shape[0] < self.world.size:
            raise CheckpointError(
                f"{self.ids.shape[0]} calibration windows for {self.world.size} ranks: every rank needs at least "
                f"one (give more tokens, or run fewer ranks)"
            )
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
        share = self.world.share(self.ids.shape[0])
        ids = self.ids[share.start : share.stop]
        # rows gathered in the stored dtype, then widened (exact): a float32 copy of a 201,088-row table is 2.3 GB
        return F.embedding(ids.to(self.device), read.load().to(self.device)).to(torch.float32)

    def calibrate_all(self) -> None:
        """Calibrate every layer not done yet. Ranks other than 0 of a torchrun job call this instead of
        writing: every rank takes part in every layer's collectives, in layer order."""
        with self._lock:
            while self._done < self.config.num_hidden_layers - 1:
                self._calibrate(self._done + 1)

    @torch.no_grad()
    def _calibrate(self, layer: int) -> None:
        c, world = self.config, self.world
        started = time.perf_counter()
        x = self._embedded() if self._hidden is None else self._hidden  # this rank's windows
        self._hidden = None  # held here only: freed once attention has read it
        block = load_block(self.base, layer, dtype=torch.float32, device=self.device, experts=False)
        inv_freq, factor = yarn_inv_freq(c.head_dim, c.rope_theta, c.rope_scaling)
        positions = torch.arange(x.shape[1], device=self.device)
        cos, sin = rotary_tables(inv_freq.to(self.device), factor, positions, x.dtype)
        attended = torch.cat([w + _attention(block, block.input_layernorm(w), cos, sin) for w in x.split(1)])
        del x
        h = distributed.gather_rows(attended, world, f"layer {layer}: gathering the attention outputs")
        # The MoE's input is the normed h, every window's [N, H]; it is not kept: the router reads it in slices, and
        # each expert norms its own tokens' rows again (a row's norm is the row's alone: 189 MB fewer for a 20b)
        flat, norm = h.reshape(-1, c.hidden_size), block.post_attention_layernorm
        logits = torch.cat([block.mlp.router(norm(part)) for part in flat.split(ROUTER_ROWS)])
        top, indices = logits.topk(c.num_experts_per_tok, dim=-1)
        scores = F.softmax(top, dim=-1)  # the routing weights, as MoE.forward computes them
        experts = block.mlp.experts  # the biases and the limit (no expert weights were loaded)
        del block  # the attention's float32 weights (106 MB for a 20b layer) are not needed past this point
        # 'gate_up' and 'down': the dense experts, read one expert at a time
        reads = {module_path(t): self.base.read(t) for t in canonical_tensors(c) if t.layer == layer and t.expert}
        last = layer + 1 == c.num_hidden_layers
        routes = [torch.where(indices == e) for e in range(c.num_local_experts)]  # (tokens, top-k slot) each
        report = LayerReport(layer, [len(tokens) for tokens, _ in routes], 0, 0.0, 0.0)
        # The next layer's input is this layer's output with its experts quantized: the MoE's sum over each token's
        # experts of routing weight * expert output, added in expert order (so that ranks and one process give the
        # same floats), each expert's output computed with its calibration (down's inputs are already there).
        mixed = None if last else torch.zeros_like(flat)

        def calibrated(e: int) -> _Expert:
            weights = scores[routes[e]] if self.weighting == "routing" else None  # [n_e]
            biases = (experts.gate_up_bias[e], experts.down_bias[e])
            return self._quantize_expert(reads, (flat, norm, routes[e][0]), weights, biases, experts.limit, e, not last)

        # With ranks, each computes all its experts before any is shared, so that they work side by side (holding
        # their experts' outputs until then); alone, experts are computed side by side on the cores, taken in order.
        if world.distributed:
            ahead = {e: calibrated(e) for e in range(c.num_local_experts) if world.owner(e) == world.rank}
            results = (ahead.pop(e, None) for e in range(c.num_local_experts))
        else:
            results = _side_by_side(calibrated, c.num_local_experts, self.device)
        quantized: list[tuple] = [[], []]
        for e, mine in enumerate(results):
            result = self._shared(mine, world.owner(e), layer, e, report.tokens_per_expert[e], not last)
            report.fallback += int(result.plain)  # the report's sums in expert order, whichever rank computed each
            for rounding, chosen in result.errors:
                report.error_rounding += rounding
                report.error_gptq += chosen
            for index in (0, 1):
                quantized[index].append(result.matrices[index])
            if mixed is not None:
                tokens, slot = routes[e]
                mixed.index_add_(0, tokens, result.output * scores[tokens, slot, None])
        for name, index in (("gate_up", 0), ("down", 1)):  # the writer's, expert by expert
            self._bytes[f"model.layers.{layer}.mlp.experts.{name}_proj"] = quantized[index]
        if mixed is not None:  # this rank's windows of attention's output plus the MoE's
            share = world.share(self.ids.shape[0])
            self._hidden = attended + mixed.reshape(h.shape)[share.start : share.stop]
        for name in [n for n in self._bytes if int(n.split(".")[2]) < layer - 1]:
            del self._bytes[name]  # keep two layers: a writer's read-ahead may still ask for the previous one
        report.seconds = time.perf_counter() - started
        self.reports.append(report)
        self._done = layer

    def _quantize_expert(
        self, reads, routed_rows: tuple, weights, biases, limit: float, e: int, output: bool
    ) -> _Expert:
        """Expert e's gate_up on the tokens routed to it (``routed_rows``: the layer's h [N, H], its norm, and the
        rows routed to e), then its down on what the quantized gate_up gives, each token's share of the Hessians
        weighted by ``weights`` [n_e] (None: alike); with ``output``, also the quantized expert's outputs for those
        tokens [n_e, H] (the next layer's input)."""
        gate_up_bias, down_bias = biases
        flat, norm, tokens = routed_rows
        routed = norm(flat[tokens])  # [n_e, H]: made here, so that it is freed here once down's inputs exist
        plain = routed.shape[0] < self.min_tokens
        # each token's inputs times the square root of its weight: its Hessian share x x^T times the weight
        root = None if weights is None else weights.sqrt()[:, None]

        # [out, in] float32 with rows contiguous (a transposed dense store would otherwise be copied again by each
        # step that needs rows: the rounding, GPTQ's column permutation), transposed in the stored dtype first: half
        # the bytes to move for bf16 (43 ms against 78 ms for a gate_up)
        def rows(read) -> torch.Tensor:
            return read.load_out_in(e).to(self.device).contiguous().to(torch.float32)

        first, *first_errors = self._quantize(rows(reads["gate_up"]), routed, root, plain)  # gate_up [2I, H]
        gate_up = decode.dequantize(*first, torch.float32)
        # what down sees after the quantized gate_up [n_e, I], in slices of tokens: the [n_e, 2I] products and the
        # activation's temporaries stay small (experts are calibrated side by side)
        act = torch.empty((routed.shape[0], gate_up.shape[0] // 2), dtype=routed.dtype, device=routed.device)
        for start in range(0, routed.shape[0], TOKEN_SLICE):
            part = routed[start : start + TOKEN_SLICE]
            act[start : start + TOKEN_SLICE] = clamped_swiglu(part @ gate_up.T + gate_up_bias, limit)
        del gate_up, routed
        second, *second_errors = self._quantize(rows(reads["down"]), act, root, plain)  # down [H, I]
        outputs = act @ decode.dequantize(*second, torch.float32).T + down_bias if output else None
        return _Expert(plain, (first, second), (tuple(first_errors), tuple(second_errors)), outputs)

    def _shared(self, result: _Expert | None, owner: int, layer: int, e: int, tokens: int, output: bool) -> _Expert:
        """Expert e's result as its owner computed it (its outputs for ``tokens`` tokens with ``output``), on every
        rank (itself in one process)."""
        world = self.world
        if not world.distributed:
            assert result is not None
            return result
        what = f"layer {layer}: sharing expert {e}'s bytes"
        numbers = torch.zeros(5, dtype=torch.float64)
        if result is not None:
            (r0, g0), (r1, g1) = result.errors
            numbers = torch.tensor([float(result.plain), r0, g0, r1, g1], dtype=torch.float64)
        numbers = distributed.broadcast(numbers, owner, world, what)
        matrices = []
        for index, short in enumerate(("mlp.experts.gate_up_proj", "mlp.experts.down_proj")):
            _, out, inp = mxfp4_shape(self.config, short)
            if result is not None:
                blocks, scales = result.matrices[index]
            else:
                blocks = torch.empty((out, inp // BLOCK_SIZE, BLOCK_SIZE // 2), dtype=torch.uint8)
                scales = torch.empty((out, inp // BLOCK_SIZE), dtype=torch.uint8)
            matrices.append(
                (distributed.broadcast(blocks, owner, world, what), distributed.broadcast(scales, owner, world, what))
            )
        outputs = None
        if output:
            outputs = result.output if result is not None else torch.empty((tokens, self.config.hidden_size))
            outputs = distributed.broadcast(outputs.to(self.device), owner, world, what).to(self.device)
        plain, r0, g0, r1, g1 = numbers.tolist()
        return _Expert(bool(plain), (matrices[0], matrices[1]), ((r0, g0), (r1, g1)), outputs)

    def _quantize(self, weight: torch.Tensor, inputs: torch.Tensor, root: torch.Tensor | None, plain: bool):
        """(blocks, scales) of one expert matrix [out, in] for inputs [n, in] (each row's Hessian share weighted by
        root^2, root [n, 1] or None), its error with plain rounding and the error of what is chosen (GPTQ, which
        reports its own, or the rounding itself when plain)."""
        rounded = encode.quantize(weight.contiguous(), scale_rule=self.scale_rule, rounding=self.rounding)
        rounded = (rounded.blocks, rounded.scales)
        hessian, error_rounding = _statistics(weight, rounded, inputs if root is None else inputs * root, plain)
        if plain:
            return tuple(t.cpu() for t in rounded), error_rounding, error_rounding
        rule = {"scale_rule": self.scale_rule, "rounding": self.rounding}
        chosen = gptq_quantize(weight, hessian, **rule, damp=self.damp, order=self.order, rounded_scales=rounded[1])
        return (chosen.blocks.cpu(), chosen.scales.cpu()), error_rounding, chosen.error

    def extra_files(self):
        return self.base.extra_files()

    def generated_files(self):
        return self.base.generated_files()

    def source_bytes(self) -> int:
        return self.base.source_bytes()

    def tokenizer_dir(self):
        return self.base.tokenizer_dir()
