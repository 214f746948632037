"""A KV cache of fixed shape, for decoding under a CUDA graph: every layer keeps preallocated key and
value slots, position p in slot p % capacity, and the next position lives in a device tensor. Full
layers get capacity for every position; sliding layers a ring of window + chunk - 1 slots, enough for
a chunk of `chunk` new tokens to see its whole window. Shapes never change, so one captured decode
step replays for every token."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import OptionError


@dataclass
class RingCache:
    keys: torch.Tensor  # [B, KV, capacity, D]
    values: torch.Tensor
    position: torch.Tensor  # int64 0-dim, shared by all layers: the first position of the current call
    window: int | None

    def write(self, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store the current call's keys and values [B, KV, T, D] in their slots."""
        slots = (self.position + torch.arange(k.shape[2], device=k.device)) % self.keys.shape[2]
        self.keys.index_copy_(2, slots, k.to(self.keys.dtype))
        self.values.index_copy_(2, slots, v.to(self.values.dtype))


class StaticCache:
    def __init__(self, model, batch: int, max_positions: int, *, chunk: int = 128):
        c = model.config
        device, dtype = model.lm_head.weight.device, model.dtype
        self.max_positions, self.chunk = max_positions, chunk
        self.position = torch.zeros((), dtype=torch.long, device=device)
        self.used = 0  # the host's count of positions written by eager calls (graph replays bypass it)
        self.layers = []
        for layer in model.layers:
            window = layer.self_attn.window
            capacity = min(max_positions, window + chunk - 1) if window else max_positions
            shape = (batch, c.num_key_value_heads, capacity, c.head_dim)
            self.layers.append(
                RingCache(
                    torch.zeros(shape, dtype=dtype, device=device),
                    torch.zeros(shape, dtype=dtype, device=device),
                    self.position,
                    window,
                )
            )

    def __getitem__(self, layer: int) -> RingCache:
        return self.layers[layer]

    def reserve(self, tokens: int) -> None:
        """Refuse a call that would run past max_positions: full layers would silently overwrite the
        oldest keys. (Checked on the host: reading the device counter would stall a CUDA graph.)"""
        if tokens > self.chunk:
            raise OptionError(
                f"a static cache takes at most {self.chunk} tokens a call, not {tokens}: feed the prompt in chunks"
            )
        if self.used + tokens > self.max_positions:
            raise OptionError(
                f"the static cache holds {self.max_positions} positions; {self.used} are used and {tokens} more do "
                "not fit"
            )
        self.used += tokens

    def advance(self, tokens: int) -> None:
        self.position += tokens  # in place: a captured graph advances it on every replay

    @property
    def nbytes(self) -> int:
        return sum(r.keys.nbytes + r.values.nbytes for r in self.layers)
