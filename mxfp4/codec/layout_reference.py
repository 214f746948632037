"""Where MXFP4 bits sit in memory: pure byte moves in numpy, no rounding, the executable spec of the
layouts (mxfp4.codec.layout runs the same moves in C when built). Every function has its inverse here.

gpt-oss / Hugging Face layout (also torchao, triton_kernels, ModelOpt), per block of 32 codes c[0..31]:

    blocks byte j (j = 0..15) = c[2j] | c[2j+1] << 4        (element 2j in the LOW nibble)
    scales byte               = E8M0 exponent, a separate tensor [..., K/32]

GGUF ``block_mxfp4`` (ggml-common.h), 17 bytes:

    byte 0                    = E8M0 exponent
    byte 1 + j (j = 0..15)    = c[j] | c[j + 16] << 4      (element j LOW, element j + 16 HIGH)

Moving between them is a nibble permutation; written per byte pair it is
    gguf_qs[2i]     = lo(hf[i]) | lo(hf[8 + i]) << 4
    gguf_qs[2i + 1] = hi(hf[i]) | hi(hf[8 + i]) << 4
and the inverse has the same shape. Nothing is requantized, so both directions are lossless.
"""

from __future__ import annotations

import numpy as np

from ..dtypes import name_of
from ..errors import DTypeError, ShapeError
from .constants import BLOCK_SIZE, GGUF_BYTES_PER_BLOCK, PACKED_BYTES_PER_BLOCK

_LO = np.uint8(0x0F)
_HI = np.uint8(0xF0)


def _require_uint8(name: str, array: np.ndarray) -> None:
    if not isinstance(array, np.ndarray):
        raise DTypeError(f"{name} must be a numpy array of uint8, got {type(array).__name__}")
    if array.dtype != np.uint8:
        raise DTypeError(f"{name} must have dtype uint8, got {array.dtype}; MXFP4 bytes are raw uint8")


def check_blocks_scales(blocks, scales) -> None:
    """Raise unless blocks is [..., n, 16] and scales is [..., n], both uint8 (numpy or torch)."""
    for what, array in (("blocks", blocks), ("scales", scales)):
        if name_of(array.dtype) != "uint8":
            raise DTypeError(f"{what} must have dtype uint8, got {name_of(array.dtype)}; MXFP4 bytes are raw uint8")
    if len(blocks.shape) < 2 or blocks.shape[-1] != PACKED_BYTES_PER_BLOCK:
        raise ShapeError(
            f"blocks has shape {tuple(blocks.shape)}; expected [..., n_blocks, {PACKED_BYTES_PER_BLOCK}] "
            f"(32 four-bit codes per block)"
        )
    if tuple(blocks.shape[:-1]) != tuple(scales.shape):
        raise ShapeError(
            f"blocks {tuple(blocks.shape)} and scales {tuple(scales.shape)} do not match: scales must be "
            f"blocks.shape[:-1] = {tuple(blocks.shape[:-1])}, one E8M0 byte per block of 32"
        )


def pack_codes(codes: np.ndarray) -> np.ndarray:
    """E2M1 codes uint8 [..., 32] (values 0..15) -> HF packed bytes [..., 16]."""
    _require_uint8("codes", codes)
    if codes.ndim < 1 or codes.shape[-1] % 2:
        raise ShapeError(f"codes has shape {tuple(codes.shape)}; its last axis must be even to pack in pairs")
    if codes.size and int(codes.max()) > 15:
        raise ShapeError(f"codes must lie in 0..15 (4 bits), found {int(codes.max())}")
    return codes[..., 0::2] | (codes[..., 1::2] << np.uint8(4))


def unpack_codes(blocks: np.ndarray) -> np.ndarray:
    """HF packed bytes [..., n] -> E2M1 codes [..., 2n]; inverse of pack_codes."""
    _require_uint8("blocks", blocks)
    codes = np.empty(blocks.shape[:-1] + (blocks.shape[-1] * 2,), dtype=np.uint8)
    codes[..., 0::2] = blocks & _LO
    codes[..., 1::2] = blocks >> np.uint8(4)
    return codes


def _hf_nibbles_to_gguf(hf: np.ndarray, out: np.ndarray) -> None:
    first, second = hf[..., :8], hf[..., 8:]
    out[..., 0::2] = (first & _LO) | (second << np.uint8(4))
    out[..., 1::2] = (first >> np.uint8(4)) | (second & _HI)


def _gguf_nibbles_to_hf(qs: np.ndarray, out: np.ndarray) -> None:
    even, odd = qs[..., 0::2], qs[..., 1::2]
    out[..., :8] = (even & _LO) | (odd << np.uint8(4))
    out[..., 8:] = (even >> np.uint8(4)) | (odd & _HI)


