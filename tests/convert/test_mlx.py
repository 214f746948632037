"""--to mlx and MLX directories as a source, judged by mlx-lm itself (mlx[cpu] + mlx-lm from PyPI)."""

import json
import shutil
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import mxfp4.model
from mxfp4.convert import convert, open_source
from mxfp4.errors import CheckpointError
from mxfp4.testing.checkpoints import edit_header

if sys.platform not in ("linux", "darwin"):  # the dev extra installs mlx there; elsewhere it has no wheels
    pytest.skip("mlx has no wheels for this platform", allow_module_level=True)
import mlx.core as mx  # noqa: E402
import mlx_lm  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TINY = EXAMPLES / "tiny-gpt-oss"
TRAINED_BF16 = EXAMPLES / "tiny-gpt-oss-trained" / "bf16"
IDS = [[1, 17, 42, 99, 5, 250, 3, 77, 8, 300, 12, 64]]


def tensors(path: Path) -> tuple[dict, dict]:
    """(metadata, {name: (dtype, shape, bytes)}) of every safetensors file of a directory."""
    metadata, out = {}, {}
    for file in sorted(path.glob("*.safetensors")):
        data = file.read_bytes()
        (n,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8 : 8 + n])
        metadata = header.pop("__metadata__", {})
        for name, entry in header.items():
            a, b = entry["data_offsets"]
            out[name] = (entry["dtype"], entry["shape"], data[8 + n + a : 8 + n + b])
    return metadata, out


def mlx_convert(src: Path, dst: Path, **kwargs) -> Path:
    from mlx_lm import convert

    convert(str(src), str(dst), **kwargs)
    return dst


def mlx_logits(path: Path) -> np.ndarray:
    model, _ = mlx_lm.load(str(path))
    return np.array(model(mx.array(IDS)).astype(mx.float32))


@pytest.fixture(scope="module")
def theirs(tmp_path_factory) -> Path:
    return mlx_convert(TINY, tmp_path_factory.mktemp("mlx") / "theirs")


@pytest.fixture(scope="module")
def ours(tmp_path_factory) -> Path:
    dst = tmp_path_factory.mktemp("mlx") / "ours"
    convert(TINY, dst, to="mlx")
    return dst


def test_to_mlx_is_tensor_for_tensor_what_mlx_lm_convert_writes(ours, theirs):
    our_meta, our_tensors = tensors(ours)
    their_meta, their_tensors = tensors(theirs)
    assert our_meta == their_meta == {"format": "mlx"}
    assert our_tensors.keys() == their_tensors.keys()
    for name in their_tensors:
        assert our_tensors[name] == their_tensors[name], name
    assert json.loads((ours / "config.json").read_text()) == json.loads((theirs / "config.json").read_text())
    index = "model.safetensors.index.json"
    assert json.loads((ours / index).read_text()) == json.loads((theirs / index).read_text())


def test_mlx_lm_runs_ours_with_the_logits_of_its_own_conversion(ours, theirs):
    assert np.array_equal(mlx_logits(ours), mlx_logits(theirs))


def test_mlx_to_hf_to_mlx_is_byte_identical_and_hf_gets_the_released_bytes_back(theirs, tmp_path):
    convert(theirs, tmp_path / "hf", to="mxfp4")
    assert tensors(tmp_path / "hf")[1] == tensors(TINY)[1]
    convert(tmp_path / "hf", tmp_path / "again", to="mlx")
    assert tensors(tmp_path / "again") == tensors(theirs)


