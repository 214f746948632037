"""`mxfp4 merge-lora --json` has one schema with or without --calibrate (the shipped adapter on the bundled model:
no peft needed)."""

import json
from pathlib import Path

from click.testing import CliRunner

from mxfp4.cli import main

MODEL = Path(__file__).resolve().parents[2] / "examples" / "tiny-gpt-oss-trained"
KEYS = {"output", "kept", "tensors", "layers"}


def test_one_json_schema_with_and_without_calibration(tmp_path):
    base = [str(MODEL / "mxfp4"), str(MODEL / "lora-docs")]
    plain = CliRunner().invoke(main, ["merge-lora", *base, str(tmp_path / "plain"), "--to", "mxfp4", "--json"])
    assert plain.exit_code == 0, plain.output
    calibration = ["--calibrate", str(MODEL / "docs-heldout.tokens"), "--calibrate-context", "128"]
    command = ["merge-lora", *base, str(tmp_path / "calibrated"), "--to", "mxfp4", "--json", *calibration]
    calibrated = CliRunner().invoke(main, command)
    assert calibrated.exit_code == 0, calibrated.output
    a, b = json.loads(plain.stdout), json.loads(calibrated.stdout)
    assert set(a) == set(b) == KEYS
    assert a["tensors"] and a["layers"] == [] and 0 < a["kept"] <= 1
    assert b["layers"] and b["tensors"] == [] and b["kept"] is None
