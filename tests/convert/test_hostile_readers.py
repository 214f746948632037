"""Hostile inputs to the readers added after the first hardening (tests/storage/test_hostile_gguf.py): a PEFT
adapter, an MLX directory (MXFP4 words and affine), Ollama's blobs (type 4) and manifests, per-expert linear experts
and the repairs. Each bad input is one typed error naming the file and the tensor (or key), raised before anything
large is allocated, and nothing is written."""

import hashlib
import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from mxfp4.convert import convert, open_source
from mxfp4.errors import MXFP4Error
from mxfp4.gpt_oss.config import GptOssConfig, read_json
from mxfp4.storage.gguf_check import validate_gguf
from mxfp4.testing import broken_saves
from mxfp4.testing.checkpoints import edit_header, make_checkpoint
from mxfp4.testing.ollama_forms import write_ollama_gguf

BUNDLED = Path(__file__).resolve().parents[2] / "examples" / "tiny-gpt-oss-trained"
HUGE = 1 << 40  # elements a hostile header claims: terabytes, if anything trusted it


def copy_dir(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    (dst / "model.safetensors.index.json").unlink(missing_ok=True)  # one file: the index would repeat the header
    return dst


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    hf = make_checkpoint(root, shard=10**9)
    dense = convert(hf, root / "dense", to="bf16").output
    return {
        "hf": hf,
        "mlx": convert(hf, root / "mlx", to="mlx").output,
        "form1": write_ollama_gguf(hf, root / "form1", form=1),
        "linear": broken_saves.linearized_experts(dense, root / "linear"),
    }


# ---- each case: (name, build(made, tmp) -> (what to open, how), the message) --------------------------------------


def mlx_case(change):
    def build(made, tmp):
        directory = copy_dir(made["mlx"], tmp / "case")
        edit_header(directory / "model.safetensors", change)
        return directory

    return build


def entry(name, **fields):
    def change(header):
        header[name].update(fields)

    return change


def renamed(old, new):
    def change(header):
        header[new] = header.pop(old)

    return change


GATE_WORDS = "model.layers.0.mlp.experts.gate_proj.weight"
GATE_SCALES = "model.layers.0.mlp.experts.gate_proj.scales"


def blob_case(name, dims=None, ggml_type=None, offset=None):
    """An Ollama form-1 blob whose tensor ``name`` claims other dims (ggml order), type or data offset."""

    def build(made, tmp):
        blob = made["form1"]
        info = validate_gguf(blob, {4: (32, 17)}).tensors[name]
        data = bytearray(blob.read_bytes())
        if dims is not None:
            struct.pack_into(f"<{len(dims)}Q", data, info.type_field - 8 * len(info.dims), *dims)
        if ggml_type is not None:
            struct.pack_into("<I", data, info.type_field, ggml_type)
        if offset is not None:
            struct.pack_into("<Q", data, info.type_field + 4, offset)
        (tmp / "blob").write_bytes(bytes(data))
        return tmp / "blob"

    return build


def linear_case(change=None, drop=None):
    def build(made, tmp):
        directory = copy_dir(made["linear"], tmp / "case")
        if drop is not None:
            edit_header(directory / "model.safetensors", lambda header: header.pop(drop))
        if change is not None:
            edit_header(directory / "model.safetensors", change)
        return directory

    return build


LINEAR_GATE = "model.layers.0.mlp.experts.1.gate_proj.weight"

CHECKPOINTS = [
    ("mlx words claim terabytes", mlx_case(entry(GATE_WORDS, shape=[HUGE, 4])), "model.safetensors.*gate_proj"),
    ("mlx scales of another width", mlx_case(entry(GATE_SCALES, shape=[2, 16, 3])), "gate_proj"),
    ("mlx words as floats", mlx_case(entry(GATE_WORDS, dtype="F32")), "gate_proj' is not MXFP4"),
    ("mlx unknown tensor", mlx_case(renamed(GATE_SCALES, GATE_SCALES + "x")), "gate_proj"),
    ("mlx affine scales without biases", mlx_case(renamed("lm_head.weight", "lm_head.scales")), "lm_head"),
    ("type 4 claims terabytes", blob_case("blk.0.ffn_down_exps.weight", dims=(HUGE, 64, 4)), "ffn_down_exps"),
    ("type 4 data past the end", blob_case("blk.1.ffn_down_exps.weight", offset=HUGE), "ffn_down_exps"),
    ("type 4 on a norm", blob_case("blk.0.attn_norm.weight", ggml_type=4), "attn_norm"),
    ("type 4 on the embedding", blob_case("token_embd.weight", ggml_type=4), "token_embd"),
    ("linear expert missing", linear_case(drop=LINEAR_GATE), "'model.layers.0.mlp.experts.1.gate_proj.weight' is"),
    ("linear expert of another shape", linear_case(entry(LINEAR_GATE, shape=[16, 128])), LINEAR_GATE),
    ("linear expert claims terabytes", linear_case(entry(LINEAR_GATE, shape=[HUGE, 64])), LINEAR_GATE),
    ("linear expert as another dtype", linear_case(entry(LINEAR_GATE, dtype="F16")), LINEAR_GATE),
    ("linear expert beyond the count", linear_case(renamed(LINEAR_GATE, LINEAR_GATE.replace(".1.", ".9."))), "9"),
]


@pytest.mark.parametrize("label, build, message", CHECKPOINTS, ids=[c[0] for c in CHECKPOINTS])
def test_hostile_checkpoints_are_one_error_naming_file_and_tensor(made, tmp_path, label, build, message):
    path = build(made, tmp_path)
    with pytest.raises(MXFP4Error, match=message) as error:
        convert(path, tmp_path / "out", to="gguf", expert_layout="gate-up-halves" if "linear" in label else None)
    assert path.name in str(error.value) or "model.safetensors" in str(error.value)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))  # nothing written, not even a part


