"""Choosing the chat template an output carries (``--chat-template``): 'harmony' (the template shipped here, which
renders what openai-harmony renders; mxfp4/gpt_oss/templates/harmony.jinja), 'original' (the gpt-oss template as
OpenAI released it, read from the trl wheel's copy), or a jinja file. The source is wrapped so that every writer
(HF, MLX, GGUF) finds the chosen template where it reads templates from: chat_template.jinja (what transformers
prefers) and tokenizer_config.json's chat_template (what llama.cpp's converter prefers), the same text in both."""

from __future__ import annotations

import importlib.util
import json
import shutil
import tempfile
from pathlib import Path

from ..errors import CheckpointError, OptionError
from ..gpt_oss.config import read_json
from .stream import Dense, Expert, Source

TEMPLATE_FILE = "chat_template.jinja"
TOKENIZER_CONFIG = "tokenizer_config.json"
HARMONY_TEMPLATE = Path(__file__).resolve().parents[1] / "gpt_oss" / "templates" / "harmony.jinja"


def chat_template_text(choice: str) -> str:
    """The template text of 'harmony', 'original' or a path to a jinja file."""
    if choice == "harmony":
        return HARMONY_TEMPLATE.read_text(encoding="utf-8")
    if choice == "original":
        spec = importlib.util.find_spec("trl")
        location = spec and spec.submodule_search_locations and next(iter(spec.submodule_search_locations))
        path = Path(location) / "chat_templates" / "gptoss.jinja" if location else None
        if path is None or not path.is_file():
            raise OptionError(
                "chat_template='original' reads OpenAI's gpt-oss template from the trl wheel: pip install trl (or "
                "give the template's file)",
                parameter="chat_template",
            )
        return path.read_text(encoding="utf-8")
    path = Path(choice)
    if not path.is_file():
        raise OptionError(
            f"chat_template={choice!r}: not 'harmony', 'original' or a template file", parameter="chat_template"
        )
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise CheckpointError(f"{path}: a chat template must be UTF-8 text") from None


class TemplatedSource(Source):
    """``base`` with its chat template replaced by ``template`` in every file a writer carries."""

    def __init__(self, base: Source, template: str):
        self.base, self.kind, self.path, self.config = base, base.kind, base.path, base.config
        self.layout, self.anomalies = base.layout, base.anomalies
        self._scratch = tempfile.TemporaryDirectory(prefix="mxfp4-chat-template-")
        self._dir = Path(self._scratch.name)
        carried = {p.name: p for p in base.extra_files()}
        generated = base.generated_files()
        for name, path in carried.items():  # the tokenizer's files in one place, with the template replaced
            shutil.copy2(path, self._dir / name)
        for name, text in generated.items():
            (self._dir / name).write_text(text, encoding="utf-8")
        config_path = self._dir / TOKENIZER_CONFIG
        config = read_json(config_path) if config_path.is_file() else {}
        config["chat_template"] = template
        config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        (self._dir / TEMPLATE_FILE).write_text(template, encoding="utf-8")

    def read(self, tensor) -> Dense | Expert:
        return self.base.read(tensor)

    def extra_files(self) -> list[Path]:
        return sorted(self._dir.iterdir())

    def generated_files(self) -> dict[str, str]:
        return {}

    def source_bytes(self) -> int:
        return self.base.source_bytes()

    def tokenizer_dir(self) -> Path:
        return self._dir

    def __getattr__(self, name: str):  # what a particular source offers beyond Source (its store, its fields)
        return getattr(self.base, name)


def with_chat_template(source: Source, choice: str | None) -> Source:
    return source if choice is None else TemplatedSource(source, chat_template_text(choice))
