"""Budgets: token and cost limits per tenant (and model) over fixed UTC windows.

A request reserves its estimate in every budget that applies before it is sent (all or
nothing, atomically in the store); when the response ends, the difference between the
real usage and the reservation is added (a refund when negative). Counters hold
reserved-but-unsettled amounts too, so concurrent requests can never all fit in the
same remaining budget: the total charged exceeds a limit only by what real usage adds
beyond the reservations.

Costs are kept as integers in nano-units of the currency so stores can add them
atomically without floating-point drift.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from extproc.glob import Glob

NANOS = 1_000_000_000
# Counters outlive their window a little: a response settled just after the window
# ended still finds its counter.
_GRACE_SECONDS = 3600


class Window(StrEnum):
    MINUTE = "minute"
    HOUR = "hour"
    DAY = "day"
    MONTH = "month"

    def bounds(self, now: float) -> tuple[int, int]:
        """Start and end (epoch seconds, UTC) of the window containing `now`."""
        second = int(now)
        if self is Window.MINUTE:
            start = second - second % 60
            return start, start + 60
        if self is Window.HOUR:
            start = second - second % 3600
            return start, start + 3600
        if self is Window.DAY:
            start = second - second % 86400
            return start, start + 86400
        day = dt.datetime.fromtimestamp(second, dt.UTC)
        first = day.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        following = (first + dt.timedelta(days=32)).replace(day=1)
        return int(first.timestamp()), int(following.timestamp())


@dataclass(frozen=True, slots=True)
class Budget:
    name: str
    window: Window
    max_tokens: int  # 0: no token limit
    max_cost_nanos: int  # 0: no cost limit
    models: tuple[Glob, ...]
    per_model: bool

    def applies(self, model: str) -> bool:
        return not self.models or any(glob.match(model) for glob in self.models)


@dataclass(frozen=True, slots=True)
class Charge:
    """An amount added to one budget counter (negative to refund)."""

    key: str
    tokens: int
    cost: int  # nano-units
    max_tokens: int  # 0: unlimited
    max_cost: int  # 0: unlimited
    ttl: int  # seconds the counter must be kept from now
    budget: str
    window_end: int


@dataclass(slots=True)
class Adjustment:
    """What is still to be added to one counter: the sum of its settlements."""

    tokens: int
    cost: int  # nano-units
    keep_until: int  # epoch seconds the counter must be kept until
    window_end: int

    def ttl(self, now: float) -> int:
        return max(self.keep_until - int(now), 1)


Batch = dict[str, Adjustment]  # by counter key


def current(batch: Batch, now: float) -> Batch:
    """The adjustments of a batch that still matter: their window has not ended (an ended
    window's counter decides nothing any more) and they change something."""
    return {
        key: adjustment
        for key, adjustment in batch.items()
        if adjustment.window_end > now and (adjustment.tokens or adjustment.cost)
    }


class Pending:
    """Settlements not yet written to the store, summed by counter key. A key names one
    window of one budget of one tenant (and model), and adjustments of ended windows are
    dropped: the map holds at most one entry per counter of the current windows, a size
    set by the config, however many requests settle."""

    def __init__(self) -> None:
        self.batch: Batch = {}

    def __len__(self) -> int:
        return len(self.batch)

    def add(self, charges: Iterable[Charge], now: float) -> None:
        for charge in charges:
            if charge.window_end <= now:
                continue
            keep_until = int(now) + charge.ttl
            found = self.batch.get(charge.key)
            if found is None:
                self.batch[charge.key] = Adjustment(
                    charge.tokens, charge.cost, keep_until, charge.window_end
                )
            else:
                found.tokens += charge.tokens
                found.cost += charge.cost
                found.keep_until = max(found.keep_until, keep_until)

    def take(self, now: float) -> Batch:
        """What is pending and still matters, for one write; nothing is pending after."""
        taken, self.batch = self.batch, {}
        return current(taken, now)


class StoreError(Exception):
    """The budget store could not be reached or answered wrongly."""


class Store(Protocol):
    async def reserve(self, charges: Sequence[Charge]) -> int:
        """Add every charge if each counter stays within its limits; otherwise add none.
        Returns -1 when added, else the index of the first charge that did not fit."""

    async def apply(self, batch: Batch, number: int) -> None:
        """Add a batch of adjustments unconditionally (settlements: refunds, top-ups).
        Batches are numbered upwards, one writer's at a time; written again under the same
        number after a failure (the store may have applied it all the same: a timeout),
        each counter's adjustment is added once."""

    async def usage(self, key: str) -> tuple[int, int]:
        """Tokens and cost (nano-units) counted so far under a key."""

    async def close(self) -> None: ...


def counter_key(tenant: str, budget: Budget, model: str, start: int) -> str:
    # The tenant is a hash tag: all of a tenant's counters live in one Redis Cluster
    # slot, so one script can check and update them together.
    scope = f":{model}" if budget.per_model else ""
    return f"{{{tenant}}}:{budget.name}{scope}:{start}"


@dataclass(frozen=True, slots=True)
class Reservation:
    """What one request reserved; `settle` turns real usage into the adjustments."""

    charges: tuple[Charge, ...]
    tokens: int
    cost: int

    def settle(self, tokens: int, cost: int, now: float) -> list[Charge]:
        delta_tokens, delta_cost = tokens - self.tokens, cost - self.cost
        if not delta_tokens and not delta_cost:
            return []
        return [
            Charge(
                c.key,
                delta_tokens,
                delta_cost,
                c.max_tokens,
                c.max_cost,
                max(c.window_end - int(now), 0) + _GRACE_SECONDS,
                c.budget,
                c.window_end,
            )
            for c in self.charges
        ]


def plan(
    budgets: Sequence[Budget],
    tenant: str,
    model: str,
    tokens: int,
    cost: int,
    now: float,
) -> Reservation | None:
    """The charges a request of `tokens` tokens and `cost` nano-units makes; None when no
    budget applies."""
    charges = []
    for budget in budgets:
        if not budget.applies(model):
            continue
        start, end = budget.window.bounds(now)
        charges.append(
            Charge(
                counter_key(tenant, budget, model, start),
                tokens,
                cost,
                budget.max_tokens,
                budget.max_cost_nanos,
                end - int(now) + _GRACE_SECONDS,
                budget.name,
                end,
            )
        )
    if not charges:
        return None
    return Reservation(tuple(charges), tokens, cost)


def _fits(used: list[int], charge: Charge) -> bool:
    if charge.max_tokens and used[0] + charge.tokens > charge.max_tokens:
        return False
    return not (charge.max_cost and used[1] + charge.cost > charge.max_cost)


class MemoryStore:
    """Counters in this process. Each operation runs without awaiting, so it is atomic
    with respect to every other request on the event loop."""

    def __init__(self) -> None:
        self._counters: dict[str, list[int]] = {}  # key -> [tokens, cost, expires_at]
        self._operations = 0

    def _expire(self, now: int) -> None:
        self._operations += 1
        if self._operations % 1024:
            return
        for key in [k for k, v in self._counters.items() if v[2] < now]:
            del self._counters[key]

    def _counter(self, key: str, now: int) -> list[int]:
        counter = self._counters.get(key)
        if counter is None or counter[2] < now:
            counter = self._counters[key] = [0, 0, 0]
        return counter

    async def reserve(self, charges: Sequence[Charge]) -> int:
        return self.reserve_now(charges)

    def reserve_now(self, charges: Sequence[Charge]) -> int:
        """reserve() without a coroutine: the shell calls it at once, with no task."""
        now = int(time.time())
        self._expire(now)
        counters = [self._counter(charge.key, now) for charge in charges]
        for index, (counter, charge) in enumerate(zip(counters, charges, strict=True)):
            if not _fits(counter, charge):
                return index
        self._add(counters, charges, now)
        return -1

    async def apply(self, batch: Batch, number: int) -> None:
        now = int(time.time())
        for key, adjustment in batch.items():
            counter = self._counter(key, now)
            counter[0] += adjustment.tokens
            counter[1] += adjustment.cost
            counter[2] = max(counter[2], adjustment.keep_until)

    def adjust_now(self, charges: Sequence[Charge]) -> None:
        """Add the charges unconditionally, without a coroutine: this store never fails,
        so its settlements need neither a task nor the pending map."""
        now = int(time.time())
        self._add([self._counter(charge.key, now) for charge in charges], charges, now)

    @staticmethod
    def _add(counters: list[list[int]], charges: Sequence[Charge], now: int) -> None:
        for counter, charge in zip(counters, charges, strict=True):
            counter[0] += charge.tokens
            counter[1] += charge.cost
            counter[2] = max(counter[2], now + charge.ttl)

    async def usage(self, key: str) -> tuple[int, int]:
        counter = self._counters.get(key)
        return (counter[0], counter[1]) if counter else (0, 0)

    async def close(self) -> None:
        return None
