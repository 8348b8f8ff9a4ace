"""Reading a 200 response once: usage for the meter, then the policy filter, if any.

A JSON body is parsed once for both. A stream is split into events once; each event's
JSON is parsed once and seen by the meter before a policy filter may rewrite it. When
nothing needs changing, the provider's bytes pass through untouched (the reader only
watches). When the gateway asked the provider for usage the client did not ask for,
the usage-only chunk is removed and the `"usage":null` the provider then adds to every
other chunk is cut out of the event text, so the client receives exactly the stream it
would have received without the gateway.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Final

import orjson

from extproc import drift
from extproc.accounting.usage import Meter
from extproc.apis import ApiError, Schema
from extproc.policy.filters import JsonFilter, StreamFilter, payload_of
from extproc.sse import Event, Parser
from extproc.translate.translation import Stream, Translation

# Where a `"usage":null` member may be, with the comma that joins it to its neighbours: each
# place is a candidate only, cut when what is left is the object without its usage (a key
# may hold an escaped quote before "usage", and a nested object its own usage).
_NULL_USAGE: Final = re.compile(rb',\s*"usage"\s*:\s*null(?=\s*[,}])|"usage"\s*:\s*null\s*,?\s*')
# How OpenAI writes it on every chunk (and how Python's json writes it): the object's last
# member, cut by slicing. In a text that parsed as an object, these bytes at its end can only
# be its last member: a quote inside a string is escaped, so `,"usage"` cannot end one.
_NULL_USAGE_LAST: Final = (b',"usage":null}', b', "usage": null}')


def _without_null_usage(data: bytes, payload: dict[str, Any]) -> bytes:
    """A parsed chunk's text without its top-level `"usage":null` (payload: the chunk): cut
    at the first place that leaves exactly the payload's other members, or as it came
    when none does."""
    for tail in _NULL_USAGE_LAST:
        if data.endswith(tail):
            return data[: -len(tail)] + b"}"
    rest: dict[str, Any] | None = None
    for place in _NULL_USAGE.finditer(data):
        cut = data[: place.start()] + data[place.end() :]
        try:
            left = orjson.loads(cut)
        except orjson.JSONDecodeError:
            continue
        if rest is None:
            rest = {key: value for key, value in payload.items() if key != "usage"}
        if left == rest:
            return cut
    return data


def _usage_only(payload: Any) -> bool:
    return isinstance(payload, dict) and payload.get("choices") == [] and "usage" in payload


# A stream the provider ended before its answer (a choice without its finish_reason, no
# stop_reason) ends with an error event in the client's schema: what OpenAI and Anthropic
# send themselves when a stream fails mid-way, and what each SDK raises as an API error.
# An appended [DONE] or message_stop alone would pass an incomplete answer off as a
# complete one.
_INCOMPLETE: Final = ApiError(
    502,
    "The provider ended the stream before the answer did; the answer is incomplete.",
    "stream_incomplete",
)
# The last event of a stream, by the provider's schema. A Responses API stream has none
# that can be written for the provider: its last event carries the whole response (items,
# status, usage), so a stream without it is cut (Meter.answered()).
_TERMINAL: Final = {
    Schema.OPENAI: Event(None, "[DONE]"),
    Schema.ANTHROPIC: Event("message_stop", '{"type":"message_stop"}'),
}
_INCOMPLETE_EVENTS: Final = {
    Schema.OPENAI: [Event(None, _INCOMPLETE.body(Schema.OPENAI).decode()), Event(None, "[DONE]")],
    Schema.ANTHROPIC: [Event("error", _INCOMPLETE.body(Schema.ANTHROPIC).decode())],
}
# A Responses API client's cut stream ends as the API fails one, numbered after the last
# event the client got: `error`, then `response.failed` (its error code one the API
# publishes for a response).
_FAILED: Final = {"code": "server_error", "message": _INCOMPLETE.message}


# What a response object needs when the provider's stream was cut before it said which.
_NO_RESPONSE: Final = {
    "id": "",
    "object": "response",
    "created_at": 0,
    "model": "",
    "output": [],
    "parallel_tool_calls": True,
    "tool_choice": "auto",
    "tools": [],
}


def _responses_incomplete(meter: Meter) -> list[tuple[Event, Any]]:
    """The end of a Responses API stream the provider cut, from what the meter saw of it:
    numbered after its last event, the response as `response.created` gave it."""
    sequence = meter.sequence
    error = {
        "type": "error",
        "code": _INCOMPLETE.code,
        "message": _INCOMPLETE.message,
        "param": None,
        "sequence_number": sequence,
    }
    response = {**(meter.created or _NO_RESPONSE), "status": "failed", "error": _FAILED}
    failed = {"type": "response.failed", "response": response, "sequence_number": sequence + 1}
    return [
        (Event("error", orjson.dumps(error).decode()), error),
        (Event("response.failed", orjson.dumps(failed).decode()), failed),
    ]


class JsonReader:
    mode = "buffered"

    def __init__(
        self, meter: Meter, policy: JsonFilter | None, translation: Translation | None = None
    ) -> None:
        self.meter = meter  # in the backend's schema
        self.policy = policy  # in the client's
        self.translation = translation
        # The provider's field paths, for schema drift (None: not watched).
        self.paths: set[str] | None = None
        # The provider's bytes, kept for traffic capture (None: not captured).
        self.raw: list[bytes] | None = None
        # The translated answer before a response policy read it, kept for conversation
        # state when `keep_answer` is set.
        self.keep_answer = False
        self.translated: bytes | None = None

    def feed(self, chunk: bytes, end_of_stream: bool) -> bytes | None:
        if self.raw is not None:
            self.raw.append(chunk)
        try:
            body = orjson.loads(chunk)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(body, dict):
            return None
        self.meter.json(body)
        if self.paths is not None:
            self.paths = drift.paths(body)
        if self.translation is None:
            return self.policy.process(body) if self.policy is not None else None
        body = self.translation.response(body)
        if self.policy is None:
            self.translated = encoded = orjson.dumps(body)
            return encoded
        if self.keep_answer:
            self.translated = orjson.dumps(body)  # the policy rewrites the body in place
        filtered = self.policy.process(body)
        return filtered if filtered is not None else orjson.dumps(body)


class ErrorReader:
    """A provider's error response, rewritten into the client's schema."""

    mode = "buffered"

    def __init__(self, translation: Translation, status: int) -> None:
        self.translation = translation
        self.status = status

    def feed(self, chunk: bytes, end_of_stream: bool) -> bytes | None:
        return self.translation.error(self.status, chunk)[1]


class CountReader:
    """A backend's token count, written in the client's API."""

    mode = "buffered"

    def __init__(self, translation: Translation) -> None:
        self.translation = translation

    def feed(self, chunk: bytes, end_of_stream: bool) -> bytes | None:
        try:
            body = orjson.loads(chunk)
        except orjson.JSONDecodeError:
            return None
        counted = self.translation.count_response(body) if isinstance(body, dict) else None
        return orjson.dumps(counted) if counted is not None else None


class StreamReader:
    mode = "streamed"

    def __init__(
        self,
        meter: Meter,
        policy: StreamFilter | None,
        strip_usage: bool,
        translation: Stream | None = None,
    ) -> None:
        self.meter = meter  # in the backend's schema
        self.policy = policy  # in the client's
        self.strip_usage = strip_usage
        self.translation = translation
        self.parser = Parser()
        # `[DONE]` ends Chat Completions streams only.
        self.openai = meter.api is Schema.OPENAI
        self.read_event = meter.event_reader()  # the meter's reader for this stream's API
        self.paths: set[str] | None = None  # as in JsonReader
        self.raw: list[bytes] | None = None
        # The client-facing event payloads, usage included, kept to store the answer in
        # the response cache (None: not kept).
        self.collected: list[dict[str, Any]] | None = None
        # Whether the client gets the OpenAI usage-only chunk a translation produces.
        self.emit_usage = True
        # Whether the request asked an OpenAI backend for stream usage (the gateway, or
        # the client: the exchange adds the client's ask); a translated request always does.
        self.usage_asked = strip_usage or translation is not None
        self.client = meter.api if translation is None else translation.client

    def feed(self, chunk: bytes, end_of_stream: bool) -> bytes | None:
        if self.raw is not None:
            self.raw.append(chunk)
        if (
            not end_of_stream
            and self.policy is None
            and self.collected is None
            and (blocks := self.parser.blocks(chunk)) is not None
        ):
            return self._feed_blocks(blocks)
        events = self.parser.feed(chunk)
        if end_of_stream:
            events += self.parser.close()
        rewrite = self.policy is not None or self.strip_usage or self.translation is not None
        items: list[tuple[Event, Any]] = []
        self._read(events, rewrite, items)
        # The provider's stream ended without its last event: after a whole answer (ended)
        # or before (cut).
        ended = cut = False
        if end_of_stream and not self.meter.complete:
            if self.meter.answered():
                self._end(rewrite, items)
                ended = True
            else:
                cut = True
        if not rewrite:
            if not ended and not cut:
                return None
            # The provider's bytes as they came, an unterminated last event ended.
            tail = b"\n\n" if events and events[-1].raw is None else b""
            end = _TERMINAL[self.meter.api].encode() if ended else self._incomplete()
            return chunk + tail + end
        if self.collected is not None:
            self.collected.extend(p for _, p in items if isinstance(p, dict))
        if self.translation is not None and not self.emit_usage:
            items = [(e, p) for e, p in items if not _usage_only(p)]
        if self.policy is not None:
            out = self.policy.process(items, end_of_stream)
        else:
            out = [event for event, _ in items]
        encoded = b"".join(event.encode() for event in out)
        if cut and not (self.policy is not None and self.policy.ended):
            encoded += self._incomplete()  # unless a policy ended the client's stream itself
        return encoded

    def _read(self, events: list[Event], rewrite: bool, items: list[tuple[Event, Any]]) -> None:
        """Meter events (and watch their fields); with `rewrite`, add what the client gets
        for them to `items`, usage stripped and translated."""
        translation = self.translation
        for event in events:
            payload = payload_of(event)
            if isinstance(payload, dict):
                self.read_event(payload)
                if self.paths is not None:
                    drift.event_paths(payload, self.paths)
            elif self.openai and event.data == "[DONE]":
                self.meter.complete = True
                payload = "[DONE]"
            if translation is not None:
                items.extend(translation.event(payload))
                continue
            if not rewrite:
                if self.collected is not None and isinstance(payload, dict):
                    self.collected.append(payload)
                continue
            if self.strip_usage and isinstance(payload, dict) and "usage" in payload:
                if payload["usage"] is not None and not payload.get("choices"):
                    self.meter.saw_usage_chunk = True
                    if self.collected is not None:
                        self.collected.append(payload)
                    continue  # the usage-only chunk the client did not ask for
                if payload["usage"] is None:
                    del payload["usage"]
                    # The same event (its id and retry kept), without the member.
                    text = _without_null_usage(event.data.encode(), payload).decode()
                    event = dataclasses.replace(event, data=text, raw=None)
            items.append((event, payload))

    def _end(self, rewrite: bool, items: list[tuple[Event, Any]]) -> None:
        """The provider ended a whole answer without its stream's last event (servers
        that never send `[DONE]`, or `message_stop`): it is read as if it had come, so
        the client's stream ends as the provider's should have, translated and filtered
        like any event."""
        meter = self.meter
        self._read([_TERMINAL[meter.api]], rewrite, items)
        # Usage asked for and never sent: the text is whole, the count is not.
        meter.complete = not (
            self.openai and self.usage_asked and "output_tokens" not in meter.reported
        )

    def _incomplete(self) -> bytes:
        """The end of a stream the provider cut short, in the client's schema."""
        if self.client is not Schema.OPENAI_RESPONSES:
            return b"".join(event.encode() for event in _INCOMPLETE_EVENTS[self.client])
        # A Responses API client's events are numbered: by the encoder that wrote them
        # (which fails its stream itself), or as the provider numbered them; a policy
        # filter numbers what it passes on, these too.
        if self.translation is not None:
            items = self.translation.cut(_INCOMPLETE.code, _INCOMPLETE.message)
        else:
            items = _responses_incomplete(self.meter)
        if self.policy is not None:
            events = self.policy.process(items, False)
        else:
            events = [event for event, _ in items]
        return b"".join(event.encode() for event in events)

    def _feed_blocks(self, blocks: list[tuple[bytes | None, bytes, bytes]]) -> bytes | None:
        """feed() for the usual chunk (Parser.blocks) when no policy reads the stream and
        nothing collects it: the same meter, drift watch, usage stripping and translation,
        on bytes."""
        meter, openai, translation = self.meter, self.openai, self.translation
        read_event, paths = self.read_event, self.paths
        strip = self.strip_usage
        out: list[bytes] = []
        changed = False
        for name, data, raw in blocks:
            try:
                payload = orjson.loads(data)
            except orjson.JSONDecodeError:
                # Not JSON, or not UTF-8: read (and, if changed, sent) as the parser's
                # text, with invalid bytes replaced.
                data = data.decode("utf-8", "replace").encode()
                payload = payload_of(Event(None, data.decode()))
            if isinstance(payload, dict):
                read_event(payload)
                if paths is not None:
                    drift.event_paths(payload, paths)
            elif openai and data == b"[DONE]":
                meter.complete = True
                payload = "[DONE]"
            if translation is not None:
                for encoded, item in translation.encoded(payload):
                    if self.emit_usage or not _usage_only(item):
                        out.append(encoded)
                continue
            if not strip:
                continue
            if isinstance(payload, dict) and "usage" in payload:
                if payload["usage"] is not None and not payload.get("choices"):
                    meter.saw_usage_chunk = True
                    changed = True
                    continue  # the usage-only chunk the client did not ask for
                if payload["usage"] is None:
                    data = _without_null_usage(data, payload)
                    head = b"event: " + name + b"\n" if name else b""
                    raw = head + b"data: " + data + b"\n\n"
                    changed = True
            out.append(raw)
        if translation is None and not changed:
            return None  # the client gets the provider's bytes as they came
        return b"".join(out)
