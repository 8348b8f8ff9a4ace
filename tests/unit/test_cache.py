"""Response cache keys, the in-process store and stream replays."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest

from extproc import cache
from extproc.apis import Schema
from extproc.config.settings import CacheMode
from extproc.sse import Parser

DATA = Path(__file__).parent.parent / "data" / "responses"
BODY: dict[str, Any] = {
    "model": "m",
    "temperature": 0,
    "messages": [{"role": "user", "content": "hi"}],
    "tools": [{"type": "function", "function": {"name": "f"}}],
}


def key(scope: str = "team", backend: str = "b", model: str = "m-1", **change: Any) -> str:
    return cache.key(scope, backend, model, "/chat/completions", {**BODY, **change})


def test_delivery_fields_do_not_change_the_key() -> None:
    assert key() == key(stream=True) == key(stream_options={"include_usage": True})
    assert key() == cache.key("team", "b", "m-1", "/chat/completions", dict(reversed(BODY.items())))


@pytest.mark.parametrize(
    "other",
    [
        lambda: key(scope="other-team"),
        lambda: key(backend="b2"),
        lambda: key(model="m-2"),
        lambda: key(temperature=0.5),
        lambda: key(messages=[{"role": "user", "content": "hi!"}]),
        lambda: key(tools=[]),
        lambda: key(max_tokens=5),
        lambda: key(seed=1),
        lambda: cache.key("team", "b", "m-1", "/messages", BODY),
    ],
)
def test_anything_that_changes_the_answer_changes_the_key(other: Any) -> None:
    assert other() != key()


def test_deterministic_mode_needs_temperature_zero() -> None:
    assert cache.cacheable(CacheMode.DETERMINISTIC, {"temperature": 0})
    assert not cache.cacheable(CacheMode.DETERMINISTIC, {"temperature": 0.2})
    assert not cache.cacheable(CacheMode.DETERMINISTIC, {})  # the default temperature samples
    assert not cache.cacheable(CacheMode.DETERMINISTIC, {"temperature": 0, "n": 3})
    assert cache.cacheable(CacheMode.ALL, {"temperature": 1})
    assert not cache.cacheable(None, {"temperature": 0})
    assert not cache.cacheable(CacheMode.OFF, {"temperature": 0})


def test_memory_cache_is_lru_within_its_bytes_and_expires() -> None:
    async def run() -> None:
        store = cache.MemoryCache(max_bytes=10)
        await store.set("a", b"1234", 60)
        await store.set("b", b"5678", 60)
        assert await store.get("a") == b"1234"  # a is now the most recent
        await store.set("c", b"90ab", 60)  # over 10 bytes: b, the least recent, goes
        assert await store.get("b") is None and await store.get("a") == b"1234"
        assert store.bytes == 8
        await store.set("d", b"x", -1)  # already expired
        assert await store.get("d") is None
        await store.set("huge", b"x" * 11, 60)
        assert await store.get("huge") is None

    asyncio.run(run())


def test_replayed_streams_are_well_formed() -> None:
    answer = (DATA / "openai_chat.json").read_bytes()
    body, content_type = cache.replay(Schema.OPENAI, answer, True, True)
    assert content_type == "text/event-stream"
    events = Parser().feed(body)
    assert events[-1].data == "[DONE]"
    chunks = [orjson.loads(e.data) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == orjson.loads(answer)["choices"][0]["message"]["content"]
    assert chunks[-1]["usage"]["total_tokens"] == 1163
    message = (DATA / "anthropic_message.json").read_bytes()
    body, _ = cache.replay(Schema.ANTHROPIC, message, True, False)
    names = [e.name for e in Parser().feed(body)]
    assert names == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert cache.replay(Schema.OPENAI, answer, False, False) == (answer, "application/json")


def events_of(name: str) -> list[dict[str, Any]]:
    return [
        orjson.loads(e.data)
        for e in Parser().feed((DATA / name).read_bytes())
        if e.data and e.data != "[DONE]"
    ]


def test_a_complete_openai_stream_is_stored_as_its_json_answer() -> None:
    stored = cache.assemble(Schema.OPENAI, events_of("openai_stream_usage.sse"))
    assert stored is not None
    answer = orjson.loads(stored)
    message = answer["choices"][0]["message"]
    assert message["content"] == "Héllo wörld ☕"
    assert message["tool_calls"] == [
        {
            "id": "call_abc",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
        }
    ]
    assert answer["choices"][0]["finish_reason"] == "tool_calls"
    assert answer["usage"]["total_tokens"] == 99 and answer["id"] == "chatcmpl-AbC123"
    # Without usage (the client's stream had none and none was added) nothing is stored.
    assert cache.assemble(Schema.OPENAI, events_of("openai_stream.sse")) is None


def test_a_complete_anthropic_stream_is_stored_as_its_message() -> None:
    stored = cache.assemble(Schema.ANTHROPIC, events_of("anthropic_stream.sse"))
    assert stored is not None
    message = orjson.loads(stored)
    assert message["content"] == [
        {"type": "text", "text": "Okay, let's check the weather for San Francisco, CA:"},
        {
            "type": "tool_use",
            "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
            "name": "get_weather",
            "input": {"location": "San Francisco, CA"},
        },
    ]
    assert message["stop_reason"] == "tool_use"
    assert message["usage"]["output_tokens"] == 89 and message["usage"]["input_tokens"] == 480
    # Cut before its end: not stored.
    assert cache.assemble(Schema.ANTHROPIC, events_of("anthropic_stream.sse")[:5]) is None


def sdk_stream(body: bytes) -> Any:
    """A Responses API stream as the SDK's `responses.stream` reads it: every event
    validated against its type, numbered in order; the final response."""
    import openai
    from openai.lib.streaming.responses._responses import ResponseStreamState
    from openai.types.responses import ResponseStreamEvent
    from pydantic import TypeAdapter

    adapter = TypeAdapter(ResponseStreamEvent)
    events = [adapter.validate_json(e.data) for e in Parser().feed(body)]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    state = ResponseStreamState(input_tools=openai.omit, text_format=openai.omit)
    for event in events:
        state.handle_event(event)
    return events, state._completed_response


RESPONSES_CALL = {
    "type": "function_call",
    "id": "fc_1",
    "call_id": "call_1",
    "name": "get_weather",
    "arguments": '{"city": "Paris"}',
    "status": "completed",
}


@pytest.mark.parametrize("extra", [[], [RESPONSES_CALL]])
def test_a_stored_responses_answer_replays_as_the_stream_the_sdk_reads(extra: list[Any]) -> None:
    answer = orjson.loads((DATA / "openai_responses.json").read_bytes())
    answer["output"] += extra
    # (The pinned SDK's types require the cache write count, newer than the fixture.)
    answer["usage"]["input_tokens_details"]["cache_write_tokens"] = 0
    stored = orjson.dumps(answer)
    body, content_type = cache.replay(Schema.OPENAI_RESPONSES, stored, True, False)
    assert content_type == "text/event-stream"
    events, final = sdk_stream(body)
    assert [e.type for e in events][:3] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
    ]
    assert events[-1].type == "response.completed"
    # The SDK's final response is the stored one, item for item.
    assert final is not None
    assert final.model_dump(exclude_none=True)["output"] == [
        type(final).model_validate(answer).model_dump(exclude_none=True)["output"][i]
        for i in range(len(answer["output"]))
    ]
    assert final.output_text == answer["output"][1]["content"][0]["text"]
    deltas = [e.type for e in events if e.type.endswith(".delta")]
    assert deltas == [
        "response.reasoning_summary_text.delta",
        "response.output_text.delta",
        *(["response.function_call_arguments.delta"] if extra else []),
    ]
    incomplete = {
        **answer,
        "status": "incomplete",
        "incomplete_details": {"reason": "max_output_tokens"},
    }
    body, _ = cache.replay(Schema.OPENAI_RESPONSES, orjson.dumps(incomplete), True, False)
    assert sdk_stream(body)[0][-1].type == "response.incomplete"


def test_a_complete_responses_stream_is_stored_as_its_response() -> None:
    events = events_of("openai_responses_stream.sse")
    stored = cache.assemble(Schema.OPENAI_RESPONSES, events)
    assert stored is not None
    assert orjson.loads(stored) == events[-1]["response"]
    # Cut before its end, or ended without usage: not stored.
    assert cache.assemble(Schema.OPENAI_RESPONSES, events[:-1]) is None
    no_usage = {**events[-1], "response": {**events[-1]["response"], "usage": None}}
    assert cache.assemble(Schema.OPENAI_RESPONSES, [*events[:-1], no_usage]) is None


def test_a_background_response_is_never_cached() -> None:
    body = {"model": "m", "input": "hi", "temperature": 0}
    assert cache.cacheable(CacheMode.DETERMINISTIC, body)
    assert not cache.cacheable(CacheMode.ALL, {**body, "background": True})
