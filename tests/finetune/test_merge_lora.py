"""merge-lora against PEFT itself: PEFT makes the adapters on generated checkpoints, and its own
merge_and_unload() on the dequantized base is the oracle for values, logits and bytes."""

import json
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file, save_file
from transformers_cpu import causal_lm

import mxfp4
from mxfp4.cli import main
from mxfp4.convert import convert
from mxfp4.errors import AdapterError, CheckpointError
from mxfp4.finetune import merge_lora
from mxfp4.testing.checkpoints import all_tensors, make_checkpoint

IDS = torch.tensor([[3, 100, 27, 300, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20]])  # > 2 windows
ADAPTERS = {
    "attention": dict(target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]),
    "experts": dict(target_modules=[], target_parameters=["mlp.experts.gate_up_proj", "mlp.experts.down_proj"]),
    "both": dict(
        target_modules=["q_proj", "v_proj"], target_parameters=["mlp.experts.gate_up_proj", "mlp.experts.down_proj"]
    ),
    "rslora": dict(
        target_modules=["o_proj"], target_parameters=["mlp.experts.down_proj"], use_rslora=True, r=8, lora_alpha=16
    ),
    "router_lm_head": dict(target_modules=["lm_head"], target_parameters=["mlp.router.weight"]),
    "rank_pattern": dict(
        target_modules=["q_proj", "k_proj"],
        target_parameters=["mlp.experts.gate_up_proj", "mlp.experts.down_proj"],
        rank_pattern={"q_proj": 2, "down_proj": 8},
        alpha_pattern={"k_proj": 3},
    ),
}


def _load(path):
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()

    return causal_lm(path, dtype=torch.float32)


def _make_adapter(bf16, out, seed: int, **options):
    """A PEFT adapter with non-zero A and B, saved; returns PEFT's own merged model (float32)."""
    peft = pytest.importorskip("peft", reason="peft is in the dev extra")

    torch.manual_seed(seed)
    settings = {"r": 4, "lora_alpha": 8, "init_lora_weights": False, **options}
    model = peft.get_peft_model(_load(bf16), peft.LoraConfig(**settings))
    model.save_pretrained(out)
    return model.merge_and_unload()


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """An MXFP4 base (hidden 64, expert width 96: no square expert matrix) and its dequantized bf16 form."""
    root = tmp_path_factory.mktemp("lora")
    hf = make_checkpoint(root, hidden_size=64, intermediate_size=96)
    convert(hf, root / "bf16", to="bf16")
    return root


@pytest.fixture(scope="module")
def adapters(base):
    merged = {}
    for seed, (name, options) in enumerate(ADAPTERS.items()):
        merged[name] = _make_adapter(base / "bf16", base / f"adapter-{name}", seed, **options)
    return merged


@pytest.mark.parametrize("name", list(ADAPTERS))
def test_bf16_merge_gives_pefts_logits(base, adapters, tmp_path, name):
    result = merge_lora(base / "hf", base / f"adapter-{name}", tmp_path / "out", to="bf16", dtype="float32")
    assert result.survival and all(abs(s.kept - 1) < 1e-3 for s in result.survival)  # float32 keeps the delta
    with torch.no_grad():
        want = adapters[name](IDS).logits
        got = _load(tmp_path / "out")(IDS).logits
    assert want.abs().max() > 0.1
    assert (got - want).abs().max() <= 1e-5
    assert torch.equal(got.argmax(-1), want.argmax(-1))


