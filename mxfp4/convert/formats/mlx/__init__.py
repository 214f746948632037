"""MLX, as ``mlx_lm.convert`` writes gpt-oss: ``layout`` (mlx-lm's names, gate/up split, config, affine packing;
pure), ``source`` (read, including mlx-lm's fused and de-quantized saves) and ``writer``. Detected by its
safetensors' ``{"format": "mlx"}`` metadata; written as target ``mlx``."""

from __future__ import annotations

from pathlib import Path

from ...options import WriteOptions
from ...probe import Probe
from ...result import ConvertResult
from ...stream import Source
from .source import MLXSource, is_mlx_store
from .writer import write_mlx

TARGETS = ("mlx",)


def detect(probe: Probe) -> bool:
    return probe.is_directory and probe.gpt_oss_config is not None and is_mlx_store(probe.store)


def open_mlx(probe: Probe) -> MLXSource:
    return MLXSource(probe.path, probe.gpt_oss_config, probe.store, str(probe.config_path))


def write(source: Source, dst: Path, options: WriteOptions) -> ConvertResult:
    return write_mlx(source, dst, options)