@pytest.mark.parametrize("to", ["gguf", "original", "bf16"])
def test_mlx_source_gives_every_target_what_the_hf_checkpoint_gives(theirs, tmp_path, to):
    suffix = ".gguf" if to == "gguf" else ""
    convert(theirs, tmp_path / f"from-mlx{suffix}", to=to)
    convert(TINY, tmp_path / f"from-hf{suffix}", to=to)
    if to == "gguf":
        from gguf import GGUFReader

        a, b = GGUFReader(tmp_path / "from-mlx.gguf"), GGUFReader(tmp_path / "from-hf.gguf")
        assert [(t.name, bytes(t.data)) for t in a.tensors] == [(t.name, bytes(t.data)) for t in b.tensors]
    else:
        assert tensors(tmp_path / "from-mlx")[1] == tensors(tmp_path / "from-hf")[1]


def test_our_model_on_the_mlx_directory_equals_it_on_the_hf_checkpoint(theirs):
    ids = torch.tensor(IDS)
    with torch.no_grad():
        assert torch.equal(mxfp4.model.load(theirs)(ids), mxfp4.model.load(TINY)(ids))


def float32_mlx_model(path: Path, *, gpt_oss_yarn: bool):
    """mlx_lm's model of ``path`` computing in float32 (experts stay MXFP4). gpt_oss_yarn: replace mlx-lm's YaRN
    frequencies by gpt-oss's. mlx-lm rounds YaRN's correction range to whole dimensions (floor / ceil) even when
    the config says "truncate": false, as gpt-oss's does; transformers and openai's reference do not round, so
    stock mlx-lm departs from gpt-oss at every position after the first (an mlx-lm difference, not a file's)."""
    import math

    from mlx.utils import tree_map

    model, _ = mlx_lm.load(str(path))
    floats = lambda p: p.astype(mx.float32) if mx.issubdtype(p.dtype, mx.floating) else p  # noqa: E731
    model.update(tree_map(floats, model.parameters()))
    if gpt_oss_yarn:
        args, dims = model.args, model.args.head_dim
        rope = args.rope_scaling
        span = lambda r: dims * math.log(rope["original_max_position_embeddings"] / (r * 2 * math.pi))  # noqa: E731
        low = max(span(rope["beta_fast"]) / (2 * math.log(args.rope_theta)), 0)
        high = min(span(rope["beta_slow"]) / (2 * math.log(args.rope_theta)), dims - 1)
        keep = 1 - mx.clip((mx.arange(dims // 2, dtype=mx.float32) - low) / (high - low), 0, 1)
        extra = args.rope_theta ** (mx.arange(0, dims, 2, dtype=mx.float32) / dims)
        inter = rope["factor"] * extra
        freqs = (inter * extra) / (inter * keep + extra * (1 - keep))
        for layer in model.model.layers:
            layer.self_attn.rope._freqs = freqs
    return model


@pytest.mark.parametrize("source", ["released", "fine-tune"])
def test_mlx_lm_on_our_mlx_output_matches_our_reference_model(tmp_path, source):
    """The bf16 fine-tune (a transformers 5 save: YaRN inside rope_parameters, which mlx-lm does not read; mlx-lm
    cannot convert it, mlx-lm#1079) is quantized once; ours writes rope_scaling so mlx-lm applies YaRN. Both run
    in mlx_lm at float32 and match our float32 reference model on the same MXFP4 weights. Bound: two float32
    computations of each logit in different orders, through dot products of at most 2 * hidden = 256 terms:
    256 * eps32 * max |logit|."""
    if source == "released":
        convert(TINY, tmp_path / "mlx", to="mlx")
        reference = TINY
    else:
        convert(TRAINED_BF16, tmp_path / "mlx", to="mlx", scale_rule="mlx")
        convert(TRAINED_BF16, tmp_path / "hf", to="mxfp4", scale_rule="mlx")
        reference = tmp_path / "hf"
    with torch.no_grad():
        want = mxfp4.model.load(reference)(torch.tensor(IDS)).numpy()
    bound = 256 * np.finfo(np.float32).eps * np.abs(want).max()
    got = np.array(float32_mlx_model(tmp_path / "mlx", gpt_oss_yarn=True)(mx.array(IDS)))
    assert np.abs(got - want).max() <= bound
    stock = np.array(float32_mlx_model(tmp_path / "mlx", gpt_oss_yarn=False)(mx.array(IDS)))
    assert np.abs(stock[:, 0] - want[:, 0]).max() <= bound  # position 0 rotates by nothing: YaRN's scale alone
    assert np.abs(stock[:, 1:] - want[:, 1:]).max() > bound  # mlx-lm's rounded correction range shows after


def test_a_bf16_fine_tune_to_mlx_equals_mlx_lm_convert_of_our_hf_mxfp4(tmp_path):
    convert(TRAINED_BF16, tmp_path / "mlx", to="mlx", scale_rule="mlx")
    convert(TRAINED_BF16, tmp_path / "hf", to="mxfp4", scale_rule="mlx")
    via_hf = mlx_convert(tmp_path / "hf", tmp_path / "via-hf")
    assert tensors(tmp_path / "mlx")[1] == tensors(via_hf)[1]
    ours = json.loads((tmp_path / "mlx" / "config.json").read_text())
    assert ours["rope_scaling"]["rope_type"] == "yarn" and "rope_scaling" not in json.loads(
        (via_hf / "config.json").read_text()
    )  # mlx_lm.convert keeps the transformers 5 form, which its own gpt-oss model then runs without YaRN


def test_the_mlx_rule_on_a_bf16_fine_tune_gives_mx_quantize_bytes(tmp_path):
    """Our --scale-rule mlx experts equal mx.quantize of the same dense expert weights."""
    convert(TRAINED_BF16, tmp_path / "mlx", to="mlx", scale_rule="mlx")
    _, ours = tensors(tmp_path / "mlx")
    dense = mx.load(str(TRAINED_BF16 / "model.safetensors"))
    gate_up = dense["model.layers.1.mlp.experts.gate_up_proj"]  # [E, in, out]
    weights = mx.swapaxes(gate_up, 1, 2)[:, 0::2, :].astype(mx.float32)  # gate rows [E, out, in]
    words, scales = mx.quantize(weights, group_size=32, bits=4, mode="mxfp4")
    assert ours["model.layers.1.mlp.experts.gate_proj.weight"][2] == np.array(words).tobytes()
    assert ours["model.layers.1.mlp.experts.gate_proj.scales"][2] == np.array(scales).tobytes()


@pytest.mark.parametrize("bits", [8, 4])
def test_affine_requantized_mlx_models_are_dequantized_as_mx_dequantize_does(tmp_path, bits):
    """The -Q8 / -Q4 community form: attention, router, embeddings affine; experts still MXFP4 (kept as bytes)."""
    src = mlx_convert(TINY, tmp_path / "q", quantize=True, q_bits=bits, q_group_size=32)
    source = open_source(src)
    assert "affine-quantized" in source.layout and str(bits) in source.layout.rsplit("(", 1)[1]
    convert(src, tmp_path / "bf16", to="bf16")
    convert(src, tmp_path / "hf", to="mxfp4")
    weights = mx.load(str(src / "model.safetensors"))
    _, out = tensors(tmp_path / "bf16")
    checked = 0
    for name in weights:
        if not name.endswith(".biases"):
            continue
        module = name.removesuffix(".biases")
        group = 64 if module.endswith("router") else 32  # mlx-lm's gpt-oss quantizes the router 8-bit, 64 a group
        router_bits = 8 if module.endswith("router") else bits
        want = mx.dequantize(
            weights[module + ".weight"], weights[module + ".scales"], weights[module + ".biases"],
            group_size=group, bits=router_bits, mode="affine",
        )  # fmt: skip
        assert out[module + ".weight"][2] == np.array(want.view(mx.uint16)).tobytes(), module
        checked += 1
    assert checked == 2 + 5 * 4  # embeddings, lm_head; q, k, v, o and router in each of 4 layers
    _, hf = tensors(tmp_path / "hf")
    _, tiny = tensors(TINY)
    experts = [n for n in tiny if "experts" in n and n.endswith(("_blocks", "_scales"))]
    assert experts and all(hf[n] == tiny[n] for n in experts)  # MXFP4 experts untouched by the affine pass


def test_a_dequantized_mlx_fuse_directory_reads_as_a_dense_fine_tune(theirs, tmp_path):
    """mlx_lm.fuse --de-quantize leaves SwitchLinear weights dense [E, out, in]: they read as dense experts."""
    src = mlx_convert(theirs, tmp_path / "dense", dequantize=True)
    source = open_source(src)
    assert not source.packed and "dense" in source.layout
    convert(src, tmp_path / "hf", to="bf16")
    convert(TINY, tmp_path / "ref", to="bf16")
    assert tensors(tmp_path / "hf")[1] == tensors(tmp_path / "ref")[1]


def _copy_with_header_change(src: Path, dst: Path, change) -> Path:
    shutil.copytree(src, dst)
    (dst / "model.safetensors.index.json").unlink()  # one file: the index would only repeat the header
    edit_header(dst / "model.safetensors", change)
    return dst


def test_hostile_mlx_directories_are_refused_naming_file_and_tensor(theirs, tmp_path):
    name = "model.layers.0.mlp.experts.up_proj.scales"
    missing = _copy_with_header_change(theirs, tmp_path / "missing", lambda h: h.pop(name))
    with pytest.raises(CheckpointError, match="module 'model.layers.0.mlp.experts.up_proj' is not MXFP4"):
        convert(missing, tmp_path / "out1", to="mxfp4")

    def wrong_dtype(header):
        header[name]["dtype"] = "I8"

    bad = _copy_with_header_change(theirs, tmp_path / "dtype", wrong_dtype)
    with pytest.raises(CheckpointError, match="up_proj' is not MXFP4 .* holds {'.weight': 'U32', '.scales': 'I8'}"):
        convert(bad, tmp_path / "out2", to="mxfp4")

    def renamed(header):
        header["model.norm.weights"] = header.pop("model.norm.weight")

    unknown = _copy_with_header_change(theirs, tmp_path / "unknown", renamed)
    with pytest.raises(CheckpointError, match="model.safetensors: unknown tensor 'model.norm.weights'"):
        convert(unknown, tmp_path / "out3", to="mxfp4")
    assert not any(p.name.startswith("out") for p in tmp_path.iterdir())


def test_the_cli_writes_mlx_and_inspect_and_verify_read_it(tmp_path):
    from click.testing import CliRunner

    from mxfp4.cli import main

    done = CliRunner().invoke(main, ["convert", str(TINY), str(tmp_path / "mlx"), "--to", "mlx"])
    assert done.exit_code == 0, done.output
    shown = CliRunner().invoke(main, ["inspect", str(tmp_path / "mlx")])
    assert shown.exit_code == 0 and "(mlx)" in shown.output and "uint32 words" in shown.output
    same = CliRunner().invoke(main, ["verify", str(tmp_path / "mlx"), str(TINY)])
    assert same.exit_code == 0 and "0 mismatched" in same.output


def test_calibrated_quantization_writes_mlx_with_the_experts_of_its_mxfp4_output(tmp_path):
    from mxfp4.calibrate.run import convert_calibrated
    from mxfp4.eval.tokens import read_token_file

    tokens = read_token_file(EXAMPLES / "tiny-gpt-oss-trained" / "heldout.tokens")[:512]
    settings = dict(context=64, samples=4, min_tokens=8)
    convert_calibrated(TRAINED_BF16, tmp_path / "mlx", tokens, to="mlx", **settings)
    convert_calibrated(TRAINED_BF16, tmp_path / "hf", tokens, to="mxfp4", **settings)
    convert(tmp_path / "mlx", tmp_path / "back", to="mxfp4")
    assert tensors(tmp_path / "back")[1] == tensors(tmp_path / "hf")[1]
