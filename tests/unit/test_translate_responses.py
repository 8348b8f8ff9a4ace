"""The Responses API's codec: every stream event type read and written, its streams split
at every byte, what its encoder keeps bounded, and what it writes parsed by the official
OpenAI SDK (a JSON answer, and a stream through `client.responses.stream`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import openai
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from extproc.sse import Parser
from extproc.translate import hub, openai_responses, openai_responses_stream
from extproc.translate.hub import (
    END,
    Finished,
    ReasoningDelta,
    Start,
    Stop,
    StreamError,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from extproc.translate.translation import Translation
from tests.unit.test_translate import ANTHROPIC, DATA, OPENAI, OPENAI_RESPONSES, fixture
from tests.unit.test_translate_streams import BACKEND_STREAM, stream

# -- decoding: every event type a backend sends ----------------------------------------------

_MESSAGE = {"id": "msg_1", "type": "message", "status": "in_progress", "role": "assistant"}
_CALL = {
    "id": "fc_1",
    "type": "function_call",
    "status": "in_progress",
    "call_id": "call_1",
    "name": "lookup",
    "arguments": "",
}
_AT = {"item_id": "msg_1", "output_index": 0, "content_index": 0}
_CALL_AT = {"item_id": "fc_1", "output_index": 1}
_USAGE = {
    "input_tokens": 30,
    "input_tokens_details": {"cached_tokens": 10, "cache_write_tokens": 5},
    "output_tokens": 7,
    "output_tokens_details": {"reasoning_tokens": 3},
    "total_tokens": 37,
}
DECODED = [
    # an event of the backend's stream, and the hub events it is read as
    (
        {"type": "response.queued", "response": {"id": "resp_1", "model": "gpt-5"}},
        [Start("resp_1", "gpt-5")],
    ),
    ({"type": "response.created", "response": {"id": "resp_1", "model": "gpt-5"}}, []),
    ({"type": "response.in_progress", "response": {"id": "resp_1"}}, []),
    (
        {
            "type": "response.output_item.added",
            "output_index": 0,
            "item": {"id": "rs_1", "type": "reasoning", "summary": []},
        },
        [],
    ),
    (
        {
            "type": "response.reasoning_summary_part.added",
            "item_id": "rs_1",
            "output_index": 0,
            "summary_index": 0,
        },
        [],
    ),
    (
        {
            "type": "response.reasoning_summary_text.delta",
            "item_id": "rs_1",
            "output_index": 0,
            "delta": "Hm.",
        },
        [ReasoningDelta("Hm.")],
    ),
    (
        {
            "type": "response.reasoning_text.delta",
            "item_id": "rs_1",
            "output_index": 0,
            "delta": "Raw.",
        },
        [ReasoningDelta("Raw.")],
    ),
    ({"type": "response.reasoning_summary_text.done", "item_id": "rs_1", "text": "Hm."}, []),
    (
        {
            "type": "response.output_item.done",
            "output_index": 0,
            "item": {"id": "rs_1", "type": "reasoning"},
        },
        [],
    ),
    (
        {
            "type": "response.output_item.added",
            "output_index": 0,
            "item": {**_MESSAGE, "content": []},
        },
        [],
    ),
    (
        {"type": "response.content_part.added", **_AT, "part": {"type": "output_text", "text": ""}},
        [],
    ),
    (
        {"type": "response.output_text.delta", **_AT, "delta": "Hi ", "logprobs": []},
        [TextDelta("Hi ")],
    ),
    ({"type": "response.output_text.annotation_added", **_AT, "annotation": {}}, []),
    ({"type": "response.output_text.done", **_AT, "text": "Hi "}, []),
    (
        {"type": "response.refusal.delta", **_AT, "content_index": 1, "delta": "No."},
        [TextDelta("No.")],
    ),
    ({"type": "response.refusal.done", **_AT, "content_index": 1, "refusal": "No."}, []),
    ({"type": "response.content_part.done", **_AT, "part": {"type": "output_text"}}, []),
    ({"type": "response.output_item.done", "output_index": 0, "item": _MESSAGE}, []),
    (
        {"type": "response.output_item.added", "output_index": 1, "item": _CALL},
        [ToolCallDelta(0, "call_1", "lookup", "")],
    ),
    (
        {"type": "response.function_call_arguments.delta", **_CALL_AT, "delta": '{"q":'},
        [ToolCallDelta(0, None, None, '{"q":')],
    ),
    (
        {"type": "response.function_call_arguments.delta", **_CALL_AT, "delta": '"x"}'},
        [ToolCallDelta(0, None, None, '"x"}')],
    ),
    ({"type": "response.function_call_arguments.done", **_CALL_AT, "arguments": '{"q":"x"}'}, []),
    # The item done repeats the arguments streamed: nothing more to read.
    (
        {
            "type": "response.output_item.done",
            "output_index": 1,
            "item": {**_CALL, "arguments": '{"q":"x"}'},
        },
        [],
    ),
    # A server that sends a call's arguments only with its item done.
    (
        {
            "type": "response.output_item.added",
            "output_index": 2,
            "item": {**_CALL, "call_id": "call_2"},
        },
        [ToolCallDelta(1, "call_2", "lookup", "")],
    ),
    (
        {
            "type": "response.output_item.done",
            "output_index": 2,
            "item": {**_CALL, "arguments": "{}"},
        },
        [ToolCallDelta(1, None, None, "{}")],
    ),
    # Events of OpenAI's own tools have no place in the hub.
    ({"type": "response.web_search_call.searching", "item_id": "ws_1", "output_index": 3}, []),
    (
        {
            "type": "response.completed",
            "response": {"id": "resp_1", "status": "completed", "usage": _USAGE},
        },
        [Usage(input=15, cache_read=10, cache_write=5, output=7), Finished(Stop.TOOL_USE), END],
    ),
    # A server repeating its last event ends nothing more.
    ({"type": "response.completed", "response": {"id": "resp_1", "status": "completed"}}, []),
]


def test_every_event_type_a_backend_sends_is_read() -> None:
    decoder = openai_responses.decoder()
    for payload, expected in DECODED:
        assert decoder.events(payload) == expected, payload["type"]


ENDINGS = [
    (
        {
            "type": "response.incomplete",
            "response": {
                "status": "incomplete",
                "incomplete_details": {"reason": "max_output_tokens"},
            },
        },
        [Finished(Stop.MAX_TOKENS), END],
    ),
    (
        {
            "type": "response.incomplete",
            "response": {
                "status": "incomplete",
                "incomplete_details": {"reason": "content_filter"},
            },
        },
        [Finished(Stop.REFUSAL), END],
    ),
    (
        {
            "type": "response.failed",
            "response": {"status": "failed", "error": {"code": "server_error", "message": "Boom"}},
        },
        [StreamError("server_error", "Boom")],
    ),
    (
        {"type": "error", "code": "rate_limit_exceeded", "message": "Slow down", "param": None},
        [StreamError("rate_limit_exceeded", "Slow down")],
    ),
    ({"type": "error", "message": 3}, [StreamError(None, None)]),
]


@pytest.mark.parametrize(("payload", "expected"), ENDINGS, ids=lambda v: str(v)[:40])
def test_a_stream_ends_incomplete_failed_or_in_error(
    payload: dict[str, Any], expected: list[Any]
) -> None:
    assert openai_responses.decoder().events(payload) == expected


# -- encoding: every hub event -------------------------------------------------------------


def _encode(events: list[hub.Event], created: int = 1) -> list[tuple[str | None, Any]]:
    return openai_responses.encoder(True, created=created).events(events)


def test_every_hub_event_is_written_with_its_place_and_sequence_number() -> None:
    out = _encode(
        [
            Start("abc", "gpt-x"),
            TextDelta("Checking "),
            TextDelta("both."),
            ToolCallDelta(0, "call_a", "lookup", ""),
            ToolCallDelta(1, "call_b", "lookup", '{"q":'),
            ToolCallDelta(0, None, None, '{"q":"a"}'),  # interleaved, as parallel calls may come
            ToolCallDelta(1, None, None, '"b"}'),
            Usage(input=20, cache_read=4),
            Finished(Stop.TOOL_USE),
            Usage(output=9),
            END,
        ]
    )
    assert [p["sequence_number"] for _, p in out] == list(range(len(out)))
    assert all(name == payload["type"] for name, payload in out)
    names = [name for name, _ in out]
    assert names == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    created = out[0][1]["response"]
    assert (created["id"], created["model"], created["status"], created["output"]) == (
        "resp_abc",
        "gpt-x",
        "in_progress",
        [],
    )
    deltas = [p for name, p in out if name == "response.function_call_arguments.delta"]
    assert [(p["item_id"], p["output_index"]) for p in deltas] == [
        ("fc_abc_2", 2),
        ("fc_abc_1", 1),
        ("fc_abc_2", 2),
    ]
    completed = out[-1][1]["response"]
    assert completed["status"] == "completed"
    assert [(item["id"], item["type"]) for item in completed["output"]] == [
        ("msg_abc_0", "message"),
        ("fc_abc_1", "function_call"),
        ("fc_abc_2", "function_call"),
    ]
    assert completed["output"][0]["content"][0]["text"] == "Checking both."
    assert [(i["call_id"], i["arguments"]) for i in completed["output"][1:]] == [
        ("call_a", '{"q":"a"}'),
        ("call_b", '{"q":"b"}'),
    ]
    assert completed["usage"] == {
        "input_tokens": 24,
        "input_tokens_details": {"cached_tokens": 4, "cache_write_tokens": 0},
        "output_tokens": 9,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 33,
    }


@pytest.mark.parametrize(
    ("stop", "reason"),
    [
        (Stop.MAX_TOKENS, "max_output_tokens"),
        (Stop.CONTEXT_WINDOW, "max_output_tokens"),
        (Stop.REFUSAL, "content_filter"),
    ],
)
def test_an_answer_cut_short_ends_incomplete(stop: Stop, reason: str) -> None:
    out = _encode([Start("1", "m"), TextDelta("Once upon"), Finished(stop), END])
    name, payload = out[-1]
    assert name == "response.incomplete"
    assert payload["response"]["status"] == "incomplete"
    assert payload["response"]["incomplete_details"] == {"reason": reason}
    assert payload["response"]["output"][0]["status"] == "incomplete"


def test_a_stream_error_fails_the_response_and_ends_it() -> None:
    out = _encode(
        [TextDelta("Hal"), StreamError("overloaded_error", "Overloaded"), TextDelta("f"), END]
    )
    # A stream without its start still starts: the SDK reads nothing before it.
    assert [name for name, _ in out] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "error",
        "response.failed",
    ]
    assert out[5][1] == {
        "type": "error",
        "code": "overloaded_error",
        "message": "Overloaded",
        "param": None,
        "sequence_number": 5,
    }
    failed = out[6][1]["response"]
    assert failed["status"] == "failed"
    # The error event says the provider's code; a response's error takes only those the
    # API publishes for one (the SDK types them).
    assert failed["error"] == {"code": "server_error", "message": "Overloaded"}
    assert openai.types.responses.Response.model_validate(failed).error is not None


def test_what_an_encoder_keeps_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(openai_responses_stream, "MAX_KEPT", 10)
    encoder = openai_responses.encoder(True, created=1)
    encoder.events([Start("1", "m"), TextDelta("12345")])
    assert encoder.text("6789") is not None
    # Past the bound, the short way gives way to the long one, which fails the stream.
    assert encoder.text("0123") is None
    failed = encoder.events([TextDelta("0123")])
    assert [name for name, _ in failed] == ["error", "response.failed"]
    assert encoder.text("more") is None
    assert encoder.events([TextDelta("more"), ToolCallDelta(0, "c", "f", "{}"), END]) == []
    calls = openai_responses.encoder(True, created=1)
    out = calls.events([Start("1", "m"), ToolCallDelta(0, "c", "f", "x" * 11)])
    assert [name for name, _ in out][-2:] == ["error", "response.failed"]


# -- streams split anywhere ------------------------------------------------------------------


def _translated(client: Any, backend: Any, chunks: list[bytes]) -> bytes:
    """A backend's stream arriving in `chunks`, translated the short way, as bytes."""
    parser, translated, out = Parser(), stream(client, backend), []
    for chunk in chunks:
        for event in parser.feed(chunk):
            payload = event.data if event.data == "[DONE]" else orjson.loads(event.data)
            out += [raw for raw, _ in translated.encoded(payload)]
    return b"".join(out)


