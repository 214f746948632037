"""The model's Triton kernels (MoE experts with MXFP4 decoded in registers; attention with sinks, window
and GQA) against their torch twins, and the model's two backends against each other. Without a GPU the
kernels run under TRITON_INTERPRET=1 (set in conftest), so shapes are small; with one they run on it."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import mxfp4
import mxfp4.model
from mxfp4.model.kernels import attention_torch, moe_torch, routing

pytest.importorskip("triton", reason="Triton is installed by .ci/run (the 'triton' extra)")
from mxfp4.model.kernels import attention_triton, moe_triton

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
EXAMPLES = "examples"


# --- routing: the tiles of the grouped matmul --------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 40),
    st.integers(1, 4),
    st.integers(1, 12),
    st.sampled_from([16, 32, 64]),
    st.randoms(use_true_random=False),
)
def test_tiles_cover_every_slot_once_within_one_expert(n, k, experts, block_m, rnd):
    k = min(k, experts)
    indices = torch.tensor([rnd.sample(range(experts), k) for _ in range(n)])
    r = routing.route(indices, experts, block_m)
    flat = indices.reshape(-1)
    assert r.tiles == routing.max_tiles(n * k, experts, block_m)
    covered = []
    for e, start, end in zip(r.tile_expert.tolist(), r.tile_row_start.tolist(), r.tile_row_end.tolist()):
        if e == experts:  # a spare tile
            assert start == end == 0
            continue
        assert 0 < end - start <= block_m
        slots = r.order[start:end].long()
        assert (flat[slots] == e).all()  # one expert per tile
        assert (slots.diff() > 0).all()  # token order kept within an expert
        covered += slots.tolist()
    assert sorted(covered) == list(range(n * k))  # every slot exactly once


# --- MoE experts ---------------------------------------------------------------------------------------


def _experts(e, hidden, inter, device, seed=0, nan_scale=False):
    g = torch.Generator().manual_seed(seed)

    def packed(rows, cols):
        t = mxfp4.quantize(torch.randn(e, rows, cols, generator=g) * 0.2)
        scales = t.scales.clone()
        if nan_scale:
            scales[e - 1, 3, 0] = 255  # one NaN block in the last expert's row 3
        return t.blocks.to(device), scales.to(device)

    gate_up, down = packed(2 * inter, hidden), packed(hidden, inter)
    return (
        gate_up,
        (torch.randn(e, 2 * inter, generator=g) * 0.5).to(device),
        down,
        (torch.randn(e, hidden, generator=g) * 0.5).to(device),
    )


def _route(n, e, k, seed, device, only=None):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, e, generator=g)
    if only is not None:
        logits[:, only] += 100  # every token picks these experts
    top, indices = logits.topk(k, dim=-1)
    return indices.to(device), top.softmax(-1).to(device)


MOE_CASES = {  # name: (tokens, experts, top-k, hidden, intermediate, forced experts)
    "decode, 4 of 32 experts": (1, 32, 4, 64, 64, None),
    "prefill, ragged tiles and K tails": (40, 8, 4, 96, 160, None),
    "every token on the same two experts": (37, 6, 2, 64, 96, [1, 4]),
    "top-1": (9, 4, 1, 32, 32, None),
}


@pytest.mark.parametrize("case", MOE_CASES)
def test_moe_kernel_matches_its_torch_twin(case):
    n, e, k, hidden, inter, only = MOE_CASES[case]
    gate_up, gate_up_bias, down, down_bias = _experts(e, hidden, inter, DEVICE)
    indices, scores = _route(n, e, k, seed=n, device=DEVICE, only=only)
    x = torch.randn(n, hidden, generator=torch.Generator().manual_seed(1)).to(DEVICE)
    want = moe_torch.experts(x, indices, scores, gate_up, gate_up_bias, down, down_bias, limit=7.0)
    got = moe_triton.experts(x, indices, scores, gate_up, gate_up_bias, down, down_bias, limit=7.0)
    assert got.shape == want.shape and got.dtype == want.dtype
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * want.abs().max().item())


@pytest.mark.filterwarnings(
    "ignore:overflow encountered in exp"
)  # the interpreter's sigmoid of a very negative gate: 0, as it should
def test_moe_kernel_clamps_like_the_twin():
    # Large weights push the gate and linear halves past the limit on both sides.
    gate_up, gate_up_bias, down, down_bias = _experts(4, 64, 64, DEVICE)
    gate_up = (gate_up[0], (gate_up[1].long() + 4).to(torch.uint8))  # every gate/up weight x16
    indices, scores = _route(12, 4, 2, seed=3, device=DEVICE)
    x = torch.randn(12, 64, generator=torch.Generator().manual_seed(2)).to(DEVICE)
    h = x @ mxfp4.dequantize(gate_up[0][0], gate_up[1][0], torch.float32).T
    assert (h > 7).any() and (h < -7).any()  # the clamp is exercised
    want = moe_torch.experts(x, indices, scores, gate_up, gate_up_bias, down, down_bias, limit=7.0)
    got = moe_triton.experts(x, indices, scores, gate_up, gate_up_bias, down, down_bias, limit=7.0)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * want.abs().max().item())


def test_moe_kernel_propagates_a_nan_scale_like_the_twin():
    gate_up, gate_up_bias, down, down_bias = _experts(4, 64, 64, DEVICE, nan_scale=True)
    g = torch.Generator().manual_seed(5)
    indices = torch.stack([torch.randperm(4, generator=g)[:2] for _ in range(10)]).to(
        DEVICE
    )  # some tokens miss expert 3
    scores = torch.rand(10, 2, generator=g).softmax(-1).to(DEVICE)
    x = torch.randn(10, 64, generator=torch.Generator().manual_seed(2)).to(DEVICE)
    want = moe_torch.experts(x, indices, scores, gate_up, gate_up_bias, down, down_bias, limit=7.0)
    got = moe_triton.experts(x, indices, scores, gate_up, gate_up_bias, down, down_bias, limit=7.0)
    assert want.isnan().any() and not want.isnan().all()
    assert torch.equal(got.isnan(), want.isnan())
    torch.testing.assert_close(got.nan_to_num(), want.nan_to_num(), rtol=1e-5, atol=1e-4)


def test_moe_kernel_never_decodes_an_expert_to_memory(monkeypatch):
    gate_up, gate_up_bias, down, down_bias = _experts(8, 64, 64, DEVICE)
    indices, scores = _route(5, 8, 2, seed=0, device=DEVICE)
    x = torch.randn(5, 64).to(DEVICE)

    def no_dense_weights(*args, **kwargs):
        raise AssertionError("an expert was decoded to a dense tensor")

    monkeypatch.setattr(mxfp4.codec.decode, "dequantize", no_dense_weights)
    with pytest.raises(AssertionError, match="decoded to a dense"):  # the twin does decode (one expert at a time)
        moe_torch.experts(x, indices, scores, gate_up, gate_up_bias, down, down_bias, limit=7.0)
    assert moe_triton.experts(x, indices, scores, gate_up, gate_up_bias, down, down_bias, limit=7.0).isfinite().all()


def test_moe_kernel_takes_dense_experts_through_the_twin():
    gate_up, gate_up_bias, down, down_bias = _experts(4, 32, 32, DEVICE)
    dense = [mxfp4.dequantize(*w, torch.float32) for w in (gate_up, down)]
    indices, scores = _route(6, 4, 2, seed=1, device=DEVICE)
    x = torch.randn(6, 32).to(DEVICE)
    want = moe_torch.experts(x, indices, scores, gate_up, gate_up_bias, down, down_bias, limit=7.0)
    got = moe_triton.experts(x, indices, scores, dense[0], gate_up_bias, dense[1], down_bias, limit=7.0)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


# --- attention -----------------------------------------------------------------------------------------

ATTENTION_CASES = {  # name: (batch, heads, kv heads, queries, keys, head dim, first position, window, splits)
    "prefill, full": (2, 4, 2, 7, 7, 16, 0, None, None),
    "prefill, window 3, GQA 4": (1, 8, 2, 21, 21, 64, 0, 3, None),
    "prefill longer than a tile, GQA 8": (1, 16, 2, 40, 40, 32, 0, None, None),
    "prefill after a cache, window": (2, 6, 3, 9, 20, 16, 11, 4, None),
    "decode, full cache": (1, 8, 2, 1, 40, 64, 39, None, None),
    "decode, keys split across programs": (1, 8, 2, 1, 300, 64, 299, None, 3),
    "decode, window cache, split": (2, 4, 1, 1, 8, 32, 100, 8, 2),
    "head dim not a power of two": (1, 4, 2, 5, 5, 48, 0, None, None),
    "multi-head (no GQA)": (1, 3, 3, 6, 6, 16, 0, 2, None),
}


@pytest.mark.parametrize("case", ATTENTION_CASES)
def test_attention_kernel_matches_its_torch_twin(case):
    b, h, kv, t, s, d, start, window, splits = ATTENTION_CASES[case]
    g = torch.Generator().manual_seed(t * 1000 + s)
    q, k, v = (torch.randn(*shape, generator=g).to(DEVICE) for shape in ((b, h, t, d), (b, kv, s, d), (b, kv, s, d)))
    sinks = (torch.randn(h, generator=g) * 2).to(DEVICE)
    want = attention_torch.attention(q, k, v, sinks, q_start=start, window=window)
    got = attention_triton.attention(q, k, v, sinks, q_start=start, window=window, splits=splits)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_attention_sink_takes_probability_mass():
    # One key, equal to the query's direction: without a sink the output is that value; a sink of
    # logit L leaves it weight 1 / (1 + exp(L - key logit)).
    q = torch.ones(1, 1, 1, 16).to(DEVICE)
    k, v = torch.ones(1, 1, 1, 16).to(DEVICE), torch.full((1, 1, 1, 16), 2.0).to(DEVICE)
    key_logit = 16 * 16**-0.5
    for sink in (-30.0, 0.0, key_logit):
        out = attention_triton.attention(q, k, v, torch.tensor([sink]).to(DEVICE), q_start=0, window=None)
        expected = 2.0 / (1 + math.exp(sink - key_logit))
        torch.testing.assert_close(out, torch.full_like(out, expected), rtol=1e-5, atol=1e-6)


# --- the model on both backends ------------------------------------------------------------------------


@pytest.mark.parametrize("checkpoint", ["tiny-gpt-oss", "tiny-gpt-oss-trained/mxfp4"])
def test_model_triton_backend_matches_torch_in_prefill_and_decode(checkpoint):
    path = f"{EXAMPLES}/{checkpoint}"
    ref = mxfp4.model.load(path, backend="torch", device=DEVICE, dtype=torch.float32)
    tri = mxfp4.model.load(path, backend="triton", device=DEVICE, dtype=torch.float32)
    assert tri.backend == "triton" and ref.backend == "torch"
    window = ref.config.sliding_window
    ids = torch.randint(0, ref.config.vocab_size, (2, window + 5), generator=torch.Generator().manual_seed(0)).to(
        DEVICE
    )
    caches = ref.new_cache(), tri.new_cache()
    with torch.no_grad():
        want, got = ref(ids, caches[0]), tri(ids, caches[1])  # the prompt runs past the sliding window
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
        assert torch.equal(got.argmax(-1), want.argmax(-1))
        token = want[:, -1:].argmax(-1)
        for step in range(3):  # decode against the caches
            start = ids.shape[1] + step
            want, got = ref(token, caches[0], start=start), tri(token, caches[1], start=start)
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
            token = want[:, -1:].argmax(-1)


def test_unknown_or_unusable_model_backend_is_refused_before_reading(monkeypatch, tmp_path):
    with pytest.raises(mxfp4.OptionError, match="backend='cuda'"):
        mxfp4.model.load(tmp_path / "absent", backend="cuda")
    if DEVICE == "cpu":
        monkeypatch.delenv("TRITON_INTERPRET")
        with pytest.raises(mxfp4.BackendUnavailableError, match="TRITON_INTERPRET=1"):
            mxfp4.model.load(tmp_path / "absent", backend="triton")


@pytest.mark.gpu
def test_moe_kernel_in_bfloat16_on_the_gpu():
    gate_up, gate_up_bias, down, down_bias = _experts(32, 2880, 2880, "cuda")
    indices, scores = _route(64, 32, 4, seed=0, device="cuda")
    x = torch.randn(64, 2880, device="cuda")
    want = moe_torch.experts(x, indices, scores, gate_up, gate_up_bias, down, down_bias, limit=7.0)
    got = moe_triton.experts(
        x.bfloat16(),
        indices,
        scores.bfloat16(),
        gate_up,
        gate_up_bias.bfloat16(),
        down,
        down_bias.bfloat16(),
        limit=7.0,
    )
    rel = (got.float() - want).norm() / want.norm()
    assert rel < 1e-2, rel


# --- the static (CUDA-graph) cache ---------------------------------------------------------------------

RING_CASES = {  # name: (batch, heads, kv heads, head dim, positions so far, new queries, slots, window, splits)
    "decode, ring wrapped": (1, 4, 2, 16, 20, 1, 12, 8, None),
    "3 queries, ring wrapped": (2, 8, 2, 32, 30, 3, 12, 8, None),
    "ring not yet full": (1, 4, 2, 16, 9, 2, 12, 8, None),
    "full layer, slots to spare": (1, 4, 1, 16, 50, 1, 64, None, None),
    "full layer, split decode": (1, 4, 2, 16, 200, 1, 256, None, 2),
    "wrapped many times, split": (1, 4, 2, 16, 300, 1, 16, 8, 2),
}


@pytest.mark.parametrize("case", RING_CASES)
def test_ring_attention_equals_attention_over_the_same_keys(case):
    b, h, kv, d, total, t, slots, window, splits = RING_CASES[case]
    g = torch.Generator().manual_seed(total)
    keys, values = torch.randn(b, kv, total, d, generator=g), torch.randn(b, kv, total, d, generator=g)
    q, sinks = torch.randn(b, h, t, d, generator=g), torch.randn(h, generator=g)
    want = attention_torch.attention(q, keys, values, sinks, q_start=total - t, window=window)
    ring_k, ring_v = torch.full((b, kv, slots, d), 1e4), torch.full((b, kv, slots, d), 1e4)  # unwritten: loud
    for p in range(max(0, total - slots), total):
        ring_k[:, :, p % slots], ring_v[:, :, p % slots] = keys[:, :, p], values[:, :, p]
    start = torch.tensor(total - t)
    twin = attention_torch.ring_attention(q, ring_k, ring_v, sinks, q_start=start, window=window)
    torch.testing.assert_close(twin, want, rtol=1e-5, atol=1e-5)
    args = [x.to(DEVICE) for x in (q, ring_k, ring_v, sinks)]
    got = attention_triton.ring_attention(*args, q_start=start.to(DEVICE), window=window, splits=splits)
    torch.testing.assert_close(got.cpu(), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", ["torch", "native", "triton"])
def test_static_cache_decodes_the_same_tokens_and_logits(backend):
    from mxfp4.model.cache import StaticCache
    from mxfp4.model.graphs import generate_static

    model = mxfp4.model.load(f"{EXAMPLES}/tiny-gpt-oss", backend=backend, device=DEVICE)
    ids = torch.randint(0, 300, (2, 11), generator=torch.Generator().manual_seed(0)).to(DEVICE)
    # Triton on the CPU is its interpreter (numpy, a minute for 14 tokens): 8 new tokens still wrap the ring
    new = 8 if backend == "triton" and DEVICE == "cpu" else 14
    want = model.generate(ids, new)
    assert torch.equal(model.generate(ids, new, static=True), want)
    assert torch.equal(generate_static(model, ids, new, chunk=4), want)  # window 8 in a ring of 11 slots: wraps
    with torch.no_grad():  # logits too, chunk by chunk against one pass over the whole sequence
        whole = model(want)
        cache = StaticCache(model, 2, want.shape[1], chunk=4)
        parts = [model(want[:, s : s + 4], cache) for s in range(0, want.shape[1], 4)]
    torch.testing.assert_close(torch.cat(parts, dim=1), whole, rtol=1e-4, atol=1e-4)
    with pytest.raises(mxfp4.OptionError, match="at most 4 tokens"):
        model(want[:, :5], StaticCache(model, 2, 8, chunk=4))
    full = StaticCache(model, 2, 6, chunk=4)
    model(want[:, :4], full)
    with pytest.raises(mxfp4.OptionError, match="holds 6 positions; 4 are used and 3 more do not fit"):
        model(want[:, 4:7], full)  # would overwrite the oldest keys of the full-attention layers


def test_cuda_graph_needs_cuda():
    model = mxfp4.model.load(f"{EXAMPLES}/tiny-gpt-oss")
    with pytest.raises(mxfp4.OptionError, match="CUDA"):
        model.generate(torch.zeros(1, 3, dtype=torch.long), 2, cuda_graph=True)


@pytest.mark.gpu
def test_cuda_graph_decode_gives_the_eager_tokens():
    model = mxfp4.model.load(
        f"{EXAMPLES}/tiny-gpt-oss-trained/mxfp4", backend="triton", device="cuda", dtype=torch.float32
    )
    ids = torch.randint(0, 300, (1, 20), generator=torch.Generator().manual_seed(0)).cuda()
    assert torch.equal(model.generate(ids, 40, cuda_graph=True), model.generate(ids, 40))


@settings(max_examples=12, deadline=None)
@given(
    tokens=st.integers(1, 40),
    experts=st.integers(1, 9),
    top_k=st.integers(1, 4),
    hidden_blocks=st.integers(1, 4),
    inter_blocks=st.integers(1, 4),
    seed=st.integers(0, 2**16),
)
def test_moe_kernel_matches_its_twin_on_any_shape(tokens, experts, top_k, hidden_blocks, inter_blocks, seed):
    top_k = min(top_k, experts)
    hidden, inter = 32 * hidden_blocks, 32 * inter_blocks
    gate_up, gate_up_bias, down, down_bias = _experts(experts, hidden, inter, DEVICE, seed=seed)
    indices, scores = _route(tokens, experts, top_k, seed=seed, device=DEVICE)
    x = torch.randn(tokens, hidden, generator=torch.Generator().manual_seed(seed)).to(DEVICE)
    want = moe_torch.experts(x, indices, scores, gate_up, gate_up_bias, down, down_bias, limit=7.0)
    got = moe_triton.experts(x, indices, scores, gate_up, gate_up_bias, down, down_bias, limit=7.0)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * max(1.0, want.abs().max().item()))


@settings(max_examples=12, deadline=None)
@given(
    batch=st.integers(1, 2),
    kv_heads=st.integers(1, 3),
    groups=st.sampled_from([1, 2, 4, 8]),
    queries=st.integers(1, 20),
    cached=st.integers(0, 30),
    head_dim=st.sampled_from([16, 32, 48, 64]),
    window=st.one_of(st.none(), st.integers(1, 24)),
    splits=st.sampled_from([None, 2, 3]),
    seed=st.integers(0, 2**16),
)
def test_attention_kernel_matches_its_twin_on_any_shape(
    batch, kv_heads, groups, queries, cached, head_dim, window, splits, seed
):
    g = torch.Generator().manual_seed(seed)
    heads, keys = kv_heads * groups, cached + queries
    q = torch.randn(batch, heads, queries, head_dim, generator=g).to(DEVICE)
    k, v = (torch.randn(batch, kv_heads, keys, head_dim, generator=g).to(DEVICE) for _ in range(2))
    sinks = torch.randn(heads, generator=g).to(DEVICE)
    want = attention_torch.attention(q, k, v, sinks, q_start=cached, window=window)
    got = attention_triton.attention(q, k, v, sinks, q_start=cached, window=window, splits=splits)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("tiles", [(16, 32, 32), (32, 128, 128), (64, 16, 256), (16, 64, 64), (128, 64, 64)])
def test_moe_kernel_gives_the_same_result_with_every_tile_shape(tiles):
    # The GPU sweep (benchmarks/bench_kernels.py --sweep) may pick any of these: each must be right.
    gate_up, gate_up_bias, down, down_bias = _experts(8, 96, 160, DEVICE)
    indices, scores = _route(40, 8, 4, seed=2, device=DEVICE)
    x = torch.randn(40, 96, generator=torch.Generator().manual_seed(1)).to(DEVICE)
    want = moe_torch.experts(x, indices, scores, gate_up, gate_up_bias, down, down_bias, limit=7.0)
    got = moe_triton.experts(x, indices, scores, gate_up, gate_up_bias, down, down_bias, limit=7.0, tiles=tiles)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * want.abs().max().item())


def test_moe_kernel_refuses_routing_built_for_other_tiles():
    gate_up, gate_up_bias, down, down_bias = _experts(4, 32, 32, DEVICE)
    indices, scores = _route(3, 4, 2, seed=0, device=DEVICE)
    with pytest.raises(mxfp4.OptionError, match="routing was built for BLOCK_M 16, the kernels use 32"):
        moe_triton.experts(
            torch.randn(3, 32).to(DEVICE),
            indices,
            scores,
            gate_up,
            gate_up_bias,
            down,
            down_bias,
            7.0,
            routing=routing.route(indices, 4, 16),
            tiles=(32, 64, 64),
        )
