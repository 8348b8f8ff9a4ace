"""Anthropic Messages to and from the hub: requests, responses, errors; its streams are in
`anthropic_messages_stream`."""

from __future__ import annotations

from typing import Any, Final

import orjson

from extproc.apis import ApiError, Kind, Schema
from extproc.translate import hub
from extproc.translate.anthropic_messages_stream import (
    STOP_REASONS,
    STOPS,
    StreamDecoder,
    StreamEncoder,
    message_id,
    read_usage,
    write_usage,
)
from extproc.translate.hub import (
    Image,
    Message,
    Part,
    Reasoning,
    Text,
    ToolCall,
    ToolResult,
    Untranslatable,
    invalid,
    misplaced,
    obj,
    string,
    unsupported,
)

SCHEMA: Final = Schema.ANTHROPIC
KIND: Final = Kind.MESSAGES
SUFFIX: Final = "/messages"
# Its token count: the endpoint, the request fields it takes.
COUNT_SUFFIX: Final[str | None] = "/messages/count_tokens"
COUNT_FIELDS: Final = frozenset({"model", "messages", "system", "tools", "tool_choice", "thinking"})
PROTOCOL_HEADERS: Final[tuple[str, ...]] = ("anthropic-version", "anthropic-beta")

# Request fields the hub holds; any other has no place in another API and is dropped (the
# caller logs it at debug level).
_HANDLED: Final = frozenset(
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
        "output_config",
    }
)
_NO_PARAMETERS: Final = {"type": "object", "properties": {}}
_CHOICES: Final[dict[str, hub.Mode]] = {"auto": "auto", "any": "required", "none": "none"}
_CHOICE_TYPES: Final = {"auto": "auto", "required": "any", "none": "none"}

# -- requests ---------------------------------------------------------------------------


def _image(source: Any, path: str) -> Image:
    if not isinstance(source, dict):
        raise invalid(path, "must have a source")
    if source.get("type") == "base64":
        media_type = str(source.get("media_type", "image/png"))
        return Image(media_type=media_type, data=str(source.get("data", "")), path=path)
    if source.get("type") == "url" and isinstance(source.get("url"), str):
        return Image(url=source["url"], path=path)
    raise unsupported(
        f"{path}.source.type", f"image source type {source.get('type')!r} cannot be translated"
    )


def _result(content: Any, path: str) -> list[Text | Image]:
    """A tool result's content: a string, or text and image blocks."""
    if content is None:
        return []
    if isinstance(content, str):
        return [Text(content)]
    if not isinstance(content, list):
        raise invalid(path, "must be a string or an array of text parts")
    parts: list[Text | Image] = []
    for index, block in enumerate(content):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            parts.append(Text(str(block.get("text", ""))))
        elif kind == "image":
            parts.append(_image(block.get("source"), f"{path}[{index}]"))
        else:
            raise unsupported(f"{path}[{index}].type", "only text can be translated here")
    return parts


def _block(block: Any, content: str, index: int) -> Part:
    """A content block; `content` is the path of the array it is in."""
    kind = block.get("type") if isinstance(block, dict) else None
    if kind == "text":
        return Text(str(block.get("text", "")))
    path = f"{content}[{index}]"
    if kind == "image":
        return _image(block.get("source"), path)
    if kind == "tool_use":
        arguments = orjson.dumps(block.get("input", {})).decode()
        return ToolCall(str(block.get("id", "")), str(block.get("name", "")), arguments, path)
    if kind == "tool_result":
        result = _result(block.get("content"), f"{path}.content")
        call_id = str(block.get("tool_use_id", ""))
        return ToolResult(call_id, result, bool(block.get("is_error")), path)
    if kind == "thinking":
        text, signature = string(block.get("thinking")), string(block.get("signature"))
        return Reasoning(text, signature, path=path)
    if kind == "redacted_thinking":
        return Reasoning(redacted=string(block.get("data")), path=path)
    raise unsupported(f"{path}.type", f"block type {kind!r} cannot be translated")


def _message(message: Any, index: int) -> Message:
    role = message.get("role")
    if role != "user" and role != "assistant":
        problem = (
            "a system turn cannot be translated; the top-level `system` can"
            if role == "system"
            else f"role {role!r} cannot be translated"
        )
        raise unsupported(f"messages[{index}].role", problem)
    content = message.get("content")
    if isinstance(content, str):
        return Message(role, [Text(content)])
    path = f"messages[{index}].content"
    if not isinstance(content, list):
        raise invalid(path, "must be a string or an array of blocks")
    parts: list[Part] = []
    for position, block in enumerate(content):
        if type(block) is dict and block.get("type") == "text":  # nearly every block
            parts.append(Text(str(block.get("text", ""))))
        else:
            parts.append(_block(block, path, position))
    return Message(role, parts)


