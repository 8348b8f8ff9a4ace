"""A stream the provider ends (cleanly, as HTTP goes) before its answer ended ends, for
the client, with an error event in the client's schema: each SDK raises it as an API
error instead of taking the answer for complete. A whole answer whose stream lacks only
its last event (`[DONE]`, `message_stop`) ends as the provider's stream should have."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from extproc.accounting.usage import Meter
from extproc.apis import Kind, Schema
from extproc.dataplane import report
from extproc.dataplane.decisions import Continue, Found, Lookup
from extproc.dataplane.exchange import Exchange
from extproc.dataplane.reader import StreamReader
from extproc.drift import DriftMonitor
from extproc.policy.engine import Decisions, Redactions
from extproc.policy.filters import OpenAIStreamFilter
from extproc.sse import Parser
from extproc.translate import openai_chat_stream
from extproc.translate.translation import Translation
from tests.helpers import runtime, sha256
from tests.unit.test_policy import POLICY_SET
from tests.unit.test_streams import anthropic_stream, openai_stream

OPENAI = openai_stream(["Hello", " there"])
ANTHROPIC = anthropic_stream(["Hello", " there"])
OPENAI_ERROR = {
    "error": {
        "message": "The provider ended the stream before the answer did; the answer is incomplete.",
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


# -- a whole answer without the stream's last event -----------------------------------
# Several OpenAI-compatible servers never send `data: [DONE]`; what decides is the answer:
# every choice's finish_reason (OpenAI), the stop_reason (Anthropic).

DONE = b"data: [DONE]\n\n"
MESSAGE_STOP = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
USAGE_CHUNK = b'"choices":[],"usage"'


def split(stream: bytes, end_in_data: bool) -> list[bytes]:
    """The stream's chunks: its end with the last bytes, or in an empty chunk after them."""
    return [stream[:150], stream[150:]] if end_in_data else [stream, b""]


@pytest.mark.parametrize("end_in_data", [False, True], ids=["empty-end", "end-in-data"])
@pytest.mark.parametrize("strip_usage", [False, True], ids=["as-is", "rewritten"])
def test_a_whole_openai_answer_without_done_gets_done_and_no_error(
    strip_usage: bool, end_in_data: bool
) -> None:
    reader = openai_reader(strip_usage)
    got = read(reader, split(OPENAI.replace(DONE, b""), end_in_data))
    # What the client gets is what the whole stream gives it, [DONE] included.
    assert got == read(openai_reader(strip_usage), [OPENAI, b""])
    assert got.endswith(DONE) and b"stream_incomplete" not in got
    assert reader.meter.complete


def test_an_unterminated_last_chunk_of_a_whole_answer_is_ended_before_done() -> None:
    stream = OPENAI.replace(DONE, b"")[:-2]  # the usage chunk, without its blank line
    got = events(read(openai_reader(), [stream, b""]))
    assert got == events(OPENAI)


@pytest.mark.parametrize(
    ("strip_usage", "client_asked", "complete"),
    [(True, False, False), (False, True, False), (False, False, True)],
    ids=["gateway-asked", "client-asked", "not-asked"],
)
def test_usage_asked_for_and_missing_leaves_the_answer_whole_but_not_complete(
    strip_usage: bool, client_asked: bool, complete: bool
) -> None:
    reader = openai_reader(strip_usage)
    reader.usage_asked |= client_asked
    whole = cut_before(OPENAI, USAGE_CHUNK)  # the finish_reason came, no usage, no [DONE]
    got = events(read(reader, [whole, b""]))
    assert got == [*events(whole), (None, "[DONE]")]
    # The text is whole (no error for the client); the usage is estimated, and the
    # answer is neither cached nor learned from.
    assert reader.meter.complete is complete


def two_choices(finished: tuple[bool, bool]) -> bytes:
    def chunk(index: int, delta: dict[str, Any], reason: str | None = None) -> bytes:
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": reason}
        return b"data: " + orjson.dumps({"id": "c1", "choices": [choice]}) + b"\n\n"

    parts = [chunk(i, {"content": f"answer {i}"}) for i in (0, 1)]
    parts += [chunk(i, {}, "stop") for i in (0, 1) if finished[i]]
    return b"".join(parts)


def test_a_stream_with_a_choice_left_unfinished_ends_with_the_error() -> None:
    stream = two_choices((True, False))
    got = events(read(openai_reader(), [stream, b""]))
    assert got == [*events(stream), (None, OPENAI_ERROR), (None, "[DONE]")]
    stream = two_choices((True, True))
    reader = openai_reader()
    assert read(reader, [stream, b""]) == stream + DONE
    assert reader.meter.complete


def test_an_empty_stream_ends_with_the_error() -> None:
    assert events(read(openai_reader(), [b""])) == [(None, OPENAI_ERROR), (None, "[DONE]")]


def test_a_whole_completions_answer_without_done_gets_done() -> None:
    stream = (
        b'data: {"id":"x","choices":[{"text":"Hi","index":0,"finish_reason":null}]}\n\n'
        b'data: {"id":"x","choices":[{"text":"","index":0,"finish_reason":"length"}]}\n\n'
    )
    reader = StreamReader(Meter(Schema.OPENAI, Kind.COMPLETIONS), None, False)
    assert read(reader, [stream, b""]) == stream + DONE


