"""The mxfp4 convert / inspect / verify commands over the library."""

import subprocess
import sys

import pytest
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

from mxfp4.cli import main
from mxfp4.testing.checkpoints import make_checkpoint


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("cli"))


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.mark.parametrize(
    "target, out", [("bf16", "bf16"), ("original", "original"), ("gguf", "model.gguf"), ("mxfp4", "mx")]
)
def test_convert_then_verify_against_source(hf, tmp_path, target, out):
    result = run("convert", hf, tmp_path / out, "--to", target, "--quiet")
    assert result.exit_code == 0, result.output
    check = run("verify", hf, tmp_path / out)
    assert check.exit_code == 0, check.output
    assert "0 mismatched" in check.output
    if target in ("mxfp4", "original", "gguf"):
        assert "71 exact, 0 equal values" in check.output  # a lossless repack: every byte the same


def test_convert_reports_what_it_did(hf, tmp_path):
    result = run("convert", hf, tmp_path / "out", "--to", "bf16", "--max-shard-size", "100KB")
    assert result.exit_code == 0 and "hf-mxfp4 -> bf16" in result.output and "file(s)" in result.output


def test_verify_finds_a_changed_tensor(hf, tmp_path):
    run("convert", hf, tmp_path / "bf16", "--to", "bf16", "--quiet")
    tensors = load_file(str(tmp_path / "bf16" / "model.safetensors"))
    tensors["model.layers.2.self_attn.sinks"][1] += 1
    save_file(tensors, str(tmp_path / "bf16" / "model.safetensors"), metadata={"format": "pt"})
    result = run("verify", hf, tmp_path / "bf16")
    assert result.exit_code == 1
    assert "model.layers.2.self_attn.sinks" in result.output and "1 mismatched" in result.output


def test_verify_refuses_different_models(hf, tmp_path):
    other = make_checkpoint(tmp_path, "other", num_hidden_layers=2)
    result = run("verify", hf, other)
    assert result.exit_code == 2 and "different models: num_hidden_layers is 4 vs 2" in result.output


def test_inspect_checkpoint_and_gguf(hf, tmp_path):
    result = run("inspect", hf)
    assert result.exit_code == 0 and "hf-mxfp4" in result.output and "mlp.experts.gate_up_proj" in result.output
    line = next(l for l in result.output.splitlines() if l.startswith("mlp.experts.down_proj "))
    assert "MXFP4" in line and line.rstrip().endswith("4.25")
    run("convert", hf, tmp_path / "m.gguf", "--to", "gguf", "--quiet")
    assert "(gguf)" in run("inspect", tmp_path / "m.gguf").output


def test_convert_errors_are_one_line(hf, tmp_path):
    result = run("convert", tmp_path / "nowhere", tmp_path / "out", "--to", "bf16")
    assert (
        result.exit_code == 1 and result.output.startswith("error: ") and "no such file or directory" in result.output
    )
    (tmp_path / "taken").mkdir()
    result = run("convert", hf, tmp_path / "taken", "--to", "bf16")
    assert result.exit_code == 1 and "already exists; pass force=True" in result.output
    assert result.output.rstrip().endswith("(option --force)")  # the library names the parameter, the CLI its flag


@pytest.mark.parametrize("target", ["mxfp4", "original", "mlx"])
def test_a_quiet_byte_moving_convert_loads_no_torch_gguf_or_tqdm(hf, tmp_path, target):
    """Moving MXFP4 bytes needs none of them, and importing them is a tenth of a small conversion's time."""
    code = (
        "import sys\n"
        "from mxfp4.cli import main\n"
        "main(['convert', sys.argv[1], sys.argv[2], '--to', sys.argv[3], '--quiet'], standalone_mode=False)\n"
        "print(sorted({'torch', 'gguf', 'tqdm'} & set(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(hf), str(tmp_path / "out"), target], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "[]"
