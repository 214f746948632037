"""The layout moves of mxfp4.codec.layout_reference on the fastest backend built: the C kernels when present,
numpy otherwise. Same bytes either way; tests compare them exhaustively. Public as ``mxfp4.layout``.

backend: 'auto' (C when built, else numpy), 'native' (C; an error when not built) or 'numpy'.
"""

from __future__ import annotations

import numpy as np

from ..choices import LAYOUT_BACKENDS
from . import layout_reference, native
from .constants import GGUF_BYTES_PER_BLOCK, PACKED_BYTES_PER_BLOCK
from .layout_reference import (
    check_blocks_scales,
    gguf_rows_to_blocks,
    gguf_to_hf_nibbles,
    hf_to_gguf_nibbles,
    logical_shape,
    pack_codes,
    unpack_codes,
)
from .rules import check_choice

BACKENDS = LAYOUT_BACKENDS

__all__ = [
    "BACKENDS",
    "check_blocks_scales",
    "gguf_rows_to_blocks",
    "gguf_to_hf",
    "gguf_to_hf_nibbles",
    "hf_to_gguf",
    "hf_to_gguf_nibbles",
    "hf_to_gguf_split_rows",
    "logical_shape",
    "pack_codes",
    "unpack_codes",
]


def _use_native(backend: str) -> bool:
    check_choice("backend", backend, BACKENDS)
    if backend == "native":
        native.require()
        return True
    return backend == "auto" and native.available()


def hf_to_gguf(blocks: np.ndarray, scales: np.ndarray, *, backend: str = "auto") -> np.ndarray:
    """HF ``(blocks [..., n, 16], scales [..., n])`` -> GGUF ``block_mxfp4`` bytes [..., n, 17]."""
    check_blocks_scales(blocks, scales)
    if not _use_native(backend):
        return layout_reference.hf_to_gguf(blocks, scales)
    flat_blocks = np.ascontiguousarray(blocks).reshape(-1, PACKED_BYTES_PER_BLOCK)
    flat = native.hf_to_gguf(flat_blocks, np.ascontiguousarray(scales).reshape(-1))
    return flat.reshape(blocks.shape[:-1] + (GGUF_BYTES_PER_BLOCK,))


def hf_to_gguf_split_rows(
    blocks: np.ndarray, scales: np.ndarray, *, backend: str = "auto"
) -> tuple[np.ndarray, np.ndarray]:
    """HF (blocks [R, n, 16], scales [R, n]) with R even -> GGUF bytes of the even rows and of the odd
    rows ([R/2, n, 17] each): gpt-oss's interleaved gate/up rows as llama.cpp's two tensors."""
    check_blocks_scales(blocks, scales)
    layout_reference.check_interleaved_rows(blocks)
    if not _use_native(backend):
        return layout_reference.hf_to_gguf_split_rows(blocks, scales)
    return native.hf_to_gguf_split_rows(np.ascontiguousarray(blocks), np.ascontiguousarray(scales))


def gguf_to_hf(raw: np.ndarray, *, backend: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """GGUF ``block_mxfp4`` bytes [..., n, 17] -> HF ``(blocks [..., n, 16], scales [..., n])``.

    The gguf package stores a tensor as flat rows [..., n * 17]: pass them through
    ``gguf_rows_to_blocks`` first.
    """
    layout_reference.check_gguf_blocks(raw)
    if not _use_native(backend):
        return layout_reference.gguf_to_hf(raw)
    blocks, scales = native.gguf_to_hf(np.ascontiguousarray(raw).reshape(-1, GGUF_BYTES_PER_BLOCK))
    return blocks.reshape(raw.shape[:-1] + (PACKED_BYTES_PER_BLOCK,)), scales.reshape(raw.shape[:-1])
