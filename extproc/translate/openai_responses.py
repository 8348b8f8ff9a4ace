"""OpenAI's Responses API to and from the hub: requests, responses, errors; its response
object is in `openai_responses_items`, its streams in `openai_responses_stream`.

What belongs to the caller, not to translation: `store` and `previous_response_id` (the
gateway's conversation state reads them before translation), `metadata`. They are named
as dropped, never refused."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Final

from extproc.apis import ApiError, Kind, Schema
from extproc.translate import hub, openai_chat
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
from extproc.translate.openai_responses_items import (
    call_item,
    item_id,
    message_item,
    read_stop,
    read_usage,
    reasoning_item,
    reasoning_text,
    response_id,
    response_object,
    status_of,
    write_usage,
)
from extproc.translate.openai_responses_stream import StreamDecoder, StreamEncoder

SCHEMA: Final = Schema.OPENAI_RESPONSES
KIND: Final = Kind.RESPONSES
SUFFIX: Final = "/responses"
# Its token count: the endpoint, the request fields it takes.
COUNT_SUFFIX: Final[str | None] = "/responses/input_tokens"
COUNT_FIELDS: Final = frozenset(
    {"model", "input", "instructions", "tools", "tool_choice", "text", "reasoning"}
    | {"parallel_tool_calls"}
)
PROTOCOL_HEADERS: Final[tuple[str, ...]] = ()

# Request fields the hub holds or checks; any other has no place in another API and is
# dropped (the caller logs it at debug level).
_HANDLED: Final = frozenset(
    {
        "model",
        "input",
        "instructions",
        "stream",
        "max_output_tokens",
        "temperature",
        "top_p",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "user",
        "safety_identifier",
        "text",
        "background",
        "conversation",
        "prompt",
    }
)
# What only OpenAI can do with a request: state and runs kept by OpenAI.
_OPENAI_ONLY: Final = {
    "conversation": "a conversation is kept by OpenAI, and this model's backend has none",
    "prompt": "a stored prompt is kept by OpenAI, and this model's backend has none",
    "background": "a background response runs on OpenAI only",
}
_NO_PARAMETERS: Final = {"type": "object", "properties": {}}

# -- requests ---------------------------------------------------------------------------


def _parts(content: Any, path: str) -> list[Text | Image]:
    """A message's content, a function call's output: a string, or an array of parts."""
    if isinstance(content, str):
        return [Text(content)] if content else []
    if not isinstance(content, list):
        raise invalid(path, "must be a string or an array of content parts")
    parts: list[Text | Image] = []
    for position, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        text = part.get("refusal" if kind == "refusal" else "text") if kind else None
        if kind in ("input_text", "output_text", "refusal") and isinstance(text, str):
            parts.append(Text(text))
        elif kind == "input_image" and isinstance(part.get("image_url"), str):
            parts.append(hub.image_of_url(part["image_url"], f"{path}[{position}]"))
        elif kind == "input_image":
            problem = "only an image by URL can be translated, not a file_id"
            raise unsupported(f"{path}[{position}].image_url", problem)
        else:
            problem = f"content part type {kind!r} cannot be translated"
            raise unsupported(f"{path}[{position}].type", problem)
    return parts


def _add(messages: list[Message], role: hub.Role, parts: list[Part]) -> None:
    """Items of one side in a row are one turn (a message and the calls after it, the
    calls' outputs and the question after them), as other APIs hold them. `parts` is the
    caller's own list: the turn keeps it."""
    if messages:
        last = messages[-1]
        if last.role == role and role != "system" and isinstance(last.parts, list):
            last.parts.extend(parts)  # a list: this reader made it
            return
    messages.append(Message(role, parts))


def _message(item: dict[str, Any], path: str, messages: list[Message]) -> None:
    role = item.get("role")
    parts: list[Part] = list(_parts(item.get("content"), f"{path}.content"))
    if role in ("system", "developer"):
        for part in parts:
            if isinstance(part, Image):
                raise misplaced(part, "a system message takes text only")
        _add(messages, "system", parts)
    elif role == "user" or role == "assistant":
        _add(messages, role, parts)
    else:
        raise unsupported(f"{path}.role", f"role {role!r} cannot be translated")


def _call_id(item: dict[str, Any], path: str) -> str:
    call_id = item.get("call_id")
    if not isinstance(call_id, str):
        raise unsupported(f"{path}.call_id", "an item without its call_id cannot be translated")
    return call_id


def _item(item: Any, index: int, messages: list[Message]) -> None:
    if not isinstance(item, dict):
        raise invalid(f"input[{index}]", "must be an object")
    kind = item.get("type", "message")  # a message may leave its type out
    if kind == "message":
        role, content = item.get("role"), item.get("content")
        if type(content) is str and (role == "user" or role == "assistant"):
            # Nearly every item: a turn's text, which keeps no path.
            _add(messages, role, [Text(content)] if content else [])
            return
    path = f"input[{index}]"
    if kind == "message":
        _message(item, path, messages)
    elif kind == "function_call":
        arguments = hub.arguments(item.get("arguments"))
        call = ToolCall(_call_id(item, path), string(item.get("name")), arguments, path)
        _add(messages, "assistant", [call])
    elif kind == "function_call_output":
        output = _parts(item.get("output"), f"{path}.output")
        _add(messages, "user", [ToolResult(_call_id(item, path), output, path=path)])
    elif kind == "reasoning":
        _add(messages, "assistant", [Reasoning(reasoning_text(item), path=path)])
    else:
        raise unsupported(f"{path}.type", f"item type {kind!r} cannot be translated")


def _tool(tool: Any, index: int) -> hub.Tool:
    if not isinstance(tool, dict):
        raise invalid(f"tools[{index}]", "must be an object")
    kind = tool.get("type")
    if kind != "function":
        # A built-in tool (web search, file search, code interpreter, ...) runs at OpenAI.
        problem = f"{kind!r} is not a function tool, and this model's backend cannot run it"
        raise unsupported(f"tools[{index}].type", problem)
    return hub.function_tool(tool, f"tools[{index}]")


def _tool_choice(choice: Any) -> hub.ToolChoice | None:
    if choice is None:
        return None
    if choice in ("auto", "none", "required"):
        return hub.ToolChoice(choice)
    if isinstance(choice, dict) and choice.get("type") == "function":
        if not isinstance(choice.get("name"), str):
            raise invalid("tool_choice.name", "is required")
        return hub.ToolChoice("tool", choice["name"])
    path = "tool_choice.type" if isinstance(choice, dict) else "tool_choice"
    raise unsupported(path, "only auto, none, required or a function translate")


def _json_output(text: dict[str, Any], dropped: list[str]) -> hub.JsonOutput | None:
    """`text.format`: JSON fitting a schema, any JSON object, or text (None); the text
    config's other settings (verbosity) are named as dropped."""
    dropped.extend(f"text.{key}" for key in text if key != "format")
    output = text.get("format")
    kind = output.get("type") if isinstance(output, dict) else None
    if output is None or kind == "text":
        return None
    if kind == "json_object":
        return hub.JsonOutput(path="text.format")
    if not isinstance(output, dict) or kind != "json_schema":
        raise unsupported("text.format.type", "only text, json_object or json_schema translate")
    return hub.json_schema(output, "text.format")


def read_request(body: dict[str, Any]) -> hub.Request:
    for name, problem in _OPENAI_ONLY.items():
        if body.get(name) not in (None, False):
            raise unsupported(name, problem)
    instructions = body.get("instructions")
    messages: list[Message] = []
    if isinstance(instructions, str) and instructions:
        messages.append(Message("system", [Text(instructions)]))
    given = body.get("input")
    if isinstance(given, str):
        messages.append(Message("user", [Text(given)]))
    elif isinstance(given, list):
        for index, item in enumerate(given):
            _item(item, index, messages)
    elif given is not None:
        raise invalid("input", "must be a string or an array of items")
    tools = body.get("tools")
    max_tokens = body.get("max_output_tokens")
    parallel = body.get("parallel_tool_calls")
    user = body.get("safety_identifier") or body.get("user")
    dropped = [key for key in body if key not in _HANDLED]
    json_output = _json_output(obj(body.get("text")), dropped)
    return hub.Request(
        messages,
        max_tokens=max_tokens if isinstance(max_tokens, int) else None,
        temperature=hub.number(body, "temperature"),
        top_p=hub.number(body, "top_p"),
        stream=body.get("stream") is True,
        tools=[_tool(t, i) for i, t in enumerate(tools)] if isinstance(tools, list) else [],
        tool_choice=_tool_choice(body.get("tool_choice")),
        parallel_tool_calls=parallel if isinstance(parallel, bool) else None,
        user=user if isinstance(user, str) and user else None,
        json_output=json_output,
        dropped=sorted(dropped),
    )


def _content(part: Text | Image) -> dict[str, Any]:
    if isinstance(part, Text):
        return {"type": "input_text", "text": part.text}
    return {"type": "input_image", "image_url": hub.image_url(part), "detail": "auto"}


def _output(result: ToolResult) -> str | list[dict[str, Any]]:
    """A tool result as a function call's output: text, or parts when it holds images."""
    parts = result.parts
    if all(isinstance(part, Text) for part in parts):
        text = hub.joined(parts)
        return f"Error: {text}" if result.is_error else text
    out = [_content(part) for part in parts]
    return [{"type": "input_text", "text": "Error:"}, *out] if result.is_error else out


def _user(parts: Sequence[Part], items: list[dict[str, Any]]) -> None:
    """A user turn: its tool results as function call outputs (first: they answer the
    calls before them), the rest one user message."""
    content: list[dict[str, Any]] = []
    for part in parts:
        if isinstance(part, (Text, Image)):
            content.append(_content(part))
        elif isinstance(part, ToolResult):
            output = _output(part)
            items.append(
                {"type": "function_call_output", "call_id": part.call_id, "output": output}
            )
        else:
            raise misplaced(part, "it cannot be translated in a user turn")
    if len(content) == 1 and content[0]["type"] == "input_text":
        items.append({"role": "user", "content": content[0]["text"]})
    elif content:
        items.append({"role": "user", "content": content})


def _assistant(parts: Sequence[Part], items: list[dict[str, Any]]) -> None:
    texts: list[str] = []
    for part in parts:
        if isinstance(part, Text):
            texts.append(part.text)
        elif isinstance(part, ToolCall):
            if texts:
                items.append({"role": "assistant", "content": "".join(texts)})
                texts = []
            call = {"call_id": part.id, "name": part.name, "arguments": part.arguments}
            items.append({"type": "function_call", **call})
        elif isinstance(part, (Image, ToolResult)):
            raise misplaced(part, "an assistant turn takes text and tool calls")
        # Reasoning: OpenAI takes back only its own (with its id and encrypted content),
        # which a client of another API never holds.
    if texts:
        items.append({"role": "assistant", "content": "".join(texts)})


def _check(request: hub.Request) -> None:
    hub.one_choice(request)
    if request.stop:
        raise Untranslatable(
            ApiError(
                400,
                "This model's backend takes no stop sequences.",
                "unsupported_parameter",
                "stop",
            )
        )


def _tool_out(tool: hub.Tool) -> dict[str, Any]:
    # Not strict: the Responses API's default is, and other APIs' schemas need not fit it.
    out: dict[str, Any] = {"type": "function", "name": tool.name, "strict": False}
    if tool.description is not None:
        out["description"] = tool.description
    out["parameters"] = tool.parameters or _NO_PARAMETERS
    return out


def _json_output_out(output: hub.JsonOutput) -> dict[str, Any]:
    if output.schema is None:
        return {"type": "json_object"}
    return {"type": "json_schema", **hub.json_schema_spec(output, output.schema)}


def write_request(request: hub.Request, model: str, default_max_tokens: int) -> dict[str, Any]:
    _check(request)
    instructions: list[str] = []
    items: list[dict[str, Any]] = []
    for message in request.messages:
        if message.role == "system":
            text = hub.joined(message.parts)
            if not items:
                instructions.append(text)  # leading system turns: the instructions
            elif text:
                items.append({"role": "system", "content": text})
        elif message.role == "user":
            _user(message.parts, items)
        else:
            _assistant(message.parts, items)
    out: dict[str, Any] = {"model": model, "input": items}
    if any(instructions):
        out["instructions"] = "\n\n".join(text for text in instructions if text)
    if request.max_tokens is not None:
        out["max_output_tokens"] = request.max_tokens
    sampling = {"temperature": request.temperature, "top_p": request.top_p}
    out.update((key, value) for key, value in sampling.items() if value is not None)
    if request.stream:
        out["stream"] = True
    if request.tools:
        out["tools"] = [_tool_out(tool) for tool in request.tools]
    choice = request.tool_choice
    if choice is not None:
        out["tool_choice"] = (
            {"type": "function", "name": choice.name} if choice.mode == "tool" else choice.mode
        )
    if request.parallel_tool_calls is not None and request.tools:
        out["parallel_tool_calls"] = request.parallel_tool_calls
    if request.user is not None:
        out["user"] = request.user
    if request.json_output is not None:
        out["text"] = {"format": _json_output_out(request.json_output)}
    out["store"] = False  # a client of another API never asked OpenAI to keep its answer
    return out


# -- responses and errors ---------------------------------------------------------------


def read_response(body: dict[str, Any]) -> hub.Response:
    parts: list[Part] = []
    output = body.get("output")
    for index, item in enumerate(output if isinstance(output, list) else ()):
        kind = item.get("type") if isinstance(item, dict) else None
        if kind == "message":
            content = item.get("content")
            for part in content if isinstance(content, list) else ():
                part = obj(part)
                text = part.get("refusal" if part.get("type") == "refusal" else "text")
                if isinstance(text, str) and text:
                    parts.append(Text(text))
        elif kind == "function_call":
            call_id, name = string(item.get("call_id")), string(item.get("name"))
            arguments = hub.arguments(item.get("arguments"))
            parts.append(ToolCall(call_id, name, arguments, f"output[{index}]"))
        elif kind == "reasoning" and (text := reasoning_text(item)):
            parts.append(Reasoning(text, path=f"output[{index}]"))
        # Items of OpenAI's built-in tools, and those it may add: no place elsewhere.
    called = any(isinstance(part, ToolCall) for part in parts)
    return hub.Response(
        string(body.get("id")),
        string(body.get("model")),
        parts,
        read_stop(body, called),
        read_usage(obj(body.get("usage"))),
    )


def write_response(response: hub.Response, created: int | None = None) -> dict[str, Any]:
    """The response object; its items in the answer's order, consecutive text as one
    message, with ids derived from the response's as its stream would name them."""
    ident = response_id(response.id)
    state, incomplete = status_of(response.stop)
    output: list[dict[str, Any]] = []
    texts: list[str] = []

    def flush() -> None:
        if texts:
            message_state = "completed" if incomplete is None else "incomplete"
            index = len(output)
            output.append(message_item(item_id("msg", ident, index), "".join(texts), message_state))
            texts.clear()

    for part in response.parts:
        if isinstance(part, Text):
            texts.append(part.text)
            continue
        flush()
        index = len(output)
        if isinstance(part, ToolCall):
            item = item_id("fc", ident, index)
            output.append(call_item(item, part.id, part.name, part.arguments, "completed"))
        elif isinstance(part, Reasoning) and part.text:
            output.append(reasoning_item(item_id("rs", ident, index), part.text))
    flush()
    return response_object(
        ident,
        response.model,
        created if created is not None else int(time.time()),
        state,
        output,
        write_usage(response.usage),
        incomplete,
    )


# Errors as Chat Completions' (the same envelope, the same statuses).
read_error = hub.provider_error
client_status = openai_chat.client_status


def write_error(error: ApiError) -> bytes:
    return error.body(SCHEMA)


def decoder() -> StreamDecoder:
    return StreamDecoder()


def encoder(include_usage: bool, created: int | None = None) -> StreamEncoder:
    """Responses streams always end with usage: `include_usage` is Chat Completions' ask."""
    return StreamEncoder(created)


def read_count(body: dict[str, Any]) -> int | None:
    """The tokens a count answer gives."""
    tokens = body.get("input_tokens")
    return tokens if type(tokens) is int and tokens >= 0 else None


def write_count(tokens: int) -> dict[str, Any]:
    return {"object": "response.input_tokens", "input_tokens": tokens}
