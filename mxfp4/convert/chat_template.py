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
import warnings
from pathlib import Path

from ..errors import CheckpointError, OptionError, TemplateWarning
from ..gpt_oss.config import read_json
from .stream import Dense, Expert, Source

TEMPLATE_FILE = "chat_template.jinja"
TOKENIZER_CONFIG = "tokenizer_config.json"
HARMONY_TEMPLATE = Path(__file__).resolve().parents[1] / "gpt_oss" / "templates" / "harmony.jinja"


def chat_template_text(choice: str | None) -> str | None:
    """The template text of 'harmony', 'original' or a path to a jinja file (None: keep the source's)."""
    if choice is None:
        return None
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


def with_template(source: Source, template: str | None) -> Source:
    """``source`` carrying ``template`` (text from chat_template_text), or as it is for None."""
    return source if template is None else TemplatedSource(source, template)


def source_templates(source: Source, *, generated: bool = True) -> tuple[str | None, str | None]:
    """(chat_template.jinja's text, tokenizer_config.json's chat_template) as the source carries them (a GGUF's
    template arrives in its rebuilt tokenizer_config.json, unless ``generated`` is False: that rebuilds the whole
    vocabulary); a list of named templates gives its 'default' one."""
    files = {p.name: p for p in source.extra_files()}
    generated = source.generated_files() if generated else {}
    jinja = files[TEMPLATE_FILE].read_text(encoding="utf-8") if TEMPLATE_FILE in files else generated.get(TEMPLATE_FILE)
    if TOKENIZER_CONFIG in files:
        config = read_json(files[TOKENIZER_CONFIG])
    else:
        config = json.loads(generated[TOKENIZER_CONFIG]) if TOKENIZER_CONFIG in generated else {}
    template = config.get("chat_template") if isinstance(config, dict) else None
    if isinstance(template, list):
        template = next(
            (t.get("template") for t in template if isinstance(t, dict) and t.get("name") == "default"), None
        )
    return jinja, template if isinstance(template, str) else None


def effective_template(source: Source) -> str | None:
    """The template transformers would use: chat_template.jinja before tokenizer_config.json's."""
    jinja, config = source_templates(source)
    return jinja if jinja is not None else config


def settle_templates(source: Source) -> Source:
    """A source carrying two different templates is written with the one transformers uses (chat_template.jinja)
    in both places, with a warning: llama.cpp's converter would have taken the other. A GGUF holds one template:
    only carried files can disagree."""
    jinja, config = source_templates(source, generated=False)
    if jinja is None or config is None or jinja == config:
        return source
    warnings.warn(
        f"{source.path}: chat_template.jinja and tokenizer_config.json's chat_template differ; writing "
        f"chat_template.jinja's (the one transformers uses) in both (llama.cpp's converter would take the other)",
        TemplateWarning,
        stacklevel=3,
    )
    return TemplatedSource(source, jinja)


def template_difference(a: str | None, b: str | None) -> str | None:
    """None when the two templates are the same text; otherwise where they first differ, in words."""
    if a == b:
        return None
    if a is None or b is None:
        return "only " + ("B" if a is None else "A") + " carries a chat template"
    lines_a, lines_b = a.splitlines(), b.splitlines()
    line = next((i for i, (x, y) in enumerate(zip(lines_a, lines_b)) if x != y), min(len(lines_a), len(lines_b)))
    shown_a = lines_a[line] if line < len(lines_a) else "(end)"
    shown_b = lines_b[line] if line < len(lines_b) else "(end)"
    return f"chat templates differ at line {line + 1}: {shown_a.strip()[:80]!r} vs {shown_b.strip()[:80]!r}"
