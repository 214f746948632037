"""Perplexity and parity (mxfp4.eval.parity), quality gates (mxfp4.eval.gate) and the `mxfp4 eval` commands."""

import json
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file
from transformers_cpu import causal_lm

import mxfp4.model
from mxfp4.cli import main
from mxfp4.convert import convert
from mxfp4.eval.parity import compare, perplexity, windows
from mxfp4.testing.checkpoints import make_checkpoint

TOKENS = np.random.default_rng(0).integers(0, 370, size=120)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """A dense (fine-tune-like) reference and its MXFP4 quantizations with two scale rules."""
    root = tmp_path_factory.mktemp("eval")
    dense = make_checkpoint(root, "dense", dense=True)
    for rule in ("round_up", "mse"):
        convert(dense, root / rule, to="mxfp4", scale_rule=rule)
    np.savetxt(root / "tokens.txt", TOKENS[None], fmt="%d")
    return root


@given(st.integers(2, 60), st.integers(2, 16), st.data())
def test_windows_score_every_token_once(n, context, data):
    stride = data.draw(st.integers(1, context))
    scored = [i for start, stop, first in windows(n, context, stride) for i in range(start + first, stop)]
    assert scored == list(range(1, n))
    assert all(stop - start <= context and first >= 1 for start, stop, first in windows(n, context, stride))


def test_perplexity_equals_transformers_loss(ckpts):
    import transformers

    transformers.logging.set_verbosity_error()
    ids = torch.from_numpy(TOKENS[:64])[None]
    with torch.no_grad():
        loss = causal_lm(ckpts / "dense", dtype=torch.float32)(ids, labels=ids).loss
    ours = perplexity(mxfp4.model.load(ckpts / "dense"), TOKENS[:64], context=64)
    assert ours == pytest.approx(float(torch.exp(loss)), rel=1e-5)


def test_compare_measures(ckpts):
    reference = mxfp4.model.load(ckpts / "dense")
    same = compare(reference, reference, TOKENS, context=48)
    assert same.kl_mean == pytest.approx(0, abs=1e-6) and same.top1_agreement == 1 and same.delta_ppl == 0
    assert same.tokens == len(TOKENS) - 1
    quantized = compare(reference, mxfp4.model.load(ckpts / "round_up"), TOKENS, context=48)
    assert quantized.kl_mean > 1e-6 and quantized.kl_p99 >= quantized.kl_mean and 0 < quantized.top1_agreement <= 1


def test_gate_passes_its_baseline_and_fails_a_regression(ckpts, tmp_path):
    runner = CliRunner()
    out = tmp_path / "quality.json"
    made = runner.invoke(
        main,
        [
            "eval",
            "baseline",
            str(ckpts / "round_up"),
            "--tokens",
            str(ckpts / "tokens.txt"),
            "--reference",
            str(ckpts / "dense"),
            "--out",
            str(out),
            "--context",
            "48",
        ],
    )
    assert made.exit_code == 0, made.output
    baseline = json.loads(out.read_text())
    assert set(baseline["thresholds"]) == {
        "perplexity_max",
        "delta_ppl_max",
        "kl_mean_max",
        "kl_p99_max",
        "top1_agreement_min",
    }
    passed = runner.invoke(main, ["eval", "gate", str(ckpts / "round_up"), "--baseline", str(out)])
    assert passed.exit_code == 0 and "5 of 5 checks passed" in passed.output
    # A regression: the same checkpoint with its unembedding disturbed.
    broken = tmp_path / "broken"
    convert(ckpts / "round_up", broken, to="mxfp4")
    tensors = load_file(str(broken / "model.safetensors"))
    tensors["lm_head.weight"] = (
        tensors["lm_head.weight"].float() + torch.randn_like(tensors["lm_head.weight"].float()) * 2
    ).bfloat16()
    save_file(tensors, str(broken / "model.safetensors"), metadata={"format": "pt"})
    failed = runner.invoke(main, ["eval", "gate", str(broken), "--baseline", str(out)])
    assert failed.exit_code == 1 and "FAIL" in failed.output


