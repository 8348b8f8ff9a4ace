"""The Anthropic Messages API as the mock answers it: text, or a tool_use block when tools
are offered; JSON or streamed."""

from __future__ import annotations

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


def _started(ident: str, model: str, prompt: int) -> dict[str, Any]:
    """The message of an Anthropic stream's message_start event."""
    return {
        "id": ident,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": prompt, "output_tokens": 1},
    }


async def messages(
    request: web.Request, body: dict[str, Any], cut_after: int | None, number: int, served: Served
) -> web.StreamResponse:
    model = str(body.get("model", ""))
    text = last_user_text(body.get("messages", []))
    options = body.get("output_config")
    text = formatted(text, options.get("format") if isinstance(options, dict) else None)
    prompt, completion = prompt_tokens(body), count_tokens(text)
    ident = f"msg_mock{number}"
    call = tool_call(body)
    if call is not None:
        return await _tool_use(request, body, call, ident, number, prompt, cut_after)
    if not body.get("stream"):
        if cut_after is not None:
            return await cut(request)
        payload = {
            "id": ident,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": prompt, "output_tokens": completion},
        }
        served(request, prompt, completion)
        return web.Response(
            body=orjson.dumps(with_extra_field(request, payload)),
            content_type="application/json",
            headers=echo_headers(request, text),
        )
    start = {"type": "message_start", "message": _started(ident, model, prompt)}
    events = [
        sse(orjson.dumps(start), "message_start"),
        sse(
            orjson.dumps(
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                }
            ),
            "content_block_start",
        ),
        sse(b'{"type": "ping"}', "ping"),
    ]
    events += [
        sse(
            orjson.dumps(
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": piece},
                }
            ),
            "content_block_delta",
        )
        for piece in pieces(text)
    ]
    events += [
        sse(b'{"type":"content_block_stop","index":0}', "content_block_stop"),
        sse(
            orjson.dumps(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": {"output_tokens": completion},
                }
            ),
            "message_delta",
        ),
        sse(b'{"type":"message_stop"}', "message_stop"),
    ]
    return await stream(
        request, events, cut_after, text, lambda: served(request, prompt, completion)
    )


async def _tool_use(
    request: web.Request,
    body: dict[str, Any],
    call: tuple[str, str],
    ident: str,
    number: int,
    prompt: int,
    cut_after: int | None,
) -> web.StreamResponse:
    """An Anthropic tool_use reply, JSON or streamed."""
    model = str(body.get("model", ""))
    block = {"type": "tool_use", "id": f"toolu_mock{number}", "name": call[0]}
    output = count_tokens(call[1])
    if not body.get("stream"):
        payload = {
            "id": ident,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{**block, "input": orjson.loads(call[1])}],
            "stop_reason": "tool_use",
            "stop_sequence": None,
            "usage": {"input_tokens": prompt, "output_tokens": output},
        }
        return web.json_response(payload, dumps=lambda o: orjson.dumps(o).decode())
    message = _started(ident, model, prompt)
    half = len(call[1]) // 2
    payloads: list[tuple[str, dict[str, Any]]] = [
        ("message_start", {"type": "message_start", "message": message}),
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {**block, "input": {}},
            },
        ),
    ]
    for piece in (call[1][:half], call[1][half:]):
        delta = {"type": "input_json_delta", "partial_json": piece}
        payloads.append(
            ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta})
        )
    payloads += [
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                "usage": {"output_tokens": output},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
    events = [sse(orjson.dumps(payload), name) for name, payload in payloads]
    return await stream(request, events, cut_after, call[1])


def token_count(request: web.Request, body: dict[str, Any]) -> web.Response:
    """POST /v1/messages/count_tokens: what the request's messages and system would count."""
    return web.Response(
        body=orjson.dumps({"input_tokens": prompt_tokens(body)}),
        content_type="application/json",
        headers=echo_headers(request),
    )
