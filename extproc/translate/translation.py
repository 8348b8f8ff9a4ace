"""The translation between a client's API and a backend's, as the exchange uses it: the
client's codec and the backend's, joined through the hub. Nothing here knows an API."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Final

import orjson

from extproc.apis import Kind, Schema
from extproc.sse import Event
from extproc.translate import anthropic_messages, hub, openai_chat, openai_responses

# One codec per API: adding an API is its module and a line here.
CODECS: Final[dict[Schema, hub.Codec]] = {
    Schema.OPENAI: openai_chat,
    Schema.ANTHROPIC: anthropic_messages,
    Schema.OPENAI_RESPONSES: openai_responses,
}
_KINDS: Final = frozenset(codec.KIND for codec in CODECS.values())

# Tool calls one answer may make: each is state the translators keep until its stream
# ends, so a backend's stream that goes past it ends the client's with an error.
MAX_TOOL_CALLS: Final = 1024

Item = tuple[Event, Any]  # an event, and its payload (None: not JSON)
Encoded = tuple[bytes, Any]  # an event's bytes, and its payload


def translatable(kind: Kind) -> bool:
    """Whether requests of this endpoint kind translate between APIs (the rest exist in
    one API only)."""
    return kind in _KINDS


def _head(name: str | None) -> bytes:
    """An encoded event's bytes before its data."""
    head = _HEADS.get(name)
    if head is None:
        head = _HEADS[name] = (b"event: " + name.encode() + b"\n" if name else b"") + b"data: "
    return head


_HEADS: Final[dict[str | None, bytes]] = {}  # by event name: few (the APIs' event types)


def _item(out: hub.Out) -> Item:
    name, payload = out
    if isinstance(payload, str):
        return Event(name, payload, raw=_head(name) + payload.encode() + b"\n\n"), None
    data = orjson.dumps(payload)
    # Encoded once here: the event's bytes are what Event.encode() would give.
    return Event(name, data.decode(), raw=_head(name) + data + b"\n\n"), payload


def _encoded(out: hub.Out) -> Encoded:
    name, payload = out
    if isinstance(payload, str):
        return _head(name) + payload.encode() + b"\n\n", None
    return _head(name) + orjson.dumps(payload) + b"\n\n", payload


class Stream:
    """A backend's stream events in, the client's out, one event at a time."""

    def __init__(
        self,
        decoder: hub.StreamDecoder,
        encoder: hub.StreamEncoder,
        client: Schema,
        answer_id: str | None = None,
    ):
        self.decoder = decoder
        self.encoder = encoder
        self.client = client
        self.answer_id = answer_id  # the id the client gets instead of the backend's
        self.failed = False  # ended with the gateway's error: the rest is not read

    def _bounded(self, events: list[hub.Event]) -> list[hub.Event]:
        """The events, up to a tool call past MAX_TOOL_CALLS, which ends the stream."""
        for position, event in enumerate(events):
            if type(event) is hub.ToolCallDelta and event.index >= MAX_TOOL_CALLS:
                self.failed = True
                problem = f"The provider's answer made more than {MAX_TOOL_CALLS} tool calls."
                return [*events[:position], hub.StreamError("api_error", problem)]
            if type(event) is hub.Start and self.answer_id is not None:
                event.id = self.answer_id
        return events

    def event(self, payload: Any) -> list[Item]:
        """The client's events for one of the backend's (its parsed payload)."""
        if self.failed:
            return []
        events = self._bounded(self.decoder.events(payload))
        return [_item(out) for out in self.encoder.events(events)]

    def encoded(self, payload: Any) -> list[Encoded]:
        """event()'s events as bytes, with no Event objects (nothing reads them). A text
        delta, nearly every event, goes from the decoder's text to the encoder's bytes
        with no hub event between (its payload is not kept: it is no usage chunk)."""
        if self.failed:
            return []
        text = self.decoder.text(payload)
        if text is None:
            events = self._bounded(self.decoder.events(payload))
        else:
            raw = self.encoder.text(text)
            if raw is not None:
                return [(raw, None)]
            events = [hub.TextDelta(text)]
        return [_encoded(out) for out in self.encoder.events(events)]

    def cut(self, code: str, message: str) -> list[Item]:
        """The client's events ending a stream the provider cut short: its stream's error,
        from the encoder, which knows what the client got (a Responses API client's
        events are numbered)."""
        if self.failed:
            return []
        self.failed = True
        return [_item(out) for out in self.encoder.events([hub.StreamError(code, message)])]


class Translation:
    """Client API `client` in front of a backend speaking `backend` (they differ)."""

    def __init__(self, client: Schema, backend: Schema) -> None:
        self.client = client
        self.backend = backend
        self._client = CODECS[client]
        self._backend = CODECS[backend]
        self.suffix = self._backend.SUFFIX  # the endpoint, below the backend's base path
        self.backend_kind = self._backend.KIND
        self.count_suffix = self._backend.COUNT_SUFFIX  # its token count endpoint
        # The client's protocol headers, which mean nothing to the backend.
        self.client_headers = self._client.PROTOCOL_HEADERS
        # The id the client's answer gets instead of the backend's: the gateway names
        # answers it keeps (conversation state).
        self.answer_id: str | None = None

    def request(
        self, body: dict[str, Any], model: str, default_max_tokens: int
    ) -> tuple[dict[str, Any], list[str]]:
        """The client's request for the backend, and the client's fields dropped."""
        request = self._client.read_request(body)
        return self._backend.write_request(request, model, default_max_tokens), request.dropped

    def count_request(self, body: dict[str, Any], model: str) -> tuple[dict[str, Any], list[str]]:
        """A token count's request for the backend's count endpoint: the request it counts,
        translated, with the fields that endpoint takes."""
        request = self._client.read_request(body)
        written = self._backend.write_request(request, model, 1)
        fields = self._backend.COUNT_FIELDS
        return {k: v for k, v in written.items() if k in fields}, request.dropped

    def count_response(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """The backend's count answer in the client's API (None: no count in it)."""
        tokens = self._backend.read_count(body)
        return None if tokens is None else self._client.write_count(tokens)

    def response(self, body: dict[str, Any]) -> dict[str, Any]:
        response = self._backend.read_response(body)
        if self.answer_id is not None:
            response.id = self.answer_id
        return self._client.write_response(response)

    def stream(self, include_usage: bool) -> Stream:
        """A translator for the backend's stream; `include_usage`: whether an OpenAI
        client gets the usage chunk."""
        decoder, encoder = self._backend.decoder(), self._client.encoder(include_usage)
        return Stream(decoder, encoder, self.client, self.answer_id)

    def status(self, status: int) -> int:
        """The status the client gets for the provider's error status."""
        return self._client.client_status(status)

    def error(self, status: int, raw: bytes) -> tuple[int, bytes]:
        """A provider's error (its status and body) in the client's schema."""
        error = self._backend.read_error(status, raw)
        error = replace(error, status=self.status(status))
        return error.status, self._client.write_error(error)
