"""Opening a gpt-oss checkpoint in any supported format (HF, original/, GGUF, hub id) as a
mxfp4.convert.stream.Source of canonical tensors."""

from __future__ import annotations

from pathlib import Path

from ..codec.layout_reference import packed_shapes
from ..codec.tensor import BLOCKS_SUFFIX, SCALES_SUFFIX
from ..errors import CheckpointError
from ..gpt_oss.config import GptOssConfig, read_json
from ..gpt_oss.tensors import (
    QKV,
    Canonical,
    canonical_tensors,
    dense_expert_shape,
    dense_shape,
    mxfp4_shape,
    original_name,
)
from ..storage.gguf_check import is_gguf, validate_gguf
from ..storage.hub import resolve
from ..storage.ollama_store import PREFIX as OLLAMA_PREFIX
from ..storage.ollama_store import resolve_ollama
from ..storage.safetensors_io import refuse_pickle
from ..storage.store import TensorStore
from .formats.gguf.source import GGUFSource
from .formats.mlx.source import MLXSource, is_mlx_store
from .formats.ollama.layout import ARCH as OLLAMA_ARCH
from .formats.ollama.layout import EXTRA_TYPES
from .formats.ollama.source import OllamaSource
from .stream import Dense, Expert, Source, carried_files, stored_dense

FORMATS = ("hf-mxfp4", "hf-dense", "original", "gguf", "mlx", "ollama")


def _check_shape(store: TensorStore, name: str, dtype: set[str] | None, shape: tuple[int, ...]) -> None:
    entry = store.entries[name]
    if tuple(entry.shape) != tuple(shape) or (dtype is not None and entry.dtype not in dtype):
        want = f"{'/'.join(sorted(dtype))} " if dtype else ""
        raise CheckpointError(
            f"{store.files[name]}: tensor {name!r} is {entry.dtype} {list(entry.shape)}; the config implies "
            f"{want}{list(shape)}"
        )


def _check_names(store: TensorStore, expected: set[str], root: Path) -> None:
    unknown = sorted(set(store.entries) - expected)
    if unknown:
        name = unknown[0]
        hint = ""
        if name.endswith(BLOCKS_SUFFIX) or name.endswith(SCALES_SUFFIX):
            hint = "; an MXFP4 weight needs both its _blocks and its _scales"
        raise CheckpointError(
            f"{store.files[name]}: unknown tensor {name!r}: not part of a gpt-oss model with this config{hint}"
        )
    missing = sorted(expected - set(store.entries))
    if missing:
        raise CheckpointError(f"{root}: tensor {missing[0]!r} is missing ({len(missing)} missing in all)")


def _dense_experts_transposed(store: TensorStore, config: GptOssConfig, experts, path: Path) -> bool:
    """Whether dense experts are stored [E, out, in] rather than transformers' [E, in, out], decided from the
    shapes of all expert tensors together (gate_up's always decide: 2 * intermediate != hidden in gpt-oss;
    a square down_proj follows them). Shapes that fit neither, or disagree, are an error naming them."""
    fits = set()
    for t in experts:
        entry = store.entries.get(t.name)
        if entry is None:
            continue  # reported as missing by the name check
        found = {"in-out"} if tuple(entry.shape) == dense_expert_shape(config, t.short) else set()
        found |= {"out-in"} if tuple(entry.shape) == mxfp4_shape(config, t.short) else set()
        if not found:
            raise CheckpointError(
                f"{store.files[t.name]}: tensor {t.name!r} is {entry.dtype} {list(entry.shape)}; dense experts are "
                f"[E, in, out] = {list(dense_expert_shape(config, t.short))} (transformers) or [E, out, in] = "
                f"{list(mxfp4_shape(config, t.short))}"
            )
        fits = found if not fits else fits & found
        if not fits:
            raise CheckpointError(f"{path}: dense expert tensors disagree on their layout (at {t.name!r})")
    return fits == {"out-in"}


