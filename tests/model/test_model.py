"""The reference gpt-oss model: parity with transformers, every source format, KV cache, packed experts."""

import pytest
import torch
from transformers_cpu import causal_lm

import mxfp4.model
from mxfp4.convert import convert
from mxfp4.testing.checkpoints import make_checkpoint

IDS = torch.tensor(
    [[3, 100, 27, 300, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24]]
)  # 3 sliding windows of 8


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("model"), shard=150_000)


def transformers_logits(path, dtype):
    import transformers

    transformers.logging.set_verbosity_error()
    with torch.no_grad():
        return causal_lm(path, dtype=dtype)(IDS).logits


@pytest.mark.parametrize("backend", ["torch", "native", "triton"])
@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-4), (torch.bfloat16, 0.1)])
def test_logits_match_transformers(hf, dtype, tolerance, backend):
    if backend == "triton" and dtype == torch.bfloat16 and not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU: the Triton interpreter computes bfloat16 dots in numpy float32")
    model = mxfp4.model.load(hf, dtype=dtype, backend=backend)
    with torch.no_grad():
        ours = model(IDS).float()
    theirs = transformers_logits(hf, dtype).float()
    # Measured on this checkpoint: torch path float32 max |diff| 0.0 (bit-identical), Triton path
    # (interpreter) float32 1.9e-6; bfloat16 see the README.
    if backend == "native" and dtype == torch.bfloat16:
        # native keeps float32 between its products where transformers rounds each step to bf16: hold both to
        # transformers' float32 logits, ours within twice the error transformers' own bf16 run makes
        exact = transformers_logits(hf, torch.float32).float()
        assert (ours - exact).abs().max() <= 2 * (theirs - exact).abs().max()
        return
    assert (ours - theirs).abs().max() <= tolerance
    assert (ours.argmax(-1) == theirs.argmax(-1)).all()


def test_native_bf16_decoding_within_twice_transformers_own_bf16_error(hf):
    """One token a call (the native path's C attention and one-call MoE) against transformers' float32 logits of
    the whole sequence, within twice the error transformers' own bf16 run of the sequence makes."""
    model = mxfp4.model.load(hf, dtype=torch.bfloat16, backend="native")
    with torch.no_grad():
        cache = model.new_cache()
        steps = [model(IDS[:, :1], cache)] + [model(IDS[:, t : t + 1], cache, start=t) for t in range(1, IDS.shape[1])]
    ours = torch.cat(steps, dim=1).float()
    exact = transformers_logits(hf, torch.float32).float()
    theirs = transformers_logits(hf, torch.bfloat16).float()
    assert (ours - exact).abs().max() <= 2 * (theirs - exact).abs().max()


def test_every_source_format_gives_the_same_logits(hf, tmp_path):
    convert(hf, tmp_path / "bf16", to="bf16")
    convert(hf, tmp_path / "original", to="original")
    convert(hf, tmp_path / "m.gguf", to="gguf")
    with torch.no_grad():
        reference = mxfp4.model.load(hf, backend="torch")(IDS)
        for other in ("bf16", "original", "m.gguf"):
            assert torch.equal(mxfp4.model.load(tmp_path / other, backend="torch")(IDS), reference), other


def test_experts_stay_packed(hf):
    model = mxfp4.model.load(hf)
    experts = model.layers[0].mlp.experts
    assert experts.weights == {"gate_up": "packed", "down": "packed"}
    assert experts.gate_up_blocks.dtype == torch.uint8 and tuple(experts.gate_up_blocks.shape) == (4, 128, 2, 16)
    packed = sum(b.numel() for name, b in model.named_buffers() if name.endswith(("_blocks", "_scales")))
    expert_weights = 4 * 4 * (128 * 64 + 64 * 64)  # layers x experts x (gate_up + down)
    assert packed == expert_weights * 17 // 32  # 4.25 bits per weight, no dense copy anywhere
    assert not any(p.numel() >= 128 * 64 * 4 for n, p in model.named_parameters() if "experts" in n)


