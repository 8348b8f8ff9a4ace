"""The translation between a client's API and a backend's, as the exchange uses it."""

from __future__ import annotations

from typing import Any

import orjson

from extproc.apis import ApiError, Kind
from extproc.config.runtime import Schema
from extproc.sse import Event
from extproc.translate import anthropic_to_openai as a2o
from extproc.translate import openai_to_anthropic as o2a
from extproc.translate.common import Dropped

# The endpoint a translated request goes to, below the backend's base path.
SUFFIX = {Schema.OPENAI: "/chat/completions", Schema.ANTHROPIC: "/messages"}
BACKEND_KIND = {Schema.OPENAI: Kind.CHAT, Schema.ANTHROPIC: Kind.MESSAGES}
# Anthropic's 529 (overloaded) has no counterpart an OpenAI client knows.
_OPENAI_STATUS = {529: 503}

Item = tuple[Event, Any]


def _head(name: str | None) -> bytes:
    """An encoded event's bytes before its JSON."""
    head = _HEADS.get(name)
    if head is None:
        head = _HEADS[name] = (b"event: " + name.encode() + b"\n" if name else b"") + b"data: "
    return head


_HEADS: dict[str | None, bytes] = {}  # by event name: few (the APIs' event types)


def _json_event(payload: Any, name: str | None = None) -> Item:
    data = orjson.dumps(payload)
    # Encoded once here: the event's bytes are what Event.encode() would give.
    return Event(name, data.decode(), raw=_head(name) + data + b"\n\n"), payload


_DONE_BYTES = b"data: [DONE]\n\n"
_DONE = Event(None, "[DONE]", raw=_DONE_BYTES)
Encoded = tuple[bytes, Any]  # an event's bytes, and its payload


class ToOpenAIStream:
    """Anthropic events from the backend -> OpenAI chunks for the client."""

    def __init__(self, include_usage: bool) -> None:
        self.translator = o2a.StreamTranslator(include_usage)
        # A text chunk's bytes around its text, for the message they belong to.
        self._frame: tuple[bytes, bytes] = (b"", b"")
        self._framed: tuple[str, str] | None = None

    def _text_frame(self) -> tuple[bytes, bytes]:
        translator = self.translator
        key = (translator.id, translator.model)
        if key != self._framed:
            # The translator's own chunk around a marker (a control character, which JSON
            # escapes): what comes before and after it holds for every text delta.
            whole = orjson.dumps(translator._chunk({"content": "\x01"}))
            head, _, tail = whole.rpartition(b'"\\u0001"')
            self._frame = (b"data: " + head, tail + b"\n\n")
            self._framed = key
        return self._frame

    def _items(self, out: list[dict[str, Any] | str]) -> list[Item]:
        return [(_DONE, None) if c == "[DONE]" else _json_event(c) for c in out]

    def event(self, payload: Any) -> list[Item]:
        return self._items(self.translator.event(payload)) if isinstance(payload, dict) else []

    def encoded(self, payload: Any) -> list[Encoded]:
        """event()'s events as bytes, with no Event objects (nothing reads them). A text
        delta, nearly every event, is its text JSON-encoded between the bytes every text
        chunk of the message shares (its payload is not kept: it is no usage chunk)."""
        if not isinstance(payload, dict):
            return []
        if payload.get("type") == "content_block_delta":
            delta = payload.get("delta")
            if isinstance(delta, dict) and delta.get("type") == "text_delta":
                head, tail = self._text_frame()
                return [(head + orjson.dumps(delta.get("text", "")) + tail, None)]
        return [
            (_DONE_BYTES, None) if c == "[DONE]" else (b"data: " + orjson.dumps(c) + b"\n\n", c)
            for c in self.translator.event(payload)
        ]

    def finish(self) -> list[Item]:
        return self._items(self.translator.finish())


class ToAnthropicStream:
    """OpenAI chunks from the backend -> Anthropic events for the client."""

    def __init__(self) -> None:
        self.translator = a2o.StreamTranslator()

    def _chunks(self, payload: Any) -> list[tuple[str, dict[str, Any]]]:
        if payload == "[DONE]":
            return self.translator.finish()
        if not isinstance(payload, dict):
            return []
        return self.translator.chunk(payload)

    def event(self, payload: Any) -> list[Item]:
        return [_json_event(p, name) for name, p in self._chunks(payload)]

    def encoded(self, payload: Any) -> list[Encoded]:
        """event()'s events as bytes, with no Event objects (nothing reads them)."""
        return [(_head(name) + orjson.dumps(p) + b"\n\n", p) for name, p in self._chunks(payload)]

    def finish(self) -> list[Item]:
        return [_json_event(p, name) for name, p in self.translator.finish()]


class Translation:
    """Client API `client` in front of a backend speaking `backend` (they differ)."""

    def __init__(self, client: Schema, backend: Schema) -> None:
        self.client = client
        self.backend = backend
        self.suffix = SUFFIX[backend]

    def request(
        self, body: dict[str, Any], model: str, default_max_tokens: int
    ) -> tuple[dict[str, Any], Dropped]:
        if self.client is Schema.OPENAI:
            return o2a.request(body, model, default_max_tokens)
        return a2o.request(body, model)

    def response(self, body: dict[str, Any]) -> dict[str, Any]:
        return o2a.response(body) if self.client is Schema.OPENAI else a2o.response(body)

    def stream(self, include_usage: bool) -> ToOpenAIStream | ToAnthropicStream:
        return (
            ToOpenAIStream(include_usage) if self.client is Schema.OPENAI else ToAnthropicStream()
        )

    def error(self, status: int, raw: bytes) -> tuple[int, bytes]:
        """A provider's error (its status and body) in the client's schema."""
        message = "The provider returned an error."
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            message = error["message"]
        elif isinstance(error, str):
            message = error
        if self.client is Schema.OPENAI:
            status = _OPENAI_STATUS.get(status, status)
        code = (
            str(error.get("code") or error.get("type") or "upstream_error")
            if isinstance(error, dict)
            else "upstream_error"
        )
        return status, ApiError(status, message, code).body(self.client)
