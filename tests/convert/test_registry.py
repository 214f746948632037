"""The table of formats (mxfp4.convert.registry): every target has exactly one writer, and each kind of checkpoint
is claimed by its own format's detector, the specific ones before HF's catch-all."""

import pytest

from mxfp4.choices import TARGETS
from mxfp4.convert import FORMATS, convert, open_source
from mxfp4.convert.registry import WRITERS, writer_for
from mxfp4.errors import CheckpointError, OptionError
from mxfp4.testing.checkpoints import make_checkpoint
from mxfp4.testing.ollama_forms import write_ollama_gguf


def test_every_target_has_one_writer_and_names_are_unique():
    assert set(WRITERS) == set(TARGETS)
    assert len({f.name for f in FORMATS}) == len(FORMATS)
    owners = [target for f in FORMATS for target in f.targets]
    assert sorted(owners) == sorted(TARGETS)
    with pytest.raises(OptionError, match="to='onnx'") as refused:
        writer_for("onnx")
    assert refused.value.parameter == "to"


def test_each_kind_is_opened_by_its_own_format(tmp_path):
    hf = make_checkpoint(tmp_path)
    outputs = {
        "hf-mxfp4": hf,
        "hf-dense": convert(hf, tmp_path / "bf16", to="bf16").output,
        "original": convert(hf, tmp_path / "original", to="original").output,
        "gguf": convert(hf, tmp_path / "m.gguf", to="gguf").output,
        "mlx": convert(hf, tmp_path / "mlx", to="mlx").output,
    }
    write_ollama_gguf(hf, tmp_path / "sha256-0123", form=3)  # a blob: no extension, claimed by its magic and arch
    outputs["ollama"] = tmp_path / "sha256-0123"
    kinds = {name: open_source(path).kind for name, path in outputs.items()}
    assert kinds["hf-mxfp4"] == "hf-mxfp4" and kinds["hf-dense"] == "hf-dense"
    assert kinds["original"] == "original" and kinds["gguf"] == "gguf" and kinds["mlx"].startswith("mlx")
    assert kinds["ollama"].startswith("ollama")
    stray = tmp_path / "notes.txt"
    stray.write_text("not a model")
    with pytest.raises(CheckpointError, match="give the checkpoint directory"):
        open_source(stray)
