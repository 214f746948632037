"""Streaming converters between gpt-oss checkpoint formats.

    from mxfp4.convert import convert
    convert("gpt-oss-20b", "gpt-oss-20b-bf16", to="bf16")

Targets: ``mxfp4`` (HF layout, MXFP4 experts, as openai released it), ``bf16`` (HF layout, dense
experts that transformers loads as a plain model), ``original`` (openai's original/ layout) and
``gguf`` (llama.cpp) and ``mlx`` (mlx-lm's layout). Sources: any of these, or a hub id in the local Hugging
Face cache.
"""

from .api import TARGETS, ConvertResult, convert
from .sources import open_source

__all__ = ["TARGETS", "ConvertResult", "convert", "open_source"]
