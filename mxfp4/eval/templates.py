"""A checkpoint's chat template against the harmony format gpt-oss was trained on: each conversation rendered the
way the runtime of the checkpoint's format renders it, and by openai-harmony, both tokenized with the checkpoint's
own tokenizer, compared token for token.

- HF and MLX directories: transformers' ``apply_chat_template`` (mlx-lm's tokenizer wrapper calls it too), with the
  template transformers picks (``chat_template.jinja`` before ``tokenizer_config.json``'s).
- GGUF: the file's ``tokenizer.chat_template``, rendered by llama-cpp-python's jinja formatter (without it installed,
  by jinja2 set up as that formatter and transformers set it up), after the adjustments llama.cpp makes to messages
  for gpt-oss (an assistant's reasoning passed as ``thinking``; tool-call arguments given as JSON text passed as
  objects). llama.cpp's own server renders with its C++ engine (minja); where minja and jinja2 differ, this is
  jinja2's rendering.
- The reference: openai-harmony 0.0.8 renders the same conversation (its system message with the same reasoning
  effort and date, instructions and tools in its developer message, reasoning as analysis, tool calls to
  ``functions.NAME`` with ``<|constrain|>json``, tool results as commentary); for completion when the conversation
  asks for a generation prompt, else for training. Analysis before the last final answer is dropped as harmony drops
  it.

Both sides get the same date, today's: templates call ``strftime_now``, harmony takes the conversation's start date.
openai-harmony reads o200k_base's ranks from ``TIKTOKEN_ENCODINGS_BASE``; when unset they come from the bpe-openai
wheel (unpacked into a temporary folder), so nothing is downloaded.
"""

from __future__ import annotations

import gzip
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path

from ..convert import open_source
from ..errors import CheckpointError, MissingDependencyError
from ..gpt_oss.harmony_tokenizer import o200k_base_file
from .conversations import REASONING_KEYS, Conversation


@dataclass(frozen=True)
class TemplateCheck:
    name: str  # the conversation, and the kind of divergence it shows
    equal: bool
    index: int | None  # the first token that differs
    runtime: list[str]  # the tokens from there on (a few), as text
    harmony: list[str]
    runtime_tokens: int
    harmony_tokens: int

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class TemplateReport:
    checkpoint: str
    runtime: str  # how the checkpoint's format renders templates
    checks: list[TemplateCheck]

    @property
    def equal(self) -> bool:
        return all(c.equal for c in self.checks)

    def to_json(self) -> dict:
        return {
            "checkpoint": self.checkpoint,
            "runtime": self.runtime,
            "equal": self.equal,
            "divergent": [c.name for c in self.checks if not c.equal],
            "checks": [c.to_json() for c in self.checks],
        }


def _harmony():
    try:
        import openai_harmony
    except ImportError:
        raise MissingDependencyError(
            "comparing templates with harmony needs openai-harmony: pip install openai-harmony"
        ) from None
    if not os.environ.get("TIKTOKEN_ENCODINGS_BASE"):
        folder = Path(tempfile.mkdtemp(prefix="mxfp4-o200k-"))
        (folder / "o200k_base.tiktoken").write_bytes(gzip.decompress(o200k_base_file().read_bytes()))
        os.environ["TIKTOKEN_ENCODINGS_BASE"] = str(folder)
    return openai_harmony


@lru_cache(maxsize=1)
def _harmony_encoding():
    oh = _harmony()
    return oh.load_harmony_encoding(oh.HarmonyEncodingName.HARMONY_GPT_OSS)  # 0.2 s: once, not per conversation


def _reasoning(message: dict) -> str | None:
    return next((message[k] for k in REASONING_KEYS if message.get(k)), None)


def _arguments_text(arguments) -> str:
    return arguments if isinstance(arguments, str) else json.dumps(arguments)


