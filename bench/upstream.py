"""The benchmarks' upstream: the mock provider's answers, replayed from memory.

The mock provider (aiohttp) costs ~75-120 µs of CPU per request, on the same two cores as
the gateway it is meant to measure. This server answers the same requests with the same
bytes for ~20 µs: the first time it sees a request (method, path, body and the headers the
mock reads) it asks an in-process mock provider and records the answer; after that it
replays it on its own HTTP/1.1 loop. A stream is replayed one event per write, as the mock
sends it, and with the mock's x-mock-chunk-delay-ms that long between events (a provider's
pace). With an MCP server's URL as well, requests on `/mcp` paths are recorded from that
server instead (its JSON answers; a tools/call of the same bytes answered the same), so an
MCP call costs the benchmark's upstream what a chat request does. Usage:
python bench/upstream.py PORT [MCP_URL]
"""

from __future__ import annotations

import asyncio
import http
import socket
import sys
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from extproc.devtools.mock_provider import MockProvider
from extproc.digits import strict_int

# The request headers that change the mock's answer (its x-mock-* switches; gzip).
_KEYED = ("accept-encoding", "x-bench-answer")
# With this header, requests of one path and value share the answer recorded for the first
# of them, whatever their bodies: a benchmark sending a new body every time is answered
# from memory rather than by the mock.
SHARED = "x-bench-answer"
# Not passed on to the mock: hop-by-hop, or set by the client library.
_HOP = frozenset({"host", "connection", "content-length", "transfer-encoding", "keep-alive"})
MAX_RECORDED = 256  # distinct answers kept; requests past that are always asked afresh
MAX_HEAD = 64 * 1024


@dataclass(frozen=True, slots=True)
class Answer:
    head: bytes  # status line and headers
    writes: tuple[bytes, ...]  # the body as written: one piece, or one per SSE event


