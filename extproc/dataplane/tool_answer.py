"""The server's answer to an MCP POST as the gateway reads it, JSON or an SSE stream,
message by message: each message offered to the exchange, which may change the answer to
its request; an unreadable message replaced by an error for that request."""

from __future__ import annotations

from typing import Any, Protocol

import orjson

from extproc.apis import mcp
from extproc.config.runtime import Runtime
from extproc.sse import Event


class Reading(Protocol):
    """What of the exchange an answer's reading needs and updates."""

    runtime: Runtime
    outcome: str
    bytes_out: int

    def answered(self, message: mcp.Message) -> dict[str, Any] | None: ...

    def unread_answer(self, failure: mcp.RpcError) -> dict[str, Any]: ...


class AnswerReader:
    """The server's answer to a POST, JSON or SSE, message by message."""

    def __init__(self, exchange: Reading, streamed: bool = False) -> None:
        self.exchange = exchange
        self.streamed = streamed
        self.unread: mcp.RpcError | None = None  # the last event the gateway could not read
        settings = exchange.runtime.mcp
        self.events = (
            mcp.EventReader(settings.max_message_bytes, settings.max_depth) if streamed else None
        )

    def feed(self, chunk: bytes, end_of_stream: bool) -> bytes | None:
        exchange = self.exchange
        if self.events is None:
            return self._json(chunk)
        exchange.bytes_out += len(chunk)
        events = self.events
        read = events.feed(chunk)
        if end_of_stream:
            read.extend(events.close())  # a last event without its blank line
        out: list[bytes] = []
        changed = False
        for event, message in read:
            if isinstance(message, mcp.RpcError):
                # An event the gateway cannot read is dropped: it may be a progress
                # note; the answer, if it was, is missed below.
                self.unread = message
                changed = True
                continue
            payload = exchange.answered(message) if message is not None else None
            if payload is None:
                out.append(event.encode())
            else:
                out.append(mcp.EventReader.replace(event, payload).encode())
                changed = True
        if end_of_stream and exchange.outcome == "":
            if self.unread is not None:
                failed = exchange.unread_answer(self.unread)
                out.append(mcp.EventReader.replace(Event(None, ""), failed).encode())
                changed = True
            else:
                exchange.outcome = "cut"  # the stream ended before the answer
        joined = b"".join(out)
        # Whole events, none changed: the chunk passes as it came. Otherwise the client
        # gets the events completed so far (a partial one waits for its end).
        if not changed and joined == chunk:
            return None
        return joined

    def _json(self, chunk: bytes) -> bytes | None:
        exchange = self.exchange
        exchange.bytes_out = len(chunk)
        settings = exchange.runtime.mcp
        message = mcp.read_message(
            chunk, max_bytes=settings.max_message_bytes, max_depth=settings.max_depth
        )
        if isinstance(message, mcp.RpcError):
            payload: dict[str, Any] | None = exchange.unread_answer(message)
        else:
            payload = exchange.answered(message)
        if payload is None:
            return None
        body = orjson.dumps(payload)
        exchange.bytes_out = len(body)
        return body
