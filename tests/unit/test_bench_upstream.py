"""The benchmarks' upstream (bench/upstream.py): the mock provider's answers, replayed."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from extproc.control.stack import free_port
from tests.helpers import bench_script

upstream = bench_script("upstream")

CHAT = json.dumps(
    {"model": "m", "messages": [{"role": "user", "content": "one two three"}]}
).encode()


def _request(path: str, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "host: bench", "content-type: application/json"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if "transfer-encoding" in (headers or {}):
        half = len(body) // 2
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in (body[:half], body[half:]))
        return "\r\n".join(lines).encode() + b"\r\n\r\n" + chunks + b"0\r\n\r\n"
    lines.append(f"content-length: {len(body)}")
    return "\r\n".join(lines).encode() + b"\r\n\r\n" + body


async def _response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    status = int(head[0].split()[1])
    headers = {}
    for line in head[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            chunk = await reader.readexactly(size + 2)
            if not size:
                return status, headers, body
            body += chunk[:-2]
    return status, headers, await reader.readexactly(int(headers["content-length"]))


Replay = tuple[Any, asyncio.StreamReader, asyncio.StreamWriter]


@pytest.fixture
async def replay() -> AsyncIterator[Replay]:
    """The upstream on a free port, and a connection to it."""
    server = upstream.Upstream()
    port = free_port()
    await server.start(port)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    yield server, reader, writer
    writer.close()
    await server.close()


async def test_answers_are_the_mocks_and_repeat_from_memory(replay: Replay) -> None:
    server, reader, writer = replay
    stream = json.dumps({**json.loads(CHAT), "stream": True}).encode()
    # Pipelined on one connection, the second of each kind replayed: answers in order.
    writer.write(
        _request("/v1/chat/completions", CHAT)
        + _request("/v1/chat/completions", stream)
        + _request("/v1/chat/completions", CHAT)
        + _request("/v1/chat/completions", stream, {"transfer-encoding": "chunked"})
        + _request("/v1/chat/completions", CHAT, {"x-mock-status": "503"})
    )
    first = await _response(reader)
    first_stream = await _response(reader)
    again = await _response(reader)
    again_stream = await _response(reader)
    failed = await _response(reader)
    assert first[0] == 200 and first[1]["content-type"].startswith("application/json")
    answer = json.loads(first[2])
    assert answer["choices"][0]["message"]["content"] == "one two three"
    assert answer["usage"]["completion_tokens"] == 4  # the mock's count: (13 + 3) // 4
    assert again == first
    assert first_stream[1]["content-type"].startswith("text/event-stream")
    events = [e for e in first_stream[2].split(b"\n\n") if e]
    assert events[-1] == b"data: [DONE]"
    assert len(events) == 3 + 3  # role, three words, finish, [DONE]
    assert again_stream[2] == first_stream[2]  # a chunked request body, the same key
    assert failed[0] == 503 and json.loads(failed[2])["error"]["message"]
    assert len(server.answers) == 3  # JSON, stream, and the 503 kept apart


async def test_a_paced_stream_is_replayed_at_its_pace(replay: Replay) -> None:
    _, reader, writer = replay
    stream = json.dumps({**json.loads(CHAT), "stream": True}).encode()
    paced = _request("/v1/chat/completions", stream, {"x-mock-chunk-delay-ms": "30"})
    writer.write(paced)
    recorded = await _response(reader)
    loop = asyncio.get_running_loop()
    started = loop.time()
    writer.write(paced + _request("/v1/chat/completions", CHAT))
    replayed = await _response(reader)
    elapsed = loop.time() - started
    after = await _response(reader)  # the next request waited for the stream's end
    assert replayed == recorded
    assert elapsed >= 5 * 0.03  # six events, five pauses
    assert json.loads(after[2])["choices"][0]["message"]["content"] == "one two three"


async def test_gzip_only_for_a_client_that_accepts_it(replay: Replay) -> None:
    _, reader, writer = replay
    writer.write(
        _request("/v1/messages", CHAT.replace(b'"m"', b'"m", "max_tokens": 5'))
        + _request(
            "/v1/messages",
            CHAT.replace(b'"m"', b'"m", "max_tokens": 5'),
            {"accept-encoding": "gzip"},
        )
    )
    plain = await _response(reader)
    packed = await _response(reader)
    assert "content-encoding" not in plain[1]
    assert packed[1]["content-encoding"] == "gzip"
    plain_answer, packed_answer = json.loads(plain[2]), json.loads(gzip.decompress(packed[2]))
    assert plain_answer["content"] == packed_answer["content"]
    assert plain_answer["content"][0]["text"] == "one two three"
