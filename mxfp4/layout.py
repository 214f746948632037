"""Where MXFP4 bits sit: lossless moves between the gpt-oss / Hugging Face layout (blocks [..., n, 16] with
element 2j in the low nibble of byte j, scales [..., n]) and GGUF's ``block_mxfp4`` (17 bytes a block: the
scale, then element j low and j + 16 high), on the C kernels when built and numpy otherwise. Nothing is
requantized. docs/codec.md draws the bytes; mxfp4.codec.layout_reference is the numpy spec of every move."""

from .codec.layout import *  # noqa: F403  (the names of mxfp4.codec.layout's __all__)
from .codec.layout import __all__ as __all__
