"""The Redis budget store against a real redis-server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

import pytest
import redis.asyncio as aioredis

from extproc.accounting.budgets import (
    NANOS,
    Batch,
    Budget,
    Charge,
    Pending,
    StoreError,
    Window,
    plan,
)
from extproc.accounting.redis_store import RedisStore
from extproc.control.stack import free_port


def budget(name: str, **overrides: object) -> Budget:
    values: dict[str, object] = {
        "name": name,
        "window": Window.HOUR,
        "max_tokens": 1000,
        "max_cost_nanos": 0,
        "models": (),
        "per_model": False,
    }
    values.update(overrides)
    return Budget(**values)  # type: ignore[arg-type]


def store(url: str, prefix: str) -> RedisStore:
    return RedisStore(url, prefix=prefix, timeout=1.0)


def settled(charges: Iterable[Charge], now: float) -> Batch:
    pending = Pending()
    pending.add(charges, now)
    return pending.take(now)


def test_reserve_adjust_and_expiry(redis_url: str) -> None:
    async def run() -> None:
        prefix = f"t{time.monotonic_ns()}:"
        shared = store(redis_url, prefix)
        budgets = [
            budget("tokens", max_tokens=100),
            budget("cost", max_tokens=0, max_cost_nanos=NANOS),
        ]
        now = time.time()
        first = plan(budgets, "team", "m", 60, NANOS // 2, now)
        second = plan(budgets, "team", "m", 60, NANOS // 4, now)
        assert first is not None and second is not None
        assert await shared.reserve(first.charges) == -1
        # The token budget refuses; the cost budget's counter is left as it was.
        assert await shared.reserve(second.charges) == 0
        assert await shared.usage(first.charges[1].key) == (60, NANOS // 2)
        await shared.apply(settled(first.settle(25, NANOS // 8, now), now), 1)
        assert await shared.reserve(second.charges) == -1
        assert await shared.usage(first.charges[0].key) == (85, NANOS // 8 + NANOS // 4)
        client = aioredis.Redis.from_url(redis_url)
        key = prefix + first.charges[0].key
        assert key.startswith(f"{prefix}{{team}}:tokens:")
        ttl = await client.ttl(key)
        assert 3600 < ttl <= 2 * 3600 + 1  # the window's rest plus an hour of grace
        await client.aclose()
        await shared.close()

    asyncio.run(run())


def test_two_replicas_never_pass_the_limit_together(redis_url: str) -> None:
    async def run() -> None:
        prefix = f"t{time.monotonic_ns()}:"
        replicas = [store(redis_url, prefix), store(redis_url, prefix)]
        now = time.time()

        async def one(number: int) -> bool:
            reservation = plan([budget("b", max_tokens=1000)], "team", "m", 70, 0, now)
            assert reservation is not None
            return await replicas[number % 2].reserve(reservation.charges) == -1

        admitted = await asyncio.gather(*(one(n) for n in range(40)))
        assert sum(admitted) == 14  # 14 x 70 = 980
        reservation = plan([budget("b")], "team", "m", 0, 0, now)
        assert reservation is not None
        assert await replicas[0].usage(reservation.charges[0].key) == (980, 0)
        for replica in replicas:
            await replica.close()

    asyncio.run(run())


def test_unreachable_redis_is_a_store_error_without_details() -> None:
    async def run() -> None:
        dead = RedisStore(f"redis://:hunter2@127.0.0.1:{free_port()}/0", prefix="x:", timeout=0.2)
        reservation = plan([budget("b")], "team", "m", 1, 0, time.time())
        assert reservation is not None
        with pytest.raises(StoreError) as error:
            await dead.reserve(reservation.charges)
        assert "hunter2" not in str(error.value) and "127.0.0.1" not in str(error.value)
        with pytest.raises(StoreError):
            await dead.apply(settled(reservation.charges, time.time()), 1)
        await dead.close()

    asyncio.run(run())


def test_redis_response_cache(redis_url: str) -> None:
    from extproc.accounting.redis_store import RedisCache

    async def run() -> None:
        prefix = f"c{time.monotonic_ns()}:"
        first, second = (RedisCache(redis_url, prefix=prefix, timeout=1.0) for _ in range(2))
        assert await first.get("k") is None
        await first.set("k", b'{"answer": 1}', 60)
        assert await second.get("k") == b'{"answer": 1}'  # shared by replicas
        await first.set("short", b"x", 0.05)
        await asyncio.sleep(0.2)
        assert await second.get("short") is None

    asyncio.run(run())


def test_a_batch_written_again_is_applied_once(redis_url: str) -> None:
    """A settlement batch that timed out may have been applied: written again under its
    number it adds nothing more, for every tenant it holds; the next number adds again."""

    async def run() -> None:
        prefix = f"t{time.monotonic_ns()}:"
        writer, other = store(redis_url, prefix), store(redis_url, prefix)
        now = time.time()
        charges = [
            plan([budget("b")], tenant, "m", tokens, 0, now).charges[0]  # type: ignore[union-attr]
            for tenant, tokens in (("team", 10), ("other", 7))
        ]
        first = settled(charges, now)
        await writer.apply(first, 1)
        await writer.apply(first, 1)  # the same batch again: a retry
        assert [await writer.usage(c.key) for c in charges] == [(10, 0), (7, 0)]
        await writer.apply(settled(charges[:1], now), 2)
        assert [await writer.usage(c.key) for c in charges] == [(20, 0), (7, 0)]
        # Another process's numbers are its own.
        await other.apply(first, 1)
        assert [await writer.usage(c.key) for c in charges] == [(30, 0), (14, 0)]
        client = aioredis.Redis.from_url(redis_url)
        marks = [key async for key in client.scan_iter(f"{prefix}*:applied:*")]
        assert len(marks) == 4  # a tenant's mark per process, each in its tenant's slot
        assert all(key.startswith(f"{prefix}{{".encode()) for key in marks)
        assert all(0 < ttl <= 2 * 3600 + 1 for ttl in [await client.ttl(k) for k in marks])
        await client.aclose()
        for made in (writer, other):
            await made.close()

    asyncio.run(run())
