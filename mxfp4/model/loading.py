"""load(): any checkpoint the converters read (HF MXFP4 or bf16, original/, GGUF, hub id) as a GptOss
module, built on the meta device and filled one tensor at a time. MXFP4 experts stay packed."""

from __future__ import annotations

import torch

from ..convert import open_source
from ..convert.stream import Dense, Source
from ..gpt_oss.tensors import Canonical, canonical_tensors, module_path
from .kernels.select import NATIVE_BACKENDS, kernels
from .layers import Block
from .model import GptOss


def load(path, *, backend: str = "auto", device=None, dtype=None, strict: bool = False, expert_layout=None) -> GptOss:
    """The model of checkpoint ``path`` on ``device`` (default CPU) in ``dtype`` (default float32 on the
    CPU, bfloat16 on a GPU). backend: 'auto' (default: 'native' on the CPU when its C kernels are built, else
    'torch'), 'torch' (the reference path, any device: bit parity with transformers), 'native' (the CPU with
    C products that read MXFP4 blocks and bf16 weights at memory speed for decoding and small batches) or
    'triton' (kernels that decode MXFP4 experts in registers; a GPU, or the CPU under TRITON_INTERPRET=1);
    'native-int8' is 'native' with the MoE's activations quantized to int8 first, in decode steps and prompts
    (llama.cpp's arithmetic: faster on CPUs without AVX-512, approximate; docs/cpu.md).
    A checkpoint saved wrong by a known tool is read correctly with a RepairWarning; strict=True refuses it.
    expert_layout: how square dense experts are stored where neither shape nor content tells (as for convert)."""
    device = torch.device(device or "cpu")
    chosen = kernels(backend, device)  # refuse an unusable backend before reading anything
    dtype = dtype or (torch.float32 if device.type == "cpu" else torch.bfloat16)
    # The native path computes float32 from bf16 weights as they are (widened in its products, exactly), so a
    # float32 model keeps the checkpoint's bf16 matrices: half the memory, half the bytes a decode step reads.
    keep_bf16 = chosen.name in NATIVE_BACKENDS and dtype == torch.float32
    source = open_source(path, strict=strict, expert_layout=expert_layout)
    model = GptOss.empty(source.config, device=device, dtype=dtype)
    for tensor in canonical_tensors(source.config):
        target = model if tensor.layer is None else model.layers[tensor.layer]
        _fill(target, tensor, source.read(tensor), dtype, device, keep_bf16)
    return model.use_backend(backend).eval()


def load_block(source: Source, layer: int, *, dtype=torch.float32, device=None, experts: bool = True) -> Block:
    """Layer ``layer`` of an open source alone, as a Block on ``device`` in ``dtype`` (the torch path): for
    work that goes through a model one layer at a time, such as calibration. experts=False leaves the expert
    weights unset, for a caller that reads them one expert at a time."""
    device = torch.device(device or "cpu")
    with torch.device("meta"):
        block = Block(source.config, layer)
    block = block.to(dtype).to_empty(device=device)
    for tensor in canonical_tensors(source.config):
        if tensor.layer == layer and (experts or not tensor.expert):
            _fill(block, tensor, source.read(tensor), dtype, device)
    return block.eval()


def _fill(target: torch.nn.Module, tensor: Canonical, read, dtype, device, keep_bf16: bool = False) -> None:
    """One canonical tensor into the model (global tensors) or its block (a layer's). keep_bf16: bf16 weight
    matrices (embeddings, attention, router, unembedding, dense experts) stay bf16 whatever dtype is."""
    if not tensor.expert:
        assert isinstance(read, Dense)
        value = read.load()
        kept = keep_bf16 and value.dtype == torch.bfloat16 and value.dim() == 2 and tensor.name.endswith(".weight")
        _assign(target, module_path(tensor), value, torch.bfloat16 if kept else dtype, device)
        return
    experts = target.mlp.experts
    count = read.shape[0]
    # each expert goes straight into its slot of the [E, ...] tensor: a list of experts then stacked held the
    # layer's experts twice at once, and left that much of the C heap resident after (glibc keeps the freed pieces)
    if read.packed:  # keep MXFP4: the whole [E, ...] blocks and scales, 4.25 bits per weight
        value = _stacked(count, lambda e: read.load_expert(e), device)
    else:  # a dense fine-tune: [E, in, out] -> [E, out, in]
        first = read.load_out_in(0)
        wanted = torch.bfloat16 if keep_bf16 and first.dtype == torch.bfloat16 else dtype
        value = _stacked(count, lambda e: (first if e == 0 else read.load_out_in(e),), device, wanted)[0]
    experts.set_weight(module_path(tensor), value)


def _stacked(count: int, load, device, dtype=None) -> tuple[torch.Tensor, ...]:
    """torch.stack of load(e) (a tuple of tensors) over e < count, per part, filled one expert at a time."""
    out: tuple[torch.Tensor, ...] = ()
    for e in range(count):
        parts = load(e)
        if e == 0:
            out = tuple(torch.empty((count,) + p.shape, dtype=dtype or p.dtype, device=device) for p in parts)
        for slot, part in zip(out, parts):
            slot[e].copy_(part)
    return out


def _assign(module: torch.nn.Module, dotted: str, value: torch.Tensor, dtype, device) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        module = getattr(module, part)
    getattr(module, leaf).data = value.to(device=device, dtype=dtype)
