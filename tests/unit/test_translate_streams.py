"""Streams translated through the hub for every ordered pair of APIs, event by event, from
each provider's documented stream format; the short way (bytes) checked against the long
(events) for every event."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from extproc.apis import Schema
from extproc.sse import Parser
from extproc.translate import hub
from extproc.translate.translation import MAX_TOOL_CALLS, Stream, Translation
from tests.unit.test_translate import (
    ANTHROPIC,
    CREATED,
    DATA,
    JSON_VALUES,
    OPENAI,
    OPENAI_RESPONSES,
    PAIRS,
    pair_id,
)


def payloads_of(name: str) -> list[Any]:
    """A recorded stream's event payloads as the reader passes them on (`[DONE]` as text)."""
    parsed = Parser().feed((DATA / "responses" / name).read_bytes())
    return [e.data if e.data == "[DONE]" else orjson.loads(e.data) for e in parsed if e.data]


def stream(client: Schema, backend: Schema, include_usage: bool = True) -> Stream:
    made = Translation(client, backend).stream(include_usage)
    if hasattr(made.encoder, "created"):
        made.encoder.created = CREATED  # an OpenAI API's: the time the answer was made
    return made


def translate_stream(
    client: Schema, backend: Schema, payloads: list[Any], include_usage: bool = True
) -> list[list[tuple[str | None, Any]]]:
    """The client's events (name, JSON payload or data) for each of the backend's, each
    checked against the short way (bytes, no Event objects) for the same event."""
    long, short = stream(client, backend, include_usage), stream(client, backend, include_usage)
    out = []
    for payload in payloads:
        items = long.event(orjson.loads(orjson.dumps(payload)))
        encoded = short.encoded(orjson.loads(orjson.dumps(payload)))
        assert b"".join(raw for raw, _ in encoded) == b"".join(e.encode() for e, _ in items)
        out.append([(e.name, p if p is not None else e.data) for e, p in items])
    return out


# -- streams, event by event ----------------------------------------------------------------


def describe(client: Schema, name: str | None, payload: Any) -> str:
    """What a client's stream event is: Anthropic's and the Responses API's are named;
    Chat Completions' chunks by content."""
    if client is not OPENAI or payload == "[DONE]":
        return str(name or payload)
    if "error" in payload:
        return "error"
    if not payload["choices"]:
        return "usage"
    choice = payload["choices"][0]
    delta = choice["delta"]
    if choice["finish_reason"]:
        return "finish"
    if "role" in delta:
        return "role"
    if "tool_calls" in delta:
        return "call" if "id" in delta["tool_calls"][0] else "arguments"
    return "text"


