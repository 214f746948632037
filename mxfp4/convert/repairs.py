"""Repairs that need no guessing, made on the fly as a checkpoint is read: tensors under the names a known broken
save gave them are served under their right names (the bytes are untouched), and what the index got wrong is
set aside. Each repair is reported as an Anomaly (mxfp4.convert.anomalies)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from ..codec.constants import E8M0_BIAS, E8M0_MAX_FINITE
from ..codec.tensor import BLOCKS_SUFFIX, SCALES_SUFFIX
from ..errors import CheckpointError
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
    return TensorStore(files, entries, store.index_anomalies, store.metadata)


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


def float_values(raw: np.ndarray, dtype: str) -> np.ndarray:
    """Raw little-endian bytes of a BF16 / F16 / F32 tensor -> float64 values (exact: each widens losslessly)."""
    if dtype == "BF16":
        return (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    return raw.view(np.float16 if dtype == "F16" else np.float32).astype(np.float64)


def _scale_bytes(values: np.ndarray, reading: str) -> tuple[np.ndarray, np.ndarray]:
    """Float scale values read as ``reading`` -> (the E8M0 bytes, uint8; which values are exactly one): 'codes'
    are the bytes as numbers (integers 0..255), 'powers' their decoded 2**(s - 127), s in 0..254."""
    finite = np.isfinite(values)
    if reading == "codes":
        exact = finite & (values >= 0) & (values <= 255) & (values == np.round(values))
        return np.where(exact, values, 0).astype(np.uint8), exact
    mantissa, exponent = np.frexp(np.where(finite, values, 0))
    code = exponent - 1 + E8M0_BIAS
    exact = finite & (mantissa == 0.5) & (code >= 0) & (code <= E8M0_MAX_FINITE)
    return np.where(exact, code, 0).astype(np.uint8), exact


def float_scales_reading(values: np.ndarray) -> str | None:
    """How float scale values encode E8M0 bytes: 'codes' or 'powers' (see _scale_bytes), or None when they could
    be either (every value an integer power of two) or neither (then no byte is recoverable)."""
    finite = values[np.isfinite(values)]
    codes = bool(_scale_bytes(values, "codes")[1].all())
    powers = finite.size > 0 and bool(_scale_bytes(finite, "powers")[1].all())
    if codes == powers:
        return None
    return "codes" if codes else "powers"


def scale_bytes_from_floats(values: np.ndarray, reading: str, where: str) -> np.ndarray:
    """Float scale values read as ``reading`` -> the E8M0 bytes (uint8); a value that is not one is an error."""
    out, exact = _scale_bytes(values, reading)
    if not exact.all():
        bad = values.reshape(-1)[int(np.argmin(exact.reshape(-1)))]
        raise CheckpointError(f"{where}: scale value {bad!r} is not an E8M0 {reading[:-1]} like the tensor's others")
    return out


def float_scales(store: TensorStore, experts: list[Canonical]) -> tuple[dict[str, str], list[Anomaly]]:
    """Form 6: packed experts whose ``*_scales`` were cast to a float dtype, holding the E8M0 bytes as numbers or
    their decoded powers of two. Which of the two is decided from the first expert's values (exact on either
    reading, so no guess); values that could be either, or neither, are an error naming the tensor.
    -> {scales name: 'codes' | 'powers'} and the anomalies."""
    readings, anomalies = {}, []
    for tensor in experts:
        name = tensor.name + SCALES_SUFFIX
        entry = store.entries.get(name)
        if entry is None or entry.dtype not in FLOAT_CODES or tensor.name + BLOCKS_SUFFIX not in store.entries:
            continue
        where = f"{store.files[name]}: {name!r}"
        reading = float_scales_reading(float_values(store.first_bytes(name, 0), entry.dtype))
        if reading is None:
            raise CheckpointError(
                f"{where} holds {entry.dtype} scales that are neither all E8M0 bytes (integers 0..255) nor all "
                f"decoded powers of two 2**(s - 127), or could be either; the bytes cannot be recovered without a guess"
            )
        readings[name] = reading
        what = "the E8M0 bytes as numbers" if reading == "codes" else "the decoded powers of two"
        anomalies.append(Anomaly("float-scales", f"{where} is {entry.dtype} holding {what}, read as uint8", True))
    return readings, anomalies