def test_cli_ppl_and_compare_json(ckpts):
    runner = CliRunner()
    ppl = runner.invoke(
        main, ["eval", "ppl", str(ckpts / "dense"), "--tokens", str(ckpts / "tokens.txt"), "--context", "48", "--json"]
    )
    assert ppl.exit_code == 0, ppl.output
    assert set(json.loads(ppl.stdout)) >= {"perplexity"}
    assert json.loads(ppl.stdout)["kernels"] == "torch"  # the default backend, named
    from mxfp4.model.kernels import cpu_gemv

    if cpu_gemv.available():  # the native path names the instruction set its C kernels chose
        native = runner.invoke(
            main,
            ["eval", "ppl", str(ckpts / "dense"), "--tokens", str(ckpts / "tokens.txt"), "--context", "48"]
            + ["--backend", "native"],
        )
        assert native.exit_code == 0, native.output
        assert native.output.strip().endswith(f"(native (C kernels: {cpu_gemv.isa()}))")
    result = runner.invoke(
        main,
        [
            "eval",
            "compare",
            str(ckpts / "dense"),
            str(ckpts / "mse"),
            "--tokens",
            str(ckpts / "tokens.txt"),
            "--context",
            "48",
            "--json",
        ],
    )
    data = json.loads(result.stdout)
    assert {"ppl_a", "ppl_b", "delta_ppl", "kl_mean", "kl_p99", "top1_agreement"} <= set(data)


