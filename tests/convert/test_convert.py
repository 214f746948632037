"""Converters between HF MXFP4, dense bf16 and original/: round trips, real clients, streaming."""

import json

import pytest
import torch
from transformers_cpu import causal_lm

import mxfp4
from mxfp4.convert import convert, open_source
from mxfp4.testing.checkpoints import all_tensors, make_checkpoint, same_tensors, tree_digest


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("ckpt"), shard=150_000)


def test_synthetic_checkpoint_is_sharded_with_index(hf):
    assert (hf / "model.safetensors.index.json").is_file()
    assert len(list(hf.glob("model-*.safetensors"))) >= 2
    assert open_source(hf).kind == "hf-mxfp4"


def test_hf_to_mxfp4_is_byte_identical_and_leaves_the_source_alone(hf, tmp_path):
    before = tree_digest(hf)
    result = convert(hf, tmp_path / "out", to="mxfp4")
    assert tree_digest(hf) == before
    assert same_tensors(all_tensors(hf), all_tensors(tmp_path / "out"))
    source_bytes = sum(t.numel() * t.element_size() for t in all_tensors(hf).values())
    assert result.source_kind == "hf-mxfp4" and result.bytes_out == result.bytes_in == source_bytes
    assert (tmp_path / "out" / "tokenizer.json").read_bytes() == (hf / "tokenizer.json").read_bytes()


def test_hf_to_original_to_hf_is_byte_identical(hf, tmp_path):
    convert(hf, tmp_path / "original", to="original")
    original = all_tensors(tmp_path / "original")
    assert "block.0.attn.qkv.weight" in original and "block.3.mlp.mlp2_weight.blocks" in original
    config = json.loads((tmp_path / "original" / "config.json").read_text())
    assert config["num_experts"] == 4 and config["experts_per_token"] == 2
    dtypes = json.loads((tmp_path / "original" / "dtypes.json").read_text())
    assert dtypes["block.0.mlp.mlp1_weight.blocks"] == "FP4" and dtypes["block.0.mlp.mlp1_weight.scales"] == "UE8"
    convert(tmp_path / "original", tmp_path / "back", to="mxfp4")
    assert same_tensors(all_tensors(hf), all_tensors(tmp_path / "back"))


def test_original_qkv_is_q_then_k_then_v(hf, tmp_path):
    convert(hf, tmp_path / "original", to="original")
    source, original = all_tensors(hf), all_tensors(tmp_path / "original")
    stacked = torch.cat([source[f"model.layers.1.self_attn.{p}_proj.weight"] for p in "qkv"])
    assert torch.equal(original["block.1.attn.qkv.weight"], stacked)
    assert torch.equal(
        original["block.1.mlp.mlp1_weight.blocks"], source["model.layers.1.mlp.experts.gate_up_proj_blocks"]
    )


def test_hf_to_bf16_is_the_dense_transposed_layout(hf, tmp_path):
    convert(hf, tmp_path / "bf16", to="bf16")
    dense, source = all_tensors(tmp_path / "bf16"), all_tensors(hf)
    config = json.loads((tmp_path / "bf16" / "config.json").read_text())
    assert "quantization_config" not in config
    w = dense["model.layers.2.mlp.experts.gate_up_proj"]
    assert w.dtype == torch.bfloat16 and tuple(w.shape) == (4, 64, 128)  # [E, H, 2I]
    decoded = mxfp4.dequantize(
        source["model.layers.2.mlp.experts.gate_up_proj_blocks"],
        source["model.layers.2.mlp.experts.gate_up_proj_scales"],
        torch.bfloat16,
    )
    assert torch.equal(w, decoded.transpose(1, 2))
    assert tuple(dense["model.layers.2.mlp.experts.down_proj"].shape) == (4, 64, 64)  # [E, I, H]


