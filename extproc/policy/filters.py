"""Response body filters: JSON as a whole, SSE streams event by event with a hold-back.

A stream filter keeps, per text stream (a choice, a content block, tool arguments), a
guard (guard.py) holding the characters that could still become a match or a
placeholder. Released text is re-framed into the events that carried it. When a rule
blocks, the stream ends the way the client's protocol ends a filtered stream, and
everything after is dropped. The Responses API's filter is in responses_stream.py.
"""

from __future__ import annotations

from typing import Any

import orjson

from extproc.apis import Endpoint, Kind, Schema
from extproc.policy.engine import Decisions, Redactions
from extproc.policy.guard import StreamFilter as StreamFilter
from extproc.policy.guard import TextGuard as TextGuard
from extproc.policy.guard import payload_of as payload_of
from extproc.policy.outputs import process_json
from extproc.policy.responses_stream import ResponsesStreamFilter
from extproc.policy.rules import PolicySet
from extproc.sse import Event


class JsonFilter:
    mode = "buffered"

    def __init__(
        self, endpoint: Endpoint, policies: PolicySet, redactions: Redactions, decisions: Decisions
    ) -> None:
        self.endpoint = endpoint
        self.policies = policies
        self.redactions = redactions
        self.decisions = decisions

    def process(self, body: dict[str, Any]) -> bytes | None:
        """The replacement for a parsed JSON response, or None to keep it."""
        new, changed = process_json(
            self.policies,
            self.redactions,
            self.decisions,
            self.endpoint.api,
            self.endpoint.kind,
            body,
        )
        return orjson.dumps(new) if changed else None


class OpenAIStreamFilter(StreamFilter):
    """Chat completion chunks; `data: [DONE]` ends the stream."""

    def __init__(
        self, policies: PolicySet, redactions: Redactions, decisions: Decisions, kind: Kind
    ) -> None:
        super().__init__(policies, redactions, decisions)
        self.kind = kind
        self.envelope: dict[str, Any] = {}  # id, model, created... of the last chunk

    def event(self, event: Event, payload: Any) -> list[Event]:
        if event.comment is not None:
            return [event]
        if event.data.strip() == "[DONE]":
            released = self.release_all()
            return released if self.ended else [*released, event]
        chunk = payload
        if not isinstance(chunk, dict) or not isinstance(chunk.get("choices"), list):
            return [event]
        self.envelope = {k: v for k, v in chunk.items() if k not in ("choices", "usage")}
        before: list[Event] = []
        keep_chunk = not chunk["choices"]
        for choice in chunk["choices"]:
            if not isinstance(choice, dict):
                continue
            index = choice.get("index", 0)
            final = choice.get("finish_reason") is not None
            meaningful, blocked, touched = self.choice(choice, final)
            if blocked:
                return self.block(index)
            if final:
                # What this choice still holds elsewhere goes out before the chunk ending it.
                before.extend(self.release(index, skip=touched))
                if self.ended:
                    return before
            keep_chunk = keep_chunk or meaningful
        if not keep_chunk:
            return before
        return [*before, Event(event.name, orjson.dumps(chunk).decode())]

    def choice(self, choice: dict[str, Any], final: bool) -> tuple[bool, bool, set[Any]]:
        """Filter one choice in place; (still worth sending, blocked, guards it fed)."""
        index = choice.get("index", 0)
        touched: set[Any] = set()
        container: Any = choice if self.kind is Kind.COMPLETIONS else choice.get("delta")
        key = "text" if self.kind is Kind.COMPLETIONS else "content"
        if not isinstance(container, dict):
            return True, False, touched
        text = container.get(key)
        meaningful = any(k != key for k in container) or final
        if isinstance(text, str) and (text or final):
            touched.add(index)
            released, blocked = self.guard(index).feed(text, final)
            if blocked:
                return False, True, touched
            container[key] = released
            meaningful = meaningful or bool(released)
        for call in container.get("tool_calls") or ():
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict) and isinstance(function.get("arguments"), str):
                guard_key = (index, call.get("index", 0))
                touched.add(guard_key)
                arguments, blocked = self.guard(guard_key, json_text=True).feed(
                    function["arguments"], final
                )
                if blocked:
                    return False, True, touched
                function["arguments"] = arguments
                meaningful = True
        return meaningful, False, touched

    def _chunk(self, index: int, delta: dict[str, Any], finish: str | None = None) -> Event:
        if self.kind is Kind.COMPLETIONS:
            choice: dict[str, Any] = {
                "index": index,
                "text": delta.get("content", ""),
                "logprobs": None,
                "finish_reason": finish,
            }
        else:
            choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        return Event(None, orjson.dumps({**self.envelope, "choices": [choice]}).decode())

    def release(self, index: int, skip: set[Any] | None = None) -> list[Event]:
        events = []
        guard = self.guards.get(index)
        if guard is not None and index not in (skip or ()):
            text, blocked = guard.feed("", final=True)
            if blocked:
                return self.block(index)
            if text:
                events.append(self._chunk(index, {"content": text}))
        for key, guard in list(self.guards.items()):
            if isinstance(key, tuple) and key[0] == index and key not in (skip or ()):
                text, blocked = guard.feed("", final=True)
                if blocked:
                    return self.block(index)
                if text:
                    call = {"index": key[1], "function": {"arguments": text}}
                    events.append(self._chunk(index, {"tool_calls": [call]}))
        return events

    def release_all(self) -> list[Event]:
        events: list[Event] = []
        for index in sorted({k if isinstance(k, int) else k[0] for k in self.guards}):
            events.extend(self.release(index))
            if self.ended:
                break
        return events

    def block(self, index: int) -> list[Event]:
        self.ended = True
        return [self._chunk(index, {}, "content_filter"), Event(None, "[DONE]")]

    def finish(self) -> list[Event]:
        return self.release_all()


