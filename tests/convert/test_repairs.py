"""Known broken saves (mxfp4.testing.broken_saves rebuilds each from a healthy checkpoint with its tool's exact
on-disk symptoms): every reader repairs them on the fly to what a correct save holds, with one warning per kind;
--strict refuses them; `mxfp4 doctor` names them (exit 1), and a healthy checkpoint (exit 0)."""

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file, save_file
from transformers_cpu import causal_lm

from mxfp4.cli import main
from mxfp4.convert import convert, open_source
from mxfp4.convert.doctor import diagnose
from mxfp4.convert.registry import open_unreported
from mxfp4.errors import CheckpointError, RepairWarning
from mxfp4.storage.safetensors_io import read_header
from mxfp4.testing import broken_saves
from mxfp4.testing.checkpoints import all_tensors, make_checkpoint, same_tensors


@pytest.fixture(scope="module")
def saves(tmp_path_factory):
    root = tmp_path_factory.mktemp("saves")
    hf = make_checkpoint(root, shard=30_000)
    dense = make_checkpoint(root, "dense", dense=True)
    dequantized = convert(hf, root / "dequantized", to="bf16").output  # on the MXFP4 grid, as a dequantized save
    return {
        "healthy": hf,
        "dense": dense,
        "dequantized": dequantized,
        1: broken_saves.transformers_5_23_dequantized_save(dequantized, root / "form1"),
        2: broken_saves.transformers_5_4_resave(hf, root / "form2"),
        3: broken_saves.unsloth_merged_16bit(dequantized, root / "form3"),
        4: broken_saves.megatron_bridge_export(dequantized, root / "form4"),
        5: broken_saves.linearized_experts(dequantized, root / "form5"),
        7: broken_saves.ghost_index(hf, root / "form7"),
    }


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_the_fixtures_have_the_symptoms(saves):
    form1 = load_file(str(saves[1] / "model.safetensors"))
    blocks = form1["model.layers.0.mlp.experts.gate_up_proj_blocks"]
    assert blocks.dtype == torch.bfloat16 and blocks.dim() == 3  # dense [E, H, 2I] under the packed name
    assert not any(name.endswith("_scales") for name in form1)
    config = json.loads((saves[1] / "config.json").read_text())
    assert "rope_parameters" in config and "rope_scaling" not in config and "quantization_config" not in config
    form2 = load_file(str(saves[2] / "model.safetensors"))
    assert form2["model.layers.0.mlp.experts.down_proj_blocks_blocks"].dim() == 4
    assert form2["model.layers.0.mlp.experts.down_proj_blocks_scales"].dim() == 3
    assert "quantization_config" in json.loads((saves[2] / "config.json").read_text())


BROKEN = [  # form, the healthy save it was made from, the anomalies it shows, the expert_layout it needs
    (1, "dequantized", {"dense-under-packed-names"}, None),
    (2, "healthy", {"doubled-packed-suffix"}, None),
    (3, "dequantized", {"experts-transposed"}, None),
    (4, "dequantized", {"down-proj-transposed-alone"}, None),
    (5, "dequantized", {"gate-up-halves"}, "gate-up-halves"),
    (7, "healthy", {"index-names-absent-tensor", "tensor-missing-from-index"}, None),
]


@pytest.mark.parametrize("form, healthy, kinds, layout", BROKEN)
def test_a_broken_save_converts_to_what_the_healthy_one_gives(saves, tmp_path, form, healthy, kinds, layout):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        convert(saves[form], tmp_path / "repaired", to="mxfp4", expert_layout=layout)
        convert(saves[form], tmp_path / "repaired-dense", to="bf16", expert_layout=layout)
    repairs = [w for w in caught if issubclass(w.category, RepairWarning)]
    assert len(repairs) == 2 * len(kinds)  # one per kind and conversion
    convert(saves[healthy], tmp_path / "healthy", to="mxfp4")
    assert same_tensors(all_tensors(tmp_path / "repaired"), all_tensors(tmp_path / "healthy"))  # the same bytes
    convert(saves[healthy], tmp_path / "healthy-dense", to="bf16")  # and the same values, dense
    assert same_tensors(all_tensors(tmp_path / "repaired-dense"), all_tensors(tmp_path / "healthy-dense"))
    with pytest.raises(CheckpointError, match="strict reading refuses it"):
        convert(saves[form], tmp_path / "refused", to="mxfp4", strict=True, expert_layout=layout)
    assert not (tmp_path / "refused").exists()
    assert {a.kind for a in open_unreported(saves[form], expert_layout=layout).anomalies} == kinds


