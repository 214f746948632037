"""Writes examples/tiny-experts.safetensors: a small bf16 mixture-of-experts layer with gpt-oss's tensor
names and layout (gate/up interleaved on the output rows), the README's bundled default.

Deterministic (seed 0). Sizes: 4 experts, hidden 256, intermediate 256 -> about 2.5 MB.
Run: python examples/make_tiny_experts.py
"""

from pathlib import Path

import torch
from safetensors.torch import save_file

EXPERTS, HIDDEN, INTERMEDIATE = 4, 256, 256


def main() -> None:
    g = torch.Generator().manual_seed(0)
    prefix = "model.layers.0.mlp"
    tensors = {
        f"{prefix}.router.weight": torch.randn(EXPERTS, HIDDEN, generator=g) * 0.02,
        f"{prefix}.router.bias": torch.zeros(EXPERTS),
        # Dense MoE weights as [E, out, in], so the 32-element blocks run along the input axis.
        f"{prefix}.experts.gate_up_proj": torch.randn(EXPERTS, 2 * INTERMEDIATE, HIDDEN, generator=g) * HIDDEN**-0.5,
        f"{prefix}.experts.gate_up_proj_bias": torch.randn(EXPERTS, 2 * INTERMEDIATE, generator=g) * 0.01,
        f"{prefix}.experts.down_proj": torch.randn(EXPERTS, HIDDEN, INTERMEDIATE, generator=g) * INTERMEDIATE**-0.5,
        f"{prefix}.experts.down_proj_bias": torch.randn(EXPERTS, HIDDEN, generator=g) * 0.01,
    }
    # A few outliers, as trained weights have, so the scale rules differ visibly.
    tensors[f"{prefix}.experts.down_proj"][0, :, ::97] *= 8
    out = Path(__file__).with_name("tiny-experts.safetensors")
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in tensors.items()}, str(out), metadata={"format": "pt"})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
