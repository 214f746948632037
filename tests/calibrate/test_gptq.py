"""GPTQ into MXFP4 (mxfp4.calibrate): plain rounding when the Hessian is the identity, never worse than rounding
on correlated inputs, deterministic, layer by layer through the model, and careful with bad input."""

import warnings

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

import mxfp4
from mxfp4.calibrate import layerwise
from mxfp4.calibrate.gptq import gptq_quantize, gram, weighted_error
from mxfp4.calibrate.layerwise import CalibratedSource
from mxfp4.calibrate.run import convert_calibrated
from mxfp4.cli import main
from mxfp4.codec import decode, native
from mxfp4.codec.rules import ROUNDINGS, SCALE_RULES
from mxfp4.convert import convert
from mxfp4.convert.registry import open_source
from mxfp4.convert.verify import verify
from mxfp4.errors import CalibrationWarning, CheckpointError
from mxfp4.model import load
from mxfp4.testing.checkpoints import all_tensors, make_checkpoint, same_tensors


@settings(max_examples=25, deadline=None)
@given(
    rows=st.integers(1, 9),
    groups=st.integers(1, 9),
    rule=st.sampled_from(SCALE_RULES),
    rounding=st.sampled_from(ROUNDINGS),
    seed=st.integers(0, 2**16),
    magnitude=st.sampled_from([1e-3, 1.0, 1e3]),
    order=st.sampled_from(["act", "sequential"]),
)
def test_with_an_identity_hessian_gptq_is_the_rules_plain_rounding(
    rows, groups, rule, rounding, seed, magnitude, order
):
    # H = I: U is diagonal, no error is fed forward, each group's scale comes from the untouched weights.
    w = torch.randn(rows, 32 * groups, generator=torch.Generator().manual_seed(seed)) * magnitude
    eye = torch.eye(w.shape[1])
    result = gptq_quantize(w, eye, scale_rule=rule, rounding=rounding, damp=0.0, order=order)
    blocks, scales = result.blocks, result.scales
    plain = mxfp4.quantize(w, scale_rule=rule, rounding=rounding)
    assert torch.equal(blocks, plain.blocks) and torch.equal(scales, plain.scales)


@pytest.mark.parametrize("order", ["act", "sequential"])
@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("rule", SCALE_RULES)
def test_on_correlated_inputs_gptq_is_never_worse_than_rounding(seed, rule, order):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(48, 256, generator=g)
    x = torch.randn(600, 64, generator=g) @ torch.randn(64, 256, generator=g) + 0.3 * torch.randn(600, 256, generator=g)
    h = x.double().T @ x.double()
    result = gptq_quantize(w, h, scale_rule=rule, order=order)
    ours = decode.dequantize(result.blocks, result.scales, torch.float32)
    plain = mxfp4.quantize(w, scale_rule=rule)
    rounding = decode.dequantize(plain.blocks, plain.scales, torch.float32)
    assert weighted_error(w, ours, h) <= weighted_error(w, rounding, h)


@pytest.mark.parametrize("column_loop", ["c", "torch"])
@pytest.mark.parametrize("order", ["act", "sequential"])
@pytest.mark.parametrize("dead", [False, True])
def test_gptq_reports_the_error_it_leaves(column_loop, order, dead):
    # The loop's own squared errors (the OBS identity) against tr(D H D^T) computed from the bytes. Both are float32
    # computations of one quantity whose relative rounding is at most ~in * 2^-24 each (1.5e-5 for in = 256).
    g = torch.Generator().manual_seed(3)
    w = torch.randn(40, 256, generator=g)
    x = torch.randn(500, 48, generator=g) @ torch.randn(48, 256, generator=g) + 0.2 * torch.randn(500, 256, generator=g)
    if dead:
        x[:, 40:72] = 0  # inputs that never occur: their diagonal is damped by 1, which the error must not count
    h = x.double().T @ x.double()
    result = gptq_quantize(w, h, scale_rule="mse", order=order, column_loop=column_loop)
    values = decode.dequantize(result.blocks, result.scales, torch.float32)
    assert result.error == pytest.approx(weighted_error(w, values, h), rel=4 * 256 * 2**-24)


