"""Per-tensor quantization error of a conversion: a dense checkpoint against its MXFP4 version.

For every expert weight: SQNR (10 log10 of signal over error energy), largest absolute error, and the
share of weights clipped (|x| above its block's largest value, 6 * 2**X); per layer, summed over the
layer's experts one expert at a time. Non-expert tensors are compared the same way when both sides hold
them (bf16 on both: exact).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from ..convert import open_source
from ..gpt_oss.tensors import canonical_tensors
from ..storage.safetensors_io import CheckpointError
from ..codec.measure import measure


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

    def to_json(self) -> dict:
        return asdict(self)


def expert_errors(dense_path, quantized_path) -> list[TensorError]:
    import torch

    dense, quantized = open_source(dense_path), open_source(quantized_path)
    if dense.config.num_hidden_layers != quantized.config.num_hidden_layers or dense.config.hidden_size != quantized.config.hidden_size:
        raise CheckpointError(f"{dense_path} and {quantized_path} are different models")
    rows = []
    for tensor in canonical_tensors(dense.config):
        if not tensor.expert:
            continue
        a, b = dense.read(tensor), quantized.read(tensor)
        if a.packed or not b.packed:
            raise CheckpointError(f"{tensor.name}: the first checkpoint must hold dense experts and the second MXFP4 ones")
        signal = noise = 0.0
        worst, clipped, count = 0.0, 0, 0
        for e in range(a.shape[0]):
            x = a.load_expert(e).transpose(0, 1).contiguous().to(torch.float32)  # [out, in]
            blocks, scales = b.load_expert(e)
            report = measure(tensor.name, x, blocks, scales)
            signal += report.signal
            noise += report.noise
            worst = max(worst, report.max_abs_error)
            clipped += round(report.clipped_share * x.numel())
            count += x.numel()
        sqnr = math.inf if noise == 0 else 10 * math.log10(signal / noise)
        rows.append(TensorError(tensor.name, tensor.layer, tensor.short, sqnr, worst, clipped / count, signal, noise))
    return rows


def aggregate_sqnr(rows: list[TensorError]) -> float:
    """SQNR over all the rows' weights together (energies summed, not dB averaged)."""
    noise = sum(r.noise for r in rows)
    return math.inf if noise == 0 else 10 * math.log10(sum(r.signal for r in rows) / noise)


def plot(rows: list[TensorError], path) -> None:
    """SQNR and clipped share per layer, one line per expert weight kind, as a PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise CheckpointError("the plot needs matplotlib: pip install 'mxfp4[plot]'") from None
    kinds = sorted({r.kind for r in rows})
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    for kind in kinds:
        mine = [r for r in rows if r.kind == kind]
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
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