@pytest.mark.parametrize("rule", ["round_up", "floor", "mse"])
def test_hf_to_bf16_to_mxfp4_gives_identical_values(hf, tmp_path, rule):
    convert(hf, tmp_path / "bf16", to="bf16")
    convert(tmp_path / "bf16", tmp_path / "mx", to="mxfp4", scale_rule=rule)
    a, b = all_tensors(hf), all_tensors(tmp_path / "mx")
    assert set(a) == set(b)
    for name in a:
        if name.endswith("_blocks"):
            base = name[: -len("_blocks")]
            va = mxfp4.dequantize(a[name], a[base + "_scales"])
            vb = mxfp4.dequantize(b[name], b[base + "_scales"])
            assert torch.equal(va, vb), name
        elif not name.endswith("_scales"):
            assert torch.equal(a[name], b[name]), name
    config = json.loads((tmp_path / "mx" / "config.json").read_text())
    assert config["quantization_config"]["quant_method"] == "mxfp4"


def test_float32_bf16_export(hf, tmp_path):
    convert(hf, tmp_path / "f32", to="bf16", dtype="float32")
    assert all_tensors(tmp_path / "f32")["model.layers.0.mlp.experts.down_proj"].dtype == torch.float32


def test_max_shard_size_splits_output_with_index(hf, tmp_path):
    result = convert(hf, tmp_path / "sharded", to="bf16", max_shard_size="200KB")
    index = json.loads((tmp_path / "sharded" / "model.safetensors.index.json").read_text())
    assert len(result.files) > 2 and set(index["weight_map"].values()) == {f.name for f in result.files}
    assert same_tensors(all_tensors(tmp_path / "sharded"), all_tensors(convert(hf, tmp_path / "one", to="bf16").output))


def test_dense_source_checkpoint_quantizes_with_each_rule(tmp_path):
    dense = make_checkpoint(tmp_path, "dense", dense=True)
    assert open_source(dense).kind == "hf-dense"
    for rule in ("floor", "round_up"):
        convert(dense, tmp_path / rule, to="mxfp4", scale_rule=rule)
    a, b = all_tensors(tmp_path / "floor"), all_tensors(tmp_path / "round_up")
    assert not torch.equal(
        a["model.layers.0.mlp.experts.down_proj_scales"], b["model.layers.0.mlp.experts.down_proj_scales"]
    )


@pytest.fixture(scope="class")
def logits(tmp_path_factory):
    """Logits of transformers on the source and on our outputs (shared by TestTransformers)."""
    import transformers

    transformers.logging.set_verbosity_error()
    root = tmp_path_factory.mktemp("tf")
    source = make_checkpoint(root, shard=150_000)
    convert(source, root / "bf16", to="bf16")
    convert(root / "bf16", root / "mx", to="mxfp4")
    convert(source, root / "original", to="original")
    convert(root / "original", root / "from_original", to="mxfp4")
    ids = torch.tensor(
        [[3, 100, 27, 300, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20]]
    )  # > 2 sliding windows
    out = {}
    for name in ("hf", "bf16", "mx", "from_original"):
        path = source if name == "hf" else root / name
        model = causal_lm(path, dtype=torch.bfloat16)
        with torch.no_grad():
            out[name] = model(ids).logits.float()
    return out


class TestTransformers:
    """transformers loads our outputs and computes the same logits as on the source."""

    @pytest.mark.parametrize("name", ["bf16", "mx", "from_original"])
    def test_same_logits_as_source(self, logits, name):
        assert logits["hf"].abs().mean() > 0.1  # the model computes something
        assert torch.equal(logits[name], logits["hf"])


@pytest.mark.parametrize("target", ["bf16", "original", "gguf"])
def test_row_chunked_streaming_writes_the_same_bytes(hf, tmp_path, monkeypatch, target):
    import mxfp4.convert.row_chunks as row_chunks

    def files_of(directory):
        convert(hf, directory / "model.gguf" if target == "gguf" else directory / "out", to=target)
        return [p.read_bytes() for p in sorted(directory.rglob("*")) if p.suffix in (".gguf", ".safetensors")]

    (tmp_path / "whole").mkdir()
    (tmp_path / "chunked").mkdir()
    whole = files_of(tmp_path / "whole")
    monkeypatch.setattr(row_chunks, "ROW_CHUNK_BYTES", 1000)  # the embedding (48 KiB) now streams in ~50 chunks
    assert files_of(tmp_path / "chunked") == whole