@pytest.mark.parametrize(
    ("client", "backend"),
    [
        (OPENAI, OPENAI_RESPONSES),
        (ANTHROPIC, OPENAI_RESPONSES),
        (OPENAI_RESPONSES, OPENAI),
        (OPENAI_RESPONSES, ANTHROPIC),
    ],
)
def test_a_stream_split_at_every_byte_translates_alike(client: Any, backend: Any) -> None:
    data = (DATA / "responses" / BACKEND_STREAM[backend]).read_bytes()
    whole = _translated(client, backend, [data])
    assert whole.count(b"\n\n") > 5
    for cut in range(1, len(data)):
        assert _translated(client, backend, [data[:cut], data[cut:]]) == whole, cut
    assert _translated(client, backend, [data[i : i + 1] for i in range(len(data))]) == whole


def test_a_translated_stream_numbers_its_events_in_order_both_ways() -> None:
    # Short (a text delta's bytes) and long (events) ways share one sequence.
    for backend in (OPENAI, ANTHROPIC):
        data = _translated(
            OPENAI_RESPONSES, backend, [(DATA / "responses" / BACKEND_STREAM[backend]).read_bytes()]
        )
        events = [orjson.loads(event.data) for event in Parser().feed(data)]
        assert [event["sequence_number"] for event in events] == list(range(len(events)))


