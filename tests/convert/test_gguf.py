"""GGUF: our writer against llama.cpp's own converter, lossless round trips, reading GGUF back,
and llama.cpp itself (llama-cpp-python) running what we write."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from gguf import GGUFReader
from transformers_cpu import causal_lm

import mxfp4
from mxfp4.convert import convert, open_source
from mxfp4.errors import CheckpointError
from mxfp4.testing.checkpoints import all_tensors, make_checkpoint, same_tensors, tree_digest

REPO = Path(__file__).resolve().parents[2]
LLAMA_CPP = Path(os.environ.get("MXFP4_LLAMA_CPP_DIR", REPO / ".cache" / "llama.cpp"))
COSMETIC = {"general.name", "general.size_label"}  # derived from folder names and parameter counts


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("g"), shard=150_000)


@pytest.fixture(scope="module")
def ours(hf, tmp_path_factory):
    return convert(hf, tmp_path_factory.mktemp("o") / "model.gguf", to="gguf").output


def metadata(path):
    reader = GGUFReader(path)
    return {
        f.name: (tuple(f.types), f.contents())
        for f in reader.fields.values()
        if not f.name.startswith("GGUF.") and f.name not in COSMETIC
    }


def tensors(path):
    return {
        t.name: (t.tensor_type.name, [int(d) for d in t.shape], np.asarray(t.data).view(np.uint8).tobytes())
        for t in GGUFReader(path).tensors
    }


@pytest.fixture(scope="module")
def reference(hf, tmp_path_factory):
    """The same checkpoint through llama.cpp's convert_hf_to_gguf.py."""
    if not (LLAMA_CPP / "convert_hf_to_gguf.py").is_file():
        pytest.fail(
            f"llama.cpp's converter is not at {LLAMA_CPP}; .ci/run fetches it (set MXFP4_LLAMA_CPP_DIR to use another "
            "tree)"
        )
    out = tmp_path_factory.mktemp("ref") / "reference.gguf"
    subprocess.run(
        [sys.executable, REPO / "tests" / "tools" / "run_llama_cpp_converter.py", LLAMA_CPP, hf, "--outfile", out],
        check=True,
        capture_output=True,
    )
    return out


def test_metadata_equals_llama_cpp_converter(ours, reference):
    assert metadata(ours) == metadata(reference)


def test_tensor_names_types_shapes_and_bytes_equal_llama_cpp_converter(ours, reference):
    a, b = tensors(ours), tensors(reference)
    assert set(a) == set(b)
    for name in a:
        assert a[name][:2] == b[name][:2], name
        assert a[name][2] == b[name][2], name  # experts are a byte move; the rest keeps llama.cpp's dtypes


def test_experts_are_split_and_repacked_not_requantized(hf, ours):
    src = all_tensors(hf)
    reader = {t.name: t for t in GGUFReader(ours).tensors}
    gate = reader["blk.1.ffn_gate_exps.weight"]
    assert gate.tensor_type.name == "MXFP4" and [int(d) for d in gate.shape] == [64, 64, 4]
    raw = np.asarray(gate.data)[2].reshape(64, 2, 17)
    blocks, scales = mxfp4.layout.gguf_to_hf(raw)
    assert np.array_equal(blocks, src["model.layers.1.mlp.experts.gate_up_proj_blocks"][2, 0::2].numpy())
    assert np.array_equal(scales, src["model.layers.1.mlp.experts.gate_up_proj_scales"][2, 0::2].numpy())


@pytest.mark.parametrize("target", ["mxfp4", "original"])
def test_hf_to_gguf_to_hf_is_byte_identical(hf, ours, tmp_path, target):
    before = tree_digest(ours.parent)
    convert(ours, tmp_path / "back", to="mxfp4")
    assert tree_digest(ours.parent) == before
    assert same_tensors(all_tensors(hf), all_tensors(tmp_path / "back"))
    config, source_config = (json.loads((d / "config.json").read_text()) for d in (tmp_path / "back", hf))
    for key in (
        "num_hidden_layers",
        "num_local_experts",
        "num_experts_per_tok",
        "hidden_size",
        "intermediate_size",
        "head_dim",
        "num_attention_heads",
        "num_key_value_heads",
        "vocab_size",
        "sliding_window",
        "layer_types",
        "rope_theta",
        "rope_scaling",
        "max_position_embeddings",
        "rms_norm_eps",
        "swiglu_limit",
        "quantization_config",
    ):
        assert config[key] == source_config[key], key