# ---- manifests ----------------------------------------------------------------------------------------------------


def store_with(tmp: Path, blob: bytes, layers) -> Path:
    digest = hashlib.sha256(blob).hexdigest()
    (tmp / "models" / "blobs").mkdir(parents=True)
    (tmp / "models" / "blobs" / f"sha256-{digest}").write_bytes(blob)
    manifest = tmp / "models" / "manifests" / "registry.ollama.ai" / "library" / "gpt-oss" / "20b"
    manifest.parent.mkdir(parents=True)
    manifest.write_text(layers if isinstance(layers, str) else json.dumps({"schemaVersion": 2, "layers": layers}))
    return manifest


MODEL = "application/vnd.ollama.image.model"
MANIFESTS = [
    ("not json", lambda d: "{not json", "20b: not an Ollama manifest"),
    ("layers not a list", lambda d: '{"layers": 7}', "20b: not an Ollama manifest"),
    ("two model layers", lambda d: [{"mediaType": MODEL, "digest": d}] * 2, "20b: 2 model layers"),
    ("digest a path", lambda d: [{"mediaType": MODEL, "digest": "sha256:../../x"}], "is not sha256:<64 hex digits>"),
    ("digest of no blob", lambda d: [{"mediaType": MODEL, "digest": "sha256:" + "e" * 64}], "which is missing"),
    ("a layer not an object", lambda d: [7], "20b: not an Ollama manifest"),
]


@pytest.mark.parametrize("label, layers, message", MANIFESTS, ids=[c[0] for c in MANIFESTS])
def test_hostile_manifests_are_refused_naming_the_manifest(made, tmp_path, monkeypatch, label, layers, message):
    blob = made["form1"].read_bytes()
    store_with(tmp_path, blob, layers("sha256:" + hashlib.sha256(blob).hexdigest()))
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "models"))
    with pytest.raises(MXFP4Error, match=message):
        convert("ollama:gpt-oss:20b", tmp_path / "out", to="mxfp4")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["../gpt-oss", "gpt-oss:../../x", "a/b/c/d", "", ":20b", "gpt oss"])
def test_model_names_that_are_not_ollama_names_are_refused(tmp_path, monkeypatch, name):
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path))
    with pytest.raises(MXFP4Error, match="not an Ollama model name"):
        open_source("ollama:" + name)


def test_a_blob_that_is_not_gguf_is_refused_naming_it(tmp_path, monkeypatch):
    blob = b'{"not": "a gguf"}'
    store_with(tmp_path, blob, [{"mediaType": MODEL, "digest": "sha256:" + hashlib.sha256(blob).hexdigest()}])
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "models"))
    with pytest.raises(MXFP4Error, match="sha256-"):
        open_source("ollama:gpt-oss:20b")


# ---- adapters -------------------------------------------------------------------------------------------------------

A_KEY = "base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight"
B_KEY = "base_model.model.model.layers.0.self_attn.k_proj.lora_B.weight"
EXPERT_A = "base_model.model.model.layers.0.mlp.experts.lora_A.weight"


def adapter_case(change=None, config_change=None):
    def build(tmp):
        directory = tmp / "adapter"
        shutil.copytree(BUNDLED / "lora-docs", directory)
        if change is not None:
            edit_header(directory / "adapter_model.safetensors", change)
        if config_change is not None:
            config = json.loads((directory / "adapter_config.json").read_text())
            config_change(config)
            (directory / "adapter_config.json").write_text(json.dumps(config))
        return directory

    return build


def config_set(**values):
    return lambda config: config.update(values)


