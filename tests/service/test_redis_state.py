"""Conversation state in Redis against a real redis-server: shared by replicas, kept apart
by tenant, bounded, and failing with one error when Redis is gone."""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from extproc.state.redis_store import RedisStateStore
from extproc.state.store import StateStoreError
from extproc.state.turns import Bounds, Dropped, Over, Turn, new_response_id
from tests.conftest import RedisServer

BOUNDS = Bounds(ttl=3600, max_items=100, max_bytes=64 * 1024)


def turn(response_id: str, text: str = "hello", age: int = 0) -> Turn:
    items = (
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]},
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "hi"}],
        },
    )
    return Turn(
        response_id=response_id,
        model="gpt-4o-mini",
        created_at=int(time.time()) - age,
        items=items,
        input_start=0,
        output_start=1,
        response={"id": response_id, "object": "response", "status": "completed"},
    )


def replica(url: str, prefix: str, bounds: Bounds = BOUNDS) -> RedisStateStore:
    return RedisStateStore(url, prefix=prefix, timeout=1.0, bounds=bounds)


def test_a_turn_saved_by_one_replica_is_read_by_another(redis_url: str) -> None:
    async def run() -> None:
        prefix = f"s{time.monotonic_ns()}:"
        first, second = replica(redis_url, prefix), replica(redis_url, prefix)
        saved = turn(new_response_id())
        assert await first.save("team a/b*", saved) is None
        assert await second.load("team a/b*", saved.response_id) == saved
        client = aioredis.Redis.from_url(redis_url)
        digest = hashlib.sha256(b"team a/b*").hexdigest()
        key = f"{prefix}{digest}:{saved.response_id}"
        assert await client.exists(key) == 1
        # The rest of the turn's ttl, in milliseconds.
        assert 3590 * 1000 < await client.pttl(key) <= 3600 * 1000
        assert await second.delete("team a/b*", saved.response_id) is True
        assert await first.load("team a/b*", saved.response_id) is None
        assert await first.delete("team a/b*", saved.response_id) is False
        assert await client.exists(key) == 0
        await client.aclose()
        for made in (first, second):
            await made.close()

    asyncio.run(run())


def test_another_tenants_response_is_absent(redis_url: str) -> None:
    async def run() -> None:
        store = replica(redis_url, f"s{time.monotonic_ns()}:")
        saved = turn(new_response_id())
        await store.save("team", saved)
        assert await store.load("other", saved.response_id) is None
        assert await store.delete("other", saved.response_id) is False
        assert await store.load("team", saved.response_id) == saved
        await store.close()

    asyncio.run(run())


def test_the_ttl_counts_from_the_turns_creation(redis_url: str) -> None:
    async def run() -> None:
        prefix = f"s{time.monotonic_ns()}:"
        store = replica(redis_url, prefix, Bounds(ttl=2, max_items=100, max_bytes=64 * 1024))
        old = turn(new_response_id(), age=1)
        assert await store.save("team", old) is None
        client = aioredis.Redis.from_url(redis_url)
        assert 0 < await client.pttl(store.key("team", old.response_id)) <= 1000
        await client.aclose()
        assert await store.save("team", turn(new_response_id(), age=2)) is Over.EXPIRED
        await store.close()

    asyncio.run(run())


def test_a_conversation_over_max_bytes_is_refused_and_remembered_small(redis_url: str) -> None:
    async def run() -> None:
        prefix = f"s{time.monotonic_ns()}:"
        store = replica(redis_url, prefix)
        large = turn(new_response_id(), text="x" * (64 * 1024))
        assert await store.save("team", large) is Over.BYTES
        assert await store.load("team", large.response_id) == Dropped(large.response_id, Over.BYTES)
        client = aioredis.Redis.from_url(redis_url)
        assert await client.strlen(store.key("team", large.response_id)) < 100
        # A value larger than the bound (another writer's, or an older config's) is not read.
        other = new_response_id()
        await client.set(store.key("team", other), b"x" * (64 * 1024 + 1))
        assert await store.load("team", other) == Dropped(other, Over.BYTES)
        await client.set(store.key("team", other), b'{"v": 1, "id": "something else"}')
        assert await store.load("team", other) is None
        await client.aclose()
        await store.close()

    asyncio.run(run())


def test_an_id_that_is_not_one_is_never_looked_up(redis_url: str) -> None:
    async def run() -> None:
        store = replica(redis_url, f"s{time.monotonic_ns()}:")
        assert await store.load("team", "x" * 10_000) is None
        assert await store.delete("team", "a b") is False
        await store.close()

    asyncio.run(run())


def test_redis_gone_is_one_error_without_details(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    server.start()
    url = server.url.replace("redis://", "redis://:hunter2@")
    server_url = server.url

    async def run() -> None:
        store = replica(server_url, "s:")
        saved = turn(new_response_id())
        assert await store.save("team", saved) is None
        server.stop()
        for call in (
            store.load("team", saved.response_id),
            store.save("team", saved),
            store.delete("team", saved.response_id),
        ):
            with pytest.raises(StateStoreError) as error:
                await call
            assert "127.0.0.1" not in str(error.value)
        await store.close()
        secret = RedisStateStore(url, prefix="s:", timeout=0.2, bounds=BOUNDS)
        with pytest.raises(StateStoreError) as error:
            await secret.load("team", saved.response_id)
        assert "hunter2" not in str(error.value) and "127.0.0.1" not in str(error.value)
        await secret.close()

    try:
        asyncio.run(run())
    finally:
        server.stop()


def test_a_stalled_redis_is_the_same_error_within_the_timeout(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    server.start()

    async def run() -> None:
        store = RedisStateStore(server.url, prefix="s:", timeout=0.2, bounds=BOUNDS)
        saved = turn(new_response_id())
        assert await store.save("team", saved) is None
        client = aioredis.Redis.from_url(server.url)
        stall = asyncio.ensure_future(client.execute_command("DEBUG", "SLEEP", "2"))
        await asyncio.sleep(0.1)
        with pytest.raises(StateStoreError):
            # A liveness bound only: generous beside the 0.2 s timeout.
            await asyncio.wait_for(store.load("team", saved.response_id), 1.5)
        await stall
        await client.aclose()
        await store.close()

    try:
        asyncio.run(run())
    finally:
        server.stop()
