"""Greedy decoding on a static KV cache, optionally with each decode step captured once as a CUDA graph
and replayed: at batch 1 a step is ~100 small kernels whose launch overhead would otherwise exceed
the time the GPU spends reading the weights."""

from __future__ import annotations

import torch

from ..errors import OptionError
from .cache import StaticCache
from .greedy import greedy_token


def generate_static(
    model, ids: torch.Tensor, new_tokens: int, *, cuda_graph: bool = False, chunk: int = 128
) -> torch.Tensor:
    """Same tokens as model.generate (greedy); the prompt is fed in chunks of `chunk` tokens."""
    if cuda_graph and ids.device.type != "cuda":
        raise OptionError("cuda_graph=True needs the model on a CUDA device")
    if (
        cuda_graph and model.backend != "triton"
    ):  # the torch path's per-expert loop asks the host which experts were hit
        raise OptionError(
            "cuda_graph=True needs backend='triton' (the torch path synchronises with the host every layer)"
        )
    b, t = ids.shape
    cache = StaticCache(model, b, t + new_tokens, chunk=chunk)
    for start in range(0, t, cache.chunk):
        logits = model(ids[:, start : start + cache.chunk], cache, last_only=True)
    token = greedy_token(logits[:, -1])  # [B, 1]
    out = [ids, token.clone()]

    def step() -> None:  # reads and writes `token` in place, so a graph replays it as is
        token.copy_(greedy_token(model(token, cache)[:, -1]))

    if cuda_graph and new_tokens > 1:
        graph = _capture(step, cache, token)
        cache.used += new_tokens - 1  # the replays below write these positions without passing forward()
        for _ in range(new_tokens - 1):
            graph.replay()
            out.append(token.clone())
        return torch.cat(out, dim=1)
    for _ in range(new_tokens - 1):
        step()
        out.append(token.clone())
    return torch.cat(out, dim=1)


def _capture(step, cache: StaticCache, token: torch.Tensor) -> "torch.cuda.CUDAGraph":
    """Warm up (compiles the Triton kernels; allocator pools settle) on a side stream, capture, and
    restore the position and the token: the warm-up runs must not count as decoded tokens. Their cache
    writes land in slots of later positions (rewritten before use) or of positions already outside
    every window (a ring holds window + chunk - 1 >= window + 2 slots)."""
    position, first_token, used = cache.position.clone(), token.clone(), cache.used
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):
            step()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    cache.position.copy_(position)
    cache.used = used
    token.copy_(first_token)
    return graph
