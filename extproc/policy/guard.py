"""What every stream filter shares: the hold-back over one stream of model output, and
the walk over a stream's events (filters.py has one filter per client API).

A guard keeps the characters that could still become a match or a placeholder, and
releases the rest at once: time to first token stays close to the provider's.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from extproc.policy.engine import Decisions, Redactions
from extproc.policy.outputs import check_output
from extproc.policy.rules import PolicySet
from extproc.sse import Event, Parser

_PLACEHOLDER_PREFIX = re.compile(r"\[[A-Z0-9]{0,24}(?:_[0-9]{0,6})?$")
_PLACEHOLDER_MAX = 34


class TextGuard:
    """One stream of model output: hold back, check, restore, release."""

    def __init__(
        self,
        policies: PolicySet,
        redactions: Redactions,
        decisions: Decisions,
        *,
        json_text: bool = False,
    ) -> None:
        self.policies = policies
        self.redactions = redactions
        self.decisions = decisions
        self.json_text = (
            json_text  # the text is JSON source (tool arguments): escape restored values
        )
        self.pending = ""
        self.holders = policies.output_deny
        self.detectors = policies.output_detection.detectors

    def hold(self) -> int:
        tail = self.pending
        held = 0
        for rule in self.holders:
            held = max(held, rule.hold(tail))
        for detector in self.detectors:
            held = max(held, detector.hold(tail))
        if self.redactions.originals:
            start = tail.rfind("[", max(0, len(tail) - _PLACEHOLDER_MAX))
            if start >= 0 and _PLACEHOLDER_PREFIX.match(tail, start):
                held = max(held, len(tail) - start)
        # One detector's hold-back may reach into another's value (the phone detector
        # holds the characters around a number): move the cut to that value's start,
        # never releasing half of it. Each move holds more, up to a longest match.
        for _ in self.detectors:
            moved = max(detector.spanning(tail, len(tail) - held) for detector in self.detectors)
            if moved <= held:
                break
            held = moved
        return held

    def feed(self, text: str, final: bool = False) -> tuple[str, bool]:
        """Text that may be released now, and whether a rule blocked the stream."""
        self.pending += text
        keep = 0 if final else self.hold()
        ready = self.pending[: len(self.pending) - keep]
        self.pending = self.pending[len(self.pending) - keep :]
        if not ready:
            return "", False
        checked, blocked = check_output(self.policies, ready, self.decisions, self.redactions)
        if blocked:
            return "", True
        return self.redactions.restore(checked, self.json_text), False


class StreamFilter:
    mode = "streamed"

    def __init__(self, policies: PolicySet, redactions: Redactions, decisions: Decisions) -> None:
        self.policies = policies
        self.redactions = redactions
        self.decisions = decisions
        self.parser = Parser()
        self.guards: dict[Any, TextGuard] = {}
        self.ended = False  # a block ended the client's stream: drop the rest

    def guard(self, key: Any, json_text: bool = False) -> TextGuard:
        found = self.guards.get(key)
        if found is None:
            found = self.guards[key] = TextGuard(
                self.policies, self.redactions, self.decisions, json_text=json_text
            )
        return found

    def flush(self, key: Any) -> tuple[str, bool]:
        """What the guard of `key` still holds, checked, and whether a rule blocked it."""
        guard = self.guards.get(key)
        if guard is None:
            return "", False
        return guard.feed("", final=True)

    def feed(self, chunk: bytes, end_of_stream: bool) -> bytes | None:
        events = self.parser.feed(chunk)
        if end_of_stream:
            events += self.parser.close()
        out = self.process([(event, payload_of(event)) for event in events], end_of_stream)
        return b"".join(event.encode() for event in out)

    def process(self, items: list[tuple[Event, Any]], end_of_stream: bool) -> list[Event]:
        """Filter parsed events (each with its JSON payload, or None when it has none)."""
        if self.ended:
            return []
        out: list[Event] = []
        for event, payload in items:
            if self.ended:
                break
            out.extend(self.event(event, payload))
        if end_of_stream and not self.ended:
            out.extend(self.finish())
        return out

    def event(self, event: Event, payload: Any) -> list[Event]:
        raise NotImplementedError

    def finish(self) -> list[Event]:
        """The provider's stream ended: release what is still held."""
        return []


def payload_of(event: Event) -> Any:
    """The JSON payload of an event; None for comments, `[DONE]` and text that is not JSON."""
    if event.comment is not None or not event.data or event.data == "[DONE]":
        return None
    try:
        return orjson.loads(event.data)
    except orjson.JSONDecodeError:
        return None
