"""What trainers write, read back: the installed transformers' own save of a dequantized gpt-oss (bf16, float16,
float32, sharded), and dense experts stored transposed. Each converts to MXFP4 with the source's values and to
a bf16 checkpoint that transformers loads as a plain model."""

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

from mxfp4.cli import main
from mxfp4.convert import convert, open_source
from mxfp4.convert.verify import verify
from mxfp4.errors import CheckpointError
from mxfp4.testing.checkpoints import all_tensors, make_checkpoint

transformers = pytest.importorskip("transformers")
IDS = torch.tensor([[3, 100, 27, 300, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20]])


def _logits(path, dtype=torch.bfloat16, **options):
    from transformers import AutoModelForCausalLM

    transformers.logging.set_verbosity_error()
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **options)
    with torch.no_grad():
        return model(IDS).logits.float()


def _rewritten(src, dst, change):
    """A copy of the single-file checkpoint src with change() applied to its tensors."""
    dst.mkdir()
    for item in src.iterdir():
        if item.suffix != ".safetensors":
            (dst / item.name).write_bytes(item.read_bytes())
    tensors = load_file(src / "model.safetensors")
    change(tensors)
    save_file(tensors, dst / "model.safetensors", metadata={"format": "pt"})
    return dst


@pytest.fixture(scope="module")
def saves(tmp_path_factory):
    """An MXFP4 checkpoint (hidden 64, expert width 96) dequantized by transformers and saved by it."""
    from transformers import AutoModelForCausalLM, Mxfp4Config

    transformers.logging.set_verbosity_error()
    root = tmp_path_factory.mktemp("saves")
    hf = make_checkpoint(root, hidden_size=64, intermediate_size=96)
    for name, dtype, shard in (
        ("bf16", torch.bfloat16, None),
        ("f16", torch.float16, None),
        ("f32", torch.float32, "200KB"),
    ):
        model = AutoModelForCausalLM.from_pretrained(hf, quantization_config=Mxfp4Config(dequantize=True), dtype=dtype)
        model.save_pretrained(root / name, **({"max_shard_size": shard} if shard else {}))
    return root


@pytest.mark.parametrize("name", ["bf16", "f16", "f32"])
def test_a_transformers_save_converts_back_to_the_source_values(saves, tmp_path, name):
    source = open_source(saves / name)
    assert source.kind == "hf-dense" and "[E, in, out]" in source.layout
    convert(saves / name, tmp_path / "mx", to="mxfp4")
    rows = verify(saves / "hf", tmp_path / "mx").tensors
    experts = [t for t in rows if t.name.endswith(("gate_up_proj", "down_proj"))]
    assert len(experts) == 8 and all(t.verdict in ("exact", "equal values") for t in experts)  # MXFP4 values
    for t in rows:
        if name == "f16" and t.verdict == "mismatch":
            # transformers' own cast to float16 rounds bf16 values below float16's normal range to its
            # subnormal grid (step 2**-24): at most half a step away, and only on non-expert tensors.
            assert t not in experts and t.max_abs_diff <= 2.0**-25, t
        else:
            assert t.verdict in ("exact", "equal values"), t


def test_a_transformers_save_becomes_a_plain_bf16_model(saves, tmp_path):
    convert(saves / "bf16", tmp_path / "plain", to="bf16")
    assert torch.equal(_logits(tmp_path / "plain"), _logits(saves / "bf16"))
    result = CliRunner().invoke(main, ["inspect", str(saves / "bf16")])
    assert "experts dense [E, in, out], as transformers saves" in result.output


def test_transposed_dense_experts_are_read_by_their_shapes(saves, tmp_path):
    # The same weights with every expert matrix stored [E, out, in]: the same MXFP4 bytes come out.
    def transpose(tensors):
        for key in [k for k in tensors if k.endswith(("gate_up_proj", "down_proj"))]:
            tensors[key] = tensors[key].transpose(1, 2).contiguous()

    transposed = _rewritten(saves / "bf16", tmp_path / "transposed", transpose)
    assert "[E, out, in]" in open_source(transposed).layout
    convert(saves / "bf16", tmp_path / "a", to="mxfp4")
    convert(transposed, tmp_path / "b", to="mxfp4")
    a, b = all_tensors(tmp_path / "a"), all_tensors(tmp_path / "b")
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_expert_shapes_of_no_known_layout_are_refused(saves, tmp_path):
    def reshape(tensors):
        key = "model.layers.1.mlp.experts.down_proj"
        tensors[key] = tensors[key].reshape(4, 32, 192).contiguous()

    odd = _rewritten(saves / "bf16", tmp_path / "odd", reshape)
    with pytest.raises(CheckpointError, match=r"'model.layers.1.mlp.experts.down_proj' is BF16 \[4, 32, 192\]"):
        open_source(odd)