# -- what the official SDK reads -------------------------------------------------------------


WITH_USAGE = {OPENAI: "openai_stream_usage.sse", ANTHROPIC: "anthropic_stream.sse"}


@pytest.fixture
async def translated_backend() -> AsyncIterator[tuple[str, list[Any]]]:
    """A server answering `/v1/responses` with a backend's recorded answer (JSON, or its
    stream) translated for a Responses client; the backend's API is picked per test."""
    backends: list[Any] = [ANTHROPIC]

    async def answer(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        backend = backends[0]
        if not body.get("stream"):
            recorded = fixture(
                "responses/"
                + ("anthropic_message.json" if backend is ANTHROPIC else "openai_chat.json")
            )
            translated = Translation(OPENAI_RESPONSES, backend).response(recorded)
            return web.Response(body=orjson.dumps(translated), content_type="application/json")
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        data = (DATA / "responses" / WITH_USAGE[backend]).read_bytes()
        await response.write(_translated(OPENAI_RESPONSES, backend, [data]))
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/v1/responses", answer)
    server = TestServer(app)
    await server.start_server()
    yield str(server.make_url("/v1")), backends
    await server.close()


@pytest.mark.parametrize("backend", [ANTHROPIC, OPENAI])
async def test_the_sdk_reads_a_translated_answer(
    translated_backend: tuple[str, list[Any]], backend: Any
) -> None:
    url, backends = translated_backend
    backends[0] = backend
    client = openai.AsyncOpenAI(api_key="k", base_url=url, max_retries=0)
    response = await client.responses.create(model="m", input="hi")
    expected = (
        "Hi! My name is Claude."
        if backend is ANTHROPIC
        else fixture("responses/openai_chat.json")["choices"][0]["message"]["content"]
    )
    assert response.output_text == expected
    assert response.status == "completed"
    assert response.usage is not None and response.usage.total_tokens > 0


@pytest.mark.parametrize("backend", [ANTHROPIC, OPENAI])
async def test_the_sdk_streams_a_translated_stream(
    translated_backend: tuple[str, list[Any]], backend: Any
) -> None:
    url, backends = translated_backend
    backends[0] = backend
    client = openai.AsyncOpenAI(api_key="k", base_url=url, max_retries=0)
    async with client.responses.stream(model="m", input="hi") as events:
        texts = [
            event.delta async for event in events if event.type == "response.output_text.delta"
        ]
        final = await events.get_final_response()
    assert final.output_text == "".join(texts) and texts
    calls = [item for item in final.output if item.type == "function_call"]
    assert len(calls) == 1 and orjson.loads(calls[0].arguments)
    usage = final.usage
    assert usage is not None
    if backend is OPENAI:
        assert (
            usage.input_tokens,
            usage.input_tokens_details.cached_tokens,
            usage.output_tokens,
        ) == (82, 64, 17)
    else:
        assert usage.input_tokens == 480 + 100 + 2000 and usage.output_tokens == 89


def test_arguments_a_compatible_server_sends_as_an_object_are_read_as_json() -> None:
    call = {"type": "function_call", "call_id": "c", "name": "f", "arguments": {"q": "x"}}
    answer = openai_responses.read_response({"id": "r", "status": "completed", "output": [call]})
    assert [(p.id, p.arguments) for p in answer.parts] == [("c", '{"q":"x"}')]
    assert answer.stop is Stop.TOOL_USE
    events = openai_responses.decoder().events(
        {"type": "response.output_item.added", "output_index": 0, "item": call}
    )
    assert events == [ToolCallDelta(0, "c", "f", '{"q":"x"}')]
