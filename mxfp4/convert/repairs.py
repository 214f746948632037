"""Repairs that need no guessing, made on the fly as a checkpoint is read: tensors under the names a known broken
save gave them are served under their right names (the bytes are untouched), and what the index got wrong is
set aside. Each repair is reported as an Anomaly (mxfp4.convert.anomalies)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..codec.tensor import BLOCKS_SUFFIX, SCALES_SUFFIX
from ..gpt_oss.tensors import Canonical
from ..storage.store import TensorStore
from .anomalies import Anomaly

FLOAT_CODES = {"BF16", "F16", "F32"}


def _renamed(store: TensorStore, renames: dict[str, str]) -> TensorStore:
    """The same store with tensors ``renames`` (stored name -> right name) seen under their right names."""
    files, entries = {}, {}
    for name, entry in store.entries.items():
        right = renames.get(name, name)
        files[right], entries[right] = store.files[name], dataclasses.replace(entry, name=right)
    return TensorStore(files, entries, store.index_anomalies)


def repair_hf_store(store: TensorStore, experts: list[Canonical], path: Path) -> tuple[TensorStore, list[Anomaly]]:
    """An HF store with the expert names of known broken saves put right, and what its index got wrong, as
    anomalies (repaired: every rename is decided by names, dtypes and shapes alone).

    Form 1 (transformers 5.23's dequantized save): a float 3-D tensor ``X_blocks`` with no ``X_scales`` is the dense
    expert ``X``. Form 2 (transformers 5.4's save of an MXFP4 checkpoint): ``X_blocks_blocks`` / ``X_blocks_scales``
    are ``X_blocks`` / ``X_scales``."""
    anomalies = [Anomaly(kind, detail, repaired=True) for kind, detail in store.index_anomalies]
    renames = {}
    entries = store.entries
    for tensor in experts:
        blocks, scales = tensor.name + BLOCKS_SUFFIX, tensor.name + SCALES_SUFFIX
        doubled_blocks, doubled_scales = blocks + BLOCKS_SUFFIX, blocks + SCALES_SUFFIX
        if doubled_blocks in entries and doubled_scales in entries and blocks not in entries:
            renames[doubled_blocks], renames[doubled_scales] = blocks, scales
            where = store.files[doubled_blocks]
            detail = f"{where}: {doubled_blocks!r} and {doubled_scales!r} read as {blocks!r} and {scales!r}"
            anomalies.append(Anomaly("doubled-packed-suffix", detail, repaired=True))
        elif (
            blocks in entries
            and scales not in entries
            and tensor.name not in entries
            and entries[blocks].dtype in FLOAT_CODES
            and len(entries[blocks].shape) == 3
        ):
            renames[blocks] = tensor.name
            detail = (
                f"{store.files[blocks]}: {blocks!r} holds dense {entries[blocks].dtype} values, read as {tensor.name!r}"
            )
            anomalies.append(Anomaly("dense-under-packed-names", detail, repaired=True))
    return (_renamed(store, renames) if renames else store), anomalies
