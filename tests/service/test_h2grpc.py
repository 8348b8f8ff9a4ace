"""h2grpc (extproc.transport), the service's HTTP/2 gRPC server, against grpcio's and
grpc-go's clients and raw bytes."""

from __future__ import annotations

import asyncio
import os
import shutil
import struct
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import hpack
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from extproc import transport
from extproc.transport import frames as h2
from extproc.transport.frames import PREFACE
from extproc.transport.frames import frame as _frame
from tests.service.h2peer import (
    OPEN,
    Peer,
    frames,
    goaway_code,
    hpack_request,
    message,
    path_added,
    path_literal,
    raw,
    request_block,
)

MAX = 64 * 1024 * 1024
GOPROBE = Path(__file__).resolve().parent.parent / "data" / "goprobe" / "main.go"


class Echo:
    """Methods for the tests: echo each message; fail; abort; hold until cancelled."""

    def __init__(self) -> None:
        self.finished: list[str] = []

    async def chat(self, context: transport.Context) -> None:
        try:
            while (message := await context.read()) is not transport.EOF:
                if message == b"boom":
                    raise RuntimeError("handler bug")
                if message == b"abort":
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "refused: é%")
                await context.write(message)
        finally:
            self.finished.append("chat")

    async def upper(self, request: bytes) -> bytes:
        return request.upper()

    def tally(self, context: transport.Context) -> Tally:
        return Tally(self.finished)


class Tally:
    """A session (answered as frames arrive): echo; b"slow:X" answers X after a pause
    (later messages wait their turn); b"boom" is a bug; b"refuse" ends the call."""

    def __init__(self, finished: list[str]) -> None:
        self.finished = finished

    def message(self, message: bytes) -> Any:
        if message == b"boom":
            raise RuntimeError("handler bug")
        if message == b"refuse":
            raise transport.RpcError(transport.INVALID_ARGUMENT, "refused")
        if message.startswith(b"slow:"):
            return self.slow(message[5:])
        return message

    async def slow(self, message: bytes) -> bytes:
        try:
            await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            self.finished.append("slow cancelled")
            raise
        return message

    def close(self, failed: bool) -> None:
        self.finished.append(f"session failed={failed}")


@pytest.fixture
async def served() -> AsyncIterator[tuple[transport.Server, Echo, transport.Health, int]]:
    server = transport.Server(max_message=MAX)
    echo = Echo()
    server.add("/test.Echo/Chat", transport.Method(True, echo.chat, bytes, bytes))
    server.add("/test.Echo/Upper", transport.Method(False, echo.upper, bytes, bytes))
    server.add("/test.Echo/Tally", transport.Method.of_session(echo.tally, bytes, bytes))
    health = transport.Health()
    health.serve_on(server)
    health.set("", health_pb2.HealthCheckResponse.SERVING)
    await server.listen("127.0.0.1:0")
    port = server.servers[0].sockets[0].getsockname()[1]
    yield server, echo, health, port
    await server.stop(0)


def channel(port: int, send: int = MAX) -> grpc.aio.Channel:
    options = [("grpc.max_receive_message_length", MAX), ("grpc.max_send_message_length", send)]
    return grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options)


def chat(chan: grpc.aio.Channel, method: str = "Chat") -> Any:
    return chan.stream_stream(
        f"/test.Echo/{method}", request_serializer=bytes, response_deserializer=bytes
    )()


async def test_a_session_answers_in_order_and_closes_once(served: Any) -> None:
    _, echo, _, port = served
    async with channel(port) as chan:
        call = chat(chan, "Tally")
        for text in (b"one", b"slow:two", b"three", b"slow:four", b"five"):
            await call.write(text)
        await call.done_writing()
        replies = [await call.read() for _ in range(5)]
        assert replies == [b"one", b"two", b"three", b"four", b"five"]
        assert await call.read() is grpc.aio.EOF
        assert await call.code() == grpc.StatusCode.OK
    assert echo.finished == ["session failed=False"]