@settings(max_examples=30, deadline=None)
@given(
    rows=st.integers(1, 40),
    blocks=st.integers(1, 5),
    tail=st.sampled_from([0, 32, 96]),
    rule=st.sampled_from(["floor", "round_up", "even", "mse"]),
    rounding=st.sampled_from(ROUNDINGS),
    seed=st.integers(0, 2**16),
    magnitude=st.sampled_from([1e-30, 1e-3, 1.0, 1e30]),
    zeros=st.booleans(),
    order=st.sampled_from(["act", "sequential"]),
)
def test_the_c_column_loop_writes_the_torch_loops_bytes(
    rows, blocks, tail, rule, rounding, seed, magnitude, zeros, order
):
    # Several 128-column blocks plus a shorter last one; correlated inputs so errors feed forward; exact zeros
    # (signed) so ggml's and rne's sign rules are both exercised; magnitudes near the scale byte's ends.
    g = torch.Generator().manual_seed(seed)
    columns = 128 * blocks + tail
    w = torch.randn(rows, columns, generator=g) * magnitude
    if zeros:
        w[:, ::7] = 0.0
        w[::2, ::5] = -0.0
    x = torch.randn(300, 48, generator=g) @ torch.randn(48, columns, generator=g)
    h = x.double().T @ x.double()
    c = gptq_quantize(w, h, scale_rule=rule, rounding=rounding, column_loop="c", order=order)
    reference = gptq_quantize(w, h, scale_rule=rule, rounding=rounding, column_loop="torch", order=order)
    assert torch.equal(c.blocks, reference.blocks) and torch.equal(c.scales, reference.scales)
    # the same float32 errors, their squares summed in float64 in two orders (nonnegative terms: n * 2^-53 apart)
    assert c.error == pytest.approx(reference.error, rel=rows * columns * 2**-53, abs=0)


@pytest.mark.parametrize("seed", range(4))
def test_act_order_keeps_the_rules_scales_and_rounds_the_heaviest_inputs_first(seed):
    # static groups: whatever the order, each group's scale byte is the rule's on the weights as given, so the
    # bytes are plain MXFP4; the order (decreasing Hessian diagonal) changes which values the error lands on
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(16, 128, generator=g)
    x = torch.randn(400, 128, generator=g) * torch.linspace(0.1, 3.0, 128)  # the last inputs weigh most
    h = x.double().T @ x.double()
    act = gptq_quantize(w, h, scale_rule="mse", order="act")
    blocks, scales = act.blocks, act.scales
    assert torch.equal(scales, mxfp4.quantize(w, scale_rule="mse").scales)
    sequential = gptq_quantize(w, h, scale_rule="mse", order="sequential")
    assert not torch.equal(blocks, sequential.blocks)
    # the heaviest input, rounded first, keeps its own rounding: nothing was fed into it yet
    heaviest = int(torch.argmax(torch.diagonal(h)))
    got = decode.dequantize(blocks, scales, torch.float32)[:, heaviest]
    plain = mxfp4.quantize(w, scale_rule="mse")
    assert torch.equal(got, decode.dequantize(plain.blocks, plain.scales, torch.float32)[:, heaviest])


def test_the_c_loop_runs_by_default_where_it_can(monkeypatch):
    from mxfp4.calibrate import gptq

    calls = []
    monkeypatch.setattr(gptq.native, "gptq_block", lambda *a: calls.append(a) or pytest.fail("called"))
    w, h = torch.randn(8, 64), torch.eye(64, dtype=torch.float64)
    with pytest.raises(pytest.fail.Exception):
        gptq_quantize(w, h, scale_rule="mse")
    calls.clear()
    gptq_quantize(w, h, scale_rule="mlx")  # a rule the C codec lacks: the torch loop
    w[0, 0] = float("nan")
    gptq_quantize(w, h, scale_rule="mse")  # non-finite weights: the torch loop
    assert calls == []


@pytest.fixture(scope="module")
def dense(tmp_path_factory):
    root = tmp_path_factory.mktemp("calibrate")
    return make_checkpoint(root, "dense", dense=True, hidden_size=64, intermediate_size=96)


TOKENS = np.random.default_rng(0).integers(0, 370, size=4 * 64)


