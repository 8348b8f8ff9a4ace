"""The fixed-rate client (bench/rate.py): its HTTP/1.1 response parsing and its timings."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from extproc.control.stack import free_port
from tests.helpers import bench_script

rate = bench_script("rate")

HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
EVENTS = [b"data: one\n\n", b"data: two\n\n", b"data: [DONE]\n\n"]
CHUNKED = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(e), e) for e in EVENTS) + b"0\r\n\r\n"


def _feed_bytewise(response: object, data: bytes) -> tuple[float | None, bytes]:
    """Feed one byte at a time, the clock being the byte's index; (done at, leftover)."""
    for index in range(len(data)):
        rest = response.feed(data[index : index + 1], float(index + 1))  # type: ignore[attr-defined]
        if response.done:  # type: ignore[attr-defined]
            return float(index + 1), rest + data[index + 1 :]
    return None, b""


def test_a_chunked_stream_fed_bytewise_has_its_first_body_byte_and_its_end() -> None:
    response = rate._Response()
    done_at, rest = _feed_bytewise(response, HEAD + CHUNKED + b"HTTP/1.1")
    assert response.status == 200
    # The first data byte follows the head and the first chunk-size line (8 bytes).
    assert response.first_at == len(HEAD) + len(b"b;ext=1\r\n") + 1
    assert done_at == len(HEAD) + len(CHUNKED)
    assert rest == b"HTTP/1.1"


def test_a_chunked_stream_in_one_piece_ends_with_trailers() -> None:
    response = rate._Response()
    body = CHUNKED[: -len(b"\r\n")] + b"x-trailer: 1\r\n\r\n"
    assert response.feed(HEAD + body, 5.0) == b""
    assert response.done and response.first_at == 5.0


def test_a_content_length_body_ends_at_its_length() -> None:
    response = rate._Response()
    head = b"HTTP/1.1 429 Too Many\r\nContent-Length: 5\r\n\r\n"
    done_at, rest = _feed_bytewise(response, head + b"12345extra")
    assert response.status == 429
    assert response.first_at == len(head) + 1
    assert done_at == len(head) + 5
    assert rest == b"extra"


def test_an_empty_body_is_done_with_its_head() -> None:
    response = rate._Response()
    response.feed(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n", 2.0)
    assert response.done and response.status == 204


@pytest.mark.parametrize("head", [b"garbage\r\n\r\n", b"HTTP/1.1 abc\r\n\r\n"])
def test_a_malformed_head_is_an_error(head: bytes) -> None:
    with pytest.raises(rate.ResponseError):
        rate._Response().feed(head, 1.0)


class _SlowStreams(asyncio.Protocol):
    """Answers each request with its head at once and its events 20 ms later; a request
    carrying x-fail gets a 500."""

    def __init__(self) -> None:
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head = self.buffer[:end].lower()
            length = int(head.split(b"content-length: ")[1].split(b"\r\n")[0])
            self.buffer = self.buffer[end + 4 + length :]
            if b"x-fail" in head:
                self.transport.write(  # type: ignore[attr-defined]
                    b"HTTP/1.1 500 Oops\r\ncontent-length: 2\r\n\r\n{}"
                )
                continue
            self.transport.write(HEAD)  # type: ignore[attr-defined]
            asyncio.get_running_loop().call_later(
                0.02,
                self.transport.write,  # type: ignore[attr-defined]
                CHUNKED,
            )


@pytest.fixture
def server() -> Iterator[str]:
    loop = asyncio.new_event_loop()
    port = free_port()
    started = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        server = loop.run_until_complete(loop.create_server(_SlowStreams, "127.0.0.1", port))
        started.set()
        loop.run_forever()
        server.close()
        loop.run_until_complete(server.wait_closed())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert started.wait(5)
    yield f"http://127.0.0.1:{port}/v1/chat/completions"
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


def test_first_byte_is_the_first_event_not_the_head(server: str) -> None:
    result = rate.fixed_rate(server, b'{"stream": true}', rate=100, seconds=0.3)
    assert result["requests"] == 30 and result["errors"] == 0
    assert 20 <= result["first_p50_ms"] < 200
    assert result["p50_ms"] >= result["first_p50_ms"]


def test_error_statuses_count_as_errors(server: str) -> None:
    with pytest.raises(RuntimeError, match="no request"):
        rate.fixed_rate(server, b"{}", rate=50, seconds=0.2, headers={"x-fail": "1"})
