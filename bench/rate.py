"""Latency at a fixed request rate (open loop), and time to first token of streamed replies.

wrk measures a saturated gateway; this measures one that is not. Requests start on a fixed
schedule (RATE per second) whether or not earlier ones have finished, so a slow reply
cannot hold back the next request and hide its own delay (no coordinated omission): each
latency runs from the request's scheduled start. Every request runs on a kept-alive
connection from a pool that grows when all are busy, up to
MAX_CONNECTIONS.

For a streamed request, the time to first token is the time to the first body bytes (the
first SSE event); the latency is the time to the end of the stream.

The client is a bare HTTP/1.1 protocol on uvloop, like the benchmark's upstream: it runs on
the same two cores as the gateway it measures. aiohttp on asyncio's loop took ~1.3-1.5 ms of
CPU per streamed request (16 words, 20 events), as much as Envoy alone, and its own loop's
delays were part of every first byte (Envoy alone's rose from ~1.3 to ~2.3 ms); this one
takes ~0.6 ms (AMD EPYC host).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import uvloop

from extproc.digits import strict_int

MAX_HEAD = 64 * 1024
# Connections open at most: past the rate a gateway sustains, requests wait for one (their
# latency still runs from their scheduled start) instead of opening thousands.
MAX_CONNECTIONS = 256


class ResponseError(Exception):
    """The response was not a complete HTTP/1.1 answer."""


class _Response:
    """One response, parsed as its bytes arrive: status, when its body began, when it ended."""

    __slots__ = ("_body", "_chunked", "_head", "_remaining", "done", "first_at", "status")

    def __init__(self) -> None:
        self.status = 0
        self.first_at = 0.0
        self.done = False
        self._head = True
        self._body = bytearray()
        self._remaining = 0  # content-length left, or the current chunk's bytes left
        self._chunked = False

    def feed(self, data: bytes, now: float) -> bytes:
        """Take the response's bytes from `data`; the bytes after its end (if any)."""
        buffer = self._body
        buffer += data
        if self._head:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > MAX_HEAD:
                    raise ResponseError("response head too large")
                return b""
            lines = bytes(buffer[:end]).decode("latin-1").split("\r\n")
            del buffer[: end + 4]
            parts = lines[0].split(" ", 2)
            status = strict_int(parts[1], 999) if len(parts) > 1 else None
            if status is None:
                raise ResponseError(f"bad status line {lines[0]!r}")
            self.status = status
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            self._head = False
            self._chunked = headers.get("transfer-encoding", "").lower() == "chunked"
            if not self._chunked:
                self._remaining = int(headers.get("content-length", "0"))
                if self._remaining == 0:
                    self.done = True
                    self.first_at = now
                    return bytes(buffer)
            else:
                self._remaining = -1  # a chunk-size line comes next
        if not self._chunked:
            if buffer and not self.first_at:
                self.first_at = now
            taken = min(self._remaining, len(buffer))
            self._remaining -= taken
            del buffer[:taken]
            if self._remaining == 0:
                self.done = True
                return bytes(buffer)
            return b""
        return self._chunks(buffer, now)

    def _chunks(self, buffer: bytearray, now: float) -> bytes:
        while True:
            if self._remaining < 0:  # a chunk-size line, or the end's trailers
                line_end = buffer.find(b"\r\n")
                if line_end < 0:
                    return b""
                line = bytes(buffer[:line_end])
                del buffer[: line_end + 2]
                if self._remaining == -2:  # after the last chunk: trailers until an empty line
                    if not line:
                        self.done = True
                        return bytes(buffer)
                    continue
                size = int(line.split(b";")[0], 16)
                self._remaining = size + 2 if size else -2  # the data and its CRLF
                continue
            if not buffer:
                return b""
            if not self.first_at:
                self.first_at = now
            taken = min(self._remaining, len(buffer))
            self._remaining -= taken
            del buffer[:taken]
            if self._remaining == 0:
                self._remaining = -1


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.BaseTransport | None = None
        self.response: _Response | None = None
        self.finished: asyncio.Future[_Response] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        response, finished = self.response, self.finished
        if response is None or finished is None or finished.done():
            return
        try:
            response.feed(data, now)
        except (ResponseError, ValueError) as error:
            finished.set_exception(ResponseError(str(error)))
            return
        if response.done:
            self.response = None
            finished.set_result(response)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.finished is not None and not self.finished.done():
            self.finished.set_exception(ResponseError("connection closed before the end"))

    def send(self, request: bytes) -> asyncio.Future[_Response]:
        assert self.transport is not None
        self.response = _Response()
        self.finished = asyncio.get_running_loop().create_future()
        self.transport.write(request)  # type: ignore[attr-defined]
        return self.finished


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


