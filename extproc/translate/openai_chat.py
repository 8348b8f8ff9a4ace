"""OpenAI Chat Completions to and from the hub: requests, responses, errors; its streams are
in `openai_chat_stream`."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Final

from extproc.apis import ApiError, Kind, Schema
from extproc.translate import hub
from extproc.translate.hub import (
    Image,
    Message,
    Part,
    Text,
    ToolCall,
    ToolResult,
    invalid,
    misplaced,
    obj,
    string,
    unsupported,
)
from extproc.translate.openai_chat_stream import (
    FINISH_REASONS,
    STOPS,
    StreamDecoder,
    StreamEncoder,
    read_usage,
    write_usage,
)

SCHEMA: Final = Schema.OPENAI
KIND: Final = Kind.CHAT
SUFFIX: Final = "/chat/completions"
# Chat Completions has no token count endpoint: its clients count offline.
COUNT_SUFFIX: Final[str | None] = None
COUNT_FIELDS: Final[frozenset[str]] = frozenset()
PROTOCOL_HEADERS: Final[tuple[str, ...]] = ()

# Request fields the hub holds; any other has no place in another API and is dropped (the
# caller logs it at debug level).
_HANDLED: Final = frozenset(
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
        "response_format",
    }
)
_NO_PARAMETERS: Final = {"type": "object", "properties": {}}
# Anthropic's 529 (overloaded) has no counterpart an OpenAI client knows.
_STATUS: Final = {529: 503}

# -- requests ---------------------------------------------------------------------------


def _parts(content: Any, index: int) -> list[Text | Image]:
    """The content (a string or parts) of message `index`, as hub parts."""
    if isinstance(content, str):
        return [Text(content)] if content else []
    if content is None:
        return []
    path = f"messages[{index}].content"
    if not isinstance(content, list):
        raise invalid(path, "must be a string or an array of content parts")
    parts: list[Text | Image] = []
    for position, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            parts.append(Text(part["text"]))
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if not isinstance(url, str):
                raise invalid(f"{path}[{position}].image_url", "must have a url")
            parts.append(hub.image_of_url(url, f"{path}[{position}]"))
        elif kind == "refusal" and isinstance(part.get("refusal"), str):
            parts.append(Text(part["refusal"]))
        else:
            problem = f"content part type {kind!r} cannot be translated"
            raise unsupported(f"{path}[{position}].type", problem)
    return parts


def _calls(calls: Any, index: int) -> list[ToolCall]:
    path = f"messages[{index}]"
    if not isinstance(calls, list):
        raise invalid(f"{path}.tool_calls", "must be an array")
    out: list[ToolCall] = []
    for position, call in enumerate(calls):
        here = f"{path}.tool_calls[{position}]"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            raise invalid(here, "must have a function")
        call_id = str(call.get("id") or f"call_{index}_{position}")
        name = str(function.get("name", ""))
        out.append(ToolCall(call_id, name, hub.arguments(function.get("arguments")), here))
    return out


def _tool(tool: Any, index: int) -> hub.Tool:
    function = tool.get("function") if isinstance(tool, dict) else None
    if isinstance(tool, dict) and tool.get("type") != "function":
        raise unsupported(f"tools[{index}].type", "only function tools can be translated")
    if not isinstance(tool, dict) or not isinstance(function, dict):
        raise invalid(f"tools[{index}]", "must have a function")
    return hub.function_tool(function, f"tools[{index}].function")


def _tool_choice(choice: Any) -> hub.ToolChoice | None:
    if choice is None:
        return None
    if choice in ("auto", "none", "required"):
        return hub.ToolChoice(choice)
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        name = choice["function"].get("name")
        if not isinstance(name, str):
            raise invalid("tool_choice.function.name", "is required")
        return hub.ToolChoice("tool", name)
    raise unsupported("tool_choice", "only auto, none, required or a function translate")


def _json_output(value: Any) -> hub.JsonOutput | None:
    """`response_format`: JSON fitting a schema, any JSON object, or text (None)."""
    kind = value.get("type") if isinstance(value, dict) else None
    if value is None or kind == "text":
        return None
    if kind == "json_object":
        return hub.JsonOutput(path="response_format")
    if kind != "json_schema":
        raise unsupported("response_format.type", "only text, json_object or json_schema translate")
    return hub.json_schema(obj(value.get("json_schema")), "response_format")


def _json_output_out(output: hub.JsonOutput) -> dict[str, Any]:
    """A hub JSON output as `response_format`."""
    if output.schema is None:
        return {"type": "json_object"}
    return {"type": "json_schema", "json_schema": hub.json_schema_spec(output, output.schema)}


def _message(message: Any, index: int) -> Message:
    role = message.get("role")
    content = message.get("content")
    if role == "user":
        return Message("user", _parts(content, index))
    if role == "assistant":
        calls = message.get("tool_calls")
        parts = _parts(content, index)
        return Message("assistant", parts if calls is None else [*parts, *_calls(calls, index)])
    if role == "tool":
        result = [Text(content)] if isinstance(content, str) else _parts(content, index)
        call_id = str(message.get("tool_call_id", ""))
        return Message("user", [ToolResult(call_id, result, path=f"messages[{index}]")])
    if role in ("system", "developer"):
        return Message("system", hub.texts(content, f"messages[{index}].content"))
    raise unsupported(f"messages[{index}].role", f"role {role!r} cannot be translated")


def read_request(body: dict[str, Any]) -> hub.Request:
    messages = [_message(message, index) for index, message in enumerate(body["messages"])]
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    stop = body.get("stop")
    tools = body.get("tools")
    parallel = body.get("parallel_tool_calls")
    user = body.get("user")
    return hub.Request(
        messages,
        max_tokens=max_tokens if isinstance(max_tokens, int) else None,
        temperature=hub.number(body, "temperature"),
        top_p=hub.number(body, "top_p"),
        stop=[stop] if isinstance(stop, str) else stop if isinstance(stop, list) else None,
        stream=body.get("stream") is True,
        tools=[_tool(t, i) for i, t in enumerate(tools)] if isinstance(tools, list) else [],
        tool_choice=_tool_choice(body.get("tool_choice")),
        parallel_tool_calls=parallel if isinstance(parallel, bool) else None,
        user=user if isinstance(user, str) and user else None,
        choices=hub.integer(body, "n"),
        json_output=_json_output(body.get("response_format")),
        dropped=sorted(k for k in body if k not in _HANDLED),
    )


def _tool_result(result: ToolResult) -> dict[str, Any]:
    for part in result.parts:
        if not isinstance(part, Text):
            raise misplaced(part, "only text can be translated here")
    text = hub.joined(result.parts)
    content = f"Error: {text}" if result.is_error else text
    return {"role": "tool", "tool_call_id": result.call_id, "content": content}


def _user(parts: Sequence[Part], out: list[dict[str, Any]]) -> None:
    """A user turn: tool results become `tool` messages (first, as OpenAI requires them
    right after the assistant's calls), the rest one user message."""
    content: list[dict[str, Any]] = []
    for part in parts:
        if isinstance(part, Text):
            content.append({"type": "text", "text": part.text})
        elif isinstance(part, Image):
            content.append({"type": "image_url", "image_url": {"url": hub.image_url(part)}})
        elif isinstance(part, ToolResult):
            out.append(_tool_result(part))
        else:
            raise misplaced(part, "it cannot be translated in a user turn")
    if len(content) == 1 and content[0]["type"] == "text":
        out.append({"role": "user", "content": content[0]["text"]})
    elif content:
        out.append({"role": "user", "content": content})


def _assistant(parts: Sequence[Part]) -> dict[str, Any]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for part in parts:
        if isinstance(part, Text):
            texts.append(part.text)
        elif isinstance(part, ToolCall):
            function = {"name": part.name, "arguments": part.arguments}
            calls.append({"id": part.id, "type": "function", "function": function})
        elif isinstance(part, (Image, ToolResult)):
            raise misplaced(part, "an assistant turn takes text and tool calls")
        # Reasoning: the provider's own; Chat Completions has no place for it.
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        message["tool_calls"] = calls
    return message


def _tool_out(tool: hub.Tool) -> dict[str, Any]:
    function: dict[str, Any] = {"name": tool.name, "parameters": tool.parameters or _NO_PARAMETERS}
    if tool.description is not None:
        function["description"] = tool.description
    return {"type": "function", "function": function}


def write_request(request: hub.Request, model: str, default_max_tokens: int) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    for message in request.messages:
        if message.role == "system":
            messages.append({"role": "system", "content": hub.joined(message.parts)})
        elif message.role == "user":
            _user(message.parts, messages)
        else:
            messages.append(_assistant(message.parts))
    out: dict[str, Any] = {"model": model, "messages": messages}
    if request.max_tokens is not None:
        out["max_tokens"] = request.max_tokens
    if request.choices is not None:
        out["n"] = request.choices
    sampling = {"temperature": request.temperature, "top_p": request.top_p, "stop": request.stop}
    out.update((key, value) for key, value in sampling.items() if value is not None)
    if request.stream:
        # Other APIs' streams always end with usage (and the gateway meters it); an OpenAI
        # stream only when asked.
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    if request.tools:
        out["tools"] = [_tool_out(tool) for tool in request.tools]
    choice = request.tool_choice
    if choice is not None:
        named = {"type": "function", "function": {"name": choice.name}}
        out["tool_choice"] = named if choice.mode == "tool" else choice.mode
    if request.parallel_tool_calls is not None and request.tools:
        out["parallel_tool_calls"] = request.parallel_tool_calls
    if request.user is not None:
        out["user"] = request.user
    if request.json_output is not None:
        out["response_format"] = _json_output_out(request.json_output)
    return out


# -- responses, usage and errors --------------------------------------------------------


def read_response(body: dict[str, Any]) -> hub.Response:
    choices = body.get("choices")
    choice = obj(choices[0]) if isinstance(choices, list) and choices else {}
    message = obj(choice.get("message"))
    parts: list[Part] = []
    text = message.get("content")
    if isinstance(text, str) and text:
        parts.append(Text(text))
    calls = message.get("tool_calls")
    for call in calls if isinstance(calls, list) else ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            name = str(function.get("name", ""))
            arguments = hub.arguments(function.get("arguments"))
            parts.append(ToolCall(str(call.get("id", "")), name, arguments))
    return hub.Response(
        str(body.get("id", "")),
        string(body.get("model")),
        parts,
        STOPS.get(str(choice.get("finish_reason")), hub.Stop.END),
        read_usage(obj(body.get("usage"))),
    )


def write_response(response: hub.Response, created: int | None = None) -> dict[str, Any]:
    texts = [part.text for part in response.parts if isinstance(part, Text)]
    calls = [
        {"id": p.id, "type": "function", "function": {"name": p.name, "arguments": p.arguments}}
        for p in response.parts
        if isinstance(p, ToolCall)
    ]
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts or not calls else None,
        "refusal": None,
    }
    if calls:
        message["tool_calls"] = calls
    return {
        "id": response.id,
        "object": "chat.completion",
        "created": created if created is not None else int(time.time()),
        "model": response.model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": FINISH_REASONS[response.stop],
            }
        ],
        "usage": write_usage(response.usage),
    }


read_error = hub.provider_error


def client_status(status: int) -> int:
    return _STATUS.get(status, status)


def write_error(error: ApiError) -> bytes:
    return error.body(SCHEMA)


# -- streams ----------------------------------------------------------------------------


def decoder() -> StreamDecoder:
    return StreamDecoder()


def encoder(include_usage: bool, created: int | None = None) -> StreamEncoder:
    return StreamEncoder(include_usage, created)


def read_count(body: dict[str, Any]) -> int | None:
    return None  # no count endpoint answers in this API


def write_count(tokens: int) -> dict[str, Any]:
    return {"input_tokens": tokens}
