"""Where MXFP4 bits sit: lossless moves between the gpt-oss / Hugging Face layout (blocks [..., n, 16] with
element 2j in the low nibble of byte j, scales [..., n]) and GGUF's ``block_mxfp4`` (17 bytes a block: the
scale, then element j low and j + 16 high), on the C kernels when built and numpy otherwise. Nothing is
requantized. docs/codec.md draws the bytes; mxfp4.codec.layout_reference is the numpy spec of every move."""

from .codec.layout import (
    BACKENDS,
    check_blocks_scales,
    gguf_rows_to_blocks,
    gguf_to_hf,
    gguf_to_hf_nibbles,
    hf_to_gguf,
    hf_to_gguf_nibbles,
    hf_to_gguf_split_rows,
    logical_shape,
    pack_codes,
    unpack_codes,
)

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
