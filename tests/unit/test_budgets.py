"""Budget windows, plans, reservations and settlement with the in-process store."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from extproc.accounting.budgets import NANOS, Budget, MemoryStore, Window, plan
from extproc.glob import Glob


def ts(text: str) -> float:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp()


@pytest.mark.parametrize(
    ("window", "now", "start", "end"),
    [
        (Window.MINUTE, "2026-11-25T14:03:59", "2026-11-25T14:03:00", "2026-11-25T14:04:00"),
        (Window.HOUR, "2026-11-25T14:59:59", "2026-11-25T14:00:00", "2026-11-25T15:00:00"),
        (Window.DAY, "2026-11-25T00:00:00", "2026-11-25T00:00:00", "2026-11-26T00:00:00"),
        (Window.MONTH, "2026-12-31T23:59:59", "2026-12-01T00:00:00", "2027-01-01T00:00:00"),
        (Window.MONTH, "2028-02-29T12:00:00", "2028-02-01T00:00:00", "2028-03-01T00:00:00"),
    ],
)
def test_windows_are_fixed_and_aligned_on_utc(
    window: Window, now: str, start: str, end: str
) -> None:
    assert window.bounds(ts(now)) == (int(ts(start)), int(ts(end)))


def budget(name: str = "daily", **overrides: object) -> Budget:
    values: dict[str, object] = {
        "name": name,
        "window": Window.DAY,
        "max_tokens": 1000,
        "max_cost_nanos": 0,
        "models": (),
        "per_model": False,
    }
    values.update(overrides)
    return Budget(**values)  # type: ignore[arg-type]


NOW = ts("2026-11-25T14:00:00")


def test_plan_selects_budgets_by_model_and_scopes_per_model_counters() -> None:
    budgets = [
        budget("all"),
        budget("gpt", models=(Glob("gpt-*"),), per_model=True),
    ]
    reservation = plan(budgets, "team", "claude-x", 10, 0, NOW)
    assert reservation is not None and [c.budget for c in reservation.charges] == ["all"]
    reservation = plan(budgets, "team", "gpt-4o", 10, 0, NOW)
    assert reservation is not None
    keys = [c.key for c in reservation.charges]
    assert keys[0] == f"{{team}}:all:{int(ts('2026-11-25T00:00:00'))}"
    assert keys[1].startswith("{team}:gpt:gpt-4o:")
    assert plan([budget(models=(Glob("x"),))], "team", "y", 1, 0, NOW) is None
    assert all(c.window_end == int(ts("2026-11-26T00:00:00")) for c in reservation.charges)


def test_reserve_is_all_or_nothing_and_settles_the_difference() -> None:
    async def run() -> None:
        store = MemoryStore()
        budgets = [
            budget("tokens", max_tokens=100),
            budget("cost", max_tokens=0, max_cost_nanos=NANOS),
        ]
        first = plan(budgets, "t", "m", 60, NANOS // 2, NOW)
        assert first is not None
        assert await store.reserve(first.charges) == -1
        # Fits the cost budget but not the token one: nothing is added anywhere.
        second = plan(budgets, "t", "m", 60, NANOS // 4, NOW)
        assert second is not None
        assert await store.reserve(second.charges) == 0
        assert await store.usage(first.charges[1].key) == (60, NANOS // 2)
        # The first request used 25 tokens: 35 are refunded, and the second now fits.
        store.adjust_now(first.settle(25, NANOS // 8, NOW))
        assert await store.usage(first.charges[0].key) == (25, NANOS // 8)
        assert await store.reserve(second.charges) == -1
        assert await store.usage(first.charges[0].key) == (85, NANOS // 8 + NANOS // 4)
        # Cost over the limit is refused by the cost budget (index 1).
        third = plan(budgets, "t", "m", 1, NANOS, NOW)
        assert third is not None and await store.reserve(third.charges) == 1

    asyncio.run(run())


def test_settling_what_was_reserved_changes_nothing() -> None:
    reservation = plan([budget()], "t", "m", 10, 5, NOW)
    assert reservation is not None and reservation.settle(10, 5, NOW) == []


def test_concurrent_reservations_never_pass_the_limit() -> None:
    async def run() -> None:
        store = MemoryStore()

        async def one() -> bool:
            reservation = plan([budget(max_tokens=1000)], "t", "m", 150, 0, NOW)
            assert reservation is not None
            await asyncio.sleep(0)
            return await store.reserve(reservation.charges) == -1

        admitted = await asyncio.gather(*(one() for _ in range(20)))
        assert sum(admitted) == 6  # 6 x 150 = 900; a seventh would make 1050
        key = plan([budget()], "t", "m", 0, 0, NOW).charges[0].key  # type: ignore[union-attr]
        assert await store.usage(key) == (900, 0)

    asyncio.run(run())
