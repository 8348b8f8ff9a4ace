"""Exact-match response cache: keys, stores, and replaying a stored answer as a stream.

An entry is the JSON answer the client received, stored under a key that covers
everything that changes the answer: the backend, the upstream model, the endpoint, the
request body after policy (without the fields that only change delivery: `stream`,
`stream_options`) and the tenant, unless the entry is shared. A client that asks to
stream gets a stored answer replayed as a well-formed stream of its API (a Responses
API answer as its numbered events, each item's content in one delta).
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from typing import Any, Final, Protocol

import orjson

from extproc.apis import Schema
from extproc.config.settings import CacheMode

# Fields that change how an answer is delivered, not what it says.
_DELIVERY: Final = ("stream", "stream_options")
# The modes as this module's constants: a member read from the (interpreted) enum class
# goes through EnumType's attribute hook on every request.
_ALL: Final = CacheMode.ALL
_DETERMINISTIC: Final = CacheMode.DETERMINISTIC


def key(scope: str, backend: str, upstream_model: str, endpoint: str, body: dict[str, Any]) -> str:
    normalized = {k: v for k, v in body.items() if k not in _DELIVERY and k != "model"}
    material = orjson.dumps(
        [scope, backend, upstream_model, endpoint, normalized], option=orjson.OPT_SORT_KEYS
    )
    return hashlib.sha256(material).hexdigest()


def cacheable(mode: CacheMode | None, body: dict[str, Any]) -> bool:
    """ALL caches every request; DETERMINISTIC those sampling at temperature 0; OFF and no
    mode none. A Responses API request run in the background is answered before it is
    done: never cached."""
    if body.get("background") is True:
        return False
    if mode is _ALL:
        return True
    return mode is _DETERMINISTIC and body.get("temperature") == 0 and body.get("n", 1) == 1


class CacheStore(Protocol):
    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl: float) -> None: ...


class MemoryCache:
    """Least-recently-used entries within a byte bound, each with an expiry."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    async def get(self, key: str) -> bytes | None:
        return self.get_now(key)

    def get_now(self, key: str) -> bytes | None:
        """get() without a coroutine: the shell calls it at once, with no task."""
        found = self._entries.get(key)
        if found is None:
            return None
        expires, value = found
        if expires < time.monotonic():
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return value

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        if len(value) > self.max_bytes:
            return
        if key in self._entries:
            self._drop(key)
        self._entries[key] = (time.monotonic() + ttl, value)
        self.bytes += len(value)
        while self.bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))

    def _drop(self, key: str) -> None:
        _, value = self._entries.pop(key)
        self.bytes -= len(value)


def _sse(payload: Any, name: str | None = None) -> bytes:
    head = f"event: {name}\n".encode() if name else b""
    data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return head + b"data: " + data + b"\n\n"


