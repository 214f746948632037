"""The gpt-oss block: RMSNorm, attention with learned sinks and sliding window, and the MoE whose
expert weights stay MXFP4. The arithmetic of attention and experts is in the kernel pairs (kernels.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ShapeError
from ..gpt_oss.config import GptOssConfig
from .cache import RingCache
from .kernels.select import kernels


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps
        self.kernels = kernels("torch", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.kernels.rms_norm(x, self.weight, self.eps)  # float32 inside, as gpt-oss does (norm_torch)


@dataclass
class LayerCache:
    """Keys and values seen so far [B, kv_heads, S, D]; sliding layers keep only the last `window`. Both are views
    of a store with room for positions not seen yet, so a decode step writes its own position and copies nothing
    else (concatenating copied the whole cache every step: measured 28 ms a step for one 32k-position layer,
    against 10 ms for its attention). Full layers' stores double when full (each position is copied about once
    more in all); sliding layers' keep one window of room and start afresh with the last window when full."""

    window: int | None = None
    _store: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, repr=False)
    _begin: int = 0  # the store's positions [_begin, _end) are keys and values
    _end: int = 0

    @property
    def keys(self) -> torch.Tensor | None:
        return None if self._store is None else self._store[0][:, :, self._begin : self._end]

    @property
    def values(self) -> torch.Tensor | None:
        return None if self._store is None else self._store[1][:, :, self._begin : self._end]

    def extend(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Appends k, v [B, kv_heads, T, D]; returns the keys and values attention sees: those kept before, then the
        T new ones (views, valid until the next extend)."""
        t = k.shape[2]
        if self._store is not None:
            self._check(k, v)
        if self._store is None or self._end + t > self._store[0].shape[2]:
            self._restart(k, v)
        keys, values = self._store
        keys[:, :, self._end : self._end + t] = k
        values[:, :, self._end : self._end + t] = v
        seen = (keys[:, :, self._begin : self._end + t], values[:, :, self._begin : self._end + t])
        self._end += t
        if self.window is not None:
            self._begin = max(self._begin, self._end - self.window)
        return seen

    def _check(self, k: torch.Tensor, v: torch.Tensor) -> None:
        for name, x, store in zip(("keys", "values"), (k, v), self._store):
            if x.shape[:2] != store.shape[:2] or x.shape[3] != store.shape[3] or x.dtype != store.dtype:
                raise ShapeError(
                    f"new {name} {tuple(x.shape)} {x.dtype} do not extend a cache of [{store.shape[0]}, "
                    f"{store.shape[1]}, S, {store.shape[3]}] {store.dtype}"
                )

    def _restart(self, k: torch.Tensor, v: torch.Tensor) -> None:
        """A new store with the kept positions at its start and room for k's T and more."""
        kept = self._end - self._begin
        needed = kept + k.shape[2]
        room = needed + (self.window if self.window is not None else needed)
        b, heads, _, d = k.shape
        store = tuple(torch.empty((b, heads, room, d), dtype=x.dtype, device=x.device) for x in (k, v))
        if kept:
            for new, old in zip(store, (self.keys, self.values)):
                new[:, :, :kept] = old
        self._store, self._begin, self._end = store, 0, kept


class Attention(nn.Module):
    def __init__(self, c: GptOssConfig, layer: int):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = c.num_attention_heads, c.num_key_value_heads, c.head_dim
        self.window = c.sliding_window if c.layer_types[layer] == "sliding_attention" else None
        self.q_proj = nn.Linear(c.hidden_size, self.heads * self.head_dim, bias=True)
        self.k_proj = nn.Linear(c.hidden_size, self.kv_heads * self.head_dim, bias=True)
        self.v_proj = nn.Linear(c.hidden_size, self.kv_heads * self.head_dim, bias=True)
        self.o_proj = nn.Linear(self.heads * self.head_dim, c.hidden_size, bias=True)
        self.sinks = nn.Parameter(torch.zeros(self.heads))
        self.kernels = kernels("torch", None)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, start: int, cache: LayerCache | None
    ) -> torch.Tensor:
        b, t, _ = x.shape
        linear = self.kernels.linear
        q = linear(x, self.q_proj.weight, self.q_proj.bias).view(b, t, self.heads, self.head_dim).transpose(1, 2)
        k = linear(x, self.k_proj.weight, self.k_proj.bias).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        v = linear(x, self.v_proj.weight, self.v_proj.bias).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        q, k = self.kernels.rotary(q, cos, sin), self.kernels.rotary(k, cos, sin)
        if isinstance(cache, RingCache):  # the static cache: start is cache.position, a device tensor
            cache.write(k, v)
            out = self.kernels.ring_attention(
                q, cache.keys, cache.values, self.sinks, q_start=cache.position, window=self.window
            )
        else:
            if cache is not None:
                k, v = cache.extend(k, v)
            out = self.kernels.attention(q, k, v, self.sinks, q_start=start, window=self.window)  # [B, H, T, D]
        return linear(out.transpose(1, 2).reshape(b, t, -1), self.o_proj.weight, self.o_proj.bias)