def anthropic_reader() -> StreamReader:
    return StreamReader(Meter(Schema.ANTHROPIC, Kind.MESSAGES), None, False)


@pytest.mark.parametrize("end_in_data", [False, True], ids=["empty-end", "end-in-data"])
def test_an_anthropic_answer_with_its_stop_reason_gets_message_stop(end_in_data: bool) -> None:
    reader = anthropic_reader()
    got = read(reader, split(ANTHROPIC.replace(MESSAGE_STOP, b""), end_in_data))
    assert got == ANTHROPIC
    assert reader.meter.complete


def test_an_anthropic_message_delta_without_a_stop_reason_is_no_end() -> None:
    stream = ANTHROPIC.replace(MESSAGE_STOP, b"")
    stream = stream.replace(b'"stop_reason":"end_turn"', b'"stop_reason":null')
    got = events(read(anthropic_reader(), [stream, b""]))
    assert got == [*events(stream), ("error", ANTHROPIC_ERROR)]


@pytest.mark.parametrize("emit_usage", [False, True], ids=["no-usage", "usage"])
def test_a_whole_anthropic_answer_translated_for_openai_ends_as_a_whole_one(
    emit_usage: bool,
) -> None:
    def reader() -> StreamReader:
        to_openai = Translation(Schema.OPENAI, Schema.ANTHROPIC).stream(True)
        assert isinstance(to_openai.encoder, openai_chat_stream.StreamEncoder)
        to_openai.encoder.created = 1
        made = StreamReader(Meter(Schema.ANTHROPIC, Kind.MESSAGES), None, False, to_openai)
        made.emit_usage = emit_usage
        return made

    got = read(reader(), [ANTHROPIC.replace(MESSAGE_STOP, b""), b""])
    assert got == read(reader(), [ANTHROPIC, b""])
    assert got.endswith(DONE) and b"error" not in got
    assert (b'"usage"' in got) is emit_usage


def test_a_whole_openai_answer_translated_for_anthropic_ends_as_a_whole_one() -> None:
    def reader() -> StreamReader:
        to_anthropic = Translation(Schema.ANTHROPIC, Schema.OPENAI).stream(True)
        return StreamReader(Meter(Schema.OPENAI, Kind.CHAT), None, False, to_anthropic)

    got = events(read(reader(), [OPENAI.replace(DONE, b""), b""]))
    assert got == events(read(reader(), [OPENAI, b""]))
    assert [name for name, _ in got[-2:]] == ["message_delta", "message_stop"]
    assert got[-2][1]["usage"]["output_tokens"] == 9


def test_a_filtered_whole_answer_without_done_gets_done_from_the_filter() -> None:
    def reader() -> StreamReader:
        policy = OpenAIStreamFilter(POLICY_SET, Redactions(), Decisions(), Kind.CHAT)
        return StreamReader(Meter(Schema.OPENAI, Kind.CHAT), policy, True)

    got = read(reader(), [OPENAI.replace(DONE, b""), b""])
    assert got == read(reader(), [OPENAI, b""])
    assert got.endswith(DONE) and b"error" not in got


CACHED = runtime(
    f"""
backends: [{{name: openai, url: "http://127.0.0.1:9/v1"}}]
models: [{{name: gpt-4o-mini, routes: [{{backend: openai}}], cache: {{mode: all}}}}]
tenants: [{{name: t, api_key_sha256: ["{sha256("key-t")}"]}}]
"""
)


def streamed(stream: bytes, client_usage: bool = False) -> Exchange:
    """An exchange whose provider answered `stream`, read to its end."""
    exchange = Exchange(CACHED, drift=DriftMonitor(10))
    headers = {":path": "/v1/chat/completions", ":method": "POST", "authorization": "Bearer key-t"}
    assert isinstance(exchange.request_headers(headers, end_of_stream=False), Continue)
    body: dict[str, Any] = {
        "model": "gpt-4o-mini",
        "stream": True,
        "messages": [{"role": "user", "content": "hi"}],
    }
    if client_usage:
        body["stream_options"] = {"include_usage": True}
    lookup = exchange.request_body(orjson.dumps(body))
    assert isinstance(lookup, Lookup)
    assert isinstance(exchange.resolve(Found(None)), Continue)
    exchange.response_headers({":status": "200", "content-type": "text/event-stream"})
    exchange.response_body(stream, False)
    exchange.response_body(b"", True)
    return exchange


@pytest.mark.parametrize("client_usage", [False, True], ids=["gateway-usage", "client-usage"])
def test_a_whole_answer_without_done_is_complete_cached_and_learned_from(
    client_usage: bool,
) -> None:
    exchange = streamed(OPENAI.replace(DONE, b""), client_usage)
    usage = report.record(exchange)["usage"]
    assert isinstance(usage, dict) and usage["complete"] is True and usage["estimated"] == []
    assert exchange.cache_value is not None
    assert report.drift_sample(exchange) is not None
    # The same answer with its usage chunk missing: whole for the client, not complete.
    exchange = streamed(cut_before(OPENAI, USAGE_CHUNK), client_usage)
    usage = report.record(exchange)["usage"]
    assert isinstance(usage, dict) and usage["complete"] is False
    assert exchange.cache_value is None and report.drift_sample(exchange) is None
