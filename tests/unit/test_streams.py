"""Streaming response policy: SSE split anywhere, placeholders restored, clean blocks."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from extproc.apis import ENDPOINTS
from extproc.policy.engine import Decisions, Redactions
from extproc.policy.filters import (
    AnthropicStreamFilter,
    OpenAIStreamFilter,
    TextGuard,
    output_filter,
)
from extproc.sse import Event, Parser
from tests.unit.test_policy import POLICY_SET

PIECES = [
    "Sure, I wrote to [EM",
    "AIL_1] and [",
    "EMAIL_2] to",
    "day; café ☕ ",
    "and ",
    "new@corp.io",
    " too.",
]
# new@corp.io comes from the model, not the client: it is redacted, numbered after the
# request's placeholders, and never restored.
EXPECTED = "Sure, I wrote to a@x.io and o'hara@y.io today; café ☕ and [EMAIL_3] too."


def redactions() -> Redactions:
    table = Redactions()
    table.placeholder("EMAIL", "a@x.io", restore=True)
    table.placeholder("EMAIL", "o'hara@y.io", restore=True)
    return table


def openai_stream(pieces: list[str], finish: str = "stop") -> bytes:
    base = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m"}

    def chunk(delta: dict[str, Any], reason: str | None = None) -> bytes:
        body = {
            **base,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}],
        }
        return b"data: " + orjson.dumps(body) + b"\n\n"

    parts = [chunk({"role": "assistant", "content": ""})]
    parts += [chunk({"content": p}) for p in pieces]
    parts.append(chunk({}, finish))
    parts.append(
        b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":9,"total_tokens":12}}\n\n'
    )
    return b"".join(parts) + b"data: [DONE]\n\n"


def anthropic_stream(pieces: list[str]) -> bytes:
    def event(name: str, payload: dict[str, Any]) -> bytes:
        return f"event: {name}\n".encode() + b"data: " + orjson.dumps(payload) + b"\n\n"

    parts = [
        event(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "m1",
                    "type": "message",
                    "role": "assistant",
                    "model": "c",
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": 3, "output_tokens": 1},
                },
            },
        ),
        event(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
        event("ping", {"type": "ping"}),
    ]
    parts += [
        event(
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}},
        )
        for p in pieces
    ]
    parts += [
        event("content_block_stop", {"type": "content_block_stop", "index": 0}),
        event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": 9},
            },
        ),
        event("message_stop", {"type": "message_stop"}),
    ]
    return b"".join(parts)


def run_filter(make: Any, chunks: list[bytes]) -> list[Event]:
    stream = make()
    out = b""
    for number, chunk in enumerate(chunks):
        replaced = stream.feed(chunk, number == len(chunks) - 1)
        out += chunk if replaced is None else replaced
    events = Parser().feed(out)
    return events


def openai_text(events: list[Event]) -> tuple[str, list[str | None]]:
    text, reasons = "", []
    for event in events:
        if event.data == "[DONE]":
            continue
        for choice in orjson.loads(event.data)["choices"]:
            text += choice["delta"].get("content") or ""
            reasons.append(choice["finish_reason"])
    return text, reasons


def anthropic_text(events: list[Event]) -> tuple[str, list[str | None]]:
    text = ""
    for event in events:
        payload = orjson.loads(event.data)
        if payload["type"] == "content_block_delta":
            text += payload["delta"]["text"]
    return text, [e.name for e in events]


def splits(data: bytes) -> list[list[bytes]]:
    return [[data[:i], data[i:]] for i in range(len(data) + 1)]


def test_openai_stream_split_at_every_byte_restores_and_redacts() -> None:
    data = openai_stream(PIECES)
    for chunks in [*splits(data), [data[i : i + 1] for i in range(len(data))]]:
        events = run_filter(
            lambda: OpenAIStreamFilter(
                POLICY_SET, redactions(), Decisions(), ENDPOINTS["/v1/chat/completions"].kind
            ),
            chunks,
        )
        text, reasons = openai_text(events)
        assert text == EXPECTED, chunks[0][-40:]
        assert [r for r in reasons if r] == ["stop"]
        assert events[-1].data == "[DONE]"
        assert orjson.loads(events[-2].data)["usage"]["total_tokens"] == 12


def test_anthropic_stream_split_at_every_byte_restores_and_redacts() -> None:
    data = anthropic_stream(PIECES)
    expected_names = ["message_start", "content_block_start", "ping"]
    for chunks in [*splits(data), [data[i : i + 1] for i in range(len(data))]]:
        events = run_filter(
            lambda: AnthropicStreamFilter(POLICY_SET, redactions(), Decisions()), chunks
        )
        text, names = anthropic_text(events)
        assert text == EXPECTED, chunks[0][-40:]
        assert names[:3] == expected_names
        assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
        assert set(names[3:-3]) == {"content_block_delta"}


@pytest.mark.parametrize("api", ["openai", "anthropic"])
def test_mid_stream_block_ends_the_stream_cleanly(api: str) -> None:
    pieces = ["Fine so far. ", "The code name is Project Night", "ingale, ", "and more."]
    decisions = Decisions()
    if api == "openai":
        data = openai_stream(pieces)
        events = run_filter(
            lambda: OpenAIStreamFilter(
                POLICY_SET, Redactions(), decisions, ENDPOINTS["/v1/chat/completions"].kind
            ),
            splits(data)[len(data) // 2],
        )
        text, reasons = openai_text(events)
        assert [r for r in reasons if r] == ["content_filter"]
        assert events[-1].data == "[DONE]" and [e.data for e in events].count("[DONE]") == 1
    else:
        data = anthropic_stream(pieces)
        events = run_filter(
            lambda: AnthropicStreamFilter(POLICY_SET, Redactions(), decisions),
            splits(data)[len(data) // 2],
        )
        text, names = anthropic_text(events)
        assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
        assert orjson.loads(events[-2].data)["delta"]["stop_reason"] == "refusal"
        assert names.count("content_block_stop") == 1 and names.count("message_stop") == 1
    assert "Nightingale" not in text and text.startswith("Fine so far.")
    assert any(
        r["rule"] == "codename" and r["direction"] == "response" for r in decisions.records()
    )


def test_nothing_after_a_block_reaches_the_client() -> None:
    stream = OpenAIStreamFilter(
        POLICY_SET, Redactions(), Decisions(), ENDPOINTS["/v1/chat/completions"].kind
    )
    blocked = stream.feed(openai_stream(["Project Nightingale!"])[:400], False)
    assert blocked is not None and b"content_filter" in blocked
    assert (
        stream.feed(b'data: {"choices":[{"index":0,"delta":{"content":"more"}}]}\n\n', False) == b""
    )


def test_hold_back_is_only_what_could_still_match() -> None:
    guard = TextGuard(POLICY_SET, redactions(), Decisions())
    released, _ = guard.feed("Hello there, my friend")
    # "friend" could still grow into an e-mail address; everything before it is out.
    assert released == "Hello there, my " and guard.pending == "friend"
    released, _ = guard.feed(". Bye")
    assert released == "friend. " and guard.pending == "Bye"
    released, _ = guard.feed(" [EMAIL")
    assert released == "Bye " and guard.pending == "[EMAIL"
    released, _ = guard.feed("_1]!", final=True)
    assert released == "a@x.io!"


def test_filter_choice_by_content_type() -> None:
    chat = ENDPOINTS["/v1/chat/completions"]
    assert (
        output_filter(
            "text/event-stream; charset=utf-8", chat, POLICY_SET, Redactions(), Decisions()
        ).mode
        == "streamed"
    )  # type: ignore[union-attr]
    assert (
        output_filter("application/json", chat, POLICY_SET, Redactions(), Decisions()).mode
        == "buffered"
    )  # type: ignore[union-attr]
    assert output_filter("text/plain", chat, POLICY_SET, Redactions(), Decisions()) is None


@pytest.mark.parametrize("ending", [b"\n", b"\r\n", b"\r"])
def test_sse_parser_line_endings_and_comments(ending: bytes) -> None:
    data = (
        b": keep-alive"
        + ending * 2
        + b"event: a"
        + ending
        + b"data: 1"
        + ending
        + b"data: 2"
        + ending * 2
    )
    for chunks in splits(data):
        parser = Parser()
        events = [e for chunk in chunks for e in parser.feed(chunk)]
        assert [(e.name, e.data, e.comment) for e in events] == [
            (None, "", " keep-alive"),
            ("a", "1\n2", None),
        ]


@pytest.mark.parametrize("ending", [b"\n", b"\r\n"])
def test_parsed_events_pass_on_as_they_came(ending: bytes) -> None:
    """Whole events in one chunk (the usual case) and the same bytes split anyhow parse to
    the same events, each re-encoded to exactly its own bytes; a new event is encoded."""
    events = [
        b'data: {"a": 1}' + ending * 2,
        b": keep-alive" + ending * 2,
        b"event: x" + ending + b"data: 1" + ending + b"data: 2" + ending * 2,
        b"data: [DONE]" + ending * 2,
    ]
    data = b"".join(events)
    whole = Parser().feed(data)
    assert [e.encode() for e in whole] == events
    for chunks in splits(data):
        parser = Parser()
        parsed = [e for chunk in chunks for e in parser.feed(chunk)]
        assert parsed == whole
        assert b"".join(e.encode() for e in parsed) == data
    assert Event("x", "1\n2").encode() == b"event: x\ndata: 1\ndata: 2\n\n"


def parsed_the_long_way(chunk: bytes) -> list[Event]:
    """feed()'s events for a chunk, read through its buffer: feed() itself takes blocks()
    for a whole chunk."""
    parser = Parser()
    return parser.feed(chunk[:1]) + parser.feed(chunk[1:])


@pytest.mark.parametrize(
    "chunk",
    [
        b'data: {"a": 1}\n\n',
        b'data: {"a": 1}\n\nevent: x\ndata: 2\n\ndata: [DONE]\n\n',
        b"event: \ndata:  two spaces\n\n",
    ],
)
def test_blocks_are_what_feed_would_parse(chunk: bytes) -> None:
    """Parser.blocks gives each event's name, data and bytes as feed() parses them."""
    blocks = Parser().blocks(chunk)
    assert blocks is not None
    events = parsed_the_long_way(chunk)
    assert [(n.decode() if n is not None else None, d.decode(), r) for n, d, r in blocks] == [
        (e.name, e.data, e.raw) for e in events
    ]


