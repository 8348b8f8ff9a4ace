"""Response policy over a Responses API stream: its text and argument deltas checked and
restored with the hold-back every stream filter uses, and the events that carry the
whole text (`.done` events, items done, the response completed) made to say what the
deltas gave.

The filter numbers every event it passes on (`sequence_number`): held text released
before a `.done` event is one event more, a delta wholly held one fewer. A blocked answer
ends as the API ends one its content filter stopped: its open items done as incomplete,
then `response.incomplete` with reason `content_filter`, whose output holds the items
as the client got them."""

from __future__ import annotations

from typing import Any

import orjson

from extproc.policy.engine import Decisions, Redactions
from extproc.policy.guard import StreamFilter
from extproc.policy.rules import PolicySet
from extproc.sse import Event

_TEXT_DELTA = "response.output_text.delta"
_ARGUMENTS_DELTA = "response.function_call_arguments.delta"
# The events ending the stream, each with the whole response.
_ENDS = frozenset(("response.completed", "response.incomplete", "response.failed"))
# Characters of released text and arguments kept to write the `.done` events and the
# response as the deltas gave them: as the codec's encoder keeps (16 Mi, past the longest
# answer any model writes); a stream past it fails rather than use the gateway's memory.
MAX_KEPT = 16 * 2**20
# A text stream: (output index, content index), or (output index, None) for arguments.
Key = tuple[int, int | None]


def _index(value: Any) -> int:
    """An index from the provider; one that is no whole number reads as -1 (its text is
    still filtered)."""
    return value if type(value) is int else -1


def _key(payload: dict[str, Any], content: str | None) -> Key:
    return (
        _index(payload.get("output_index")),
        None if content is None else _index(payload.get(content)),
    )


