"""Responses API streams through the response reader: metered, filtered by policy, cut,
split anywhere; what the client gets read back with the SDK's own types and state."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openai
import orjson
import pytest
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from extproc.accounting.usage import Meter
from extproc.apis import Endpoint, Kind, Schema
from extproc.control.replay import compare
from extproc.dataplane.reader import StreamReader
from extproc.devtools.mock_provider.replies import sse
from extproc.devtools.mock_provider.responses_api import _events, _response, _usage
from extproc.policy.engine import Decisions, Redactions
from extproc.policy.filters import json_filter, stream_filter
from extproc.policy.responses_stream import ResponsesStreamFilter
from extproc.sse import Parser
from extproc.translate.translation import Translation
from tests.unit.test_policy import POLICY_SET
from tests.unit.test_usage import every_split, feed_split

EVENTS = TypeAdapter(ResponseStreamEvent)
REQUEST = {"model": "m", "input": "hi", "stream": True}


def message(text: str) -> dict[str, Any]:
    part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    return {
        "id": "msg_1",
        "type": "message",
        "status": "completed",
        "role": "assistant",
        "content": [part],
    }


def call(arguments: str) -> dict[str, Any]:
    return {
        "id": "fc_1",
        "type": "function_call",
        "status": "completed",
        "call_id": "call_1",
        "name": "send",
        "arguments": arguments,
    }


def stream(item: dict[str, Any], usage: Any = None) -> bytes:
    """The mock provider's stream of one output item (words as deltas, arguments halved)."""
    usage = _usage(12, 5) if usage is None else usage
    started = _response(REQUEST, "resp_1", "in_progress", [], None)
    whole = _response(REQUEST, "resp_1", "completed", [item], usage)
    return b"".join(sse(orjson.dumps(e), e["type"]) for e in _events(started, item, whole))


def sdk_events(body: bytes) -> list[Any]:
    """The client's events, each validated against the SDK's type for it, numbered."""
    parser = Parser()
    events = [EVENTS.validate_json(e.data) for e in parser.feed(body) + parser.close()]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    return events


def sdk_read(body: bytes) -> tuple[list[Any], Response | None]:
    """The client's stream as the SDK reads it: its events accumulated as
    `responses.stream` does; and the final response, if any."""
    events = sdk_events(body)
    state = ResponseStreamState(input_tools=openai.omit, text_format=openai.omit)
    for event in events:
        state.handle_event(event)
    return events, state._completed_response


TEXT = "Hello there, how are you today?"


def test_a_responses_stream_passes_untouched_and_is_metered() -> None:
    body = stream(message(TEXT))
    for cuts in every_split(body):
        meter = Meter(Schema.OPENAI_RESPONSES, Kind.RESPONSES)
        # strip_usage is Chat Completions' alone: were it set, it changes nothing here.
        reader = StreamReader(meter, None, strip_usage=True)
        assert feed_split(reader, body, cuts) == body
        usage = meter.usage(prompt=None)
        assert (usage.input_tokens, usage.output_tokens) == (12, 5) and not usage.estimated
        assert meter.complete


def test_responses_stream_usage_details() -> None:
    usage = {
        "input_tokens": 100,
        "input_tokens_details": {"cached_tokens": 60, "cache_write_tokens": 10},
        "output_tokens": 30,
        "output_tokens_details": {"reasoning_tokens": 20},
        "total_tokens": 130,
    }
    meter = Meter(Schema.OPENAI_RESPONSES, Kind.RESPONSES)
    StreamReader(meter, None, strip_usage=False).feed(stream(message(TEXT), usage), True)
    got = meter.usage(prompt=None)
    assert (got.input_tokens, got.cached_input_tokens, got.cache_creation_input_tokens) == (
        100,
        60,
        10,
    )
    assert (got.output_tokens, got.reasoning_tokens, got.uncached_input_tokens) == (30, 20, 30)


def cut_at(body: bytes, marker: bytes) -> bytes:
    return body[: body.index(marker)]


