"""`python bench/exchange.py`: the exchange's CPU for one whole request, in-process.

An Exchange driven through every phase the shell feeds it (request headers, the request
body, the effects it asks for answered at once, response headers, the response body, the
end and its log record) for a 1 KB chat request, JSON and streamed, as sent and translated
for an Anthropic backend, under bench/request_path.py's policy and budget. It leaves out the
transport, protobuf and Envoy (bench/transport.py, `make bench`), so it shows what a change
to the exchange, its stages or the domain code adds per request. Best of ROUNDS runs;
figures are printed, not asserted. CPU time of this process, so other load on the
host moves them less than wall time would.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.request_path import RUNTIME  # noqa: E402  (its policy, budget and models)
from bench.run import machine  # noqa: E402
from extproc.dataplane import report  # noqa: E402
from extproc.dataplane.decisions import Found, Lookup, Reserve, Reserved  # noqa: E402
from extproc.dataplane.exchange import Exchange  # noqa: E402
from extproc.state.turns import encode  # noqa: E402

RUNS = int(os.environ.get("EXCHANGE_RUNS", "3000"))
ROUNDS = int(os.environ.get("EXCHANGE_ROUNDS", "7"))
HEADERS = {
    ":path": "/v1/chat/completions",
    ":method": "POST",
    ":authority": "gateway",
    "authorization": "Bearer password",
    "content-type": "application/json",
    "x-request-id": "b3f1c2d4-0000-4000-8000-000000000001",
}
CHAT_PATH = HEADERS[":path"]
TEXT = ("Please summarise the following paragraph in two sentences. " * 16)[:1000]


def body(model: str, stream: bool) -> bytes:
    return orjson.dumps(
        {"model": model, "stream": stream, "messages": [{"role": "user", "content": TEXT}]}
    )


OPENAI_JSON = orjson.dumps(
    {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Done."},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 230, "completion_tokens": 2, "total_tokens": 232},
    }
)
ANTHROPIC_JSON = orjson.dumps(
    {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude",
        "content": [{"type": "text", "text": "Done."}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 230, "output_tokens": 2},
    }
)


def openai_stream() -> bytes:
    chunks: list[dict[str, Any]] = [
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
        *({"choices": [{"index": 0, "delta": {"content": " word"}}]} for _ in range(8)),
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        {
            "choices": [],
            "usage": {"prompt_tokens": 230, "completion_tokens": 8, "total_tokens": 238},
        },
    ]
    head = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt"}
    out = b"".join(b"data: " + orjson.dumps({**head, **c}) + b"\n\n" for c in chunks)
    return out + b"data: [DONE]\n\n"


def anthropic_stream() -> bytes:
    events = [
        (
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "msg_1",
                    "type": "message",
                    "role": "assistant",
                    "model": "claude",
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": 230, "output_tokens": 1},
                },
            },
        ),
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
        *(
            (
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": " word"},
                },
            )
            for _ in range(8)
        ),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": 8},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
    return b"".join(
        f"event: {n}\n".encode() + b"data: " + orjson.dumps(p) + b"\n\n" for n, p in events
    )


def one(raw: bytes, content_type: str, chunks: list[bytes], path: str = CHAT_PATH) -> None:
    exchange = Exchange(RUNTIME)
    exchange.request_headers({**HEADERS, ":path": path} if path != CHAT_PATH else HEADERS, False)
    step = exchange.request_body(raw)
    while isinstance(step, Lookup | Reserve):
        step = exchange.resolve(Found(None) if isinstance(step, Lookup) else Reserved(None))
    exchange.response_headers({":status": "200", "content-type": content_type})
    for chunk in chunks[:-1]:
        exchange.response_chunk(chunk)
    exchange.response_body(chunks[-1], True)
    exchange.finish()
    report.record(exchange)
    if exchange.turn is not None:
        encode(exchange.turn)  # what the store keeps (the store's own work left out)


def responses(model: str, stream: bool, **more: Any) -> bytes:
    """The same prompt in the Responses API."""
    return orjson.dumps(
        {"model": model, "stream": stream, "input": [{"role": "user", "content": TEXT}], **more}
    )


def events(stream: bytes) -> list[bytes]:
    return [part + b"\n\n" for part in stream.split(b"\n\n") if part]


CASES: list[tuple[Any, ...]] = [
    ("JSON, as sent", body("gpt", False), "application/json", [OPENAI_JSON]),
    ("JSON, translated", body("claude", False), "application/json", [ANTHROPIC_JSON]),
    ("stream, as sent", body("gpt", True), "text/event-stream", [*events(openai_stream()), b""]),
    (
        "stream, translated",
        body("claude", True),
        "text/event-stream",
        [*events(anthropic_stream()), b""],
    ),
    (
        "Responses JSON -> chat, kept",
        responses("gpt", False),
        "application/json",
        [OPENAI_JSON],
        "/v1/responses",
    ),
    (
        "Responses JSON -> chat, store: false",
        responses("gpt", False, store=False),
        "application/json",
        [OPENAI_JSON],
        "/v1/responses",
    ),
    (
        "Responses stream -> chat, kept",
        responses("gpt", True),
        "text/event-stream",
        [*events(openai_stream()), b""],
        "/v1/responses",
    ),
]


def main() -> None:
    print(machine())
    print(f"{RUNS:,} exchanges per run, best of {ROUNDS}; 1 KB chat, policy and budget:")
    for label, *case in CASES:
        best = float("inf")
        for _ in range(ROUNDS):
            started = time.process_time()
            for _ in range(RUNS):
                one(*case)
            best = min(best, (time.process_time() - started) / RUNS)
        print(f"  {label:38s} {best * 1e6:8.1f} µs per exchange", flush=True)


if __name__ == "__main__":
    main()
