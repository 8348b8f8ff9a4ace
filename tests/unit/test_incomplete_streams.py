"""A stream the provider ends (cleanly, as HTTP goes) without its final event ends, for
the client, with an error event in the client's schema: each SDK raises it as an API
error instead of taking the answer for complete."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from extproc.accounting.usage import Meter
from extproc.apis import Kind
from extproc.config.runtime import Schema
from extproc.policy.engine import Decisions, Redactions
from extproc.policy.filters import OpenAIStreamFilter
from extproc.reader import StreamReader
from extproc.sse import Parser
from extproc.translate.pair import Translation
from tests.unit.test_policy import POLICY_SET
from tests.unit.test_streams import anthropic_stream, openai_stream

OPENAI = openai_stream(["Hello", " there"])
ANTHROPIC = anthropic_stream(["Hello", " there"])
OPENAI_ERROR = {
    "error": {
        "message": "The provider ended the stream before its final event; the answer is "
        "incomplete.",
        "type": "server_error",
        "param": None,
        "code": "stream_incomplete",
    }
}
ANTHROPIC_ERROR = {
    "type": "error",
    "error": {
        "type": "api_error",
        "message": OPENAI_ERROR["error"]["message"],
    },
}


def cut_before(stream: bytes, marker: bytes) -> bytes:
    """The stream up to the event holding `marker` (whole events only)."""
    return stream[: stream.rindex(b"\n\n", 0, stream.index(marker)) + 2]


def events(data: bytes) -> list[tuple[str | None, Any]]:
    parser = Parser()
    parsed = parser.feed(data) + parser.close()
    return [(e.name, e.data if e.data == "[DONE]" else orjson.loads(e.data)) for e in parsed]


def read(reader: StreamReader, chunks: list[bytes]) -> bytes:
    """What the client receives: each chunk's replacement, or the chunk as it came."""
    out = b""
    for number, chunk in enumerate(chunks):
        replaced = reader.feed(chunk, number == len(chunks) - 1)
        out += chunk if replaced is None else replaced
    return out


def openai_reader(strip_usage: bool = False) -> StreamReader:
    return StreamReader(Meter(Schema.OPENAI, Kind.CHAT), None, strip_usage)


@pytest.mark.parametrize("strip_usage", [False, True], ids=["as-is", "rewritten"])
def test_an_openai_stream_without_done_ends_with_an_error_then_done(strip_usage: bool) -> None:
    cut = cut_before(OPENAI, b'"finish_reason":"stop"')
    got = events(read(openai_reader(strip_usage), [cut, b""]))
    assert got[:-2] == events(cut)
    assert got[-2:] == [(None, OPENAI_ERROR), (None, "[DONE]")]


def test_an_anthropic_stream_without_message_stop_ends_with_an_error_event() -> None:
    cut = cut_before(ANTHROPIC, b"event: message_delta")
    reader = StreamReader(Meter(Schema.ANTHROPIC, Kind.MESSAGES), None, False)
    got = events(read(reader, [cut[:100], cut[100:]]))  # the end in the last chunk
    assert got[:-1] == events(cut)
    assert got[-1] == ("error", ANTHROPIC_ERROR)


def test_an_unterminated_last_event_is_ended_before_the_error() -> None:
    cut = cut_before(OPENAI, b'"finish_reason":"stop"')
    partial = cut + b'data: {"id":"c1","choices":[]}'  # no blank line after it
    got = events(read(openai_reader(), [partial, b""]))
    assert got[-3:] == [(None, {"id": "c1", "choices": []}), (None, OPENAI_ERROR), (None, "[DONE]")]


def test_a_complete_stream_gets_nothing_appended() -> None:
    assert read(openai_reader(), [OPENAI, b""]) == OPENAI
    reader = StreamReader(Meter(Schema.ANTHROPIC, Kind.MESSAGES), None, False)
    assert read(reader, [ANTHROPIC, b""]) == ANTHROPIC


def test_a_translated_stream_cut_short_ends_in_the_clients_schema() -> None:
    # An Anthropic client in front of an OpenAI backend: no invented stop_reason.
    to_anthropic = Translation(Schema.ANTHROPIC, Schema.OPENAI).stream(True)
    reader = StreamReader(Meter(Schema.OPENAI, Kind.CHAT), None, False, to_anthropic)
    got = events(read(reader, [cut_before(OPENAI, b'"finish_reason":"stop"'), b""]))
    assert [name for name, _ in got] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "error",
    ]
    assert got[-1] == ("error", ANTHROPIC_ERROR)
    # An OpenAI client in front of an Anthropic backend: no usage chunk, no finish_reason.
    to_openai = Translation(Schema.OPENAI, Schema.ANTHROPIC).stream(True)
    reader = StreamReader(Meter(Schema.ANTHROPIC, Kind.MESSAGES), None, False, to_openai)
    got = events(read(reader, [cut_before(ANTHROPIC, b"event: message_delta"), b""]))
    chunks = [payload for _, payload in got[:-2]]
    assert len(chunks) == 3
    assert all(c["choices"][0]["finish_reason"] is None and "usage" not in c for c in chunks)
    assert got[-2:] == [(None, OPENAI_ERROR), (None, "[DONE]")]


def test_a_stream_a_policy_ended_gets_no_error_after_its_end() -> None:
    policy = OpenAIStreamFilter(POLICY_SET, Redactions(), Decisions(), Kind.CHAT)
    policy.ended = True  # a block ended the client's stream already
    reader = StreamReader(Meter(Schema.OPENAI, Kind.CHAT), policy, False)
    assert read(reader, [cut_before(OPENAI, b'"finish_reason":"stop"'), b""]) == b""
