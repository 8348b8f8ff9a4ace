"""OpenAI Chat Completions streams to and from the hub: chunks, usage, finish reasons."""

from __future__ import annotations

import time
from typing import Any, Final

import orjson

from extproc.translate import hub
from extproc.translate.hub import count, obj, string

STOPS: Final = {
    "stop": hub.Stop.END,
    "length": hub.Stop.MAX_TOKENS,
    "tool_calls": hub.Stop.TOOL_USE,
    "function_call": hub.Stop.TOOL_USE,
    "content_filter": hub.Stop.REFUSAL,
}
FINISH_REASONS: Final = {
    hub.Stop.END: "stop",
    hub.Stop.STOP_SEQUENCE: "stop",
    hub.Stop.MAX_TOKENS: "length",
    hub.Stop.TOOL_USE: "tool_calls",
    hub.Stop.REFUSAL: "content_filter",
    hub.Stop.PAUSE: "stop",
    hub.Stop.CONTEXT_WINDOW: "length",
}


def read_usage(usage: dict[str, Any]) -> hub.Usage:
    details = usage.get("prompt_tokens_details")
    cached = count(details.get("cached_tokens")) if isinstance(details, dict) else 0
    return hub.Usage(
        input=max(0, count(usage.get("prompt_tokens")) - cached),
        cache_read=cached,
        output=count(usage.get("completion_tokens")),
    )


def write_usage(usage: hub.Usage) -> dict[str, Any]:
    cached = usage.cache_read or 0
    prompt = (usage.input or 0) + cached + (usage.cache_write or 0)
    completion = usage.output or 0
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    }


class StreamDecoder:
    """chat.completion.chunk payloads from the backend, then `[DONE]`."""

    def __init__(self) -> None:
        self.started = False

    def text(self, payload: Any) -> str | None:
        if not self.started or type(payload) is not dict:
            return None
        choices = payload.get("choices")
        if type(choices) is not list or len(choices) != 1 or payload.get("usage") is not None:
            return None
        choice = choices[0]
        if (
            type(choice) is not dict
            or choice.get("finish_reason") is not None
            or choice.get("index", 0) != 0
        ):
            return None
        delta = choice.get("delta")
        if type(delta) is not dict or delta.get("tool_calls"):
            return None
        text = delta.get("content")
        return text if type(text) is str and text else None

    def events(self, payload: Any) -> list[hub.Event]:
        if payload == "[DONE]":
            return [hub.END]
        if not isinstance(payload, dict):
            return []
        if "error" in payload and "choices" not in payload:
            error = obj(payload.get("error"))
            return [hub.StreamError(None, str(error.get("message", "")))]
        events: list[hub.Event] = []
        if not self.started:
            self.started = True
            events.append(hub.Start(str(payload.get("id", "")), string(payload.get("model"))))
        if isinstance(payload.get("usage"), dict):
            events.append(read_usage(payload["usage"]))
        choices = payload.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue  # n is 1 for clients of other APIs
            delta = obj(choice.get("delta"))
            text = delta.get("content")
            if isinstance(text, str) and text:
                events.append(hub.TextDelta(text))
            calls = delta.get("tool_calls")
            for call in calls if isinstance(calls, list) else ():
                if isinstance(call, dict):
                    events.append(_call_delta(call))
            reason = choice.get("finish_reason")
            if reason is not None:
                events.append(hub.Finished(STOPS.get(str(reason), hub.Stop.END)))
        return events


def _call_delta(call: dict[str, Any]) -> hub.ToolCallDelta:
    function = obj(call.get("function"))
    index = call.get("index", 0)
    call_id, name = call.get("id"), function.get("name")
    return hub.ToolCallDelta(
        index if isinstance(index, int) else 0,
        call_id if isinstance(call_id, str) else None,
        name if isinstance(name, str) else None,
        string(function.get("arguments")),
    )


_DONE: Final[hub.Out] = (None, "[DONE]")


class StreamEncoder:
    """Hub events in, chat.completion.chunk payloads out; `[DONE]` ends the stream."""

    answer: bytes | None = None  # its stream carries no whole answer

    def __init__(self, include_usage: bool, created: int | None = None) -> None:
        self.include_usage = include_usage
        self.created = created if created is not None else int(time.time())
        self.id = ""
        self.model = ""
        self.usage = hub.Usage()
        self.finished = False
        # A text chunk's bytes around its text, for the message they belong to.
        self._frame: tuple[bytes, bytes] | None = None

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }

    def text(self, text: str) -> bytes:
        """A text chunk, nearly every chunk: its text JSON-encoded between the bytes every
        text chunk of the message shares."""
        frame = self._frame
        if frame is None:
            # The chunk around a marker (a control character, which JSON escapes): what
            # comes before and after it holds for every text delta.
            whole = orjson.dumps(self._chunk({"content": "\x01"}))
            head, _, tail = whole.rpartition(b'"\\u0001"')
            frame = self._frame = (b"data: " + head, tail + b"\n\n")
        return frame[0] + orjson.dumps(text) + frame[1]

    def events(self, events: list[hub.Event]) -> list[hub.Out]:
        out: list[hub.Out] = []
        for event in events:
            if isinstance(event, hub.TextDelta):
                out.append((None, self._chunk({"content": event.text})))
            elif isinstance(event, hub.ToolCallDelta):
                out.append((None, self._chunk({"tool_calls": [_call_out(event)]})))
            elif isinstance(event, hub.Start):
                self.id, self.model, self._frame = event.id, event.model, None
                out.append((None, self._chunk({"role": "assistant", "content": ""})))
            elif isinstance(event, hub.Usage):
                self.usage.update(event)
            elif isinstance(event, hub.Finished):
                out.append((None, self._chunk({}, FINISH_REASONS[event.stop])))
            elif isinstance(event, hub.StreamError):
                out += [(None, _error(event)), _DONE]
            elif isinstance(event, hub.End):
                out += self.finish()
            # ReasoningDelta: Chat Completions has no place for it.
        return out

    def finish(self) -> list[hub.Out]:
        """The stream's end: the usage chunk if the client asked for it, and `[DONE]`."""
        if self.finished:
            return []
        self.finished = True
        out: list[hub.Out] = []
        if self.include_usage:
            chunk = self._chunk({})
            chunk["choices"] = []
            chunk["usage"] = write_usage(self.usage)
            out.append((None, chunk))
        out.append(_DONE)
        return out


def _call_out(event: hub.ToolCallDelta) -> dict[str, Any]:
    if event.id is None:
        return {"index": event.index, "function": {"arguments": event.arguments}}
    function = {"name": event.name, "arguments": event.arguments}
    return {"index": event.index, "id": event.id, "type": "function", "function": function}


def _error(event: hub.StreamError) -> dict[str, Any]:
    message = event.message if event.message is not None else "The provider reported an error."
    kind = event.kind if event.kind is not None else "api_error"
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}
