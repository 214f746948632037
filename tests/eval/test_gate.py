"""The CI gate's contract (mxfp4.eval.gate, `mxfp4 eval gate` / `baseline`): exit 0 pass, 1 regression, 2 usage or
input error; `--json` with every measure, its threshold and verdict; baselines from text or token files, with any
stride, against a reference in any format or a hub id."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

from mxfp4.cli import main
from mxfp4.convert import convert
from mxfp4.eval import gate, make_baseline
from mxfp4.testing.checkpoints import make_checkpoint

TOKENS = np.random.default_rng(0).integers(0, 370, size=120)
TEXT = "the return of self if else print import def and the class while for in with as " * 4


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("gate")
    dense = make_checkpoint(root, "dense", dense=True)
    convert(dense, root / "mxfp4", to="mxfp4")
    np.savetxt(root / "tokens.txt", TOKENS[None], fmt="%d")
    (root / "heldout.txt").write_text(TEXT)
    broken = root / "broken"  # a regression: the same model with its unembedding disturbed
    convert(root / "mxfp4", broken, to="mxfp4")
    tensors = load_file(str(broken / "model.safetensors"))
    noise = torch.randn(tensors["lm_head.weight"].shape, generator=torch.Generator().manual_seed(5)) * 2
    tensors["lm_head.weight"] = (tensors["lm_head.weight"].float() + noise).bfloat16()
    save_file(tensors, str(broken / "model.safetensors"), metadata={"format": "pt"})
    return root


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def baseline(ckpts):
    out = ckpts / "quality.json"
    made = run(
        "eval",
        "baseline",
        ckpts / "mxfp4",
        "--tokens",
        ckpts / "tokens.txt",
        "--reference",
        ckpts / "dense",
        "--out",
        out,
        "--context",
        48,
    )
    assert made.exit_code == 0, made.output
    return out


def test_gate_json_passes_with_exit_0_and_fails_a_regression_with_exit_1(ckpts, baseline):
    passed = run("eval", "gate", ckpts / "mxfp4", "--baseline", baseline, "--json")
    assert passed.exit_code == 0, passed.output
    report = json.loads(passed.stdout)
    assert report["passed"] is True and len(report["checks"]) == 5
    for check in report["checks"]:
        assert set(check) == {"measure", "value", "threshold", "direction", "passed"} and check["passed"]
    assert report["measured"]["perplexity"] == pytest.approx(json.loads(baseline.read_text())["measured"]["perplexity"])
    failed = run("eval", "gate", ckpts / "broken", "--baseline", baseline, "--json")
    assert failed.exit_code == 1, failed.output
    report = json.loads(failed.stdout)
    assert report["passed"] is False and any(not c["passed"] for c in report["checks"])
    assert "FAIL" in run("eval", "gate", ckpts / "broken", "--baseline", baseline).output


def test_input_errors_exit_2(ckpts, baseline, tmp_path):
    missing = run("eval", "gate", ckpts / "mxfp4", "--baseline", tmp_path / "absent.json")
    assert missing.exit_code == 2 and "no such baseline file" in missing.output
    malformed = tmp_path / "malformed.json"
    malformed.write_text(json.dumps({"tokens": "x.txt"}))
    assert run("eval", "gate", ckpts / "mxfp4", "--baseline", malformed).exit_code == 2
    not_json = tmp_path / "not.json"
    not_json.write_text("{")
    assert run("eval", "gate", ckpts / "mxfp4", "--baseline", not_json).exit_code == 2
    nowhere = run("eval", "gate", tmp_path / "no-such-model", "--baseline", baseline)
    assert nowhere.exit_code == 2 and nowhere.output.startswith("error: ")
    usage = run("eval", "gate", ckpts / "mxfp4")  # --baseline missing
    assert usage.exit_code == 2
    assert run("verify", tmp_path / "no-such-model", ckpts / "mxfp4").exit_code == 2


def test_a_baseline_from_text_with_a_stride_against_a_gguf_reference(ckpts, tmp_path):
    reference = tmp_path / "reference.gguf"
    convert(ckpts / "dense", reference, to="gguf")
    out = tmp_path / "quality.json"
    made = run(
        "eval",
        "baseline",
        ckpts / "mxfp4",
        "--text",
        ckpts / "heldout.txt",
        "--stride",
        24,
        "--context",
        48,
        "--reference",
        reference,
        "--out",
        out,
        "--json",
    )
    assert made.exit_code == 0, made.output
    data = json.loads(out.read_text())
    assert json.loads(made.stdout)["thresholds"] == data["thresholds"]
    assert data["stride"] == 24 and data["reference"] == "reference.gguf" and "text" in data and "tokens" not in data
    values, checks = gate(ckpts / "mxfp4", out)
    assert all(c.passed for c in checks) and values["perplexity"] == pytest.approx(data["measured"]["perplexity"])


def test_a_baseline_whose_reference_is_a_hub_id(ckpts, tmp_path, offline_hub):
    offline_hub("acme/tiny-gpt-oss-bf16", ckpts / "dense")
    out = tmp_path / "quality.json"
    data = make_baseline(ckpts / "mxfp4", ckpts / "tokens.txt", out, reference="acme/tiny-gpt-oss-bf16", context=48)
    assert data["reference"] == "acme/tiny-gpt-oss-bf16"
    values, checks = gate(ckpts / "mxfp4", out)
    assert len(checks) == 5 and all(c.passed for c in checks) and "kl_mean" in values
