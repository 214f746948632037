"""What a checkpoint holds, read from headers alone: per tensor kind, its form, count and bytes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..codec.layout_reference import packed_nbytes
from ..dtypes import DTYPE_SIZES
from ..gpt_oss.tensors import canonical_tensors
from .registry import open_unreported
from .stream import Dense


@dataclass(frozen=True)
class KindRow:
    tensor: str  # e.g. "mlp.experts.down_proj" (summed over layers)
    form: str
    count: int
    shape: tuple[int, ...]
    params: int
    nbytes: int


def summarize(path):
    """(source, rows): one row per tensor kind, bytes as stored (MXFP4 at 4.25 bits per parameter)."""
    source = open_unreported(path)  # inspect lists the anomalies: it describes what readers would refuse
    rows: dict[str, KindRow] = {}
    for tensor in canonical_tensors(source.config):
        read = source.read(tensor)
        params = int(np.prod(read.shape))
        if isinstance(read, Dense):
            form, nbytes = read.stored or (read.dtype, params * DTYPE_SIZES[read.dtype])
        else:
            form = "MXFP4" if read.packed else read.dtype
            nbytes = packed_nbytes(params) if read.packed else params * DTYPE_SIZES[read.dtype]
        key = tensor.short if tensor.layer is not None else tensor.name
        old = rows.get(key)
        rows[key] = KindRow(
            key,
            form,
            (old.count if old else 0) + 1,
            tuple(read.shape),
            (old.params if old else 0) + params,
            (old.nbytes if old else 0) + nbytes,
        )
    return source, list(rows.values())