def test_llama_cpp_gguf_reads_back_to_the_source(hf, reference, tmp_path):
    convert(reference, tmp_path / "back", to="mxfp4")
    assert same_tensors(all_tensors(hf), all_tensors(tmp_path / "back"))


def test_gguf_tokenizer_round_trips(hf, ours, tmp_path):
    convert(ours, tmp_path / "back", to="bf16")
    a = json.loads((hf / "tokenizer.json").read_text())
    b = json.loads((tmp_path / "back" / "tokenizer.json").read_text())
    assert b["model"]["vocab"] == a["model"]["vocab"] and b["model"]["merges"] == a["model"]["merges"]
    assert [(t["id"], t["content"], t["special"]) for t in b["added_tokens"]] == [
        (t["id"], t["content"], t["special"]) for t in a["added_tokens"]
    ]


def test_dense_fine_tune_to_gguf_quantizes(tmp_path):
    dense = make_checkpoint(tmp_path, "dense", dense=True)
    convert(dense, tmp_path / "mx", to="mxfp4", scale_rule="mse")
    convert(dense, tmp_path / "model.gguf", to="gguf", scale_rule="mse")
    convert(tmp_path / "model.gguf", tmp_path / "back", to="mxfp4")
    assert same_tensors(all_tensors(tmp_path / "mx"), all_tensors(tmp_path / "back"))


def test_original_inside_an_hf_repo_to_gguf(hf, ours, tmp_path):
    # openai ships original/ beside the HF files; its tokenizer is the repo's.
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (repo / name).write_bytes((hf / name).read_bytes())
    convert(hf, repo / "original", to="original")
    convert(repo / "original", tmp_path / "o.gguf", to="gguf")
    assert tensors(tmp_path / "o.gguf") == tensors(ours)


def test_bare_original_to_gguf_needs_a_tokenizer(hf, tmp_path):
    convert(hf, tmp_path / "original", to="original")
    with pytest.raises(CheckpointError, match="no tokenizer.json; llama.cpp needs the tokenizer"):
        convert(tmp_path / "original", tmp_path / "o.gguf", to="gguf")
    assert not (tmp_path / "o.gguf").exists()


def test_transformers_runs_the_gguf_round_trip(hf, ours, tmp_path):
    import transformers

    transformers.logging.set_verbosity_error()
    convert(ours, tmp_path / "back", to="bf16")
    ids = torch.tensor([[5, 17, 200, 33, 7, 8, 9, 10, 11, 12, 13]])
    with torch.no_grad():
        a = causal_lm(hf, dtype=torch.bfloat16)(ids).logits
        b = causal_lm(tmp_path / "back", dtype=torch.bfloat16)(ids).logits
    assert torch.equal(a, b)