@pytest.mark.parametrize(
    ("message", "code", "details"),
    [
        (b"boom", grpc.StatusCode.UNKNOWN, "internal error"),
        (b"refuse", grpc.StatusCode.INVALID_ARGUMENT, "refused"),
    ],
)
async def test_a_failing_session_ends_its_call_only(
    served: Any, message: bytes, code: grpc.StatusCode, details: str
) -> None:
    _, echo, _, port = served
    async with channel(port) as chan:
        call = chat(chan, "Tally")
        await call.write(b"before")
        assert await call.read() == b"before"
        await call.write(message)
        assert await call.code() == code
        assert await call.details() == details
        assert echo.finished == ["session failed=True"]
        other = chat(chan, "Tally")
        await other.write(b"still serving")
        assert await other.read() == b"still serving"
        await other.done_writing()
        assert await other.code() == grpc.StatusCode.OK


async def test_a_cancelled_session_call_closes_it_and_cancels_its_reply(served: Any) -> None:
    _, echo, _, port = served
    async with channel(port) as chan:
        call = chat(chan, "Tally")
        await call.write(b"slow:never")
        await asyncio.sleep(0.01)
        call.cancel()
        for _ in range(100):
            if len(echo.finished) == 2:
                break
            await asyncio.sleep(0.01)
    assert sorted(echo.finished) == ["session failed=False", "slow cancelled"]


async def test_bidi_stream_unary_call_and_health(served: Any) -> None:
    *_, port = served
    async with channel(port) as chan:
        call = chat(chan)
        for text in (b"one", b"", b"three"):
            await call.write(text)
            assert await call.read() == text
        await call.done_writing()
        assert await call.read() is grpc.aio.EOF
        assert await call.code() == grpc.StatusCode.OK
        upper = chan.unary_unary("/test.Echo/Upper", bytes, bytes)
        assert await upper(b"abc") == b"ABC"
        stub = health_pb2_grpc.HealthStub(chan)
        reply = await stub.Check(health_pb2.HealthCheckRequest())
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Check(health_pb2.HealthCheckRequest(service="nope"))
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_messages_larger_than_every_window_cross_both_ways(served: Any) -> None:
    """32 MiB each way: past grpcio's and our initial windows, in many DATA frames."""
    *_, port = served
    big = bytes(range(256)) * (32 * 4096)
    async with channel(port) as chan:
        call = chat(chan)
        for _ in range(2):
            await call.write(big)
            assert await call.read() == big
        await call.done_writing()
        assert await call.code() == grpc.StatusCode.OK


async def test_large_messages_side_by_side_wait_their_turn_for_room() -> None:
    """Room beyond the windows for one 3 MiB message at a time: six sent at once, on six
    calls, each waits its turn and all arrive whole (a peer that keeps to the windows
    is slowed, never refused)."""
    size = 3 * 1024 * 1024
    limits = transport.Limits(max_message=size, message_budget=size)
    server = transport.Server(limits=limits)
    echo = Echo()
    server.add("/test.Echo/Upper", transport.Method(False, echo.upper, bytes, bytes))
    await server.listen("127.0.0.1:0")
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        async with channel(port) as chan:
            upper = chan.unary_unary("/test.Echo/Upper", bytes, bytes)
            bodies = [bytes([97 + i]) * size for i in range(6)]
            replies = await asyncio.gather(*(upper(body, timeout=60) for body in bodies))
        assert replies == [body.upper() for body in bodies]
        assert server.budget.free == size and not server.budget.waiting
    finally:
        await server.stop(0)


async def test_many_concurrent_streams_on_one_connection(served: Any) -> None:
    *_, port = served

    async def one(chan: grpc.aio.Channel, index: int) -> bytes:
        call = chat(chan)
        await call.write(b"%d" % index)
        reply: bytes = await call.read()
        await call.done_writing()
        return reply

    async with channel(port) as chan:
        replies = await asyncio.gather(*(one(chan, i) for i in range(300)))
    assert replies == [b"%d" % i for i in range(300)]


async def test_errors_end_the_call_and_the_server_keeps_serving(served: Any) -> None:
    _, echo, _, port = served
    async with channel(port) as chan:
        for message, code, details in (
            (b"boom", grpc.StatusCode.UNKNOWN, "internal error"),  # no traceback text
            (b"abort", grpc.StatusCode.INVALID_ARGUMENT, "refused: é%"),
        ):
            call = chat(chan)
            await call.write(message)
            assert await call.code() == code
            assert await call.details() == details
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await chan.unary_unary("/test.Echo/Nope", bytes, bytes)(b"x")
        assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
        call = chat(chan)
        await call.write(b"still here")
        assert await call.read() == b"still here"
        await call.done_writing()
        # The status leaves after the handler has returned: all three have finished.
        assert await call.code() == grpc.StatusCode.OK
    assert echo.finished.count("chat") == 3


