"""Ollama's own gpt-oss GGUF forms (arch ``gptoss``, written by Ollama <= 0.29): ``layout`` (the forms as format
facts; pure) and ``source`` (read as canonical tensors). Read only: newer Ollama reads llama.cpp's GGUF, which the
``gguf`` format writes. Detected by the architecture in the GGUF header."""

from __future__ import annotations

from ...probe import Probe
from ...stream import Source
from .layout import ARCH


def detect(probe: Probe) -> bool:
    return probe.is_gguf and probe.gguf_header.fields.get("general.architecture") == ARCH


def open_ollama(probe: Probe) -> Source:
    from .source import OllamaSource  # needs the gguf package: imported only for an Ollama file

    return OllamaSource(probe.path, probe.gguf_header)
