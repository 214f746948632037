"""A gpt-oss model with random weights built directly on a device (no checkpoint on disk): for the GPU
benchmarks at full gpt-oss-20b / 120b shapes. Experts are random MXFP4 codes with scales near 2**-7,
the rest Gaussian noise of a plausible size; norms are 1."""

from __future__ import annotations

import torch

from ..convert.config import GptOssConfig
from .model import GptOss


def random_model(config: GptOssConfig, *, device="cuda", dtype=torch.bfloat16, backend: str = "torch", seed: int = 0) -> GptOss:
    device = torch.device(device)
    generator = torch.Generator(device=device).manual_seed(seed)
    with torch.device("meta"):
        model = GptOss(config)
    model = model.to(dtype).to_empty(device=device)
    for name, parameter in model.named_parameters():
        with torch.no_grad():
            if name.endswith("layernorm.weight") or name == "norm.weight":
                parameter.fill_(1.0)
            else:
                parameter.normal_(0.0, 0.02, generator=generator)
    from .rope import yarn_inv_freq

    model.inv_freq = yarn_inv_freq(config.head_dim, config.rope_theta, config.rope_scaling)[0].to(device)
    e, h, i = config.num_local_experts, config.hidden_size, config.intermediate_size
    for layer in model.layers:
        for name, rows, cols in (("gate_up", 2 * i, h), ("down", h, i)):
            blocks = torch.randint(0, 256, (e, rows, cols // 32, 16), dtype=torch.uint8, device=device, generator=generator)
            scales = torch.randint(119, 123, (e, rows, cols // 32), dtype=torch.uint8, device=device, generator=generator)
            layer.mlp.experts.set_weight(name, (blocks, scales))
    return model.use_backend(backend).eval()
