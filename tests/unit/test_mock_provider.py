"""The embedded mock provider: its formats and its failure knobs, over real HTTP."""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator
from hashlib import sha256

import orjson
import pytest
from aiohttp import ClientPayloadError, ClientSession
from aiohttp.test_utils import TestServer

from extproc.devtools.mock_provider import MockProvider, count_tokens

CHAT = {
    "model": "m-1",
    "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "Hello there, world"},
    ],
}


@pytest.fixture
async def mock() -> AsyncIterator[tuple[ClientSession, str]]:
    server = TestServer(MockProvider().app())
    await server.start_server()
    async with ClientSession() as session:
        yield session, str(server.make_url("")).rstrip("/")
    await server.close()


def sse_events(raw: bytes) -> list[tuple[str | None, bytes]]:
    events = []
    for block in raw.decode().split("\n\n"):
        if not block.strip():
            continue
        name = None
        data = b""
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[len("event: ") :]
            elif line.startswith("data: "):
                data = line[len("data: ") :].encode()
        events.append((name, data))
    return events


async def test_chat_json_echoes_the_last_user_message(mock: tuple[ClientSession, str]) -> None:
    session, url = mock
    async with session.post(
        f"{url}/any/prefix/v1/chat/completions", json=CHAT, headers={"authorization": "Bearer k"}
    ) as reply:
        body = await reply.json()
        assert reply.headers["x-mock-path"] == "/any/prefix/v1/chat/completions"
        assert "x-mock-authorization-sha256" in reply.headers
    assert body["object"] == "chat.completion" and body["model"] == "m-1"
    assert body["choices"][0]["message"] == {
        "role": "assistant",
        "content": "Hello there, world",
        "refusal": None,
    }
    prompt = count_tokens("be brief") + count_tokens("Hello there, world")
    assert body["usage"] == {
        "prompt_tokens": prompt,
        "completion_tokens": count_tokens("Hello there, world"),
        "total_tokens": prompt + count_tokens("Hello there, world"),
    }


async def test_chat_stream_with_and_without_usage(mock: tuple[ClientSession, str]) -> None:
    session, url = mock
    for include_usage in (False, True):
        request = {**CHAT, "stream": True, "stream_options": {"include_usage": include_usage}}
        async with session.post(f"{url}/v1/chat/completions", json=request) as reply:
            assert reply.headers["content-type"] == "text/event-stream"
            events = sse_events(await reply.read())
        assert events[-1] == (None, b"[DONE]")
        chunks = [orjson.loads(data) for _, data in events[:-1]]
        assert (
            "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
            == "Hello there, world"
        )
        assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "stop"
        assert (chunks[-1]["choices"] == [] and "usage" in chunks[-1]) is include_usage
        # As OpenAI writes them: asked for usage, every other chunk ends in a null one.
        others = [data for _, data in events[:-2]] if include_usage else []
        assert all(data.endswith(b',"usage":null}') for data in others)
        assert others or all("usage" not in c for c in chunks)


async def test_anthropic_message_json_and_event_sequence(mock: tuple[ClientSession, str]) -> None:
    session, url = mock
    request = {
        "model": "claude-x",
        "max_tokens": 10,
        "system": "be brief",
        "messages": CHAT["messages"][1:],
    }
    async with session.post(f"{url}/v1/messages", json=request) as reply:
        message = await reply.json()
    assert message["type"] == "message" and message["content"] == [
        {"type": "text", "text": "Hello there, world"}
    ]
    assert message["stop_reason"] == "end_turn" and message["usage"][
        "input_tokens"
    ] == count_tokens("Hello there, world") + count_tokens("be brief")
    async with session.post(f"{url}/v1/messages", json={**request, "stream": True}) as reply:
        events = sse_events(await reply.read())
    names = [name for name, _ in events]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert all(name == "content_block_delta" for name in names[3:-3])
    assert all(orjson.loads(data)["type"] == name for name, data in events)


async def test_embeddings_as_floats_and_base64(mock: tuple[ClientSession, str]) -> None:
    session, url = mock
    async with session.post(
        f"{url}/v1/embeddings", json={"model": "e", "input": ["a", "b"]}
    ) as reply:
        floats = await reply.json()
    async with session.post(
        f"{url}/v1/embeddings", json={"model": "e", "input": "a", "encoding_format": "base64"}
    ) as reply:
        encoded = await reply.json()
    assert [d["index"] for d in floats["data"]] == [0, 1] and len(
        floats["data"][0]["embedding"]
    ) == 8
    assert isinstance(encoded["data"][0]["embedding"], str)


