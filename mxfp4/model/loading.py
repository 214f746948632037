"""load(): any checkpoint the converters read (HF MXFP4 or bf16, original/, GGUF, hub id) as a GptOss
module, built on the meta device and filled one tensor at a time. MXFP4 experts stay packed."""

from __future__ import annotations

import torch

from ..convert import open_source
from ..convert.stream import Dense, Source
from ..gpt_oss.tensors import Canonical, canonical_tensors, module_path
from .kernels.select import kernels
from .layers import Block
from .model import GptOss


def load(path, *, backend: str = "auto", device=None, dtype=None) -> GptOss:
    """The model of checkpoint ``path`` on ``device`` (default CPU) in ``dtype`` (default float32 on the
    CPU, bfloat16 on a GPU). backend: 'auto' (default: 'native' on the CPU when its C kernels are built, else
    'torch'), 'torch' (the reference path, any device: bit parity with transformers), 'native' (the CPU with
    C products that read MXFP4 blocks and bf16 weights at memory speed for decoding and small batches) or
    'triton' (kernels that decode MXFP4 experts in registers; a GPU, or the CPU under TRITON_INTERPRET=1)."""
    device = torch.device(device or "cpu")
    kernels(backend, device)  # refuse an unusable backend before reading anything
    dtype = dtype or (torch.float32 if device.type == "cpu" else torch.bfloat16)
    source = open_source(path)
    model = GptOss.empty(source.config, device=device, dtype=dtype)
    for tensor in canonical_tensors(source.config):
        target = model if tensor.layer is None else model.layers[tensor.layer]
        _fill(target, tensor, source.read(tensor), dtype, device)
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


def _fill(target: torch.nn.Module, tensor: Canonical, read, dtype, device) -> None:
    """One canonical tensor into the model (global tensors) or its block (a layer's)."""
    if not tensor.expert:
        assert isinstance(read, Dense)
        _assign(target, module_path(tensor), read.load(), dtype, device)
        return
    experts = target.mlp.experts
    if read.packed:  # keep MXFP4: the whole [E, ...] blocks and scales, 4.25 bits per weight
        parts = [read.load_expert(e) for e in range(read.shape[0])]
        value = (torch.stack([p[0] for p in parts]).to(device), torch.stack([p[1] for p in parts]).to(device))
    else:  # a dense fine-tune: [E, in, out] -> [E, out, in]
        value = torch.stack([read.load_out_in(e).to(dtype) for e in range(read.shape[0])]).to(device)
    experts.set_weight(module_path(tensor), value)


def _assign(module: torch.nn.Module, dotted: str, value: torch.Tensor, dtype, device) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        module = getattr(module, part)
    getattr(module, leaf).data = value.to(device=device, dtype=dtype)