def transformers_logits(directory):
    """transformers' logits of an HF directory on a fixed prompt (float32)."""
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()
    model = causal_lm(directory, dtype=torch.float32)
    with torch.no_grad():
        return model(torch.tensor([[3, 100, 27, 300, 5, 6, 7, 8, 9, 10, 11, 12]])).logits


@pytest.mark.parametrize("form, layout", [(form, layout) for form, _, _, layout in BROKEN])
def test_transformers_loads_a_repaired_save_with_the_healthy_logits(saves, tmp_path, form, layout):
    logits = {}
    for name, src in (("repaired", saves[form]), ("healthy", saves["dequantized"])):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RepairWarning)
            convert(src, tmp_path / name, to="bf16", expert_layout=layout if name == "repaired" else None)
        logits[name] = transformers_logits(tmp_path / name)
    assert torch.equal(logits["repaired"], logits["healthy"])


TRANSFORMERS_5_23 = Path(__file__).resolve().parents[2] / ".cache" / "transformers-5.23"


def test_transformers_5_23_writes_form_1_for_real_and_it_reads_as_the_healthy_model(saves, tmp_path):
    if not (TRANSFORMERS_5_23 / "transformers").is_dir():
        pytest.skip("transformers 5.23.0 is not in .cache/transformers-5.23 (scripts/setup-and-test.sh installs it)")
    saved = tmp_path / "saved"
    tool = Path(__file__).resolve().parents[1] / "tools" / "save_dequantized.py"
    env = {**os.environ, "PYTHONPATH": str(TRANSFORMERS_5_23)}
    command = [sys.executable, str(tool), str(saves["healthy"]), str(saved), "5.23.0"]
    subprocess.run(command, env=env, check=True, capture_output=True, timeout=600)
    # the symptoms the issue names: dense BF16 under the packed names, no scales, rope_parameters only
    header = {e.name: e for e in read_header(saved / "model.safetensors")[0]}
    blocks = header["model.layers.0.mlp.experts.gate_up_proj_blocks"]
    assert blocks.dtype == "BF16" and len(blocks.shape) == 3
    assert not [name for name in header if name.endswith("_scales")]
    config = json.loads((saved / "config.json").read_text())
    assert "rope_parameters" in config and "rope_scaling" not in config and "quantization_config" not in config
    assert "dense-under-packed-names" in {a.kind for a in diagnose(saved).anomalies}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RepairWarning)
        for to in ("mxfp4", "bf16"):  # the bytes (packed) and values (dense) of the healthy dequantized model
            convert(saved, tmp_path / f"repaired-{to}", to=to)
            convert(saves["dequantized"], tmp_path / f"healthy-{to}", to=to)
            assert same_tensors(all_tensors(tmp_path / f"repaired-{to}"), all_tensors(tmp_path / f"healthy-{to}"))


def test_linearized_experts_are_refused_until_the_split_is_said_and_doctor_base_tells_it(saves, tmp_path):
    # llm-compressor's generic linearizer (halves) and its gpt-oss one (even / odd) write the same names, shapes and
    # dtypes, and the values cannot show a row order: refused, naming the tensor and the option.
    even_odd = broken_saves.linearized_experts(saves["dequantized"], tmp_path / "even-odd", split="gate-up-even-odd")
    for form in (saves[5], even_odd):
        found = diagnose(form).anomalies
        assert [(a.kind, a.form, a.refused) for a in found] == [("gate-up-split-undecided", 5, True)]
        result = run("convert", form, tmp_path / "out", "--to", "mxfp4")
        assert result.exit_code == 1 and "(option --expert-layout)" in result.output
        assert "'model.layers.0.mlp.experts.0.gate_proj.weight'" in result.output and "gate-up-halves" in result.output
        assert not (tmp_path / "out").exists()
    assert "the file holds 'gate-up-halves'" in run("doctor", saves[5], "--base", saves["healthy"]).output
    assert "the file holds 'gate-up-even-odd'" in run("doctor", even_odd, "--base", saves["healthy"]).output
    # the gpt-oss split read as said is the healthy model, with nothing to repair
    assert not open_source(even_odd, expert_layout="gate-up-even-odd").anomalies
    convert(even_odd, tmp_path / "read", to="bf16", expert_layout="gate-up-even-odd")
    convert(saves["dequantized"], tmp_path / "healthy", to="bf16")
    assert same_tensors(all_tensors(tmp_path / "read"), all_tensors(tmp_path / "healthy"))
    # a layout of the other kind is an error naming the option
    with pytest.raises(CheckpointError, match="describes fused experts") as wrong:
        open_source(saves[5], expert_layout="in-out")
    assert wrong.value.parameter == "expert_layout"
    with pytest.raises(CheckpointError, match="describes per-expert linear modules"):
        open_source(saves[4], expert_layout="gate-up-halves")


