"""Converters refuse broken or hostile checkpoints with errors naming file and tensor; outputs appear
whole or not at all; the source is never touched; hub ids resolve from the local cache offline."""

import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from mxfp4.convert import convert, open_source
from mxfp4.errors import CheckpointError, ConfigError
from mxfp4.storage import space as output_module
from mxfp4.storage.safetensors_io import read_header
from mxfp4.testing.checkpoints import all_tensors, make_checkpoint, same_tensors, tree_digest


@pytest.fixture
def hf(tmp_path):
    return make_checkpoint(tmp_path, shard=150_000)


def rewrite_shard(path, change):
    tensors = load_file(str(path))
    change(tensors)
    save_file(tensors, str(path), metadata=read_header(path)[1])  # the writer's record of its layout stays


def index_of(hf):
    return json.loads((hf / "model.safetensors.index.json").read_text())


def test_missing_shard_named(hf, tmp_path):
    shard = sorted(hf.glob("model-*.safetensors"))[1]
    shard.unlink()
    with pytest.raises(CheckpointError, match=f"shard '{shard.name}' is listed but missing"):
        convert(hf, tmp_path / "out", to="bf16")


@pytest.mark.parametrize("bad", ["../outside.safetensors", "/etc/passwd"])
def test_index_pointing_outside_refused(hf, tmp_path, bad):
    (tmp_path / "outside.safetensors").write_bytes(b"")
    index = index_of(hf)
    index["weight_map"]["model.norm.weight"] = bad
    (hf / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="outside the checkpoint directory|absolute path"):
        open_source(hf)


def test_symlinked_shard_escaping_refused(hf, tmp_path):
    shard = sorted(hf.glob("model-*.safetensors"))[0]
    moved = tmp_path / "elsewhere.safetensors"
    shutil.move(shard, moved)
    os.symlink(moved, shard)
    with pytest.raises(CheckpointError, match="points outside the checkpoint directory"):
        open_source(hf)


def test_unknown_tensor_named(hf, tmp_path):
    shard = sorted(hf.glob("model-*.safetensors"))[-1]
    rewrite_shard(shard, lambda t: t.update({"model.layers.0.mlp.extra": torch.zeros(2)}))
    index = index_of(hf)
    index["weight_map"]["model.layers.0.mlp.extra"] = shard.name
    (hf / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=f"{shard.name}: unknown tensor 'model.layers.0.mlp.extra'"):
        open_source(hf)


def test_blocks_without_scales_named(tmp_path):
    hf = make_checkpoint(tmp_path)
    rewrite_shard(hf / "model.safetensors", lambda t: t.pop("model.layers.1.mlp.experts.down_proj_scales"))
    with pytest.raises(CheckpointError, match="'model.layers.1.mlp.experts.down_proj_scales' is missing"):
        open_source(hf)


def test_blocks_scales_shape_mismatch_named(tmp_path):
    hf = make_checkpoint(tmp_path)
    rewrite_shard(
        hf / "model.safetensors",
        lambda t: t.update({"model.layers.1.mlp.experts.down_proj_scales": torch.zeros(4, 64, 3, dtype=torch.uint8)}),
    )
    with pytest.raises(
        CheckpointError,
        match=r"'model.layers.1.mlp.experts.down_proj_scales' is U8 \[4, 64, 3\]; the config implies U8 \[4, 64, 2\]",
    ):
        open_source(hf)


def test_truncated_shard_named(hf):
    shard = sorted(hf.glob("model-*.safetensors"))[0]
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=f"{shard.name}.*do not fit"):
        open_source(hf)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: c.pop("hidden_size"), "missing key 'hidden_size'"),
        (lambda c: c.update(num_local_experts=0), "num_local_experts = 0; it must be a positive integer"),
        (lambda c: c.update(hidden_size=100), "hidden_size = 100 is not a multiple of 32"),
        (lambda c: c.update(num_experts_per_tok=9), "num_experts_per_tok = 9 exceeds num_local_experts = 4"),
        (lambda c: c.update(layer_types=["sliding_attention"]), "layer_types must list 4 entries"),
        (lambda c: c.update(model_type="llama"), "model_type is 'llama'"),
        (
            lambda c: c.update(num_hidden_layers=10**9, layer_types=None),
            "num_hidden_layers = 1000000000 is beyond any plausible model",
        ),
    ],
)
def test_bad_config_named(hf, change, message):
    config = json.loads((hf / "config.json").read_text())
    change(config)
    (hf / "config.json").write_text(json.dumps(config))
    with pytest.raises((ConfigError, CheckpointError), match=message):
        open_source(hf)


def test_config_not_json(hf):
    (hf / "config.json").write_text("{oops")
    with pytest.raises(ConfigError, match="config.json: not valid JSON"):
        open_source(hf)


def test_pickle_files_are_never_opened(tmp_path):
    hf = make_checkpoint(tmp_path)
    for path in hf.glob("*.safetensors"):
        path.unlink()
    (hf / "pytorch_model.bin").write_bytes(b"\x80\x04not-to-be-unpickled")
    with pytest.raises(CheckpointError, match=r"no \*.safetensors files"):
        open_source(hf)


