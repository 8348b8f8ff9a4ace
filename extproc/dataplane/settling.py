"""Budget settlements on their way to a store that can fail or stall.

A stream's end (or a reservation taken back) adds its adjustments to a pending map and
returns at once: summed by counter key (accounting.budgets.Pending), what waits is
bounded by the budgets' current windows, not by the requests. One task writes it all as
one numbered batch (one pipeline to Redis); while the store fails, it writes that same
batch again under the same number, with backoff, and the store adds each batch once
however often it arrives (a write that timed out may have been applied). Settlements
that come meanwhile wait for the next batch. What the store has not taken when the
process stops is lost (its drain waits for it up to the grace period).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable

from extproc.accounting.budgets import Batch, Charge, Pending, Store, StoreError, current

# Seconds between writes of a batch the store refused: doubling up to the last.
FIRST_RETRY = 0.1
LAST_RETRY = 5.0


class Settler:
    def __init__(
        self,
        store: Store,
        failed: Callable[[StoreError, int], None],
        waiting: Callable[[int], None] = lambda counters: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.failed = failed  # told each failed write (the error, the counters it held)
        self.waiting = waiting  # told how many counters wait, when that changes
        self.clock = clock
        self.pending = Pending()
        self.batch: Batch | None = None  # written, not known to be applied
        self.number = 0  # the batch's
        self.task: asyncio.Task[None] | None = None
        self.idle = asyncio.Event()  # set while nothing waits to be written
        self.idle.set()

    def __len__(self) -> int:
        """The counters with adjustments not yet known to be written."""
        return len(self.pending) + len(self.batch or ())

    def add(self, charges: Iterable[Charge]) -> None:
        self.pending.add(charges, self.clock())
        self.waiting(len(self))
        if self.task is None and len(self):
            self.idle.clear()
            self.task = asyncio.get_running_loop().create_task(self._write())

    async def _write(self) -> None:
        delay = FIRST_RETRY
        try:
            while True:
                now = self.clock()
                if self.batch is None:
                    self.batch = self.pending.take(now)
                    self.number += 1
                else:
                    self.batch = current(self.batch, now)  # a retry: ended windows go
                if not self.batch:
                    self.batch = None
                    if not self.pending:
                        return
                    continue
                try:
                    await self.store.apply(self.batch, self.number)
                except StoreError as error:
                    self.failed(error, len(self))
                    self.waiting(len(self))
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, LAST_RETRY)
                    continue
                self.batch = None
                delay = FIRST_RETRY
        finally:
            self.task = None
            self.waiting(len(self))
            self.idle.set()