@pytest.mark.parametrize("experts", ["packed", "dense"])
def test_config_drift_is_repaired_to_the_healthy_config(tmp_path, experts):
    # a healthy model with gpt-oss's own values for the keys a drifted config drops (readers fill those in); not
    # square, so a dense one re-saved without mxfp4's header record still shows its experts' orientation
    shape = {"hidden_size": 64, "intermediate_size": 96}
    healthy = make_checkpoint(tmp_path, "healthy", sliding_window=128, dense=experts == "dense", **shape)
    broken = broken_saves.config_drift(healthy, tmp_path / "form8")
    config = json.loads((broken / "config.json").read_text())
    assert not {"layer_types", "sliding_window", "swiglu_limit"} & set(config)
    assert ("quantization_config" in config) == (experts == "dense")  # the opposite of what the tensors are
    found = run("doctor", broken, "--json")
    assert found.exit_code == 1
    kinds = {(a["kind"], a["form"], a["repaired"]) for a in json.loads(found.stdout)["anomalies"]}
    assert kinds == {("config-key-missing", 8, True), ("quantization-config-mismatch", 8, True)}
    assert run("doctor", healthy).exit_code == 0
    logits = {}
    for name, src in (("repaired", broken), ("healthy", healthy)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RepairWarning)
            convert(src, tmp_path / f"{name}-mxfp4", to="mxfp4")
            convert(src, tmp_path / f"{name}-bf16", to="bf16")
        logits[name] = transformers_logits(tmp_path / f"{name}-bf16")
    for to in ("mxfp4", "bf16"):  # the same tensors and the same, complete config
        assert same_tensors(all_tensors(tmp_path / f"repaired-{to}"), all_tensors(tmp_path / f"healthy-{to}"))
        read = [json.loads((tmp_path / f"{name}-{to}" / "config.json").read_text()) for name in ("repaired", "healthy")]
        assert read[0] == read[1]
    assert torch.equal(logits["repaired"], logits["healthy"])
    with pytest.raises(CheckpointError, match="strict reading refuses it"):
        convert(broken, tmp_path / "refused", to="mxfp4", strict=True)


def test_the_command_warns_once_per_kind_and_strict_refuses(saves, tmp_path):
    result = run("convert", saves[2], tmp_path / "out", "--to", "gguf", "--quiet")
    assert result.exit_code == 0, result.output
    warned = [line for line in result.output.splitlines() if line.startswith("warning: ")]
    assert len(warned) == 1 and "_proj_blocks_blocks" in warned[0] and "p-e-w/heretic#211" in warned[0]
    refused = run("convert", saves[2], tmp_path / "strict", "--to", "gguf", "--strict")
    assert refused.exit_code == 1 and "strict reading refuses it" in refused.output and "--strict" in refused.output
    assert "anomaly: " in run("inspect", saves[2]).output


def test_doctor_names_each_form_and_passes_a_healthy_checkpoint(saves):
    healthy = run("doctor", saves["healthy"])
    assert healthy.exit_code == 0 and "healthy" in healthy.output
    for form in (1, 2, 3, 4, 5, 7):
        result = run("doctor", saves[form], "--json")
        assert result.exit_code == 1, result.output
        report = json.loads(result.stdout)
        assert report["healthy"] is False and form in {a["form"] for a in report["anomalies"]}
        assert all(a["repaired"] or a["refused"] for a in report["anomalies"])
    assert run("doctor", saves["healthy"].parent / "no-such-model").exit_code == 2