def openai_stream(answer: dict[str, Any], include_usage: bool) -> bytes:
    """A stored chat completion as the chunks of a stream."""
    base = {
        "id": answer.get("id", ""),
        "object": "chat.completion.chunk",
        "created": answer.get("created", 0),
        "model": answer.get("model", ""),
    }
    choice = (answer.get("choices") or [{}])[0]
    message = choice.get("message") or {}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choices = [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        return _sse({**base, "choices": choices})

    parts = [chunk({"role": "assistant", "content": ""})]
    if isinstance(message.get("content"), str) and message["content"]:
        parts.append(chunk({"content": message["content"]}))
    for index, call in enumerate(message.get("tool_calls") or ()):
        parts.append(chunk({"tool_calls": [{**call, "index": index}]}))
    parts.append(chunk({}, choice.get("finish_reason") or "stop"))
    if include_usage and answer.get("usage") is not None:
        parts.append(_sse({**base, "choices": [], "usage": answer["usage"]}))
    parts.append(b"data: [DONE]\n\n")
    return b"".join(parts)


def anthropic_stream(answer: dict[str, Any]) -> bytes:
    """A stored message as the events of a stream."""
    usage = answer.get("usage") or {}
    start = {
        **{k: v for k, v in answer.items() if k not in ("content", "stop_reason", "usage")},
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {**usage, "output_tokens": 0},
    }
    parts = [_sse({"type": "message_start", "message": start}, "message_start")]
    for index, block in enumerate(answer.get("content") or ()):
        if block.get("type") == "tool_use":
            opened = {**block, "input": {}}
            delta = {
                "type": "input_json_delta",
                "partial_json": orjson.dumps(block.get("input", {})).decode(),
            }
        else:
            opened = {**block, "text": ""}
            delta = {"type": "text_delta", "text": block.get("text", "")}
        parts.append(
            _sse(
                {"type": "content_block_start", "index": index, "content_block": opened},
                "content_block_start",
            )
        )
        parts.append(
            _sse(
                {"type": "content_block_delta", "index": index, "delta": delta},
                "content_block_delta",
            )
        )
        parts.append(_sse({"type": "content_block_stop", "index": index}, "content_block_stop"))
    end = {
        "type": "message_delta",
        "delta": {
            "stop_reason": answer.get("stop_reason"),
            "stop_sequence": answer.get("stop_sequence"),
        },
        "usage": {"output_tokens": usage.get("output_tokens", 0)},
    }
    parts.append(_sse(end, "message_delta"))
    parts.append(_sse({"type": "message_stop"}, "message_stop"))
    return b"".join(parts)


class _Numbered:
    """A Responses API stream being written: each event with its sequence number."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def add(self, kind: str, fields: dict[str, Any]) -> None:
        payload = {"type": kind, **fields, "sequence_number": len(self.parts)}
        self.parts.append(_sse(payload, kind))


def _message_events(out: _Numbered, where: dict[str, Any], item: dict[str, Any]) -> None:
    """A message's content parts: each added, its text (or refusal) in one delta, done."""
    content = item.get("content")
    for index, part in enumerate(content if isinstance(content, list) else ()):
        if not isinstance(part, dict):
            continue
        at = {**where, "content_index": index}
        refusal = part.get("type") == "refusal"
        key = "refusal" if refusal else "text"
        text = part.get(key) if isinstance(part.get(key), str) else ""
        out.add("response.content_part.added", {**at, "part": {**part, key: ""}})
        if refusal:
            out.add("response.refusal.delta", {**at, "delta": text})
            out.add("response.refusal.done", {**at, "refusal": text})
        else:
            out.add("response.output_text.delta", {**at, "delta": text, "logprobs": []})
            out.add("response.output_text.done", {**at, "text": text, "logprobs": []})
        out.add("response.content_part.done", {**at, "part": part})


def _reasoning_events(out: _Numbered, where: dict[str, Any], item: dict[str, Any]) -> None:
    summary = item.get("summary")
    for index, part in enumerate(summary if isinstance(summary, list) else ()):
        if not isinstance(part, dict):
            continue
        at = {**where, "summary_index": index}
        text = part.get("text") if isinstance(part.get("text"), str) else ""
        out.add("response.reasoning_summary_part.added", {**at, "part": {**part, "text": ""}})
        out.add("response.reasoning_summary_text.delta", {**at, "delta": text})
        out.add("response.reasoning_summary_text.done", {**at, "text": text})
        out.add("response.reasoning_summary_part.done", {**at, "part": part})


# An item as its `output_item.added` event gives it: before its content.
_EMPTY: Final[dict[str, dict[str, Any]]] = {
    "message": {"content": []},
    "function_call": {"arguments": ""},
    "reasoning": {"summary": []},
}


def responses_stream(answer: dict[str, Any]) -> bytes:
    """A stored Responses API answer as the events of its stream, numbered: the response
    created and in progress, each output item added, its content in one delta, done, and
    the response completed (or incomplete) as stored."""
    out = _Numbered()
    started = {**answer, "status": "in_progress", "output": [], "usage": None}
    started["incomplete_details"] = None
    out.add("response.created", {"response": started})
    out.add("response.in_progress", {"response": started})
    output = answer.get("output")
    for index, item in enumerate(output if isinstance(output, list) else ()):
        if not isinstance(item, dict):
            continue
        kind = item.get("type")
        opened = {**item, **_EMPTY.get(str(kind), {})}
        if "status" in item:
            opened["status"] = "in_progress"
        out.add("response.output_item.added", {"output_index": index, "item": opened})
        where = {"item_id": item.get("id"), "output_index": index}
        if kind == "message":
            _message_events(out, where, item)
        elif kind == "function_call":
            arguments = item.get("arguments") if isinstance(item.get("arguments"), str) else ""
            out.add("response.function_call_arguments.delta", {**where, "delta": arguments})
            out.add("response.function_call_arguments.done", {**where, "arguments": arguments})
        elif kind == "reasoning":
            _reasoning_events(out, where, item)
        out.add("response.output_item.done", {"output_index": index, "item": item})
    ending = "response.incomplete" if answer.get("status") == "incomplete" else "response.completed"
    out.add(ending, {"response": answer})
    return b"".join(out.parts)


def replay(api: Schema, stored: bytes, stream: bool, include_usage: bool) -> tuple[bytes, str]:
    """The reply body and its content type for a stored answer."""
    if not stream:
        return stored, "application/json"
    answer = orjson.loads(stored)
    if api is Schema.ANTHROPIC:
        return anthropic_stream(answer), "text/event-stream"
    if api is Schema.OPENAI_RESPONSES:
        return responses_stream(answer), "text/event-stream"
    return openai_stream(answer, include_usage), "text/event-stream"


def _openai_answer(chunks: list[dict[str, Any]]) -> dict[str, Any] | None:
    text: list[str] = []
    calls: dict[int, dict[str, Any]] = {}
    finish = None
    usage = None
    first = chunks[0] if chunks else {}
    for chunk in chunks:
        if chunk.get("usage"):
            usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                return None  # several choices: not stored
            delta = choice.get("delta") or {}
            if isinstance(delta.get("content"), str):
                text.append(delta["content"])
            for call in delta.get("tool_calls") or ():
                entry = calls.setdefault(
                    call.get("index", 0),
                    {"id": "", "type": "function", "function": {"name": "", "arguments": ""}},
                )
                entry["id"] = call.get("id") or entry["id"]
                function = call.get("function") or {}
                entry["function"]["name"] += function.get("name") or ""
                entry["function"]["arguments"] += function.get("arguments") or ""
            finish = choice.get("finish_reason") or finish
    if usage is None or finish is None:
        return None  # without usage a hit could not be accounted
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(text) if text or not calls else None,
        "refusal": None,
    }
    if calls:
        message["tool_calls"] = [calls[i] for i in sorted(calls)]
    answer = {
        "id": first.get("id", ""),
        "object": "chat.completion",
        "created": first.get("created", 0),
        "model": first.get("model", ""),
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": usage,
    }
    if first.get("system_fingerprint") is not None:
        answer["system_fingerprint"] = first["system_fingerprint"]
    return answer


