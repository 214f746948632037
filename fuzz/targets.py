"""Fuzz targets. Each takes arbitrary bytes; it may raise MXFP4Error (a clean, typed refusal) and
nothing else. Any other exception, a hang, or a crash of the interpreter is a bug."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np

import mxfp4
from mxfp4 import layout
from mxfp4.codec import native
from mxfp4.convert import open_source
from mxfp4.convert.stream import Dense
from mxfp4.gpt_oss.tensors import canonical_tensors
from mxfp4.storage.safetensors_io import read_header
from mxfp4.storage.store import TensorStore

WORK = Path(tempfile.mkdtemp(prefix="mxfp4-fuzz-"))
MAX_READ = 1 << 20  # tensors above this are checked, not read


def _file(name: str, data: bytes) -> Path:
    path = WORK / name
    path.write_bytes(data)
    return path


def safetensors_reader(data: bytes) -> None:
    """A safetensors file: header validation, then reading every (small) tensor."""
    path = _file("fuzz.safetensors", data)
    entries, _ = read_header(path)
    store = TensorStore({e.name: path for e in entries}, {e.name: e for e in entries})
    try:
        for entry in entries:
            if entry.nbytes <= MAX_READ:
                store.get(entry.name)
    finally:
        store.close()


_SHARD = None


def index_reader(data: bytes) -> None:
    """model.safetensors.index.json beside one valid shard: paths, names, shapes all from the fuzzer."""
    global _SHARD
    root = WORK / "index"
    if _SHARD is None:
        root.mkdir(exist_ok=True)
        from safetensors.numpy import save_file

        save_file(
            {"a": np.zeros(4, np.float32), "b": np.ones((2, 3), np.uint8)},
            str(root / "model-00001-of-00001.safetensors"),
        )
        _SHARD = True
    (root / "model.safetensors.index.json").write_bytes(data)
    store = TensorStore.open_dir(root)
    try:
        for name in store.entries:
            store.get(name)
    finally:
        store.close()


def gguf_reader(data: bytes) -> None:
    """A .gguf file opened as a gpt-oss checkpoint, then every tensor read (experts: the first one)."""
    source = open_source(_file("fuzz.gguf", data))
    for tensor in canonical_tensors(source.config):
        read = source.read(tensor)
        if isinstance(read, Dense):
            read.load()
        else:
            read.load_expert(0)


def layout_round_trip(data: bytes) -> None:
    """Any bytes as GGUF blocks: to HF and back is the identity, and native equals numpy."""
    usable = len(data) // 17 * 17
    raw = np.frombuffer(data[:usable], dtype=np.uint8).reshape(-1, 17)
    blocks, scales = layout.gguf_to_hf(raw)
    ref_blocks, ref_scales = layout.gguf_to_hf(raw, backend="numpy")
    assert np.array_equal(blocks, ref_blocks) and np.array_equal(scales, ref_scales)
    assert np.array_equal(layout.hf_to_gguf(blocks, scales), raw)


def _read_every_tensor(source) -> None:
    """Every canonical tensor of an opened source read: dense ones whole, experts their first expert's values."""
    import torch

    for tensor in canonical_tensors(source.config):
        read = source.read(tensor)
        if isinstance(read, Dense):
            read.load()
        else:
            read.values_out_in(0, torch.float32)


def _tiny_config(hidden_size: int = 32) -> dict:
    from mxfp4.testing import synthetic

    return synthetic.hf_config(
        num_hidden_layers=2,
        num_local_experts=2,
        num_experts_per_tok=1,
        hidden_size=hidden_size,
        intermediate_size=32,
        head_dim=16,
        num_attention_heads=2,
        num_key_value_heads=1,
        vocab_size=270,
    )


