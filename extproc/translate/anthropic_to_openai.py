"""An Anthropic Messages client in front of an OpenAI Chat Completions backend.

Pure functions: the client's request body -> an OpenAI request body; an OpenAI response
(JSON, or stream chunks one at a time) -> what the Anthropic client expects.
"""

from __future__ import annotations

from typing import Any

import orjson

from extproc.translate.common import (
    Dropped,
    count,
    invalid,
    json_arguments,
    obj,
    text_of_parts,
    unsupported,
)

STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
_HANDLED = frozenset(
    {
        "model",
        "messages",
        "system",
        "max_tokens",
        "stream",
        "temperature",
        "top_p",
        "stop_sequences",
        "tools",
        "tool_choice",
        "metadata",
    }
)


def _image_url(source: Any, path: str) -> str:
    if not isinstance(source, dict):
        raise invalid(path, "must have a source")
    if source.get("type") == "base64":
        return f"data:{source.get('media_type', 'image/png')};base64,{source.get('data', '')}"
    if source.get("type") == "url" and isinstance(source.get("url"), str):
        return str(source["url"])
    raise unsupported(
        f"{path}.source.type", f"image source type {source.get('type')!r} cannot be translated"
    )


def _user(content: Any, path: str, out: list[dict[str, Any]]) -> None:
    """An Anthropic user turn: tool results become `tool` messages (first, as OpenAI
    requires them right after the assistant's calls), the rest one user message."""
    if isinstance(content, str):
        out.append({"role": "user", "content": content})
        return
    if not isinstance(content, list):
        raise invalid(path, "must be a string or an array of blocks")
    parts: list[dict[str, Any]] = []
    for index, block in enumerate(content):
        kind = block.get("type") if isinstance(block, dict) else None
        here = f"{path}[{index}]"
        if kind == "text":
            parts.append({"type": "text", "text": str(block.get("text", ""))})
        elif kind == "image":
            parts.append(
                {"type": "image_url", "image_url": {"url": _image_url(block.get("source"), here)}}
            )
        elif kind == "tool_result":
            result = block.get("content")
            text = result if isinstance(result, str) else text_of_parts(result, f"{here}.content")
            if block.get("is_error"):
                text = f"Error: {text}"
            out.append(
                {"role": "tool", "tool_call_id": str(block.get("tool_use_id", "")), "content": text}
            )
        else:
            raise unsupported(f"{here}.type", f"block type {kind!r} cannot be translated")
    if parts:
        if all(p["type"] == "text" for p in parts) and len(parts) == 1:
            out.append({"role": "user", "content": parts[0]["text"]})
        else:
            out.append({"role": "user", "content": parts})


def _assistant(content: Any, path: str, out: list[dict[str, Any]]) -> None:
    if isinstance(content, str):
        out.append({"role": "assistant", "content": content})
        return
    if not isinstance(content, list):
        raise invalid(path, "must be a string or an array of blocks")
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for index, block in enumerate(content):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(str(block.get("text", "")))
        elif kind == "tool_use":
            calls.append(
                {
                    "id": str(block.get("id", "")),
                    "type": "function",
                    "function": {
                        "name": str(block.get("name", "")),
                        "arguments": orjson.dumps(block.get("input", {})).decode(),
                    },
                }
            )
        elif kind in ("thinking", "redacted_thinking"):
            continue  # the provider's own reasoning; OpenAI has no place for it
        else:
            raise unsupported(f"{path}[{index}].type", f"block type {kind!r} cannot be translated")
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        message["tool_calls"] = calls
    out.append(message)


def _tool_choice(choice: Any) -> tuple[Any, bool | None]:
    """(OpenAI tool_choice, parallel_tool_calls) for an Anthropic tool_choice."""
    if not isinstance(choice, dict):
        raise invalid("tool_choice", "must be an object")
    parallel = False if choice.get("disable_parallel_tool_use") else None
    kind = choice.get("type")
    if kind == "auto":
        return "auto", parallel
    if kind == "any":
        return "required", parallel
    if kind == "none":
        return "none", parallel
    if kind == "tool" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}, parallel
    raise unsupported("tool_choice.type", "only auto, any, none or tool translate")


def request(body: dict[str, Any], model: str) -> tuple[dict[str, Any], Dropped]:
    """An Anthropic Messages request -> an OpenAI chat request, and the fields dropped."""
    messages: list[dict[str, Any]] = []
    system = body.get("system")
    if system:
        messages.append({"role": "system", "content": text_of_parts(system, "system")})
    for index, message in enumerate(body["messages"]):
        path = f"messages[{index}].content"
        role = message.get("role")
        if role == "user":
            _user(message.get("content"), path, messages)
        elif role == "assistant":
            _assistant(message.get("content"), path, messages)
        elif role == "system":
            raise unsupported(
                f"messages[{index}].role",
                "a system turn cannot be translated; the top-level `system` can",
            )
        else:
            raise unsupported(f"messages[{index}].role", f"role {role!r} cannot be translated")
    out: dict[str, Any] = {"model": model, "messages": messages, "max_tokens": body["max_tokens"]}
    for key in ("temperature", "top_p"):
        if body.get(key) is not None:
            out[key] = body[key]
    if isinstance(body.get("stop_sequences"), list) and body["stop_sequences"]:
        out["stop"] = body["stop_sequences"]
    if body.get("stream") is True:
        # Anthropic streams always end with usage; OpenAI's only when asked.
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    tools = body.get("tools")
    if isinstance(tools, list) and tools:
        converted = []
        for index, tool in enumerate(tools):
            if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
                raise invalid(f"tools[{index}]", "must have a name")
            if tool.get("type") not in (None, "custom"):
                raise unsupported(
                    f"tools[{index}].type", f"server tool {tool['type']!r} cannot be translated"
                )
            function: dict[str, Any] = {
                "name": tool["name"],
                "parameters": tool.get("input_schema") or {"type": "object", "properties": {}},
            }
            if isinstance(tool.get("description"), str):
                function["description"] = tool["description"]
            converted.append({"type": "function", "function": function})
        out["tools"] = converted
    if body.get("tool_choice") is not None:
        choice, parallel = _tool_choice(body["tool_choice"])
        out["tool_choice"] = choice
        if parallel is not None and tools:
            out["parallel_tool_calls"] = parallel
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str):
        out["user"] = metadata["user_id"]
    return out, sorted(k for k in body if k not in _HANDLED)


