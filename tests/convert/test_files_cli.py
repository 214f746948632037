"""safetensors files through the library and the `mxfp4` command: atomic output, clean errors."""

import hashlib

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

import mxfp4
from mxfp4.cli import main
from mxfp4.convert import safetensors_files as files
from mxfp4.errors import CheckpointError
from mxfp4.storage.safetensors_io import read_header

EXPERTS = "experts\\.(gate_up|down)_proj$"


@pytest.fixture
def source(tmp_path):
    g = torch.Generator().manual_seed(0)
    tensors = {
        "layer.experts.gate_up_proj": (torch.randn(2, 64, 96, generator=g) * 0.05).bfloat16(),
        "layer.experts.gate_up_proj_bias": torch.randn(2, 64, generator=g).bfloat16(),
        "layer.experts.down_proj": (torch.randn(2, 96, 32, generator=g) * 0.05).bfloat16(),
        "layer.norm.weight": torch.ones(96).bfloat16(),
        "layer.odd": torch.randn(3, 40, generator=g),  # last axis not whole blocks: copied
    }
    path = tmp_path / "src.safetensors"
    save_file(tensors, str(path))
    return path, tensors


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_quantize_file_packs_selected_tensors_and_copies_the_rest(source, tmp_path):
    path, tensors = source
    before = digest(path)
    result = files.quantize_file(path, tmp_path / "out.safetensors", include=EXPERTS)
    assert digest(path) == before  # the source is never modified
    out = load_file(str(tmp_path / "out.safetensors"))
    assert set(out) == {
        "layer.experts.gate_up_proj_blocks",
        "layer.experts.gate_up_proj_scales",
        "layer.experts.down_proj_blocks",
        "layer.experts.down_proj_scales",
        "layer.experts.gate_up_proj_bias",
        "layer.norm.weight",
        "layer.odd",
    }
    q = mxfp4.quantize(tensors["layer.experts.gate_up_proj"])
    assert torch.equal(out["layer.experts.gate_up_proj_blocks"], q.blocks)
    assert torch.equal(out["layer.experts.gate_up_proj_scales"], q.scales)
    assert torch.equal(out["layer.norm.weight"], tensors["layer.norm.weight"])
    assert {r.name for r in result.reports} == {"layer.experts.gate_up_proj", "layer.experts.down_proj"}
    assert all(15 < r.sqnr_db < 25 for r in result.reports)


def test_default_exclude_keeps_biases(source, tmp_path):
    path, _ = source
    result = files.quantize_file(path, tmp_path / "out.safetensors")
    assert "layer.experts.gate_up_proj_bias" in result.copied


def test_dequantize_file_gives_back_the_decoded_values(source, tmp_path):
    path, tensors = source
    files.quantize_file(path, tmp_path / "q.safetensors", include=EXPERTS, scale_rule="mse")
    files.dequantize_file(tmp_path / "q.safetensors", tmp_path / "d.safetensors", dtype="bfloat16")
    dense = load_file(str(tmp_path / "d.safetensors"))
    assert set(dense) == set(tensors)
    expected = mxfp4.quantize(tensors["layer.experts.down_proj"], scale_rule="mse").dequantize(torch.bfloat16)
    assert torch.equal(dense["layer.experts.down_proj"], expected)
    # Re-packing the decoded values with any rule gives the same values back.
    files.quantize_file(tmp_path / "d.safetensors", tmp_path / "q2.safetensors", include=EXPERTS)
    files.dequantize_file(tmp_path / "q2.safetensors", tmp_path / "d2.safetensors")
    again = load_file(str(tmp_path / "d2.safetensors"))
    assert all(torch.equal(again[k], dense[k]) for k in dense)


def test_refuses_to_overwrite_without_force(source, tmp_path):
    path, _ = source
    out = tmp_path / "out.safetensors"
    out.write_bytes(b"keep me")
    with pytest.raises(CheckpointError, match="already exists; pass force=True"):
        files.quantize_file(path, out)
    assert out.read_bytes() == b"keep me"
    files.quantize_file(path, out, force=True)
    assert read_header(out)[0]


