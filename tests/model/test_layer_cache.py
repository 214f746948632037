"""The growing KV cache (layers.LayerCache): what a sequence of extends returns and keeps equals concatenation (the
definition), whatever the chunk sizes, for full and sliding layers; the store grows only when full, so a decode
step copies nothing but its own position; mismatched chunks are refused."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mxfp4.errors import ShapeError
from mxfp4.model.layers import LayerCache


def _chunks(seed: int, sizes: list[int], batch: int = 2, heads: int = 3, dim: int = 4):
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(batch, heads, t, dim, generator=g).bfloat16(), torch.randn(batch, heads, t, dim, generator=g))
        for t in sizes
    ]


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.one_of(st.just(1), st.integers(1, 40)), min_size=1, max_size=30),
    window=st.one_of(st.none(), st.integers(1, 20)),
    seed=st.integers(0, 2**31),
)
def test_extend_returns_and_keeps_what_concatenation_gives(sizes, window, seed):
    cache, kept = LayerCache(window=window), None
    for k, v in _chunks(seed, sizes):
        # the definition: attention sees the kept positions then the new ones; a sliding layer keeps the last window
        seen_k = k if kept is None else torch.cat([kept[0], k], dim=2)
        seen_v = v.bfloat16() if kept is None else torch.cat([kept[1], v.bfloat16()], dim=2)
        kept = (seen_k, seen_v) if window is None else (seen_k[:, :, -window:], seen_v[:, :, -window:])
        got_k, got_v = cache.extend(k, v.bfloat16())
        assert torch.equal(got_k, seen_k) and torch.equal(got_v, seen_v)
        assert torch.equal(cache.keys, kept[0]) and torch.equal(cache.values, kept[1])


def test_a_decode_step_writes_in_place_until_the_store_is_full():
    cache = LayerCache(window=None)
    (k, v), *steps = _chunks(0, [100] + [1] * 150)
    cache.extend(k, v)
    store = cache._store[0]
    assert store.shape[2] == 200  # room for as many again
    for i, (k, v) in enumerate(steps[:100]):
        keys, _ = cache.extend(k, v)
        assert cache._store[0] is store and keys.data_ptr() == store.data_ptr() and keys.shape[2] == 101 + i
    keys, _ = cache.extend(*steps[100])  # the 201st position: a store twice the size, the old positions copied
    assert cache._store[0] is not store and cache._store[0].shape[2] == 402 and keys.shape[2] == 201


def test_a_sliding_layer_keeps_one_window_of_room():
    cache, stores = LayerCache(window=8), set()
    for k, v in _chunks(1, [1] * 50):
        cache.extend(k, v)
        stores.add(id(cache._store[0]))
        assert cache._store[0].shape[2] <= 2 * 8 + 1 and cache.keys.shape[2] <= 8
    assert len(stores) <= 50 // 8 + 1  # started afresh at most once a window of steps


@pytest.mark.parametrize(
    "k, problem",
    [
        (torch.zeros(2, 3, 1, 4, dtype=torch.float32), "torch.float32"),
        (torch.zeros(2, 2, 1, 4, dtype=torch.bfloat16), "(2, 2, 1, 4)"),
        (torch.zeros(2, 3, 1, 8, dtype=torch.bfloat16), "(2, 3, 1, 8)"),
    ],
)
def test_a_chunk_that_does_not_match_the_cache_is_refused(k, problem):
    cache = LayerCache(window=None)
    cache.extend(*[x.bfloat16() for x in _chunks(2, [5])[0]])
    with pytest.raises(ShapeError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        cache.extend(k, k)