ADAPTERS = [
    ("lora_A claims terabytes", adapter_case(entry(A_KEY, shape=[HUGE, 128])), "k_proj"),
    ("lora_A header disagreeing with its bytes", adapter_case(entry(A_KEY, shape=[4, 128])), "k_proj"),
    ("lora_B as integers", adapter_case(entry(B_KEY, dtype="I32")), "k_proj"),
    ("expert lora_A of another width", adapter_case(entry(EXPERT_A, shape=[32, 64])), "experts"),
    ("a lora_B with no lora_A", adapter_case(lambda h: h.pop(A_KEY)), "k_proj"),
    ("rank zero", adapter_case(config_change=config_set(r=0)), "adapter_config.json"),
    ("alpha a string", adapter_case(config_change=config_set(lora_alpha="x")), "adapter_config.json"),
    ("fan_in_fan_out", adapter_case(config_change=config_set(fan_in_fan_out=True)), "fan_in_fan_out"),
]


@pytest.mark.parametrize("label, build, message", ADAPTERS, ids=[c[0] for c in ADAPTERS])
def test_hostile_adapters_are_one_error_naming_file_and_tensor(tmp_path, label, build, message):
    from mxfp4.finetune import merge_lora

    adapter = build(tmp_path)
    with pytest.raises(MXFP4Error, match=message):
        merge_lora(BUNDLED / "mxfp4", adapter, tmp_path / "out", to="mxfp4")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


# ---- no large allocation: every hostile checkpoint and adapter opened in one fresh process ------------------------

RSS_CHILD = """
import json, pathlib, sys
from mxfp4.errors import MXFP4Error
from mxfp4.convert.registry import open_unreported
from mxfp4.finetune.adapter import read_adapter
from mxfp4.gpt_oss.config import GptOssConfig, read_json

def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":"))

config = GptOssConfig.from_hf_dict(read_json(pathlib.Path(sys.argv[1])))
with open("/proc/self/clear_refs", "w") as f:  # the peak (VmHWM) reset to the present RSS: imports do not count
    f.write("5")
before = status("VmRSS")
for path in sys.argv[2:]:
    try:
        if path.endswith("adapter"):
            read_adapter(path, config)
        else:
            source = open_unreported(path, expert_layout="gate-up-halves" if "linear" in path else None)
    except MXFP4Error:
        pass
print(json.dumps({"rise_kib": status("VmHWM") - before}))
"""


def test_hostile_inputs_allocate_nothing_large(made, tmp_path):
    paths = []
    for index, (label, build, _) in enumerate(CHECKPOINTS):
        (tmp_path / f"c{index}").mkdir()
        paths.append(build(made, tmp_path / f"c{index}"))
        if "linear" in label:  # the child tells the split by the name
            paths[-1] = paths[-1].rename(paths[-1].with_name("linear"))
    for index, (_, build, _) in enumerate(ADAPTERS[:5]):  # the tensor cases (the config ones allocate nothing)
        (tmp_path / f"a{index}").mkdir()
        paths.append(build(tmp_path / f"a{index}"))
    command = [sys.executable, "-c", RSS_CHILD, str(BUNDLED / "mxfp4" / "config.json"), *map(str, paths)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=True)
    assert json.loads(result.stdout.strip().splitlines()[-1])["rise_kib"] < 64 * 1024


def test_a_hostile_layer_count_sizes_nothing():
    # an Ollama blob claiming 3,053,453,314 layers once built a layer_types list of that length before any check
    # (found by the ollama fuzz target; the input is tests/fuzz_regressions/ollama-huge-block-count)
    from mxfp4.gpt_oss.config import GptOssConfig, alternating_layer_types, hf_config_dict

    assert alternating_layer_types(3_053_453_314) == [] and alternating_layer_types(True) == []
    assert alternating_layer_types(3) == ["sliding_attention", "full_attention", "sliding_attention"]
    sizes = dict(num_local_experts=4, num_experts_per_tok=2, hidden_size=64, intermediate_size=64, head_dim=16)
    heads = dict(num_attention_heads=4, num_key_value_heads=2, vocab_size=300, sliding_window=128)
    raw = hf_config_dict(num_hidden_layers=3_053_453_314, **sizes, **heads)
    with pytest.raises(MXFP4Error, match="num_hidden_layers = 3053453314 is beyond any plausible model"):
        GptOssConfig.from_hf_dict(raw, "hostile")


def test_the_bundled_adapter_reads(tmp_path):  # the cases above start from a valid adapter
    from mxfp4.finetune.adapter import read_adapter

    read_adapter(BUNDLED / "lora-docs", GptOssConfig.from_hf_dict(read_json(BUNDLED / "mxfp4" / "config.json")))