class AnthropicStreamFilter(StreamFilter):
    """Messages API events: content blocks carry text_delta and input_json_delta."""

    def __init__(self, policies: PolicySet, redactions: Redactions, decisions: Decisions) -> None:
        super().__init__(policies, redactions, decisions)
        self.open_blocks: set[int] = set()
        self.output_tokens = 0

    def event(self, event: Event, payload: Any) -> list[Event]:
        if event.comment is not None or not isinstance(payload, dict):
            return [event]
        kind = payload.get("type")
        index = payload.get("index", 0)
        if kind == "content_block_start":
            self.open_blocks.add(index)
        elif kind == "content_block_delta":
            return self.delta(event, payload, index)
        elif kind == "content_block_stop":
            released = self.release(index)
            if self.ended:
                return released
            self.open_blocks.discard(index)
            return [*released, event]
        elif kind == "message_delta":
            usage = payload.get("usage")
            if isinstance(usage, dict) and isinstance(usage.get("output_tokens"), int):
                self.output_tokens = usage["output_tokens"]
        return [event]

    def delta(self, event: Event, payload: dict[str, Any], index: int) -> list[Event]:
        delta = payload.get("delta")
        if not isinstance(delta, dict):
            return [event]
        if delta.get("type") == "text_delta" and isinstance(delta.get("text"), str):
            key, json_text = "text", False
        elif delta.get("type") == "input_json_delta" and isinstance(delta.get("partial_json"), str):
            key, json_text = "partial_json", True
        else:
            return [event]
        released, blocked = self.guard(index, json_text).feed(delta[key])
        if blocked:
            return self.block()
        if not released:
            return []
        delta[key] = released
        return [Event(event.name, orjson.dumps(payload).decode())]

    def release(self, index: int) -> list[Event]:
        text, blocked = self.flush(index)
        if blocked:
            return self.block()
        if not text:
            return []
        key, kind = (
            ("partial_json", "input_json_delta")
            if self.guards[index].json_text
            else ("text", "text_delta")
        )
        payload = {
            "type": "content_block_delta",
            "index": index,
            "delta": {"type": kind, key: text},
        }
        return [Event("content_block_delta", orjson.dumps(payload).decode())]

    def block(self) -> list[Event]:
        """Close open blocks, stop with reason "refusal", end the message."""
        self.ended = True
        events = [
            Event(
                "content_block_stop",
                orjson.dumps({"type": "content_block_stop", "index": i}).decode(),
            )
            for i in sorted(self.open_blocks)
        ]
        stop = {
            "type": "message_delta",
            "delta": {"stop_reason": "refusal", "stop_sequence": None},
            "usage": {"output_tokens": self.output_tokens},
        }
        events.append(Event("message_delta", orjson.dumps(stop).decode()))
        events.append(Event("message_stop", '{"type":"message_stop"}'))
        return events

    def finish(self) -> list[Event]:
        events: list[Event] = []
        for index in sorted(self.guards):
            events.extend(self.release(index))
            if self.ended:
                break
        return events


def output_filter(
    content_type: str,
    endpoint: Endpoint,
    policies: PolicySet,
    redactions: Redactions,
    decisions: Decisions,
) -> JsonFilter | StreamFilter | None:
    """The filter for a 200 response, by its content type and the client's API."""
    media = media_type(content_type)
    if media == "text/event-stream":
        return stream_filter(endpoint, policies, redactions, decisions)
    if media == "application/json":
        return json_filter(endpoint, policies, redactions, decisions)
    return None


def media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def stream_filter(
    endpoint: Endpoint, policies: PolicySet, redactions: Redactions, decisions: Decisions
) -> StreamFilter:
    if endpoint.api is Schema.ANTHROPIC:
        return AnthropicStreamFilter(policies, redactions, decisions)
    if endpoint.api is Schema.OPENAI_RESPONSES:
        return ResponsesStreamFilter(policies, redactions, decisions)
    return OpenAIStreamFilter(policies, redactions, decisions, endpoint.kind)


def json_filter(
    endpoint: Endpoint, policies: PolicySet, redactions: Redactions, decisions: Decisions
) -> JsonFilter | None:
    """Embeddings carry no text to check."""
    if endpoint.kind is Kind.EMBEDDINGS:
        return None
    return JsonFilter(endpoint, policies, redactions, decisions)
