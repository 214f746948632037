"""MXFP4Tensor: the packed pair (blocks, scales) with its logical shape, sizes and conversions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from ..dtypes import is_torch_tensor
from ..errors import MXFP4Error, OptionError
from . import repack
from .constants import BITS_PER_PARAM, BLOCK_SIZE
from .decode import dequantize
from .layout import check_blocks_scales, logical_shape

BLOCKS_SUFFIX = "_blocks"
SCALES_SUFFIX = "_scales"


@dataclass(frozen=True)
class MXFP4Tensor:
    """An MXFP4 tensor in the gpt-oss / Hugging Face layout.

    blocks: uint8 [..., K/32, 16], element 2j in the low nibble of byte j, 2j+1 in the high nibble.
    scales: uint8 [..., K/32], E8M0 (value 2**(s - 127); 0xFF is NaN).
    Both numpy arrays, or both torch tensors on one device.
    """

    blocks: Any
    scales: Any

    def __post_init__(self) -> None:
        if is_torch_tensor(self.blocks) != is_torch_tensor(self.scales):
            raise OptionError("blocks and scales must both be numpy arrays or both torch tensors")
        check_blocks_scales(self.blocks, self.scales)

    @property
    def shape(self) -> tuple[int, ...]:
        """Logical element shape [..., K]."""
        return logical_shape(tuple(self.blocks.shape))

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def nbytes(self) -> int:
        """Bytes of codes plus scales: 17 per 32 elements."""
        return _nbytes(self.blocks) + _nbytes(self.scales)

    @property
    def bits_per_param(self) -> float:
        """4.25 for any non-empty tensor (128 bits of codes + 8 of scale per 32 elements)."""
        return self.nbytes * 8 / self.numel if self.numel else BITS_PER_PARAM

    def dequantize(self, dtype: Any = None, *, backend: str = "auto") -> Any:
        return dequantize(self.blocks, self.scales, dtype, backend=backend)

    def to_state_dict(self, name: str) -> dict[str, Any]:
        """{name + '_blocks': blocks, name + '_scales': scales}, as gpt-oss checkpoints store them."""
        return {name + BLOCKS_SUFFIX: self.blocks, name + SCALES_SUFFIX: self.scales}

    @classmethod
    def from_state_dict(cls, tensors: Mapping[str, Any], name: str) -> "MXFP4Tensor":
        """Read the pair name_blocks / name_scales from a mapping (a state dict or safetensors file)."""
        keys = (name + BLOCKS_SUFFIX, name + SCALES_SUFFIX)
        missing = [k for k in keys if k not in tensors]
        if missing:
            raise MXFP4Error(
                f"MXFP4 tensor {name!r} needs both {keys[0]!r} and {keys[1]!r}; missing {', '.join(map(repr, missing))}"
            )
        try:
            return cls(tensors[keys[0]], tensors[keys[1]])
        except MXFP4Error as error:
            raise type(error)(f"MXFP4 tensor {name!r}: {error}") from None

    def to_gguf(self) -> Any:
        """GGUF block_mxfp4 bytes [..., K/32, 17] (numpy), a lossless byte move."""
        return repack.hf_to_gguf(_numpy(self.blocks), _numpy(self.scales))

    @classmethod
    def from_gguf(cls, raw: Any) -> "MXFP4Tensor":
        """From GGUF block_mxfp4 bytes [..., n, 17]; the inverse of to_gguf."""
        return cls(*repack.gguf_to_hf(_numpy(raw)))

    def __repr__(self) -> str:
        kind = "torch" if is_torch_tensor(self.blocks) else "numpy"
        return f"MXFP4Tensor(shape={self.shape}, {kind}, {self.nbytes} bytes, {BLOCK_SIZE}-element blocks)"


def _nbytes(array: Any) -> int:
    return int(array.numel() * array.element_size()) if is_torch_tensor(array) else int(array.nbytes)


def _numpy(array: Any) -> Any:
    return array.detach().cpu().numpy() if is_torch_tensor(array) else array
