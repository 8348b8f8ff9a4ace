"""Budget settlements in the shell: a reservation whose stream was cancelled while the
store was asked is taken back once the store answers; settlements wait in a map bounded
by the budgets' counters (never dropped for being many), are written by one task, and
are written again, under the same batch number, while the store fails."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from extproc.accounting.budgets import Batch, Charge, MemoryStore, Pending, StoreError
from extproc.dataplane import envoy, settling
from extproc.dataplane.decisions import Reserve
from extproc.dataplane.effects import MAX_BACKGROUND
from extproc.dataplane.processor import Processor
from extproc.dataplane.settling import Settler
from extproc.telemetry.metrics import Metrics
from tests.unit.test_exchange_accounting import NOW, RT, start


class SlowStore:
    """A store whose answers wait until the test gives them."""

    def __init__(self, failures: int = 0) -> None:
        self.answer: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.reserves = 0
        self.asked = asyncio.Event()  # set by each reserve()
        self.writes: list[tuple[int, dict[str, int]]] = []  # (number, tokens by key) tried
        self.applied: list[tuple[int, dict[str, int]]] = []
        self.failures = failures  # writes that fail before one succeeds
        self.hold = asyncio.Event()  # apply() waits for it
        self.hold.set()

    async def reserve(self, charges: Any) -> int:
        self.reserves += 1
        self.asked.set()
        return await self.answer

    async def apply(self, batch: Batch, number: int) -> None:
        self.writes.append((number, {key: a.tokens for key, a in batch.items()}))
        await self.hold.wait()
        if self.failures:
            self.failures -= 1
            raise StoreError("redis: ConnectionError")
        self.applied.append(self.writes[-1])

    async def usage(self, key: str) -> tuple[int, int]:
        return 0, 0

    async def close(self) -> None:
        return None


def errors(metrics: Metrics, operation: str) -> float:
    value = metrics.registry.get_sample_value(
        "extproc_budget_store_errors_total", {"operation": operation}
    )
    return value or 0.0


def pending(metrics: Metrics) -> float:
    return metrics.registry.get_sample_value("extproc_budget_settlements_pending") or 0.0


def processor_for(store: SlowStore) -> Processor:
    processor = Processor(RT, Metrics(), store)
    assert processor.settler is not None
    processor.settler.clock = lambda: NOW  # the exchanges' clock: their windows are open
    return processor


def charge(key: str, tokens: int, window_end: int = int(NOW) + 60) -> Charge:
    return Charge(key, tokens, 0, 0, 0, 3600, "b", window_end)


async def cancelled_while_reserving(
    store: SlowStore, answer: int | StoreError, streams: int = 1
) -> tuple[Processor, list[Reserve]]:
    """`streams` exchanges reserve, and are cancelled before the store answers; then it
    answers them all with `answer`."""
    processor = processor_for(store)
    reserves, waiting = [], []
    for _ in range(streams):
        exchange = start(key="key-m")
        reserve = exchange.request_body(
            b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}'
        )
        assert isinstance(reserve, Reserve)
        reserves.append(reserve)
        waiting.append(
            asyncio.ensure_future(processor._perform(exchange, reserve, envoy.request_body_reply))
        )
    while store.reserves < streams:
        store.asked.clear()
        await store.asked.wait()
    for stream in waiting:
        stream.cancel()  # the client left, or Envoy stopped waiting
    for stream in waiting:
        with pytest.raises(asyncio.CancelledError):
            await stream
    if isinstance(answer, StoreError):
        store.answer.set_exception(answer)
    else:
        store.answer.set_result(answer)
    while processor.reserving:
        await asyncio.wait(set(processor.reserving))
    return processor, reserves


async def written(processor: Processor) -> None:
    assert processor.settler is not None
    await asyncio.wait_for(processor.settler.idle.wait(), 5)


async def test_a_reservation_applied_after_its_stream_was_cancelled_is_taken_back() -> None:
    store = SlowStore()
    processor, [reserve] = await cancelled_while_reserving(store, -1)
    await written(processor)
    charges = reserve.reservation.charges
    assert store.applied == [(1, {c.key: -c.tokens for c in charges})]
    assert errors(processor.metrics, "settle") == 0


async def test_a_reservation_refused_after_its_stream_was_cancelled_leaves_nothing() -> None:
    store = SlowStore()
    processor, _ = await cancelled_while_reserving(store, 0)
    await written(processor)
    assert store.writes == []
    assert errors(processor.metrics, "reserve") == errors(processor.metrics, "settle") == 0


async def test_a_reservation_failing_after_its_stream_was_cancelled_is_counted() -> None:
    store = SlowStore()
    processor, _ = await cancelled_while_reserving(store, StoreError("redis: TimeoutError"))
    await written(processor)
    assert store.writes == []
    assert errors(processor.metrics, "reserve") == 1


async def test_many_reservations_taken_back_wait_as_one_entry_per_counter() -> None:
    # More than the cap on background tasks, all abandoned at once (a stalled Redis past
    # Envoy's message timeout): not one take-back is dropped.
    streams = MAX_BACKGROUND + 200
    store = SlowStore()
    store.hold.clear()  # the store takes its time with the first batch
    processor, reserves = await cancelled_while_reserving(store, -1, streams)
    settler = processor.settler
    assert settler is not None
    [key] = {c.key for r in reserves for c in r.reservation.charges}  # one budget applies
    assert len(settler.pending) <= 1 and len(settler.batch or ()) <= 1
    assert not processor.background  # no task per settlement
    assert 1 <= pending(processor.metrics) <= 2
    store.hold.set()
    await written(processor)
    assert pending(processor.metrics) == 0
    # Written as few batches, numbered upwards, whose sum takes every reservation back.
    assert len(store.applied) <= 2
    assert [number for number, _ in store.applied] == list(range(1, len(store.applied) + 1))
    assert sum(tokens[key] for _, tokens in store.applied) == -sum(
        r.reservation.tokens for r in reserves
    )
    assert errors(processor.metrics, "settle") == 0


async def test_a_failing_store_gets_the_same_batch_again_and_later_ones_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(settling, "FIRST_RETRY", 0.01)
    store = SlowStore(failures=3)
    store.hold.clear()
    processor = processor_for(store)
    processor._settle([charge("{t}:a:0", -5), charge("{t}:b:0", -7)])
    processor._settle([charge("{t}:a:0", -1)])
    await asyncio.sleep(0)  # the first batch is being written...
    processor._settle([charge("{t}:a:0", -100)])  # ...so this waits for the next one
    store.hold.set()
    await written(processor)
    first = {"{t}:a:0": -6, "{t}:b:0": -7}
    # Three failed writes and the one that took it, all of the same batch: the store
    # adds a batch once however often it comes, so one that timed out is not added twice.
    assert store.writes == [(1, first)] * 4 + [(2, {"{t}:a:0": -100})]
    assert store.applied == [(1, first), (2, {"{t}:a:0": -100})]
    assert errors(processor.metrics, "settle") == 3


async def test_adjustments_of_ended_windows_are_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settling, "FIRST_RETRY", 0.01)
    now = [NOW]
    store = SlowStore(failures=1)
    settler = Settler(store, lambda error, waiting: None, clock=lambda: now[0])
    settler.add([charge("{t}:old:0", -5, window_end=int(NOW) - 1)])  # already over
    assert not len(settler) and settler.idle.is_set()
    settler.add([charge("{t}:minute:0", -5, int(NOW) + 1), charge("{t}:day:0", -5, int(NOW) + 99)])
    await asyncio.sleep(0)
    now[0] = NOW + 2  # the first write fails; the minute ends before the next one
    await asyncio.wait_for(settler.idle.wait(), 5)
    assert store.applied == [(1, {"{t}:day:0": -5})]


def test_the_pending_map_sums_by_counter() -> None:
    pending = Pending()
    for _ in range(10_000):
        pending.add([charge("{t}:a:0", -3), charge("{u}:a:0", 2)], NOW)
    assert len(pending) == 2
    batch = pending.take(NOW)
    assert {key: a.tokens for key, a in batch.items()} == {"{t}:a:0": -30_000, "{u}:a:0": 20_000}
    assert not pending
    pending.add([charge("{t}:a:0", -3), charge("{t}:a:0", 3)], NOW)  # sums to nothing
    assert pending.take(NOW) == {}


async def test_the_in_process_store_settles_at_once() -> None:
    store = MemoryStore()
    processor = Processor(RT, Metrics(), store)
    assert processor.settler is None
    processor._settle([charge("{t}:a:0", 5)])
    assert await store.usage("{t}:a:0") == (5, 0)


async def test_cache_writes_a_stalled_store_holds_are_bounded() -> None:
    processor = Processor(RT, Metrics(), MemoryStore())
    stalled = asyncio.Event()

    async def write() -> None:
        await stalled.wait()

    taken = [processor._background(write()) for _ in range(MAX_BACKGROUND + 10)]
    assert taken == [True] * MAX_BACKGROUND + [False] * 10
    stalled.set()
    await asyncio.wait(set(processor.background))
    assert not processor.background


async def test_the_drain_waits_for_settlements_to_be_written(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(settling, "FIRST_RETRY", 0.01)
    store = SlowStore(failures=2)
    processor = processor_for(store)
    processor._settle([charge("{t}:a:0", -5)])
    await processor.drain(5)
    assert store.applied == [(1, {"{t}:a:0": -5})]
    # A store that never comes back: the drain ends at its deadline.
    store.failures = 10**9
    processor._settle([charge("{t}:a:0", -1)])
    await processor.drain(0.1)
    settler = processor.settler
    assert settler is not None and len(settler) == 1  # lost (logged): the process stops
    await asyncio.wait_for(settler.idle.wait(), 5)  # and its writes stop with it
    assert settler.task is None