ADDED, DONE = "response.output_item.added", "response.output_item.done"
TEXT, ARGUMENTS = "response.output_text.delta", "response.function_call_arguments.delta"
TEXT_DONE = ["response.output_text.done", "response.content_part.done", DONE]
ANTHROPIC_FOR_OPENAI = [
    ["role"],  # message_start
    [],  # content_block_start (text)
    [],  # ping
    ["text"],
    ["text"],
    [],  # content_block_stop
    ["call"],  # content_block_start (tool_use)
    ["arguments"],
    ["arguments"],
    ["arguments"],
    [],  # content_block_stop
    ["finish"],  # message_delta
    ["finish"],  # message_delta
]
STREAMS = [
    # client, backend, the backend's stream, whether an OpenAI client asked for usage, and
    # what the client gets for each of the backend's events
    (OPENAI, ANTHROPIC, "anthropic_stream.sse", True, [*ANTHROPIC_FOR_OPENAI, ["usage", "[DONE]"]]),
    (OPENAI, ANTHROPIC, "anthropic_stream.sse", False, [*ANTHROPIC_FOR_OPENAI, ["[DONE]"]]),
    (
        ANTHROPIC,
        OPENAI,
        "openai_stream_usage.sse",
        True,
        [
            ["message_start"],  # the role chunk
            ["content_block_start", "content_block_delta"],
            ["content_block_delta"],
            ["content_block_stop", "content_block_start"],  # a tool call starts
            ["content_block_delta"],
            ["content_block_delta"],
            ["content_block_stop"],  # finish_reason
            [],  # the usage chunk
            ["message_delta", "message_stop"],  # [DONE]
        ],
    ),
    (
        OPENAI_RESPONSES,
        OPENAI,
        "openai_stream_usage.sse",
        True,
        [
            ["response.created", "response.in_progress"],  # the role chunk
            [ADDED, "response.content_part.added", TEXT],
            [TEXT],
            [*TEXT_DONE, ADDED],  # a tool call starts
            [ARGUMENTS],
            [ARGUMENTS],
            ["response.function_call_arguments.done", DONE],  # finish_reason
            [],  # the usage chunk
            ["response.completed"],  # [DONE]
        ],
    ),
    (
        OPENAI_RESPONSES,
        ANTHROPIC,
        "anthropic_stream.sse",
        True,
        [
            ["response.created", "response.in_progress"],  # message_start
            [],  # content_block_start (text)
            [],  # ping
            [ADDED, "response.content_part.added", TEXT],
            [TEXT],
            [],  # content_block_stop
            [*TEXT_DONE, ADDED],  # content_block_start (tool_use)
            [],  # an empty input_json_delta
            [ARGUMENTS],
            [ARGUMENTS],
            [],  # content_block_stop
            ["response.function_call_arguments.done", DONE],  # message_delta
            [],  # message_delta
            ["response.completed"],  # message_stop
        ],
    ),
    *[
        (
            OPENAI,
            OPENAI_RESPONSES,
            "openai_responses_stream.sse",
            usage,
            [
                ["role"],  # response.created
                [],  # response.in_progress
                [],  # output_item.added (message)
                [],  # content_part.added
                ["text"],
                ["text"],
                [],  # output_text.done
                [],  # content_part.done
                [],  # output_item.done
                ["call"],  # output_item.added (function_call)
                ["arguments"],
                ["arguments"],
                [],  # function_call_arguments.done
                [],  # output_item.done
                ["finish", *(["usage"] if usage else []), "[DONE]"],  # response.completed
            ],
        )
        for usage in (True, False)
    ],
    (
        ANTHROPIC,
        OPENAI_RESPONSES,
        "openai_responses_stream.sse",
        True,
        [
            ["message_start"],
            [],
            [],
            [],
            ["content_block_start", "content_block_delta"],
            ["content_block_delta"],
            [],
            [],
            [],
            ["content_block_stop", "content_block_start"],
            ["content_block_delta"],
            ["content_block_delta"],
            [],
            [],
            ["content_block_stop", "message_delta", "message_stop"],
        ],
    ),
]


@pytest.mark.parametrize(
    ("client", "backend", "stream_file", "include_usage", "expected"),
    STREAMS,
    ids=[f"{pair_id(row[:2])}:usage={row[3]}" for row in STREAMS],
)
def test_a_stream_translates_event_by_event(
    client: Schema,
    backend: Schema,
    stream_file: str,
    include_usage: bool,
    expected: list[list[str]],
) -> None:
    steps = translate_stream(client, backend, payloads_of(stream_file), include_usage)
    assert [[describe(client, name, p) for name, p in step] for step in steps] == expected


