"""What the safetensors-directory formats (HF, openai's original/) share: checks of a store's names and shapes
against the config, with errors naming the file and the tensor, and the reader of experts stored as HF's MXFP4
blocks and scales."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..codec.layout_reference import packed_shapes
from ..codec.tensor import BLOCKS_SUFFIX, SCALES_SUFFIX
from ..errors import CheckpointError
from ..storage.store import TensorStore
from .repairs import float_values, scale_bytes_from_floats
from .stream import Expert


def check_shape(store: TensorStore, name: str, dtype: set[str] | None, shape: tuple[int, ...]) -> None:
    entry = store.entries[name]
    if tuple(entry.shape) != tuple(shape) or (dtype is not None and entry.dtype not in dtype):
        want = f"{'/'.join(sorted(dtype))} " if dtype else ""
        raise CheckpointError(
            f"{store.files[name]}: tensor {name!r} is {entry.dtype} {list(entry.shape)}; the config implies "
            f"{want}{list(shape)}"
        )


def check_names(store: TensorStore, expected: set[str], root: Path) -> None:
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


def packed_expert_reader(
    store: TensorStore, shape: tuple[int, int, int], blocks: str, scales: str, scales_reading: str | None = None
) -> Expert:
    """An MXFP4 expert weight stored as HF's (blocks [E, out, in/32, 16], scales [E, out, in/32]) tensors.
    scales_reading: 'codes' or 'powers' for scales cast to a float dtype (mxfp4.convert.repairs.float_scales)."""
    per_expert = store.entries[blocks].nbytes // shape[0]
    blocks_shape, scales_shape = packed_shapes(shape[1:])

    def scale_bytes(e: int) -> np.ndarray:
        raw = store.first_bytes(scales, e)
        if scales_reading is not None:
            values = float_values(raw, store.entries[scales].dtype)
            raw = scale_bytes_from_floats(values, scales_reading, f"{store.files[scales]}: {scales!r} [{e}]")
        return raw.reshape(scales_shape)

    def copy_blocks(e: int):
        return store.extent(blocks, e * per_expert, per_expert), scale_bytes(e)

    def load_bytes(e: int):
        return store.first_bytes(blocks, e).reshape(blocks_shape), scale_bytes(e)

    def load_expert(e: int):
        if scales_reading is None:
            return store.get_first(blocks, e), store.get_first(scales, e)
        import torch  # only where tensors are asked for: byte moves stay free of torch

        return store.get_first(blocks, e), torch.from_numpy(scale_bytes(e))

    return Expert(True, shape, "MXFP4", load_expert, copy_blocks, load_bytes)
