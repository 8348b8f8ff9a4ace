"""Budget settlements in the shell: a reservation whose stream was cancelled while the
store was asked is taken back once the store answers; store writes in flight are bounded."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from extproc.accounting.budgets import Charge, StoreError
from extproc.decisions import Reserve
from extproc.server import MAX_BACKGROUND, Processor
from extproc.telemetry.metrics import Metrics
from tests.unit.test_exchange_accounting import RT, start


class SlowStore:
    """A store whose answers wait until the test gives them."""

    def __init__(self) -> None:
        self.answer: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.adjusted: list[list[tuple[str, int]]] = []
        self.hold = asyncio.Event()  # adjust() waits for it

    async def reserve(self, charges: Sequence[Charge]) -> int:
        return await self.answer

    async def adjust(self, charges: Sequence[Charge]) -> None:
        await self.hold.wait()
        self.adjusted.append([(c.key, c.tokens) for c in charges])

    async def usage(self, key: str) -> tuple[int, int]:
        return 0, 0

    async def close(self) -> None:
        return None


def errors(metrics: Metrics, operation: str) -> float:
    value = metrics.registry.get_sample_value(
        "extproc_budget_store_errors_total", {"operation": operation}
    )
    return value or 0.0


async def cancelled_while_reserving(
    answer: int | StoreError,
) -> tuple[SlowStore, Processor, Reserve]:
    store = SlowStore()
    store.hold.set()
    processor = Processor(RT, Metrics(), store)
    exchange = start(key="key-m")
    reserve = exchange.request_body(
        b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}'
    )
    assert isinstance(reserve, Reserve)
    stream = asyncio.ensure_future(processor._reserve(exchange, reserve))
    await asyncio.sleep(0)
    stream.cancel()  # the client left, or Envoy stopped waiting
    with pytest.raises(asyncio.CancelledError):
        await stream
    assert exchange.reservation is None  # the exchange never learns of it: nothing to settle
    if isinstance(answer, StoreError):
        store.answer.set_exception(answer)
    else:
        store.answer.set_result(answer)
    while processor.settling:
        await asyncio.wait(set(processor.settling))
    return store, processor, reserve


async def test_a_reservation_applied_after_its_stream_was_cancelled_is_taken_back() -> None:
    store, processor, reserve = await cancelled_while_reserving(-1)
    charges = reserve.reservation.charges
    assert store.adjusted == [[(c.key, -c.tokens) for c in charges]]
    assert errors(processor.metrics, "settle") == 0


async def test_a_reservation_refused_after_its_stream_was_cancelled_leaves_nothing() -> None:
    store, processor, _ = await cancelled_while_reserving(0)
    assert store.adjusted == []
    assert errors(processor.metrics, "reserve") == errors(processor.metrics, "settle") == 0


async def test_a_reservation_failing_after_its_stream_was_cancelled_is_counted() -> None:
    store, processor, _ = await cancelled_while_reserving(StoreError("redis: TimeoutError"))
    assert store.adjusted == []
    assert errors(processor.metrics, "reserve") == 1


async def test_settlements_a_stalled_store_holds_are_bounded() -> None:
    store = SlowStore()  # adjust() waits: a store that does not answer
    processor = Processor(RT, Metrics(), store)
    charge = Charge("{t}:b:0", -5, 0, 0, 0, 60, "b", 60)
    for _ in range(MAX_BACKGROUND + 10):
        processor._settle([charge])
    assert len(processor.settling) == MAX_BACKGROUND
    assert errors(processor.metrics, "settle") == 10
    store.hold.set()  # the store answers again: the settlements held land, and no more
    await asyncio.wait(set(processor.settling))
    assert len(store.adjusted) == MAX_BACKGROUND and not processor.settling