def harmony_text(conversation: Conversation, date: str) -> str:
    """The conversation as openai-harmony renders it."""
    oh = _harmony()
    encoding = _harmony_encoding()
    messages = list(conversation.messages)
    system = oh.SystemContent.new().with_conversation_start_date(date)
    if conversation.reasoning_effort:
        system = system.with_reasoning_effort(oh.ReasoningEffort(conversation.reasoning_effort.capitalize()))
    out = [oh.Message.from_role_and_content(oh.Role.SYSTEM, system)]
    instructions = None
    if messages and messages[0]["role"] in ("system", "developer"):
        instructions = messages.pop(0).get("content") or None
    if instructions or conversation.tools:
        developer = oh.DeveloperContent.new()
        if instructions:
            developer = developer.with_instructions(instructions)
        if conversation.tools:
            developer = developer.with_function_tools(
                [
                    oh.ToolDescription.new(
                        t["function"]["name"], t["function"].get("description", ""), t["function"].get("parameters")
                    )
                    for t in conversation.tools
                ]
            )
        out.append(oh.Message.from_role_and_content(oh.Role.DEVELOPER, developer))
    calls: dict[str, str] = {}  # tool_call_id -> function name
    last_call = None
    for m in messages:
        role = m["role"]
        if role == "user":
            out.append(oh.Message.from_role_and_content(oh.Role.USER, m.get("content") or ""))
        elif role == "assistant":
            reasoning = _reasoning(m)
            tool_calls = m.get("tool_calls") or []
            if tool_calls and not reasoning and m.get("content"):
                reasoning = m["content"]  # content beside tool calls is the call's preamble: analysis
            if reasoning:
                out.append(oh.Message.from_role_and_content(oh.Role.ASSISTANT, reasoning).with_channel("analysis"))
            for call in tool_calls:
                function = call.get("function", call)
                calls[call.get("id", "")] = last_call = function["name"]
                out.append(
                    oh.Message.from_role_and_content(oh.Role.ASSISTANT, _arguments_text(function.get("arguments", {})))
                    .with_channel("commentary")
                    .with_recipient(f"functions.{function['name']}")
                    .with_content_type("<|constrain|>json")
                )
            if not tool_calls:
                answer = oh.Message.from_role_and_content(oh.Role.ASSISTANT, m.get("content") or "")
                out.append(answer.with_channel("final"))
        elif role == "tool":
            name = m.get("name") or calls.get(m.get("tool_call_id", "")) or last_call
            if name is None:
                raise CheckpointError(f"conversation {conversation.name!r}: a tool message follows no tool call")
            author = oh.Author.new(oh.Role.TOOL, f"functions.{name}")
            content = m.get("content")
            text = content if isinstance(content, str) else json.dumps(content)
            result = oh.Message.from_author_and_content(author, text).with_channel("commentary")
            out.append(result.with_recipient("assistant"))
        else:
            raise CheckpointError(f"conversation {conversation.name!r}: a {role} message after the first")
    rendered = oh.Conversation.from_messages(out)
    if conversation.add_generation_prompt:
        tokens = encoding.render_conversation_for_completion(rendered, oh.Role.ASSISTANT)
    else:
        tokens = encoding.render_conversation_for_training(rendered)
    return encoding.decode(tokens)


def runtime_messages(conversation: Conversation) -> list[dict]:
    """Messages as the runtimes hand them to gpt-oss's template: reasoning as ``thinking`` (the field the template
    reads; llama.cpp copies it there too), tool-call arguments as objects (transformers' documented form; llama.cpp
    parses JSON text into one)."""
    out = []
    for m in conversation.messages:
        m = dict(m)
        reasoning = _reasoning(m)
        for key in REASONING_KEYS:
            m.pop(key, None)
        if reasoning:
            m["thinking"] = reasoning
        if m.get("tool_calls"):
            calls = []
            for call in m["tool_calls"]:
                function = dict(call.get("function", call))
                if isinstance(function.get("arguments"), str):
                    try:
                        function["arguments"] = json.loads(function["arguments"])
                    except json.JSONDecodeError:
                        pass  # not JSON: the template gets the text
                calls.append({**call, "function": function})
            m["tool_calls"] = calls
        out.append(m)
    return out


def _template_kwargs(conversation: Conversation) -> dict:
    return {"reasoning_effort": conversation.reasoning_effort} if conversation.reasoning_effort else {}


def hf_text(tokenizer_dir: Path, conversation: Conversation) -> str:
    """The conversation through transformers' apply_chat_template with the directory's template (its
    strftime_now gives today's date)."""
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise MissingDependencyError("rendering an HF template needs transformers: pip install transformers") from None
    tokenizer = _hf_tokenizer(AutoTokenizer, str(tokenizer_dir))
    if tokenizer.chat_template is None:
        raise CheckpointError(f"{tokenizer_dir}: no chat template (chat_template.jinja or tokenizer_config.json)")
    return tokenizer.apply_chat_template(
        runtime_messages(conversation),
        tools=conversation.tools,
        add_generation_prompt=conversation.add_generation_prompt,
        tokenize=False,
        **_template_kwargs(conversation),
    )


_tokenizers: dict = {}


def _hf_tokenizer(auto, path: str):
    if path not in _tokenizers:
        _tokenizers[path] = auto.from_pretrained(path)
    return _tokenizers[path]


