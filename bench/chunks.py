"""`python bench/chunks.py`: the service's CPU per streamed chunk, in process, beside its floor.

A paced stream reaches the service one event per ext_proc message. This feeds one HTTP/2
connection the frames Envoy sends for such a stream (request headers, body, response
headers, then CHUNKS chunks of one event each, one read per chunk) and drops the reply
bytes: the transport, the shell and the reader, with no sockets, no Envoy and no other
process waking up in between. The same frames to the bare h2grpc ext_proc
(bench/bare_h2grpc.py, which passes every chunk on unchanged) give the transport's own
cost per chunk: what is left is the gateway's.

On a paced stream through Envoy each message is also a wake-up of the service's loop, which
on a shared 2-vCPU VM costs several times the work measured here and moves by more than a
change to it (bench/run.py's paced rows). This is the figure to compare two trees by.
Process CPU time, best of ROUNDS; figures are printed, not asserted.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable
from logging import WARNING
from pathlib import Path

import hpack
import orjson
import uvloop
from envoy.service.ext_proc.v3 import external_processor_pb2 as ext

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench.events import ANTHROPIC_DELTA, ANTHROPIC_START, openai_chunk  # noqa: E402
from bench.request_path import MODELS  # noqa: E402
from bench.run import machine  # noqa: E402
from bench.transport import (  # noqa: E402
    CHAT_REQUEST,
    DATA,
    END_HEADERS,
    FIELDS,
    HEADERS,
    OPENING,
    _Dropped,
    bare_server,
    frame,
    headers,
    message,
)
from extproc import transport  # noqa: E402
from extproc.config.loader import load_text  # noqa: E402
from extproc.dataplane.service import Service  # noqa: E402
from extproc.telemetry import logging  # noqa: E402
from extproc.telemetry.metrics import Metrics  # noqa: E402
from extproc.transport.server import Connection  # noqa: E402

CHUNKS = int(os.environ.get("CHUNKS_PER_RUN", "4000"))
ROUNDS = int(os.environ.get("CHUNKS_ROUNDS", "9"))
# The bench's setup (bench/run.py): a tenant, accounting, prices. Drift checks off: the
# first streams of a backend are all watched, each event's fields walked, and later ones
# one in 20, so the rounds would differ.
CONFIG = (
    MODELS
    + """prices: {models: [{models: ["*"], input: 0.15, output: 0.6}]}
tenants: [{name: bench}]
auth: {anonymous_tenant: bench}
schema_drift: {disabled: true}
"""
)


def opening(model: str, usage_asked: bool) -> list[bytes]:
    """The ext_proc messages before the first chunk: request headers and body, the
    response's headers."""
    body: dict[str, object] = {
        "model": model,
        "stream": True,
        "messages": [{"role": "user", "content": "word " * 200}],
    }
    if usage_asked:
        body["stream_options"] = {"include_usage": True}
    sse = {":status": "200", "content-type": "text/event-stream"}
    return [
        message(
            ext.ProcessingRequest(request_headers=ext.HttpHeaders(headers=headers(CHAT_REQUEST)))
        ),
        message(
            ext.ProcessingRequest(
                request_body=ext.HttpBody(body=orjson.dumps(body), end_of_stream=True)
            )
        ),
        message(ext.ProcessingRequest(response_headers=ext.HttpHeaders(headers=headers(sse)))),
    ]


def chunk(event: bytes) -> bytes:
    return frame(DATA, 0, 1, message(ext.ProcessingRequest(response_body=ext.HttpBody(body=event))))


# (name, model, the client asked for usage, the first chunks, the chunk repeated)
CASES: list[tuple[str, str, bool, list[bytes], bytes]] = [
    ("OpenAI, usage asked by the gateway (cut)", "gpt", False, [], openai_chunk(True)),
    ("OpenAI, usage asked by the client (as it came)", "gpt", True, [], openai_chunk(True)),
    ("Anthropic -> OpenAI client", "claude", False, [ANTHROPIC_START], ANTHROPIC_DELTA),
]


class _Counted(_Dropped):
    """A transport that counts what is written and keeps none of it."""

    def __init__(self) -> None:
        self.written = 0

    def write(self, data: bytes) -> None:
        self.written += len(data)


async def per_chunk(
    server: transport.Server, case: tuple[str, str, bool, list[bytes], bytes]
) -> float:
    """µs of CPU per chunk, best of ROUNDS: each round a new connection and stream."""
    _, model, usage_asked, first, event = case
    frames = [chunk(event)] * CHUNKS
    best = float("inf")
    for _ in range(ROUNDS):
        conn = Connection(server)
        out = _Counted()
        conn.connection_made(out)  # type: ignore[arg-type]
        conn.data_received(OPENING + frame(HEADERS, END_HEADERS, 1, hpack.Encoder().encode(FIELDS)))
        for data in [
            *(frame(DATA, 0, 1, m) for m in opening(model, usage_asked)),
            *map(chunk, first),
        ]:
            conn.data_received(data)
            await asyncio.sleep(0)  # a reply the shell awaits, and the writes
        written = out.written
        started = time.process_time()
        for data in frames:
            conn.data_received(data)
        await asyncio.sleep(0)  # the last turn's writes leave
        best = min(best, time.process_time() - started)
        if out.written - written < CHUNKS * 14:  # a DATA frame's head and a gRPC prefix each
            raise RuntimeError("the chunks were not answered (a phase refused?)")
        conn.connection_lost(None)
    return best / CHUNKS * 1e6


async def main() -> None:
    logging.configure(level=WARNING)  # the exchanges' records would fill the output
    print(machine())
    print(f"{CHUNKS:,} chunks per run, best of {ROUNDS}, µs of CPU per chunk:")
    servers: list[tuple[str, Callable[[], transport.Server]]] = [
        ("bare h2grpc ext_proc", bare_server),
        ("service", lambda: Service(load_text(CONFIG), Metrics()).server),
    ]
    for label, make in servers:
        server = make()
        for case in CASES if label == "service" else CASES[:1]:
            name = case[0] if label == "service" else "any chunk, passed on unchanged"
            print(f"  {label:<22} {name:<48} {await per_chunk(server, case):6.2f}", flush=True)


if __name__ == "__main__":
    uvloop.run(main())  # the service's loop
