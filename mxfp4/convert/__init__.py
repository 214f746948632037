"""Streaming converters between gpt-oss checkpoint formats.

    from mxfp4.convert import convert
    convert("gpt-oss-20b", "gpt-oss-20b-bf16", to="bf16")

Targets: ``mxfp4`` (HF layout, MXFP4 experts, as openai released it), ``bf16`` (HF layout, dense experts that
transformers loads as a plain model), ``original`` (openai's original/ layout), ``gguf`` (llama.cpp) and ``mlx``
(mlx-lm's layout). Sources: any of these, Ollama's own GGUF forms and model names, or a hub id in the local
Hugging Face cache. Each format is a module of mxfp4.convert.formats, listed in mxfp4.convert.registry.
"""

from ..choices import TARGETS
from .api import convert, write
from .options import WriteOptions
from .registry import FORMATS, open_source
from .result import ConvertResult

__all__ = ["FORMATS", "TARGETS", "ConvertResult", "WriteOptions", "convert", "open_source", "write"]