def jinja_text(template: str, conversation: Conversation, special: dict, date: str) -> str:
    """The conversation through ``template`` with jinja2, as transformers compiles templates (sandboxed, trim and
    lstrip blocks, loop controls, its tojson), after llama.cpp's message adjustments."""
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise CheckpointError(f"the chat template refused conversation {conversation.name!r}: {message}")

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    environment.filters["tojson"] = tojson
    environment.globals["raise_exception"] = raise_exception
    environment.globals["strftime_now"] = lambda fmt: datetime.strptime(date, "%Y-%m-%d").strftime(fmt)
    return environment.from_string(template).render(
        messages=runtime_messages(conversation),
        tools=conversation.tools,
        add_generation_prompt=conversation.add_generation_prompt,
        **special,
        **_template_kwargs(conversation),
    )


def _llama_cpp_formatter():
    """llama-cpp-python's jinja chat formatter (the class its server renders GGUF templates with), or None."""
    try:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter
    except ImportError:
        return None
    return Jinja2ChatFormatter


def llama_cpp_text(formatter, template: str, conversation: Conversation, special: dict) -> str:
    """The conversation through llama-cpp-python's formatter (its strftime_now gives today's date)."""
    chat = formatter(
        template,
        eos_token=special.get("eos_token", ""),
        bos_token=special.get("bos_token", ""),
        add_generation_prompt=conversation.add_generation_prompt,
    )
    try:
        return chat(
            messages=runtime_messages(conversation), tools=conversation.tools, **_template_kwargs(conversation)
        ).prompt
    except ValueError as error:  # the template's raise_exception
        raise CheckpointError(f"the chat template refused conversation {conversation.name!r}: {error}") from None


def _differ(tokenizer, a: list[int], b: list[int]) -> tuple[int | None, list[str], list[str]]:
    index = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)
    if index is None and len(a) != len(b):
        index = min(len(a), len(b))
    if index is None:
        return None, [], []
    start = max(0, index - 2)

    def shown(ids):
        return [tokenizer.decode([t], skip_special_tokens=False) for t in ids[start : index + 6]]

    return index, shown(a), shown(b)


def check_templates(checkpoint, conversations: list[Conversation]) -> TemplateReport:
    """Every conversation rendered by ``checkpoint``'s runtime and by harmony, compared token for token. Both sides
    render today's date (what the templates' strftime_now gives), read once per conversation."""
    from tokenizers import Tokenizer

    source = open_source(checkpoint)
    with tempfile.TemporaryDirectory(prefix="mxfp4-template-") as scratch:
        if source.kind in ("gguf", "ollama"):
            if source.kind == "ollama":
                raise CheckpointError(f"{checkpoint}: Ollama renders with its own Go template, not a jinja one")
            template = source.fields.get("tokenizer.chat_template")
            if not template:
                raise CheckpointError(f"{checkpoint}: the GGUF holds no tokenizer.chat_template")
            for name, text in source.generated_files().items():
                (Path(scratch) / name).write_text(text, encoding="utf-8")
            config = json.loads((Path(scratch) / "tokenizer_config.json").read_text())
            special = {k: config[k] for k in ("bos_token", "eos_token") if k in config}
            formatter = _llama_cpp_formatter()
            engine = "llama-cpp-python's Jinja2ChatFormatter" if formatter else "jinja2 (as llama-cpp-python renders)"
            runtime = f"GGUF tokenizer.chat_template through {engine}, with llama.cpp's message adjustments"

            def render(conversation, date):
                if formatter is None:
                    return jinja_text(template, conversation, special, date)
                return llama_cpp_text(formatter, template, conversation, special)

            tokenizer_dir = Path(scratch)
        else:
            tokenizer_dir = source.tokenizer_dir()
            runtime = "transformers apply_chat_template"

            def render(conversation, date):
                return hf_text(tokenizer_dir, conversation)

        tokenizer_json = Path(tokenizer_dir) / "tokenizer.json"
        if not tokenizer_json.is_file():
            raise CheckpointError(f"{checkpoint}: no tokenizer.json to compare token ids with")
        if source.kind in ("gguf", "ollama"):
            tokenizer = Tokenizer.from_file(str(tokenizer_json))
        else:  # transformers' fast tokenizer, which renders the template, holds the same one already parsed
            from transformers import AutoTokenizer

            loaded = _hf_tokenizer(AutoTokenizer, str(tokenizer_dir))
            tokenizer = getattr(loaded, "backend_tokenizer", None) or Tokenizer.from_file(str(tokenizer_json))
        checks = []
        for conversation in conversations:
            date = datetime.now().strftime("%Y-%m-%d")
            ours = tokenizer.encode(render(conversation, date), add_special_tokens=False).ids
            reference = tokenizer.encode(harmony_text(conversation, date), add_special_tokens=False).ids
            index, a, b = _differ(tokenizer, ours, reference)
            checks.append(TemplateCheck(conversation.name, index is None, index, a, b, len(ours), len(reference)))
    return TemplateReport(str(checkpoint), runtime, checks)
