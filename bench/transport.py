"""`make bench-transport`: the ext_proc transport's own CPU per message, without Envoy.

Runs bench/bare_h2grpc.py (the bare ext_proc on h2grpc, uvloop) and drives it from raw
HTTP/2 frames, as Envoy does: one connection, one gRPC stream per request, the same
header block on every stream, four ext_proc messages per stream (request headers and
body, response headers, one response chunk), each sent once the previous one's reply
arrived. STREAMS streams run side by side (default 16, the benchmark's connections), for
TRANSPORT_SECONDS seconds per round (default 5), TRANSPORT_ROUNDS rounds (default 5). The
server's CPU per message is read from /proc.

Then the same frames without sockets: 5,000 streams fed to one connection in 64 KiB
reads, its writes dropped, timed with process_time in this process: the frames' parsing,
the flow control and limits, the session's answers, no system calls (steadier on a busy
machine). Figures are printed, not asserted.
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import hpack
import uvloop
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ext

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench.run import chat_body, cpu_seconds, machine  # noqa: E402
from extproc.control.stack import free_port, wait_until  # noqa: E402

if TYPE_CHECKING:
    from extproc.transport import Server

SECONDS = float(os.environ.get("TRANSPORT_SECONDS", "5"))
ROUNDS = int(os.environ.get("TRANSPORT_ROUNDS", "5"))
STREAMS = int(os.environ.get("STREAMS", "16"))
PATH = "/envoy.service.ext_proc.v3.ExternalProcessor/Process"
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE = 0, 1, 3, 4, 6, 7, 8
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4
MAX_WINDOW = 2**31 - 1


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return struct.pack(">BHBBI", len(payload) >> 16, len(payload) & 0xFFFF, kind, flags, stream) + (
        payload
    )


# A client connection's first bytes: the preface, and the largest windows HTTP/2 allows
# (Envoy's default is 256 MiB), so that the replies never wait for one.
OPENING = (
    PREFACE
    + frame(SETTINGS, 0, 0, struct.pack(">HI", 0x4, MAX_WINDOW))
    + frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", MAX_WINDOW - 65535))
)


# What the service reads from its socket at most at once, and the largest frame Envoy sends.
READ = 64 * 1024
MAX_FRAME = 16 * 1024


def data_frames(stream: int, data: bytes, last: bool) -> bytes:
    """A message's DATA frames, each of at most MAX_FRAME bytes; END_STREAM on the last
    when `last`."""
    cuts = range(0, max(len(data), 1), MAX_FRAME)
    return b"".join(
        frame(DATA, END_STREAM if last and at == cuts[-1] else 0, stream, data[at : at + MAX_FRAME])
        for at in cuts
    )


def in_reads(data: bytes) -> list[bytes]:
    """A connection's bytes as its socket gives them: reads of at most READ."""
    return [data[at : at + READ] for at in range(0, len(data), READ)]


def message(request: ext.ProcessingRequest) -> bytes:
    """A gRPC message as Envoy's ext_proc filter sends it: with its metadata context, empty
    where no namespace is forwarded."""
    request.metadata_context.SetInParent()
    body: bytes = request.SerializeToString()
    return struct.pack(">BI", 0, len(body)) + body


def headers(pairs: dict[str, str]) -> base_pb2.HeaderMap:
    return base_pb2.HeaderMap(
        headers=[base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in pairs.items()]
    )