def test_calibrated_conversion_is_deterministic_and_beats_rounding(dense, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error", CalibrationWarning)  # every expert calibrated: no warning
        first = convert_calibrated(dense, tmp_path / "a", TOKENS, context=64, scale_rule="mse", min_tokens=8)
    assert sum(layer.fallback for layer in first.layers) == 0
    convert_calibrated(dense, tmp_path / "b", TOKENS, context=64, scale_rule="mse", min_tokens=8)
    a, b = all_tensors(tmp_path / "a"), all_tensors(tmp_path / "b")
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)  # same inputs, same bytes
    assert len(first.layers) == 4
    for layer in first.layers:
        assert sum(layer.tokens_per_expert) == 4 * 64 * 2  # every token reaches its top-2 experts
        assert layer.error_gptq <= layer.error_rounding
    moved = {t.name for t in verify(dense, tmp_path / "a").tensors if t.verdict == "mismatch"}
    experts = {f"model.layers.{i}.mlp.experts.{n}" for i in range(4) for n in ("gate_up_proj", "down_proj")}
    assert moved == experts  # GPTQ moved every expert off its dense values, and nothing else


@pytest.mark.parametrize("cores", [1, 6, 8])
def test_the_bytes_do_not_depend_on_how_many_experts_run_side_by_side(dense, tmp_path, monkeypatch, cores):
    # Experts are calibrated one at a time with every core (1 core), one a core on one thread each (this machine's
    # run), or SIDE_BY_SIDE at once with every core given out (8 cores: 4 experts, 2 threads each; 6: 2, 2, 1 and 1
    # threads): the same bytes, and the same report but for the order of float64 sums over other chunks.
    options = {"context": 64, "scale_rule": "mse", "min_tokens": 8}
    here = convert_calibrated(dense, tmp_path / "here", TOKENS, **options)
    monkeypatch.setattr(layerwise.native, "thread_count", lambda: cores)
    other = convert_calibrated(dense, tmp_path / "other", TOKENS, **options)
    a, b = all_tensors(tmp_path / "here"), all_tensors(tmp_path / "other")
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    for mine, theirs in zip(here.layers, other.layers):
        assert mine.tokens_per_expert == theirs.tokens_per_expert
        assert mine.error_gptq == pytest.approx(theirs.error_gptq, rel=1e-9)
        assert mine.error_rounding == pytest.approx(theirs.error_rounding, rel=1e-9)


@pytest.mark.parametrize("full_chunk", [256, 16])
def test_each_layer_sees_what_the_calibrated_model_computes(dense, tmp_path, full_chunk, monkeypatch):
    # Layer l is calibrated on the outputs of layers < l with their experts quantized: the hidden states calibration
    # carries from layer to layer (each expert's outputs reused from its own calibration) are the ones the model
    # loaded from the written checkpoint computes. The same float32 operations grouped differently (all windows at
    # once against one at a time; attention in chunks of queries, full layers' too with full_chunk=16): equal within a
    # few float32 roundings of the largest value, over 4 layers (sliding window 8, context 64).
    monkeypatch.setattr(layerwise, "FULL_CHUNK", full_chunk)
    convert_calibrated(dense, tmp_path / "out", TOKENS, context=64, scale_rule="mse", min_tokens=8)
    source = CalibratedSource(open_source(dense), TOKENS.reshape(4, 64), scale_rule="mse", min_tokens=8)
    model = load(tmp_path / "out", backend="torch", dtype=torch.float32)
    seen = []
    for layer in model.layers:
        layer.register_forward_hook(lambda module, inputs, output: seen.append(output))
    with torch.no_grad():
        model(torch.from_numpy(TOKENS.reshape(4, 64)))
    for layer in range(3):
        source._calibrate(layer)
        carried = source._hidden
        assert carried.shape == seen[layer].shape
        bound = 64 * 2**-24 * float(seen[layer].abs().max())
        assert float((carried - seen[layer]).abs().max()) <= bound, layer


def test_routing_weights_weigh_each_tokens_share_of_the_hessians(dense, tmp_path):
    # Top-1 routing gives every token the weight 1 (a softmax over one logit): the weighted Hessians are the
    # uniform ones, byte for byte. With top-2 the weights differ and so do the bytes.
    top1 = make_checkpoint(tmp_path, "top1", dense=True, hidden_size=64, intermediate_size=96, num_experts_per_tok=1)
    written = {}
    for model, weighting in ((top1, "routing"), (top1, "uniform"), (dense, "routing"), (dense, "uniform")):
        out = tmp_path / f"{model.name}-{weighting}"
        convert_calibrated(model, out, TOKENS, context=64, scale_rule="mse", min_tokens=8, weighting=weighting)
        written[model.name, weighting] = all_tensors(out)
    assert same_tensors(written["top1", "routing"], written["top1", "uniform"])
    routing, uniform = written["dense", "routing"], written["dense", "uniform"]
    moved = [name for name in routing if not torch.equal(routing[name], uniform[name])]
    assert moved and all(".mlp.experts." in name for name in moved)


