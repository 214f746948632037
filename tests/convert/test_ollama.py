"""Ollama's own gpt-oss files (forms 1-3, built from the format facts by mxfp4.testing.ollama_forms) as a source:
byte-lossless to HF, tensor for tensor our GGUF of the same weights, run by llama.cpp; names resolved through
Ollama's store; hostile variants refused."""

import hashlib
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from mxfp4.convert import convert, open_source
from mxfp4.errors import CheckpointError
from mxfp4.storage.gguf_check import validate_gguf
from mxfp4.testing.ollama_forms import write_ollama_gguf

TINY = Path(__file__).resolve().parents[2] / "examples" / "tiny-gpt-oss"
VARIANTS = [(1, False), (1, True), (2, False), (2, True), (3, False), (3, True)]


def safetensors(path: Path) -> dict:
    out = {}
    for file in sorted(path.glob("*.safetensors")):
        data = file.read_bytes()
        (n,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8 : 8 + n])
        header.pop("__metadata__", None)
        for name, entry in header.items():
            a, b = entry["data_offsets"]
            out[name] = (entry["dtype"], entry["shape"], data[8 + n + a : 8 + n + b])
    return out


def gguf_tensors(path: Path) -> list:
    from gguf import GGUFReader

    return [(t.name, t.tensor_type.name, [int(d) for d in t.shape], bytes(t.data)) for t in GGUFReader(path).tensors]


@pytest.fixture(scope="module")
def direct(tmp_path_factory) -> Path:
    """Our GGUF of the HF checkpoint (byte-identical to llama.cpp's converter: tests/convert/test_gguf.py)."""
    out = tmp_path_factory.mktemp("ollama") / "direct.gguf"
    convert(TINY, out, to="gguf")
    return out


@pytest.fixture(scope="module", params=VARIANTS, ids=lambda v: f"form{v[0]}{'-qkv' if v[1] else ''}")
def blob(request, tmp_path_factory) -> Path:
    form, fused_qkv = request.param
    path = tmp_path_factory.mktemp("ollama") / "sha256-blob"  # Ollama's blobs carry no extension
    return write_ollama_gguf(TINY, path, form=form, fused_qkv=fused_qkv)


def test_every_form_is_recognised_by_its_contents(blob):
    source = open_source(blob)
    header = validate_gguf(blob, {4: (32, 17)})
    fused = any(n.endswith("attn_qkv.weight") for n in header.tensors)
    assert source.kind == "ollama" and source.layout.startswith(f"form {source.form} ")
    assert source.fused_qkv == fused and ("attn_qkv" in source.layout) == fused
    assert "tokenizer.ggml.pre = gpt-4o" in source.layout and "expert_feed_forward_length = 64" in source.layout


def test_to_hf_gives_the_source_bytes_back(blob, tmp_path):
    convert(blob, tmp_path / "hf", to="mxfp4")
    assert safetensors(tmp_path / "hf") == safetensors(TINY)


def test_to_gguf_is_tensor_for_tensor_our_gguf_of_the_same_weights(blob, direct, tmp_path):
    convert(blob, tmp_path / "out.gguf", to="gguf")
    assert gguf_tensors(tmp_path / "out.gguf") == gguf_tensors(direct)
    from gguf import GGUFReader

    fields = GGUFReader(tmp_path / "out.gguf").fields
    assert fields["general.architecture"].contents() == "gpt-oss"
    assert fields["tokenizer.ggml.pre"].contents() == "gpt-4o"
    assert fields["gpt-oss.rope.scaling.yarn_beta_fast"].contents() == 32.0
    assert fields["gpt-oss.expert_feed_forward_length"].contents() == 64


def test_llama_cpp_runs_the_result_with_the_logits_of_our_direct_gguf(blob, direct, tmp_path):
    llama = pytest.importorskip("llama_cpp", reason="llama-cpp-python is installed by .ci/run")
    convert(blob, tmp_path / "out.gguf", to="gguf")
    ids = [5, 17, 200, 33, 7, 8, 9, 10, 11, 12, 13, 14]

    def logits(path):
        model = llama.Llama(model_path=str(path), logits_all=True, n_ctx=64, n_threads=2, verbose=False)
        model.eval(ids)
        return np.array(model.scores[: len(ids)])

    ours, want = logits(tmp_path / "out.gguf"), logits(direct)
    assert np.abs(want).mean() > 0.1 and np.array_equal(ours, want)


def test_an_f16_form_keeps_the_experts_bytes_and_the_f16_values(tmp_path):
    """The oldest Ollama wrote 2-D dense tensors as F16 (lossy from bf16: Ollama's loss, not ours): those come
    back as the F16 values, the MXFP4 experts as the released bytes."""
    blob = write_ollama_gguf(TINY, tmp_path / "blob", form=1, dense="F16")
    convert(blob, tmp_path / "hf", to="mxfp4")
    got, want = safetensors(tmp_path / "hf"), safetensors(TINY)
    for name, (dtype, shape, data) in want.items():
        if "experts" in name or len(shape) == 1 or "router" in name:
            assert got[name] == want[name], name
            continue
        assert got[name][0] == "F16"
        source = torch.frombuffer(bytearray(data), dtype=torch.bfloat16)
        assert torch.equal(torch.frombuffer(bytearray(got[name][2]), dtype=torch.float16), source.half()), name


