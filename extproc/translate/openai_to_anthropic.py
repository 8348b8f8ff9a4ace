"""An OpenAI Chat Completions client in front of an Anthropic Messages backend.

Pure functions: the client's request body -> an Anthropic request body; an Anthropic
response (JSON, or SSE events one at a time) -> what the OpenAI client expects.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from extproc.apis import ApiError
from extproc.translate.common import (
    Dropped,
    Untranslatable,
    count,
    data_url,
    invalid,
    json_arguments,
    obj,
    text_of_parts,
    unsupported,
)

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
    "pause_turn": "stop",
    "model_context_window_exceeded": "length",
}
# Request fields the translation uses; any other field has no place in the Messages API
# and is dropped (the caller logs it at debug level).
_HANDLED = frozenset(
    {
        "model",
        "messages",
        "stream",
        "stream_options",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "stop",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "user",
        "n",
    }
)


def _content_blocks(content: Any, path: str) -> list[dict[str, Any]]:
    """OpenAI message content (a string or parts) -> Anthropic content blocks."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise invalid(path, "must be a string or an array of content parts")
    blocks: list[dict[str, Any]] = []
    for index, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            blocks.append({"type": "text", "text": part["text"]})
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if not isinstance(url, str):
                raise invalid(f"{path}[{index}].image_url", "must have a url")
            decoded = data_url(url)
            if decoded is not None:
                media_type, data = decoded
                source = {"type": "base64", "media_type": media_type, "data": data}
            else:
                source = {"type": "url", "url": url}
            blocks.append({"type": "image", "source": source})
        elif kind == "refusal" and isinstance(part.get("refusal"), str):
            blocks.append({"type": "text", "text": part["refusal"]})
        else:
            raise unsupported(
                f"{path}[{index}].type", f"content part type {kind!r} cannot be translated"
            )
    return blocks


def _tool(tool: Any, index: int) -> dict[str, Any]:
    function = tool.get("function") if isinstance(tool, dict) else None
    if isinstance(tool, dict) and tool.get("type") != "function":
        raise unsupported(f"tools[{index}].type", "only function tools can be translated")
    if not isinstance(tool, dict) or not isinstance(function, dict):
        raise invalid(f"tools[{index}]", "must have a function")
    if not isinstance(function.get("name"), str):
        raise invalid(f"tools[{index}].function.name", "is required")
    parameters = function.get("parameters")
    converted: dict[str, Any] = {
        "name": function["name"],
        "input_schema": parameters
        if isinstance(parameters, dict)
        else {"type": "object", "properties": {}},
    }
    if isinstance(function.get("description"), str):
        converted["description"] = function["description"]
    return converted


def _tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    result: dict[str, Any] | None
    if choice is None:
        result = None
    elif choice == "auto":
        result = {"type": "auto"}
    elif choice == "none":
        result = {"type": "none"}
    elif choice == "required":
        result = {"type": "any"}
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        name = choice["function"].get("name")
        if not isinstance(name, str):
            raise invalid("tool_choice.function.name", "is required")
        result = {"type": "tool", "name": name}
    else:
        raise unsupported("tool_choice", "only auto, none, required or a function translate")
    if parallel is False:
        result = {**(result or {"type": "auto"}), "disable_parallel_tool_use": True}
    return result


def _append(messages: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> None:
    """Add a turn, merging consecutive turns of the same role into one."""
    if not blocks:
        return
    if messages and messages[-1]["role"] == role:
        messages[-1]["content"].extend(blocks)
    else:
        messages.append({"role": role, "content": blocks})


def request(
    body: dict[str, Any], model: str, default_max_tokens: int
) -> tuple[dict[str, Any], Dropped]:
    """An OpenAI chat request -> an Anthropic Messages request, and the fields dropped."""
    n = body.get("n")
    if n is not None and n != 1:
        raise Untranslatable(
            ApiError(
                400,
                "This model's backend returns one choice per request; 'n' must be 1.",
                "unsupported_parameter",
                "n",
            )
        )
    temperature = body.get("temperature")
    if temperature is not None and (
        not isinstance(temperature, int | float) or isinstance(temperature, bool) or temperature > 1
    ):
        raise Untranslatable(
            ApiError(
                400,
                "This model accepts a temperature between 0 and 1.",
                "unsupported_value",
                "temperature",
            )
        )
    system: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []
    for index, message in enumerate(body["messages"]):
        path = f"messages[{index}]"
        role = message.get("role")
        if role in ("system", "developer"):
            text = text_of_parts(message.get("content"), f"{path}.content")
            if text:
                system.append({"type": "text", "text": text})
        elif role == "user":
            _append(messages, "user", _content_blocks(message.get("content"), f"{path}.content"))
        elif role == "assistant":
            blocks = _content_blocks(message.get("content"), f"{path}.content")
            calls = message.get("tool_calls")
            if calls is not None and not isinstance(calls, list):
                raise invalid(f"{path}.tool_calls", "must be an array")
            for position, call in enumerate(calls or ()):
                function = call.get("function") if isinstance(call, dict) else None
                if not isinstance(function, dict):
                    raise invalid(f"{path}.tool_calls[{position}]", "must have a function")
                blocks.append(
                    {
                        "type": "tool_use",
                        "id": str(call.get("id") or f"call_{index}_{position}"),
                        "name": str(function.get("name", "")),
                        "input": json_arguments(function.get("arguments")),
                    }
                )
            _append(messages, "assistant", blocks)
        elif role == "tool":
            content = message.get("content")
            result: Any = (
                content if isinstance(content, str) else _content_blocks(content, f"{path}.content")
            )
            _append(
                messages,
                "user",
                [
                    {
                        "type": "tool_result",
                        "tool_use_id": str(message.get("tool_call_id", "")),
                        "content": result,
                    }
                ],
            )
        else:
            raise unsupported(f"{path}.role", f"role {role!r} cannot be translated")
    out: dict[str, Any] = {"model": model, "messages": messages}
    if system:
        out["system"] = system
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    out["max_tokens"] = max_tokens if isinstance(max_tokens, int) else default_max_tokens
    if temperature is not None:
        out["temperature"] = temperature
    if body.get("top_p") is not None:
        out["top_p"] = body["top_p"]
    stop = body.get("stop")
    if isinstance(stop, str):
        out["stop_sequences"] = [stop]
    elif isinstance(stop, list):
        out["stop_sequences"] = stop
    if body.get("stream") is True:
        out["stream"] = True
    tools = body.get("tools")
    if isinstance(tools, list) and tools:
        out["tools"] = [_tool(tool, index) for index, tool in enumerate(tools)]
    choice = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
    if choice is not None and (tools or choice["type"] == "none"):
        out["tool_choice"] = choice
    user = body.get("user")
    if isinstance(user, str) and user:
        out["metadata"] = {"user_id": user}
    dropped = sorted(k for k in body if k not in _HANDLED)
    return out, dropped


def _openai_usage(usage: Any) -> dict[str, Any]:
    usage = usage if isinstance(usage, dict) else {}
    cached = count(usage.get("cache_read_input_tokens"))
    created = count(usage.get("cache_creation_input_tokens"))
    prompt = count(usage.get("input_tokens")) + cached + created
    completion = count(usage.get("output_tokens"))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    }