@pytest.mark.parametrize("name", ["experts", "both", "rank_pattern"])
@pytest.mark.parametrize("rule", ["round_up", "mse"])
def test_mxfp4_merge_bytes(base, adapters, tmp_path, name, rule):
    # Untouched tensors are the base's bytes; merged experts are the codec's quantization of PEFT's merged
    # weights under the same rule; merged linears are PEFT's merged weights cast once to bf16.
    merge_lora(base / "hf", base / f"adapter-{name}", tmp_path / "out", to="mxfp4", scale_rule=rule)
    source, ours = all_tensors(base / "hf"), all_tensors(tmp_path / "out")
    peft_merged = adapters[name].state_dict()
    merged_names = {n for n in ours if n.removesuffix("_blocks").removesuffix("_scales") in _touched(name)}
    assert set(ours) == set(source)
    for key in sorted(set(ours) - merged_names):
        assert torch.equal(ours[key], source[key]), key
    for key in sorted(merged_names):
        weight = key.removesuffix("_blocks").removesuffix("_scales")
        if weight == key:  # a merged linear, kept in bf16
            assert torch.equal(ours[key], peft_merged[key].bfloat16()), key
            continue
        q = mxfp4.quantize(peft_merged[weight].transpose(1, 2).contiguous(), scale_rule=rule)
        assert torch.equal(ours[key], q.blocks if key.endswith("_blocks") else q.scales), key


def _touched(name: str) -> set[str]:
    modules = ADAPTERS[name].get("target_modules", [])
    names = {f"model.layers.{i}.self_attn.{m}.weight" for i in range(4) for m in modules}
    for parameter in ADAPTERS[name].get("target_parameters", []):
        names |= {f"model.layers.{i}.{parameter}" for i in range(4)}
    return names


def test_gguf_merge_holds_the_mxfp4_merges_tensors_and_runs_in_llama_cpp(base, adapters, tmp_path):
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is installed by .ci/run")
    merge_lora(base / "hf", base / "adapter-both", tmp_path / "mx", to="mxfp4")
    merge_lora(base / "hf", base / "adapter-both", tmp_path / "m.gguf", to="gguf")
    verdict = CliRunner().invoke(main, ["verify", str(tmp_path / "mx"), str(tmp_path / "m.gguf")])
    assert verdict.exit_code == 0 and "0 mismatched" in verdict.output, verdict.output
    model = llama_cpp.Llama(model_path=str(tmp_path / "m.gguf"), logits_all=True, n_ctx=64, n_threads=2, verbose=False)
    model.eval(IDS[0].tolist())
    logits = np.array(model.scores[: IDS.shape[1]])
    assert np.isfinite(logits).all() and np.abs(logits).mean() > 0.1


def _rewrite_adapter(src, dst, change):
    shutil.copytree(src, dst)
    tensors = load_file(dst / "adapter_model.safetensors")
    change(tensors)
    save_file(tensors, dst / "adapter_model.safetensors", metadata={"format": "pt"})
    return dst


def _expert_keys(tensors, layer: int, inner: bool):
    stem = f"base_model.model.model.layers.{layer}.mlp.experts." + ("base_layer." if inner else "")
    return stem + "lora_A.weight", stem + "lora_B.weight"


def test_swapped_and_unsloth_conventions_give_the_same_merge(base, adapters, tmp_path):
    # The same deltas written in the other two conventions (docs/finetune.md) merge to the same bytes.
    experts = 4

    def swapped(tensors):
        for layer in range(4):
            for inner in (True, False):
                ka, kb = _expert_keys(tensors, layer, inner)
                a, b = tensors[ka], tensors[kb]  # A [E r, in], B [out, E r]
                rank, out, inp = a.shape[0] // experts, b.shape[0], a.shape[1]
                tensors[ka] = b.reshape(out, rank, experts).permute(2, 1, 0).reshape(experts * rank, out).contiguous()
                tensors[kb] = a.reshape(experts, rank, inp).permute(2, 1, 0).reshape(inp, rank * experts).contiguous()

    def unsloth(tensors):
        for layer in range(4):
            for inner in (True, False):
                _, kb = _expert_keys(tensors, layer, inner)
                b = tensors[kb]
                rank = b.shape[1] // experts
                tensors[kb] = b.reshape(b.shape[0], rank, experts).permute(0, 2, 1).reshape(b.shape[0], -1).contiguous()

    merge_lora(base / "hf", base / "adapter-experts", tmp_path / "peft", to="mxfp4")
    want = all_tensors(tmp_path / "peft")
    swapped_dir = _rewrite_adapter(base / "adapter-experts", tmp_path / "a-swapped", swapped)
    merge_lora(base / "hf", swapped_dir, tmp_path / "swapped", to="mxfp4")  # detected from the shapes
    unsloth_dir = _rewrite_adapter(base / "adapter-experts", tmp_path / "a-unsloth", unsloth)
    merge_lora(base / "hf", unsloth_dir, tmp_path / "unsloth", to="mxfp4", lora_layout="unsloth")
    for other in ("swapped", "unsloth"):
        got = all_tensors(tmp_path / other)
        assert all(torch.equal(got[k], want[k]) for k in want), other
    with pytest.raises(AdapterError, match="'swapped' orientation, not those of lora_layout='peft'"):
        merge_lora(base / "hf", swapped_dir, tmp_path / "refused", to="mxfp4", lora_layout="peft")
    assert not (tmp_path / "refused").exists()


