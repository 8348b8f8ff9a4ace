"""Sessions of the virtual MCP server: whose each one is, and the upstream sessions behind it.

A client's session id is a random token the gateway issues on `initialize`; whoever holds
it continues the session, so stores key sessions by its SHA-256, never by the id itself
(a Redis dump or a key listing shows no usable id). A session lives `ttl` seconds after
its last use, in process (bounded, least recently used out first) or in Redis.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import orjson

from extproc.redis_client import connect, failures_as


class SessionStoreError(Exception):
    """The store did not answer (the message names the kind of failure only)."""


@dataclass(frozen=True, slots=True)
class Upstream:
    """The gateway's session with one server, for one client session."""

    session_id: str  # "": the server keeps no sessions
    protocol: str  # the version that server agreed to
    capabilities: tuple[str, ...] = ()  # what it offers: "tools", "prompts", "resources"


@dataclass(frozen=True, slots=True)
class Session:
    tenant: str
    protocol: str  # the version agreed with the client
    upstream: dict[str, Upstream] = field(default_factory=dict)

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "tenant": self.tenant,
                "protocol": self.protocol,
                "upstream": {
                    k: [v.session_id, v.protocol, list(v.capabilities)]
                    for k, v in self.upstream.items()
                },
            }
        )

    def with_upstream(self, server: str, upstream: Upstream | None) -> Session:
        """The session with its upstream session for `server` set (None: forgotten)."""
        changed = dict(self.upstream)
        if upstream is None:
            changed.pop(server, None)
        else:
            changed[server] = upstream
        return Session(self.tenant, self.protocol, changed)


def decode(value: bytes) -> Session | None:
    try:
        data = orjson.loads(value)
        upstream = {
            str(k): Upstream(str(v[0]), str(v[1]), tuple(str(c) for c in v[2]))
            for k, v in dict(data["upstream"]).items()
        }
        return Session(str(data["tenant"]), str(data["protocol"]), upstream)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, IndexError):
        return None


def new_session_id() -> str:
    """256 random bits, in the characters the spec allows in Mcp-Session-Id."""
    return secrets.token_urlsafe(32)


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class SessionStore(Protocol):
    async def get(self, session_id: str) -> Session | None: ...

    async def put(self, session_id: str, session: Session) -> None: ...

    async def delete(self, session_id: str) -> bool: ...

    async def close(self) -> None: ...


class MemorySessionStore:
    """Sessions in the service's memory: at most `max_sessions`, the least recently used
    out first; each gone `ttl` seconds after its last use."""

    def __init__(
        self, ttl: float, max_sessions: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl = ttl
        self.max_sessions = max_sessions
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get_now(self, session_id: str) -> Session | None:
        key = _digest(session_id)
        entry = self._entries.get(key)
        if entry is None:
            return None
        now = self._clock()
        if entry[0] <= now:
            del self._entries[key]
            return None
        self._entries[key] = (now + self.ttl, entry[1])
        self._entries.move_to_end(key)
        return decode(entry[1])

    def put_now(self, session_id: str, session: Session) -> None:
        key = _digest(session_id)
        # orjson's bytes keep the whole buffer they were written in: an exact copy holds
        # only what the record needs, so the session bound bounds the memory.
        self._entries[key] = (self._clock() + self.ttl, bytes(memoryview(session.encode())))
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_sessions:
            self._entries.popitem(last=False)

    def delete_now(self, session_id: str) -> bool:
        """Whether a live session was there."""
        entry = self._entries.pop(_digest(session_id), None)
        return entry is not None and entry[0] > self._clock()

    async def get(self, session_id: str) -> Session | None:
        return self.get_now(session_id)

    async def put(self, session_id: str, session: Session) -> None:
        self.put_now(session_id, session)

    async def delete(self, session_id: str) -> bool:
        return self.delete_now(session_id)

    async def close(self) -> None:
        self._entries.clear()


class RedisSessionStore:
    """Sessions in Redis, shared by replicas: one key per session, its expiry renewed on
    each use."""

    def __init__(
        self, url: str, *, prefix: str, timeout: float, ttl: float, password_env: str = ""
    ) -> None:
        self._prefix = prefix
        self._ttl_ms = max(1000, int(ttl * 1000))
        self._client = connect(url, timeout=timeout, password_env=password_env)

    async def get(self, session_id: str) -> Session | None:
        with failures_as(SessionStoreError):
            value = await self._client.getex(self._prefix + _digest(session_id), px=self._ttl_ms)
        if value is None:
            return None
        return decode(value.encode() if isinstance(value, str) else bytes(value))

    async def put(self, session_id: str, session: Session) -> None:
        with failures_as(SessionStoreError):
            await self._client.set(
                self._prefix + _digest(session_id), session.encode(), px=self._ttl_ms
            )

    async def delete(self, session_id: str) -> bool:
        with failures_as(SessionStoreError):
            return bool(await self._client.delete(self._prefix + _digest(session_id)))

    async def close(self) -> None:
        await self._client.aclose()