async def test_oversized_and_compressed_messages_are_refused(served: Any) -> None:
    *_, port = served
    async with channel(port, send=2 * MAX) as chan:
        call = chat(chan)
        await call.write(b"x" * (MAX + 1))
        assert await call.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # grpcio decides itself whether to compress; raw frames make sure.
    assert await raw_call(port, b"\x01" + struct.pack(">I", 3) + b"abc") == "12"
    assert await raw_call(port, b"\x00" + struct.pack(">I", 3) + b"abc") == "0"
    assert await raw_call(port, b"\x00" + struct.pack(">I", 9) + b"abc") == "3"  # cut short


async def test_a_cancelled_call_cancels_its_handler(served: Any) -> None:
    _, echo, _, port = served
    async with channel(port) as chan:
        call = chat(chan)
        await call.write(b"held")
        assert await call.read() == b"held"
        call.cancel()
        for _ in range(100):
            if echo.finished:
                break
            await asyncio.sleep(0.01)
    assert echo.finished == ["chat"]


async def test_watch_follows_health_and_stop_refuses_new_calls(served: Any) -> None:
    server, _, health, port = served
    async with channel(port) as chan:
        watch = health_pb2_grpc.HealthStub(chan).Watch(health_pb2.HealthCheckRequest())
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
        held = chat(chan)
        await held.write(b"in flight")
        assert await held.read() == b"in flight"
        health.shutting_down()
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
        stopping = asyncio.ensure_future(server.stop(5))
        await asyncio.sleep(0.1)
        # The call in flight still works after GOAWAY; new ones find no listener.
        await held.write(b"after goaway")
        assert await held.read() == b"after goaway"
        refused = chat(chan)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await refused.write(b"new")
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        await held.done_writing()
        assert await held.code() == grpc.StatusCode.OK
        watch.cancel()
        await asyncio.wait_for(stopping, 5)


# -- raw bytes ----------------------------------------------------------------------------


async def raw_call(port: int, data: bytes) -> str | None:
    """One Chat call from raw frames: headers, then data with END_STREAM; its grpc-status."""
    block = request_block(hpack.Encoder())
    received = await raw(
        port,
        PREFACE
        + _frame(h2.SETTINGS, 0, 0)
        + _frame(h2.HEADERS, h2.END_HEADERS, 1, block)
        + _frame(h2.DATA, h2.END_STREAM, 1, data),
        0.3,
    )
    decoder = hpack.Decoder()
    status = None
    for kind, _, stream, payload in frames(received):
        if kind == h2.HEADERS and stream == 1:
            status = dict(decoder.decode(payload)).get("grpc-status", status)
    return status


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", h2.PROTOCOL_ERROR),  # not HTTP/2
        (PREFACE + _frame(h2.DATA, 0, 0, b"x"), h2.PROTOCOL_ERROR),
        (PREFACE + _frame(h2.CONTINUATION, 4, 1, b""), h2.PROTOCOL_ERROR),
        (OPEN + _frame(h2.HEADERS, 4, 1, b"\xff\xff\xff\xff"), h2.COMPRESSION_ERROR),
        (PREFACE + _frame(h2.SETTINGS, 0, 0, b"\x00\x04\xff\xff\xff\xff"), 3),
        (OPEN + _frame(h2.WINDOW_UPDATE, 0, 0, b"\x00\x00\x00\x00"), 1),
        (PREFACE + b"\x7f\xff\xff\x00\x00\x00\x00\x00\x01", h2.FRAME_SIZE_ERROR),
    ],
)
async def test_protocol_errors_end_that_connection_only(
    served: Any, data: bytes, code: int | None
) -> None:
    *_, port = served
    received = await raw(port, data)
    assert goaway_code(received) == code
    async with channel(port) as chan:  # the server is unharmed
        assert await chan.unary_unary("/test.Echo/Upper", bytes, bytes)(b"ok") == b"OK"


async def test_ping_is_answered(served: Any) -> None:
    *_, port = served
    received = await raw(port, OPEN + _frame(h2.PING, 0, 0, b"12345678"), 0.3)
    assert (h2.PING, h2.ACK, 0, b"12345678") in frames(received)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.binary(max_size=300))
