"""`python bench/mcp_messages.py`: what reading one MCP message costs, and its depth check.

Each message is parsed by a bare `orjson.loads`, by the parse with the depth check
(max_depth 64, the default; `+depth` is what the check adds) and by `read_message` whole
(the envelope's checks too). How the check works: extproc/apis/bounded_json.py. Figures
are printed, not asserted.
"""

from __future__ import annotations

import sys
import timeit
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import machine  # noqa: E402
from extproc.apis import bounded_json  # noqa: E402
from extproc.apis.mcp import Message, read_message  # noqa: E402

MIB = 1024 * 1024
DEPTH = 64
ROUNDS = 15


def envelope(result: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": 7, "result": result}


def tool(i: int) -> dict[str, Any]:
    return {
        "name": f"tool_{i}",
        "description": "Looks a thing up and says what it found. " * 3,
        "inputSchema": {
            "type": "object",
            "properties": {
                "query": {"type": "string", "description": "what to look for"},
                "limit": {"type": "integer", "minimum": 1, "maximum": 100},
                "tags": {"type": "array", "items": {"type": "string"}},
            },
            "required": ["query"],
        },
        "annotations": {"readOnlyHint": True},
    }


def fill(make: Callable[[int], Any], key: str) -> bytes:
    """An envelope whose result's `key` list grows until the message is ~1 MiB."""
    item = len(orjson.dumps(make(0)))
    count = MIB // (item + 1)
    return orjson.dumps(envelope({key: [make(i) for i in range(count)]}))


def deep(i: int) -> Any:
    value: Any = i
    for _ in range(DEPTH - 4):  # the envelope, result, its list and this item: 64 in all
        value = [value]
    return value


def text(size: int) -> bytes:
    return orjson.dumps(envelope({"content": [{"type": "text", "text": "x" * size}]}))


MESSAGES: list[tuple[str, bytes]] = [
    (
        "tools/call",
        orjson.dumps(
            {
                "jsonrpc": "2.0",
                "id": 3,
                "method": "tools/call",
                "params": {"name": "echo", "arguments": {"text": "hello"}},
            }
        ),
    ),
    ("tools/list, 20 tools", orjson.dumps(envelope({"tools": [tool(i) for i in range(20)]}))),
    ("100 KB of text", text(100_000)),
    ("1 MiB of text", text(MIB)),
    ("tools/list, 1 MiB", fill(tool, "tools")),
    ("[] x 350k (hostile)", fill(lambda i: [], "content")),
    ("depth 64 chains", fill(deep, "content")),
]


def timings(runs: list[Callable[[], object]], size: int) -> list[float]:
    """Seconds per call of each run, the best of ROUNDS rounds of ~20 ms each, interleaved
    so that a slower moment of the machine falls on all of them alike."""
    number = max(5, 20_000_000 // max(size, 1_000))
    best = [float("inf")] * len(runs)
    for _ in range(ROUNDS):
        for i, run in enumerate(runs):
            best[i] = min(best[i], timeit.timeit(run, number=number) / number)
    return best


def main() -> None:
    print(machine())
    print(f"max_depth {DEPTH}; µs per message, best of {ROUNDS} interleaved rounds:")
    print(f"{'message':22s} {'bytes':>10s} {'orjson':>9s} {'+depth':>9s} {'read':>9s}")
    for label, body in MESSAGES:
        assert isinstance(read_message(body, max_bytes=4 * MIB, max_depth=DEPTH), Message)
        bare, loaded, read = timings(
            [
                partial(orjson.loads, body),
                partial(bounded_json.loads, body, DEPTH),  # the parse and its depth check
                partial(read_message, body, max_bytes=4 * MIB, max_depth=DEPTH),
            ],
            len(body),
        )
        print(
            f"{label:22s} {len(body):>10,} {bare * 1e6:9.1f} {(loaded - bare) * 1e6:9.1f}"
            f" {read * 1e6:9.1f}"
        )


if __name__ == "__main__":
    main()