def hf_checkpoint(data: bytes) -> None:
    """model.safetensors of a tiny gpt-oss HF directory (config fixed, tensors from the fuzzer): the repairs of known
    broken saves, the content test of a square expert's orientation, doctor, then every tensor read as doctor and
    inspect read it (what readers refuse included: an undecided orientation or gate / up split)."""
    from mxfp4.convert.doctor import diagnose
    from mxfp4.convert.registry import open_unreported
    from mxfp4.errors import RepairWarning

    root = WORK / "hf"
    root.mkdir(exist_ok=True)
    (root / "config.json").write_text(json.dumps(_tiny_config()))
    (root / "model.safetensors").write_bytes(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RepairWarning)
        diagnose(root)
        source = open_unreported(root)
    _read_every_tensor(source)


BUNDLED = Path(__file__).resolve().parents[1] / "examples" / "tiny-gpt-oss-trained"


def peft_adapter(data: bytes) -> None:
    """adapter_model.safetensors of the shipped LoRA's PEFT directory (its adapter_config.json fixed: attention
    and both expert parameters; tensors from the fuzzer), read and checked against the bundled model's config."""
    from mxfp4.finetune.adapter import read_adapter
    from mxfp4.gpt_oss.config import GptOssConfig, read_json

    root = WORK / "adapter"
    root.mkdir(exist_ok=True)
    (root / "adapter_config.json").write_bytes((BUNDLED / "lora-docs" / "adapter_config.json").read_bytes())
    (root / "adapter_model.safetensors").write_bytes(data)
    read_adapter(root, GptOssConfig.from_hf_dict(read_json(BUNDLED / "mxfp4" / "config.json")))


# The MLX forms a directory's model.safetensors is read under, chosen by the input's first byte: mlx_lm.convert's
# MXFP4 words, its affine re-quantizations (4 and 8 bits, the community -Q4 / -Q8 forms), mlx_lm.fuse --de-quantize.
MLX_FORMS = {"mxfp4": {}, "q4": {"quantize": True, "q_bits": 4}, "q8": {"quantize": True, "q_bits": 8}}


def _mlx_seed_dirs() -> dict[str, Path]:
    """The tiny checkpoint written by mlx_lm itself in each MLX form (one file each, no index)."""
    from mlx_lm import convert as mlx_lm_convert

    from mxfp4.testing import synthetic

    root = WORK / "mlx-seeds"
    hf = root / "hf"
    if not hf.exists():
        # hidden 64: mlx-lm quantizes gpt-oss's router in groups of 64 whatever the group size asked
        synthetic.write_checkpoint(hf, _tiny_config(hidden_size=64), with_tokenizer=True)
    found = {}
    for form, kwargs in MLX_FORMS.items():
        out = root / form
        if not out.exists():
            with contextlib.redirect_stdout(io.StringIO()):
                mlx_lm_convert(str(hf), str(out), q_group_size=32, **kwargs)
            (out / "model.safetensors.index.json").unlink(missing_ok=True)
        found[form] = out
    return found


def mlx_directory(data: bytes) -> None:
    """An MLX gpt-oss directory: config.json of the form the first byte picks (MXFP4 words, affine q4 / q8), then
    model.safetensors from the fuzzer; every tensor read (experts: the first one, gate and up re-interleaved)."""
    if not data:
        return
    forms = _mlx_seed_dirs()
    form = sorted(forms)[data[0] % len(forms)]
    root = WORK / "mlx"
    root.mkdir(exist_ok=True)
    (root / "config.json").write_bytes((forms[form] / "config.json").read_bytes())
    (root / "model.safetensors").write_bytes(data[1:])
    _read_every_tensor(open_source(root))


def _ollama_blobs() -> list[Path]:
    """The tiny checkpoint as each of Ollama's own gptoss forms: 1 (MXFP4 as type 4), 2 and 3 (q/k/v fused)."""
    from mxfp4.testing import synthetic
    from mxfp4.testing.ollama_forms import write_ollama_gguf

    root = WORK / "ollama-seeds"
    if not root.exists():
        synthetic.write_checkpoint(root / "hf", _tiny_config())
        for form, fused in ((1, False), (2, False), (3, True)):
            write_ollama_gguf(root / "hf", root / f"form{form}", form=form, fused_qkv=fused)
    return [root / f"form{form}" for form in (1, 2, 3)]


