"""`python bench/validation.py`: what request validation costs per body, best of 5 runs.

Bodies: a 1 KB chat request (system + user), the same as an Anthropic Messages request, a
400 KB prompt, a user turn with four images, an agent's turn (30 messages, 20 tools: see
bench/request_path.py), and an embeddings request of 2M token ids.
"""

from __future__ import annotations

import sys
import timeit
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.request_path import agent  # noqa: E402
from bench.run import machine  # noqa: E402
from extproc.apis import ENDPOINTS, Endpoint  # noqa: E402
from extproc.apis.validation import validate  # noqa: E402

CHAT: dict[str, Any] = {
    "model": "gpt-4o-mini",
    "temperature": 0.7,
    "max_tokens": 256,
    "stream": True,
    "messages": [
        {"role": "system", "content": "You are a helpful assistant. " * 6},
        {"role": "user", "content": "Summarise this text: " + "lorem ipsum dolor sit amet " * 26},
    ],
}
IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 1000}}
BODIES: list[tuple[str, str, dict[str, Any], int]] = [
    ("1 KB chat", "/v1/chat/completions", CHAT, 200_000),
    (
        "1 KB messages",
        "/v1/messages",
        {
            "model": "claude-x",
            "max_tokens": 256,
            "system": "Be brief.",
            "messages": CHAT["messages"][1:],
        },
        200_000,
    ),
    (
        "400 KB prompt",
        "/v1/chat/completions",
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x" * 400_000}]},
        200_000,
    ),
    (
        "text + 4 images",
        "/v1/chat/completions",
        {
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "what?"}] + [IMAGE] * 4}
            ],
        },
        200_000,
    ),
    ("agent turn", "/v1/chat/completions", agent(), 20_000),
    (
        "2M token ids",
        "/v1/embeddings",
        {"model": "text-embedding-3-small", "input": [[1, 2, 3, 4, 5, 6, 7, 8] * 1024] * 256},
        10,
    ),
]


def cost(endpoint: Endpoint, body: dict[str, Any], number: int) -> float:
    assert validate(endpoint, body) is None
    return min(timeit.repeat(lambda: validate(endpoint, body), number=number, repeat=5)) / number


def main() -> None:
    print(machine())
    for label, path, body, number in BODIES:
        size = len(orjson.dumps(body))
        print(
            f"{label:16s} {size:>11,} bytes  {cost(ENDPOINTS[path], body, number) * 1e6:10.2f} µs"
        )


if __name__ == "__main__":
    main()
