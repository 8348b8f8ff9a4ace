"""The OpenAI API as the mock answers it: chat completions (a tool call when tools are
offered), legacy completions, embeddings; JSON or streamed."""

from __future__ import annotations

import base64
import hashlib
import struct
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


async def chat(
    request: web.Request, body: dict[str, Any], cut_after: int | None, number: int, served: Served
) -> web.StreamResponse:
    model = str(body.get("model", ""))
    call = tool_call(body)
    text = last_user_text(body.get("messages", []))
    if call is None:
        text = formatted(text, body.get("response_format"))
    choices = _choices(body)
    prompt, completion = prompt_tokens(body), count_tokens(text) * choices
    usage = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    ident, created = f"chatcmpl-mock{number}", int(time.time())
    message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
    if call is not None:
        function = {"name": call[0], "arguments": call[1]}
        message.update(
            content=None,
            tool_calls=[{"id": f"call_mock{number}", "type": "function", "function": function}],
        )
    if not body.get("stream"):
        if cut_after is not None:
            return await cut(request)
        payload = {
            "id": ident,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [
                {
                    "index": index,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": "tool_calls" if call else "stop",
                }
                for index in range(choices)
            ],
            "usage": usage,
            "system_fingerprint": "mock",
        }
        served(request, prompt, completion)
        return web.Response(
            body=orjson.dumps(with_extra_field(request, payload)),
            content_type="application/json",
            headers=echo_headers(request, text),
        )

    base = {
        "id": ident,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": "mock",
    }

    tail = _null_usage(body)
    events: list[bytes] = []
    for index in range(choices):

        def chunk(delta: dict[str, Any], finish: str | None = None, index: int = index) -> bytes:
            choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
            return sse(orjson.dumps({**base, "choices": [choice], **tail}))

        events.append(chunk({"role": "assistant", "content": ""}))
        if call is not None:
            start = {**message["tool_calls"][0], "index": 0}
            start["function"] = {"name": call[0], "arguments": ""}
            events.append(chunk({"tool_calls": [start]}))
            half = len(call[1]) // 2
            for piece in (call[1][:half], call[1][half:]):
                delta = {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}
                events.append(chunk(delta))
            events.append(chunk({}, "tool_calls"))
        else:
            events += [chunk({"content": piece}) for piece in pieces(text)]
            events.append(chunk({}, "stop"))
    if tail:
        events.append(sse(orjson.dumps({**base, "choices": [], "usage": usage})))
    events.append(b"data: [DONE]\n\n")
    return await stream(
        request, events, cut_after, text, lambda: served(request, prompt, completion)
    )


# Choices the mock writes at most for `n` (OpenAI's limit is higher; a test needs few).
MAX_CHOICES = 8


def _null_usage(body: dict[str, Any]) -> dict[str, Any]:
    """A streamed request that asks for usage gets it in a chunk of its own, and OpenAI then
    writes `"usage": null` as the last member of every other chunk: that member, or none."""
    options = body.get("stream_options")
    asked = isinstance(options, dict) and bool(options.get("include_usage"))
    return {"usage": None} if asked else {}


def _choices(body: dict[str, Any]) -> int:
    """How many choices the request asks for (`n`), within what the mock writes."""
    n = body.get("n")
    if isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= MAX_CHOICES:
        return n
    return 1


async def completions(
    request: web.Request, body: dict[str, Any], cut_after: int | None, number: int
) -> web.StreamResponse:
    prompt = body.get("prompt")
    text = prompt if isinstance(prompt, str) else ""
    tokens = count_tokens(text)
    base = {
        "id": f"cmpl-mock{number}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": body.get("model"),
    }
    usage = {"prompt_tokens": tokens, "completion_tokens": tokens, "total_tokens": 2 * tokens}
    if body.get("stream"):
        tail = _null_usage(body)

        def chunk(piece: str, finish: str | None = None) -> bytes:
            choice = {"text": piece, "index": 0, "logprobs": None, "finish_reason": finish}
            return sse(orjson.dumps({**base, "choices": [choice], **tail}))

        events = [chunk(piece) for piece in pieces(text)] + [chunk("", "stop")]
        if tail:
            events.append(sse(orjson.dumps({**base, "choices": [], "usage": usage})))
        events.append(b"data: [DONE]\n\n")
        return await stream(request, events, cut_after, text)
    payload = {
        **base,
        "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": "stop"}],
        "usage": usage,
    }
    return web.Response(
        body=orjson.dumps(payload),
        content_type="application/json",
        headers=echo_headers(request),
    )


def embeddings(request: web.Request, body: dict[str, Any]) -> web.Response:
    inputs = body.get("input")
    items = inputs if isinstance(inputs, list) else [inputs]
    data, tokens = [], 0
    for index, item in enumerate(items):
        text = (
            item
            if isinstance(item, str)
            else " ".join(map(str, item))
            if isinstance(item, list)
            else str(item)
        )
        tokens += count_tokens(text)
        digest = hashlib.sha256(text.encode()).digest()
        vector = [round((b - 128) / 128, 4) for b in digest[:8]]
        encoded: Any = vector
        if body.get("encoding_format") == "base64":
            encoded = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    payload = {
        "object": "list",
        "data": data,
        "model": body.get("model"),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return web.Response(
        body=orjson.dumps(payload),
        content_type="application/json",
        headers=echo_headers(request),
    )