class ResponsesStreamFilter(StreamFilter):
    """Responses API events: output text and function call arguments."""

    def __init__(self, policies: PolicySet, redactions: Redactions, decisions: Decisions) -> None:
        super().__init__(policies, redactions, decisions)
        self.sequence = 0  # the number of the next event the client gets
        self.response: dict[str, Any] = {}  # as the last lifecycle event gave it
        self.items: dict[int, dict[str, Any]] = {}  # by output index, as the client got them
        self.open: set[int] = set()  # output indexes added and not done
        self.given: dict[Key, list[str]] = {}  # text released, by stream
        self.ids: dict[Key, Any] = {}  # each stream's item id
        self.kept = 0

    # -- numbering ------------------------------------------------------------------------

    def _pass(self, event: Event, payload: dict[str, Any], changed: bool = False) -> Event:
        """The event as the client gets it, numbered: its bytes when they hold."""
        number = self.sequence
        self.sequence = number + 1
        if not changed and payload.get("sequence_number") == number:
            return event
        payload["sequence_number"] = number
        return Event(event.name, orjson.dumps(payload).decode())

    def _new(self, payload: dict[str, Any]) -> Event:
        payload["sequence_number"] = self.sequence
        self.sequence += 1
        return Event(payload["type"], orjson.dumps(payload).decode())

    # -- events ---------------------------------------------------------------------------

    def event(self, event: Event, payload: Any) -> list[Event]:
        if event.comment is not None or not isinstance(payload, dict):
            return [event]
        kind = payload.get("type")
        if type(kind) is not str:
            return [self._pass(event, payload)]  # no event of the API's
        if kind == _TEXT_DELTA:
            return self.delta(event, payload, _key(payload, "content_index"))
        if kind == _ARGUMENTS_DELTA:
            return self.delta(event, payload, _key(payload, None))
        if kind == "response.output_text.done":
            return self.done(event, payload, _key(payload, "content_index"), "text")
        if kind == "response.function_call_arguments.done":
            return self.done(event, payload, _key(payload, None), "arguments")
        changed = False
        if kind == "response.content_part.done":
            part, key = payload.get("part"), _key(payload, "content_index")
            if isinstance(part, dict) and part.get("type") == "output_text" and key in self.given:
                part["text"] = "".join(self.given[key])
                changed = True
        elif kind == "response.output_item.added" or kind == "response.output_item.done":
            index, item = _index(payload.get("output_index")), payload.get("item")
            if isinstance(item, dict):
                self.items[index] = self._patched(index, item)
                if kind == "response.output_item.added":
                    self.open.add(index)
                else:
                    self.open.discard(index)
                    changed = True
        elif kind in _ENDS:
            out = self.release_all()
            if self.ended:
                return out
            response = payload.get("response")
            if isinstance(response, dict):
                self._patch_output(response)
            return [*out, self._pass(event, payload, True)]
        elif kind in ("response.created", "response.in_progress", "response.queued"):
            response = payload.get("response")
            self.response = response if isinstance(response, dict) else {}
        return [self._pass(event, payload, changed)]

    def delta(self, event: Event, payload: dict[str, Any], key: Key) -> list[Event]:
        text = payload.get("delta")
        if not isinstance(text, str):
            return [self._pass(event, payload)]
        guard = self.guard(key, json_text=key[1] is None)
        self.ids[key] = payload.get("item_id")
        released, blocked = guard.feed(text)
        if blocked:
            return self.block()
        if not released:
            return []
        failed = self._keep(key, released)
        if failed:
            return failed
        payload["delta"] = released
        return [self._pass(event, payload, released != text)]

    def _keep(self, key: Key, text: str) -> list[Event]:
        """Keep released text; past MAX_KEPT, the stream's failure."""
        self.kept += len(text)
        if self.kept > MAX_KEPT:
            return self.fail("The answer is longer than the gateway's policy filter reads.")
        self.given.setdefault(key, []).append(text)
        return []

    def release(self, key: Key) -> list[Event]:
        """What the stream's guard still holds, as one more delta."""
        text, blocked = self.flush(key)
        if blocked:
            return self.block()
        if not text:
            return []
        failed = self._keep(key, text)
        if failed:
            return failed
        where = {"item_id": self.ids.get(key), "output_index": key[0]}
        if key[1] is None:
            return [self._new({"type": _ARGUMENTS_DELTA, **where, "delta": text})]
        delta = {"content_index": key[1], "delta": text, "logprobs": []}
        return [self._new({"type": _TEXT_DELTA, **where, **delta})]

    def release_all(self) -> list[Event]:
        out: list[Event] = []
        for key in list(self.guards):
            out += self.release(key)
            if self.ended:
                break
        return out

    def done(self, event: Event, payload: dict[str, Any], key: Key, field: str) -> list[Event]:
        """A text's `.done` event: what its guard held goes out first, then the event with
        the text the deltas gave."""
        out = self.release(key)
        if self.ended:
            return out
        if key in self.given:
            payload[field] = "".join(self.given[key])
        return [*out, self._pass(event, payload, key in self.given)]

    def finish(self) -> list[Event]:
        return self.release_all()

    # -- the whole text in items and the response ----------------------------------------

    def _patched(self, index: int, item: dict[str, Any]) -> dict[str, Any]:
        """An item with the text of each stream of it the filter passed on."""
        kind = item.get("type")
        if kind == "message":
            content = item.get("content")
            for at, part in enumerate(content if isinstance(content, list) else ()):
                given = self.given.get((index, at))
                if (
                    given is not None
                    and isinstance(part, dict)
                    and part.get("type") == "output_text"
                ):
                    part["text"] = "".join(given)
        elif kind == "function_call" and (index, None) in self.given:
            item["arguments"] = "".join(self.given[(index, None)])
        return item

    def _patch_output(self, response: dict[str, Any]) -> None:
        output = response.get("output")
        for index, item in enumerate(output if isinstance(output, list) else ()):
            if isinstance(item, dict):
                self._patched(index, item)

    # -- ending the client's stream ------------------------------------------------------

    def _closed(self, index: int) -> dict[str, Any]:
        """An open item done as incomplete, with what the client got of it."""
        item = {**self.items[index], "status": "incomplete"}
        if item.get("type") == "message":
            parts = sorted(k[1] for k in self.given if k[0] == index and k[1] is not None)
            item["content"] = [
                {"type": "output_text", "text": "".join(self.given[(index, at)]),
                 "annotations": [], "logprobs": []}
                for at in parts
            ]  # fmt: skip
        return self._patched(index, item)

    def block(self) -> list[Event]:
        """The open items done, and the response incomplete for its content filter."""
        self.ended = True
        out: list[Event] = []
        for index in sorted(self.open):
            self.items[index] = item = self._closed(index)
            done = {"type": "response.output_item.done", "output_index": index, "item": item}
            out.append(self._new(done))
        self.open.clear()
        output = [self.items[index] for index in sorted(self.items)]
        response = {
            **self.response,
            "status": "incomplete",
            "incomplete_details": {"reason": "content_filter"},
            "output": output,
        }
        out.append(self._new({"type": "response.incomplete", "response": response}))
        return out

    def fail(self, message: str) -> list[Event]:
        """The stream failed as the API fails one: `error`, then the response failed."""
        self.ended = True
        error = {"code": "server_error", "message": message}
        response = {**self.response, "status": "failed", "error": error}
        return [
            self._new({"type": "error", **error, "param": None}),
            self._new({"type": "response.failed", "response": response}),
        ]
