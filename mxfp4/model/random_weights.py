"""A gpt-oss model with random weights built directly on a device (no checkpoint on disk): for the GPU
benchmarks at full gpt-oss-20b / 120b shapes. Experts are random MXFP4 codes with scales near 2**-7,
the rest Gaussian noise of a plausible size; norms are 1."""

from __future__ import annotations

import torch

from ..codec.layout_reference import packed_shapes
from ..gpt_oss.config import GptOssConfig
from .model import GptOss


def random_model(
    config: GptOssConfig, *, device="cuda", dtype=torch.bfloat16, backend: str = "torch", seed: int = 0
) -> GptOss:
    device = torch.device(device)
    generator = torch.Generator(device=device).manual_seed(seed)
    model = GptOss.empty(config, device=device, dtype=dtype)
    for name, parameter in model.named_parameters():
        with torch.no_grad():
            if name.endswith("layernorm.weight") or name == "norm.weight":
                parameter.fill_(1.0)
            else:
                parameter.normal_(0.0, 0.02, generator=generator)
    for layer in model.layers:
        gate_up, down = random_experts(config, device, generator)
        layer.mlp.experts.set_weight("gate_up", gate_up)
        layer.mlp.experts.set_weight("down", down)
    return model.use_backend(backend).eval()


def random_experts(
    config: GptOssConfig, device, generator: torch.Generator
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """One layer's packed experts, gate_up and down, each (blocks [E, out, in/32, 16], scales [E, out, in/32])."""
    e, h, i = config.num_local_experts, config.hidden_size, config.intermediate_size

    def packed(rows: int, cols: int):
        blocks_shape, scales_shape = packed_shapes((e, rows, cols))
        blocks = torch.randint(0, 256, blocks_shape, dtype=torch.uint8, device=device, generator=generator)
        return blocks, torch.randint(119, 123, scales_shape, dtype=torch.uint8, device=device, generator=generator)

    return packed(2 * i, h), packed(h, i)