async def test_any_bytes_after_the_preface_leave_the_server_serving(
    served: Any, junk: bytes
) -> None:
    *_, port = served
    await raw(port, PREFACE + junk, 0.05)
    async with channel(port) as chan:
        assert await chan.unary_unary("/test.Echo/Upper", bytes, bytes)(b"ok") == b"OK"


async def test_a_repeated_header_block_follows_the_hpack_table() -> None:
    """A block that leaves HPACK's table alone decodes once while the table holds still;
    after the table changes (an entry added, the table emptied by a size update to 0),
    the same bytes name what the table now holds, or nothing."""
    server = transport.Server()
    echo = Echo()
    server.add("/test.Echo/Chat", transport.Method(True, echo.chat, bytes, bytes))
    server.add("/test.Echo/Upper", transport.Method(False, echo.upper, bytes, bytes))
    await server.listen("127.0.0.1:0")
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        newest = hpack_request(b"\xbe")  # :path from dynamic entry 62
        blocks = [
            hpack_request(path_added(b"/test.Echo/Upper")),
            newest,
            newest,  # decoded from the cache
            hpack_request(path_added(b"/test.Echo/Chat")),
            newest,  # now Chat's
            # Two size updates (0 empties the table, then back to 4096), the path literal.
            hpack_request(path_literal(b"/test.Echo/Upper"), table_updates=b"\x20\x3f\xe1\x1f"),
            newest,  # names an entry that is gone
        ]
        message = struct.pack(">BI", 0, 3) + b"abc"
        peer = await Peer.connect(port)
        for index, header_block in enumerate(blocks):
            stream = 2 * index + 1
            await peer.send(
                _frame(h2.HEADERS, h2.END_HEADERS, stream, header_block)
                + _frame(h2.DATA, h2.END_STREAM, stream, message)
            )
            received = await peer.until(
                lambda found, stream=stream: (
                    any(f.stream == stream for f in found) or goaway_code(found) is not None
                )
            )
        replies: dict[int, bytes] = {}
        for kind, _, stream, payload in received:
            if kind == h2.DATA:
                replies[stream] = replies.get(stream, b"") + payload
        assert [replies.get(2 * i + 1, b"")[5:] for i in range(7)] == [
            b"ABC",
            b"ABC",
            b"ABC",
            b"abc",
            b"abc",
            b"ABC",
            b"",
        ]
        assert goaway_code(received) == h2.COMPRESSION_ERROR
        peer.close()
    finally:
        await server.stop(0)


@pytest.mark.parametrize("path", ["/test.Echo/Chat", "/test.Echo/Tally"])
async def test_a_peer_that_stops_reading_holds_back_the_writer(served: Any, path: str) -> None:
    """A client with huge flow-control windows that does not read: the server's send buffer
    stays near a couple of replies instead of growing by every one; once it reads, all
    arrive. A session's messages wait unanswered meanwhile, as a handler blocked in write
    does."""
    server, *_, port = served
    size, count = 60_000, 60  # each message within a stream's window, 3.6 MB in all
    data = message(bytes(size))
    block = request_block(hpack.Encoder(), path)
    settings = struct.pack(">HI", h2.INITIAL_WINDOW_SIZE, h2.MAX_WINDOW)
    out = (
        PREFACE
        + _frame(h2.SETTINGS, 0, 0, settings)
        + _frame(h2.WINDOW_UPDATE, 0, 0, struct.pack(">I", h2.MAX_WINDOW - 65535))
    )
    for stream in range(1, 2 * count, 2):
        out += _frame(h2.HEADERS, h2.END_HEADERS, stream, block)
        pieces = [data[at : at + 16384] for at in range(0, len(data), 16384)]
        for index, piece in enumerate(pieces):
            out += _frame(h2.DATA, h2.END_STREAM if index == len(pieces) - 1 else 0, stream, piece)
    peer = await Peer.connect(port, out)
    await asyncio.sleep(1.0)
    [connection] = server.connections
    assert connection.transport.get_write_buffer_size() < 4 * size
    received = await peer.until(
        lambda found: (
            sum(f.stream for f in found if f.kind == h2.HEADERS and f.flags & 1) == count * count
        )
    )
    replies: dict[int, int] = {}
    for found in received:
        if found.kind == h2.DATA:
            replies[found.stream] = replies.get(found.stream, 0) + len(found.payload)
    assert replies == {stream: len(data) for stream in range(1, 2 * count, 2)}
    peer.close()