def test_refuses_to_overwrite_then_replaces_with_force(hf, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(CheckpointError, match="already exists; pass force=True"):
        convert(hf, out, to="bf16")
    assert (out / "keep.txt").read_text() == "mine"
    convert(hf, out, to="bf16", force=True)
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").is_file()


def test_refuses_to_write_into_the_source(hf):
    with pytest.raises(CheckpointError, match="inside the source"):
        convert(hf, hf / "bf16", to="bf16")


def test_interrupt_mid_conversion_leaves_nothing(hf, tmp_path, monkeypatch):
    from mxfp4.convert import transform

    calls = {"n": 0}
    real = transform.dense_expert

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr("mxfp4.convert.formats.hf.dense_expert", interrupted)
    before = tree_digest(hf)
    with pytest.raises(KeyboardInterrupt):
        convert(hf, tmp_path / "out", to="bf16")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]
    assert tree_digest(hf) == before


def test_interrupted_forced_overwrite_keeps_the_old_output(hf, tmp_path, monkeypatch):
    out = tmp_path / "out"
    convert(hf, out, to="mxfp4")
    before = tree_digest(out)
    monkeypatch.setattr(
        "mxfp4.convert.formats.hf.dense_expert", lambda *a, **k: (_ for _ in ()).throw(OSError("disk on fire"))
    )
    with pytest.raises(OSError, match="disk on fire"):
        convert(hf, out, to="bf16", force=True)
    assert tree_digest(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf", "out"]


def test_short_disk_refused_up_front_with_numbers(hf, tmp_path, monkeypatch):
    monkeypatch.setattr(output_module.shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(10**9, 10**9, 1000))
    with pytest.raises(CheckpointError, match=r"needs about .* but only 1000 B is free"):
        convert(hf, tmp_path / "out", to="bf16")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("target", ["bf16", "gguf"])
def test_an_output_directory_that_does_not_exist_is_named(hf, tmp_path, target):
    out = tmp_path / "missing" / ("o.gguf" if target == "gguf" else "out")
    with pytest.raises(CheckpointError, match=f"{tmp_path / 'missing'}: the output's directory does not exist"):
        convert(hf, out, to=target)
    assert not (tmp_path / "missing").exists()


def test_bad_max_shard_size(hf, tmp_path):
    with pytest.raises(CheckpointError, match="'lots' is not a size"):
        convert(hf, tmp_path / "out", to="bf16", max_shard_size="lots")


def test_hub_id_resolves_from_local_cache_offline(hf, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    revision = "0123456789abcdef0123456789abcdef01234567"
    snapshot = cache / "models--openai--gpt-oss-tiny" / "snapshots" / revision
    shutil.copytree(hf, snapshot)
    (cache / "models--openai--gpt-oss-tiny" / "refs").mkdir()
    (cache / "models--openai--gpt-oss-tiny" / "refs" / "main").write_text(revision)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    convert("openai/gpt-oss-tiny", tmp_path / "out", to="bf16")
    assert same_tensors(all_tensors(tmp_path / "out"), all_tensors(convert(hf, tmp_path / "direct", to="bf16").output))
    with pytest.raises(
        CheckpointError, match="openai/gpt-oss-absent: not in the local Hugging Face cache and HF_HUB_OFFLINE is set"
    ):
        convert("openai/gpt-oss-absent", tmp_path / "out2", to="bf16")


@pytest.mark.parametrize("target", ["bf16", "gguf", "mxfp4"])
def test_nan_scale_bytes_are_refused_by_name(tmp_path, target):
    hf = make_checkpoint(tmp_path)

    def poison(t):
        t["model.layers.2.mlp.experts.down_proj_scales"][3, 5, 1] = 0xFF

    rewrite_shard(hf / "model.safetensors", poison)
    out = tmp_path / ("o.gguf" if target == "gguf" else "out")
    with pytest.raises(
        CheckpointError,
        match=r"hf: model.layers.2.mlp.experts.down_proj, expert 3: "
        r"1 blocks carry the NaN scale byte 0xFF \(first at row 5, block 1\)",
    ):
        convert(hf, out, to=target)
    assert not out.exists()


def test_nan_weights_in_a_fine_tune_are_named(tmp_path):
    from mxfp4 import NonFiniteError

    dense = make_checkpoint(tmp_path, "dense", dense=True)

    def poison(t):
        t["model.layers.1.mlp.experts.gate_up_proj"][2, 7, 9] = float("inf")

    rewrite_shard(dense / "model.safetensors", poison)
    with pytest.raises(
        NonFiniteError,
        match=r"dense: model.layers.1.mlp.experts.gate_up_proj, expert 2, as \[out, in\]' holds inf at index \(9, 7\)",
    ):
        convert(dense, tmp_path / "out", to="mxfp4")
    assert not (tmp_path / "out").exists()


def test_scales_without_blocks_named(tmp_path):
    hf = make_checkpoint(tmp_path)
    rewrite_shard(hf / "model.safetensors", lambda t: t.pop("model.layers.0.mlp.experts.gate_up_proj_blocks"))
    with pytest.raises(CheckpointError, match="'model.layers.0.mlp.experts.gate_up_proj_blocks' is missing"):
        open_source(hf)
