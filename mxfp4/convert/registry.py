"""The formats in one table: which reader opens a path (the first whose detect claims it) and which writer makes
each target. Adding a format is its module under formats/ and one row here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..choices import EXPERT_LAYOUTS, TARGETS
from ..codec.rules import check_choice
from ..errors import CheckpointError, OptionError
from ..storage.hub import resolve
from ..storage.ollama_store import PREFIX as OLLAMA_PREFIX
from ..storage.ollama_store import resolve_ollama
from ..storage.safetensors_io import refuse_pickle
from .anomalies import report
from .formats import gguf, hf, mlx, ollama, original
from .formats.ollama.layout import EXTRA_TYPES as GGUF_EXTRA_TYPES  # Ollama's retired MXFP4 type 4
from .options import WriteOptions
from .probe import Probe
from .result import ConvertResult
from .stream import Source


@dataclass(frozen=True)
class Format:
    name: str
    detect: Callable[[Probe], bool]
    open: Callable[[Probe], Source]
    targets: tuple[str, ...] = ()  # the `to` names it writes
    write: Callable[[Source, Path, WriteOptions], ConvertResult] | None = None


# In the order detection asks them: the specific before hf, which takes any gpt_oss directory.
FORMATS: tuple[Format, ...] = (
    Format("ollama", ollama.detect, ollama.open_ollama),
    Format("gguf", gguf.detect, gguf.open_gguf, gguf.TARGETS, gguf.write),
    Format("original", original.detect, original.open_original, original.TARGETS, original.write),
    Format("mlx", mlx.detect, mlx.open_mlx, mlx.TARGETS, mlx.write),
    Format("hf", hf.detect, hf.open_hf, hf.TARGETS, hf.write),
)

WRITERS = {target: f.write for f in FORMATS if f.write is not None for target in f.targets}
assert set(WRITERS) == set(TARGETS), "every target in mxfp4.choices has exactly one writer"


def open_source(spec, *, strict: bool = False, expert_layout: str | None = None) -> Source:
    """Open a checkpoint directory (HF, original/ or MLX), a GGUF file (llama.cpp's or one of Ollama's own forms),
    an Ollama model name ('ollama:gpt-oss:20b'), or a hub id from the local cache. What a known broken save got
    wrong is repaired on the fly with one RepairWarning per kind (mxfp4.convert.anomalies); strict=True refuses
    such a checkpoint instead, naming the anomaly. expert_layout ('in-out': transformers' [E, in, out], or
    'out-in'): how a square dense expert matrix is stored, where neither its shape, its content nor its writer's
    header tells; without it such a checkpoint is refused (never read by a guess)."""
    source = open_unreported(spec, expert_layout=expert_layout)
    report(source.anomalies, strict=strict)
    return source


def layout_needed(spec, expert_layout: str | None) -> str | None:
    """``expert_layout`` if checkpoint ``spec`` needs it (something nothing in the file shows: a square expert's
    orientation, a linear split), else None: how one option serves a command that reads two checkpoints."""
    if expert_layout is None:
        return None
    return expert_layout if any(a.refused for a in open_unreported(spec).anomalies) else None


def open_unreported(spec, *, expert_layout: str | None = None) -> Source:
    """open_source without its verdict on the anomalies (source.anomalies lists them): for doctor and inspect,
    which describe a checkpoint that readers would refuse. Reading its tensors reads them as a correct save holds
    them, except an undecided square expert (served as [E, in, out]: the reason readers refuse it)."""
    if expert_layout is not None:
        check_choice("expert_layout", expert_layout, EXPERT_LAYOUTS)
    path = resolve_ollama(str(spec)) if str(spec).startswith(OLLAMA_PREFIX) else resolve(spec)
    refuse_pickle(path)
    probe = Probe(path, GGUF_EXTRA_TYPES, expert_layout)
    for fmt in FORMATS:
        if fmt.detect(probe):
            return fmt.open(probe)
    raise CheckpointError(f"{path}: give the checkpoint directory (with config.json), or a GGUF file")


def writer_for(to: str) -> Callable[[Source, Path, WriteOptions], ConvertResult]:
    if to not in WRITERS:
        raise OptionError(f"to={to!r} is not one of {', '.join(map(repr, TARGETS))}", parameter="to")
    return WRITERS[to]
