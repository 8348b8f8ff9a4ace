"""Each resource a peer can make the transport hold, driven past its limit with raw frames.

The server runs in a process of its own (tests/service/h2_served.py, uvloop) so its memory
can be read: each test measures the growth of its peak resident set (VmHWM) over the
attack, and asks for a health Check on another connection meanwhile, which must be
answered within a deadline (a liveness bound, loose for a loaded 2-core machine).
"""

from __future__ import annotations

import asyncio
import struct
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import hpack
import pytest

from extproc.control.stack import free_port
from extproc.transport import frames as h2
from extproc.transport.calls import DEADLINE_EXCEEDED
from extproc.transport.frames import PREFACE, frame
from tests.service.h2peer import (
    OPEN,
    Frame,
    Peer,
    goaway_code,
    hpack_request,
    message,
    path_added,
    path_literal,
    rst_codes,
)

ROOT = Path(__file__).resolve().parent.parent.parent
MIB = 1024 * 1024
DEADLINE = 5.0  # for another connection's health Check while an attack runs


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    port: int

    def peak(self) -> int:
        """The process's peak resident set so far, in bytes."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmHWM")


Serve = Callable[..., Awaitable[Served]]


@pytest.fixture
def serve() -> Iterator[Serve]:
    started: list[subprocess.Popen[bytes]] = []

    async def start(**limits: float) -> Served:
        port = free_port()
        argv = [sys.executable, "-m", "tests.service.h2_served", str(port)]
        argv += [f"{name}={value}" for name, value in limits.items()]
        process = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE)  # noqa: ASYNC220
        started.append(process)
        assert process.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), 30)
        assert line == b"serving\n"
        served = Served(process, port)
        await checked(served.port)  # warm: the first call's imports and allocations
        return served

    yield start
    for process in started:
        process.kill()
        process.wait()


def call(stream: int, path: bytes, data: bytes = b"", end: bool = True) -> bytes:
    """HEADERS for `path` (literal fields: no HPACK table state), then DATA."""
    out = frame(h2.HEADERS, h2.END_HEADERS, stream, hpack_request(path_literal(path)))
    if data or end:
        out += frame(h2.DATA, h2.END_STREAM if end else 0, stream, data)
    return out


def data_frames(stream: int, data: bytes, end: bool = False) -> bytes:
    pieces = [data[at : at + 16384] for at in range(0, len(data), 16384)]
    return b"".join(
        frame(h2.DATA, h2.END_STREAM if end and i == len(pieces) - 1 else 0, stream, piece)
        for i, piece in enumerate(pieces)
    )


def trailer_status(found: list[Frame], stream: int) -> str | None:
    decoder = hpack.Decoder()
    status = None
    for kind, flags, number, payload in found:
        if kind == h2.HEADERS:
            fields = dict(decoder.decode(payload))
            if number == stream and flags & h2.END_STREAM:
                status = fields.get("grpc-status")
    return status


async def checked(port: int) -> float:
    """A health Check on a new connection; how long its answer took."""
    started = asyncio.get_running_loop().time()
    peer = await Peer.connect(port, OPEN + call(1, b"/grpc.health.v1.Health/Check", message(b"")))
    try:
        found = await peer.until(lambda got: trailer_status(got, 1) is not None, DEADLINE)
    finally:
        peer.close()
    assert trailer_status(found, 1) == "0"
    return asyncio.get_running_loop().time() - started


async def flood(port: int, opening: bytes, data: bytes) -> Peer:
    """A peer that sends it all, in the background (the server may stop reading it), and
    reads nothing until the test asks."""
    peer = await Peer.connect(port, opening)
    peer.sending = asyncio.ensure_future(peer.send(data))
    return peer


async def test_messages_a_handler_leaves_unread_hold_at_most_its_window(serve: Serve) -> None:
    """A health Watch reads its request and never another: 1 M more empty messages
    (4.8 MiB) stop at the stream's window (FLOW_CONTROL_ERROR for that stream), and the
    process holds nothing of them (it grew ~560 MiB when every message was kept)."""
    served = await serve()
    before = served.peak()
    batch = message(b"") * 3276  # 16,380 bytes: one frame's worth
    data = frame(h2.DATA, 0, 1, message(b"")) + frame(h2.DATA, 0, 1, batch) * 320
    watch = call(1, b"/grpc.health.v1.Health/Watch", end=False)
    peer = await flood(served.port, OPEN + watch, data)
    assert await checked(served.port) < DEADLINE
    found = await peer.until(lambda got: 1 in rst_codes(got))
    assert rst_codes(found)[1] == h2.FLOW_CONTROL_ERROR
    assert served.peak() - before < 8 * MIB
    peer.close()


async def test_unfinished_messages_hold_the_budget_and_no_longer_than_the_timeout(
    serve: Serve,
) -> None:
    """Ten streams each send 6 MiB of a 7 MiB message and stop. Room beyond the windows
    comes from the server's budget (twice the 8 MiB message limit here): two are let in,
    the others stop at their windows; after message_timeout the two end with
    DEADLINE_EXCEEDED. (All ten were held, with no timeout, before.)"""
    served = await serve(max_message=8 * MIB, message_timeout=2.0)
    before = served.peak()
    part = message(bytes(7 * MIB))[: 6 * MIB]
    streams = list(range(1, 21, 2))
    data = b"".join(call(s, b"/test.Echo/Hold", end=False) + data_frames(s, part) for s in streams)
    peer = await flood(served.port, OPEN, data)
    assert await checked(served.port) < DEADLINE
    assert served.peak() - before < 24 * MIB  # 2 x 7 MiB admitted, and some slack
    found = await peer.until(lambda got: trailer_status(got, 1) and trailer_status(got, 3), 20)
    assert trailer_status(found, 1) == trailer_status(found, 3) == str(DEADLINE_EXCEEDED)
    assert set(rst_codes(found)) >= set(streams[2:])
    assert {rst_codes(found)[s] for s in streams[2:]} == {h2.FLOW_CONTROL_ERROR}
    peer.close()


async def test_a_ping_flood_from_a_peer_that_never_reads_stops_being_read(serve: Serve) -> None:
    """PINGs whose ACKs are never read: once the unsent ACKs pass the write buffer's
    high-water mark the server stops reading that connection (grpcio stops after 10,000
    unsent control frames); it held every ACK before."""
    served = await serve()
    before = served.peak()
    pings = frame(h2.PING, 0, 0, b"12345678") * (1024 * 1024)  # 17 MiB
    peer = await flood(served.port, OPEN, pings)
    await asyncio.sleep(2)
    assert await checked(served.port) < DEADLINE
    assert served.peak() - before < 8 * MIB
    peer.close()


async def test_replies_a_peer_gives_no_window_for_stop_its_session(serve: Serve) -> None:
    """The peer's initial window is 0 and it sends a session 10,000 messages: the first
    reply waits for a window, the session takes no more messages, and what came after
    them stops at the stream's window. Replies were kept for every message before
    (~800 MiB), and other connections stalled for seconds."""
    served = await serve()
    before = served.peak()
    opening = PREFACE + frame(h2.SETTINGS, 0, 0, struct.pack(">HI", h2.INITIAL_WINDOW_SIZE, 0))
    one = message(bytes(1000))
    data = call(1, b"/test.Echo/Tally", end=False)
    data += b"".join(frame(h2.DATA, 0, 1, one * 16) for _ in range(625))
    peer = await flood(served.port, opening, data)
    assert await checked(served.port) < DEADLINE
    found = await peer.until(lambda got: 1 in rst_codes(got))
    assert rst_codes(found)[1] == h2.FLOW_CONTROL_ERROR
    assert served.peak() - before < 8 * MIB
    peer.close()


async def test_a_header_block_over_its_limit_ends_the_connection_at_once(serve: Serve) -> None:
    """A header block that passes 8 KiB ends the connection (GOAWAY ENHANCE_YOUR_CALM) as
    soon as it does, before it is complete or decoded: up to 1 MiB of it was decoded
    before, ~1.5 s of the loop each."""
    served = await serve()
    block = b"\x40\x81\x8f\x7f" + b"\xff" * 16380  # a name, then a huge value begins
    peer = await Peer.connect(served.port, OPEN + frame(h2.HEADERS, 0, 1, block))
    assert goaway_code(await peer.closing()) == h2.ENHANCE_YOUR_CALM
    assert await checked(served.port) < DEADLINE


async def test_streams_past_the_maximum_are_refused(serve: Serve) -> None:
    """20,000 streams opened at once: past SETTINGS_MAX_CONCURRENT_STREAMS (100) each is
    refused (REFUSED_STREAM), the process holds 100 streams, and a SETTINGS or a
    connection WINDOW_UPDATE afterwards is answered at once. All were kept before
    (+86 MiB), and each such frame walked them all (4.6 s)."""
    served = await serve()
    before = served.peak()
    path = path_added(b"/test.Echo/Hold")
    first = frame(h2.HEADERS, h2.END_HEADERS, 1, hpack_request(path))
    rest = b"".join(
        frame(h2.HEADERS, h2.END_HEADERS, s, hpack_request(b"\xbe")) for s in range(3, 40001, 2)
    )
    peer = await flood(served.port, OPEN + first, rest)
    found = await peer.until(lambda got: len(rst_codes(got)) == 19_900, 30)
    assert set(rst_codes(found).values()) == {h2.REFUSED_STREAM}
    assert min(rst_codes(found)) == 201
    await peer.send(
        frame(h2.SETTINGS, 0, 0, struct.pack(">HI", h2.INITIAL_WINDOW_SIZE, 1 << 20))
        + frame(h2.WINDOW_UPDATE, 0, 0, struct.pack(">I", 1 << 20))
        + frame(h2.PING, 0, 0, b"liveness")
    )
    await peer.until(lambda got: any(f.kind == h2.PING for f in got), DEADLINE)
    assert served.peak() - before < 16 * MIB
    peer.close()


async def test_connections_that_never_handshake_or_stay_idle_are_closed(serve: Serve) -> None:
    """A connection that sends nothing is closed after handshake_timeout; one with no
    stream, after idle_timeout (GOAWAY NO_ERROR). Both stayed open for good before."""
    served = await serve(handshake_timeout=1.0, idle_timeout=1.0)
    silent = [await Peer.connect(served.port, b"") for _ in range(50)]
    idle = await Peer.connect(served.port)
    for peer in silent:
        assert goaway_code(await peer.closing(10)) == h2.PROTOCOL_ERROR
    assert goaway_code(await idle.closing(10)) == h2.NO_ERROR
    assert await checked(served.port) < DEADLINE


async def test_connections_past_the_limit_are_refused(serve: Serve) -> None:
    """Past max_connections a new connection gets GOAWAY ENHANCE_YOUR_CALM and is closed;
    once one closes, the next is served."""
    served = await serve(max_connections=10)
    held = [await Peer.connect(served.port) for _ in range(10)]
    for peer in held:  # each has had its SETTINGS ACKed: counted by the server
        await peer.until(lambda got: any(f.kind == h2.SETTINGS and f.flags for f in got))
    refused = await Peer.connect(served.port)
    assert goaway_code(await refused.closing()) == h2.ENHANCE_YOUR_CALM
    held.pop().close()
    await asyncio.sleep(0.5)
    assert await checked(served.port) < DEADLINE
    for peer in held:
        peer.close()