def _tool(tool: Any, index: int) -> hub.Tool:
    if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
        raise invalid(f"tools[{index}]", "must have a name")
    if tool.get("type") not in (None, "custom"):
        raise unsupported(
            f"tools[{index}].type", f"server tool {tool['type']!r} cannot be translated"
        )
    schema, description = tool.get("input_schema"), tool.get("description")
    return hub.Tool(
        tool["name"],
        description if isinstance(description, str) else None,
        schema if isinstance(schema, dict) and schema else None,
    )


def _tool_choice(choice: Any) -> tuple[hub.ToolChoice, bool | None]:
    """The choice, and whether calls may run in parallel (None: the API's default)."""
    if not isinstance(choice, dict):
        raise invalid("tool_choice", "must be an object")
    parallel = False if choice.get("disable_parallel_tool_use") else None
    kind = choice.get("type")
    if kind in _CHOICES:
        return hub.ToolChoice(_CHOICES[kind]), parallel
    if kind == "tool" and isinstance(choice.get("name"), str):
        return hub.ToolChoice("tool", choice["name"]), parallel
    raise unsupported("tool_choice.type", "only auto, any, none or tool translate")


def _json_output(config: dict[str, Any], dropped: list[str]) -> hub.JsonOutput | None:
    """`output_config.format`: JSON fitting a schema; the config's other settings (effort)
    have no place in the hub and are named as dropped."""
    dropped.extend(f"output_config.{key}" for key in config if key != "format")
    output = config.get("format")
    if output is None:
        return None
    if not isinstance(output, dict) or output.get("type") != "json_schema":
        raise unsupported("output_config.format.type", "only json_schema translates")
    schema = output.get("schema")
    return hub.JsonOutput(schema if isinstance(schema, dict) else {}, path="output_config.format")


def read_request(body: dict[str, Any]) -> hub.Request:
    system = body.get("system")
    messages = [Message("system", list(hub.texts(system, "system")))] if system else []
    messages += [_message(message, index) for index, message in enumerate(body["messages"])]
    stop = body.get("stop_sequences")
    tools = body.get("tools")
    choice, parallel = (None, None)
    if body.get("tool_choice") is not None:
        choice, parallel = _tool_choice(body["tool_choice"])
    max_tokens = body.get("max_tokens")
    user = obj(body.get("metadata")).get("user_id")
    dropped = [key for key in body if key not in _HANDLED]
    json_output = _json_output(obj(body.get("output_config")), dropped)
    return hub.Request(
        messages,
        max_tokens=max_tokens if isinstance(max_tokens, int) else None,
        temperature=hub.number(body, "temperature"),
        top_p=hub.number(body, "top_p"),
        stop=stop if isinstance(stop, list) and stop else None,
        stream=body.get("stream") is True,
        tools=[_tool(t, i) for i, t in enumerate(tools)] if isinstance(tools, list) else [],
        tool_choice=choice,
        parallel_tool_calls=parallel,
        user=user if isinstance(user, str) else None,
        json_output=json_output,
        dropped=sorted(dropped),
    )


def json_arguments(arguments: str) -> Any:
    """Tool-call arguments (JSON text) as the object Anthropic expects; text that is not a
    JSON object is kept under "arguments" rather than lost."""
    if not arguments.strip():
        return {}
    try:
        parsed = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return {"arguments": arguments}
    return parsed if isinstance(parsed, dict) else {"arguments": parsed}


def _source(image: Image) -> dict[str, Any]:
    if image.data is None:
        return {"type": "url", "url": image.url}
    return {"type": "base64", "media_type": image.media_type, "data": image.data}


def _thinking(part: Reasoning) -> dict[str, Any]:
    if part.redacted:
        return {"type": "redacted_thinking", "data": part.redacted}
    return {"type": "thinking", "thinking": part.text, "signature": part.signature}


def _content(part: Text | Image) -> dict[str, Any]:
    if isinstance(part, Text):
        return {"type": "text", "text": part.text}
    return {"type": "image", "source": _source(part)}


def _blocks(message: Message) -> list[dict[str, Any]]:
    user = message.role == "user"
    blocks: list[dict[str, Any]] = []
    for part in message.parts:
        if isinstance(part, Text):  # nearly every part: first, and no call
            blocks.append({"type": "text", "text": part.text})
        elif isinstance(part, Image):
            blocks.append(_content(part))
        elif isinstance(part, ToolCall) and not user:
            arguments = json_arguments(part.arguments)
            blocks.append(
                {"type": "tool_use", "id": part.id, "name": part.name, "input": arguments}
            )
        elif isinstance(part, ToolResult) and user:
            blocks.append(_tool_result(part))
        elif isinstance(part, Reasoning) and not user:
            # Anthropic checks a thinking block's signature: reasoning without one (another
            # provider's) stays out, as it would of an API without a place for it.
            if part.signature or part.redacted:
                blocks.append(_thinking(part))
        else:
            where = "a user turn" if user else "an assistant turn"
            raise misplaced(part, f"it cannot be translated in {where}")
    return blocks