def _key(method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[object, ...]:
    switches = tuple(
        sorted((k, v) for k, v in headers.items() if k.startswith("x-mock-") or k in _KEYED)
    )
    return (method, path, switches, b"" if SHARED in headers else body)


def record(status: int, headers: list[tuple[str, str]], body: bytes) -> Answer:
    """The mock's answer as this server writes it: a stream chunked one event per write,
    anything else with its length."""
    reason = http.HTTPStatus(status).phrase if status in http.HTTPStatus._value2member_map_ else ""
    kept = [
        (name, value)
        for name, value in headers
        if name.lower() not in _HOP and name.lower() not in ("date", "server")
    ]
    streamed = any(
        n.lower() == "content-type" and v.startswith("text/event-stream") for n, v in kept
    )
    lines = [f"HTTP/1.1 {status} {reason}".encode()]
    lines += [f"{name}: {value}".encode("latin-1") for name, value in kept]
    if not streamed:
        lines.append(f"content-length: {len(body)}".encode())
        return Answer(b"\r\n".join(lines) + b"\r\n\r\n", (body,))
    lines.append(b"transfer-encoding: chunked")
    events = [event + b"\n\n" for event in body.split(b"\n\n") if event]
    writes = [b"%x\r\n%s\r\n" % (len(event), event) for event in events]
    writes.append(b"0\r\n\r\n")
    return Answer(b"\r\n".join(lines) + b"\r\n\r\n", tuple(writes))


class Replay(asyncio.Protocol):
    """One client connection: HTTP/1.1 requests in (content-length or chunked bodies),
    answers out in request order."""

    def __init__(self, server: Upstream) -> None:
        self.server = server
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.pending: asyncio.Task[None] | None = None  # an answer being recorded

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.pending is None:
            self.serve()

    def serve(self) -> None:
        while (request := self.parse()) is not None:
            method, path, headers, body = request
            key = _key(method, path, headers, body)
            answer = self.server.answers.get(key) if method == "POST" else None
            if answer is None:
                # Asked of the mock; the requests behind this one wait for its answer.
                self.pending = asyncio.ensure_future(self.ask(key, method, path, headers, body))
                return
            pause = strict_int(headers.get("x-mock-chunk-delay-ms", ""))
            if pause and len(answer.writes) > 1:
                self.pending = asyncio.ensure_future(self.paced(answer, pause / 1000))
                return
            self.write(answer)

    async def ask(
        self, key: tuple[object, ...], method: str, path: str, headers: dict[str, str], body: bytes
    ) -> None:
        try:
            answer = await self.server.ask(method, path, headers, body)
        except (TimeoutError, aiohttp.ClientError):
            answer = record(502, [("content-type", "text/plain")], b"mock provider failed")
        if method == "POST" and len(self.server.answers) < MAX_RECORDED:
            self.server.answers[key] = answer
        self.pending = None
        self.write(answer)
        self.serve()

    async def paced(self, answer: Answer, pause: float) -> None:
        assert self.transport is not None
        self.transport.write(answer.head + answer.writes[0])
        for piece in answer.writes[1:]:
            await asyncio.sleep(pause)
            if self.transport.is_closing():
                return
            self.transport.write(piece)
        self.pending = None
        self.serve()

    def write(self, answer: Answer) -> None:
        assert self.transport is not None
        if self.transport.is_closing():
            return
        self.transport.write(answer.head + answer.writes[0])
        for piece in answer.writes[1:]:
            self.transport.write(piece)

    def parse(self) -> tuple[str, str, dict[str, str], bytes] | None:
        """The next complete request in the buffer (removed from it), or None."""
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buffer) > MAX_HEAD and self.transport is not None:
                self.transport.close()
            return None
        lines = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        start = end + 4
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = bytearray()
            position = start
            while True:
                line_end = self.buffer.find(b"\r\n", position)
                if line_end < 0:
                    return None
                size = int(bytes(self.buffer[position:line_end]).split(b";")[0], 16)
                chunk_start = line_end + 2
                if len(self.buffer) < chunk_start + size + 2:
                    return None
                if size == 0:
                    trailer_end = self.buffer.find(b"\r\n\r\n", line_end)
                    if trailer_end < 0:
                        return None
                    del self.buffer[: trailer_end + 4]
                    return method, path, headers, bytes(body)
                body += self.buffer[chunk_start : chunk_start + size]
                position = chunk_start + size + 2
        length = int(headers.get("content-length", "0") or 0)
        if len(self.buffer) < start + length:
            return None
        body_bytes = bytes(self.buffer[start : start + length])
        del self.buffer[: start + length]
        return method, path, headers, body_bytes


class Upstream:
    def __init__(self) -> None:
        self.answers: dict[tuple[object, ...], Answer] = {}
        self.mock_url = ""
        self.mcp_url = ""  # the MCP server /mcp paths are recorded from, if any
        self.session: aiohttp.ClientSession | None = None
        self.runner: web.AppRunner | None = None
        self.server: asyncio.Server | None = None

    async def start(self, port: int) -> None:
        self.runner = runner = web.AppRunner(MockProvider().app())
        await runner.setup()
        listening = socket.socket()
        listening.bind(("127.0.0.1", 0))
        await web.SockSite(runner, listening).start()
        self.mock_url = f"http://127.0.0.1:{listening.getsockname()[1]}"
        self.session = aiohttp.ClientSession(auto_decompress=False)
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: Replay(self), "127.0.0.1", port)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        if self.session is not None:
            await self.session.close()
        if self.runner is not None:
            await self.runner.cleanup()

    async def ask(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Answer:
        assert self.session is not None
        # The host the client asked for, as the mock reports it (x-mock-host).
        sent = {k: v for k, v in headers.items() if k not in _HOP or k == "host"}
        origin = self.mock_url + path
        if self.mcp_url and path.startswith("/mcp"):
            origin = self.mcp_url
        async with self.session.request(
            method,
            origin,
            data=body,
            headers=sent,
            # The mock compresses for a client that accepts gzip: only when this one did.
            skip_auto_headers=("accept-encoding", "user-agent", "content-type"),
            timeout=aiohttp.ClientTimeout(30),
        ) as response:
            data = await response.read()
            return record(response.status, list(response.headers.items()), data)


async def main(port: int, mcp_url: str) -> None:
    upstream = Upstream()
    upstream.mcp_url = mcp_url
    await upstream.start(port)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else ""))