@pytest.fixture(scope="session")
def goprobe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/data/goprobe built with Debian's grpc-go (make test installs both)."""
    root = tmp_path_factory.mktemp("goprobe")
    source = root / "src" / "goprobe"
    source.mkdir(parents=True)
    shutil.copy(GOPROBE, source / "main.go")
    env = {**os.environ, "GO111MODULE": "off", "GOPATH": f"{root}:/usr/share/gocode"}
    subprocess.run(
        ["go", "build", "-o", str(root / "goprobe"), "goprobe"], env=env, check=True, timeout=300
    )
    return root / "goprobe"


async def test_grpc_go_health_checks_and_watches(served: Any, goprobe: Path) -> None:
    """Kubelet's grpc probes are grpc-go: its client checks and watches h2grpc's health."""
    _, _, health, port = served
    ext_proc = "envoy.service.ext_proc.v3.ExternalProcessor"
    health.set(ext_proc, health_pb2.HealthCheckResponse.SERVING)
    check = await asyncio.create_subprocess_exec(
        str(goprobe), f"127.0.0.1:{port}", stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(check.communicate(), 60)
    lines = out.decode().splitlines()
    assert lines[:2] == [": SERVING", f"{ext_proc}: SERVING"]
    assert "code = NotFound" in lines[2]
    watch = await asyncio.create_subprocess_exec(
        str(goprobe), f"127.0.0.1:{port}", "watch", stdout=asyncio.subprocess.PIPE
    )
    assert watch.stdout is not None
    try:
        first = await asyncio.wait_for(watch.stdout.readline(), 30)
        assert first.decode().strip() == "SERVING"
        health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        second = await asyncio.wait_for(watch.stdout.readline(), 30)
        assert second.decode().strip() == "NOT_SERVING"
    finally:
        watch.kill()
        await watch.wait()


async def test_a_large_message_and_its_reply_are_copied_few_times() -> None:
    """A 4 MiB message in 64 KiB reads and the same back, fed to a connection without a
    socket: the Python memory it holds at its peak is twice the message (the payloads as
    they came, and the message joined from them once) and two reads more. Each copy of a
    large body is its size again, on the loop that serves every stream."""
    import tracemalloc

    from extproc.transport.server import Connection

    size = 4 * 1024 * 1024
    body = bytes(range(256)) * (size // 256)

    class Written:
        def __init__(self) -> None:
            self.chunks: list[bytes | memoryview] = []

        # What is written is kept as given, not copied: a socket's transport writes it at
        # once, so any copy the connection made for it counts in what it holds.
        def write(self, data: bytes) -> None:
            self.chunks.append(data)

        def writelines(self, data: list[bytes | memoryview]) -> None:
            self.chunks.extend(data)

        def set_write_buffer_limits(self, high: int | None = None) -> None:
            pass

        def get_write_buffer_size(self) -> int:
            return 0

        def is_closing(self) -> bool:
            return False

        def pause_reading(self) -> None:
            pass

        def resume_reading(self) -> None:
            pass

    server = transport.Server(max_message=MAX)
    server.add("/test.Echo/Tally", transport.Method.of_session(Echo().tally, bytes, bytes))
    sent = bytearray(
        PREFACE
        + _frame(h2.SETTINGS, 0, 0, struct.pack(">HI", h2.INITIAL_WINDOW_SIZE, h2.MAX_WINDOW))
        + _frame(h2.WINDOW_UPDATE, 0, 0, struct.pack(">I", h2.MAX_WINDOW - 65535))
        + _frame(h2.HEADERS, h2.END_HEADERS, 1, hpack_request(path_literal(b"/test.Echo/Tally")))
    )
    whole = message(body)
    for at in range(0, len(whole), 16384):
        flags = h2.END_STREAM if at + 16384 >= len(whole) else 0
        sent += _frame(h2.DATA, flags, 1, whole[at : at + 16384])
    reads = [bytes(sent[at : at + 65536]) for at in range(0, len(sent), 65536)]
    del sent, whole
    conn = Connection(server)
    out = Written()
    conn.connection_made(out)  # type: ignore[arg-type]
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        for read in reads:
            conn.data_received(read)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    written = b"".join(out.chunks)
    echoed = b"".join(payload for kind, _, _, payload in frames(written) if kind == h2.DATA)
    assert echoed == message(body)
    assert peak < 2 * size + 2 * 65536, peak / size
    conn.connection_lost(None)