def test_a_square_down_proj_alone_asks_for_the_layout(tmp_path):
    # hidden == expert width (as in gpt-oss): down_proj's shapes fit both orientations.
    root = tmp_path
    make_checkpoint(root, "hf")  # hidden 64, intermediate 64
    convert(root / "hf", root / "bf16", to="bf16")
    merged = _make_adapter(
        root / "bf16", root / "adapter", 0, target_modules=[], target_parameters=["mlp.experts.down_proj"]
    )
    with pytest.raises(AdapterError, match="give lora_layout"):
        merge_lora(root / "hf", root / "adapter", root / "refused", to="bf16")
    assert not (root / "refused").exists()
    merge_lora(root / "hf", root / "adapter", root / "out", to="bf16", dtype="float32", lora_layout="peft")
    with torch.no_grad():
        assert (_load(root / "out")(IDS).logits - merged(IDS).logits).abs().max() <= 1e-5


def test_the_report_warns_when_rounding_erases_a_delta(base, adapters, tmp_path):
    # A delta far below MXFP4's step (B scaled by 1e-4): the MXFP4 experts keep almost none of it, the bf16
    # attention weights lose much of it too, and the CLI says so.
    tiny = _rewrite_adapter(
        base / "adapter-both",
        tmp_path / "tiny",
        lambda t: t.update({k: v * 1e-4 for k, v in t.items() if "lora_B" in k}),
    )
    result = CliRunner().invoke(
        main, ["merge-lora", str(base / "hf"), str(tiny), str(tmp_path / "out"), "--to", "mxfp4"]
    )
    assert result.exit_code == 0, result.output
    assert "warning: model.layers.0.mlp.experts.gate_up_proj kept" in result.output
    report = CliRunner().invoke(
        main, ["merge-lora", str(base / "hf"), str(tiny), str(tmp_path / "out"), "--to", "mxfp4", "--json", "--force"]
    )
    data = json.loads(report.stdout)
    experts = [t for t in data["tensors"] if t["stored"] == "MXFP4"]
    assert experts and all(t["kept"] < 0.5 for t in experts) and data["kept"] < 0.5


def test_mse_requantization_never_moves_further_from_a_small_fine_tune_than_the_base(base, adapters, tmp_path):
    # The base's blocks sit on the MXFP4 grid of their floor scale X. With a delta too small to move a block's
    # largest value by a binade, X stays among mse's candidates (floor - 1 .. floor + 1 of W + D), and rounding
    # W + D on X's grid is at least as close to it as W is: per block |Q(W + D) - (W + D)| <= |D|, so kept >= 0.
    # round_up and floor tip blocks whose largest value sits at their boundary to the next scale.
    small = _rewrite_adapter(
        base / "adapter-experts",
        tmp_path / "small",
        lambda t: t.update({k: v * 1e-3 for k, v in t.items() if "lora_B" in k}),
    )
    mse = merge_lora(base / "hf", small, tmp_path / "mse", to="mxfp4", scale_rule="mse")
    assert all(s.kept >= 0 for s in mse.survival)
    round_up = merge_lora(base / "hf", small, tmp_path / "round_up", to="mxfp4", scale_rule="round_up")
    assert any(s.kept < 0 for s in round_up.survival)