# The body of the request of each index (from 0; the warm-up's are negative).
Bodies = Callable[[int], bytes]


def _request(url: str, body: bytes, extra: dict[str, str] | None) -> tuple[str, int, bytes]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    headers = {
        "host": f"{host}:{port}",
        "content-type": "application/json",
        "content-length": str(len(body)),
        **(extra or {}),
    }
    head = f"POST {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return host, port, head.encode("latin-1") + b"\r\n" + body


async def _run(
    url: str, bodies: Bodies, rate: float, seconds: float, extra: dict[str, str] | None
) -> dict[str, float]:
    total: list[float] = []
    first: list[float] = []
    errors = 0
    host, port, _ = _request(url, b"", extra)
    loop = asyncio.get_running_loop()
    idle: list[_Connection] = []
    opened: list[_Connection] = []
    in_flight = asyncio.Semaphore(MAX_CONNECTIONS)

    async def one(scheduled: float, index: int) -> None:
        async with in_flight:
            await send(scheduled, index)

    async def send(scheduled: float, index: int) -> None:
        nonlocal errors
        connection = None
        while idle:
            candidate = idle.pop()
            if candidate.transport is not None:
                connection = candidate
                break
        try:
            if connection is None:
                transport, connection = await loop.create_connection(_Connection, host, port)
                connection.transport = transport  # connection_made may not have run yet
                opened.append(connection)
            response = await connection.send(_request(url, bodies(index), extra)[2])
        except (OSError, ResponseError):
            errors += 1
            return
        done_at = time.perf_counter()
        idle.append(connection)
        if response.status != 200:
            errors += 1
            return
        first.append(response.first_at - scheduled)
        total.append(done_at - scheduled)

    try:
        # Warm-up: connections open and the gateway's caches fill.
        await asyncio.gather(*(one(time.perf_counter(), -1 - i) for i in range(20)))
        total.clear()
        first.clear()
        errors = 0
        count = int(rate * seconds)
        cpu = time.process_time()
        start = time.perf_counter() + 0.05
        tasks = []
        for index in range(count):
            scheduled = start + index / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(scheduled, index)))
        await asyncio.gather(*tasks)
        cpu = time.process_time() - cpu
    finally:
        for connection in opened:
            if connection.transport is not None:
                connection.transport.close()
    if not total:
        raise RuntimeError(f"no request to {url} succeeded ({errors} errors)")
    return {
        "requests": float(count),
        "errors": float(errors),
        "p50_ms": statistics.median(total) * 1e3,
        "p99_ms": percentile(total, 0.99) * 1e3,
        "first_p50_ms": statistics.median(first) * 1e3,
        "first_p99_ms": percentile(first, 0.99) * 1e3,
        # This client's own CPU per request (all schedules run at once share it).
        "client_cpu_us": cpu / count * 1e6,
        "connections": float(len(opened)),
    }


def fixed_rate(
    url: str, body: bytes, rate: float, seconds: float, headers: dict[str, str] | None = None
) -> dict[str, float]:
    """Send `body` to `url` at `rate` requests per second for `seconds`; latencies in ms."""
    return uvloop.run(_run(url, lambda _: body, rate, seconds, headers))


# (url, bodies, rate, headers) of one schedule.
Schedule = tuple[str, Bodies, float, dict[str, str] | None]


def fixed_rates(schedules: list[Schedule], seconds: float) -> list[dict[str, float]]:
    """Run the schedules at once for `seconds`; each one's latencies, as fixed_rate's."""

    async def all_of() -> list[dict[str, float]]:
        runs = (_run(url, bodies, rate, seconds, extra) for url, bodies, rate, extra in schedules)
        return list(await asyncio.gather(*runs))

    return uvloop.run(all_of())
