"""The greedy pick of the next token: the index of each row's largest logit, as torch.argmax gives it (the first
of equal maxima; a NaN counts as the largest, the first NaN wins). On the CPU numpy finds it: torch's CPU argmax
over gpt-oss's 201,088 logits took 0.64 ms in bf16 and 0.25 ms in float32 where numpy's took 0.01 ms (Intel Xeon
VM, 2026-12-03), about 1% of a decode step of the 4-layer benchmark model."""

from __future__ import annotations

import torch


def greedy_token(logits: torch.Tensor) -> torch.Tensor:
    """logits [B, V] -> the index of each row's largest, int64 [B, 1] (torch.argmax(-1, keepdim=True)'s result)."""
    if logits.device.type != "cpu" or logits.requires_grad or logits.dtype not in _WIDENS_EXACTLY:
        return logits.argmax(-1, keepdim=True)
    rows = logits.to(torch.float32).numpy()  # exact for these dtypes: equal logits stay equal, NaN stays NaN
    return torch.from_numpy(rows.argmax(-1)).to(torch.int64).reshape(logits.shape[:-1] + (1,))


_WIDENS_EXACTLY = (torch.float32, torch.bfloat16, torch.float16)