def response(body: dict[str, Any], created: int | None = None) -> dict[str, Any]:
    """An Anthropic message -> an OpenAI chat completion."""
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    content = body.get("content")
    for block in content if isinstance(content, list) else ():
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif block.get("type") == "tool_use":
            calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {
                        "name": block.get("name"),
                        "arguments": orjson.dumps(block.get("input", {})).decode(),
                    },
                }
            )
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts or not calls else None,
        "refusal": None,
    }
    if calls:
        message["tool_calls"] = calls
    return {
        "id": body.get("id", ""),
        "object": "chat.completion",
        "created": created if created is not None else int(time.time()),
        "model": body.get("model", ""),
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": FINISH_REASONS.get(str(body.get("stop_reason")), "stop"),
            }
        ],
        "usage": _openai_usage(body.get("usage")),
    }


class StreamTranslator:
    """Anthropic stream events in, OpenAI chat.completion.chunk payloads out."""

    def __init__(self, include_usage: bool, created: int | None = None) -> None:
        self.include_usage = include_usage
        self.created = created if created is not None else int(time.time())
        self.id = ""
        self.model = ""
        self.usage: dict[str, Any] = {}
        self.tool_index: dict[int, int] = {}  # Anthropic block index -> OpenAI tool index
        self.finished = False

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }

    def event(self, event: dict[str, Any]) -> list[dict[str, Any] | str]:
        """Chunks for one Anthropic event; the string "[DONE]" ends the stream."""
        kind = event.get("type")
        if kind == "content_block_delta":  # nearly every event: first
            delta = obj(event.get("delta"))
            if delta.get("type") == "text_delta":
                return [self._chunk({"content": delta.get("text", "")})]
            if delta.get("type") == "input_json_delta":
                index = self.tool_index.get(event.get("index", 0), 0)
                call = {"index": index, "function": {"arguments": delta.get("partial_json", "")}}
                return [self._chunk({"tool_calls": [call]})]
            return []
        if kind == "message_start":
            message = obj(event.get("message"))
            self.id = str(message.get("id", ""))
            self.model = str(message.get("model", ""))
            if isinstance(message.get("usage"), dict):
                self.usage.update(message["usage"])
                self.usage.pop("output_tokens", None)
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "content_block_start":
            block = obj(event.get("content_block"))
            if block.get("type") == "tool_use":
                index = self.tool_index.setdefault(event.get("index", 0), len(self.tool_index))
                call = {
                    "index": index,
                    "id": block.get("id"),
                    "type": "function",
                    "function": {"name": block.get("name"), "arguments": ""},
                }
                return [self._chunk({"tool_calls": [call]})]
            return []
        if kind == "message_delta":
            if isinstance(event.get("usage"), dict):
                self.usage.update(event["usage"])
            reason = obj(event.get("delta")).get("stop_reason")
            return [self._chunk({}, FINISH_REASONS.get(str(reason), "stop"))]
        if kind == "message_stop":
            return self.finish()
        if kind == "error":
            error = obj(event.get("error"))
            return [
                {
                    "error": {
                        "message": error.get("message", "The provider reported an error."),
                        "type": error.get("type", "api_error"),
                        "param": None,
                        "code": None,
                    }
                },
                "[DONE]",
            ]
        return []  # ping, content_block_stop, unknown events

    def finish(self) -> list[dict[str, Any] | str]:
        if self.finished:
            return []
        self.finished = True
        out: list[dict[str, Any] | str] = []
        if self.include_usage:
            chunk = self._chunk({})
            chunk["choices"] = []
            chunk["usage"] = _openai_usage(self.usage)
            out.append(chunk)
        out.append("[DONE]")
        return out