def ollama_blob(data: bytes) -> None:
    """A blob of Ollama's store (a GGUF without an extension, found by its magic) opened as a checkpoint: Ollama's
    own gptoss forms, type 4 (its retired MXFP4) included; every tensor read."""
    _read_every_tensor(open_source(_file("sha256-blob", data)))


def ollama_manifest(data: bytes) -> None:
    """'ollama:NAME' through a store whose manifest and name come from the fuzzer (NAME up to the first newline,
    the manifest the rest) beside one valid blob. Whatever resolves must lie inside the store's blobs/."""
    from mxfp4.storage.ollama_store import PREFIX, manifest_path, resolve_ollama

    root = WORK / "ollama-store"
    blob = _ollama_blobs()[1].read_bytes()
    digest = hashlib.sha256(blob).hexdigest()
    if not (root / "blobs").exists():
        (root / "blobs").mkdir(parents=True)
        (root / "blobs" / f"sha256-{digest}").write_bytes(blob)
    os.environ["OLLAMA_MODELS"] = str(root)
    name, _, manifest = data.partition(b"\n")
    spec = PREFIX + name.decode("utf-8", "replace")
    path = manifest_path(root, spec[len(PREFIX) :])
    shutil.rmtree(root / "manifests", ignore_errors=True)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(manifest)
    except OSError:
        return  # a name the file system refuses (too long): nothing to resolve
    resolved = resolve_ollama(spec)
    assert resolved.resolve().parent == (root / "blobs").resolve(), resolved
    _read_every_tensor(open_source(spec))


RULES, ROUNDINGS = mxfp4.rules.SCALE_RULES, mxfp4.rules.ROUNDINGS


def codec(data: bytes) -> None:
    """Any bytes as float32 / float16 / bfloat16 weights: every rule and rounding, native == numpy,
    and decoding equals too (bit for bit, NaN scales included)."""
    if len(data) < 2:
        return
    control, body = data[0], data[1:]
    dtype = (np.float32, np.float16, np.uint16)[control % 3]
    width = np.dtype(dtype).itemsize
    n = len(body) // (32 * width) * 32
    if n == 0:
        return
    x = np.frombuffer(body[: n * width], dtype=dtype).reshape(-1, 32)
    if dtype is np.uint16:
        x = x.view(mxfp4.dtypes.numpy_dtype("bfloat16"))
    rule, rounding = RULES[(control >> 2) % 4], ROUNDINGS[(control >> 4) % 2]
    want = mxfp4.quantize(x, scale_rule=rule, rounding=rounding, nonfinite="nan_scale", backend="numpy")
    if native.available():
        got = mxfp4.quantize(x, scale_rule=rule, rounding=rounding, nonfinite="nan_scale", backend="native")
        assert np.array_equal(got.blocks, want.blocks) and np.array_equal(got.scales, want.scales), (rule, rounding)
        for out in ("float32", "bfloat16"):
            a = mxfp4.dequantize(want.blocks, want.scales, out, backend="native").view(np.uint8)
            b = mxfp4.dequantize(want.blocks, want.scales, out, backend="numpy").view(np.uint8)
            assert np.array_equal(a, b), out


TARGETS = {
    "safetensors": safetensors_reader,
    "index": index_reader,
    "gguf": gguf_reader,
    "layout": layout_round_trip,
    "codec": codec,
    "hf": hf_checkpoint,
    "adapter": peft_adapter,
    "mlx": mlx_directory,
    "ollama": ollama_blob,
    "ollama_manifest": ollama_manifest,
}


