"""Where turns are kept: the protocol the shell calls, and the in-process store.

Both stores keep a turn encoded (what the byte bounds count, and a copy no caller can
change), under its tenant and response id: another tenant's id is simply absent. A
conversation over a bound is kept as a small `Dropped` record instead, for as long as the
turn would have been, so that a request naming it learns why it cannot continue.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

from extproc.state.turns import Bounds, Dropped, Over, Turn, check, decode, encode


class StateStoreError(Exception):
    """The state store could not be reached or did not answer in time."""


class StateStore(Protocol):
    async def load(self, tenant: str, response_id: str) -> Turn | Dropped | None:
        """The turn stored under the tenant's response id; Dropped when its conversation
        was over a bound; None when absent, expired, another tenant's, or unreadable."""

    async def save(self, tenant: str, turn: Turn) -> Over | None:
        """Keep the turn for the bounds' ttl; the bound it is over (then a Dropped record
        is kept in its place, or nothing when it has expired already), else None."""

    async def delete(self, tenant: str, response_id: str) -> bool:
        """Whether the tenant had a turn (or a Dropped record) under the id."""

    async def close(self) -> None: ...


def prepared(bounds: Bounds, turn: Turn, now: float) -> tuple[bytes | None, Over | None]:
    """What to store for a turn (None: nothing) and the bound it is over. The item count
    is checked first: a conversation over it is not encoded at all."""
    over = check(bounds, len(turn.items), 0, turn.created_at, now)
    if over is Over.EXPIRED:
        return None, over
    if over is None:
        value = encode(turn)
        over = check(bounds, 0, len(value), turn.created_at, now)
        if over is None:
            return value, None
    return encode(Dropped(turn.response_id, over)), over


def loaded(bounds: Bounds, value: bytes, response_id: str, now: float) -> Turn | Dropped | None:
    """A stored value read back, checked against the bounds in force now (a smaller
    max_bytes than when it was written, a clock past its ttl)."""
    if len(value) > bounds.max_bytes:
        return Dropped(response_id, Over.BYTES)
    found = decode(value, response_id)
    if not isinstance(found, Turn):
        return found
    over = check(bounds, len(found.items), len(value), found.created_at, now)
    if over is Over.EXPIRED:
        return None
    return found if over is None else Dropped(response_id, over)


class MemoryStateStore:
    """Turns in this process: least recently used out first past `max_total_bytes` (of
    encoded values) or `max_entries`; each gone once its ttl has passed. Every operation
    is O(1) (amortised: a save evicts as many as it must)."""

    def __init__(
        self,
        bounds: Bounds,
        *,
        max_total_bytes: int,
        max_entries: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.bounds = bounds
        self.max_total_bytes = max_total_bytes
        self.max_entries = max_entries
        self.bytes = 0
        self._clock = clock
        # (tenant, response id) -> (expires at, encoded turn or Dropped record)
        self._entries: OrderedDict[tuple[str, str], tuple[float, bytes]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    # The protocol's coroutines, and the same work done at once: nothing here waits, so
    # the shell calls the plain methods and no task is made per request.

    async def load(self, tenant: str, response_id: str) -> Turn | Dropped | None:
        return self.load_now(tenant, response_id)

    async def save(self, tenant: str, turn: Turn) -> Over | None:
        return self.save_now(tenant, turn)

    async def delete(self, tenant: str, response_id: str) -> bool:
        return self.delete_now(tenant, response_id)

    def load_now(self, tenant: str, response_id: str) -> Turn | Dropped | None:
        key = (tenant, response_id)
        now = self._clock()
        value = self._live(key, now)
        if value is None:
            return None
        self._entries.move_to_end(key)
        return loaded(self.bounds, value, response_id, now)

    def save_now(self, tenant: str, turn: Turn) -> Over | None:
        key = (tenant, turn.response_id)
        if key in self._entries:
            self._drop(key)
        value, over = prepared(self.bounds, turn, self._clock())
        if value is None:
            return over
        if len(value) > self.max_total_bytes:
            return Over.BYTES  # larger than the whole store (the config refuses such bounds)
        # orjson's bytes keep the buffer it wrote into, several times their length
        # (docs/benchmarks.md): an exact copy is what the byte bound counts.
        self._entries[key] = (turn.created_at + self.bounds.ttl, bytes(memoryview(value)))
        self.bytes += len(value)
        while self.bytes > self.max_total_bytes or len(self._entries) > self.max_entries:
            self._drop(next(iter(self._entries)))
        return over

    def delete_now(self, tenant: str, response_id: str) -> bool:
        key = (tenant, response_id)
        if self._live(key, self._clock()) is None:
            return False
        self._drop(key)
        return True

    async def close(self) -> None:
        return None

    def _live(self, key: tuple[str, str], now: float) -> bytes | None:
        """The value under a key unless it has expired (then it goes)."""
        found = self._entries.get(key)
        if found is None:
            return None
        if now >= found[0]:
            self._drop(key)
            return None
        return found[1]

    def _drop(self, key: tuple[str, str]) -> None:
        _, value = self._entries.pop(key)
        self.bytes -= len(value)
