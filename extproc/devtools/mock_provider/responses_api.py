"""OpenAI's Responses API as the mock answers it: a message, or a function call when tools
are offered; JSON or streamed as its typed events; and its input token count."""

from __future__ import annotations

import time
from typing import Any

import orjson
from aiohttp import web

from extproc.devtools.mock_provider.reading import (
    count_tokens,
    echo_headers,
    last_user_text,
    prompt_tokens,
    tool_call,
)
from extproc.devtools.mock_provider.replies import (
    Served,
    cut,
    pieces,
    sse,
    stream,
    with_extra_field,
)
from extproc.devtools.mock_provider.shapes import formatted


def _text(content: Any) -> str:
    """A message's text: a string, or its text parts (input, output or refusal)."""
    if isinstance(content, str):
        return content
    parts = content if isinstance(content, list) else ()
    return "".join(
        str(part.get("text") or part.get("refusal") or "")
        for part in parts
        if isinstance(part, dict)
    )


def input_items(given: Any) -> list[Any]:
    """A request's `input` as items (a string is one user message)."""
    if isinstance(given, str):
        return [{"type": "message", "role": "user", "content": given}]
    return list(given) if isinstance(given, list) else []


def as_chat(body: dict[str, Any]) -> dict[str, Any]:
    """The request as the mock's readers take it (Chat Completions' messages): messages by
    role, function call outputs as tool messages, the instructions as the system prompt."""
    given = body.get("input")
    items = [{"role": "user", "content": given}] if isinstance(given, str) else given
    messages: list[dict[str, Any]] = []
    for item in items if isinstance(items, list) else ():
        if not isinstance(item, dict):
            continue
        if item.get("type") == "function_call_output":
            messages.append({"role": "tool", "content": _text(item.get("output"))})
        elif item.get("type", "message") == "message":
            messages.append({"role": item.get("role"), "content": _text(item.get("content"))})
    return {"messages": messages, "system": body.get("instructions"), "tools": body.get("tools")}


def _usage(prompt: int, completion: int) -> dict[str, Any]:
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + completion,
    }


def _response(
    body: dict[str, Any], ident: str, state: str, output: list[Any], usage: Any
) -> dict[str, Any]:
    """The response object, echoing the request's settings as OpenAI's does."""
    return {
        "id": ident,
        "object": "response",
        "created_at": int(time.time()),
        "status": state,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": str(body.get("model", "")),
        "output": output,
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0),
        "text": body.get("text") or {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "top_p": body.get("top_p", 1.0),
        "usage": usage,
        "metadata": body.get("metadata") or {},
    }


async def responses(
    request: web.Request, body: dict[str, Any], cut_after: int | None, number: int, served: Served
) -> web.StreamResponse:
    chat = as_chat(body)
    call = tool_call(chat)
    text = last_user_text(chat["messages"])
    if call is None:
        options = body.get("text")
        text = formatted(text, options.get("format") if isinstance(options, dict) else None)
    prompt = prompt_tokens(chat)
    completion = count_tokens(call[1] if call else text)
    ident = f"resp_mock{number}"
    if call is None:
        part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
        item: dict[str, Any] = {
            "id": f"msg_mock{number}",
            "type": "message",
            "status": "completed",
            "role": "assistant",
            "content": [part],
        }
    else:
        item = {
            "id": f"fc_mock{number}",
            "type": "function_call",
            "status": "completed",
            "call_id": f"call_mock{number}",
            "name": call[0],
            "arguments": call[1],
        }
    whole = _response(body, ident, "completed", [item], _usage(prompt, completion))
    if not body.get("stream"):
        if cut_after is not None:
            return await cut(request)
        served(request, prompt, completion)
        return web.Response(
            body=orjson.dumps(with_extra_field(request, whole)),
            content_type="application/json",
            headers=echo_headers(request, text),
        )
    events = _events(_response(body, ident, "in_progress", [], None), item, whole)
    return await stream(
        request,
        [sse(orjson.dumps(e), e["type"]) for e in events],
        cut_after,
        text,
        lambda: served(request, prompt, completion),
    )


def _events(started: dict[str, Any], item: dict[str, Any], whole: dict[str, Any]) -> list[Any]:
    """The stream of one output item: the response created, the item added, its text or
    arguments in pieces, each part and the item done, the response completed."""
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": started},
        {"type": "response.in_progress", "response": started},
        {
            "type": "response.output_item.added",
            "output_index": 0,
            "item": {**item, "status": "in_progress", "content": []}
            if item["type"] == "message"
            else {**item, "status": "in_progress", "arguments": ""},
        },
    ]
    at = {"item_id": item["id"], "output_index": 0}
    if item["type"] == "message":
        part = item["content"][0]
        text = part["text"]
        events.append(
            {
                "type": "response.content_part.added",
                **at,
                "content_index": 0,
                "part": {**part, "text": ""},
            }
        )
        events += [
            {
                "type": "response.output_text.delta",
                **at,
                "content_index": 0,
                "delta": piece,
                "logprobs": [],
            }
            for piece in pieces(text)
        ]
        events += [
            {
                "type": "response.output_text.done",
                **at,
                "content_index": 0,
                "text": text,
                "logprobs": [],
            },
            {"type": "response.content_part.done", **at, "content_index": 0, "part": part},
        ]
    else:
        arguments = item["arguments"]
        half = len(arguments) // 2
        events += [
            {"type": "response.function_call_arguments.delta", **at, "delta": piece}
            for piece in (arguments[:half], arguments[half:])
        ]
        events.append(
            {"type": "response.function_call_arguments.done", **at, "arguments": arguments}
        )
    events += [
        {"type": "response.output_item.done", "output_index": 0, "item": item},
        {"type": "response.completed", "response": whole},
    ]
    return [{**event, "sequence_number": n} for n, event in enumerate(events)]


def input_tokens(request: web.Request, body: dict[str, Any]) -> web.Response:
    """POST /v1/responses/input_tokens: what the request's input would count."""
    count = {"object": "response.input_tokens", "input_tokens": prompt_tokens(as_chat(body))}
    return web.Response(
        body=orjson.dumps(count), content_type="application/json", headers=echo_headers(request)
    )