def seeds(target: str) -> list[bytes]:
    """Small valid inputs for the fuzzer to start from."""
    if target == "safetensors":
        header = json.dumps(
            {
                "__metadata__": {"format": "pt"},
                "w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
                "q_blocks": {"dtype": "U8", "shape": [1, 1, 16], "data_offsets": [16, 32]},
            }
        ).encode()
        header += b" " * (-len(header) % 8)
        return [len(header).to_bytes(8, "little") + header + bytes(range(32))]
    if target == "index":
        return [
            json.dumps(
                {
                    "metadata": {"total_size": 22},
                    "weight_map": {"a": "model-00001-of-00001.safetensors", "b": "model-00001-of-00001.safetensors"},
                }
            ).encode()
        ]
    if target == "gguf":
        from mxfp4.convert import convert
        from mxfp4.testing import synthetic

        directory = WORK / "seed"
        if not (directory / "tiny.gguf").exists():
            config = _tiny_config()
            synthetic.write_checkpoint(directory / "hf", config)
            convert(directory / "hf", directory / "tiny.gguf", to="gguf")
        return [(directory / "tiny.gguf").read_bytes()]
    if target == "hf":
        return _hf_seeds()
    if target == "adapter":
        return [(BUNDLED / "lora-docs" / "adapter_model.safetensors").read_bytes()]
    if target == "mlx":
        forms = _mlx_seed_dirs()
        return [bytes([i]) + (forms[form] / "model.safetensors").read_bytes() for i, form in enumerate(sorted(forms))]
    if target == "ollama":
        return [blob.read_bytes() for blob in _ollama_blobs()]
    if target == "ollama_manifest":
        blob = _ollama_blobs()[1].read_bytes()
        digest = hashlib.sha256(blob).hexdigest()
        layers = [
            {"mediaType": "application/vnd.ollama.image.template", "digest": "sha256:" + "0" * 64, "size": 1},
            {"mediaType": "application/vnd.ollama.image.model", "digest": f"sha256:{digest}", "size": len(blob)},
        ]
        manifest = json.dumps({"schemaVersion": 2, "layers": layers}).encode()
        return [b"gpt-oss:20b\n" + manifest, b"user/tuned\n" + manifest, b"host.io/ns/m:tag\n" + manifest]
    if target == "layout":
        return [bytes(range(256)) * 3]
    if target == "codec":
        rng = np.random.default_rng(0)
        return [bytes([c]) + rng.standard_normal(64).astype(np.float32).tobytes() for c in range(0, 32, 5)]
    raise KeyError(target)


def _hf_seeds() -> list[bytes]:
    """The tiny checkpoint's shard healthy (MXFP4, and dequantized to dense on the MXFP4 grid) and as the broken saves
    of forms 1, 2, 4 and 5 hold it."""
    from mxfp4.convert import convert
    from mxfp4.testing import broken_saves, synthetic

    directory = WORK / "hf-seeds"
    if not directory.exists():
        synthetic.write_checkpoint(directory / "mxfp4", _tiny_config())
        convert(directory / "mxfp4", directory / "dense", to="bf16")
        broken_saves.transformers_5_23_dequantized_save(directory / "dense", directory / "form1")
        broken_saves.transformers_5_4_resave(directory / "mxfp4", directory / "form2")
        broken_saves.megatron_bridge_export(directory / "dense", directory / "form4")
        broken_saves.linearized_experts(directory / "dense", directory / "form5")
    found = []
    for name in ("mxfp4", "dense", "form1", "form2", "form4", "form5"):
        found += [p.read_bytes() for p in sorted((directory / name).glob("*.safetensors"))]
    return found


def expected_errors() -> tuple[type[BaseException], ...]:
    return (mxfp4.MXFP4Error,)


def run_one(target: str, data: bytes) -> None:
    try:
        TARGETS[target](data)
    except expected_errors():
        pass
    finally:
        for leftover in WORK.glob(".*partial*"):
            os.remove(leftover)