def test_text_goes_through_the_checkpoints_tokenizer(ckpts, tmp_path):
    (tmp_path / "t.txt").write_text("the return of self if else print import def and the " * 5)
    result = CliRunner().invoke(
        main, ["eval", "ppl", str(ckpts / "dense"), "--text", str(tmp_path / "t.txt"), "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["tokens"] > 10


@pytest.mark.parametrize(
    "content, message",
    [("1 2 x", "whitespace-separated integers"), ("5", "need at least 2 tokens"), ("1 99999", "must lie in 0..")],
)
def test_bad_token_files(ckpts, tmp_path, content, message):
    (tmp_path / "bad.txt").write_text(content)
    result = CliRunner().invoke(main, ["eval", "ppl", str(ckpts / "dense"), "--tokens", str(tmp_path / "bad.txt")])
    assert result.exit_code == 2 and message in result.output


def test_scale_rules_table(ckpts):
    from mxfp4.eval.rule_comparison import compare_rules

    base, results = compare_rules(ckpts / "dense", TOKENS, context=48)
    by_rule = {r.scale_rule: r for r in results}
    assert set(by_rule) == {"floor", "round_up", "even", "mse", "mlx"} and base > 1
    # mse is never worse than floor block by block, so its weight SQNR is at least floor's.
    assert by_rule["mse"].weight_sqnr_db >= by_rule["floor"].weight_sqnr_db
    assert all(r.parity.kl_mean > 0 and 0 < r.parity.top1_agreement <= 1 for r in results)


def test_error_report_and_plot(ckpts, tmp_path):
    result = CliRunner().invoke(
        main,
        ["eval", "report", str(ckpts / "dense"), str(ckpts / "round_up"), "--plot", str(tmp_path / "e.png"), "--json"],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert len(data["tensors"]) == 8 and 10 < data["weight_sqnr_db"] < 30  # 4 layers x (gate_up, down); ~4.25-bit SQNR
    assert (tmp_path / "e.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    same = CliRunner().invoke(main, ["eval", "report", str(ckpts / "round_up"), str(ckpts / "round_up")])
    assert same.exit_code == 2 and "must hold dense experts" in same.output


def test_the_heat_map_points_at_the_one_broken_expert(ckpts, tmp_path):
    # Double every scale of expert 1's down_proj in layer 2 (as a fine-tune gone wrong might): that cell,
    # and only that one, drops to the bottom of the experts x layers SQNR grid.
    from mxfp4.eval.errors_report import expert_errors, plot, sqnr_grid

    broken = tmp_path / "broken"
    shutil.copytree(ckpts / "round_up", broken)
    (weights,) = broken.glob("*.safetensors")
    tensors = load_file(weights)
    name = "model.layers.2.mlp.experts.down_proj_scales"
    tensors[name][1] += 1
    save_file(tensors, weights, metadata={"format": "pt"})
    rows = expert_errors(ckpts / "dense", broken)
    grid = sqnr_grid(rows, "mlp.experts.down_proj")
    assert grid.shape == (4, 4)  # experts x layers
    assert np.unravel_index(np.argmin(grid), grid.shape) == (1, 2)
    healthy = np.delete(grid.ravel(), 1 * 4 + 2)
    assert grid[1, 2] < healthy.min() - 3  # a doubled expert is far below every healthy one (< 6 dB vs ~20)
    plot(rows, tmp_path / "broken.png")
    assert (tmp_path / "broken.png").stat().st_size > 0


def test_baseline_is_not_overwritten_without_force(ckpts, tmp_path):
    runner = CliRunner()
    out = tmp_path / "quality.json"
    out.write_text("{}")
    args = [
        "eval",
        "baseline",
        str(ckpts / "round_up"),
        "--tokens",
        str(ckpts / "tokens.txt"),
        "--out",
        str(out),
        "--context",
        "48",
    ]
    refused = runner.invoke(main, args)
    assert refused.exit_code == 2 and "--force" in refused.output and out.read_text() == "{}"
    replaced = runner.invoke(main, args + ["--force"])
    assert replaced.exit_code == 0, replaced.output
    assert "perplexity_max" in json.loads(out.read_text())["thresholds"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["quality.json"]  # no temporary or lock left


def test_eval_on_the_triton_backend_measures_what_the_torch_path_does(ckpts):
    # --backend/--device reach the models (the GPU case); here the kernels run in Triton's interpreter.
    pytest.importorskip("triton")
    runner = CliRunner()
    args = [
        "eval",
        "compare",
        str(ckpts / "dense"),
        str(ckpts / "round_up"),
        "--tokens",
        str(ckpts / "tokens.txt"),
        "--context",
        "48",
        "--json",
    ]
    torch_path = json.loads(runner.invoke(main, args).stdout)
    triton = runner.invoke(main, args + ["--backend", "triton", "--device", "cpu"])
    assert triton.exit_code == 0, triton.output
    triton_path = json.loads(triton.stdout)
    bound = _path_difference_bounds(ckpts, context=48)
    for measure in ("ppl_a", "ppl_b"):
        assert triton_path[measure] == pytest.approx(torch_path[measure], rel=bound[measure]), measure
    assert abs(triton_path["kl_mean"] - torch_path["kl_mean"]) <= bound["kl_mean"]
    assert triton_path["top1_agreement"] == torch_path["top1_agreement"]


def _path_difference_bounds(ckpts, *, context: int) -> dict[str, float]:
    """How far the Triton path's measures may lie from the torch path's, from how far their logits lie apart.

    A log-softmax moves by at most 2 * max|d logits| (the logit and the log-sum-exp each by max|d|), so
    with e_a, e_b that bound for the reference and the candidate:
    - mean NLL moves by at most e, so perplexity by a factor of at most exp(e);
    - per token KL(p || q) = sum p (a - b) moves by at most e_a + e_b (the log-probabilities) plus
      (exp(e_a) - 1) * E_p|a - b| (the weights p), and clamping at 0 and averaging keep that bound.
    Each side also rounds its float32 sums over the vocabulary, gamma_V = V * 2**-24 relative to sum p|a - b|.
    """
    from mxfp4.eval.parity import _log_probs, windows

    ids = TOKENS
    paths = {}
    for name in ("dense", "round_up"):
        for backend in ("torch", "triton"):
            model = mxfp4.model.load(ckpts / name, backend=backend, device="cpu")
            paths[name, backend] = list(_log_probs(model, ids, windows(len(ids), context, context)))
    eps, spread = {}, 0.0
    for name in ("dense", "round_up"):
        eps[name] = max(
            2 * float((ours[0] - theirs[0]).abs().max())
            for ours, theirs in zip(paths[name, "torch"], paths[name, "triton"])
        )  # log-softmax differences are already at most 2 * max|d logits|: take them as measured
    for (lp_a, _), (lp_b, _) in zip(paths["dense", "torch"], paths["round_up", "torch"]):
        spread = max(spread, float((lp_a.exp() * (lp_a - lp_b).abs()).sum(-1).max()))
    vocab = paths["dense", "torch"][0][0].shape[-1]
    gamma = vocab * 2.0**-24
    return {
        "ppl_a": np.expm1(eps["dense"]) + gamma,
        "ppl_b": np.expm1(eps["round_up"]) + gamma,
        "kl_mean": eps["dense"] + eps["round_up"] + np.expm1(eps["dense"]) * spread + 2 * gamma * spread,
    }