def test_bad_adapters_are_refused_and_nothing_is_written(base, adapters, tmp_path):
    def refused(adapter, match, error=AdapterError, **options):
        with pytest.raises(error, match=match):
            merge_lora(base / "hf", adapter, tmp_path / "out", to="mxfp4", **options)
        assert not (tmp_path / "out").exists()
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no partial output either

    pickled = tmp_path / "pickled"
    pickled.mkdir()
    shutil.copy(base / "adapter-both" / "adapter_config.json", pickled)
    (pickled / "adapter_model.bin").write_bytes(b"\x80\x04not opened")
    refused(pickled, "pickle", CheckpointError)

    def nan(t):
        t["base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight"][0, 0] = float("nan")

    refused(
        _rewrite_adapter(base / "adapter-both", tmp_path / "nan", nan),
        "layers.1.self_attn.q_proj.lora_B.weight holds 1 NaN",
    )

    def unknown(t):
        t["base_model.model.model.layers.0.self_attn.q_proj.magnitude"] = torch.ones(3)

    refused(_rewrite_adapter(base / "adapter-both", tmp_path / "unknown", unknown), "unknown key")

    def wider(t):
        key = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
        t[key] = torch.ones(t[key].shape[0], 96)

    refused(_rewrite_adapter(base / "adapter-both", tmp_path / "wider", wider), r"q_proj lora_A is \[4, 96\]")

    def deeper(t):
        for key in [k for k in t if ".layers.0." in k]:
            t[key.replace(".layers.0.", ".layers.7.")] = t.pop(key)

    refused(
        _rewrite_adapter(base / "adapter-both", tmp_path / "deeper", deeper), "is layer 7, but the base model has 4"
    )

    dora = shutil.copytree(base / "adapter-both", tmp_path / "dora")
    config = json.loads((dora / "adapter_config.json").read_text())
    (dora / "adapter_config.json").write_text(json.dumps({**config, "use_dora": True}))
    refused(dora, "use_dora is set; DoRA")


def test_an_interrupted_merge_leaves_nothing(base, adapters, tmp_path, monkeypatch):
    import mxfp4.finetune.merged_source as merged_source

    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    real = merged_source.expert_delta
    monkeypatch.setattr(merged_source, "expert_delta", interrupted)
    with pytest.raises(KeyboardInterrupt):
        merge_lora(base / "hf", base / "adapter-experts", tmp_path / "out", to="mxfp4")
    assert list(tmp_path.iterdir()) == []


def test_the_base_is_any_converter_format(base, adapters, tmp_path):
    # The same merge from the HF MXFP4 base, its GGUF and its original/ form: the same bytes.
    convert(base / "hf", tmp_path / "base.gguf", to="gguf")
    convert(base / "hf", tmp_path / "original", to="original")
    merge_lora(base / "hf", base / "adapter-both", tmp_path / "from-hf", to="mxfp4")
    want = all_tensors(tmp_path / "from-hf")
    for other in ("base.gguf", "original"):
        merge_lora(tmp_path / other, base / "adapter-both", tmp_path / f"from-{other}", to="mxfp4")
        got = all_tensors(tmp_path / f"from-{other}")
        assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want), other


