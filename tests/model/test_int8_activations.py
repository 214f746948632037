"""The opt-in int8 activations of the one-token MoE (backend 'native-int8'): the quantization is the stated rounding
bit for bit, each product is the exact product of the quantized activations within float32 accumulation, and the
MoE stays within the error the quantization allows of the exact one."""

import math
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_cpu_gemv import U, bound, gamma, random_mxfp4

from mxfp4.codec import decode
from mxfp4.model.kernels import cpu_gemv, moe_torch, native_path

pytestmark = pytest.mark.skipif(not cpu_gemv.available(), reason="the C kernels are built by pip install -e .")


def quantized_twin(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The stated rounding in torch: scale = max |x| / 127 a block of 32 (float32), codes = x / scale rounded half
    to even; a block with a non-finite element gets a NaN scale and zero codes, an all-zero block zero codes."""
    blocks = x.float().reshape(-1, 32)
    finite = torch.isfinite(blocks).all(-1, keepdim=True)
    scale = torch.where(finite, blocks.abs().amax(-1, keepdim=True) / 127, torch.full_like(blocks[:, :1], math.nan))
    codes = torch.where(finite & (scale > 0), torch.round(blocks / scale), torch.zeros_like(blocks))
    return codes.to(torch.int8).reshape(-1), scale.reshape(-1)


def dequantized(x: torch.Tensor) -> torch.Tensor:
    codes, scales = cpu_gemv.quantize_int8(x)
    return (codes.double().reshape(-1, 32) * scales.double()[:, None]).reshape(-1)


@settings(max_examples=60, deadline=None)
@given(blocks=st.integers(1, 9), seed=st.integers(0, 2**31), magnitude=st.sampled_from([1e-30, 1e-3, 1.0, 1e30]))
def test_quantization_is_the_stated_rounding_bit_for_bit(blocks, seed, magnitude):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(32 * blocks, generator=g) * magnitude
    x[:32][torch.rand(32, generator=g) < 0.3] = 0.0  # exact zeros and ties (x / scale = k + 1/2) come up too
    codes, scales = cpu_gemv.quantize_int8(x)
    want_codes, want_scales = quantized_twin(x)
    assert torch.equal(codes, want_codes) and torch.equal(scales, want_scales)
    assert codes.abs().max() <= 127
    error = (codes.double().reshape(-1, 32) * scales.double()[:, None]).reshape(-1) - x.double()
    assert (error.abs() <= scales.double().repeat_interleave(32) / 2 * (1 + 2 * U)).all()


def test_zero_and_non_finite_blocks():
    x = torch.randn(5 * 32)
    x[:32] = 0.0
    x[40], x[70], x[100] = math.nan, math.inf, -math.inf
    codes, scales = cpu_gemv.quantize_int8(x)
    assert scales[0] == 0 and (codes[:32] == 0).all()
    assert scales[1:4].isnan().all() and (codes[32:128] == 0).all()
    assert torch.isfinite(scales[4]) and codes[128:].abs().max() == 127


def check_product(rows: int, col_blocks: int, seed: int, with_bias: bool) -> None:
    """Each block's products are exact integers scaled once, so the result is the exact product of the quantized
    activations within float32 accumulation (the float products' bound); against the activations themselves it
    is further off by at most sum |w| * scale / 2 over the row."""
    cols = 32 * col_blocks
    blocks, scales = random_mxfp4(rows, cols, seed)
    w = decode.dequantize(blocks, scales, torch.float32)
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(cols, generator=g) * 3
    bias = torch.randn(rows, generator=g) if with_bias else None
    got = cpu_gemv.mxfp4_linear_int8(x, blocks, scales, bias)
    assert got.dtype == torch.float32 and got.shape == (1, rows)
    x_q = dequantized(x)
    want = w.double() @ x_q + (bias.double() if with_bias else 0)
    assert ((got[0].double() - want).abs() <= bound(x_q.float()[None], w, want[None])[0]).all()
    step = cpu_gemv.quantize_int8(x)[1].double().repeat_interleave(32)
    exact = w.double() @ x.double() + (bias.double() if with_bias else 0)
    allowed = w.double().abs() @ (step / 2) + bound(x[None], w, exact[None])[0]
    allowed += bound(x_q.float()[None], w, want[None])[0]
    assert ((got[0].double() - exact).abs() <= allowed).all()


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 70), col_blocks=st.integers(1, 12), seed=st.integers(0, 2**31), with_bias=st.booleans())
def test_product_equals_the_matmul_of_the_quantized_activations_within_the_bound(rows, col_blocks, seed, with_bias):
    check_product(rows, col_blocks, seed, with_bias)


def test_a_nan_scale_gives_nan_in_its_row_and_a_nan_activation_in_every_row():
    blocks, scales = random_mxfp4(6, 96, 3)
    scales[2, 1] = 0xFF
    x = torch.randn(96)
    got = cpu_gemv.mxfp4_linear_int8(x, blocks, scales)[0]
    assert got[2].isnan() and torch.isfinite(got[[0, 1, 3, 4, 5]]).all()
    x[50] = math.inf
    assert cpu_gemv.mxfp4_linear_int8(x, blocks, scales)[0].isnan().all()


@pytest.mark.parametrize("scale", [0, 127, 200])  # 0: 2**-127, values down to 2**-128 (float32 subnormals)
def test_every_code_meets_every_activation_position(scale):
    """Rows of one code each (all 16 codes at every position of an odd number of blocks, so pairs and the lone
    last block are both read) against activations that are exact in int8: the products are exact."""
    cols = 3 * 32
    codes = torch.arange(16, dtype=torch.uint8)
    rows = []
    for position in range(cols):
        for code in codes.tolist():
            nibbles = torch.zeros(cols, dtype=torch.uint8)
            nibbles[position] = code
            rows.append(nibbles[0::2] | (nibbles[1::2] << 4))
    blocks = torch.stack(rows).reshape(-1, cols // 32, 16)
    scales = torch.full((blocks.shape[0], cols // 32), scale, dtype=torch.uint8)
    x = torch.arange(1, cols + 1, dtype=torch.float32) % 127 + 1  # integers below 128: quantized exactly when
    x[31::32] = 127.0  # each block's largest is 127 (scale 1)
    got = cpu_gemv.mxfp4_linear_int8(x, blocks, scales)[0]
    want = decode.dequantize(blocks, scales, torch.float32).double() @ x.double()
    assert torch.equal(got.double(), want)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_one_token_int8_moe_is_the_per_expert_int8_products_summed(dtype):
    """moe_token(int8=True) is, per expert, the int8 gate_up product fused with the SwiGLU and the int8 down product
    of its float32 output (the products tested above), weighted and summed in float32: equal to that composition
    within the float32 rounding of the k-term weighted sum; and it is not the float32 MoE."""
    experts, hidden, inter, limit = 6, 160, 96, 7.0  # 5 blocks in (two pairs and a lone one), 3 down
    gate_up = random_mxfp4(experts * 2 * inter, hidden, 21, scale_range=(119, 124))
    down = random_mxfp4(experts * hidden, inter, 22, scale_range=(119, 124))
    gate_up = (gate_up[0].reshape(experts, 2 * inter, -1, 16), gate_up[1].reshape(experts, 2 * inter, -1))
    down = (down[0].reshape(experts, hidden, -1, 16), down[1].reshape(experts, hidden, -1))
    g = torch.Generator().manual_seed(23)
    x = torch.randn(hidden, generator=g).to(dtype)
    up_bias = (torch.randn(experts, 2 * inter, generator=g) * 0.1).to(dtype)
    down_bias = (torch.randn(experts, hidden, generator=g) * 0.1).to(dtype)
    chosen, weights = torch.tensor([4, 0, 3, 5]), torch.softmax(torch.randn(4, generator=g), -1)
    alpha = moe_torch.SWIGLU_ALPHA
    got = cpu_gemv.moe_token(x, chosen, weights, gate_up, up_bias, down, down_bias, limit, alpha, int8=True)
    terms = []
    for c, e in enumerate(chosen.tolist()):
        act = cpu_gemv.mxfp4_swiglu_int8(x, gate_up[0][e], gate_up[1][e], up_bias[e], limit, alpha)
        y = cpu_gemv.mxfp4_linear_int8(act, down[0][e], down[1][e], down_bias[e])[0]
        terms.append(weights[c].double() * y.double())
    want = torch.stack(terms).sum(0)
    assert got.dtype == torch.float32 and want.abs().max() > 0.1
    assert ((got.double() - want).abs() <= 2 * gamma(4) * torch.stack(terms).abs().sum(0)).all()
    exact = cpu_gemv.moe_token(x, chosen, weights, gate_up, up_bias, down, down_bias, limit, alpha)
    assert not torch.equal(got, exact)


def test_native_int8_quantizes_decoding_only(monkeypatch):
    """experts_int8: one token through moe_token(int8=True); a prompt's tokens through the exact experts()."""
    seen, moe_token = [], cpu_gemv.moe_token
    monkeypatch.setattr(cpu_gemv, "moe_token", lambda *a, **k: seen.append(k.get("int8")) or moe_token(*a, **k))
    experts, hidden, inter = 4, 64, 64
    gate_up = random_mxfp4(experts * 2 * inter, hidden, 1)
    down = random_mxfp4(experts * hidden, inter, 2)
    gate_up = (gate_up[0].reshape(experts, 2 * inter, -1, 16), gate_up[1].reshape(experts, 2 * inter, -1))
    down = (down[0].reshape(experts, hidden, -1, 16), down[1].reshape(experts, hidden, -1))
    biases = torch.zeros(experts, 2 * inter), torch.zeros(experts, hidden)
    x, indices, scores = torch.randn(3, hidden), torch.tensor([[0, 1], [2, 3], [1, 2]]), torch.full((3, 2), 0.5)
    prompt = native_path.experts_int8(x, indices, scores, gate_up, biases[0], down, biases[1], 7.0)
    assert seen == [] and torch.equal(prompt, native_path.experts(x, indices, scores, gate_up, biases[0], down,
                                                                  biases[1], 7.0))  # fmt: skip
    native_path.experts_int8(x[:1], indices[:1], scores[:1], gate_up, biases[0], down, biases[1], 7.0)
    assert seen == [True]


def test_the_native_int8_backend_runs_prompts_exactly_and_decodes_through_int8():
    """load(backend='native-int8'): a prompt's logits are native's bit for bit (only decoding is quantized), a
    decode step's are not; float32 keeps the checkpoint's bf16 matrices as native does; reports name it."""
    import mxfp4.model
    from mxfp4.model.kernels.select import describe

    path = Path(__file__).resolve().parents[2] / "examples" / "tiny-gpt-oss-trained" / "mxfp4"
    int8, native = (mxfp4.model.load(path, backend=b) for b in ("native-int8", "native"))
    assert int8.backend == "native-int8" and describe(int8.backend).startswith("native-int8 (C kernels: ")
    assert int8.lm_head.weight.dtype == native.lm_head.weight.dtype == torch.bfloat16
    ids = torch.tensor([[5, 77, 301, 12, 9, 640]])
    with torch.no_grad():
        caches = int8.new_cache(), native.new_cache()
        assert torch.equal(int8(ids, caches[0]), native(ids, caches[1]))
        step = torch.tensor([[33]])
        got, want = int8(step, caches[0]), native(step, caches[1])
    assert torch.isfinite(got).all() and not torch.equal(got, want)
