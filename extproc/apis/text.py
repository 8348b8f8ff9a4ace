"""Every piece of text in a request or response body, with its role, rewritable in place."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Container
from dataclasses import dataclass
from typing import Any, Final

import orjson

from extproc.apis import Kind, Schema
from extproc.apis.anthropic_fields import BLOCKS
from extproc.apis.openai_fields import PARTS
from extproc.apis.responses_fields import ITEMS as RESPONSES_ITEMS
from extproc.apis.responses_fields import PARTS as RESPONSES_PARTS

# OpenAI roles onto the policy roles.
_OPENAI_ROLES: Final = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
    "function": "tool",
}


@dataclass(slots=True)
class Slot:
    """One string in a parsed body: container[key]."""

    role: str
    container: Any  # dict or list
    key: Any  # str or int
    json_text: bool = False  # the string is JSON source (tool-call arguments)

    @property
    def text(self) -> str:
        return str(self.container[self.key])

    @text.setter
    def text(self, value: str) -> None:
        self.container[self.key] = value


# What a walk calls with each text it finds: (role, container, key[, as_json]), as_json
# when the value is an object read as its JSON text (an Anthropic tool call's `input`, as
# OpenAI carries tool-call arguments).
Emit = Callable[..., None]


def _text(value: Any, as_json: bool) -> str:
    return orjson.dumps(value).decode() if as_json else str(value)


class Found:
    """The texts of a request, whose they are and where (to rewrite them), as parallel
    lists: a million parts add no object each for the garbage collector to walk."""

    __slots__ = ("containers", "keys", "objects", "roles", "texts")

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.roles: list[str] = []
        self.containers: list[Any] = []
        self.keys: list[Any] = []
        self.objects: set[int] = set()  # the texts that are an object's JSON

    def add(self, role: str, container: Any, key: Any, as_json: bool = False) -> None:
        if as_json:
            self.objects.add(len(self.texts))
        self.texts.append(_text(container[key], as_json))
        self.roles.append(role)
        self.containers.append(container)
        self.keys.append(key)

    def write(self, index: int, text: str) -> None:
        value: Any = text
        if index in self.objects:
            # Text that no longer parses as an object is kept whole under "arguments" (as
            # translation keeps such arguments).
            with contextlib.suppress(orjson.JSONDecodeError):
                value = orjson.loads(text)
            value = value if isinstance(value, dict) else {"arguments": value}
        self.containers[index][self.keys[index]] = value
        self.texts[index] = text


def _string_slots(role: str, container: Any, key: Any, emit: Emit) -> None:
    value = container.get(key) if isinstance(container, dict) else container[key]
    if isinstance(value, str):
        emit(role, container, key)
    elif isinstance(value, list) and value and type(value[0]) is str:
        # Validated: an array of strings, or of token ids not worth a look each.
        for index, item in enumerate(value):
            if isinstance(item, str):
                emit(role, value, index)


@dataclass(frozen=True, slots=True)
class Unread:
    """A part or block whose text the gateway cannot read: a type it does not know, or
    one nested deeper than it reads. `path` leads to it from the body."""

    role: str
    path: tuple[str | int, ...]
    kind: str


# OpenAI content parts carrying text, by the field that holds it. Other published types
# (images, audio, files) hold none a policy can read.
_OPENAI_TEXTS: Final = {"text": "text", "refusal": "refusal"}
# How deep the gateway reads blocks inside blocks: a tool result's (depth 1) documents and
# search results (depth 2). A container any deeper, which no published shape has, is not
# opened: it is unread, as an unknown type is.
_NESTED: Final = 2


def _parts(role: str, content: Any, emit: Emit, unread: list[Unread] | None, message: int) -> None:
    """OpenAI content parts."""
    at = ("messages", message, "content")
    _typed_parts(role, content, _OPENAI_TEXTS, PARTS, at, emit, unread)


def _typed_parts(
    role: str,
    parts: Any,
    texts: dict[str, str],
    known: Container[str],
    at: tuple[str | int, ...],
    emit: Emit,
    unread: list[Unread] | None,
) -> None:
    """Parts tagged by `type`: the text field `texts` names for a type, emitted; a type the
    API does not publish (`known`) reported unread at `at` and the part's index."""
    for index, part in enumerate(parts if isinstance(parts, list) else ()):
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        field = texts.get(kind) if type(kind) is str else None
        if field is not None:
            if isinstance(part.get(field), str):
                emit(role, part, field)
        elif unread is not None and (type(kind) is not str or kind not in known):
            unread.append(Unread(role, (*at, index), str(kind)))