@pytest.mark.parametrize(
    "chunk",
    [
        b'data: {"a": 1}\n',  # unfinished
        b'data: {"a": 1}\r\n\r\n',  # CR line ends
        b'data: {"a": 1}\r\n\n',  # one CR, before the blank line
        b"data: 1\n\ndata: 2\r\n\n",  # one CR, in the second event
        b": keep-alive\n\n",  # a comment
        b"data: 1\ndata: 2\n\n",  # two data lines
        b"event: x\n\n",  # no data
        b"id: 7\ndata: 1\n\n",  # another field
        b"data: 1\n\n\n\ndata: 2\n\n",  # blank lines between events
        b"data:1\n\n",  # no space after the colon
    ],
)
def test_blocks_leave_other_chunks_to_feed(chunk: bytes) -> None:
    assert Parser().blocks(chunk) is None


_LINES = [b"data: 1", b"data: ", b"data:x", b"event: x", b"event: ", b"id: 7", b": c", b"", b"da"]


@given(st.lists(st.sampled_from(_LINES), max_size=6), st.sampled_from([b"\n", b"\n\n", b""]))
@example([b"event: x", b"data: 1"], b"\n\n")
@example([b"data: 1"], b"\n\n")
@example([b"data: 1", b"", b"event: ", b"data: "], b"\n\n")
@example([b"data: 1", b""], b"\n\n")
@settings(max_examples=400)
def test_blocks_agree_with_feed_on_any_lines(lines: list[bytes], ending: bytes) -> None:
    """Any chunk blocks() takes, it reads as feed() does; the chunks it leaves are those
    with anything but whole events of an optional `event:` line and one `data:` line."""
    chunk = b"\n".join(lines) + ending
    blocks = Parser().blocks(chunk)
    events = parsed_the_long_way(chunk)
    if blocks is not None:
        assert [(n.decode() if n is not None else None, d.decode(), r) for n, d, r in blocks] == [
            (e.name, e.data, e.raw) for e in events
        ]
        assert b"".join(r for _, _, r in blocks) == chunk
    else:
        usual = [b"data: " + e.data.encode() + b"\n\n" for e in events if e.name is None]
        named = [
            b"event: " + e.name.encode() + b"\ndata: " + e.data.encode() + b"\n\n"
            for e in events
            if e.name is not None
        ]
        assert not (
            events
            and len(usual) + len(named) == len(events)
            and all(e.raw in usual + named and "\n" not in e.data for e in events)
            and b"".join(e.raw or b"" for e in events) == chunk
            and all(e.comment is None and e.id is None for e in events)
        )


def test_blocks_wait_for_a_buffered_event() -> None:
    parser = Parser()
    assert parser.feed(b"data: 1") == []
    assert parser.blocks(b"\n\ndata: 2\n\n") is None  # the first event ends here


@pytest.mark.parametrize(
    "text",
    [
        "mail x@y.io 4155550132 now",  # the phone's hold-back must not split the address
        "invoice INV-2024-000123, call (202) 555-0143x12 or +44 20 7946 0958.",
        "card 4111 1111 1111 1111, not AB4111111111111111",
    ],
)
def test_detections_are_the_same_however_the_text_is_split(text: str) -> None:
    from tests.unit.test_generated_pii import streamed as stream

    whole = stream([text])
    assert "[PHONE_1]" in whole or "[CARD_1]" in whole
    for cut in range(1, len(text)):
        assert stream([text[:cut], text[cut:]]) == whole, cut
    assert stream(list(text)) == whole