def _anthropic_usage(usage: Any) -> dict[str, int]:
    usage = usage if isinstance(usage, dict) else {}
    details = usage.get("prompt_tokens_details")
    cached = count(details.get("cached_tokens")) if isinstance(details, dict) else 0
    return {
        "input_tokens": max(0, count(usage.get("prompt_tokens")) - cached),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
        "output_tokens": count(usage.get("completion_tokens")),
    }


def message_id(openai_id: str) -> str:
    return openai_id if openai_id.startswith("msg_") else f"msg_{openai_id}"


def response(body: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI chat completion -> an Anthropic message."""
    choices = body.get("choices")
    choice = obj(choices[0]) if isinstance(choices, list) and choices else {}
    message = obj(choice.get("message"))
    content: list[dict[str, Any]] = []
    text = message.get("content")
    if isinstance(text, str) and text:
        content.append({"type": "text", "text": text})
    calls = message.get("tool_calls")
    for call in calls if isinstance(calls, list) else ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            content.append(
                {
                    "type": "tool_use",
                    "id": str(call.get("id", "")),
                    "name": str(function.get("name", "")),
                    "input": json_arguments(function.get("arguments")),
                }
            )
    return {
        "id": message_id(str(body.get("id", ""))),
        "type": "message",
        "role": "assistant",
        "model": body.get("model", ""),
        "content": content,
        "stop_reason": STOP_REASONS.get(str(choice.get("finish_reason")), "end_turn"),
        "stop_sequence": None,
        "usage": _anthropic_usage(body.get("usage")),
    }


class StreamTranslator:
    """OpenAI chat.completion.chunk payloads in, Anthropic stream events out."""

    def __init__(self) -> None:
        self.started = False
        self.finished = False
        self.open_block: tuple[str, Any] | None = None  # ("text", None) or ("tool", index)
        self.blocks = 0
        self.stop_reason = "end_turn"
        self.usage: dict[str, int] = {}

    def _start(self, chunk: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        self.started = True
        message = {
            "id": message_id(str(chunk.get("id", ""))),
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": chunk.get("model", ""),
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return [("message_start", {"type": "message_start", "message": message})]

    def _close(self) -> list[tuple[str, dict[str, Any]]]:
        if self.open_block is None:
            return []
        self.open_block = None
        index = self.blocks - 1
        return [("content_block_stop", {"type": "content_block_stop", "index": index})]

    def _open(
        self, key: tuple[str, Any], block: dict[str, Any]
    ) -> list[tuple[str, dict[str, Any]]]:
        events = self._close()
        self.open_block = key
        self.blocks += 1
        start = {"type": "content_block_start", "index": self.blocks - 1, "content_block": block}
        return [*events, ("content_block_start", start)]

    def _delta(self, delta: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        payload = {"type": "content_block_delta", "index": self.blocks - 1, "delta": delta}
        return ("content_block_delta", payload)

    def chunk(self, chunk: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        """Events (name, payload) for one OpenAI chunk."""
        if "error" in chunk and "choices" not in chunk:
            error = obj(chunk.get("error"))
            return [
                (
                    "error",
                    {
                        "type": "error",
                        "error": {"type": "api_error", "message": str(error.get("message", ""))},
                    },
                )
            ]
        events = [] if self.started else self._start(chunk)
        if isinstance(chunk.get("usage"), dict):
            self.usage = _anthropic_usage(chunk["usage"])
        choices = chunk.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue  # n is 1 for Anthropic clients
            delta = obj(choice.get("delta"))
            text = delta.get("content")
            if isinstance(text, str) and text:
                if self.open_block != ("text", None):
                    events += self._open(("text", None), {"type": "text", "text": ""})
                events.append(self._delta({"type": "text_delta", "text": text}))
            for call in delta.get("tool_calls") or ():
                if not isinstance(call, dict):
                    continue
                function = obj(call.get("function"))
                key = ("tool", call.get("index", 0))
                if self.open_block != key:
                    block = {
                        "type": "tool_use",
                        "id": str(call.get("id", "")),
                        "name": str(function.get("name", "")),
                        "input": {},
                    }
                    events += self._open(key, block)
                arguments = function.get("arguments")
                if isinstance(arguments, str) and arguments:
                    events.append(
                        self._delta({"type": "input_json_delta", "partial_json": arguments})
                    )
            reason = choice.get("finish_reason")
            if reason is not None:
                self.stop_reason = STOP_REASONS.get(str(reason), "end_turn")
                events += self._close()
        return events

    def finish(self) -> list[tuple[str, dict[str, Any]]]:
        """The end of the OpenAI stream ([DONE] or the body's end)."""
        if self.finished:
            return []
        self.finished = True
        events = [] if self.started else self._start({})
        events += self._close()
        usage = self.usage or {"output_tokens": 0}
        events.append(
            (
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": self.stop_reason, "stop_sequence": None},
                    "usage": usage,
                },
            )
        )
        events.append(("message_stop", {"type": "message_stop"}))
        return events
