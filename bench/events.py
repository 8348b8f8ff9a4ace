"""`python bench/events.py`: the response reader's CPU per streamed event, in-process.

What a chunk that is not its stream's last costs in StreamReader.feed (the short way the
service takes for nearly every event): parsing, the meter, usage stripping, translation.
Each case feeds EVENTS text events (one per chunk, as a paced stream sends them) to a
fresh reader, best of ROUNDS runs. It leaves out the transport and the ext_proc message
(bench/transport.py), so it shows what a change to the reader or the meter adds per event.
Figures are printed, not asserted.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import machine  # noqa: E402
from extproc.accounting.usage import Meter  # noqa: E402
from extproc.apis import Kind, Schema  # noqa: E402
from extproc.dataplane.reader import StreamReader  # noqa: E402
from extproc.translate.translation import Translation  # noqa: E402

EVENTS = int(os.environ.get("EVENTS_PER_RUN", "20000"))
ROUNDS = int(os.environ.get("EVENTS_ROUNDS", "7"))


def openai_chunk(usage_null: bool) -> bytes:
    chunk: dict[str, object] = {
        "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
        "object": "chat.completion.chunk",
        "created": 1741569952,
        "model": "gpt-4o-mini-2024-07-18",
        "service_tier": "default",
        "system_fingerprint": "fp_06737a9306",
        "choices": [
            {"index": 0, "delta": {"content": " word"}, "logprobs": None, "finish_reason": None}
        ],
    }
    if usage_null:
        chunk["usage"] = None
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


ANTHROPIC_DELTA = (
    b"event: content_block_delta\n"
    b'data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" word"}}'
    b"\n\n"
)
ANTHROPIC_START = (
    b"event: message_start\n"
    b'data: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant",'
    b'"model":"claude-sonnet-4","content":[],"stop_reason":null,"stop_sequence":null,'
    b'"usage":{"input_tokens":25,"output_tokens":1}}}\n\n'
)


RESPONSES_DELTA = (
    b"event: response.output_text.delta\n"
    b'data: {"type":"response.output_text.delta","item_id":"msg_67ccd3acc8d48190a77525dc",'
    b'"output_index":0,"content_index":0,"delta":" word","logprobs":[],"sequence_number":7}'
    b"\n\n"
)


def openai_reader(strip_usage: bool) -> Callable[[], StreamReader]:
    return lambda: StreamReader(Meter(Schema.OPENAI, Kind.CHAT), None, strip_usage)


def anthropic_reader() -> StreamReader:
    return StreamReader(Meter(Schema.ANTHROPIC, Kind.MESSAGES), None, False)


def responses_reader() -> StreamReader:
    return StreamReader(Meter(Schema.OPENAI_RESPONSES, Kind.RESPONSES), None, False)


def to_openai() -> StreamReader:
    stream = Translation(Schema.OPENAI, Schema.ANTHROPIC).stream(True)
    reader = StreamReader(Meter(Schema.ANTHROPIC, Kind.MESSAGES), None, False, stream)
    reader.feed(ANTHROPIC_START, False)
    return reader


def to_anthropic() -> StreamReader:
    stream = Translation(Schema.ANTHROPIC, Schema.OPENAI).stream(True)
    return StreamReader(Meter(Schema.OPENAI, Kind.CHAT), None, False, stream)


CASES: list[tuple[str, Callable[[], StreamReader], bytes]] = [
    ("OpenAI, usage asked by the gateway (rewritten)", openai_reader(True), openai_chunk(True)),
    ("OpenAI, usage asked by the client (as it came)", openai_reader(False), openai_chunk(True)),
    ("OpenAI, no usage asked (as it came)", openai_reader(False), openai_chunk(False)),
    ("Anthropic (as it came)", anthropic_reader, ANTHROPIC_DELTA),
    ("Responses API (as it came)", responses_reader, RESPONSES_DELTA),
    ("Anthropic -> OpenAI client", to_openai, ANTHROPIC_DELTA),
    ("OpenAI -> Anthropic client", to_anthropic, openai_chunk(True)),
]


def per_event(make: Callable[[], StreamReader], chunk: bytes) -> float:
    best = float("inf")
    for _ in range(ROUNDS):
        reader = make()
        feed = reader.feed
        started = time.process_time()
        for _ in range(EVENTS):
            feed(chunk, False)
        best = min(best, time.process_time() - started)
    return best / EVENTS


def main() -> None:
    print(machine())
    print(f"{EVENTS:,} events per run, best of {ROUNDS}:")
    for name, make, chunk in CASES:
        print(f"  {name:<50} {per_event(make, chunk) * 1e6:6.2f} µs per event")


if __name__ == "__main__":
    main()