def test_doctor_finds_expert_deltas_a_merge_dropped(saves, tmp_path):
    merged = convert(saves["healthy"], tmp_path / "merged", to="bf16").output  # experts: the base's values
    shard = merged / "model.safetensors"
    tensors = load_file(str(shard))
    tensors["model.layers.1.self_attn.q_proj.weight"] += 0.01  # the attention LoRA survived the merge
    save_file(tensors, str(shard), metadata={"format": "pt"})
    assert diagnose(merged).healthy  # alone, nothing shows
    result = run("doctor", merged, "--base", saves["healthy"], "--json")
    assert result.exit_code == 1
    (anomaly,) = json.loads(result.stdout)["anomalies"]
    assert anomaly["kind"] == "expert-deltas-dropped" and anomaly["form"] == 9 and anomaly["repaired"] is False
    assert "q_proj" in anomaly["detail"]
    assert run("doctor", saves["healthy"], "--base", saves["healthy"]).exit_code == 0  # nothing changed at all


def test_a_needed_tensor_missing_stays_an_error(saves, tmp_path):
    broken = broken_saves.ghost_index(saves["healthy"], tmp_path / "ghost")
    tensors = load_file(str(broken / "model.safetensors"))
    del tensors["model.layers.0.self_attn.sinks"]
    save_file(tensors, str(broken / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="'model.layers.0.self_attn.sinks' is missing"):
        open_source(broken)


def test_a_square_down_proj_nothing_places_is_refused_and_doctor_base_tells_it(saves, tmp_path):
    # Off-grid values (Gaussian, as a from-scratch model holds): a lone transposed square down_proj cannot be told
    # from a healthy one by shape or content. Readers refuse it, naming the tensor and the option that decides.
    broken = broken_saves.megatron_bridge_export(saves["dense"], tmp_path / "form4-off-grid")
    found = diagnose(broken).anomalies
    assert [(a.kind, a.refused) for a in found] == [("orientation-undecided", True)]
    assert "'model.layers.0.mlp.experts.down_proj' is square" in found[0].detail
    for strict in (False, True):
        with pytest.raises(CheckpointError, match="down_proj' is square .* --expert-layout in-out") as refused:
            convert(broken, tmp_path / "refused", to="mxfp4", strict=strict)
        assert refused.value.parameter == "expert_layout"
    result = run("convert", broken, tmp_path / "out", "--to", "mxfp4", "--quiet")
    assert result.exit_code == 1 and "(option --expert-layout)" in result.output and "down_proj" in result.output
    assert not (tmp_path / "out").exists() and not (tmp_path / "refused").exists()
    # inspect and doctor still describe it; doctor with the base says which way it is stored
    assert "anomaly: " in run("inspect", broken).output
    told = run("doctor", broken, "--base", saves["dense"], "--json")
    assert told.exit_code == 1 and "holds 'out-in': --expert-layout out-in" in told.output
    # the same healthy model as transformers saves it (no record of the layout): refused too, and doctor --base
    # says it is stored as transformers' [E, in, out]
    unrecorded = broken_saves.resaved_without_metadata(saves["dense"], tmp_path / "unrecorded")
    with pytest.raises(CheckpointError, match="is square and its values lie on no MXFP4 grid"):
        open_source(unrecorded)
    assert "holds 'in-out': --expert-layout in-out" in run("doctor", unrecorded, "--base", saves["dense"]).output


def test_the_writers_record_of_its_layout_reads_a_square_expert_and_content_overrules_it(saves, tmp_path):
    from mxfp4.gpt_oss.tensors import EXPERT_LAYOUT_KEY
    from mxfp4.storage.safetensors_io import read_header

    # what mxfp4 writes dense says how (the bundled trained model's header says it too)
    written = convert(saves["healthy"], tmp_path / "dense", to="bf16").output
    assert read_header(written / "model.safetensors")[1][EXPERT_LAYOUT_KEY] == "in-out"
    assert not diagnose(saves["dense"]).anomalies  # off the grid, square, read by the record
    # a record the content contradicts (values on the grid the other way) is an error naming the tensor
    lying = broken_saves.megatron_bridge_export(saves["dequantized"], tmp_path / "lying")
    rewrite = load_file(str(lying / "model.safetensors"))
    save_file(rewrite, str(lying / "model.safetensors"), metadata={"format": "pt", EXPERT_LAYOUT_KEY: "in-out"})
    with pytest.raises(CheckpointError, match="down_proj' lies on the MXFP4 grid as 'out-in', not as its header's"):
        open_source(lying)


def test_expert_layout_says_what_the_content_cannot_and_is_checked_where_it_can(saves, tmp_path):
    broken = broken_saves.megatron_bridge_export(saves["dense"], tmp_path / "form4-off-grid")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        convert(broken, tmp_path / "told", to="bf16", dtype="float32", expert_layout="out-in")
    said = [str(w.message) for w in caught if issubclass(w.category, RepairWarning)]
    assert len(said) == 1 and "Megatron-Bridge" in said[0]  # the form is still named; nothing is undecided
    convert(saves["dense"], tmp_path / "healthy", to="bf16", dtype="float32")
    assert same_tensors(all_tensors(tmp_path / "told"), all_tensors(tmp_path / "healthy"))
    with pytest.raises(CheckpointError, match="lies on the MXFP4 grid as 'out-in', not as expert_layout='in-out'"):
        open_source(saves[4], expert_layout="in-out")
    result = run("convert", saves[4], tmp_path / "wrong", "--to", "mxfp4", "--expert-layout", "in-out")
    assert result.exit_code == 1 and "(option --expert-layout)" in result.output


def test_a_broken_base_is_repaired_or_refused_by_merge_lora(saves, tmp_path):
    from pathlib import Path

    adapter = Path(__file__).resolve().parents[2] / "examples" / "tiny-gpt-oss-trained" / "lora-docs"
    base = broken_saves.transformers_5_4_resave(adapter.parent / "mxfp4", tmp_path / "base")
    refused = run("merge-lora", base, adapter, tmp_path / "refused", "--to", "mxfp4", "--strict", "--quiet")
    assert refused.exit_code == 1 and "(option --strict)" in refused.output and not (tmp_path / "refused").exists()
    repaired = run("merge-lora", base, adapter, tmp_path / "repaired", "--to", "mxfp4", "--quiet")
    healthy = run("merge-lora", adapter.parent / "mxfp4", adapter, tmp_path / "healthy", "--to", "mxfp4", "--quiet")
    assert repaired.exit_code == 0 and healthy.exit_code == 0 and "warning: " in repaired.output
    assert same_tensors(all_tensors(tmp_path / "repaired"), all_tensors(tmp_path / "healthy"))


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32"])
@pytest.mark.parametrize("reading", ["codes", "powers"])
def test_float_scales_are_read_back_to_their_bytes(saves, tmp_path, dtype, reading):
    broken = broken_saves.float_scales(saves["healthy"], tmp_path / "form6", dtype, reading)
    scales = load_file(str(broken / "model.safetensors"))["model.layers.0.mlp.experts.down_proj_scales"]
    assert scales.dtype == getattr(torch, dtype)  # the symptom
    codes = torch.cat([t.flatten() for n, t in all_tensors(saves["healthy"]).items() if n.endswith("_scales")])
    if reading == "powers" and dtype == "float16" and int(codes.min()) < 127 - 24:
        # float16 flushes 2**-25 and below to zero: those bytes are gone, and the reader says so
        with pytest.raises(CheckpointError, match="_scales'"):
            convert(broken, tmp_path / "out", to="mxfp4")
        return
    anomalies = diagnose(broken).anomalies
    assert len(anomalies) == 8  # one per scales tensor: 4 layers, gate_up and down
    assert all(a.kind == "float-scales" and a.form == 6 and a.repaired for a in anomalies)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        convert(broken, tmp_path / "repaired", to="mxfp4")
    assert len([w for w in caught if issubclass(w.category, RepairWarning)]) == 1
    assert same_tensors(all_tensors(tmp_path / "repaired"), all_tensors(saves["healthy"]))  # the healthy bytes
    from gguf import GGUFReader

    def gguf_tensors(path):
        return {t.name: bytes(t.data) for t in GGUFReader(path).tensors}

    convert(broken, tmp_path / "gguf.gguf", to="gguf")  # the byte-moving path reads the same bytes
    convert(saves["healthy"], tmp_path / "healthy.gguf", to="gguf")
    assert gguf_tensors(tmp_path / "gguf.gguf") == gguf_tensors(tmp_path / "healthy.gguf")
    with pytest.raises(CheckpointError, match="strict reading refuses it"):
        convert(broken, tmp_path / "refused", to="mxfp4", strict=True)


def test_float_scales_that_could_be_either_reading_are_refused(saves, tmp_path):
    broken = broken_saves.float_scales(saves["healthy"], tmp_path / "form6", "float32", "codes")
    shard = broken / "model.safetensors"
    tensors = load_file(str(shard))
    name = "model.layers.2.mlp.experts.gate_up_proj_scales"
    tensors[name] = torch.full_like(tensors[name], 64.0)  # byte 64, or 2**6 (byte 133)?
    save_file(tensors, str(shard), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=f"'{name}' holds F32 scales that are neither"):
        open_source(broken)
    assert run("doctor", broken).exit_code == 2


def test_verify_eval_and_model_load_repair_or_refuse_under_strict(saves, tmp_path):
    import numpy as np

    import mxfp4

    assert run("verify", saves[2], saves["healthy"]).exit_code == 0  # repaired: every tensor the healthy one's
    refused = run("verify", saves[2], saves["healthy"], "--strict")
    assert refused.exit_code == 2 and "strict reading refuses it" in refused.output
    np.save(tmp_path / "ids.npy", np.arange(40) % 300)
    assert run("eval", "ppl", saves[2], "--tokens", tmp_path / "ids.npy", "--context", "8").exit_code == 0
    refused = run("eval", "ppl", saves[2], "--tokens", tmp_path / "ids.npy", "--context", "8", "--strict")
    assert refused.exit_code == 2 and "(option --strict)" in refused.output
    with pytest.raises(CheckpointError, match="strict reading refuses it"):
        mxfp4.model.load(saves[2], strict=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mxfp4.model.load(saves[2])
    assert [w for w in caught if issubclass(w.category, RepairWarning)]


def test_verify_eval_and_model_load_refuse_what_nothing_decides_until_expert_layout_says(saves, tmp_path):
    import numpy as np

    import mxfp4

    undecided = broken_saves.megatron_bridge_export(saves["dense"], tmp_path / "undecided")
    np.save(tmp_path / "ids.npy", np.arange(40) % 300)
    ppl = ("eval", "ppl", undecided, "--tokens", tmp_path / "ids.npy", "--context", "8")
    for command in (("verify", undecided, saves["dense"]), ppl):
        refused = run(*command)
        assert refused.exit_code == 2 and "(option --expert-layout)" in refused.output, refused.output
        told = run(*command, "--expert-layout", "out-in")
        assert told.exit_code == 0, told.output
    compare = ("eval", "compare", saves["dense"], undecided, "--tokens", tmp_path / "ids.npy", "--context", "8")
    assert run(*compare).exit_code == 2
    told = run(*compare, "--expert-layout", "out-in", "--json")  # given to the checkpoint that needs it: the same model
    assert told.exit_code == 0 and json.loads(told.stdout)["kl_mean"] == 0, told.output
    quantized = convert(saves["dense"], tmp_path / "quantized", to="mxfp4").output
    assert run("eval", "report", undecided, quantized).exit_code == 2
    reported = [
        run("eval", "report", src, quantized, "--expert-layout", "out-in", "--json")
        for src in (undecided, saves["dense"])
    ]
    assert reported[0].exit_code == 0 and reported[0].stdout == reported[1].stdout
    with pytest.raises(CheckpointError, match="down_proj' is square"):
        mxfp4.model.load(undecided)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RepairWarning)
        told = mxfp4.model.load(undecided, expert_layout="out-in")
    healthy = mxfp4.model.load(saves["dense"])
    ids = torch.arange(12)[None] % 300
    with torch.no_grad():
        assert torch.equal(told(ids), healthy(ids))


def test_merge_lora_takes_the_expert_layout_of_a_base_the_content_cannot_place(tmp_path):
    from pathlib import Path

    trained = Path(__file__).resolve().parents[2] / "examples" / "tiny-gpt-oss-trained"
    base = broken_saves.megatron_bridge_export(trained / "bf16", tmp_path / "base")  # trained: off the grid
    assert {a.kind for a in diagnose(base).anomalies} == {"orientation-undecided"}
    adapter = trained / "lora-docs"
    told = run("merge-lora", base, adapter, tmp_path / "told", "--to", "bf16", "--expert-layout", "out-in", "--quiet")
    healthy = run("merge-lora", trained / "bf16", adapter, tmp_path / "healthy", "--to", "bf16", "--quiet")
    assert told.exit_code == 0 and healthy.exit_code == 0, told.output + healthy.output
    assert same_tensors(all_tensors(tmp_path / "told"), all_tensors(tmp_path / "healthy"))
    unsaid = run("merge-lora", base, adapter, tmp_path / "unsaid", "--to", "bf16", "--quiet")
    assert unsaid.exit_code == 1 and "(option --expert-layout)" in unsaid.output
