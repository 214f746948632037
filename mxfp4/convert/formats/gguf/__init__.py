"""GGUF for llama.cpp (arch ``gpt-oss``, llama.cpp's tensor names, storage types and metadata, the tokenizer inside):
``source`` reads it back as canonical tensors, ``writer`` writes it, ``vocab`` moves the tokenizer both ways,
``keys`` is the one table of metadata keys, ``config`` and ``fields`` read them. Detected by the file's magic."""

from __future__ import annotations

from pathlib import Path

from ...options import WriteOptions
from ...probe import Probe
from ...result import ConvertResult
from ...stream import Source

TARGETS = ("gguf",)


def detect(probe: Probe) -> bool:
    """A GGUF file (the registry asks the Ollama format first, which claims its own gptoss forms)."""
    return probe.is_gguf


# The reader and writer are imported when first used: they need the gguf package, 0.12 s to import, which a
# conversion between other formats never pays.


def open_gguf(probe: Probe) -> Source:
    from .source import GGUFSource

    return GGUFSource(probe.path, probe.gguf_header)


def write(source: Source, dst: Path, options: WriteOptions) -> ConvertResult:
    from .writer import write_gguf

    return write_gguf(
        source,
        dst,
        force=options.force,
        progress=options.progress,
        scale_rule=options.scale_rule,
        rounding=options.rounding,
    )