def hf_to_gguf_nibbles(blocks: np.ndarray) -> np.ndarray:
    """HF code bytes [..., 16] -> GGUF ``qs`` bytes [..., 16] (same codes, GGUF nibble order)."""
    _require_uint8("blocks", blocks)
    if blocks.shape[-1:] != (PACKED_BYTES_PER_BLOCK,):
        raise ShapeError(f"blocks has shape {tuple(blocks.shape)}; its last axis must be 16")
    out = np.empty_like(blocks)
    _hf_nibbles_to_gguf(blocks, out)
    return out


def gguf_to_hf_nibbles(qs: np.ndarray) -> np.ndarray:
    """GGUF ``qs`` bytes [..., 16] -> HF code bytes [..., 16]; inverse of hf_to_gguf_nibbles."""
    _require_uint8("qs", qs)
    if qs.shape[-1:] != (PACKED_BYTES_PER_BLOCK,):
        raise ShapeError(f"qs has shape {tuple(qs.shape)}; its last axis must be 16")
    out = np.empty_like(qs)
    _gguf_nibbles_to_hf(qs, out)
    return out


def hf_to_gguf(blocks: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """HF ``(blocks [..., n, 16], scales [..., n])`` -> GGUF ``block_mxfp4`` bytes [..., n, 17]."""
    check_blocks_scales(blocks, scales)
    raw = np.empty(blocks.shape[:-1] + (GGUF_BYTES_PER_BLOCK,), dtype=np.uint8)
    raw[..., 0] = scales
    _hf_nibbles_to_gguf(blocks, raw[..., 1:])
    return raw


def check_interleaved_rows(blocks: np.ndarray) -> None:
    """Raise unless blocks is [rows, n_blocks, 16] with an even number of rows (gate/up pairs)."""
    if blocks.ndim != 3 or blocks.shape[0] % 2:
        raise ShapeError(
            f"blocks has shape {tuple(blocks.shape)}; expected [rows, n_blocks, 16] with an even number of rows"
        )


def hf_to_gguf_split_rows(blocks: np.ndarray, scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """HF (blocks [R, n, 16], scales [R, n]) with R even -> GGUF bytes of rows 0, 2, 4, ... and of rows
    1, 3, 5, ... ([R/2, n, 17] each): gpt-oss's interleaved gate/up rows as llama.cpp's two tensors."""
    check_blocks_scales(blocks, scales)
    check_interleaved_rows(blocks)
    raw = hf_to_gguf(blocks, scales)
    return np.ascontiguousarray(raw[0::2]), np.ascontiguousarray(raw[1::2])


def check_gguf_blocks(raw: np.ndarray) -> None:
    """Raise unless raw is uint8 [..., n_blocks, 17]."""
    _require_uint8("raw", raw)
    if raw.ndim < 1 or raw.shape[-1] != GGUF_BYTES_PER_BLOCK:
        raise ShapeError(
            f"GGUF MXFP4 data has shape {tuple(raw.shape)}; expected [..., n_blocks, 17] "
            f"(1 scale byte + 16 code bytes per block); use gguf_rows_to_blocks for flat rows"
        )


def gguf_to_hf(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """GGUF ``block_mxfp4`` bytes [..., n, 17] -> HF ``(blocks [..., n, 16], scales [..., n])``.

    The gguf package stores a tensor as flat rows [..., n * 17]: pass them through
    ``gguf_rows_to_blocks`` first.
    """
    check_gguf_blocks(raw)
    scales = np.ascontiguousarray(raw[..., 0])
    blocks = np.empty(raw.shape[:-1] + (PACKED_BYTES_PER_BLOCK,), dtype=np.uint8)
    _gguf_nibbles_to_hf(raw[..., 1:], blocks)
    return blocks, scales


def gguf_rows_to_blocks(raw_rows: np.ndarray) -> np.ndarray:
    """Flat GGUF rows [..., n * 17] (the gguf package's storage) -> [..., n, 17]."""
    _require_uint8("raw_rows", raw_rows)
    if raw_rows.ndim < 1 or raw_rows.shape[-1] % GGUF_BYTES_PER_BLOCK:
        raise ShapeError(
            f"GGUF MXFP4 row of {raw_rows.shape[-1] if raw_rows.ndim else 0} bytes is not a whole number "
            f"of 17-byte blocks"
        )
    return raw_rows.reshape(raw_rows.shape[:-1] + (-1, GGUF_BYTES_PER_BLOCK))


def logical_shape(blocks_shape: tuple[int, ...]) -> tuple[int, ...]:
    """[..., n, 16] -> the logical element shape [..., n * 32]."""
    return tuple(blocks_shape[:-2]) + (blocks_shape[-2] * BLOCK_SIZE,)


def packed_shapes(shape: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Logical [..., K] (K a multiple of 32) -> the shapes of its blocks [..., K/32, 16] and scales [..., K/32]."""
    *lead, k = shape
    return (*lead, k // BLOCK_SIZE, PACKED_BYTES_PER_BLOCK), (*lead, k // BLOCK_SIZE)


def packed_nbytes(numel: int) -> int:
    """Bytes of blocks plus scales for numel elements (a multiple of 32): 17 per block of 32."""
    return numel // BLOCK_SIZE * GGUF_BYTES_PER_BLOCK
