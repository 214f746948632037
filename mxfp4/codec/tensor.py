"""MXFP4Tensor: the packed pair (blocks, scales) with its logical shape, sizes and conversions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Mapping, TypeVar

import numpy as np

from ..choices import CodecBackend
from ..dtypes import is_torch_tensor
from ..errors import MXFP4Error, OptionError, ShapeError
from . import layout
from .constants import BITS_PER_PARAM, BLOCK_SIZE
from .decode import dequantize
from .layout_reference import check_blocks_scales, logical_shape

BLOCKS_SUFFIX = "_blocks"
SCALES_SUFFIX = "_scales"

if TYPE_CHECKING:
    import torch

# numpy arrays or torch tensors: what blocks and scales are, and so what dequantize gives back.
ArrayT = TypeVar("ArrayT", np.ndarray, "torch.Tensor")


@dataclass(frozen=True, eq=False)
class MXFP4Tensor(Generic[ArrayT]):
    """An MXFP4 tensor in the gpt-oss / Hugging Face layout.

    blocks: uint8 [..., K/32, 16], element 2j in the low nibble of byte j, 2j+1 in the high nibble.
    scales: uint8 [..., K/32], E8M0 (value 2**(s - 127); 0xFF is NaN).
    Both numpy arrays, or both torch tensors on one device.

    ``==`` is identity, as for arrays it would be ambiguous; compare ``blocks`` and ``scales`` for equal bytes.
    ``t[i]``, ``t[a:b]``, ``t[i, a:b]`` index the leading (row) axes, never the last axis, whose blocks of 32
    share a scale.
    """

    blocks: ArrayT
    scales: ArrayT

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

    def dequantize(self, dtype: Any = None, *, backend: CodecBackend = "auto") -> ArrayT:
        """The values [..., K]: a numpy array for a numpy-backed tensor, a torch tensor on its device otherwise."""
        return dequantize(self.blocks, self.scales, dtype, backend=backend)  # type: ignore[call-overload]

    def __getitem__(self, key: Any) -> MXFP4Tensor[ArrayT]:
        """Rows: ``key`` indexes the leading axes (ints, slices, Ellipsis not allowed) and keeps the last whole."""
        keys = key if isinstance(key, tuple) else (key,)
        if any(k is Ellipsis or k is None for k in keys) or len(keys) > len(self.shape) - 1:
            raise ShapeError(
                f"an MXFP4Tensor of shape {self.shape} is indexed on its {len(self.shape) - 1} leading axes only "
                f"(ints and slices); the last axis is packed in blocks of {BLOCK_SIZE} that share a scale"
            )
        return MXFP4Tensor(self.blocks[keys], self.scales[keys])

    def to(self, device: Any) -> MXFP4Tensor[torch.Tensor]:
        """The same bytes as torch tensors on ``device`` ('cpu', 'cuda', a torch.device); a numpy-backed tensor
        becomes torch-backed."""
        import torch

        if is_torch_tensor(self.blocks):
            return MXFP4Tensor(self.blocks.to(device), self.scales.to(device))  # type: ignore[union-attr]
        blocks = torch.from_numpy(np.ascontiguousarray(self.blocks)).to(device)
        return MXFP4Tensor(blocks, torch.from_numpy(np.ascontiguousarray(self.scales)).to(device))

    def numpy(self) -> MXFP4Tensor[np.ndarray]:
        """The same bytes as numpy arrays (copied from a GPU)."""
        return MXFP4Tensor(_numpy(self.blocks), _numpy(self.scales))

    def to_state_dict(self, name: str) -> dict[str, Any]:
        """{name + '_blocks': blocks, name + '_scales': scales}, as gpt-oss checkpoints store them."""
        return {name + BLOCKS_SUFFIX: self.blocks, name + SCALES_SUFFIX: self.scales}

    @classmethod
    def from_state_dict(cls, tensors: Mapping[str, Any], name: str) -> MXFP4Tensor[Any]:
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

    def to_gguf(self) -> np.ndarray:
        """GGUF block_mxfp4 bytes [..., K/32, 17] (numpy), a lossless byte move."""
        return layout.hf_to_gguf(_numpy(self.blocks), _numpy(self.scales))

    @classmethod
    def from_gguf(cls, raw: Any) -> MXFP4Tensor[np.ndarray]:
        """From GGUF block_mxfp4 bytes [..., n, 17]; the inverse of to_gguf."""
        return cls(*layout.gguf_to_hf(_numpy(raw)))

    def __repr__(self) -> str:
        kind = "torch" if is_torch_tensor(self.blocks) else "numpy"
        return f"MXFP4Tensor(shape={self.shape}, {kind}, {self.nbytes} bytes, {BLOCK_SIZE}-element blocks)"


def _nbytes(array: Any) -> int:
    return int(array.numel() * array.element_size()) if is_torch_tensor(array) else int(array.nbytes)


def _numpy(array: Any) -> Any:
    return array.detach().cpu().numpy() if is_torch_tensor(array) else array
