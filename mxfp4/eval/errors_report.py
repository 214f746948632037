"""Per-tensor quantization error of a conversion: a dense checkpoint against its MXFP4 version.

For every expert weight: SQNR (10 log10 of signal over error energy), largest absolute error, and the
share of weights clipped (|x| above its block's largest value, 6 * 2**X); per layer, summed over the
layer's experts one expert at a time, and per expert (where a fine-tune broke one expert, its SQNR is
where it shows). Only the expert weights are compared: every other tensor is the same bf16 on both sides.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from ..choices import ExpertLayout
from ..codec.quantization_error import measure_error
from ..convert import open_source
from ..convert.registry import layout_needed
from ..errors import CheckpointError, MissingDependencyError
from ..gpt_oss.tensors import canonical_tensors


@dataclass
class TensorError:
    name: str
    layer: int | None
    kind: str  # e.g. "mlp.experts.down_proj"
    sqnr_db: float
    max_abs_error: float
    clipped_share: float
    signal: float  # sum of x^2, for aggregating SQNR over tensors
    noise: float  # sum of (x - q)^2
    expert_sqnr_db: list[float] = field(default_factory=list)  # one per expert, in expert order

    def to_json(self) -> dict:
        return asdict(self)


def expert_errors(dense_path, quantized_path, *, expert_layout: ExpertLayout | None = None) -> list[TensorError]:
    """Each expert weight of quantized_path against dense_path's. expert_layout: given to whichever of the two
    needs it (what nothing in the file shows: mxfp4.convert.registry.layout_needed)."""
    import torch

    dense = open_source(dense_path, expert_layout=layout_needed(dense_path, expert_layout))
    quantized = open_source(quantized_path, expert_layout=layout_needed(quantized_path, expert_layout))
    if (
        dense.config.num_hidden_layers != quantized.config.num_hidden_layers
        or dense.config.hidden_size != quantized.config.hidden_size
    ):
        raise CheckpointError(f"{dense_path} and {quantized_path} are different models")
    rows = []
    for tensor in canonical_tensors(dense.config):
        if not tensor.expert:
            continue
        a, b = dense.read(tensor), quantized.read(tensor)
        if a.packed or not b.packed:
            raise CheckpointError(
                f"{tensor.name}: the first checkpoint must hold dense experts and the second MXFP4 ones"
            )
        signal = noise = 0.0
        worst, clipped, count, per_expert = 0.0, 0, 0, []
        for e in range(a.shape[0]):
            x = a.load_out_in(e).contiguous().to(torch.float32)  # [out, in]
            blocks, scales = b.load_expert(e)
            report = measure_error(tensor.name, x, blocks, scales)
            signal += report.signal
            per_expert.append(report.sqnr_db)
            noise += report.noise
            worst = max(worst, report.max_abs_error)
            clipped += round(report.clipped_share * x.numel())
            count += x.numel()
        sqnr = math.inf if noise == 0 else 10 * math.log10(signal / noise)
        rows.append(
            TensorError(
                tensor.name, tensor.layer, tensor.short, sqnr, worst, clipped / count, signal, noise, per_expert
            )
        )
    return rows


def aggregate_sqnr(rows: list[TensorError]) -> float:
    """SQNR over all the rows' weights together (energies summed, not dB averaged)."""
    noise = sum(r.noise for r in rows)
    return math.inf if noise == 0 else 10 * math.log10(sum(r.signal for r in rows) / noise)


def sqnr_grid(rows: list[TensorError], kind: str) -> np.ndarray:
    """SQNR in dB of each expert of one weight kind: [experts, layers], layers in order."""
    mine = sorted((r for r in rows if r.kind == kind), key=lambda r: r.layer)
    return np.array([r.expert_sqnr_db for r in mine], dtype=np.float64).T


def plot(rows: list[TensorError], path) -> None:
    """A PNG: SQNR and clipped share per layer (one line per expert weight kind), and below them an
    experts x layers heat map of SQNR for each kind."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        raise MissingDependencyError("the plot needs matplotlib: pip install 'mxfp4[plot]'") from None
    kinds = sorted({r.kind for r in rows})
    fig = plt.figure(figsize=(10, 9))
    grid = fig.add_gridspec(3, len(kinds))
    top = fig.add_subplot(grid[0, :])
    bottom = fig.add_subplot(grid[1, :], sharex=top)
    for kind in kinds:
        mine = sorted((r for r in rows if r.kind == kind), key=lambda r: r.layer)
        layers = [r.layer for r in mine]
        top.plot(layers, [r.sqnr_db for r in mine], marker="o", label=kind.split(".")[-1])
        bottom.plot(layers, [100 * r.clipped_share for r in mine], marker="o", label=kind.split(".")[-1])
    top.set_ylabel("SQNR (dB)")
    top.set_title("MXFP4 quantization error per layer")
    top.grid(alpha=0.3)
    top.legend()
    bottom.set_ylabel("clipped weights (%)")
    bottom.set_xlabel("layer")
    bottom.set_ylim(bottom=0)
    bottom.grid(alpha=0.3)
    bottom.xaxis.set_major_locator(MaxNLocator(integer=True))  # layers are whole numbers
    finite = [v for r in rows for v in r.expert_sqnr_db if math.isfinite(v)]
    low, high = (min(finite), max(finite)) if finite else (0.0, 1.0)
    for column, kind in enumerate(kinds):
        axis = fig.add_subplot(grid[2, column])
        values = np.nan_to_num(sqnr_grid(rows, kind), posinf=high, neginf=low)
        image = axis.imshow(
            values, aspect="auto", origin="lower", cmap="viridis", vmin=low, vmax=high, interpolation="nearest"
        )
        axis.set_title(f"{kind.split('.')[-1]}: SQNR (dB) per expert")
        axis.set_xlabel("layer")
        axis.set_ylabel("expert")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.yaxis.set_major_locator(MaxNLocator(integer=True))
        fig.colorbar(image, ax=axis)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