def _packed_expert(store: TensorStore, shape: tuple[int, int, int], blocks: str, scales: str) -> Expert:
    """An MXFP4 expert weight stored as HF's (blocks [E, out, in/32, 16], scales [E, out, in/32]) tensors."""
    per_expert = store.entries[blocks].nbytes // shape[0]
    blocks_shape, scales_shape = packed_shapes(shape[1:])

    def copy_blocks(e: int):
        return store.extent(blocks, e * per_expert, per_expert), store.first_bytes(scales, e).reshape(scales_shape)

    def load_bytes(e: int):
        return store.first_bytes(blocks, e).reshape(blocks_shape), store.first_bytes(scales, e).reshape(scales_shape)

    def load_expert(e: int):
        return store.get_first(blocks, e), store.get_first(scales, e)

    return Expert(True, shape, "MXFP4", load_expert, copy_blocks, load_bytes)


class HFSource(Source):
    """An HF gpt-oss directory: experts either MXFP4 (NAME_blocks + NAME_scales) or dense bf16/f32."""

    def __init__(self, path: Path, config: GptOssConfig, store: TensorStore):
        self.path, self.config, self.store = path, config, store
        tensors = canonical_tensors(config)
        experts = [t for t in tensors if t.expert]
        packed = [t.name + BLOCKS_SUFFIX in store.entries or t.name + SCALES_SUFFIX in store.entries for t in experts]
        self.packed = all(packed)
        if any(packed) and not self.packed:
            raise CheckpointError(
                f"{path}: some expert weights are MXFP4 and some dense; convert needs one form throughout"
            )
        self.kind = "hf-mxfp4" if self.packed else "hf-dense"
        self.transposed = False if self.packed else _dense_experts_transposed(store, config, experts, path)
        if self.packed:
            self.layout = "experts MXFP4 (_blocks [E, out, in/32, 16] + _scales), as openai released gpt-oss"
        elif self.transposed:
            self.layout = "experts dense [E, out, in] (transposed from transformers' layout)"
        else:
            self.layout = "experts dense [E, in, out], as transformers saves a dequantized or fine-tuned gpt-oss"
        expected = set()
        for t in tensors:
            expected |= {t.name + BLOCKS_SUFFIX, t.name + SCALES_SUFFIX} if t.expert and self.packed else {t.name}
        _check_names(store, expected, path)
        for t in tensors:
            if t.expert and self.packed:
                blocks_shape, scales_shape = packed_shapes(mxfp4_shape(config, t.short))
                _check_shape(store, t.name + BLOCKS_SUFFIX, {"U8"}, blocks_shape)
                _check_shape(store, t.name + SCALES_SUFFIX, {"U8"}, scales_shape)
            elif t.expert:
                shape = mxfp4_shape(config, t.short) if self.transposed else dense_expert_shape(config, t.short)
                _check_shape(store, t.name, {"BF16", "F16", "F32"}, shape)
            else:
                _check_shape(store, t.name, {"BF16", "F16", "F32"}, dense_shape(config, t.short))

    def read(self, tensor: Canonical) -> Dense | Expert:
        store, name = self.store, tensor.name
        if tensor.expert and self.packed:
            blocks, scales = name + BLOCKS_SUFFIX, name + SCALES_SUFFIX
            return _packed_expert(store, mxfp4_shape(self.config, tensor.short), blocks, scales)
        entry = store.entries[name]
        if tensor.expert and self.transposed:  # stored [E, out, in]: served as [E, in, out] like every dense source
            shape = dense_expert_shape(self.config, tensor.short)
            return Expert(False, shape, entry.dtype, lambda e: store.get_first(name, e).transpose(0, 1))
        if tensor.expert:
            return Expert(False, tuple(entry.shape), entry.dtype, lambda e: store.get_first(name, e))
        return stored_dense(store, name)

    def source_bytes(self) -> int:
        return self.store.source_bytes()


