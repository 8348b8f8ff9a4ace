"""Conversation state: turns, their bounds, their encoding, and the in-process store."""

from __future__ import annotations

import asyncio
import re
import tracemalloc
from typing import Any

import orjson
import pytest

from extproc.state.store import MemoryStateStore, loaded, prepared
from extproc.state.turns import (
    Bounds,
    Dropped,
    Over,
    Turn,
    check,
    decode,
    encode,
    new_response_id,
    valid_id,
)

BOUNDS = Bounds(ttl=3600, max_items=10, max_bytes=4096)
NOW = 1_800_000_000


def turn(response_id: str = "resp_1", items: int = 3, text: str = "hi", at: int = NOW) -> Turn:
    body = tuple(
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
        for _ in range(items)
    )
    return Turn(
        response_id=response_id,
        model="m",
        created_at=at,
        items=body,
        input_start=0,
        output_start=items - 1,
        response={"id": response_id, "object": "response", "status": "completed"},
    )


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def store(clock: Clock, **limits: Any) -> MemoryStateStore:
    options = {"max_total_bytes": 1 << 20, "max_entries": 100, **limits}
    return MemoryStateStore(BOUNDS, clock=clock, **options)


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def test_response_ids_are_openais_shape_and_unguessable() -> None:
    made = {new_response_id() for _ in range(1000)}
    assert len(made) == 1000
    assert all(re.fullmatch(r"resp_[0-9a-f]{48}", made_id) for made_id in made)
    assert all(valid_id(made_id) for made_id in made)


@pytest.mark.parametrize(
    "candidate", ["", "a" * 257, "resp 1", "resp_1\n", "../x", "resp_é", "x*", "{t}"]
)
def test_ids_a_store_refuses(candidate: str) -> None:
    assert not valid_id(candidate)


@pytest.mark.parametrize(
    ("items", "size", "now", "expected"),
    [
        (10, 4096, NOW, None),
        (11, 10, NOW, Over.ITEMS),
        (1, 4097, NOW, Over.BYTES),
        (1, 1, NOW + 3599, None),
        (1, 1, NOW + 3600, Over.EXPIRED),
    ],
)
def test_bounds(items: int, size: int, now: int, expected: Over | None) -> None:
    assert check(BOUNDS, items, size, NOW, now) is expected


def test_a_turn_encodes_and_decodes_whole() -> None:
    original = turn()
    assert original.input_items == original.items[:2]
    assert original.output_items == original.items[2:]
    assert decode(encode(original), "resp_1") == original
    assert decode(encode(Dropped("resp_1", Over.BYTES)), "resp_1") == Dropped("resp_1", Over.BYTES)


def _written(**changes: Any) -> bytes:
    data = orjson.loads(encode(turn()))
    data.update(changes)
    return orjson.dumps(data)


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"not json",
        b"\xff\xfe",
        b"[]",
        b'"resp_1"',
        b"{}",
        _written(v=2),
        _written(id="resp_2"),  # another response's value under this key
        _written(at="now"),
        _written(at=True),
        _written(items={"a": 1}),
        _written(items=[1, 2]),
        _written(**{"in": 2, "out": 1}),
        _written(out=4),
        _written(**{"in": -1}),
        _written(model=None),
        _written(response=[]),
        orjson.dumps({"v": 1, "id": "resp_1", "over": "forever"}),
    ],
)
def test_a_value_that_is_not_what_was_written_is_absent(value: bytes) -> None:
    assert decode(value, "resp_1") is None
    assert loaded(BOUNDS, value, "resp_1", NOW) is None


def test_over_the_item_bound_a_dropped_record_is_kept_without_encoding_the_turn() -> None:
    value, over = prepared(BOUNDS, turn(items=11), NOW)
    assert over is Over.ITEMS
    assert value is not None and decode(value, "resp_1") == Dropped("resp_1", Over.ITEMS)


def test_over_the_byte_bound_a_dropped_record_is_kept() -> None:
    value, over = prepared(BOUNDS, turn(text="x" * 5000), NOW)
    assert over is Over.BYTES
    assert value is not None and len(value) < 100


def test_an_expired_turn_is_not_stored() -> None:
    assert prepared(BOUNDS, turn(at=NOW - 3600), NOW) == (None, Over.EXPIRED)


def test_bounds_in_force_at_load_apply_to_what_was_stored_before() -> None:
    value = encode(turn(items=5))
    assert loaded(BOUNDS, value, "resp_1", NOW) == turn(items=5)
    smaller = Bounds(ttl=3600, max_items=4, max_bytes=4096)
    assert loaded(smaller, value, "resp_1", NOW) == Dropped("resp_1", Over.ITEMS)
    tiny = Bounds(ttl=3600, max_items=10, max_bytes=len(value) - 1)
    assert loaded(tiny, value, "resp_1", NOW) == Dropped("resp_1", Over.BYTES)
    assert loaded(BOUNDS, value, "resp_1", NOW + 3600) is None


