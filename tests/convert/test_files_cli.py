"""safetensors files through the library and the `mxfp4` command: atomic output, clean errors."""

import hashlib
import json
import struct

import pytest
import torch
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
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


def write_raw(path, header: bytes, data: bytes = b""):
    path.write_bytes(struct.pack("<Q", len(header)) + header + data)


@pytest.mark.parametrize(
    "header, data, message",
    [
        (None, b"", "too short for a safetensors file"),
        (b"{}", b"", None),
        (b"not json", b"", "header is not valid JSON"),
        (json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}).encode(), b"\0" * 8, "do not fit"),
        (json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 12]}}).encode(), b"\0" * 16, "do not fit"),
        (
            json.dumps({"w": {"dtype": "Q9", "shape": [4], "data_offsets": [0, 4]}}).encode(),
            b"\0" * 4,
            "unknown dtype 'Q9'",
        ),
        (
            json.dumps(
                {
                    "a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
                    "b": {"dtype": "U8", "shape": [4], "data_offsets": [2, 6]},
                }
            ).encode(),
            b"\0" * 6,
            "overlap",
        ),
    ],
)
def test_hostile_headers_are_rejected_by_name(tmp_path, header, data, message):
    path = tmp_path / "bad.safetensors"
    if header is None:
        path.write_bytes(b"\x01\x02")
    else:
        write_raw(path, header, data)
    if message is None:
        assert read_header(path) == ([], {})
        return
    with pytest.raises(CheckpointError, match=message) as error:
        read_header(path)
    assert "bad.safetensors" in str(error.value)


def test_header_length_larger_than_file(tmp_path):
    path = tmp_path / "huge.safetensors"
    path.write_bytes(struct.pack("<Q", 2**60) + b"{}")
    with pytest.raises(CheckpointError, match=r"header length 1152921504606846976 does not fit in a file of 10 bytes"):
        read_header(path)


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


@pytest.mark.parametrize(
    "header, message",
    [
        (
            b'{"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}, '
            b'"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}',
            "tensor 'a' appears twice",
        ),
        (b'{"a": {"dtype": "U8", "shape": [1.5], "data_offsets": [0, 1]}}', "expected a list of non-negative integers"),
        (b'{"a": {"dtype": "U8", "shape": [1], "data_offsets": ["0", 1]}}', r"expected \[begin, end\] integers"),
        (b'{"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1, 2]}}', r"expected \[begin, end\] integers"),
        (b'{"a": [1, 2]}', "malformed header entry"),
        (b'{"__metadata__": {"k": 5}}', "__metadata__ must map strings to strings"),
        (b"[" * 100000 + b"]" * 100000, "header is not valid JSON|not a JSON object"),
        (b'{"a": {"dtype": "U8", "shape": [4294967296, 4294967296], "data_offsets": [0, 1]}}', "do not fit its size"),
    ],
)
def test_more_hostile_headers(tmp_path, header, message):
    path = tmp_path / "bad.safetensors"
    write_raw(path, header, b"\0")
    with pytest.raises(CheckpointError, match=message):
        read_header(path)


@pytest.mark.parametrize("name", ["pytorch_model.bin", "model.pt", "weights.ckpt"])
def test_pickle_files_refused_without_opening(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"\x80\x04\x95")  # the start of a pickle; it must never be unpickled
    with pytest.raises(CheckpointError, match="pickle-based checkpoints can run arbitrary code"):
        read_header(path)
    result = CliRunner().invoke(main, ["convert", str(path), str(tmp_path / "out"), "--to", "bf16"])
    assert result.exit_code == 1 and "never opens them" in result.output


def test_every_safetensors_dtype_the_reader_accepts_can_be_read(tmp_path):
    # Found by fuzzing: the header check knew U32 but the tensor reader did not.
    from mxfp4.dtypes import DTYPE_SIZES
    from mxfp4.dtypes import torch_dtype_of_code as torch_dtype

    for code, size in DTYPE_SIZES.items():
        assert torch_dtype(code).itemsize == size, code


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
ENTRY = st.fixed_dictionaries(
    {},
    optional={
        "dtype": JSON | st.sampled_from(["U8", "F32", "BF16", "U32"]),
        "shape": JSON | st.lists(st.integers(-2, 5), max_size=3),
        "data_offsets": JSON | st.lists(st.integers(-2, 64), min_size=2, max_size=2),
    },
)


@settings(max_examples=300, deadline=None)
@given(header=st.dictionaries(st.text(max_size=6), ENTRY | JSON, max_size=4), data_size=st.integers(0, 80))
def test_any_json_header_is_read_or_refused_cleanly(tmp_path_factory, header, data_size):
    path = tmp_path_factory.mktemp("h") / "x.safetensors"
    write_raw(path, json.dumps(header).encode(), b"\0" * data_size)
    try:
        read_header(path)
    except CheckpointError:
        pass
