"""Anthropic Messages streams to and from the hub: events, usage, stop reasons."""

from __future__ import annotations

from typing import Any, Final

import orjson

from extproc.translate import hub
from extproc.translate.hub import counted, obj, string

STOPS: Final = {
    "end_turn": hub.Stop.END,
    "stop_sequence": hub.Stop.STOP_SEQUENCE,
    "max_tokens": hub.Stop.MAX_TOKENS,
    "tool_use": hub.Stop.TOOL_USE,
    "refusal": hub.Stop.REFUSAL,
    "pause_turn": hub.Stop.PAUSE,
    "model_context_window_exceeded": hub.Stop.CONTEXT_WINDOW,
}
STOP_REASONS: Final = {stop: reason for reason, stop in STOPS.items()}


def read_usage(usage: dict[str, Any]) -> hub.Usage:
    return hub.Usage(
        input=counted(usage, "input_tokens"),
        cache_read=counted(usage, "cache_read_input_tokens"),
        cache_write=counted(usage, "cache_creation_input_tokens"),
        output=counted(usage, "output_tokens"),
    )


def write_usage(usage: hub.Usage) -> dict[str, int]:
    return {
        "input_tokens": usage.input or 0,
        "cache_creation_input_tokens": usage.cache_write or 0,
        "cache_read_input_tokens": usage.cache_read or 0,
        "output_tokens": usage.output or 0,
    }


def message_id(id: str) -> str:
    """An id in Anthropic's form (its SDKs and clients expect the `msg_` prefix)."""
    return id if id.startswith("msg_") else f"msg_{id}"


def _position(event: dict[str, Any]) -> int:
    index = event.get("index", 0)
    return index if isinstance(index, int) else 0


class StreamDecoder:
    """Anthropic events from the backend, `message_start` to `message_stop`."""

    def __init__(self) -> None:
        self.tool_index: dict[int, int] = {}  # content block index -> tool call number

    def text(self, payload: Any) -> str | None:
        if type(payload) is dict and payload.get("type") == "content_block_delta":
            delta = payload.get("delta")
            if type(delta) is dict and delta.get("type") == "text_delta":
                text = delta.get("text", "")
                return text if type(text) is str else None
        return None

    def events(self, payload: Any) -> list[hub.Event]:
        if not isinstance(payload, dict):
            return []
        kind = payload.get("type")
        if kind == "content_block_delta":  # nearly every event: first
            return self._delta(payload)
        if kind == "message_start":
            message = obj(payload.get("message"))
            events: list[hub.Event] = [
                hub.Start(str(message.get("id", "")), string(message.get("model")))
            ]
            if isinstance(message.get("usage"), dict):
                started = read_usage(message["usage"])
                started.output = None  # a placeholder: the output is counted at the end
                events.append(started)
            return events
        if kind == "content_block_start":
            return self._block(payload)
        if kind == "message_delta":
            reason = obj(payload.get("delta")).get("stop_reason")
            finished = hub.Finished(STOPS.get(str(reason), hub.Stop.END))
            usage = payload.get("usage")
            return [read_usage(usage), finished] if isinstance(usage, dict) else [finished]
        if kind == "message_stop":
            return [hub.END]
        if kind == "error":
            error = obj(payload.get("error"))
            name, text = error.get("type"), error.get("message")
            return [
                hub.StreamError(
                    name if isinstance(name, str) else None,
                    text if isinstance(text, str) else None,
                )
            ]
        return []  # ping, content_block_stop, events Anthropic may add

    def _block(self, payload: dict[str, Any]) -> list[hub.Event]:
        block = obj(payload.get("content_block"))
        kind = block.get("type")
        if kind == "tool_use":
            index = self.tool_index.setdefault(_position(payload), len(self.tool_index))
            call_id, name = string(block.get("id")), string(block.get("name"))
            return [hub.ToolCallDelta(index, call_id, name, "")]
        if kind == "redacted_thinking":
            return [hub.ReasoningDelta(redacted=string(block.get("data")))]
        return []  # a text or thinking block starts empty; its deltas follow

    def _delta(self, payload: dict[str, Any]) -> list[hub.Event]:
        delta = obj(payload.get("delta"))
        kind = delta.get("type")
        if kind == "text_delta":
            text = delta.get("text", "")
            return [hub.TextDelta(text)] if isinstance(text, str) else []
        if kind == "input_json_delta":
            index = self.tool_index.get(_position(payload), 0)
            return [hub.ToolCallDelta(index, None, None, string(delta.get("partial_json")))]
        if kind == "thinking_delta":
            return [hub.ReasoningDelta(text=string(delta.get("thinking")))]
        if kind == "signature_delta":
            return [hub.ReasoningDelta(signature=string(delta.get("signature")))]
        return []


_TEXT: Final = ("text", 0)
_THINKING: Final = ("thinking", 0)
_HEAD: Final = b"event: content_block_delta\ndata: "


