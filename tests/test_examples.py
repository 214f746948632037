"""The bundled examples do what the README says."""

from pathlib import Path

import pytest
from click.testing import CliRunner
from transformers_cpu import causal_lm

from mxfp4.cli import main

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize(
    "target, name", [("gguf", "tiny.gguf"), ("bf16", "bf16"), ("original", "original"), ("mxfp4", "mx")]
)
def test_bundled_gpt_oss_converts_losslessly(tmp_path, target, name):
    runner = CliRunner()
    out = tmp_path / name
    assert (
        runner.invoke(main, ["convert", str(EXAMPLES / "tiny-gpt-oss"), str(out), "--to", target, "--force"]).exit_code
        == 0
    )
    result = runner.invoke(main, ["verify", str(EXAMPLES / "tiny-gpt-oss"), str(out)])
    assert result.exit_code == 0 and "0 mismatched" in result.output


def test_bundled_experts_quantize(tmp_path):
    result = CliRunner().invoke(
        main,
        [
            "quantize",
            str(EXAMPLES / "tiny-experts.safetensors"),
            str(tmp_path / "q.safetensors"),
            "--include",
            r"experts\.(gate_up|down)_proj$",
        ],
    )
    assert result.exit_code == 0 and "2 tensors packed" in result.output


TRAINED = EXAMPLES / "tiny-gpt-oss-trained"


def test_trained_model_matches_transformers():
    import numpy as np
    import torch
    import transformers

    import mxfp4.model

    transformers.logging.set_verbosity_error()
    ids = torch.from_numpy(np.loadtxt(TRAINED / "heldout.tokens", dtype=np.int64)[:200])[None]
    with torch.no_grad():
        ours = mxfp4.model.load(TRAINED / "mxfp4", backend="torch")(ids)  # the reference path: bit parity
        theirs = causal_lm(TRAINED / "mxfp4", dtype=torch.float32)(ids).logits
    assert torch.equal(ours, theirs)


def test_repo_quality_gate_passes():
    # The repo gates its own bundled model: the MXFP4 form against the bf16 one on held-out tokens.
    result = CliRunner().invoke(
        main, ["eval", "gate", str(TRAINED / "mxfp4"), "--baseline", str(TRAINED / "quality.json")]
    )
    assert result.exit_code == 0, result.output
    assert "5 of 5 checks passed" in result.output


def test_trained_model_to_gguf_and_back(tmp_path):
    runner = CliRunner()
    assert (
        runner.invoke(main, ["convert", str(TRAINED / "mxfp4"), str(tmp_path / "t.gguf"), "--to", "gguf"]).exit_code
        == 0
    )
    result = runner.invoke(main, ["verify", str(TRAINED / "mxfp4"), str(tmp_path / "t.gguf")])
    assert result.exit_code == 0 and "0 mismatched" in result.output


def test_the_shipped_lora_fine_tune_survives_the_merge_back_to_mxfp4(tmp_path):
    # examples/finetune_lora_tiny.py taught the code model English prose; merged back into MXFP4 it keeps
    # what it learned: its perplexity on held-out prose falls far below the base's, and its distribution stays
    # close to the float merge (measured: ppl 73.2 -> 38.5, KL 0.0056 against the float merge's 0.48 for the base).
    import numpy as np

    from mxfp4.eval.parity import compare
    from mxfp4.finetune import merge_lora
    from mxfp4.model import load

    merged = merge_lora(TRAINED / "mxfp4", TRAINED / "lora-docs", tmp_path / "mx", to="mxfp4")
    merge_lora(TRAINED / "mxfp4", TRAINED / "lora-docs", tmp_path / "float", to="bf16", dtype="float32")
    assert len(merged.survival) == 24 and not merged.lost
    ids = np.loadtxt(TRAINED / "docs-heldout.tokens", dtype=np.int64)
    reference = load(tmp_path / "float")
    fine_tuned = compare(reference, load(tmp_path / "mx"), ids, context=128)
    base = compare(reference, load(TRAINED / "mxfp4"), ids, context=128)
    assert fine_tuned.ppl_b < 0.7 * base.ppl_b
    assert fine_tuned.kl_mean < base.kl_mean / 10