@pytest.mark.parametrize("with_policy", [False, True])
def test_a_cut_responses_stream_fails_numbered_after_the_last_event(with_policy: bool) -> None:
    body = cut_at(stream(message(TEXT)), b"event: response.output_text.done")
    meter = Meter(Schema.OPENAI_RESPONSES, Kind.RESPONSES)
    policy = ResponsesStreamFilter(POLICY_SET, Redactions(), Decisions()) if with_policy else None
    reader = StreamReader(meter, policy, strip_usage=False)
    out = reader.feed(body, True)
    assert out is not None and out.startswith(body[:50])
    events, final = sdk_read(out)
    assert final is None and not meter.complete
    error, failed = events[-2:]
    assert (error.type, error.code) == ("error", "stream_incomplete")
    assert failed.type == "response.failed" and failed.response.id == "resp_1"
    assert failed.response.error is not None and failed.response.error.code == "server_error"
    # The text the client got is counted.
    usage = meter.usage(prompt=7)
    assert usage.estimated == {"input_tokens", "output_tokens", "total_tokens"}
    assert usage.output_tokens > 0


def test_a_responses_stream_cut_before_it_started_fails_as_a_response() -> None:
    meter = Meter(Schema.OPENAI_RESPONSES, Kind.RESPONSES)
    out = StreamReader(meter, None, strip_usage=False).feed(b"", True)
    assert out is not None
    # (The SDK's stream helper wants `response.created` first: it raises either way.)
    events = sdk_events(out)
    assert [e.type for e in events] == ["error", "response.failed"]


def test_a_responses_client_of_a_cut_chat_backend_gets_the_encoders_numbering() -> None:
    chunks = [
        {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
         "choices": [{"index": 0, "delta": {"role": "assistant", "content": word}}]}
        for word in ("Hello", " there")
    ]  # fmt: skip
    body = b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks)
    translation = Translation(Schema.OPENAI_RESPONSES, Schema.OPENAI)
    meter = Meter(Schema.OPENAI, Kind.CHAT)
    reader = StreamReader(meter, None, False, translation.stream(True))
    out = feed_split(reader, body, [40])
    events, _ = sdk_read(out)
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert deltas == ["Hello", " there"]
    assert [e.type for e in events][-2:] == ["error", "response.failed"]
    assert events[-2].code == "stream_incomplete"
    assert events[-1].response.error.code == "server_error"


def filtered(body: bytes, cuts: list[int], redactions: Redactions) -> bytes:
    policy = ResponsesStreamFilter(POLICY_SET, redactions, Decisions())
    meter = Meter(Schema.OPENAI_RESPONSES, Kind.RESPONSES)
    return feed_split(StreamReader(meter, policy, strip_usage=False), body, cuts)


def restoring() -> Redactions:
    redactions = Redactions()
    redactions.placeholder("EMAIL", 'o"brien@x.io', restore=True)
    return redactions


PLACEHOLDERS = "Write to [EMAIL_1] and [EMAIL_1] again, today."


def test_placeholders_split_across_deltas_are_restored_everywhere() -> None:
    body = stream(message(PLACEHOLDERS))
    want = PLACEHOLDERS.replace("[EMAIL_1]", 'o"brien@x.io')
    outputs = {filtered(body, cuts, restoring()) for cuts in every_split(body)}
    for out in outputs:  # the splits give few different streams: each read by the SDK
        events, final = sdk_read(out)
        deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
        assert deltas == want
        done = {e.type: e for e in events}
        assert done["response.output_text.done"].text == want
        assert done["response.content_part.done"].part.text == want
        assert done["response.output_item.done"].item.content[0].text == want
        assert final is not None and final.output_text == want


def test_function_call_arguments_are_restored_as_json() -> None:
    arguments = '{"to": "[EMAIL_1]", "cc": "[EMAIL_1]"}'
    body = stream(call(arguments))
    for cuts in every_split(body, 11):
        events, final = sdk_read(filtered(body, cuts, restoring()))
        deltas = "".join(
            e.delta for e in events if e.type == "response.function_call_arguments.delta"
        )
        assert orjson.loads(deltas) == {"to": 'o"brien@x.io', "cc": 'o"brien@x.io'}
        done = next(e for e in events if e.type == "response.function_call_arguments.done")
        assert done.arguments == deltas
        assert final is not None and final.output[0].arguments == deltas  # type: ignore[union-attr]


BLOCKED = "Fine. It is Project Nightingale, and more."


def test_a_blocked_responses_stream_ends_incomplete_for_its_content_filter() -> None:
    body = stream(message(BLOCKED))
    for out in {filtered(body, cuts, Redactions()) for cuts in every_split(body)}:
        check_blocked(out)


def check_blocked(out: bytes) -> None:
    events, final = sdk_read(out)
    assert final is None
    last = events[-1]
    assert last.type == "response.incomplete" and last.response.id == "resp_1"
    assert last.response.incomplete_details.reason == "content_filter"
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert "Nightingale" not in deltas and "Nightingale" not in out.decode()
    # The open item is done as incomplete, with the text the client got.
    item = events[-2]
    assert item.type == "response.output_item.done" and item.item.status == "incomplete"
    assert "".join(p.text for p in item.item.content) == deltas
    assert [o.id for o in last.response.output] == ["msg_1"]


