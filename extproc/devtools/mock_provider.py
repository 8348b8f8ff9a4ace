"""An OpenAI- and Anthropic-compatible provider for demos and tests (`extproc mock-provider`).

Deterministic: the reply text is the last user message, token counts are computed from
the text. Request headers make it misbehave on purpose:
  x-mock-status: 503      answer with that status and an error body in the path's schema
  x-mock-delay-ms: 250    wait before answering
  x-mock-chunk-delay-ms: 50  streams: wait this long between events
  x-mock-extra-field: NAME  JSON answers carry an extra field NAME (an API change)
JSON responses are gzip-compressed when the request accepts gzip.
With tools offered and a user's question last, the reply calls the first tool with
{"text": <the question>}; after a tool result, the reply echoes "tool result: ...".
  x-mock-cut-after: 3     streams: send 3 events, pause, close the connection (no final event);
                          JSON: close the connection without answering
  x-mock-end-after: 3     streams: send 3 events and end the response (no final event)
  x-mock-omit-final: 1    streams: the whole answer without its last event ([DONE] or
                          message_stop), as some OpenAI-compatible servers send it
  x-mock-tag: soak        GET /mock/stats counts chat and messages answers served in full
                          by tag: [answers, prompt tokens, completion tokens]
Response headers report what arrived, so tests can see what the gateway sent upstream:
  x-mock-path (with the query), x-mock-host, x-mock-headers (the names of all request
  headers), x-mock-authorization-sha256, x-mock-api-key-sha256 (of x-api-key) and
  x-mock-azure-api-key-sha256 (of api-key), each over every value that arrived joined
  by ", " (one value: its digest), x-mock-prompt-sha256 (of the last user message's
  text, as the provider received it), x-mock-body-bytes (the request body's size),
  x-mock-images-sha256 (of the base64 data of the request's images, in order, in
  either API's parts), x-mock-part-types (the type of every content part or block of the
  request's messages, in order, comma-separated)
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import ssl
import struct
import time
from collections.abc import Iterator
from typing import Any

import orjson
from aiohttp import web

from extproc.digits import strict_int

_WORD = re.compile(r"\S+\s*")
# Headers describing the request body, set once it is read (x-mock-body-bytes, ...).
_BODY_HEADERS = web.RequestKey("mock_body_headers", dict[str, str])


def count_tokens(text: str) -> int:
    """A deterministic stand-in for a tokenizer: one token per 4 characters, rounded up
    (the usual rule of thumb; constant time, so the mock never limits a benchmark)."""
    return (len(text) + 3) // 4


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part.get("text", "")
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


def _last_user_text(messages: list[Any]) -> str:
    """The text the reply echoes: the last user turn's, or the last tool result's."""
    for message in reversed(messages):
        if not isinstance(message, dict):
            continue
        if message.get("role") == "tool":
            return f"tool result: {_text_of(message.get('content'))}"
        if message.get("role") == "user":
            content = message.get("content")
            results = [
                block
                for block in (content if isinstance(content, list) else [])
                if isinstance(block, dict) and block.get("type") == "tool_result"
            ]
            if results:
                return "tool result: " + "".join(_text_of(r.get("content")) for r in results)
            return _text_of(content)
    return ""


def _with_extra_field(request: web.Request, payload: dict[str, Any]) -> dict[str, Any]:
    """x-mock-extra-field: NAME adds a field to a JSON answer (a provider's API change)."""
    name = request.headers.get("x-mock-extra-field")
    return {**payload, name: {"added": True}} if name else payload


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


def _tool_call(body: dict[str, Any]) -> tuple[str, str] | None:
    """With tools offered and a user's question last, the mock calls the first tool with
    {"text": <the question>}: (tool name, arguments as JSON)."""
    tools = body.get("tools")
    if not isinstance(tools, list) or not tools or not isinstance(tools[0], dict):
        return None
    text = _last_user_text(body.get("messages", []))
    if text.startswith("tool result: "):
        return None
    function = tools[0].get("function")
    name = function.get("name") if isinstance(function, dict) else tools[0].get("name")
    return str(name), orjson.dumps({"text": text}).decode()


def _prompt_tokens(body: dict[str, Any]) -> int:
    texts = [_text_of(m.get("content")) for m in body.get("messages", []) if isinstance(m, dict)]
    system = body.get("system")
    if system is not None:
        texts.append(_text_of(system))
    return sum(count_tokens(t) for t in texts)


def _pieces(text: str) -> Iterator[str]:
    """The reply split into stream deltas: one word (with its trailing space) each."""
    yield from _WORD.findall(text) or [""]


def _sse(data: bytes, event: str | None = None) -> bytes:
    prefix = f"event: {event}\n".encode() if event else b""
    return prefix + b"data: " + data + b"\n\n"


def _error(schema: str, status: int, message: str) -> web.Response:
    if schema == "anthropic":
        kinds = {
            400: "invalid_request_error",
            401: "authentication_error",
            404: "not_found_error",
            429: "rate_limit_error",
            529: "overloaded_error",
        }
        payload: dict[str, Any] = {
            "type": "error",
            "error": {"type": kinds.get(status, "api_error"), "message": message},
        }
    else:
        payload = {
            "error": {
                "message": message,
                "type": "server_error" if status >= 500 else "invalid_request_error",
                "param": None,
                "code": None,
            }
        }
    headers = {"retry-after": "1"} if status == 429 else None
    return web.Response(
        status=status, body=orjson.dumps(payload), content_type="application/json", headers=headers
    )


# Credential headers whose values the mock reports (as digests), by label.
_ECHOED_CREDENTIALS = (
    ("authorization", "authorization"),
    ("x-api-key", "api-key"),
    ("api-key", "azure-api-key"),
)


def _image_data(body: dict[str, Any]) -> Iterator[str]:
    """The base64 data of a request's images: OpenAI `image_url` data URLs, Anthropic
    base64 `image` sources."""
    for message in body.get("messages") or ():
        content = message.get("content") if isinstance(message, dict) else None
        for part in content if isinstance(content, list) else ():
            if not isinstance(part, dict):
                continue
            image, source = part.get("image_url"), part.get("source")
            if isinstance(image, dict) and str(image.get("url", "")).startswith("data:"):
                yield str(image["url"]).partition(",")[2]
            elif part.get("type") == "image" and isinstance(source, dict):
                yield str(source.get("data", ""))


def _part_types(body: dict[str, Any]) -> str:
    types = []
    for message in body.get("messages") or ():
        content = message.get("content") if isinstance(message, dict) else None
        for part in content if isinstance(content, list) else ():
            types.append(str(part.get("type")) if isinstance(part, dict) else "?")
    return ",".join(types)


def _echo_headers(request: web.Request, prompt: str | None = None) -> dict[str, str]:
    headers = {
        "x-mock-path": request.path_qs,
        "x-mock-host": request.headers.get("host", ""),
        "x-mock-headers": ",".join(sorted({k.lower() for k in request.headers})),
        **request.get(_BODY_HEADERS, {}),
    }
    for name, label in _ECHOED_CREDENTIALS:
        values = request.headers.getall(name, [])
        if values:
            joined = ", ".join(values)
            headers[f"x-mock-{label}-sha256"] = hashlib.sha256(joined.encode()).hexdigest()
    if prompt is not None:
        headers["x-mock-prompt-sha256"] = hashlib.sha256(prompt.encode()).hexdigest()
    return headers


class MockProvider:
    def __init__(self) -> None:
        self.requests = 0
        # Chat and messages answers served in full, by the request's x-mock-tag:
        # [answers, prompt tokens, completion tokens] (GET /mock/stats), so a soak can
        # check the gateway's usage records against what was served.
        self.served: dict[str, list[int]] = {}

    def _count(self, request: web.Request, prompt: int, completion: int) -> None:
        totals = self.served.setdefault(request.headers.get("x-mock-tag", ""), [0, 0, 0])
        totals[0] += 1
        totals[1] += prompt
        totals[2] += completion

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.dispatch)
        return app

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        response = await self._dispatch(request)
        if not response.prepared and "gzip" in request.headers.get("accept-encoding", ""):
            # As providers do: JSON bodies are compressed for clients that accept it.
            response.enable_compression(web.ContentCoding.gzip)
        return response

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if path == "/mock/stats":
            return web.json_response(self.served)
        self.requests += 1
        schema = "anthropic" if path.endswith("/messages") else "openai"
        delay = strict_int(request.headers.get("x-mock-delay-ms", ""))
        if delay:
            await asyncio.sleep(delay / 1000)
        status = strict_int(request.headers.get("x-mock-status", ""), 999)
        if status is not None and status >= 400:
            response = _error(schema, status, f"mock failure {status}")
            response.headers.update(_echo_headers(request))
            return response
        if request.method == "GET" and path.endswith("/models"):
            return web.json_response(
                {
                    "object": "list",
                    "data": [{"id": "mock", "object": "model", "created": 0, "owned_by": "mock"}],
                }
            )
        if request.method != "POST":
            return _error(schema, 405, "method not allowed")
        raw = await request.read()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return _error(schema, 400, "invalid JSON")
        if not isinstance(body, dict):
            return _error(schema, 400, "body must be an object")
        described = {"x-mock-body-bytes": str(len(raw)), "x-mock-part-types": _part_types(body)}
        images = hashlib.sha256()
        for data in _image_data(body):
            images.update(data.encode())
            described["x-mock-images-sha256"] = images.hexdigest()
        request[_BODY_HEADERS] = described
        cut_after = strict_int(request.headers.get("x-mock-cut-after", ""))
        if path.endswith("/chat/completions"):
            return await self.chat(request, body, cut_after)
        if path.endswith("/messages"):
            return await self.messages(request, body, cut_after)
        if path.endswith("/embeddings"):
            return self.embeddings(request, body)
        if path.endswith("/completions"):
            return await self.completions(request, body, cut_after)
        return _error(schema, 404, f"unknown path {path}")

    async def _cut(self, request: web.Request) -> web.StreamResponse:
        if request.transport is not None:
            request.transport.close()
        # The connection is gone; aiohttp needs a response object all the same.
        return web.Response(status=500)

    async def chat(
        self, request: web.Request, body: dict[str, Any], cut_after: int | None
    ) -> web.StreamResponse:
        model = str(body.get("model", ""))
        text = _last_user_text(body.get("messages", []))
        prompt, completion = _prompt_tokens(body), count_tokens(text)
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
        ident, created = f"chatcmpl-mock{self.requests}", int(time.time())
        call = _tool_call(body)
        message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
        if call is not None:
            function = {"name": call[0], "arguments": call[1]}
            message.update(
                content=None,
                tool_calls=[
                    {"id": f"call_mock{self.requests}", "type": "function", "function": function}
                ],
            )
        if not body.get("stream"):
            if cut_after is not None:
                return await self._cut(request)
            payload = {
                "id": ident,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "logprobs": None,
                        "finish_reason": "tool_calls" if call else "stop",
                    }
                ],
                "usage": usage,
                "system_fingerprint": "mock",
            }
            self._count(request, prompt, completion)
            return web.Response(
                body=orjson.dumps(_with_extra_field(request, payload)),
                content_type="application/json",
                headers=_echo_headers(request, text),
            )

        base = {
            "id": ident,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": "mock",
        }

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return _sse(orjson.dumps({**base, "choices": [choice]}))

        events = [chunk({"role": "assistant", "content": ""})]
        if call is not None:
            start = {**message["tool_calls"][0], "index": 0}
            start["function"] = {"name": call[0], "arguments": ""}
            events.append(chunk({"tool_calls": [start]}))
            half = len(call[1]) // 2
            for piece in (call[1][:half], call[1][half:]):
                events.append(
                    chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
                )
            events.append(chunk({}, "tool_calls"))
        else:
            events += [chunk({"content": piece}) for piece in _pieces(text)]
            events.append(chunk({}, "stop"))
        options = body.get("stream_options")
        if isinstance(options, dict) and options.get("include_usage"):
            events.append(_sse(orjson.dumps({**base, "choices": [], "usage": usage})))
        events.append(b"data: [DONE]\n\n")
        return await self._stream(request, events, cut_after, text, (prompt, completion))

    async def messages(
        self, request: web.Request, body: dict[str, Any], cut_after: int | None
    ) -> web.StreamResponse:
        model = str(body.get("model", ""))
        text = _last_user_text(body.get("messages", []))
        prompt, completion = _prompt_tokens(body), count_tokens(text)
        ident = f"msg_mock{self.requests}"
        call = _tool_call(body)
        if call is not None:
            return await self._tool_use(request, body, call, ident, prompt, cut_after)
        if not body.get("stream"):
            if cut_after is not None:
                return await self._cut(request)
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
            self._count(request, prompt, completion)
            return web.Response(
                body=orjson.dumps(_with_extra_field(request, payload)),
                content_type="application/json",
                headers=_echo_headers(request, text),
            )
        start = {"type": "message_start", "message": _started(ident, model, prompt)}
        events = [
            _sse(orjson.dumps(start), "message_start"),
            _sse(
                orjson.dumps(
                    {
                        "type": "content_block_start",
                        "index": 0,
                        "content_block": {"type": "text", "text": ""},
                    }
                ),
                "content_block_start",
            ),
            _sse(b'{"type": "ping"}', "ping"),
        ]
        events += [
            _sse(
                orjson.dumps(
                    {
                        "type": "content_block_delta",
                        "index": 0,
                        "delta": {"type": "text_delta", "text": piece},
                    }
                ),
                "content_block_delta",
            )
            for piece in _pieces(text)
        ]
        events += [
            _sse(b'{"type":"content_block_stop","index":0}', "content_block_stop"),
            _sse(
                orjson.dumps(
                    {
                        "type": "message_delta",
                        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                        "usage": {"output_tokens": completion},
                    }
                ),
                "message_delta",
            ),
            _sse(b'{"type":"message_stop"}', "message_stop"),
        ]
        return await self._stream(request, events, cut_after, text, (prompt, completion))

    async def _tool_use(
        self,
        request: web.Request,
        body: dict[str, Any],
        call: tuple[str, str],
        ident: str,
        prompt: int,
        cut_after: int | None,
    ) -> web.StreamResponse:
        """An Anthropic tool_use reply, JSON or streamed."""
        model = str(body.get("model", ""))
        block = {"type": "tool_use", "id": f"toolu_mock{self.requests}", "name": call[0]}
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
        events = [_sse(orjson.dumps(payload), name) for name, payload in payloads]
        return await self._stream(request, events, cut_after, call[1])

    async def _stream(
        self,
        request: web.Request,
        events: list[bytes],
        cut_after: int | None,
        prompt: str,
        tokens: tuple[int, int] | None = None,
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                "content-type": "text/event-stream",
                "cache-control": "no-cache",
                **_echo_headers(request, prompt),
            }
        )
        await response.prepare(request)
        pause_s = (strict_int(request.headers.get("x-mock-chunk-delay-ms", "")) or 0) / 1000
        # Ends the response after this many events, cleanly, without the final event.
        end_after = strict_int(request.headers.get("x-mock-end-after", ""))
        if request.headers.get("x-mock-omit-final") == "1":
            events = events[:-1]  # every stream's last event is its [DONE] or message_stop
        for number, event in enumerate(events):
            if pause_s and number:
                await asyncio.sleep(pause_s)
            if cut_after is not None and number >= cut_after:
                # A pause lets the events before the cut reach the client; close() flushes
                # them and ends the connection mid-stream, without the final event.
                await asyncio.sleep(0.2)
                if request.transport is not None:
                    request.transport.close()
                return response
            if end_after is not None and number >= end_after:
                await response.write_eof()
                return response
            try:
                await response.write(event)
            except ConnectionError:
                return response  # the client left: nothing more to send, nothing served in full
        await response.write_eof()
        if tokens is not None:
            self._count(request, *tokens)
        return response

    def embeddings(self, request: web.Request, body: dict[str, Any]) -> web.Response:
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
            headers=_echo_headers(request),
        )

    async def completions(
        self, request: web.Request, body: dict[str, Any], cut_after: int | None
    ) -> web.StreamResponse:
        prompt = body.get("prompt")
        text = prompt if isinstance(prompt, str) else ""
        tokens = count_tokens(text)
        base = {
            "id": f"cmpl-mock{self.requests}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": body.get("model"),
        }
        usage = {"prompt_tokens": tokens, "completion_tokens": tokens, "total_tokens": 2 * tokens}
        if body.get("stream"):

            def chunk(piece: str, finish: str | None = None) -> bytes:
                choice = {"text": piece, "index": 0, "logprobs": None, "finish_reason": finish}
                return _sse(orjson.dumps({**base, "choices": [choice]}))

            events = [chunk(piece) for piece in _pieces(text)] + [chunk("", "stop")]
            options = body.get("stream_options")
            if isinstance(options, dict) and options.get("include_usage"):
                events.append(_sse(orjson.dumps({**base, "choices": [], "usage": usage})))
            events.append(b"data: [DONE]\n\n")
            return await self._stream(request, events, cut_after, text)
        payload = {
            **base,
            "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": "stop"}],
            "usage": usage,
        }
        return web.Response(
            body=orjson.dumps(payload),
            content_type="application/json",
            headers=_echo_headers(request),
        )


def run(host: str, port: int, *, cert_file: str | None = None, key_file: str | None = None) -> None:
    context = None
    if cert_file and key_file:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert_file, key_file)
    web.run_app(
        MockProvider().app(), host=host, port=port, ssl_context=context, print=None, access_log=None
    )
