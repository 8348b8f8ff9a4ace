"""Every piece of text in a request or response body, with its role, rewritable in place."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from extproc.apis import Kind
from extproc.config.runtime import Schema

# OpenAI roles onto the policy roles.
_OPENAI_ROLES = {
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


def _string_slots(role: str, container: Any, key: Any, out: list[Slot]) -> None:
    value = container.get(key) if isinstance(container, dict) else container[key]
    if isinstance(value, str):
        out.append(Slot(role, container, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            if isinstance(item, str):
                out.append(Slot(role, value, index))


def _blocks(role: str, content: Any, out: list[Slot]) -> None:
    """Content parts / blocks: text parts, and Anthropic tool results (role tool)."""
    if not isinstance(content, list):
        return
    for block in content:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str):
            out.append(Slot(role, block, "text"))
        elif kind == "tool_result":
            inner = block.get("content")
            if isinstance(inner, str):
                out.append(Slot("tool", block, "content"))
            else:
                _blocks("tool", inner, out)


def request_slots(kind: Kind, body: dict[str, Any]) -> list[Slot]:
    slots: list[Slot] = []
    if kind is Kind.EMBEDDINGS:
        _string_slots("user", body, "input", slots)
    elif kind is Kind.COMPLETIONS:
        _string_slots("user", body, "prompt", slots)
    elif kind is Kind.MESSAGES:
        system = body.get("system")
        if isinstance(system, str):
            slots.append(Slot("system", body, "system"))
        else:
            _blocks("system", system, slots)
        for message in body.get("messages") or ():
            if not isinstance(message, dict):
                continue
            role = "assistant" if message.get("role") == "assistant" else "user"
            if isinstance(message.get("content"), str):
                slots.append(Slot(role, message, "content"))
            else:
                _blocks(role, message.get("content"), slots)
    elif kind is Kind.CHAT:
        for message in body.get("messages") or ():
            if not isinstance(message, dict):
                continue
            # An unknown role gets the most scrutiny: it is treated as the user's.
            role = _OPENAI_ROLES.get(str(message.get("role")), "user")
            if isinstance(message.get("content"), str):
                slots.append(Slot(role, message, "content"))
            else:
                _blocks(role, message.get("content"), slots)
            _tool_call_slots(message, slots)
    return slots


def _tool_call_slots(message: dict[str, Any], slots: list[Slot]) -> None:
    for call in message.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict) and isinstance(function.get("arguments"), str):
            slots.append(Slot("assistant", function, "arguments", json_text=True))


def response_slots(api: Schema, kind: Kind, body: dict[str, Any]) -> list[Slot]:
    """Model output in a JSON response (the client's schema)."""
    slots: list[Slot] = []
    if api is Schema.ANTHROPIC:
        _blocks("assistant", body.get("content"), slots)
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
            _tool_call_slots(message, slots)
    return slots
