"""Turns in Redis, shared by every replica: one key per response, SET with its ttl.

The key is `<prefix><sha256(tenant)>:<response id>`: a tenant's name may hold anything
(a key's separator, a glob character), and the digest keeps tenants apart all the same.
Every call ends within the client's timeout; any failure raises StateStoreError.
"""

from __future__ import annotations

import hashlib
import time

from extproc.redis_client import connect, failures_as
from extproc.state.store import StateStoreError, loaded, prepared
from extproc.state.turns import Bounds, Dropped, Over, Turn, valid_id


class RedisStateStore:
    def __init__(
        self, url: str, *, prefix: str, timeout: float, bounds: Bounds, password_env: str = ""
    ) -> None:
        self.bounds = bounds
        self._prefix = prefix
        self._client = connect(url, timeout=timeout, password_env=password_env)
        # Tenants are few and their digests asked for on every call.
        self._tenants: dict[str, str] = {}

    def key(self, tenant: str, response_id: str) -> str:
        digest = self._tenants.get(tenant)
        if digest is None:
            digest = hashlib.sha256(tenant.encode()).hexdigest()
            if len(self._tenants) < 4096:
                self._tenants[tenant] = digest
        return f"{self._prefix}{digest}:{response_id}"

    async def load(self, tenant: str, response_id: str) -> Turn | Dropped | None:
        if not valid_id(response_id):
            return None
        with failures_as(StateStoreError):
            value = await self._client.get(self.key(tenant, response_id))
        if value is None:
            return None
        stored = value.encode() if isinstance(value, str) else bytes(value)
        return loaded(self.bounds, stored, response_id, time.time())

    async def save(self, tenant: str, turn: Turn) -> Over | None:
        now = time.time()
        value, over = prepared(self.bounds, turn, now)
        if value is None:
            return over
        # The rest of its ttl: a turn saved long after its creation goes when it would have.
        ttl = max(1, int((turn.created_at + self.bounds.ttl - now) * 1000))
        with failures_as(StateStoreError):
            await self._client.set(self.key(tenant, turn.response_id), value, px=ttl)
        return over

    async def delete(self, tenant: str, response_id: str) -> bool:
        if not valid_id(response_id):
            return False
        with failures_as(StateStoreError):
            removed = await self._client.delete(self.key(tenant, response_id))
        return bool(removed)

    async def close(self) -> None:
        await self._client.aclose()