class OriginalSource(Source):
    """The openai original/ layout: block.N.attn.qkv (q, k, v stacked), mlp1_weight.blocks, ..."""

    kind = "original"
    layout = "experts MXFP4 (mlp1_weight / mlp2_weight .blocks + .scales), openai's original/ layout"

    def __init__(self, path: Path, config: GptOssConfig, store: TensorStore):
        self.path, self.config, self.store = path, config, store
        expected = set()
        for t in canonical_tensors(config):
            base = original_name(t)
            expected |= {base + ".blocks", base + ".scales"} if t.expert else {base}
        _check_names(store, expected, path)
        c = config
        q, kv = c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim
        for t in canonical_tensors(config):
            base = original_name(t)
            if t.expert:
                blocks_shape, scales_shape = packed_shapes(mxfp4_shape(config, t.short))
                _check_shape(store, base + ".blocks", {"U8"}, blocks_shape)
                _check_shape(store, base + ".scales", {"U8"}, scales_shape)
            elif base.endswith("attn.qkv.weight"):
                _check_shape(store, base, None, (q + 2 * kv, c.hidden_size))
            elif base.endswith("attn.qkv.bias"):
                _check_shape(store, base, None, (q + 2 * kv,))
            else:
                _check_shape(store, base, None, dense_shape(config, t.short))

    def read(self, tensor: Canonical) -> Dense | Expert:
        store, base = self.store, original_name(tensor)
        if tensor.expert:
            return _packed_expert(store, mxfp4_shape(self.config, tensor.short), base + ".blocks", base + ".scales")
        entry = store.entries[base]
        part = next((i for i, p in enumerate(QKV) if tensor.short.startswith(p)), None)
        if part is None:
            return stored_dense(store, base)
        c = self.config
        q, kv = c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim
        start, stop = [(0, q), (q, q + kv), (q + kv, q + 2 * kv)][part]
        shape = (stop - start,) + tuple(entry.shape[1:])
        return Dense(entry.dtype, shape, lambda: store.get(base)[start:stop].contiguous())

    def extra_files(self) -> list[Path]:
        """original/ holds no tokenizer; take the enclosing HF repo's when there is one."""
        directory = self.tokenizer_dir()
        return [] if directory == self.path else carried_files(directory)

    def source_bytes(self) -> int:
        return self.store.source_bytes()


def open_gguf(path: Path) -> Source:
    """A GGUF file by its contents: llama.cpp's gpt-oss, or one of Ollama's own gptoss forms."""
    header = validate_gguf(path, EXTRA_TYPES)
    if header.fields.get("general.architecture") == OLLAMA_ARCH:
        return OllamaSource(path, header)
    return GGUFSource(path, header)


def open_source(spec) -> Source:
    """Open a checkpoint directory (HF, original/ or MLX), a GGUF file (by its magic: Ollama's blobs have no
    extension), an Ollama model name ('ollama:gpt-oss:20b'), or a hub id from the local cache."""
    path = resolve_ollama(str(spec)) if str(spec).startswith(OLLAMA_PREFIX) else resolve(spec)
    refuse_pickle(path)
    if path.is_file():
        if path.suffix == ".gguf" or is_gguf(path):
            return open_gguf(path)
        raise CheckpointError(f"{path}: give the checkpoint directory (with config.json), or a GGUF file")
    config_path = path / "config.json"
    raw = read_json(config_path)
    if "num_experts" in raw and "num_local_experts" not in raw:
        return OriginalSource(path, GptOssConfig.from_original_dict(raw, str(config_path)), TensorStore.open_dir(path))
    if raw.get("model_type", "gpt_oss") != "gpt_oss":
        raise CheckpointError(
            f"{config_path}: model_type is {raw.get('model_type')!r}; mxfp4 convert handles gpt_oss checkpoints"
        )
    store = TensorStore.open_dir(path)
    if is_mlx_store(store):
        return MLXSource(path, raw, store, str(config_path))
    return HFSource(path, GptOssConfig.from_hf_dict(raw, str(config_path)), store)