def _request_blocks(
    role: str,
    content: Any,
    emit: Emit,
    unread: list[Unread] | None,
    at: tuple[str | int, ...],
    depth: int = 0,
) -> None:
    """Anthropic content blocks: text, tool calls (their input as JSON text), tool results
    (role tool, MCP's too), and the text of documents and search results."""
    if not isinstance(content, list):
        return
    for index, block in enumerate(content):
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if type(kind) is not str:  # unchecked inside a block the gateway does not know
            kind = repr(kind)
        if kind == "text":
            if isinstance(block.get("text"), str):
                emit(role, block, "text")
        elif kind == "tool_use":
            if isinstance(block.get("input"), dict):
                emit(role, block, "input", True)
        elif kind in _CONTAINERS and depth < _NESTED:
            inner_role = "tool" if kind in ("tool_result", "mcp_tool_result") else role
            for key in ("title", "context"):
                if isinstance(block.get(key), str):
                    emit(inner_role, block, key)
            holder = block.get("source") if kind == "document" else block
            if not isinstance(holder, dict):
                continue
            source = holder.get("type") if kind == "document" else None
            if kind == "document" and (type(source) is not str or source not in _DOCUMENT_SOURCES):
                if unread is not None:
                    unread.append(Unread(role, (*at, index, "source"), f"{kind} {source!r}"))
                continue
            key = "data" if source == "text" else "content"
            inner = holder.get(key)
            if isinstance(inner, str):
                emit(inner_role, holder, key)
            else:
                where = (*at, index, "source", key) if holder is not block else (*at, index, key)
                _request_blocks(inner_role, inner, emit, unread, where, depth + 1)
        elif unread is not None and (kind not in BLOCKS or kind in _CONTAINERS):
            unread.append(Unread(role, (*at, index), str(kind)))


_CONTAINERS: Final = frozenset(("tool_result", "mcp_tool_result", "document", "search_result"))
# Document sources: text (read), content blocks (read), and the binary ones.
_DOCUMENT_SOURCES: Final = frozenset(("text", "content", "base64", "url", "file"))


def request_found(kind: Kind, body: dict[str, Any], unread: list[Unread] | None = None) -> Found:
    """The text of a request, rewritable, and in `unread` (when given) every part or block
    whose text the gateway cannot read."""
    found = Found()
    _request(kind, body, found.add, unread)
    return found


def request_texts(kind: Kind, body: dict[str, Any]) -> list[str]:
    """The text of a request (what request_found() finds), for counting."""
    texts: list[str] = []
    add = texts.append

    def emit(role: str, container: Any, key: Any, as_json: bool = False) -> None:
        add(_text(container[key], as_json))

    _request(kind, body, emit, None)
    return texts


def _request(kind: Kind, body: dict[str, Any], emit: Emit, unread: list[Unread] | None) -> None:
    if kind is Kind.EMBEDDINGS:
        _string_slots("user", body, "input", emit)
    elif kind is Kind.COMPLETIONS:
        _string_slots("user", body, "prompt", emit)
    elif kind is Kind.MESSAGES:
        system = body.get("system")
        if isinstance(system, str):
            emit("system", body, "system")
        else:
            _request_blocks("system", system, emit, unread, ("system",))
        for index, message in enumerate(body.get("messages") or ()):
            if not isinstance(message, dict):
                continue
            # A role Anthropic does not publish gets the most scrutiny: the user's.
            role = _ANTHROPIC_ROLES.get(str(message.get("role")), "user")
            if isinstance(message.get("content"), str):
                emit(role, message, "content")
            else:
                at = ("messages", index, "content")
                _request_blocks(role, message.get("content"), emit, unread, at)
    elif kind is Kind.RESPONSES:
        _responses_request(body, emit, unread)
    elif kind is Kind.CHAT:
        for index, message in enumerate(body.get("messages") or ()):
            if not isinstance(message, dict):
                continue
            # An unknown role gets the most scrutiny: it is treated as the user's.
            role = _OPENAI_ROLES.get(str(message.get("role")), "user")
            if isinstance(message.get("content"), str):
                emit(role, message, "content")
            else:
                _parts(role, message.get("content"), emit, unread, index)
            _tool_calls(message, emit)


_ANTHROPIC_ROLES: Final = {"user": "user", "assistant": "assistant", "system": "system"}
# Responses API content parts carrying text, by the field that holds it; the other
# published types (images, files) hold none a policy can read.
_RESPONSES_TEXTS: Final = {"input_text": "text", "output_text": "text", "refusal": "refusal"}
# Reasoning items' parts: the summary's and the reasoning text's.
_REASONING_TEXTS: Final = {"summary_text": "text", "reasoning_text": "text"}
_REASONING: Final = frozenset(_REASONING_TEXTS)


