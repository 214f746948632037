"""What the formats' detectors look at, each read once and only when first asked: whether the path is a GGUF file
(by its magic: Ollama's blobs have no extension) and its validated header, config.json, and the tensor store."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from ..errors import CheckpointError
from ..gpt_oss.config import read_json
from ..storage.gguf_check import GGUFHeader, is_gguf, validate_gguf
from ..storage.store import TensorStore


class Probe:
    def __init__(
        self,
        path: Path,
        gguf_extra_types: dict[int, tuple[int, int]] | None = None,
        expert_layout: str | None = None,
    ):
        self.path = path
        self.expert_layout = expert_layout  # how a square dense expert is stored, when the caller knows
        self.gguf_extra_types = gguf_extra_types  # tensor types a format admits beyond ggml's: {id: (elements, bytes)}

    @property
    def is_directory(self) -> bool:
        return self.path.is_dir()

    @cached_property
    def is_gguf(self) -> bool:
        return self.path.is_file() and (self.path.suffix == ".gguf" or is_gguf(self.path))

    @cached_property
    def gguf_header(self) -> GGUFHeader:
        """The header, validated before anything is allocated."""
        return validate_gguf(self.path, self.gguf_extra_types)

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @cached_property
    def config(self) -> dict | None:
        """config.json of a directory (None for a file); a directory without one is an error naming it."""
        return read_json(self.config_path) if self.is_directory else None

    @cached_property
    def gpt_oss_config(self) -> dict | None:
        """config.json when it is an HF-form gpt_oss config (the form HF and MLX share); another model_type is an
        error rather than a format no reader claims."""
        config = self.config
        if config is None:
            return None
        if config.get("model_type", "gpt_oss") != "gpt_oss":
            raise CheckpointError(
                f"{self.config_path}: model_type is {config.get('model_type')!r}; mxfp4 convert handles gpt_oss "
                "checkpoints"
            )
        return config

    @cached_property
    def store(self) -> TensorStore:
        return TensorStore.open_dir(self.path)
