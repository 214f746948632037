"""The deltas a LoRA pair adds, in float32, exactly as PEFT defines them (tuners/lora/layer.py), one
expert at a time so a 120b layer's delta is never whole in memory.

Linear: delta = scale * B @ A, [out, in], for W [out, in].
Experts, for the parameter [E, in, out] (transformers' layout), delta_e is [in, out]:
- ``peft``: A [E*r, in] = A.reshape(E, r, in) (expert-major rows); B [out, E*r] = B.reshape(out, r, E)
  (expert e takes the stride-E columns e, e+E, ...); delta_e[i, o] = scale * sum_r B[o, r, e] A[e, r, i].
- ``swapped``: A [E*r, out], B [in, E*r]: the same with in and out exchanged, delta_e = scale * B_e @ A_e.
- ``unsloth``: as ``peft``, but expert e takes B's contiguous columns e*r .. (e+1)*r (B.view(out, E, r)).
"""

from __future__ import annotations

import torch


def linear_delta(a: torch.Tensor, b: torch.Tensor, scale: float) -> torch.Tensor:
    """[out, in] = scale * B [out, r] @ A [r, in], float32."""
    return (b.float() @ a.float()) * scale


def expert_delta(a: torch.Tensor, b: torch.Tensor, scale: float, e: int, experts: int, layout: str) -> torch.Tensor:
    """Expert e's delta [in, out] for the parameter [E, in, out], float32 (a transposed view where that is
    how the product comes out: callers that need [out, in] take .T for free)."""
    rank = a.shape[0] // experts
    a_e = a.float().reshape(experts, rank, a.shape[1])[e]  # [r, in] (swapped: [r, out])
    if layout == "unsloth":
        b_e = b.float().reshape(b.shape[0], experts, rank)[:, e, :]  # [out, r]
    else:
        b_e = b.float().reshape(b.shape[0], rank, experts)[:, :, e]  # [out, r] (swapped: [in, r])
    if layout == "swapped":
        return (b_e @ a_e) * scale  # [in, out]
    return ((b_e @ a_e) * scale).transpose(0, 1)  # [out, in] computed, served as [in, out]


def per_expert_delta(parts, shape_in_out: tuple[int, int]) -> torch.Tensor | None:
    """Expert e's delta [in, out] from its own pairs (mxfp4.finetune.adapter.ExpertPart), or None when the
    adapter trained nothing for this expert."""
    if not parts:
        return None
    delta = torch.zeros(shape_in_out, dtype=torch.float32)
    for part in parts:
        delta[:, part.columns] += (part.b.float() @ part.a.float()).transpose(0, 1) * part.scale
    return delta