def test_memory_store_keeps_a_turn_per_tenant() -> None:
    async def scenario() -> None:
        kept = store(Clock())
        assert await kept.save("team", turn()) is None
        assert await kept.load("team", "resp_1") == turn()
        # Another tenant's id is absent, and deleting it there removes nothing.
        assert await kept.load("other", "resp_1") is None
        assert await kept.delete("other", "resp_1") is False
        assert await kept.load("team", "resp_1") == turn()
        assert await kept.delete("team", "resp_1") is True
        assert await kept.delete("team", "resp_1") is False
        assert await kept.load("team", "resp_1") is None
        assert kept.bytes == 0 and len(kept) == 0

    run(scenario())


def test_memory_store_answers_a_dropped_conversation_with_its_reason() -> None:
    async def scenario() -> None:
        kept = store(Clock())
        assert await kept.save("team", turn(items=11)) is Over.ITEMS
        assert await kept.load("team", "resp_1") == Dropped("resp_1", Over.ITEMS)
        assert await kept.save("team", turn("resp_2", text="x" * 5000)) is Over.BYTES
        assert await kept.load("team", "resp_2") == Dropped("resp_2", Over.BYTES)

    run(scenario())


def test_a_stored_turn_is_a_copy_its_caller_cannot_change() -> None:
    async def scenario() -> None:
        kept = store(Clock())
        original = turn()
        await kept.save("team", original)
        original.items[0]["role"] = "changed"
        found = await kept.load("team", "resp_1")
        assert isinstance(found, Turn) and found.items[0]["role"] == "user"

    run(scenario())


def test_memory_store_expires_turns_by_their_ttl() -> None:
    async def scenario() -> None:
        clock = Clock()
        kept = store(clock)
        await kept.save("team", turn())
        clock.now = NOW + 3599
        assert await kept.load("team", "resp_1") == turn()
        clock.now = NOW + 3600
        assert await kept.load("team", "resp_1") is None
        assert kept.bytes == 0 and len(kept) == 0
        await kept.save("team", turn("resp_2", at=int(clock.now)))
        clock.now += 3600
        assert await kept.delete("team", "resp_2") is False  # expired: nothing to delete

    run(scenario())


def test_memory_store_evicts_the_least_recently_used_by_bytes() -> None:
    async def scenario() -> None:
        size = len(encode(turn("resp_0")))
        kept = store(Clock(), max_total_bytes=3 * size)
        for n in range(3):
            await kept.save("team", turn(f"resp_{n}"))
        assert await kept.load("team", "resp_0") is not None  # now the most recently used
        await kept.save("team", turn("resp_3"))
        assert await kept.load("team", "resp_1") is None
        assert [await kept.load("team", f"resp_{n}") is not None for n in (0, 2, 3)] == [True] * 3
        assert kept.bytes == 3 * size and len(kept) == 3

    run(scenario())


def test_memory_store_evicts_the_least_recently_used_by_count() -> None:
    async def scenario() -> None:
        kept = store(Clock(), max_entries=2)
        for n in range(5):
            await kept.save("team", turn(f"resp_{n}"))
        assert len(kept) == 2
        found = [await kept.load("team", f"resp_{n}") is not None for n in range(5)]
        assert found == [False, False, False, True, True]

    run(scenario())


def test_memory_store_saved_again_replaces_and_counts_once() -> None:
    async def scenario() -> None:
        kept = store(Clock())
        await kept.save("team", turn(text="short"))
        await kept.save("team", turn(text="longer text"))
        assert kept.bytes == len(encode(turn(text="longer text"))) and len(kept) == 1

    run(scenario())


def test_memory_store_never_holds_more_than_its_bound() -> None:
    async def scenario() -> None:
        kept = store(Clock(), max_total_bytes=200)
        # Within max_bytes, but larger than the whole store.
        assert await kept.save("team", turn(text="x" * 300)) is Over.BYTES
        assert len(kept) == 0 and kept.bytes == 0
        for n in range(50):
            await kept.save(f"tenant-{n}", turn(f"resp_{n}", items=11))
            assert kept.bytes <= 200

    run(scenario())


def test_memory_store_holds_about_what_it_counts() -> None:
    """orjson's bytes keep the buffer they were written into (4 KiB for a short turn): the
    store keeps exact copies, so its byte bound is near the memory it holds."""

    async def scenario() -> None:
        kept = store(Clock(), max_entries=2000)
        tracemalloc.start()
        for n in range(2000):
            await kept.save("team", turn(f"resp_{n}"))
        held, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        stored = kept.bytes / 2000
        assert held / 2000 < stored + 1024, (held / 2000, stored)

    run(scenario())
