"""`python bench/state.py`: what keeping a conversation costs, in-process.

A turn encoded and decoded at three sizes (a short chat, 200 turns of 2 KB, a conversation
near the 4 MiB max_bytes), and the memory the in-process store holds per entry for short
turns: its stored bytes, and everything beside them. Best of several runs; figures are
printed, not asserted (bench/codecs.py's `best`: CODEC_ROUNDS runs, 7 by default).
"""

from __future__ import annotations

import asyncio
import functools
import sys
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.codecs import best  # noqa: E402
from bench.run import machine  # noqa: E402
from extproc.state.store import MemoryStateStore  # noqa: E402
from extproc.state.turns import Bounds, Turn, decode, encode, new_response_id  # noqa: E402

WORDS = "The quick brown fox jumps over the lazy dog near the riverbank at dawn. "
ENTRIES = 20_000


def conversation(items: int, size: int) -> Turn:
    text = (WORDS * (size // len(WORDS) + 1))[:size]
    body = tuple(
        {
            "type": "message",
            "role": "user" if n % 2 == 0 else "assistant",
            "content": [{"type": "input_text" if n % 2 == 0 else "output_text", "text": text}],
        }
        for n in range(items)
    )
    response = {"id": "resp_x", "object": "response", "status": "completed", "output": [body[-1]]}
    return Turn(new_response_id(), "m", int(time.time()), body, items - 2, items - 1, response)


def per_entry() -> tuple[float, float]:
    """Bytes held per stored short turn: the stored values, and all of it."""
    store = MemoryStateStore(
        Bounds(86400, 1000, 4 << 20), max_total_bytes=1 << 40, max_entries=ENTRIES
    )
    short = conversation(2, 100)

    async def fill() -> None:
        for _ in range(ENTRIES):
            made = Turn(new_response_id(), "m", short.created_at, short.items, 0, 1, short.response)
            await store.save("tenant", made)

    tracemalloc.start()
    asyncio.run(fill())
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return store.bytes / ENTRIES, held / ENTRIES


def main() -> None:
    print(machine())
    for name, turn, loops in (
        ("2 items of 100 B", conversation(2, 100), 20000),
        ("200 items of 2 KB", conversation(200, 2000), 200),
        ("1,000 items of 4 KB", conversation(1000, 4000), 10),
    ):
        value = encode(turn)
        write = best(functools.partial(encode, turn), loops)
        read = best(functools.partial(decode, value, turn.response_id), loops)
        print(
            f"{name} ({len(value) / 1024:,.0f} KiB): encode {write * 1e6:,.0f} µs, "
            f"decode {read * 1e6:,.0f} µs"
        )
    stored, held = per_entry()
    print(f"in-process store, short turns: {stored:.0f} B stored, {held:.0f} B held per entry")


if __name__ == "__main__":
    main()