def _per_expert_adapter(src, dst, style: str, skip_expert: int | None = None):
    """The fused PEFT adapter rewritten as one pair per expert: unsloth's gate_up_projs.{e} / down_projs.{e},
    or vLLM-style {e}.gate_proj / {e}.up_proj / {e}.down_proj (gate and up: gate_up's even and odd columns)."""
    experts = 4

    def split(tensors):
        for layer in range(4):
            for inner, parameter in ((True, "gate_up"), (False, "down")):
                ka, kb = _expert_keys(tensors, layer, inner)
                a, b = tensors.pop(ka), tensors.pop(kb)
                rank = a.shape[0] // experts
                for e in range(experts):
                    if e == skip_expert:
                        continue
                    a_e = a.reshape(experts, rank, -1)[e].contiguous()
                    b_e = b.reshape(b.shape[0], rank, experts)[:, :, e].contiguous()
                    stem = f"base_model.model.model.layers.{layer}.mlp.experts."
                    if style == "unsloth":
                        parts = {f"{parameter}_projs.{e}": b_e}
                    elif parameter == "gate_up":
                        parts = {f"{e}.gate_proj": b_e[0::2].contiguous(), f"{e}.up_proj": b_e[1::2].contiguous()}
                    else:
                        parts = {f"{e}.down_proj": b_e}
                    for module, b_part in parts.items():
                        tensors[f"{stem}{module}.lora_A.weight"] = a_e.clone()
                        tensors[f"{stem}{module}.lora_B.weight"] = b_part

    return _rewrite_adapter(src, dst, split)


def test_per_expert_adapters_merge_as_the_fused_one(base, adapters, tmp_path):
    merge_lora(base / "hf", base / "adapter-experts", tmp_path / "fused", to="bf16", dtype="float32")
    want = all_tensors(tmp_path / "fused")
    for style in ("unsloth", "vllm"):
        adapter = _per_expert_adapter(base / "adapter-experts", tmp_path / f"a-{style}", style)
        merge_lora(base / "hf", adapter, tmp_path / style, to="bf16", dtype="float32")
        got = all_tensors(tmp_path / style)
        for key in want:
            # The same products, summed over the rank by another matmul: float32 rounding apart at most.
            tolerance = 8 * 2.0**-24 * want[key].abs().max()
            assert (got[key] - want[key]).abs().max() <= tolerance, (style, key)


def test_an_expert_the_adapter_did_not_train_keeps_its_bytes(base, adapters, tmp_path):
    adapter = _per_expert_adapter(base / "adapter-experts", tmp_path / "a", "unsloth", skip_expert=2)
    merge_lora(base / "hf", adapter, tmp_path / "out", to="mxfp4")
    source, ours = all_tensors(base / "hf"), all_tensors(tmp_path / "out")
    for layer in range(4):
        for parameter in ("gate_up_proj", "down_proj"):
            for part in ("_blocks", "_scales"):
                key = f"model.layers.{layer}.mlp.experts.{parameter}{part}"
                assert torch.equal(ours[key][2], source[key][2]), key  # expert 2: untouched
                assert not torch.equal(ours[key][1], source[key][1]), key  # expert 1: merged


def test_pefts_own_merged_save_converts_to_the_same_experts(base, adapters, tmp_path):
    # The other road a fine-tuner takes: PEFT's merge_and_unload() + save_pretrained (float32), then convert.
    adapters["both"].save_pretrained(tmp_path / "peft-merged")
    convert(tmp_path / "peft-merged", tmp_path / "converted", to="mxfp4", scale_rule="round_up")
    merge_lora(base / "hf", base / "adapter-both", tmp_path / "ours", to="mxfp4", scale_rule="round_up")
    converted, ours = all_tensors(tmp_path / "converted"), all_tensors(tmp_path / "ours")
    experts = [k for k in ours if k.endswith(("_blocks", "_scales"))]
    assert len(experts) == 16 and all(torch.equal(converted[k], ours[k]) for k in experts)


def test_the_command_offers_the_librarys_layouts():
    # One list (mxfp4.choices) for the CLI's --lora-layout and the library's check of lora_layout.
    from mxfp4.choices import LORA_LAYOUTS
    from mxfp4.cli.finetune_commands import merge_lora as command

    option = next(p for p in command.params if p.name == "lora_layout")
    assert tuple(option.type.choices) == LORA_LAYOUTS
    with pytest.raises(mxfp4.OptionError, match="lora_layout='sideways'") as refused:
        merge_lora("unused-base", "unused-adapter", "unused-out", to="mxfp4", lora_layout="sideways")
    assert refused.value.parameter == "lora_layout"
