"""The gpt-oss model: embeddings, L blocks, final RMSNorm, untied unembedding; prefill and decode with
a KV cache, and a greedy generation helper."""

from __future__ import annotations

import torch
from torch import nn

from ..gpt_oss.config import GptOssConfig
from .cache import StaticCache
from .greedy import greedy_token
from .kernels.select import kernels
from .layers import Block, LayerCache, RMSNorm
from .rope import rotary_tables, yarn_inv_freq


class GptOss(nn.Module):
    def __init__(self, config: GptOssConfig):
        super().__init__()
        c = self.config = config
        self.embed_tokens = nn.Embedding(c.vocab_size, c.hidden_size)
        self.layers = nn.ModuleList(Block(c, i) for i in range(c.num_hidden_layers))
        self.norm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.lm_head = nn.Linear(c.hidden_size, c.vocab_size, bias=False)
        self.backend = "torch"
        self.kernels = kernels("torch", None)
        inv_freq, self.attention_factor = yarn_inv_freq(c.head_dim, c.rope_theta, c.rope_scaling)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    @classmethod
    def empty(cls, config: GptOssConfig, *, device, dtype) -> "GptOss":
        """A model with uninitialised weights, allocated once on `device` in `dtype` (built on the meta
        device: nothing is allocated in float32 first), its rotary frequencies computed in float32."""
        with torch.device("meta"):
            model = cls(config)
        model = model.to(dtype).to_empty(device=device)
        model.inv_freq = yarn_inv_freq(config.head_dim, config.rope_theta, config.rope_scaling)[0].to(device)
        return model

    @property
    def dtype(self) -> torch.dtype:
        """The activations' dtype (the norms'): weight matrices may be stored narrower (loading.load)."""
        return self.norm.weight.dtype

    def use_backend(self, backend: str) -> "GptOss":
        """Run linears, attention, experts and norms on backend 'auto', 'torch', 'native', 'native-int8' or 'triton'
        (kernels/select.py)."""
        chosen = kernels(backend, self.lm_head.weight.device)
        for layer in self.layers:
            layer.self_attn.kernels = layer.mlp.kernels = layer.mlp.experts.kernels = chosen
            layer.input_layernorm.kernels = layer.post_attention_layernorm.kernels = chosen
        self.norm.kernels = self.kernels = chosen
        self.backend = chosen.name
        return self

    def new_cache(self) -> list[LayerCache]:
        return [LayerCache(window=layer.self_attn.window) for layer in self.layers]

    def forward(
        self, ids: torch.Tensor, cache: list[LayerCache] | None = None, start: int = 0, last_only: bool = False
    ) -> torch.Tensor:
        """ids [B, T] (LongTensor) -> logits [B, T, vocab]. With a cache, positions continue from `start`.
        last_only: logits of the last position only, [B, 1, vocab] (a long prefill's [T, vocab] logits
        would dwarf everything else: 64k tokens x 201k vocab is 26 GB in bf16)."""
        with self.kernels.step(ids.numel()):
            return self._forward(ids, cache, start, last_only)

    def _forward(self, ids, cache, start: int, last_only: bool) -> torch.Tensor:
        x = self.embed_tokens(ids).to(self.dtype)  # [B, T, H] (the table may be kept in bf16: loading.load)
        if isinstance(cache, StaticCache):  # positions continue from the cache's own (device) counter
            cache.reserve(ids.shape[1])
            start = cache.position
        positions = start + torch.arange(ids.shape[1], device=ids.device)
        cos, sin = rotary_tables(self.inv_freq, self.attention_factor, positions, x.dtype)
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, start, cache[i] if cache is not None else None)
        if isinstance(cache, StaticCache):
            cache.advance(ids.shape[1])
        if last_only:
            x = x[:, -1:]
        return self.kernels.linear(self.norm(x), self.lm_head.weight)

    @torch.no_grad()
    def generate(
        self, ids: torch.Tensor, new_tokens: int, *, static: bool = False, cuda_graph: bool = False
    ) -> torch.Tensor:
        """Greedy decoding: prefill ids [B, T], then one token at a time from the KV cache. static: a
        fixed-shape cache (StaticCache); cuda_graph: that, with each decode step replayed from one
        captured CUDA graph (no per-kernel launch cost; CUDA only)."""
        if static or cuda_graph:
            from .graphs import generate_static

            return generate_static(self, ids, new_tokens, cuda_graph=cuda_graph)
        cache = self.new_cache()
        logits = self(ids, cache, last_only=True)
        out = [ids]
        token = greedy_token(logits[:, -1])
        for step in range(new_tokens):
            out.append(token)
            if step + 1 == new_tokens:
                break
            logits = self(token, cache, start=ids.shape[1] + step)
            token = greedy_token(logits[:, -1])
        return torch.cat(out, dim=1)