# Envoy's request headers for an ext_proc stream.
FIELDS = [
    (":method", "POST"),
    (":scheme", "http"),
    (":path", PATH),
    (":authority", "extproc"),
    ("content-type", "application/grpc"),
    ("te", "trailers"),
    ("grpc-timeout", "2000m"),
]
# The request headers Envoy sends the ext_proc for a chat request.
CHAT_REQUEST = {
    ":method": "POST",
    ":path": "/v1/chat/completions",
    ":authority": "127.0.0.1:10000",
    "content-type": "application/json",
    "x-request-id": "4d3c2b1a-0000-4000-8000-000000000000",
}
# What Envoy sends for a 1 KB chat request and its streamed answer.
MESSAGES = [
    message(ext.ProcessingRequest(request_headers=ext.HttpHeaders(headers=headers(CHAT_REQUEST)))),
    message(
        ext.ProcessingRequest(request_body=ext.HttpBody(body=chat_body(1024), end_of_stream=True))
    ),
    message(
        ext.ProcessingRequest(
            response_headers=ext.HttpHeaders(
                headers=headers({":status": "200", "content-type": "text/event-stream"})
            )
        )
    ),
    message(
        ext.ProcessingRequest(
            response_body=ext.HttpBody(body=b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\n')
        )
    ),
]


class Client(asyncio.Protocol):
    """STREAMS streams at a time, each sending its messages one reply at a time."""

    def __init__(self) -> None:
        encoder = hpack.Encoder()
        self.first_block = encoder.encode(FIELDS)
        self.block = encoder.encode(FIELDS)  # every later stream's: all indexed
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.next_id = 1
        self.step: dict[int, int] = {}
        self.messages = 0
        self.send_window = 65535
        self.stream_window = 65535
        self.stream_windows: dict[int, int] = {}
        self.done = asyncio.get_running_loop().create_future()
        self.running = True
        self.received = 0  # DATA bytes since our last connection WINDOW_UPDATE

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        out = OPENING
        for _ in range(STREAMS):
            out += self.open()
        self.transport.write(out)  # type: ignore[union-attr]

    def open(self) -> bytes:
        stream = self.next_id
        self.next_id += 2
        self.step[stream] = 0
        self.stream_windows[stream] = self.stream_window
        block = self.first_block if stream == 1 else self.block
        return frame(HEADERS, END_HEADERS, stream, block) + self.data(stream, MESSAGES[0])

    def data(self, stream: int, payload: bytes, flags: int = 0) -> bytes:
        size = len(payload)
        if size > self.send_window or size > self.stream_windows[stream]:
            raise RuntimeError("the server's flow-control window is exhausted")
        self.send_window -= size
        self.stream_windows[stream] -= size
        return frame(DATA, flags, stream, payload)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        out = bytearray()
        offset = 0
        while len(buffer) - offset >= 9:
            high, low, kind, flags, stream = struct.unpack_from(">BHBBI", buffer, offset)
            end = offset + 9 + (high << 16 | low)
            if end > len(buffer):
                break
            payload = bytes(buffer[offset + 9 : end])
            offset = end
            if kind == SETTINGS and not flags & ACK:
                out += frame(SETTINGS, ACK, 0)
                for at in range(0, len(payload), 6):
                    key, value = struct.unpack_from(">HI", payload, at)
                    if key == 0x4:
                        self.stream_window = value
            elif kind == WINDOW_UPDATE:
                increment = struct.unpack(">I", payload)[0]
                if stream == 0:
                    self.send_window += increment
                elif stream in self.stream_windows:
                    self.stream_windows[stream] += increment
            elif kind == DATA and payload:
                self.received += len(payload)
                if self.received > MAX_WINDOW // 2:
                    out += frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", self.received))
                    self.received = 0
                self.messages += 1
                step = self.step[stream] + 1
                self.step[stream] = step
                if step < len(MESSAGES):
                    last = step == len(MESSAGES) - 1
                    out += self.data(stream, MESSAGES[step], END_STREAM if last else 0)
            elif kind == HEADERS and flags & END_STREAM:
                del self.step[stream]
                del self.stream_windows[stream]
                if self.running:
                    out += self.open()
                elif not self.step:
                    self.done.set_result(None)
            elif kind in (RST_STREAM, GOAWAY):
                raise RuntimeError(f"the server sent frame type {kind}: {payload!r}")
        del buffer[:offset]
        if out and self.transport is not None:
            self.transport.write(bytes(out))


class _Dropped:
    """A transport that takes every write and never fills."""

    def write(self, data: bytes) -> None:
        pass

    def writelines(self, data: list[bytes | memoryview]) -> None:
        for piece in data:
            self.write(piece)  # type: ignore[arg-type]

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


def frames_of(streams: int) -> bytes:
    encoder = hpack.Encoder()
    first, again = encoder.encode(FIELDS), encoder.encode(FIELDS)
    out = bytearray(OPENING)
    for index in range(streams):
        stream = 2 * index + 1
        out += frame(HEADERS, END_HEADERS, stream, first if index == 0 else again)
        for step, data in enumerate(MESSAGES):
            out += frame(DATA, END_STREAM if step == len(MESSAGES) - 1 else 0, stream, data)
    return bytes(out)


def bare_server() -> Server:
    """The bare h2grpc ext_proc's server (bench/bare_h2grpc.py), to feed in process."""
    from bare_h2grpc import Bare  # type: ignore[import-not-found]

    from extproc import transport

    server = transport.Server()
    server.add(
        PATH,
        transport.Method.of_session(
            lambda context: Bare(),
            ext.ProcessingRequest.FromString,
            ext.ProcessingResponse.SerializeToString,
        ),
    )
    return server


async def in_process(streams: int = 5000) -> float:
    """Server CPU per message with no sockets: µs."""
    from extproc.transport.server import Connection

    server = bare_server()
    data = frames_of(streams)
    reads = [data[at : at + 65536] for at in range(0, len(data), 65536)]
    conn = Connection(server)
    conn.connection_made(_Dropped())  # type: ignore[arg-type]
    started = time.process_time()
    for read in reads:
        conn.data_received(read)
    spent = time.process_time() - started
    assert not conn.streams, "every stream answered"
    conn.connection_lost(None)
    return spent * 1e6 / (streams * len(MESSAGES))


async def measure(port: int, pid: int) -> tuple[float, int]:
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(Client, "127.0.0.1", port)
    await asyncio.sleep(0.5)  # warm-up
    cpu, messages = cpu_seconds(pid), client.messages
    await asyncio.sleep(SECONDS)
    cpu, messages = cpu_seconds(pid) - cpu, client.messages - messages
    client.running = False
    await asyncio.wait_for(client.done, 10)
    assert client.transport is not None
    client.transport.close()
    return cpu * 1e6 / messages, messages


def main() -> None:
    print(machine())
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "bare_h2grpc.py"), f"127.0.0.1:{port}"]
    )
    try:
        wait_until(lambda: _listening(port), 30, "the bare ext_proc", server)
        results = []
        for index in range(ROUNDS):
            per_message, count = uvloop.run(measure(port, server.pid))
            results.append(per_message)
            print(
                f"round {index + 1}: {per_message:.1f} µs of server CPU per message"
                f" ({count:,} messages)"
            )
        print(
            f"\nbare h2grpc ext_proc, {STREAMS} streams side by side: median"
            f" {statistics.median(results):.1f} µs per message (min {min(results):.1f},"
            f" max {max(results):.1f})"
        )
        alone = [uvloop.run(in_process()) for _ in range(ROUNDS)]
        print(
            f"the same frames without sockets: median {statistics.median(alone):.1f} µs per"
            f" message (min {min(alone):.1f}, max {max(alone):.1f})"
        )
    finally:
        server.terminate()
        server.wait()


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


if __name__ == "__main__":
    main()