def ollama_store(root: Path, blob: Path, name: str = "gpt-oss", tag: str = "20b", namespace="library") -> Path:
    digest = hashlib.sha256(blob.read_bytes()).hexdigest()
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    target = root / "blobs" / f"sha256-{digest}"
    target.write_bytes(blob.read_bytes())
    manifest = root / "manifests" / "registry.ollama.ai" / namespace / name / tag
    manifest.parent.mkdir(parents=True, exist_ok=True)
    layers = [
        {"mediaType": "application/vnd.ollama.image.template", "digest": "sha256:" + "0" * 64, "size": 1},
        {"mediaType": "application/vnd.ollama.image.model", "digest": f"sha256:{digest}", "size": blob.stat().st_size},
    ]
    manifest.write_text(json.dumps({"schemaVersion": 2, "layers": layers}))
    return manifest


def test_ollama_model_names_resolve_through_the_store(tmp_path, monkeypatch):
    blob = write_ollama_gguf(TINY, tmp_path / "blob", form=2)
    root = tmp_path / "models"
    ollama_store(root, blob)
    ollama_store(root, blob, name="my-tune", tag="latest", namespace="alice")
    monkeypatch.setenv("OLLAMA_MODELS", str(root))
    convert("ollama:gpt-oss:20b", tmp_path / "hf", to="mxfp4")
    assert safetensors(tmp_path / "hf") == safetensors(TINY)
    assert open_source("ollama:alice/my-tune").kind == "ollama"  # the tag defaults to latest
    with pytest.raises(CheckpointError, match=r"no manifest .*\(it holds: alice/my-tune:latest, gpt-oss:20b\)"):
        open_source("ollama:gpt-oss:120b")
    with pytest.raises(CheckpointError, match="not an Ollama model name"):
        open_source("ollama:../../etc:passwd")


def test_a_manifest_naming_a_path_instead_of_a_digest_is_refused(tmp_path, monkeypatch):
    blob = write_ollama_gguf(TINY, tmp_path / "blob", form=2)
    manifest = ollama_store(tmp_path / "models", blob)
    data = json.loads(manifest.read_text())
    data["layers"][1]["digest"] = "sha256:../../../../etc/passwd"
    manifest.write_text(json.dumps(data))
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "models"))
    with pytest.raises(CheckpointError, match="is not sha256:<64 hex digits>"):
        open_source("ollama:gpt-oss:20b")


def _patched_dims(blob: Path, name: str, dims: tuple[int, ...], out: Path) -> Path:
    """A copy of blob whose tensor ``name`` claims other dimensions (ggml order), bytes otherwise unchanged."""
    info = validate_gguf(blob, {4: (32, 17)}).tensors[name]
    data = bytearray(blob.read_bytes())
    start = info.type_field - 8 * len(info.dims)
    struct.pack_into(f"<{len(dims)}Q", data, start, *dims)
    out.write_bytes(bytes(data))
    return out


def test_hostile_variants_are_refused_naming_file_and_tensor(tmp_path):
    blob = write_ollama_gguf(TINY, tmp_path / "blob", form=1)
    name = "blk.0.ffn_gate_up_exps.weight"
    odd = _patched_dims(blob, name, (64, 127, 4), tmp_path / "odd")  # an odd row count: no gate/up pairs
    with pytest.raises(CheckpointError, match=r"odd: tensor 'blk.0.ffn_gate_up_exps.weight' is type 4 \[4, 127, 64\]"):
        open_source(odd)
    short = _patched_dims(blob, name, (48, 128, 4), tmp_path / "block")  # rows of 48: not whole blocks of 32
    with pytest.raises(CheckpointError, match="block: .*ffn_gate_up_exps.weight.*not a multiple of type 4's block"):
        open_source(short)
    missing = write_ollama_gguf(TINY, tmp_path / "keys", form=2, drop_keys=("gptoss.block_count",))
    with pytest.raises(CheckpointError, match="keys: GGUF metadata key 'gptoss.block_count' is missing"):
        open_source(missing)


def test_the_cli_converts_an_ollama_name_and_inspect_says_what_was_filled(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from mxfp4.cli import main

    blob = write_ollama_gguf(TINY, tmp_path / "blob", form=1)
    ollama_store(tmp_path / "models", blob)
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "models"))
    shown = CliRunner().invoke(main, ["inspect", "ollama:gpt-oss:20b"])
    assert shown.exit_code == 0, shown.output
    assert "(ollama)" in shown.output and "form 1" in shown.output and "tokenizer.ggml.pre = gpt-4o" in shown.output
    done = CliRunner().invoke(main, ["convert", "ollama:gpt-oss:20b", str(tmp_path / "out.gguf"), "--to", "gguf"])
    assert done.exit_code == 0, done.output
    assert "ollama -> gguf" in done.output
    again = CliRunner().invoke(main, ["convert", "ollama:gpt-oss:20b", str(tmp_path / "out.gguf"), "--to", "gguf"])
    assert again.exit_code != 0 and "already exists" in again.output
