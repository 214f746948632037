"""Moving one expert's weight between its packed and dense forms.

Packed MXFP4 is [out, in] with blocks along in; dense (transformers) is [in, out]. Packed -> packed
copies bytes and never requantizes; packed -> dense decodes and transposes; dense -> packed transposes
and quantizes with the chosen rule.
"""

from __future__ import annotations

import numpy as np

from ..codec import decode, encode
from ..codec.constants import E8M0_NAN
from ..dtypes import raw_bytes
from ..errors import CheckpointError
from .stream import Expert


def check_scales(scales: np.ndarray, name: str, e: int) -> None:
    """Refuse the NaN scale byte 0xFF: no trained checkpoint holds it, and it decodes to NaN weights."""
    bad = np.flatnonzero(scales.reshape(-1) == E8M0_NAN)
    if bad.size:
        row, block = divmod(int(bad[0]), scales.shape[-1])
        raise CheckpointError(
            f"{name}, expert {e}: {bad.size} blocks carry the NaN scale byte 0xFF (first at row {row}, block {block}); "
            f"they decode to NaN weights, so the checkpoint is corrupt"
        )


def packed_expert(read: Expert, e: int, *, scale_rule: str, rounding: str, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(blocks [out, in/32, 16], scales [out, in/32]) of expert e."""
    if read.packed:
        blocks, scales = read.load_bytes(e) if read.load_bytes is not None else read.load_expert(e)
        scales = (scales if isinstance(scales, np.ndarray) else raw_bytes(scales)).reshape(tuple(scales.shape))
        check_scales(scales, name, e)
        return (blocks if isinstance(blocks, np.ndarray) else raw_bytes(blocks)), scales.reshape(-1)
    dense = read.load_out_in(e).contiguous()
    q = encode.quantize(dense, scale_rule=scale_rule, rounding=rounding, name=f"{name}, expert {e}, as [out, in]")
    return q.blocks.numpy(), q.scales.numpy()


def dense_expert(read: Expert, e: int, dtype: str, name: str = "expert weight", out=None):
    """Expert e as a dense torch tensor [in, out] of dtype; packed experts are decoded straight into that
    transposed layout, into ``out`` (a contiguous [in, out] tensor of dtype) when given."""
    import torch

    if not read.packed:
        return read.load_expert(e).to(getattr(torch, dtype))
    blocks, scales = read.load_expert(e)
    check_scales(raw_bytes(scales).reshape(tuple(scales.shape)), name, e)
    return decode.dequantize_transposed(blocks, scales, getattr(torch, dtype), out=out)