def test_starved_experts_fall_back_to_rounding(dense, tmp_path):
    with pytest.warns(CalibrationWarning, match=r"experts saw fewer than 40 calibration tokens") as caught:
        result = convert_calibrated(
            dense, tmp_path / "out", TOKENS[:64], context=64, scale_rule="round_up", min_tokens=40
        )
    convert(dense, tmp_path / "plain", to="mxfp4", scale_rule="round_up")
    ours, plain = all_tensors(tmp_path / "out"), all_tensors(tmp_path / "plain")
    starved = 0
    for layer in result.layers:
        for e, count in enumerate(layer.tokens_per_expert):
            if count >= 40:
                continue
            starved += 1
            for name in ("gate_up_proj", "down_proj"):
                key = f"model.layers.{layer.layer}.mlp.experts.{name}_blocks"
                assert torch.equal(ours[key][e], plain[key][e]), (key, e)
    assert starved == sum(r.fallback for r in result.layers) > 0
    assert f"{starved} of " in str(caught[0].message)  # the warning counts them


def test_bad_calibration_input_is_a_typed_error_naming_the_file(dense, tmp_path):
    bad = tmp_path / "bad.tokens"
    bad.write_text(" ".join(["5"] * 100 + ["99999"]))
    result = CliRunner().invoke(
        main, ["convert", str(dense), str(tmp_path / "o"), "--to", "mxfp4", "--calibrate", str(bad)]
    )
    assert result.exit_code == 1 and f"{bad}: token ids must lie in 0..383" in result.output
    few = tmp_path / "few.tokens"
    few.write_text("1 2 3 4 5")
    result = CliRunner().invoke(
        main,
        [
            "convert",
            str(dense),
            str(tmp_path / "o"),
            "--to",
            "mxfp4",
            "--calibrate",
            str(few),
            "--calibrate-context",
            "64",
        ],
    )
    assert result.exit_code == 1 and f"{few}: 5 tokens make 0 windows of 64" in result.output
    assert not (tmp_path / "o").exists()
    with pytest.raises(CheckpointError, match="is MXFP4 already"):
        convert_calibrated(make_checkpoint(tmp_path, "packed"), tmp_path / "o", TOKENS, context=64)
    assert not (tmp_path / "o").exists()


def test_an_interrupted_calibration_leaves_nothing(dense, tmp_path, monkeypatch):
    import mxfp4.calibrate.layerwise as layerwise

    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    real = layerwise.gptq_quantize
    monkeypatch.setattr(layerwise, "gptq_quantize", interrupted)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        convert_calibrated(dense, out, TOKENS, context=64, min_tokens=8)
    assert list(tmp_path.iterdir()) == []