def test_an_unchanged_responses_stream_keeps_its_bytes() -> None:
    body = stream(message(TEXT))
    assert filtered(body, [100, 400], Redactions()) == body


def test_text_the_filter_holds_at_the_end_is_released_numbered() -> None:
    """A provider that ends without `.done` events: what the guards hold goes out before
    the response completed, which carries the same text."""
    body = stream(message("Mail [EMAIL_1]"))
    parser = Parser()
    kept = [
        e
        for e in parser.feed(body)
        if e.name not in ("response.output_text.done", "response.content_part.done")
        and e.name != "response.output_item.done"
    ]
    body = b"".join(e.encode() for e in kept)
    events, final = sdk_read(filtered(body, [], restoring()))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == 'Mail o"brien@x.io'
    assert final is not None and final.output_text == deltas


def test_the_responses_api_gets_its_filters() -> None:
    endpoint = Endpoint(Kind.RESPONSES, Schema.OPENAI_RESPONSES, "POST", "/responses")
    policy = stream_filter(endpoint, POLICY_SET, Redactions(), Decisions())
    assert isinstance(policy, ResponsesStreamFilter)
    json = json_filter(endpoint, POLICY_SET, Redactions(), Decisions())
    assert json is not None
    blocked = json.process(_response(REQUEST, "resp_1", "completed", [message(BLOCKED)], None))
    assert blocked is not None and orjson.loads(blocked)["status"] == "incomplete"


def test_replay_compares_responses_streams_by_shape_and_usage() -> None:
    parser = Parser()
    events = [orjson.loads(e.data) for e in parser.feed(stream(message(TEXT)))]
    captured = {
        "upstream_api": "openai_responses",
        "upstream_endpoint": "/responses",
        "status": 200,
        "response": {"events": events},
    }
    assert compare(captured, 200, {"events": events}) == []
    more = [*events[:-1], orjson.loads(orjson.dumps(events[-1]))]
    more[-1]["response"]["usage"]["output_tokens"] = 9
    assert compare(captured, 200, {"events": more}) == ["usage input/output 12/5 -> 12/9"]
    answer = events[-1]["response"]
    captured_json = {**captured, "response": answer}
    assert compare(captured_json, 200, answer) == []


def test_a_responses_stream_with_several_items_says_the_same_through_a_policy() -> None:
    """The output rules hold text back (deltas merge, events are renumbered); what the
    client reads of each item is what the provider wrote."""
    raw = Path(__file__).parent.parent / "data" / "responses" / "openai_responses_stream.sse"
    # (The pinned SDK's types require the cache write count, newer than the fixture.)
    raw_bytes = raw.read_bytes().replace(
        b'"cached_tokens":64}', b'"cached_tokens":64,"cache_write_tokens":0}'
    )
    _, want = sdk_read(raw_bytes)
    assert want is not None
    outputs = {filtered(raw_bytes, cuts, Redactions()) for cuts in every_split(raw_bytes, 3)}
    for out in outputs:
        events, final = sdk_read(out)
        assert final is not None
        assert final.output == want.output and final.usage == want.usage
        assert len(events) <= len(sdk_events(raw_bytes))


def test_events_of_no_shape_the_api_has_pass_without_harm() -> None:
    """Values of any JSON type where the API has strings and indexes: read as nothing,
    passed on, the text still filtered; the answer's status likewise."""
    hostile = [
        {"type": ["response.completed"], "sequence_number": 0},
        {"type": _TEXT, "output_index": [0], "content_index": {}, "delta": "[EMAIL_1]",
         "item_id": "m", "sequence_number": 1},
        {"type": "response.output_item.added", "output_index": [1], "item": {"type": []}},
        {"type": "response.completed", "response": [], "sequence_number": "x"},
    ]  # fmt: skip
    body = b"".join(sse(orjson.dumps(e), "x") for e in hostile)
    out = filtered(body, [], restoring())
    assert b'o\\"brien@x.io' in out and b"[EMAIL_1]" not in out
    meter = Meter(Schema.OPENAI_RESPONSES, Kind.RESPONSES)
    meter.json({"status": ["completed"], "output": "x", "usage": []})
    assert not meter.complete and meter.usage(prompt=1).output_tokens == 0


_TEXT = "response.output_text.delta"