def _tool_result(result: ToolResult) -> dict[str, Any]:
    parts = result.parts
    content: Any
    if len(parts) == 1 and isinstance(parts[0], Text):
        content = parts[0].text
    else:
        content = [_content(part) for part in parts]
    block = {"type": "tool_result", "tool_use_id": result.call_id, "content": content}
    if result.is_error:
        block["is_error"] = True
    return block


def _append(messages: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> None:
    """Add a turn, merging consecutive turns of the same role into one."""
    if not blocks:
        return
    if messages and messages[-1]["role"] == role:
        messages[-1]["content"].extend(blocks)
    else:
        messages.append({"role": role, "content": blocks})


def _check(request: hub.Request) -> None:
    hub.one_choice(request)
    temperature = request.temperature
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


def _tool_choice_out(request: hub.Request) -> dict[str, Any] | None:
    choice = request.tool_choice
    out: dict[str, Any] | None = None
    if choice is not None and choice.mode == "tool":
        out = {"type": "tool", "name": choice.name}
    elif choice is not None:
        out = {"type": _CHOICE_TYPES[choice.mode]}
    if request.parallel_tool_calls is False:
        out = {**(out or {"type": "auto"}), "disable_parallel_tool_use": True}
    return out


def write_request(request: hub.Request, model: str, default_max_tokens: int) -> dict[str, Any]:
    _check(request)
    system: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []
    for message in request.messages:
        if message.role == "system":
            text = hub.joined(message.parts)
            if text:
                system.append({"type": "text", "text": text})
        else:
            _append(messages, message.role, _blocks(message))
    out: dict[str, Any] = {"model": model, "messages": messages}
    if system:
        out["system"] = system
    max_tokens = request.max_tokens
    out["max_tokens"] = max_tokens if max_tokens is not None else default_max_tokens
    if request.temperature is not None:
        out["temperature"] = request.temperature
    if request.top_p is not None:
        out["top_p"] = request.top_p
    if request.stop is not None:
        out["stop_sequences"] = request.stop
    if request.stream:
        out["stream"] = True
    if request.tools:
        out["tools"] = [_tool_out(tool) for tool in request.tools]
    choice = _tool_choice_out(request)
    if choice is not None and (request.tools or choice["type"] == "none"):
        out["tool_choice"] = choice
    if request.user is not None:
        out["metadata"] = {"user_id": request.user}
    output = request.json_output
    if output is not None:
        if output.schema is None:
            raise unsupported(f"{output.path}.type", "this model answers JSON to a schema only")
        out["output_config"] = {"format": {"type": "json_schema", "schema": output.schema}}
    return out


def _tool_out(tool: hub.Tool) -> dict[str, Any]:
    out: dict[str, Any] = {"name": tool.name, "input_schema": tool.parameters or _NO_PARAMETERS}
    if tool.description is not None:
        out["description"] = tool.description
    return out


# -- responses and errors ---------------------------------------------------------------


def read_response(body: dict[str, Any]) -> hub.Response:
    parts: list[Part] = []
    content = body.get("content")
    for index, block in enumerate(content if isinstance(content, list) else ()):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text" and isinstance(block.get("text"), str):
            parts.append(Text(block["text"]))
        elif kind in ("tool_use", "thinking", "redacted_thinking"):
            parts.append(_block(block, "content", index))
        # Blocks of Anthropic's server tools and those it may add: no place elsewhere.
    return hub.Response(
        string(body.get("id")),
        string(body.get("model")),
        parts,
        STOPS.get(str(body.get("stop_reason")), hub.Stop.END),
        read_usage(obj(body.get("usage"))),
    )


def write_response(response: hub.Response) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    for part in response.parts:
        if isinstance(part, Text):
            content.append({"type": "text", "text": part.text})
        elif isinstance(part, ToolCall):
            arguments = json_arguments(part.arguments)
            content.append(
                {"type": "tool_use", "id": part.id, "name": part.name, "input": arguments}
            )
        elif isinstance(part, Reasoning):
            content.append(_thinking(part))  # the client shows it, and may send it back
    return {
        "id": message_id(response.id),
        "type": "message",
        "role": "assistant",
        "model": response.model,
        "content": content,
        "stop_reason": STOP_REASONS[response.stop],
        "stop_sequence": None,
        "usage": write_usage(response.usage),
    }


read_error = hub.provider_error


def client_status(status: int) -> int:
    return status


def write_error(error: ApiError) -> bytes:
    return error.body(SCHEMA)


def decoder() -> StreamDecoder:
    return StreamDecoder()


def encoder(include_usage: bool) -> StreamEncoder:
    """Anthropic streams always end with usage: `include_usage` is OpenAI's ask."""
    return StreamEncoder()


def read_count(body: dict[str, Any]) -> int | None:
    """The tokens a count answer gives."""
    tokens = body.get("input_tokens")
    return tokens if type(tokens) is int and tokens >= 0 else None


def write_count(tokens: int) -> dict[str, Any]:
    return {"input_tokens": tokens}