def test_the_command_prints_the_layer_table_and_merge_lora_calibrates_too(dense, tmp_path):
    tokens = tmp_path / "calib.tokens"
    np.savetxt(tokens, TOKENS[None], fmt="%d")
    result = CliRunner().invoke(
        main,
        [
            "convert",
            str(dense),
            str(tmp_path / "o"),
            "--to",
            "mxfp4",
            "--calibrate",
            str(tokens),
            "--calibrate-context",
            "64",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "tokens per expert (min/median/max)" in result.output and "GPTQ" in result.output
    assert "warning" not in result.output  # every expert saw 64 tokens or more
    starved = CliRunner().invoke(
        main,
        ["convert", str(dense), str(tmp_path / "s"), "--to", "mxfp4", "--calibrate", str(tokens), "--calibrate-context"]
        + ["64", "--calibrate-samples", "1"],
    )
    # 64 tokens, top-2 of 4 experts: some see fewer than 64; one 'warning:' line says how many
    assert starved.exit_code == 0, starved.output
    assert starved.output.count("warning: ") == 1 and "were rounded plainly, not calibrated" in starved.output
    refused = CliRunner().invoke(
        main,
        [
            "convert",
            str(dense),
            str(tmp_path / "b"),
            "--to",
            "bf16",
            "--calibrate",
            str(tokens),
            "--calibrate-context",
            "64",
        ],
    )
    assert refused.exit_code == 1 and "keeps them dense" in refused.output


def test_the_command_and_the_library_calibrate_with_the_same_default_rule(dense, tmp_path):
    # One default per operation (mxfp4.choices): `mxfp4 convert --calibrate` without --scale-rule writes the bytes
    # convert_calibrated() writes with its own default.
    tokens = tmp_path / "calib.tokens"
    np.savetxt(tokens, TOKENS[None], fmt="%d")
    command = ["convert", str(dense), str(tmp_path / "cli"), "--to", "mxfp4", "--calibrate", str(tokens), "--quiet"]
    result = CliRunner().invoke(main, command + ["--calibrate-context", "64"])
    assert result.exit_code == 0, result.output
    convert_calibrated(dense, tmp_path / "lib", TOKENS, context=64)
    assert all_tensors(tmp_path / "cli").keys() == all_tensors(tmp_path / "lib").keys()
    assert same_tensors(all_tensors(tmp_path / "cli"), all_tensors(tmp_path / "lib"))


@settings(max_examples=20, deadline=None)
@given(rows=st.integers(1, 150), groups=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_the_c_column_squared_error_is_numpys_in_float64(rows, groups, seed):
    # Exact differences and squares in float64 (decoded values are exact there), any scale byte: 0 (subnormal
    # values), 254, and the NaN byte (its column's sum is NaN); the sums' order differs: rows * 2^-53 relative.
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((rows, 32 * groups)) * 10.0 ** rng.integers(-40, 38)).astype(np.float32)
    blocks = rng.integers(0, 256, size=(rows, groups, 16), dtype=np.uint8)
    scales = rng.integers(0, 256, size=(rows, groups), dtype=np.uint8)
    scales[0, 0], scales[-1, -1] = 0, 254
    powers = np.exp2(scales.astype(np.float64) - 127)
    codes = np.stack([blocks & 15, blocks >> 4], axis=-1).reshape(rows, groups, 32)
    magnitudes = np.array([0, 0.5, 1, 1.5, 2, 3, 4, 6] * 2) * np.where(np.arange(16) < 8, 1.0, -1.0)
    values = (magnitudes[codes] * powers[..., None]).reshape(rows, -1)
    values[np.repeat(scales == 255, 32, axis=1)] = np.nan
    expected = np.square(w.astype(np.float64) - values).sum(axis=0)
    got = native.column_squared_error(w, blocks, scales)
    assert np.array_equal(np.isnan(got), np.isnan(expected))
    finite = ~np.isnan(expected)
    np.testing.assert_allclose(got[finite], expected[finite], rtol=rows * 2**-53, atol=0)


@pytest.mark.parametrize("columns", [1, 3, 64, 101])
def test_the_gram_matrix_is_symmetric_and_the_product(columns):
    # Blocks above the diagonal are products and those below their transposes: symmetric exactly, and equal to the
    # one product X^T X within float32 rounding of n terms (columns that do not split evenly included).
    x = torch.randn(50, columns, generator=torch.Generator().manual_seed(columns))
    h = gram(x)
    assert torch.equal(h, h.T)
    reference = x.double().T @ x.double()
    bound = 50 * 2**-24 * float((x.double().abs().T @ x.double().abs()).max())
    assert float((h.double() - reference).abs().max()) <= bound


def test_act_order_takes_the_callers_rounding_scales_as_its_own():
    # A caller that rounded the weights already (calibration's report) hands over the scale bytes: the same bytes.
    g = torch.Generator().manual_seed(5)
    w = torch.randn(24, 96, generator=g)
    x = torch.randn(200, 96, generator=g)
    h = x.T @ x
    rounded = mxfp4.quantize(w, scale_rule="mse")
    given = gptq_quantize(w, h, scale_rule="mse", rounded_scales=torch.as_tensor(rounded.scales))
    computed = gptq_quantize(w, h, scale_rule="mse")
    assert torch.equal(given.blocks, computed.blocks) and torch.equal(given.scales, computed.scales)
    assert given.error == computed.error
