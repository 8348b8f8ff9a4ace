"""What MCP needs of the SSE parser: each event's id and retry, kept and written again."""

from __future__ import annotations

import pytest

from extproc.sse import Event, Parser

# -- SSE fields an MCP stream needs ------------------------------------------------------


def test_events_keep_their_id_and_retry() -> None:
    data = b'id: 41\nevent: message\nretry: 3000\ndata: {"a": 1}\n\n'
    [event] = Parser().feed(data)
    assert (event.name, event.id, event.retry, event.data) == ("message", "41", 3000, '{"a": 1}')
    assert event.encode() == data  # unchanged: the bytes as they came
    changed = Event(event.name, '{"a": 2}', id=event.id, retry=event.retry)
    assert Parser().feed(changed.encode()) == [changed]


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        (b"id: 1\ndata: \n\n", Event(None, "", id="1")),  # 2025-11-25's priming event
        (b"id: 2\n\n", Event(None, "", id="2")),
        (b"retry: 500\n\n", Event(None, "", retry=500)),
        (b"retry: soon\ndata: x\n\n", Event(None, "x")),
        (b"retry: 12345678901\ndata: x\n\n", Event(None, "x")),
        (b"retry: " + b"9" * 5000 + b"\ndata: x\n\n", Event(None, "x")),
        (b"retry: \xd9\xa3\ndata: x\n\n", Event(None, "x")),  # an Arabic-Indic digit
        (b"id: a\x00b\ndata: x\n\n", Event(None, "x")),  # the SSE spec ignores such an id
        (b"id\ndata: x\n\n", Event(None, "x", id="")),
    ],
)
def test_id_and_retry_as_the_sse_standard_reads_them(block: bytes, expected: Event) -> None:
    assert Parser().feed(block) == [expected]


def test_a_cursor_alone_encodes_without_data() -> None:
    assert Event(None, "", id="7", retry=10).encode() == b"id: 7\nretry: 10\n\n"
    assert Parser().feed(Event(None, "", id="7").encode()) == [Event(None, "", id="7")]