class StreamEncoder:
    """Hub events in, Anthropic events out: each content block opened, filled and closed,
    the stop reason and usage in `message_delta`, then `message_stop`."""

    answer: bytes | None = None  # its stream carries no whole answer

    def __init__(self) -> None:
        self.started = False
        self.finished = False
        self.open_block: tuple[str, int] | None = None  # ("text" | "tool" | ..., tool number)
        self.blocks = 0
        self.stop_reason = "end_turn"
        self.usage: hub.Usage | None = None
        # A text delta's bytes around its text, for the block it belongs to.
        self._frame: tuple[int, bytes, bytes] | None = None

    def text(self, text: str) -> bytes | None:
        """A text delta in the open text block, nearly every event: its text JSON-encoded
        between the bytes every delta of the block shares."""
        if self.open_block != _TEXT:
            return None  # the block opens first
        frame = self._frame
        if frame is None or frame[0] != self.blocks:
            # The event around a marker (a control character, which JSON escapes).
            whole = orjson.dumps(self._delta({"type": "text_delta", "text": "\x01"})[1])
            head, _, tail = whole.rpartition(b'"\\u0001"')
            frame = self._frame = (self.blocks, _HEAD + head, tail + b"\n\n")
        return frame[1] + orjson.dumps(text) + frame[2]

    def _start(self, start: hub.Start) -> list[hub.Out]:
        self.started = True
        message: dict[str, Any] = {
            "id": message_id(start.id),
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": start.model,
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return [("message_start", {"type": "message_start", "message": message})]

    def _close(self) -> list[hub.Out]:
        if self.open_block is None:
            return []
        self.open_block = None
        return [("content_block_stop", {"type": "content_block_stop", "index": self.blocks - 1})]

    def _open(self, key: tuple[str, int], block: dict[str, Any]) -> list[hub.Out]:
        out = self._close()
        self.open_block = key
        self.blocks += 1
        start = {"type": "content_block_start", "index": self.blocks - 1, "content_block": block}
        return [*out, ("content_block_start", start)]

    def _delta(self, delta: dict[str, Any]) -> hub.Out:
        payload = {"type": "content_block_delta", "index": self.blocks - 1, "delta": delta}
        return ("content_block_delta", payload)

    def events(self, events: list[hub.Event]) -> list[hub.Out]:
        out: list[hub.Out] = []
        for event in events:
            if not self.started and not isinstance(event, (hub.Start, hub.StreamError, hub.End)):
                out += self._start(hub.Start("", ""))  # a backend's stream without a start
            if isinstance(event, hub.TextDelta):
                if self.open_block != _TEXT:
                    out += self._open(_TEXT, {"type": "text", "text": ""})
                out.append(self._delta({"type": "text_delta", "text": event.text}))
            elif isinstance(event, hub.ToolCallDelta):
                out += self._call(event)
            elif isinstance(event, hub.Start):
                out += [] if self.started else self._start(event)
            elif isinstance(event, hub.Usage):
                self.usage = self.usage or hub.Usage()
                self.usage.update(event)
            elif isinstance(event, hub.Finished):
                self.stop_reason = STOP_REASONS[event.stop]
                out += self._close()
            elif isinstance(event, hub.ReasoningDelta):
                out += self._reasoning(event)
            elif isinstance(event, hub.StreamError):
                error = {"type": "api_error", "message": event.message or ""}
                out.append(("error", {"type": "error", "error": error}))
            else:  # End
                out += self.finish()
        return out

    def _call(self, event: hub.ToolCallDelta) -> list[hub.Out]:
        out: list[hub.Out] = []
        key = ("tool", event.index)
        if self.open_block != key:
            block = {
                "type": "tool_use",
                "id": event.id or "",
                "name": event.name or "",
                "input": {},
            }
            out += self._open(key, block)
        if event.arguments:
            out.append(self._delta({"type": "input_json_delta", "partial_json": event.arguments}))
        return out

    def _reasoning(self, event: hub.ReasoningDelta) -> list[hub.Out]:
        if event.redacted:
            # A whole block of its own: opened with its data, closed by what comes next.
            return self._open(
                ("redacted", self.blocks), {"type": "redacted_thinking", "data": event.redacted}
            )
        out: list[hub.Out] = []
        if self.open_block != _THINKING:
            out += self._open(_THINKING, {"type": "thinking", "thinking": ""})
        if event.text:
            out.append(self._delta({"type": "thinking_delta", "thinking": event.text}))
        if event.signature:
            out.append(self._delta({"type": "signature_delta", "signature": event.signature}))
        return out

    def finish(self) -> list[hub.Out]:
        """The end of the backend's stream: the open block closed, the stop reason and
        usage, `message_stop`."""
        if self.finished:
            return []
        self.finished = True
        out = [] if self.started else self._start(hub.Start("", ""))
        out += self._close()
        usage = write_usage(self.usage) if self.usage is not None else {"output_tokens": 0}
        delta = {"stop_reason": self.stop_reason, "stop_sequence": None}
        out.append(("message_delta", {"type": "message_delta", "delta": delta, "usage": usage}))
        out.append(("message_stop", {"type": "message_stop"}))
        return out