@pytest.mark.parametrize("include_usage", [False, True])
def test_anthropic_stream_becomes_openai_chunks(include_usage: bool) -> None:
    steps = translate_stream(OPENAI, ANTHROPIC, payloads_of("anthropic_stream.sse"), include_usage)
    out = [payload for step in steps for _, payload in step]
    assert out[-1] == "[DONE]"
    chunks = [c for c in out if isinstance(c, dict)]
    assert all(
        c["object"] == "chat.completion.chunk" and c["id"].startswith("msg_") for c in chunks
    )
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    text = "".join(d.get("content") or "" for d in deltas)
    assert text == "Okay, let's check the weather for San Francisco, CA:"
    calls = [call for d in deltas for call in d.get("tool_calls", [])]
    assert calls[0] == {
        "index": 0,
        "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    arguments = "".join(call["function"]["arguments"] for call in calls)
    assert orjson.loads(arguments) == {"location": "San Francisco, CA"}
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes[-1] == "tool_calls"
    usage_chunks = [c for c in chunks if not c["choices"]]
    if include_usage:
        [usage] = usage_chunks
        assert usage["usage"]["prompt_tokens"] == 480 + 100 + 2000
        assert usage["usage"]["completion_tokens"] == 89
    else:
        assert usage_chunks == []


def test_openai_stream_becomes_anthropic_events() -> None:
    steps = translate_stream(ANTHROPIC, OPENAI, payloads_of("openai_stream_usage.sse"))
    payloads = [payload for step in steps for _, payload in step]
    assert payloads[0]["message"]["id"] == "msg_chatcmpl-AbC123"
    assert payloads[1] == {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    text = "".join(
        p["delta"]["text"] for p in payloads if p.get("delta", {}).get("type") == "text_delta"
    )
    assert text == "Héllo wörld ☕"
    assert payloads[5]["content_block"] == {
        "type": "tool_use",
        "id": "call_abc",
        "name": "get_weather",
        "input": {},
    }
    assert all(p["index"] == 1 for p in payloads[5:9])
    arguments = "".join(
        p["delta"]["partial_json"]
        for p in payloads
        if p.get("delta", {}).get("type") == "input_json_delta"
    )
    assert orjson.loads(arguments) == {"city": "Paris"}
    assert payloads[-2]["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert payloads[-2]["usage"] == {
        "input_tokens": 82 - 64,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 64,
        "output_tokens": 17,
    }


@pytest.mark.parametrize(("client", "backend"), PAIRS, ids=map(pair_id, PAIRS))
def test_a_stream_ends_once(client: Schema, backend: Schema) -> None:
    # The backend's last event ends the client's stream; its end after that adds nothing.
    translated = stream(client, backend)
    payloads = payloads_of(BACKEND_STREAM[backend])
    ends = [translated.event(payload) for payload in payloads][-1]
    assert ENDS[client](*[(e.name, p if p is not None else e.data) for e, p in ends][-1])
    assert translated.event(payloads[-1]) == []
    assert translated.encoder.events([hub.END]) == []


def test_openai_stream_cut_short_still_ends_cleanly() -> None:
    translated = stream(ANTHROPIC, OPENAI)
    for payload in payloads_of("openai_stream.sse")[:2]:
        translated.event(payload)
    end = translated.encoder.events([hub.END])
    assert [name for name, _ in end][-3:] == ["content_block_stop", "message_delta", "message_stop"]


STREAM_ERRORS = [
    # client, backend, the backend's error event, what the client gets
    (
        OPENAI,
        ANTHROPIC,
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
        [
            (
                None,
                {
                    "error": {
                        "message": "Overloaded",
                        "type": "overloaded_error",
                        "param": None,
                        "code": None,
                    }
                },
            ),
            (None, "[DONE]"),
        ],
    ),
    (
        ANTHROPIC,
        OPENAI,
        {"error": {"message": "Boom", "type": "server_error"}},
        [("error", {"type": "error", "error": {"type": "api_error", "message": "Boom"}})],
    ),
    (
        OPENAI,
        OPENAI_RESPONSES,
        {"type": "error", "code": "server_error", "message": "Boom", "param": None},
        [
            (
                None,
                {"error": {"message": "Boom", "type": "server_error", "param": None, "code": None}},
            ),
            (None, "[DONE]"),
        ],
    ),
    (
        ANTHROPIC,
        OPENAI_RESPONSES,
        {
            "type": "response.failed",
            "response": {
                "id": "resp_1",
                "status": "failed",
                "error": {"code": "server_error", "message": "Boom"},
            },
        },
        [("error", {"type": "error", "error": {"type": "api_error", "message": "Boom"}})],
    ),
]


@pytest.mark.parametrize(
    ("client", "backend", "event", "expected"),
    STREAM_ERRORS,
    ids=[pair_id(row[:2]) for row in STREAM_ERRORS],
)
def test_a_stream_error_event_reaches_the_client_in_its_schema(
    client: Schema, backend: Schema, event: dict[str, Any], expected: list[Any]
) -> None:
    [step] = translate_stream(client, backend, [event])
    assert step == expected


# -- hostile input ---------------------------------------------------------------------------

_keys = st.sampled_from(
    [
        "type",
        "index",
        "delta",
        "content_block",
        "message",
        "usage",
        "choices",
        "error",
        "id",
        "model",
        "item",
        "output_index",
        "response",
        "status",
    ]
)
_events = st.dictionaries(
    _keys,
    JSON_VALUES
    | st.sampled_from(
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "message_delta",
            "message_stop",
            "text_delta",
            "inputJSON_VALUES_delta",
            "thinking_delta",
            "tool_use",
            "error",
            "response.created",
            "response.output_item.added",
            "response.output_text.delta",
            "response.function_call_arguments.delta",
            "response.output_item.done",
            "response.completed",
            "response.incomplete",
            "response.failed",
            "function_call",
        ]
    ),
    max_size=5,
)


def _openai_event(name: str | None, payload: Any) -> bool:
    # An OpenAI chunk, an error, or the end; whatever the events held.
    return payload == "[DONE]" or (
        isinstance(payload, dict)
        and (payload.get("object") == "chat.completion.chunk" or set(payload) == {"error"})
    )


def _responses_event(name: str | None, payload: Any) -> bool:
    # Named by its type, numbered in order.
    return payload["type"] == name and isinstance(payload["sequence_number"], int)


# A well-formed event of each client API, and the events that end its stream.
CLIENT_EVENT = {
    OPENAI: _openai_event,
    ANTHROPIC: lambda name, payload: payload["type"] == name,  # Anthropic's event framing
    OPENAI_RESPONSES: _responses_event,
}
TERMINAL = {OPENAI: (None, "[DONE]"), ANTHROPIC: ("message_stop", {"type": "message_stop"})}
_RESPONSES_ENDS = ("response.completed", "response.incomplete", "response.failed")
ENDS = {
    OPENAI: lambda name, payload: (name, payload) == TERMINAL[OPENAI],
    ANTHROPIC: lambda name, payload: (name, payload) == TERMINAL[ANTHROPIC],
    OPENAI_RESPONSES: lambda name, payload: name in _RESPONSES_ENDS,
}
BACKEND_STREAM = {
    OPENAI: "openai_stream.sse",
    ANTHROPIC: "anthropic_stream.sse",
    OPENAI_RESPONSES: "openai_responses_stream.sse",
}


@settings(max_examples=150, deadline=None)
@given(st.lists(_events, max_size=8))
def test_stream_translators_survive_any_events(events: list[dict[str, Any]]) -> None:
    for client, backend in PAIRS:
        translated = stream(client, backend)
        for event in events:
            for item, payload in translated.event(event):
                shown = payload if payload is not None else item.data
                assert CLIENT_EVENT[client](item.name, shown), (item, shown)
        # However the events went, each stream is closed once.
        end = translated.encoder.events([hub.END])
        assert end == [] or ENDS[client](*end[-1])
        assert translated.encoder.events([hub.END]) == []


# -- bounds ------------------------------------------------------------------------------


def _tool_call_event(backend: Schema, number: int) -> Any:
    """The backend's event that starts its answer's tool call `number`."""
    if backend is ANTHROPIC:
        block = {"type": "tool_use", "id": f"toolu_{number}", "name": "f", "input": {}}
        return {"type": "content_block_start", "index": number, "content_block": block}
    if backend is OPENAI_RESPONSES:
        item = {"type": "function_call", "id": f"fc_{number}", "call_id": f"call_{number}"}
        item.update(name="f", arguments="", status="in_progress")
        return {"type": "response.output_item.added", "output_index": number, "item": item}
    call = {"index": number, "id": f"call_{number}", "type": "function"}
    call["function"] = {"name": "f", "arguments": ""}
    return {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": None}],
    }


_STARTS = {
    ANTHROPIC: {
        "type": "message_start",
        "message": {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "m",
            "content": [],
            "usage": {"input_tokens": 1, "output_tokens": 1},
        },
    },
    OPENAI_RESPONSES: {
        "type": "response.created",
        "response": {
            "id": "resp_1",
            "object": "response",
            "model": "m",
            "output": [],
            "status": "in_progress",
        },
    },
    OPENAI: {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}],
    },
}


@pytest.mark.parametrize(("client", "backend"), PAIRS, ids=pair_id)
def test_a_stream_past_the_tool_call_limit_ends_with_an_error(
    client: Schema, backend: Schema
) -> None:
    translated = stream(client, backend)
    translated.event(_STARTS[backend])
    for number in range(MAX_TOOL_CALLS):
        assert translated.event(_tool_call_event(backend, number)), number
    last = translated.event(_tool_call_event(backend, MAX_TOOL_CALLS))
    assert translated.failed
    names = [event.name for event, _ in last]
    payloads = [payload for _, payload in last]
    if client is ANTHROPIC:
        assert names[-1] == "error" and payloads[-1]["type"] == "error"
    elif client is OPENAI_RESPONSES:
        assert "error" in names or "response.failed" in names
    else:
        assert last[-1][0].data == "[DONE]" and "error" in payloads[-2]
    # Nothing more is read: the translators' state stops growing.
    assert translated.event(_tool_call_event(backend, MAX_TOOL_CALLS + 1)) == []
    assert translated.encoded(_tool_call_event(backend, MAX_TOOL_CALLS + 2)) == []
