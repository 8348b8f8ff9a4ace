"""OpenAI Responses API streams to and from the hub: typed events in, hub events out;
hub events in, typed events out with their sequence numbers."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from extproc.translate import hub
from extproc.translate.hub import obj, string
from extproc.translate.openai_responses_items import (
    INCOMPLETE_REASONS,
    call_item,
    item_id,
    message_item,
    output_text,
    read_stop,
    read_usage,
    reasoning_item,
    response_id,
    response_object,
    status_of,
    summary,
    write_usage,
)

# Text and arguments an encoder keeps to write its items whole when they are done, as the
# API's `.done` events and `response.completed` carry them: 16 Mi characters, past the
# longest answer any model writes (128K output tokens are ~0.5 MB), so a backend streaming
# without end fails its stream rather than the gateway's memory.
MAX_KEPT = 16 * 2**20


# -- decoding a backend's stream ---------------------------------------------------------

_TEXT_DELTA: Final = "response.output_text.delta"


class StreamDecoder:
    """Responses API events from the backend, `response.created` to `response.completed`
    (or `.incomplete`, `.failed`, `error`)."""

    def __init__(self) -> None:
        self.started = False
        self.ended = False
        self.calls: dict[int, int] = {}  # output index -> tool call number
        self.streamed: set[int] = set()  # tool calls whose arguments came as deltas

    def text(self, payload: Any) -> str | None:
        if type(payload) is dict and payload.get("type") == _TEXT_DELTA:
            delta = payload.get("delta")
            return delta if type(delta) is str else None
        return None

    def events(self, payload: Any) -> list[hub.Event]:
        if not isinstance(payload, dict):
            return []
        kind = payload.get("type")
        if kind == _TEXT_DELTA or kind == "response.refusal.delta":
            delta = payload.get("delta")
            return [hub.TextDelta(delta)] if isinstance(delta, str) else []
        if kind == "response.function_call_arguments.delta":
            number = self._number(payload)
            self.streamed.add(number)
            return [hub.ToolCallDelta(number, None, None, string(payload.get("delta")))]
        if kind in ("response.reasoning_summary_text.delta", "response.reasoning_text.delta"):
            return [hub.ReasoningDelta(string(payload.get("delta")))]
        if kind == "response.output_item.added" or kind == "response.output_item.done":
            return self._item(payload, kind.endswith("added"))
        if kind in ("response.created", "response.in_progress", "response.queued"):
            if self.started:
                return []
            self.started = True
            response = obj(payload.get("response"))
            return [hub.Start(string(response.get("id")), string(response.get("model")))]
        if kind == "response.completed" or kind == "response.incomplete":
            if self.ended:
                return []  # a server repeating its last event ends nothing more
            self.ended = True
            response = obj(payload.get("response"))
            finished = hub.Finished(read_stop(response, bool(self.calls)))
            usage = response.get("usage")
            ending: list[hub.Event] = [finished, hub.END]
            return [read_usage(usage), *ending] if isinstance(usage, dict) else ending
        if kind == "response.failed":
            return [_error(obj(obj(payload.get("response")).get("error")))]
        if kind == "error":
            return [_error(payload)]
        return []  # content parts opened and done, `.done` events, events the API may add

    def _number(self, payload: dict[str, Any]) -> int:
        index = payload.get("output_index")
        return self.calls.get(index if isinstance(index, int) else 0, 0)

    def _item(self, payload: dict[str, Any], added: bool) -> list[hub.Event]:
        """A function call starts when its item is added; a server that sends its
        arguments only in the item done has them read there."""
        item = obj(payload.get("item"))
        if item.get("type") != "function_call":
            return []
        index = payload.get("output_index")
        index = index if isinstance(index, int) else len(self.calls)
        arguments = hub.arguments(item.get("arguments"))
        number = self.calls.get(index)
        if number is None:
            number = self.calls[index] = len(self.calls)
            if arguments:
                self.streamed.add(number)
            call_id, name = string(item.get("call_id")), string(item.get("name"))
            return [hub.ToolCallDelta(number, call_id, name, arguments)]
        if added or number in self.streamed or not arguments:
            return []
        self.streamed.add(number)
        return [hub.ToolCallDelta(number, None, None, arguments)]


def _error(error: dict[str, Any]) -> hub.StreamError:
    code, message = error.get("code"), error.get("message")
    return hub.StreamError(
        code if isinstance(code, str) else None, message if isinstance(message, str) else None
    )


# -- encoding the client's stream --------------------------------------------------------


@dataclass(slots=True)
class _Item:
    """An output item being streamed: where it is, and its text or arguments so far."""

    index: int
    id: str
    pieces: list[str] = field(default_factory=list)
    call_id: str = ""
    name: str = ""


# A failed response's error codes the gateway may pass on (the API publishes a closed list,
# the others about images and tools).
_RESPONSE_ERRORS: Final = frozenset(("server_error", "rate_limit_exceeded"))
_HEAD: Final = b"event: " + _TEXT_DELTA.encode() + b"\ndata: "
_SEQUENCE: Final = b',"sequence_number":'


class StreamEncoder:
    """Hub events in, Responses API events out, each with its `sequence_number`: the
    response created, each output item added, filled and done, and the response completed
    (or incomplete, or failed) with the whole output and usage."""

    def __init__(self, created: int | None = None) -> None:
        self.created = created if created is not None else int(time.time())
        self.id = response_id("")
        self.model = ""
        self.sequence = 0
        self.started = False
        self.finished = False
        self.stop = hub.Stop.END
        self.usage = hub.Usage()
        self.output: list[dict[str, Any] | None] = []  # by output index; None: not done
        self.message: _Item | None = None  # the open message, or reasoning, item
        self.reasoning: _Item | None = None
        self.calls: dict[int, _Item] = {}  # open function calls by tool call number
        self.kept = 0  # characters of text and arguments kept
        # A text delta's bytes before its text, for the message item it belongs to.
        self._frame: tuple[_Item, bytes] | None = None
        # The whole answer as the last event carried it, encoded when it was written: what
        # a response policy does to the event afterwards (in place) is not in it.
        self.answer: bytes | None = None

    def _event(self, kind: str, fields: dict[str, Any]) -> hub.Out:
        payload = {"type": kind, **fields, "sequence_number": self.sequence}
        self.sequence += 1
        return (kind, payload)

    def _text_delta(self, item: _Item, text: str) -> dict[str, Any]:
        return {
            "item_id": item.id,
            "output_index": item.index,
            "content_index": 0,
            "logprobs": [],
            "delta": text,
        }

    def text(self, text: str) -> bytes | None:
        """A text delta in the open message, nearly every event: its text JSON-encoded
        between the bytes every delta of the item shares, then its sequence number."""
        item = self.message
        kept = self.kept + len(text)
        if item is None or kept > MAX_KEPT:
            return None  # the item opens first, or the stream fails
        frame = self._frame
        if frame is None or frame[0] is not item:
            # The event around a marker (a control character, which JSON escapes), as
            # _event() lays it out: the sequence number last.
            marked = {"type": _TEXT_DELTA, **self._text_delta(item, "\x01"), "sequence_number": 0}
            frame = self._frame = (item, _HEAD + orjson.dumps(marked).rpartition(b'"\\u0001"')[0])
        self.kept = kept
        item.pieces.append(text)
        sequence = self.sequence
        self.sequence = sequence + 1
        return frame[1] + orjson.dumps(text) + _SEQUENCE + str(sequence).encode() + b"}\n\n"

    def events(self, events: list[hub.Event]) -> list[hub.Out]:
        out: list[hub.Out] = []
        for event in events:
            if self.finished:
                break
            if not self.started:
                out += self._start(event if isinstance(event, hub.Start) else hub.Start("", ""))
            if isinstance(event, hub.TextDelta):
                out += self._text(event.text)
            elif isinstance(event, hub.ToolCallDelta):
                out += self._call(event)
            elif isinstance(event, hub.ReasoningDelta):
                out += self._reasoning(event.text)  # signatures have no place here
            elif isinstance(event, hub.Usage):
                self.usage.update(event)
            elif isinstance(event, hub.Finished):
                self.stop = event.stop
                out += self._close_all()
            elif isinstance(event, hub.StreamError):
                out += self._fail(event.kind or "server_error", event.message or "")
            elif isinstance(event, hub.End):
                out += self.finish()
        return out

    def _response(
        self, state: str, incomplete: dict[str, str] | None = None, error: Any = None
    ) -> dict[str, Any]:
        done = [item for item in self.output if item is not None]
        usage = write_usage(self.usage) if state != "in_progress" else None
        return response_object(
            self.id, self.model, self.created, state, done, usage, incomplete, error
        )

    def _start(self, start: hub.Start) -> list[hub.Out]:
        self.started = True
        self.id, self.model = response_id(start.id), start.model
        response = {"response": self._response("in_progress")}
        return [
            self._event("response.created", response),
            self._event("response.in_progress", response),
        ]

    def _add(self, prefix: str, item: dict[str, Any]) -> tuple[_Item, list[hub.Out]]:
        """A new output item: its place, and the event adding it (the open message or
        reasoning item is done first)."""
        out = self._close_open()
        index = len(self.output)
        self.output.append(None)
        added = _Item(index, item_id(prefix, self.id, index))
        item["id"] = added.id
        out.append(self._event("response.output_item.added", {"output_index": index, "item": item}))
        return added, out

    def _keep(self, text: str) -> list[hub.Out] | None:
        """None when the text fits what an encoder keeps; else the stream's failure."""
        self.kept += len(text)
        if self.kept <= MAX_KEPT:
            return None
        return self._fail("server_error", "The answer is longer than the gateway translates.")

    def _text(self, text: str) -> list[hub.Out]:
        out: list[hub.Out] = []
        if self.message is None:
            self.message, out = self._add("msg", message_item("", None, "in_progress"))
            part = {"item_id": self.message.id, "output_index": self.message.index}
            out.append(
                self._event(
                    "response.content_part.added",
                    {**part, "content_index": 0, "part": output_text("")},
                )
            )
        failed = self._keep(text)
        if failed is not None:
            return out + failed
        self.message.pieces.append(text)
        out.append(self._event(_TEXT_DELTA, self._text_delta(self.message, text)))
        return out

    def _call(self, event: hub.ToolCallDelta) -> list[hub.Out]:
        out: list[hub.Out] = []
        call = self.calls.get(event.index)
        if call is None:
            call_id, name = event.id or "", event.name or ""
            call, out = self._add("fc", call_item("", call_id, name, "", "in_progress"))
            call.call_id, call.name = call_id, name
            self.calls[event.index] = call
        if event.arguments:
            failed = self._keep(event.arguments)
            if failed is not None:
                return out + failed
            call.pieces.append(event.arguments)
            fields = {"item_id": call.id, "output_index": call.index, "delta": event.arguments}
            out.append(self._event("response.function_call_arguments.delta", fields))
        return out

    def _reasoning(self, text: str) -> list[hub.Out]:
        if not text:
            return []
        out: list[hub.Out] = []
        if self.reasoning is None:
            self.reasoning, out = self._add("rs", reasoning_item("", None))
            part = {"item_id": self.reasoning.id, "output_index": self.reasoning.index}
            out.append(
                self._event(
                    "response.reasoning_summary_part.added",
                    {**part, "summary_index": 0, "part": summary("")},
                )
            )
        failed = self._keep(text)
        if failed is not None:
            return out + failed
        self.reasoning.pieces.append(text)
        fields = {
            "item_id": self.reasoning.id,
            "output_index": self.reasoning.index,
            "summary_index": 0,
            "delta": text,
        }
        out.append(self._event("response.reasoning_summary_text.delta", fields))
        return out

    def _done(self, item: _Item, whole: dict[str, Any]) -> hub.Out:
        self.output[item.index] = whole
        return self._event("response.output_item.done", {"output_index": item.index, "item": whole})

    def _close_open(self) -> list[hub.Out]:
        """The open message or reasoning item done (a function call stays open: its
        arguments may still come, interleaved with other calls')."""
        out: list[hub.Out] = []
        message, reasoning = self.message, self.reasoning
        self.message = self.reasoning = None
        if message is not None:
            text = "".join(message.pieces)
            where = {"item_id": message.id, "output_index": message.index, "content_index": 0}
            state = "incomplete" if self.stop in INCOMPLETE_REASONS else "completed"
            out += [
                self._event("response.output_text.done", {**where, "text": text, "logprobs": []}),
                self._event("response.content_part.done", {**where, "part": output_text(text)}),
                self._done(message, message_item(message.id, text, state)),
            ]
        if reasoning is not None:
            text = "".join(reasoning.pieces)
            where = {"item_id": reasoning.id, "output_index": reasoning.index, "summary_index": 0}
            out += [
                self._event("response.reasoning_summary_text.done", {**where, "text": text}),
                self._event(
                    "response.reasoning_summary_part.done", {**where, "part": summary(text)}
                ),
                self._done(reasoning, reasoning_item(reasoning.id, text)),
            ]
        return out

    def _close_all(self) -> list[hub.Out]:
        out = self._close_open()
        for call in self.calls.values():
            arguments = "".join(call.pieces)
            fields = {"item_id": call.id, "output_index": call.index, "arguments": arguments}
            out.append(self._event("response.function_call_arguments.done", fields))
            whole = call_item(call.id, call.call_id, call.name, arguments, "completed")
            out.append(self._done(call, whole))
        self.calls = {}
        return out

    def _fail(self, code: str, message: str) -> list[hub.Out]:
        """The stream's error, as an `error` event and the response failed; nothing after.
        The `error` event carries any code; a response's error, only those the API
        publishes for one (the SDKs type it so)."""
        self.finished = True
        self.message = self.reasoning = None
        error = {"code": code if code in _RESPONSE_ERRORS else "server_error", "message": message}
        return [
            self._event("error", {"code": code, "message": message, "param": None}),
            self._event("response.failed", {"response": self._response("failed", error=error)}),
        ]

    def finish(self) -> list[hub.Out]:
        """The end of the backend's stream: the open items done, and the response
        completed (or incomplete) with its whole output and usage."""
        if self.finished:
            return []
        out = [] if self.started else self._start(hub.Start("", ""))
        out += self._close_all()
        self.finished = True
        state, incomplete = status_of(self.stop)
        kind = "response.completed" if incomplete is None else "response.incomplete"
        response = self._response(state, incomplete)
        self.answer = orjson.dumps(response)
        return [*out, self._event(kind, {"response": response})]