def _anthropic_answer(events: list[dict[str, Any]]) -> dict[str, Any] | None:
    message: dict[str, Any] | None = None
    blocks: dict[int, dict[str, Any]] = {}
    inputs: dict[int, list[str]] = {}
    for event in events:
        kind = event.get("type")
        if kind == "message_start" and isinstance(event.get("message"), dict):
            message = dict(event["message"])
        elif kind == "content_block_start" and isinstance(event.get("content_block"), dict):
            blocks[event.get("index", 0)] = dict(event["content_block"])
        elif kind == "content_block_delta":
            block = blocks.get(event.get("index", 0))
            delta = event.get("delta") or {}
            if block is None:
                return None
            if delta.get("type") == "text_delta":
                block["text"] = block.get("text", "") + delta.get("text", "")
            elif delta.get("type") == "input_json_delta":
                inputs.setdefault(event.get("index", 0), []).append(delta.get("partial_json", ""))
            else:
                return None  # thinking and other blocks: not stored
        elif kind == "message_delta" and message is not None:
            message.update(event.get("delta") or {})
            message["usage"] = {**(message.get("usage") or {}), **(event.get("usage") or {})}
    if message is None or message.get("stop_reason") is None:
        return None
    for index, parts in inputs.items():
        try:
            blocks[index]["input"] = orjson.loads("".join(parts) or "{}")
        except (orjson.JSONDecodeError, KeyError):
            return None
    message["content"] = [blocks[i] for i in sorted(blocks)]
    return message


def _responses_answer(events: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The response its stream's last event carries: the answer whole, usage included."""
    for index in range(len(events) - 1, -1, -1):
        event = events[index]
        if event.get("type") in ("response.completed", "response.incomplete"):
            response = event.get("response")
            if isinstance(response, dict) and isinstance(response.get("usage"), dict):
                return response
            return None
    return None


def assemble(api: Schema, payloads: list[dict[str, Any]]) -> bytes | None:
    """The JSON answer a complete stream amounts to (to store it), or None when the stream
    cannot be stored (several choices, no usage, unknown block types)."""
    if api is Schema.ANTHROPIC:
        answer = _anthropic_answer(payloads)
    elif api is Schema.OPENAI_RESPONSES:
        answer = _responses_answer(payloads)
    else:
        answer = _openai_answer(payloads)
    return orjson.dumps(answer) if answer is not None else None