class Experts(nn.Module):
    """E experts. Weights are MXFP4 buffers ([E, out, in/32, 16] blocks + [E, out, in/32] scales), or dense
    [E, out, in] when loaded from a dense (fine-tuned) checkpoint."""

    def __init__(self, c: GptOssConfig):
        super().__init__()
        e = c.num_local_experts
        self.limit = c.swiglu_limit
        self.gate_up_bias = nn.Parameter(torch.zeros(e, 2 * c.intermediate_size))
        self.down_bias = nn.Parameter(torch.zeros(e, c.hidden_size))
        self.weights: dict[str, str] = {}  # name -> 'packed' or 'dense'
        self.kernels = kernels("torch", None)

    def set_weight(self, name: str, value) -> None:
        """name: 'gate_up' or 'down'; value: (blocks, scales) uint8 tensors, or a dense [E, out, in] tensor."""
        if isinstance(value, tuple):
            self.register_buffer(f"{name}_blocks", value[0].contiguous(), persistent=False)
            self.register_buffer(f"{name}_scales", value[1].contiguous(), persistent=False)
        else:
            self.register_buffer(f"{name}_dense", value, persistent=False)
        self.weights[name] = "packed" if isinstance(value, tuple) else "dense"

    def weight(self, name: str):
        """(blocks, scales) when packed, else the dense [E, out, in] tensor."""
        if self.weights[name] == "packed":
            return getattr(self, f"{name}_blocks"), getattr(self, f"{name}_scales")
        return getattr(self, f"{name}_dense")

    def forward(self, x: torch.Tensor, indices: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """x [N, H], top-k indices and routing weights [N, k] -> [N, H]."""
        return self.kernels.experts(
            x,
            indices,
            scores,
            self.weight("gate_up"),
            self.gate_up_bias,
            self.weight("down"),
            self.down_bias,
            self.limit,
        )


class MoE(nn.Module):
    def __init__(self, c: GptOssConfig):
        super().__init__()
        self.top_k = c.num_experts_per_tok
        self.router = nn.Linear(c.hidden_size, c.num_local_experts, bias=True)
        self.experts = Experts(c)
        self.kernels = kernels("torch", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, h = x.shape
        flat = x.reshape(-1, h)
        logits = self.kernels.linear(flat, self.router.weight, self.router.bias)
        top, indices = logits.topk(self.top_k, dim=-1)  # [N, k]
        scores = F.softmax(top, dim=-1)  # softmax over the selected logits only
        return self.experts(flat, indices, scores).reshape(b, t, h)


class Block(nn.Module):
    def __init__(self, c: GptOssConfig, layer: int):
        super().__init__()
        self.input_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.self_attn = Attention(c, layer)
        self.post_attention_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.mlp = MoE(c)

    def forward(self, x, cos, sin, start: int, cache):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, start, cache)
        return x + self.mlp(self.post_attention_layernorm(x))
