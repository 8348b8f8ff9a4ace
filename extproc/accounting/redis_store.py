"""Budget counters in Redis, shared by every replica.

Each counter is a hash {t: tokens, c: cost in nano-units} with an expiry past its
window. Reserving is one Lua script: it checks every counter of the request against
its limits and adds to all of them only when all fit, so concurrent requests on any
number of replicas can never together pass a limit. Settlements arrive in numbered
batches (settling.Settler) that a mark per tenant and process makes safe to write again.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence

from extproc.accounting.budgets import Batch, Charge, StoreError
from extproc.redis_client import connect, failures_as

# ARGV per key: tokens, cost, max_tokens, max_cost, ttl (0 means no limit).
_RESERVE = """
for i = 1, #KEYS do
  local base = (i - 1) * 5
  local used = redis.call('HMGET', KEYS[i], 't', 'c')
  local tokens = tonumber(used[1] or '0') + tonumber(ARGV[base + 1])
  local cost = tonumber(used[2] or '0') + tonumber(ARGV[base + 2])
  local max_tokens = tonumber(ARGV[base + 3])
  local max_cost = tonumber(ARGV[base + 4])
  if (max_tokens > 0 and tokens > max_tokens) or (max_cost > 0 and cost > max_cost) then
    return i - 1
  end
end
for i = 1, #KEYS do
  local base = (i - 1) * 5
  redis.call('HINCRBY', KEYS[i], 't', ARGV[base + 1])
  redis.call('HINCRBY', KEYS[i], 'c', ARGV[base + 2])
  if redis.call('TTL', KEYS[i]) < tonumber(ARGV[base + 5]) then
    redis.call('EXPIRE', KEYS[i], ARGV[base + 5])
  end
end
return -1
"""

# KEYS[1]: this writer's mark for the counters' tenant, KEYS[2..]: the counters. ARGV[1]:
# the batch's number, ARGV[2]: the mark's ttl, then per counter: tokens, cost, ttl. A
# batch written again under its number (after a timeout: Redis may have run it) is
# skipped, so a retried settlement is never added twice.
_APPLY = """
if tonumber(redis.call('GET', KEYS[1]) or '0') >= tonumber(ARGV[1]) then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
for i = 2, #KEYS do
  local base = 2 + (i - 2) * 3
  redis.call('HINCRBY', KEYS[i], 't', ARGV[base + 1])
  redis.call('HINCRBY', KEYS[i], 'c', ARGV[base + 2])
  if redis.call('TTL', KEYS[i]) < tonumber(ARGV[base + 3]) then
    redis.call('EXPIRE', KEYS[i], ARGV[base + 3])
  end
end
return 1
"""


def _tag(key: str) -> str:
    """A counter key's hash tag, `{tenant}` (budgets.counter_key): the keys one script
    may touch together in a Redis Cluster."""
    return key[: key.find("}") + 1]


class RedisStore:
    def __init__(self, url: str, *, prefix: str, timeout: float, password_env: str = "") -> None:
        self._prefix = prefix
        self._client = connect(
            url, timeout=timeout, password_env=password_env, health_check_interval=30
        )
        self._reserve = self._client.register_script(_RESERVE)
        self._apply = self._client.register_script(_APPLY)
        # This process's batch numbers are its own: its marks carry its name.
        self._writer = uuid.uuid4().hex[:16]

    async def reserve(self, charges: Sequence[Charge]) -> int:
        args: list[int] = []
        for c in charges:
            args += [c.tokens, c.cost, c.max_tokens, c.max_cost, c.ttl]
        with failures_as(StoreError):
            result = await self._reserve(keys=[self._prefix + c.key for c in charges], args=args)
        return int(result)

    async def apply(self, batch: Batch, number: int) -> None:
        """One script per tenant (its counters share a Cluster slot); several tenants' in
        one pipeline (which costs a round trip more: it checks the script is loaded)."""
        tenants: dict[str, list[str]] = {}
        for key in batch:
            tenants.setdefault(_tag(key), []).append(key)
        now = time.time()
        calls: list[tuple[list[str], list[int]]] = []
        for tag, keys in tenants.items():
            args = [number, max(batch[key].ttl(now) for key in keys)]
            for key in keys:
                adjustment = batch[key]
                args += [adjustment.tokens, adjustment.cost, adjustment.ttl(now)]
            mark = f"{self._prefix}{tag}:applied:{self._writer}"
            calls.append(([mark, *(self._prefix + key for key in keys)], args))
        with failures_as(StoreError):
            if len(calls) == 1:
                await self._apply(keys=calls[0][0], args=calls[0][1])
                return
            async with self._client.pipeline(transaction=False) as pipeline:
                for keys, args in calls:
                    await self._apply(keys=keys, args=args, client=pipeline)
                await pipeline.execute()

    async def usage(self, key: str) -> tuple[int, int]:
        with failures_as(StoreError):
            tokens, cost = await self._client.hmget(self._prefix + key, ["t", "c"])
        return int(tokens or 0), int(cost or 0)

    async def close(self) -> None:
        await self._client.aclose()


class RedisCache:
    """Response cache entries in Redis (SET with an expiry), shared by replicas."""

    def __init__(self, url: str, *, prefix: str, timeout: float, password_env: str = "") -> None:
        self._prefix = prefix
        self._client = connect(url, timeout=timeout, password_env=password_env)

    async def get(self, key: str) -> bytes | None:
        with failures_as(StoreError):
            value = await self._client.get(self._prefix + key)
        if value is None:
            return None
        return value.encode() if isinstance(value, str) else bytes(value)

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        with failures_as(StoreError):
            await self._client.set(self._prefix + key, value, px=max(1, int(ttl * 1000)))
