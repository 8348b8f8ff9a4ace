"""RFC 9113's answers to what a peer may send wrong, frame by frame, as one table: a
connection error (GOAWAY with its code), a stream error (RST_STREAM with its code, the
connection serving on), or nothing (the frame is ignored, as RFC 9113 5.1 says for a
stream the server reset). After each row the connection must still answer a PING, unless
it ended."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from extproc import transport
from extproc.transport import frames as h2
from extproc.transport.frames import PREFACE, frame
from tests.service.h2peer import (
    OPEN,
    Peer,
    goaway_code,
    hpack_request,
    message,
    path_added,
    path_literal,
    rst_codes,
)

HOLD = hpack_request(path_literal(b"/test.Echo/Hold"))
UNKNOWN = hpack_request(path_literal(b"/test.Echo/Nope"))
TRAILERS = b"\x00\x01a\x01b"  # a: b
EH, ES = h2.END_HEADERS, h2.END_STREAM


def u32(*values: int) -> bytes:
    return b"".join(struct.pack(">I", v) for v in values)


def setting(key: int, value: int) -> bytes:
    return frame(h2.SETTINGS, 0, 0, struct.pack(">HI", key, value))


def hold(stream: int = 1, flags: int = EH) -> bytes:
    return frame(h2.HEADERS, flags, stream, HOLD)


def unknown(stream: int = 1) -> bytes:
    """A call the server answers at once (trailers-only) and resets (RST NO_ERROR)."""
    return frame(h2.HEADERS, EH, stream, UNKNOWN)


def request(fields: bytes) -> bytes:
    return frame(h2.HEADERS, EH, 1, fields)


def literal(name: bytes, value: bytes) -> bytes:
    return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value


GOAWAY, RST, IGNORED = "goaway", "rst", "ignored"

# (what the peer sends after the preface and an empty SETTINGS, what must follow); for
# RST the expected codes by stream, for IGNORED the RST_STREAMs the server sends anyway.
ROWS: dict[str, tuple[bytes, str, Any]] = {
    # -- connection errors ------------------------------------------------------------------
    "DATA on stream 0": (frame(h2.DATA, 0, 0, b"x"), GOAWAY, h2.PROTOCOL_ERROR),
    "DATA on an idle stream": (frame(h2.DATA, 0, 1, b"x"), GOAWAY, h2.PROTOCOL_ERROR),
    "HEADERS on stream 0": (frame(h2.HEADERS, EH, 0, HOLD), GOAWAY, h2.PROTOCOL_ERROR),
    "HEADERS on an even stream": (frame(h2.HEADERS, EH, 2, HOLD), GOAWAY, h2.PROTOCOL_ERROR),
    "CONTINUATION without HEADERS": (
        frame(h2.CONTINUATION, EH, 1, b""),
        GOAWAY,
        h2.PROTOCOL_ERROR,
    ),
    "a frame inside a header block": (
        frame(h2.HEADERS, 0, 1, HOLD[:3]) + frame(h2.PING, 0, 0, bytes(8)),
        GOAWAY,
        h2.PROTOCOL_ERROR,
    ),
    "CONTINUATION on another stream": (
        frame(h2.HEADERS, 0, 1, HOLD[:3]) + frame(h2.CONTINUATION, EH, 3, HOLD[3:]),
        GOAWAY,
        h2.PROTOCOL_ERROR,
    ),
    "a block HPACK cannot decode": (request(b"\xff\xff\xff\xff"), GOAWAY, h2.COMPRESSION_ERROR),
    "three table size updates": (request(b"\x20\x20\x20" + HOLD), GOAWAY, h2.COMPRESSION_ERROR),
    "a table size past SETTINGS_HEADER_TABLE_SIZE": (
        request(b"\x3f\xe2\x1f" + HOLD),
        GOAWAY,
        h2.COMPRESSION_ERROR,
    ),
    "a frame over SETTINGS_MAX_FRAME_SIZE": (
        frame(h2.DATA, 0, 1, bytes(16385)),
        GOAWAY,
        h2.FRAME_SIZE_ERROR,
    ),
    "a header block over its limit": (
        frame(h2.HEADERS, EH, 1, bytes(8193)),
        GOAWAY,
        h2.ENHANCE_YOUR_CALM,
    ),
    "PING on a stream": (frame(h2.PING, 0, 1, bytes(8)), GOAWAY, h2.PROTOCOL_ERROR),
    "PING of 7 bytes": (frame(h2.PING, 0, 0, bytes(7)), GOAWAY, h2.FRAME_SIZE_ERROR),
    "SETTINGS on a stream": (frame(h2.SETTINGS, 0, 1), GOAWAY, h2.PROTOCOL_ERROR),
    "SETTINGS of 5 bytes": (frame(h2.SETTINGS, 0, 0, bytes(5)), GOAWAY, h2.FRAME_SIZE_ERROR),
    "SETTINGS ACK with a payload": (
        frame(h2.SETTINGS, h2.ACK, 0, bytes(6)),
        GOAWAY,
        h2.FRAME_SIZE_ERROR,
    ),
    "ENABLE_PUSH of 2": (setting(h2.ENABLE_PUSH, 2), GOAWAY, h2.PROTOCOL_ERROR),
    "INITIAL_WINDOW_SIZE of 2^31": (
        setting(h2.INITIAL_WINDOW_SIZE, 2**31),
        GOAWAY,
        h2.FLOW_CONTROL_ERROR,
    ),
    "MAX_FRAME_SIZE under 16,384": (
        setting(h2.MAX_FRAME_SIZE, 16383),
        GOAWAY,
        h2.PROTOCOL_ERROR,
    ),
    "SETTINGS taking a stream window past 2^31-1": (
        hold()
        + frame(h2.WINDOW_UPDATE, 0, 1, u32(h2.MAX_WINDOW - 65535))
        + setting(h2.INITIAL_WINDOW_SIZE, 65536),
        GOAWAY,
        h2.FLOW_CONTROL_ERROR,
    ),
    "WINDOW_UPDATE of 0 on the connection": (
        frame(h2.WINDOW_UPDATE, 0, 0, u32(0)),
        GOAWAY,
        h2.PROTOCOL_ERROR,
    ),
    "WINDOW_UPDATE of 3 bytes": (frame(h2.WINDOW_UPDATE, 0, 0, bytes(3)), GOAWAY, 6),
    "the connection window past 2^31-1": (
        frame(h2.WINDOW_UPDATE, 0, 0, u32(h2.MAX_WINDOW)),
        GOAWAY,
        h2.FLOW_CONTROL_ERROR,
    ),
    "WINDOW_UPDATE on an idle stream": (
        frame(h2.WINDOW_UPDATE, 0, 1, u32(1)),
        GOAWAY,
        h2.PROTOCOL_ERROR,
    ),
    "RST_STREAM on stream 0": (frame(h2.RST_STREAM, 0, 0, u32(0)), GOAWAY, h2.PROTOCOL_ERROR),
    "RST_STREAM on an idle stream": (
        frame(h2.RST_STREAM, 0, 1, u32(0)),
        GOAWAY,
        h2.PROTOCOL_ERROR,
    ),
    "RST_STREAM of 3 bytes": (
        hold() + frame(h2.RST_STREAM, 0, 1, bytes(3)),
        GOAWAY,
        h2.FRAME_SIZE_ERROR,
    ),
    "PRIORITY on stream 0": (frame(h2.PRIORITY, 0, 0, bytes(5)), GOAWAY, h2.PROTOCOL_ERROR),
    "PRIORITY of 4 bytes on an idle stream": (
        frame(h2.PRIORITY, 0, 1, bytes(4)),
        GOAWAY,
        h2.FRAME_SIZE_ERROR,
    ),
    "GOAWAY on a stream": (frame(h2.GOAWAY, 0, 1, bytes(8)), GOAWAY, h2.PROTOCOL_ERROR),
    "PUSH_PROMISE from a client": (
        frame(h2.PUSH_PROMISE, EH, 1, u32(2) + HOLD),
        GOAWAY,
        h2.PROTOCOL_ERROR,
    ),
    "padding past the frame's end": (
        hold() + frame(h2.DATA, h2.PADDED, 1, b"\x05ab"),
        GOAWAY,
        h2.PROTOCOL_ERROR,
    ),
    # -- stream errors ----------------------------------------------------------------------
    "HEADERS on a half-closed stream": (
        hold(flags=EH | ES) + frame(h2.HEADERS, EH | ES, 1, TRAILERS),
        RST,
        {1: h2.STREAM_CLOSED},
    ),
    "DATA on a half-closed stream": (
        hold(flags=EH | ES) + frame(h2.DATA, 0, 1, b"x"),
        RST,
        {1: h2.STREAM_CLOSED},
    ),
    "trailers without END_STREAM": (
        hold() + frame(h2.HEADERS, EH, 1, TRAILERS),
        RST,
        {1: h2.PROTOCOL_ERROR},
    ),
    "trailers with a pseudo-header": (
        hold() + frame(h2.HEADERS, EH | ES, 1, b"\x84"),
        RST,
        {1: h2.PROTOCOL_ERROR},
    ),
    "WINDOW_UPDATE of 0 on a stream": (
        hold() + frame(h2.WINDOW_UPDATE, 0, 1, u32(0)),
        RST,
        {1: h2.PROTOCOL_ERROR},
    ),
    "a stream window past 2^31-1": (
        hold() + frame(h2.WINDOW_UPDATE, 0, 1, u32(h2.MAX_WINDOW)),
        RST,
        {1: h2.FLOW_CONTROL_ERROR},
    ),
    "PRIORITY of 4 bytes on an open stream": (
        hold() + frame(h2.PRIORITY, 0, 1, bytes(4)),
        RST,
        {1: h2.FRAME_SIZE_ERROR},
    ),
    "DATA past the stream's window": (
        hold()
        + frame(h2.DATA, 0, 1, message(b""))
        + b"".join(
            frame(h2.DATA, 0, 1, piece)
            for piece in (message(bytes(65525))[i : i + 16384] for i in range(0, 65530, 16384))
        )
        + frame(h2.DATA, 0, 1, b"x"),
        RST,
        {1: h2.FLOW_CONTROL_ERROR},
    ),
    "a stream past SETTINGS_MAX_CONCURRENT_STREAMS": (
        b"".join(hold(stream) for stream in range(1, 203, 2)),
        RST,
        {201: h2.REFUSED_STREAM},
    ),
    # Malformed requests (RFC 9113 8.1.1, 8.2, 8.3).
    "a request without :method": (
        request(b"\x86" + path_literal(b"/test.Echo/Hold") + b"\x01\x01x"),
        RST,
        {1: h2.PROTOCOL_ERROR},
    ),
    "an uppercase field name": (request(HOLD + literal(b"X-Up", b"1")), RST, {1: 1}),
    "a connection-specific field": (
        request(HOLD + literal(b"connection", b"close")),
        RST,
        {1: h2.PROTOCOL_ERROR},
    ),
    "te other than trailers": (request(HOLD + literal(b"te", b"gzip")), RST, {1: 1}),
    "a pseudo-header after a regular field": (
        request(b"\x83\x86\x01\x01x" + literal(b"a", b"b") + path_literal(b"/test.Echo/Hold")),
        RST,
        {1: h2.PROTOCOL_ERROR},
    ),
    "an unknown pseudo-header": (request(literal(b":bogus", b"1") + HOLD), RST, {1: 1}),
    "a repeated :path": (request(HOLD[:2] + path_literal(b"/x") + HOLD[2:]), RST, {1: 1}),
    "an empty :path": (request(hpack_request(path_literal(b""))), RST, {1: 1}),
    "a value with a line feed": (request(HOLD + literal(b"a", b"b\nc")), RST, {1: 1}),
    # -- ignored --------------------------------------------------------------------------
    "HEADERS on a stream the server reset": (
        unknown() + frame(h2.HEADERS, EH | ES, 1, TRAILERS),
        IGNORED,
        {1: h2.NO_ERROR},
    ),
    "DATA on a stream the server reset": (
        unknown() + frame(h2.DATA, ES, 1, b"xyz"),
        IGNORED,
        {1: h2.NO_ERROR},
    ),
    "WINDOW_UPDATE on a closed stream": (
        unknown() + frame(h2.WINDOW_UPDATE, 0, 1, u32(100)),
        IGNORED,
        {1: h2.NO_ERROR},
    ),
    "RST_STREAM on a closed stream": (
        unknown() + frame(h2.RST_STREAM, 0, 1, u32(h2.CANCEL)),
        IGNORED,
        {1: h2.NO_ERROR},
    ),
    "PRIORITY on an idle stream": (frame(h2.PRIORITY, 0, 7, bytes(5)), IGNORED, {}),
    "an unknown frame type": (frame(0x20, 0, 0, b"x"), IGNORED, {}),
    "an unknown setting": (setting(0x99, 1), IGNORED, {}),
    "HEADERS with padding and priority": (
        frame(
            h2.HEADERS,
            EH | ES | h2.PADDED | h2.PRIORITY_FLAG,
            1,
            b"\x02" + bytes(5) + HOLD + b"\x00\x00",
        ),
        IGNORED,
        {},
    ),
}


class Echo:
    def __init__(self) -> None:
        self.sessions = 0

    async def hold(self, context: transport.Context) -> None:
        await context.read()
        await asyncio.Event().wait()

    def tally(self, context: transport.Context) -> Any:
        self.sessions += 1
        return self

    def message(self, message: bytes) -> bytes:
        return message

    def close(self, failed: bool) -> None:
        pass


@pytest.fixture
async def served() -> AsyncIterator[tuple[Echo, int]]:
    server = transport.Server(max_message=64 * 1024 * 1024)
    echo = Echo()
    server.add("/test.Echo/Hold", transport.Method(True, echo.hold, bytes, bytes))
    server.add("/test.Echo/Tally", transport.Method.of_session(echo.tally, bytes, bytes))
    health = transport.Health()
    health.serve_on(server)
    await server.listen("127.0.0.1:0")
    yield echo, server.servers[0].sockets[0].getsockname()[1]
    await server.stop(0)


@pytest.mark.parametrize("row", list(ROWS))
async def test_rfc_9113_answers(served: tuple[Echo, int], row: str) -> None:
    _, port = served
    sent, outcome, expected = ROWS[row]
    peer = await Peer.connect(port, OPEN + sent + frame(h2.PING, 0, 0, b"liveness"))
    if outcome == GOAWAY:
        assert goaway_code(await peer.closing()) == expected
        return
    found = await peer.until(lambda got: any(f.kind == h2.PING and f.flags for f in got))
    assert goaway_code(found) is None
    assert rst_codes(found) == expected
    peer.close()


@pytest.mark.parametrize(
    ("sent", "code"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", h2.PROTOCOL_ERROR),
        (PREFACE + frame(h2.PING, 0, 0, bytes(8)), h2.PROTOCOL_ERROR),  # no SETTINGS first
    ],
)
async def test_a_connection_that_does_not_open_as_http2_ends(
    served: tuple[Echo, int], sent: bytes, code: int
) -> None:
    _, port = served
    peer = await Peer.connect(port, sent)
    assert goaway_code(await peer.closing()) == code


async def test_rapid_reset_ends_the_connection_and_opens_no_session(
    served: tuple[Echo, int],
) -> None:
    """Streams opened and reset at once (CVE-2023-44487): past the bucket's burst the
    connection ends with ENHANCE_YOUR_CALM; none opened a session (so none wrote an
    exchange record)."""
    echo, port = served
    block = hpack_request(path_literal(b"/test.Echo/Tally"))
    data = b"".join(
        frame(h2.HEADERS, EH, s, block) + frame(h2.RST_STREAM, 0, s, u32(h2.CANCEL))
        for s in range(1, 4001, 2)
    )
    peer = await Peer.connect(port, OPEN + data)
    assert goaway_code(await peer.closing()) == h2.ENHANCE_YOUR_CALM
    assert echo.sessions == 0


async def test_an_unknown_method_is_named_briefly(served: tuple[Echo, int]) -> None:
    """The status of a call to an unknown method names at most 100 bytes of it: a 4 KB
    path in the HPACK table, named again by one byte per stream, costs the server a short
    reply each time."""
    _, port = served
    path = b"/" + b"x" * 4000
    first = frame(h2.HEADERS, EH | ES, 1, hpack_request(path_added(path)))
    again = b"".join(
        frame(h2.HEADERS, EH | ES, s, hpack_request(b"\xbe")) for s in range(3, 201, 2)
    )
    peer = await Peer.connect(port, OPEN + first + again)
    found = await peer.until(lambda got: sum(f.kind == h2.HEADERS for f in got) == 100)
    replies = [f for f in found if f.kind == h2.HEADERS]
    assert all(len(f.payload) < 250 for f in replies)
    assert b"grpc-status\x0212" in replies[0].payload.replace(b"\x00\x0b", b"")
    peer.close()


async def test_a_long_status_message_is_cut_and_the_call_still_ends(
    served: tuple[Echo, int],
) -> None:
    """A health Check for a 100 KB service name: NOT_FOUND, its message cut to 1 KiB
    (it built one frame past the peer's maximum size, and past 16 MiB the call hung)."""
    _, port = served
    options = [("grpc.max_send_message_length", 1 << 20)]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) as chan:
        stub = health_pb2_grpc.HealthStub(chan)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Check(health_pb2.HealthCheckRequest(service="s" * 100_000), timeout=10)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    details = caught.value.details() or ""
    assert details.startswith("unknown service 'sss") and len(details) <= 1024
