"""Budget counters in Redis, shared by every replica.

Each counter is a hash {t: tokens, c: cost in nano-units} with an expiry past its
window. Reserving is one Lua script: it checks every counter of the request against
its limits and adds to all of them only when all fit, so concurrent requests on any
number of replicas can never together pass a limit.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions

from extproc.accounting.budgets import Charge, StoreError

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

_ADJUST = """
for i = 1, #KEYS do
  local base = (i - 1) * 3
  redis.call('HINCRBY', KEYS[i], 't', ARGV[base + 1])
  redis.call('HINCRBY', KEYS[i], 'c', ARGV[base + 2])
  if redis.call('TTL', KEYS[i]) < tonumber(ARGV[base + 3]) then
    redis.call('EXPIRE', KEYS[i], ARGV[base + 3])
  end
end
return 0
"""


class RedisStore:
    def __init__(self, url: str, *, prefix: str, timeout: float, password_env: str = "") -> None:
        self._prefix = prefix
        options: dict[str, Any] = {
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "health_check_interval": 30,
        }
        if password_env:
            options["password"] = os.environ.get(password_env, "")
        self._client = aioredis.Redis.from_url(url, **options)
        self._reserve = self._client.register_script(_RESERVE)
        self._adjust = self._client.register_script(_ADJUST)

    async def reserve(self, charges: Sequence[Charge]) -> int:
        args: list[int] = []
        for c in charges:
            args += [c.tokens, c.cost, c.max_tokens, c.max_cost, c.ttl]
        try:
            result = await self._reserve(keys=[self._prefix + c.key for c in charges], args=args)
        except (redis.exceptions.RedisError, OSError) as error:
            raise StoreError(f"redis: {type(error).__name__}") from None
        return int(result)

    async def adjust(self, charges: Sequence[Charge]) -> None:
        args: list[int] = []
        for c in charges:
            args += [c.tokens, c.cost, c.ttl]
        try:
            await self._adjust(keys=[self._prefix + c.key for c in charges], args=args)
        except (redis.exceptions.RedisError, OSError) as error:
            raise StoreError(f"redis: {type(error).__name__}") from None

    async def usage(self, key: str) -> tuple[int, int]:
        try:
            tokens, cost = await self._client.hmget(self._prefix + key, ["t", "c"])
        except (redis.exceptions.RedisError, OSError) as error:
            raise StoreError(f"redis: {type(error).__name__}") from None
        return int(tokens or 0), int(cost or 0)

    async def close(self) -> None:
        await self._client.aclose()


class RedisCache:
    """Response cache entries in Redis (SET with an expiry), shared by replicas."""

    def __init__(self, url: str, *, prefix: str, timeout: float, password_env: str = "") -> None:
        self._prefix = prefix
        options: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
        if password_env:
            options["password"] = os.environ.get(password_env, "")
        self._client = aioredis.Redis.from_url(url, **options)

    async def get(self, key: str) -> bytes | None:
        try:
            value = await self._client.get(self._prefix + key)
        except (redis.exceptions.RedisError, OSError) as error:
            raise StoreError(f"redis: {type(error).__name__}") from None
        if value is None:
            return None
        return value.encode() if isinstance(value, str) else bytes(value)

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        try:
            await self._client.set(self._prefix + key, value, px=max(1, int(ttl * 1000)))
        except (redis.exceptions.RedisError, OSError) as error:
            raise StoreError(f"redis: {type(error).__name__}") from None