@pytest.mark.parametrize(
    "mangle, message",
    [
        (lambda b: b"XXXX" + b[4:], r"not a GGUF file \(bad magic"),
        (lambda b: b[: len(b) // 3], r"tensor '.*' \(\d+ bytes at offset \d+\) runs past the end of the file"),
    ],
)
def test_broken_gguf_named(ours, tmp_path, mangle, message):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(mangle(ours.read_bytes()))
    with pytest.raises(CheckpointError, match=f"bad.gguf: {message}"):
        open_source(bad)


def test_gguf_refuses_to_overwrite(hf, ours):
    with pytest.raises(CheckpointError, match="already exists"):
        convert(hf, ours, to="gguf")


@pytest.fixture(scope="module")
def llama():
    return pytest.importorskip("llama_cpp", reason="llama-cpp-python is installed by .ci/run")


class TestLlamaCpp:
    """llama.cpp (through llama-cpp-python) loads and runs our GGUF exactly as it runs its own."""

    def logits(self, llama, path, ids):
        model = llama.Llama(model_path=str(path), logits_all=True, n_ctx=64, n_threads=2, verbose=False)
        model.eval(ids)
        return np.array(model.scores[: len(ids)])

    def test_same_logits_as_llama_cpp_converter_output(self, llama, ours, reference):
        ids = [5, 17, 200, 33, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 40, 41, 42, 43, 44, 45]
        a, b = self.logits(llama, ours, ids), self.logits(llama, reference, ids)
        assert np.abs(a).mean() > 0.1 and np.array_equal(a, b)

    def test_agrees_with_transformers_statistically(self, llama, hf, ours):
        import transformers

        transformers.logging.set_verbosity_error()
        ids = [5, 17, 200, 33, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 40, 41, 42, 43, 44, 45]
        ours_logits = self.logits(llama, ours, ids)
        with torch.no_grad():
            theirs = causal_lm(hf, dtype=torch.float32)(torch.tensor([ids])).logits[0].numpy()
        # llama.cpp's CPU MXFP4 path rounds activations to 8 bits and ignores YaRN's truncate=false:
        # compare the distributions, not the bits.
        corr = np.corrcoef(ours_logits.ravel(), theirs.ravel())[0, 1]
        top1 = (ours_logits.argmax(-1) == theirs.argmax(-1)).mean()
        assert corr > 0.98 and top1 >= 0.8, (corr, top1)

    def test_agrees_with_transformers_tightly_on_f32_weights_with_truncate(self, llama, tmp_path):
        # With the non-expert weights in F32 and YaRN's truncate on (llama.cpp always truncates), only
        # llama.cpp's 8-bit activations in the MXFP4 expert matmuls separate the two: measured 0.010
        # largest logit difference on this model (0.064% of the largest logit).
        import transformers

        from mxfp4.testing import synthetic

        transformers.logging.set_verbosity_error()
        config = synthetic.hf_config()
        config["rope_scaling"]["truncate"] = True
        hf = synthetic.write_checkpoint(tmp_path / "f32", config, float32=True)
        gguf_path = convert(hf, tmp_path / "f32.gguf", to="gguf").output
        assert {t.tensor_type.name for t in GGUFReader(gguf_path).tensors} == {"F32", "MXFP4"}
        ids = [5, 17, 200, 33, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 40, 41, 42, 43, 44, 45]
        ours_logits = self.logits(llama, gguf_path, ids)
        with torch.no_grad():
            theirs = causal_lm(hf, dtype=torch.float32)(torch.tensor([ids])).logits[0].numpy()
        assert np.abs(ours_logits - theirs).max() < 0.03
        assert (ours_logits.argmax(-1) == theirs.argmax(-1)).all()


def test_gguf_source_streams_rows_with_the_same_bytes(ours, tmp_path, monkeypatch):
    import mxfp4.convert.row_chunks as row_chunks

    convert(ours, tmp_path / "whole", to="bf16")
    monkeypatch.setattr(row_chunks, "ROW_CHUNK_BYTES", 1000)  # embedding and lm_head now stream in chunks
    convert(ours, tmp_path / "chunked", to="bf16")
    assert same_tensors(all_tensors(tmp_path / "whole"), all_tensors(tmp_path / "chunked"))


def test_metadata_claiming_more_layers_than_the_file_holds(ours, tmp_path):
    # Found by fuzzing: metadata is checked against the tensor table before any per-layer table is built.
    import struct

    data = bytearray(ours.read_bytes())
    key = b"gpt-oss.block_count"
    at = data.index(key) + len(key) + 4  # after the key and its u32 value type
    struct.pack_into("<I", data, at, 5)
    (tmp_path / "more.gguf").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="describes 5 layers .* but the file holds 79"):
        open_source(tmp_path / "more.gguf")


def test_inspect_counts_the_formats_and_bytes_the_gguf_stores(ours):
    # llama.cpp keeps norms, biases and sinks in F32: the summary reports those, not the bf16 they read as.
    from mxfp4.convert.summary import summarize

    source, rows = summarize(ours)
    assert sum(r.nbytes for r in rows) == sum(int(t.n_bytes) for t in GGUFReader(ours).tensors)
    forms = {r.tensor: r.form for r in rows}
    assert forms["input_layernorm.weight"] == "F32" and forms["mlp.experts.down_proj"] == "MXFP4"
