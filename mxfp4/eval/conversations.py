"""Conversations for checking chat templates: the built-in suite (each conversation exercises one feature of the
harmony format, named by its kind) and the reader of a user's own, as OpenAI chat-completions messages.

A conversation file is JSON: a list of objects (or one object) with ``messages`` (chat-completions messages: role
system / developer / user / assistant / tool; an assistant's reasoning in ``reasoning_content``, ``reasoning`` or
``thinking``; ``tool_calls`` as chat-completions writes them), and optionally ``tools`` (chat-completions function
tools), ``reasoning_effort`` (low / medium / high), ``name`` and ``add_generation_prompt`` (default: true when the
last message is not the assistant's).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import CheckpointError

REASONING_EFFORTS = ("low", "medium", "high")
REASONING_KEYS = ("reasoning_content", "reasoning", "thinking")


@dataclass(frozen=True)
class Conversation:
    name: str  # also the kind of divergence it shows: the one feature it exercises
    messages: list[dict]
    tools: list[dict] | None = None
    reasoning_effort: str | None = None
    add_generation_prompt: bool = True
    extra: dict = field(default_factory=dict)


def _tool(name: str, description: str, properties: dict, required: list[str]) -> dict:
    parameters = {"type": "object", "properties": properties, "required": required}
    return {"type": "function", "function": {"name": name, "description": description, "parameters": parameters}}


WEATHER = _tool(
    "get_weather",
    "Gets the current weather in a city.",
    {"location": {"type": "string", "description": "The city, e.g. Paris"}},
    ["location"],
)
SEARCH = _tool(
    "search",
    "Searches the catalogue.\nReturns at most ten items.\nEach item has a title and a price.",
    {
        "query": {"type": "string", "description": "What to look for"},
        "sort": {"type": "string", "enum": ["price", "title"], "default": "price"},
        "limit": {"type": "integer", "description": "How many items", "default": 10},
        "filters": {
            "type": "object",
            "properties": {"in_stock": {"type": "boolean"}, "max_price": {"type": "number"}},
            "required": ["in_stock"],
        },
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    ["query"],
)
NOW = _tool("current_time", "Returns the current time.", {}, [])


def _call(name: str, arguments: dict, i: int = 0) -> dict:
    return {"id": f"call_{i}", "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}


def builtin_suite() -> list[Conversation]:
    """Every feature the harmony format has and the runtimes' templates are known to render differently."""
    user = {"role": "user", "content": "What is the weather in Paris?"}
    call = {"role": "assistant", "content": "", "tool_calls": [_call("get_weather", {"location": "Paris"})]}
    weather = '{"temp": 20, "sky": "clear"}'
    result = {"role": "tool", "tool_call_id": "call_0", "name": "get_weather", "content": weather}
    final = {"role": "assistant", "content": "It is 20 degrees and clear in Paris."}
    suite = [
        Conversation("plain chat", [{"role": "user", "content": "Hello! How are you?"}]),
        Conversation(
            "plain chat, several turns",
            [
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello! How can I help?"},
                {"role": "user", "content": "Tell me a joke."},
            ],
        ),
    ]
    suite += [
        Conversation(f"reasoning effort {effort}", [{"role": "user", "content": "2 + 2?"}], reasoning_effort=effort)
        for effort in REASONING_EFFORTS
    ]
    suite += [
        Conversation(
            "developer instructions only",
            [{"role": "developer", "content": "Answer in French."}, {"role": "user", "content": "Hello"}],
        ),
        Conversation("system message as instructions", [{"role": "system", "content": "Be brief."}, user]),
        Conversation("tools only", [user], tools=[WEATHER]),
        Conversation("instructions and tools", [{"role": "developer", "content": "Be brief."}, user], tools=[WEATHER]),
        Conversation(
            "multi-line description, enum default, optional and nested parameters",
            [{"role": "user", "content": "Find cheap lamps."}],
            tools=[SEARCH],
        ),
        Conversation("tool without parameters", [{"role": "user", "content": "What time is it?"}], tools=[NOW]),
        Conversation("one tool call, JSON result", [user, call, result], tools=[WEATHER]),
        Conversation(
            "two tool calls in one turn",
            [
                {"role": "user", "content": "Weather in Paris and Rome?"},
                {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [
                        _call("get_weather", {"location": "Paris"}),
                        _call("get_weather", {"location": "Rome"}, 1),
                    ],
                },
                {"role": "tool", "tool_call_id": "call_0", "name": "get_weather", "content": '{"temp": 20}'},
                {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": '{"temp": 25}'},
            ],
            tools=[WEATHER],
        ),
        Conversation(
            "tool result as plain text",
            [user, call, {**result, "content": "Sunny, 20 degrees."}],
            tools=[WEATHER],
        ),
        Conversation(
            "reasoning and a tool call, then a final answer",
            [user, {**call, "reasoning_content": "I need the weather tool."}, result, final]
            + [{"role": "user", "content": "Thanks!"}],
            tools=[WEATHER],
        ),
        Conversation(
            "reasoning and a tool call, no final answer yet",
            [user, {**call, "reasoning_content": "I need the weather tool."}, result],
            tools=[WEATHER],
        ),
        Conversation(
            "three turns with reasoning (earlier analysis dropped)",
            [
                {"role": "user", "content": "1 + 1?"},
                {"role": "assistant", "content": "2", "reasoning_content": "Add one and one."},
                {"role": "user", "content": "2 + 2?"},
                {"role": "assistant", "content": "4", "reasoning_content": "Add two and two."},
                {"role": "user", "content": "3 + 3?"},
            ],
        ),
        Conversation(
            "final turn rendered for training",
            [
                {"role": "user", "content": "Name a colour."},
                {"role": "assistant", "content": "Blue.", "reasoning_content": "Pick any colour."},
            ],
            add_generation_prompt=False,
        ),
    ]
    return suite


def read_conversations(path: Path) -> list[Conversation]:
    """A user's conversations (see the module's docstring); a malformed file is an error naming it."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: not a JSON conversation file ({error})") from None
    items = data if isinstance(data, list) else [data]
    conversations = []
    for i, item in enumerate(items):
        where = f"{path}: conversation {i}"
        messages = item.get("messages") if isinstance(item, dict) else None
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            raise CheckpointError(f"{where} has no list of messages")
        for m in messages:
            if m.get("role") not in ("system", "developer", "user", "assistant", "tool"):
                raise CheckpointError(f"{where}: message role {m.get('role')!r} is not a chat-completions role")
        effort = item.get("reasoning_effort")
        if effort is not None and effort not in REASONING_EFFORTS:
            raise CheckpointError(f"{where}: reasoning_effort {effort!r} is not one of {', '.join(REASONING_EFFORTS)}")
        generation = item.get("add_generation_prompt", messages[-1].get("role") != "assistant")
        name = str(item.get("name", f"conversation {i}"))
        conversations.append(Conversation(name, messages, item.get("tools"), effort, bool(generation)))
    return conversations