def _responses_request(body: dict[str, Any], emit: Emit, unread: list[Unread] | None) -> None:
    """The instructions (the system's), and the input: a string (the user's) or items;
    messages by role, function calls' arguments (the assistant's JSON text), their outputs
    (the tool's), reasoning summaries. Items of OpenAI's own tools hold text the gateway
    does not read: unread, as an unknown type is. An item reference holds no text here."""
    if isinstance(body.get("instructions"), str):
        emit("system", body, "instructions")
    items = body.get("input")
    if isinstance(items, str):
        emit("user", body, "input")
        return
    for index, item in enumerate(items if isinstance(items, list) else ()):
        if not isinstance(item, dict):
            continue
        kind = item.get("type", "message")  # a message may leave its type out
        if kind == "message":
            role = _OPENAI_ROLES.get(str(item.get("role")), "user")
            _response_parts(role, item, "content", emit, unread, index)
        elif kind == "function_call":
            if isinstance(item.get("arguments"), str):
                emit("assistant", item, "arguments")
        elif kind == "function_call_output":
            _response_parts("tool", item, "output", emit, unread, index)
        elif kind == "reasoning":
            for key in ("summary", "content"):
                at = ("input", index, key)
                parts = item.get(key)
                _typed_parts("assistant", parts, _REASONING_TEXTS, _REASONING, at, emit, unread)
        elif unread is not None and (type(kind) is not str or kind not in RESPONSES_ITEMS):
            role = _OPENAI_ROLES.get(str(item.get("role")), "user")
            unread.append(Unread(role, ("input", index), str(kind)))


def _response_parts(
    role: str, item: dict[str, Any], key: str, emit: Emit, unread: list[Unread] | None, at: int
) -> None:
    """A Responses API item's content (or output): a string, or content parts."""
    content = item.get(key)
    if isinstance(content, str):
        emit(role, item, key)
        return
    _typed_parts(role, content, _RESPONSES_TEXTS, RESPONSES_PARTS, ("input", at, key), emit, unread)


def _tool_calls(message: dict[str, Any], emit: Emit) -> None:
    for call in message.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict) and isinstance(function.get("arguments"), str):
            emit("assistant", function, "arguments")


def _blocks(role: str, content: Any, out: list[Slot]) -> None:
    """Text blocks of a response's content."""
    if not isinstance(content, list):
        return
    for block in content:
        if isinstance(block, dict) and block.get("type") == "text" and type(block["text"]) is str:
            out.append(Slot(role, block, "text"))


def _output_items(output: Any, out: list[Slot]) -> None:
    """A Responses API answer's output: its messages' text parts, its function calls'
    arguments (JSON text)."""
    for item in output if isinstance(output, list) else ():
        if not isinstance(item, dict):
            continue
        kind = item.get("type")
        if kind == "message":
            content = item.get("content")
            for part in content if isinstance(content, list) else ():
                if (
                    isinstance(part, dict)
                    and part.get("type") == "output_text"
                    and type(part.get("text")) is str
                ):
                    out.append(Slot("assistant", part, "text"))
        elif kind == "function_call" and type(item.get("arguments")) is str:
            out.append(Slot("assistant", item, "arguments", json_text=True))


def response_slots(api: Schema, kind: Kind, body: dict[str, Any]) -> list[Slot]:
    """Model output in a JSON response (the client's schema)."""
    slots: list[Slot] = []
    if api is Schema.ANTHROPIC:
        _blocks("assistant", body.get("content"), slots)
        return slots
    if api is Schema.OPENAI_RESPONSES:
        _output_items(body.get("output"), slots)
        return slots
    for choice in body.get("choices") or ():
        if not isinstance(choice, dict):
            continue
        if kind is Kind.COMPLETIONS:
            if isinstance(choice.get("text"), str):
                slots.append(Slot("assistant", choice, "text"))
            continue
        message = choice.get("message")
        if isinstance(message, dict):
            if isinstance(message.get("content"), str):
                slots.append(Slot("assistant", message, "content"))
            for call in message.get("tool_calls") or ():
                function = call.get("function") if isinstance(call, dict) else None
                if isinstance(function, dict) and isinstance(function.get("arguments"), str):
                    slots.append(Slot("assistant", function, "arguments", json_text=True))
    return slots
