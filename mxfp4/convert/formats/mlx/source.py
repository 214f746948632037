"""An MLX gpt-oss directory (mlx_lm.convert's output, an mlx_lm.fuse'd fine-tune) read as canonical tensors.

Experts come back to HF's form: gate and up re-interleaved (rows of weights and scales, columns of
biases), uint32 words viewed as the HF block bytes (a byte move: MLX -> HF -> MLX is byte-identical).
Dense experts (``mlx_lm.fuse --de-quantize``, SwitchLinear weight [E, out, in]) are served dense.
Modules a community re-quantization stored affine (``.weight`` uint32 codes + ``.scales`` + ``.biases``)
are dequantized as mx.dequantize does (scale * code, then + bias, each rounded to the scales' dtype).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ....errors import CheckpointError
from ....gpt_oss.config import GptOssConfig
from ....gpt_oss.tensors import Canonical, canonical_tensors, dense_shape, mxfp4_shape
from ....storage.store import TensorStore
from ...stream import Dense, Expert, Source, stored_dense
from .layout import blocks_from_words, dense_names, expert_modules, hf_config_of_mlx, unpack_affine

AFFINE_SUFFIXES = (".scales", ".biases")
AFFINE_PARTS = ("scales", "biases")
FLOATS = {"BF16", "F16", "F32"}


def is_mlx_store(store: TensorStore) -> bool:
    """MLX names the expert modules gate_proj / up_proj (HF keeps one gate_up_proj)."""
    return any(name.endswith(".mlp.experts.gate_proj.weight") for name in store.entries)


class MLXSource(Source):
    kind = "mlx"

    def __init__(self, path: Path, raw_config: dict, store: TensorStore, where: str):
        self.path, self.store = path, store
        self.config = GptOssConfig.from_hf_dict(hf_config_of_mlx(raw_config), where)
        tensors = canonical_tensors(self.config)
        experts = [m for t in tensors if t.expert for m in expert_modules(t)]
        packed = [self._is_mxfp4(m) for m in experts]
        if any(packed) and not all(packed):
            odd = experts[packed.index(False)]
            found = {p: store.entries[odd + p].dtype for p in (".weight", ".scales") if odd + p in store.entries}
            raise CheckpointError(
                f"{path}: expert module {odd!r} is not MXFP4 like the others (needs U32 .weight and U8 .scales; "
                f"holds {found or 'neither'})"
            )
        self.packed = all(packed)
        expected = set()
        for t in tensors:
            if t.expert:
                for m in expert_modules(t):
                    parts = ("weight", "scales") if self.packed else ("weight",)
                    parts += AFFINE_PARTS if not self.packed and self._is_affine(m) else ()
                    expected |= {f"{m}.{part}" for part in parts}
                continue
            for name in dense_names(t):
                expected.add(name)
                module = name.removesuffix(".weight")
                if name.endswith(".weight") and self._is_affine(module):
                    expected |= {module + s for s in AFFINE_SUFFIXES}
        unknown, missing = sorted(set(store.entries) - expected), sorted(expected - set(store.entries))
        if unknown:
            raise CheckpointError(f"{store.files[unknown[0]]}: unknown tensor {unknown[0]!r} in an MLX gpt-oss")
        if missing:
            raise CheckpointError(f"{path}: tensor {missing[0]!r} is missing ({len(missing)} missing in all)")
        self.affine = sorted(
            m for m in {n.removesuffix(".scales") for n in store.entries if n.endswith(".scales")} if self._is_affine(m)
        )
        for t in tensors:
            self._check(t)
        self.layout = (
            "experts MXFP4 (mlx uint32 words + uint8 scales, gate and up split), as mlx_lm.convert writes them"
            if self.packed
            else "experts dense [E, out, in] (gate_proj / up_proj / down_proj), as mlx_lm.fuse --de-quantize leaves"
        )
        if self.affine:
            bits = sorted({self._affine_params(m)[1] for m in self.affine})
            self.layout += (
                f"; {len(self.affine)} modules affine-quantized ({'/'.join(map(str, bits))}-bit), dequantized exactly "
                "as mx.dequantize does"
            )

    # -- what each module holds -------------------------------------------------------------------------------

    def _is_mxfp4(self, module: str) -> bool:
        weight, scales = self.store.entries.get(module + ".weight"), self.store.entries.get(module + ".scales")
        return weight is not None and scales is not None and weight.dtype == "U32" and scales.dtype == "U8"

    def _is_affine(self, module: str) -> bool:
        scales = self.store.entries.get(module + ".scales")
        return scales is not None and scales.dtype in FLOATS and module + ".biases" in self.store.entries

    def _affine_params(self, module: str) -> tuple[int, int]:
        """(group_size, bits) of an affine module, from its shapes (as mlx_lm infers them)."""
        weight, scales = self.store.entries[module + ".weight"], self.store.entries[module + ".scales"]
        columns = self._logical_columns(module)
        group_size = columns // scales.shape[-1] if scales.shape[-1] else 0
        bits = weight.shape[-1] * 32 // columns if columns else 0
        if bits not in (2, 3, 4, 5, 6, 8) or not group_size or group_size * scales.shape[-1] != columns:
            raise CheckpointError(
                f"{self.store.files[module + '.weight']}: affine module {module!r} has weight {list(weight.shape)} and "
                f"scales {list(scales.shape)}, which fit no bits / group size for {columns} inputs"
            )
        return group_size, bits

    def _logical_columns(self, module: str) -> int:
        short = module.split(".", 3)[-1] if module.startswith("model.layers.") else module
        if ".mlp.experts." in module:
            tensor = "mlp.experts.down_proj" if short.endswith("down_proj") else "mlp.experts.gate_up_proj"
            return mxfp4_shape(self.config, tensor)[2]
        return dense_shape(self.config, short + ".weight")[-1]

    def _check(self, tensor: Canonical) -> None:
        entries, files = self.store.entries, self.store.files
        if tensor.expert:
            e, rows, cols = mxfp4_shape(self.config, tensor.short)
            modules = expert_modules(tensor)
            rows //= len(modules)
            for m in modules:
                if self.packed:
                    want = {m + ".weight": ("U32", (e, rows, cols // 8)), m + ".scales": ("U8", (e, rows, cols // 32))}
                elif self._is_affine(m):
                    continue  # checked when dequantized (its shapes decide bits and group size)
                else:
                    want = {m + ".weight": (FLOATS, (e, rows, cols))}
                self._expect(want)
            return
        names = dense_names(tensor)
        shape = dense_shape(self.config, tensor.short)
        part = shape[:-1] + (shape[-1] // len(names),)
        for name in names:
            module = name.removesuffix(".weight")
            if name.endswith(".weight") and self._is_affine(module):
                self._affine_params(module)
                if entries[name].dtype != "U32" or entries[name].shape[0] != part[0]:
                    raise CheckpointError(
                        f"{files[name]}: affine weight {name!r} is {entries[name].dtype} {list(entries[name].shape)}"
                    )
                continue
            self._expect({name: (FLOATS, part)})

    def _expect(self, want: dict) -> None:
        for name, (dtypes, shape) in want.items():
            entry = self.store.entries[name]
            dtypes = {dtypes} if isinstance(dtypes, str) else dtypes
            if entry.dtype not in dtypes or tuple(entry.shape) != tuple(shape):
                raise CheckpointError(
                    f"{self.store.files[name]}: tensor {name!r} is {entry.dtype} {list(entry.shape)}; the config "
                    f"implies {'/'.join(sorted(dtypes))} {list(shape)}"
                )

    # -- reading ----------------------------------------------------------------------------------------------

    def _dequantized(self, module: str, first: int | None = None):
        """mx.dequantize of an affine module (or of expert ``first`` of one), in the scales' dtype."""
        import torch

        group_size, bits = self._affine_params(module)
        store = self.store
        take = (lambda n: store.get(n)) if first is None else (lambda n: store.get_first(n, first))
        words = take(module + ".weight").view(torch.uint8).numpy()
        scales, biases = take(module + ".scales"), take(module + ".biases")
        codes = unpack_affine(words.view("<u4"), bits)
        codes = torch.from_numpy(codes.astype(np.float32)).to(scales.dtype)
        codes = codes.reshape(tuple(scales.shape) + (group_size,))
        values = scales[..., None] * codes + biases[..., None]  # two roundings, as mlx computes it
        return values.reshape(tuple(scales.shape[:-1]) + (scales.shape[-1] * group_size,))

    def _expert_values(self, module: str, e: int):
        """Expert e of a dense or affine expert module as [out, in]."""
        if self._is_affine(module):
            return self._dequantized(module, e)
        return self.store.get_first(module + ".weight", e)

    def read(self, tensor: Canonical) -> Dense | Expert:
        import torch

        store = self.store
        if tensor.expert:
            modules = expert_modules(tensor)
            shape = mxfp4_shape(self.config, tensor.short)
            if self.packed:

                def load_packed(e: int):
                    parts = [
                        (
                            blocks_from_words(store.get_first(m + ".weight", e).view(torch.uint8).numpy().view("<u4")),
                            store.get_first(m + ".scales", e).numpy(),
                        )
                        for m in modules
                    ]
                    if len(parts) == 1:
                        blocks, scales = parts[0]
                    else:  # gate rows even, up rows odd
                        blocks = np.stack([parts[0][0], parts[1][0]], axis=1).reshape(
                            (shape[1],) + parts[0][0].shape[1:]
                        )
                        scales = np.stack([parts[0][1], parts[1][1]], axis=1).reshape(shape[1], -1)
                    return torch.from_numpy(np.ascontiguousarray(blocks)), torch.from_numpy(
                        np.ascontiguousarray(scales)
                    )

                return Expert(True, shape, "MXFP4", load_packed)

            def load_dense(e: int):  # [in, out], as every dense source serves experts
                values = [self._expert_values(m, e) for m in modules]
                out_in = values[0] if len(values) == 1 else torch.stack(values, dim=1).reshape(shape[1], shape[2])
                return out_in.transpose(0, 1)

            sample_dtype = store.entries[modules[0] + (".scales" if self._is_affine(modules[0]) else ".weight")].dtype
            return Expert(False, (shape[0], shape[2], shape[1]), sample_dtype, load_dense)
        names = dense_names(tensor)
        shape = dense_shape(self.config, tensor.short)
        if len(names) == 2:  # the gate_up bias: re-interleave columns
            dtype = store.entries[names[0]].dtype
            return Dense(dtype, shape, lambda: torch.stack([store.get(n) for n in names], dim=-1).reshape(shape))
        name = names[0]
        module = name.removesuffix(".weight")
        if name.endswith(".weight") and self._is_affine(module):
            bits = self._affine_params(module)[1]
            stored = (f"affine{bits}", sum(store.entries[module + p].nbytes for p in (".weight",) + AFFINE_SUFFIXES))
            return Dense(
                store.entries[module + ".scales"].dtype, shape, lambda: self._dequantized(module), stored=stored
            )
        return stored_dense(store, name)

    def source_bytes(self) -> int:
        return self.store.source_bytes()