async def test_failure_knobs(mock: tuple[ClientSession, str]) -> None:
    session, url = mock
    async with session.post(
        f"{url}/v1/messages", json=CHAT, headers={"x-mock-status": "529"}
    ) as reply:
        assert reply.status == 529
        assert (await reply.json())["error"]["type"] == "overloaded_error"
    async with session.post(
        f"{url}/v1/chat/completions", json=CHAT, headers={"x-mock-status": "429"}
    ) as reply:
        assert reply.status == 429 and reply.headers["retry-after"] == "1"
    started = time.monotonic()
    async with session.post(
        f"{url}/v1/chat/completions", json=CHAT, headers={"x-mock-delay-ms": "300"}
    ) as reply:
        assert reply.status == 200
    assert time.monotonic() - started >= 0.3
    request = {**CHAT, "stream": True}
    async with session.post(
        f"{url}/v1/chat/completions", json=request, headers={"x-mock-cut-after": "2"}
    ) as reply:
        with pytest.raises(ClientPayloadError):
            await reply.read()
    async with session.post(
        f"{url}/v1/chat/completions", json=request, headers={"x-mock-end-after": "2"}
    ) as reply:
        events = sse_events(await reply.read())  # a whole response, without the final event
    assert len(events) == 2 and all(data != b"[DONE]" for _, data in events)
    omit = {"x-mock-omit-final": "1"}
    async with session.post(f"{url}/v1/chat/completions", json=request, headers=omit) as reply:
        events = sse_events(await reply.read())  # the whole answer, without [DONE]
    assert all(data != b"[DONE]" for _, data in events)
    assert orjson.loads(events[-1][1])["choices"][0]["finish_reason"] == "stop"
    async with session.post(f"{url}/v1/messages", json=request, headers=omit) as reply:
        events = sse_events(await reply.read())
    assert events[-1][0] == "message_delta"


@pytest.mark.parametrize("value", ["²", "١٢", "+5", "5_0"])
async def test_knobs_that_are_no_numbers_are_ignored(
    mock: tuple[ClientSession, str], value: str
) -> None:
    session, url = mock
    knobs = ("x-mock-status", "x-mock-delay-ms", "x-mock-cut-after", "x-mock-chunk-delay-ms")
    request = {**CHAT, "stream": True}
    async with session.post(
        f"{url}/v1/chat/completions", json=request, headers=dict.fromkeys(knobs, value)
    ) as reply:
        assert reply.status == 200
        assert sse_events(await reply.read())[-1] == (None, b"[DONE]")


async def test_stats_count_answers_served_in_full_by_tag(mock: tuple[ClientSession, str]) -> None:
    session, url = mock
    tag = {"x-mock-tag": "counted"}
    async with session.post(f"{url}/v1/chat/completions", json=CHAT, headers=tag) as reply:
        usage = (await reply.json())["usage"]
    streamed = {**CHAT, "stream": True}
    async with session.post(f"{url}/v1/chat/completions", json=streamed, headers=tag) as reply:
        await reply.read()
    failing = {**tag, "x-mock-status": "503"}
    async with session.post(f"{url}/v1/chat/completions", json=CHAT, headers=failing) as reply:
        assert reply.status == 503
    async with session.get(f"{url}/mock/stats") as reply:
        stats = await reply.json()
    assert stats["counted"] == [2, 2 * usage["prompt_tokens"], 2 * usage["completion_tokens"]]


async def test_completions_stream_like_openais_legacy_api(mock: tuple[ClientSession, str]) -> None:
    session, url = mock
    request = {"model": "m", "prompt": "one two", "stream": True}
    for include_usage in (False, True):
        request["stream_options"] = {"include_usage": include_usage}
        async with session.post(f"{url}/openai/deployments/d/completions", json=request) as reply:
            assert reply.headers["content-type"] == "text/event-stream"
            events = sse_events(await reply.read())
        assert events[-1] == (None, b"[DONE]")
        chunks = [orjson.loads(data) for _, data in events[:-1]]
        assert {c["object"] for c in chunks} == {"text_completion"}
        text = "".join(c["choices"][0]["text"] for c in chunks if c["choices"])
        assert text == "one two"
        finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
        assert finishes[-1] == "stop" and set(finishes[:-1]) == {None}
        assert ("usage" in chunks[-1]) is include_usage
        assert all((c.get("usage", 0) is None) is include_usage for c in chunks[:-1])


async def test_every_value_of_a_credential_header_is_reported(
    mock: tuple[ClientSession, str],
) -> None:
    session, url = mock
    headers = [("api-key", "a"), ("api-key", "b"), ("x-api-key", "c")]
    async with session.post(f"{url}/v1/chat/completions", json=CHAT, headers=headers) as reply:
        assert reply.headers["x-mock-azure-api-key-sha256"] == sha256(b"a, b").hexdigest()
        assert reply.headers["x-mock-api-key-sha256"] == sha256(b"c").hexdigest()
        assert "x-mock-authorization-sha256" not in reply.headers


async def test_images_received_are_reported_by_digest(mock: tuple[ClientSession, str]) -> None:
    """Either API's base64 images, hashed in order, and the body's size: what a test needs
    to see that a large multimodal request arrived whole."""
    session, url = mock
    openai = {
        "model": "m-1",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                    {"type": "image_url", "image_url": {"url": "https://x.test/a.png"}},
                    {"type": "image_url", "image_url": {"url": "data:image/gif;base64,BBBB"}},
                ],
            }
        ],
    }
    anthropic = {
        "model": "m-1",
        "max_tokens": 8,
        "messages": [
            {
                "role": "user",
                "content": [
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"},
                    },
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/gif", "data": "BBBB"},
                    },
                ],
            }
        ],
    }
    expected = hashlib.sha256(b"AAAABBBB").hexdigest()
    for path, body in (("/v1/chat/completions", openai), ("/v1/messages", anthropic)):
        raw = orjson.dumps(body)
        async with session.post(f"{url}{path}", data=raw) as reply:
            assert reply.status == 200
            assert reply.headers["x-mock-images-sha256"] == expected
            assert reply.headers["x-mock-body-bytes"] == str(len(raw))
    async with session.post(f"{url}/v1/chat/completions", json=CHAT) as reply:
        assert "x-mock-images-sha256" not in reply.headers