def test_refuses_to_write_over_its_source(source):
    path, _ = source
    with pytest.raises(CheckpointError, match="is the source file"):
        files.quantize_file(path, path, force=True)


def test_failure_mid_write_leaves_no_file(source, tmp_path, monkeypatch):
    path, _ = source
    calls = {"n": 0}
    real = mxfp4.codec.encode.quantize

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(mxfp4.codec.encode, "quantize", interrupted)
    with pytest.raises(KeyboardInterrupt):
        files.quantize_file(path, tmp_path / "out.safetensors", include=EXPERTS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src.safetensors"]


def test_nan_weight_is_reported_with_file_tensor_and_index(tmp_path):
    w = torch.zeros(2, 64)
    w[1, 33] = float("nan")
    save_file({"w": w}, str(tmp_path / "nan.safetensors"))
    with pytest.raises(mxfp4.NonFiniteError, match=r"tensor 'nan.safetensors:w' holds nan at index \(1, 33\)"):
        files.quantize_file(tmp_path / "nan.safetensors", tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()


def test_unpaired_blocks_named(tmp_path):
    save_file({"w_blocks": torch.zeros(2, 1, 16, dtype=torch.uint8)}, str(tmp_path / "half.safetensors"))
    with pytest.raises(CheckpointError, match="'w_blocks' has no 'w_scales' partner"):
        files.dequantize_file(tmp_path / "half.safetensors", tmp_path / "out.safetensors")


def test_cli_quantize_prints_table_and_summary(source, tmp_path):
    path, _ = source
    result = CliRunner().invoke(main, ["quantize", str(path), str(tmp_path / "o.safetensors"), "--include", EXPERTS])
    assert result.exit_code == 0, result.output
    assert "SQNR dB" in result.output and "layer.experts.down_proj" in result.output
    assert "2 tensors packed (floor, rne), 3 copied" in result.output


def test_cli_inspect_counts_bits(source, tmp_path):
    path, _ = source
    files.quantize_file(path, tmp_path / "o.safetensors", include=EXPERTS)
    result = CliRunner().invoke(main, ["inspect", str(tmp_path / "o.safetensors")])
    assert result.exit_code == 0
    line = next(l for l in result.output.splitlines() if l.startswith("layer.experts.gate_up_proj "))
    assert "MXFP4" in line and "2x64x96" in line and line.rstrip().endswith("4.25")


def test_cli_errors_are_one_clean_line(source, tmp_path):
    path, _ = source
    out = tmp_path / "o.safetensors"
    out.write_bytes(b"x")
    result = CliRunner().invoke(main, ["quantize", str(path), str(out)])
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1].startswith("error: ") and "Traceback" not in result.output


def test_cli_bad_regex_is_a_clean_error(source, tmp_path):
    path, _ = source
    result = CliRunner().invoke(main, ["quantize", str(path), str(tmp_path / "o.safetensors"), "--include", "("])
    assert result.exit_code == 1 and "not a valid regular expression" in result.output


def test_cli_dequantize_round_trip(source, tmp_path):
    path, _ = source
    runner = CliRunner()
    assert runner.invoke(main, ["quantize", str(path), str(tmp_path / "q.safetensors"), "--quiet"]).exit_code == 0
    result = runner.invoke(
        main, ["dequantize", str(tmp_path / "q.safetensors"), str(tmp_path / "d.safetensors"), "--dtype", "float32"]
    )
    assert result.exit_code == 0, result.output
    assert load_file(str(tmp_path / "d.safetensors"))["layer.experts.down_proj"].dtype == torch.float32


@pytest.mark.parametrize("name", ["pytorch_model.bin", "model.pt", "weights.ckpt"])
def test_the_command_refuses_pickle_files(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"\x80\x04\x95")  # the start of a pickle; it must never be unpickled
    result = CliRunner().invoke(main, ["convert", str(path), str(tmp_path / "out"), "--to", "bf16"])
    assert result.exit_code == 1 and "never opens them" in result.output
