"""Incremental server-sent events: bytes in any split -> events; events -> bytes."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final

# An event ends at a blank line; lines end in \\n, \\r\\n or \\r (the SSE spec allows all three).
_EVENT_END: Final = re.compile(rb"\r\n\r\n|\n\n|\r\r|\r\n\n|\n\r\n")


@dataclass(slots=True)
class Event:
    name: str | None
    data: str
    # Comment lines (": keep-alive") carry no event; they pass through as they came.
    comment: str | None = None
    # The bytes the event arrived as (a parsed event), sent on as they are; a new or
    # changed event is a new Event, encoded from its fields.
    raw: bytes | None = field(default=None, compare=False, repr=False)
    # `id:` and `retry:` (milliseconds): a client resumes a stream from the last id it saw
    # and waits `retry` before reconnecting (MCP's resumable streams), so a changed event
    # keeps them.
    id: str | None = None
    retry: int | None = None

    def encode(self) -> bytes:
        if self.raw is not None:
            return self.raw
        if self.comment is not None:
            return f":{self.comment}\n\n".encode()
        head = f"event: {self.name}\n" if self.name else ""
        if self.id is not None:
            head += f"id: {self.id}\n"
        if self.retry is not None:
            head += f"retry: {self.retry}\n"
        if not self.data and (self.id is not None or self.retry is not None):
            return f"{head}\n".encode()  # a cursor or a delay alone, no message
        lines = "".join(f"data: {line}\n" for line in self.data.split("\n"))
        return f"{head}{lines}\n".encode()


class Parser:
    """Feed bytes as they arrive; get back every event completed so far.

    Linear in the bytes fed however they are split: the buffer grows in place and each
    feed scans only what the last one could not have (an event end spans at most 4 bytes),
    so one huge event arriving in small chunks costs no more than one chunk would.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._scanned = 0  # the buffer holds no event end before this offset

    def feed(self, data: bytes) -> list[Event]:
        found = self.blocks(data)
        if found is not None:  # the usual chunk: no buffer, no regular expression
            return [
                Event(
                    None if name is None else name.decode("utf-8", "replace"),
                    line.decode("utf-8", "replace"),
                    raw=raw,
                )
                for name, line, raw in found
            ]
        self._buffer += data
        events: list[Event] = []
        start = 0
        position = max(0, self._scanned - 3)
        while True:
            match = _EVENT_END.search(self._buffer, position)
            if match is None:
                break
            event = _parse_block(self._buffer[start : match.start()].decode("utf-8", "replace"))
            if event is not None:
                event.raw = bytes(self._buffer[start : match.end()])
                events.append(event)
            start = position = match.end()
        if start:
            del self._buffer[:start]
        self._scanned = len(self._buffer)
        return events

    @property
    def pending(self) -> int:
        """Bytes held of an event that has not ended yet."""
        return len(self._buffer)

    def drop(self) -> bytes:
        """Forget the event that has not ended yet (a reader's bound on it); returns its last
        three bytes, where its end may have begun."""
        tail = bytes(self._buffer[-3:])
        self._buffer.clear()
        self._scanned = 0
        return tail

    def blocks(self, data: bytes) -> list[tuple[bytes | None, bytes, bytes]] | None:
        """The usual chunk without Event objects: (name, data, bytes) of each event, when
        the chunk is whole events of one `data:` line each, an `event:` line before it or
        not, LF only, nothing buffered. None for any other chunk (feed() reads it; nothing
        was consumed)."""
        # find(), not `in`: a bytes `in` first reads its operand as an int, and builds and
        # clears the TypeError a bytes operand raises (more than the rest of this reading).
        if self._buffer or not data.endswith(b"\n\n") or data.find(b"\r") >= 0:
            return None
        # One event, as a paced stream sends nearly every chunk: found with the fewest
        # passes over its bytes, and its bytes are the chunk itself.
        end = len(data) - 2
        first = data.find(b"\n")
        if first == end and data.startswith(b"data: "):
            return [(None, data[6:end], data)]
        if (
            data.startswith(b"event: ")
            and data.startswith(b"data: ", first + 1)
            and data.find(b"\n", first + 1) == end
        ):
            return [(data[7:first], data[first + 7 : end], data)]
        found: list[tuple[bytes | None, bytes, bytes]] = []
        *events, rest = data.split(b"\n\n")
        if rest:
            return None  # a blank line after the last event: feed() keeps it
        for block in events:
            if block.startswith(b"data: "):
                if block.find(b"\n") >= 0:
                    return None
                found.append((None, block[6:], block + b"\n\n"))
            elif block.startswith(b"event: "):
                head, _, line = block.partition(b"\n")
                if not line.startswith(b"data: ") or line.find(b"\n") >= 0:
                    return None
                found.append((head[7:], line[6:], block + b"\n\n"))
            else:
                return None  # comments, other fields, blank lines between events
        return found

    def close(self) -> list[Event]:
        """An unterminated last event, when the stream ends without its blank line."""
        rest = bytes(self._buffer)
        self._buffer.clear()
        self._scanned = 0
        if not rest.strip():
            return []
        event = _parse_block(rest.decode("utf-8", errors="replace"))
        return [event] if event is not None else []


def event_end(data: bytes) -> int:
    """Where the first event in `data` ends (past its blank line); -1 when none does."""
    match = _EVENT_END.search(data)
    return -1 if match is None else match.end()


def _parse_block(block: str) -> Event | None:
    name: str | None = None
    data: list[str] = []
    comments: list[str] = []
    event_id: str | None = None
    retry: int | None = None
    for line in block.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if not line:
            continue
        if line.startswith(":"):
            comments.append(line[1:])
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            name = value
        elif field == "data":
            data.append(value)
        elif field == "id":
            if "\0" not in value:  # the SSE spec ignores such an id
                event_id = value
        elif field == "retry" and value.isascii() and value.isdigit() and len(value) <= 10:
            retry = int(value)  # ten digits: 115 days, and int() never meets its digit limit
    if event_id is None and retry is None:
        if not data and name is None:
            return Event(None, "", comment="\n:".join(comments)) if comments else None
        return Event(name, "\n".join(data))
    return Event(name, "\n".join(data), id=event_id, retry=retry)