def test_kv_cache_decode_equals_full_forward(hf):
    model = mxfp4.model.load(hf)
    with torch.no_grad():
        full = model(IDS)
        cache = model.new_cache()
        steps = [model(IDS[:, :5], cache)]
        for t in range(5, IDS.shape[1]):
            steps.append(model(IDS[:, t : t + 1], cache, start=t))
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-5)
    sliding = [c for c in cache if c.window is not None]
    assert sliding and all(c.keys.shape[2] == 8 for c in sliding)  # sliding layers keep only the window
    assert all(c.keys.shape[2] == IDS.shape[1] for c in cache if c.window is None)


def test_greedy_generation_follows_argmax(hf):
    model = mxfp4.model.load(hf)
    out = model.generate(IDS[:, :6], new_tokens=5)
    assert out.shape == (1, 11)
    with torch.no_grad():
        logits = model(out[:, :-1])
    assert torch.equal(out[0, 6:], logits[0, 5:].argmax(-1))


def test_dense_fine_tune_loads_dense_experts(tmp_path):
    dense = make_checkpoint(tmp_path, "dense", dense=True)
    model = mxfp4.model.load(dense)
    assert model.layers[0].mlp.experts.weights == {"gate_up": "dense", "down": "dense"}
    with torch.no_grad():
        ours = model(IDS)
    theirs = transformers_logits(dense, torch.float32)
    assert (ours - theirs).abs().max() <= 1e-4


def test_transformers_5_rope_parameters_read_like_rope_scaling(tmp_path):
    # transformers 5 saves YaRN as rope_parameters (rope_theta inside); openai's release as rope_scaling.
    import json

    from mxfp4.gpt_oss.config import GptOssConfig
    from mxfp4.testing.synthetic import hf_config

    old = hf_config()
    new = dict(old)
    new["rope_parameters"] = {**new.pop("rope_scaling"), "rope_theta": new.pop("rope_theta")}
    a, b = GptOssConfig.from_hf_dict(old), GptOssConfig.from_hf_dict(json.loads(json.dumps(new)))
    assert a.rope_scaling == b.rope_scaling and a.rope_theta == b.rope_theta and a.rope_scaling["rope_type"] == "yarn"


def test_a_float32_native_model_keeps_bf16_weights_and_gives_the_float32_logits(hf):
    """The native path widens bf16 weights as it computes, so a float32 model keeps the checkpoint's bf16 matrices
    (half the memory and the bytes a decode step reads) and its logits are still those of float32 weights:
    within the float32 bound of the torch path's, which holds float32 copies. use_backend('torch') on it still runs
    (the weights are cast for each call). Prompt, and decoding from the cache (the C products)."""
    from mxfp4.model.kernels import cpu_gemv

    if not cpu_gemv.available():
        pytest.skip("the native path's C kernels are not built")
    native = mxfp4.model.load(hf, dtype=torch.float32, backend="native")
    torch_path = mxfp4.model.load(hf, dtype=torch.float32, backend="torch")
    assert native.dtype == torch.float32 and native.lm_head.weight.dtype == torch.bfloat16
    assert native.layers[0].self_attn.q_proj.weight.dtype == torch.bfloat16
    assert native.layers[0].mlp.router.weight.dtype == torch.bfloat16
    assert native.norm.weight.dtype == torch.float32 and native.layers[0].self_attn.q_proj.bias.dtype == torch.float32
    assert torch_path.lm_head.weight.dtype == torch.float32
    weights = sum(p.numel() * p.element_size() for p in native.parameters())
    assert weights < 0.6 * sum(p.numel() * p.element_size() for p in torch_path.parameters())
    with torch.no_grad():
        want = torch_path(IDS)
        got = native(IDS)
        cache = native.new_cache()
        steps = [native(IDS[:, :1], cache)] + [native(IDS[:, t : t + 1], cache, start=t) for t in range(1, 6)]
        again = native.use_backend("torch")(IDS)
    assert got.dtype == torch.float32
    # the float32 model test's tolerance (test_logits_match_transformers): only the summation order differs
    assert (got - want).abs().max() <= 1e-4
    assert (torch.cat(steps, dim=1) - want[:, :6]).abs().max() <= 1e-4
    assert torch.equal(again, want)
