"""`python bench/service_cpu.py [TREE]`: the service's CPU per 1 KB JSON request, in process,
beside the bare transport's; then per 400 KB request (an agent's turn, a cold prompt).

`bench/exchange.py` leaves out the transport, protobuf and the shell; `make bench` has all
of them but also Envoy, wrk and the upstream on the same two cores, and its per-request
figure drifts by tens of percent within minutes on a shared VM. This feeds one HTTP/2
connection of the service the frames Envoy sends for whole 1 KB chat requests (request
headers, the body, the response's headers and its JSON body, four ext_proc messages),
STREAMS streams at a time, each step's messages of every stream in one read as Envoy
batches a loop turn, and drops the replies: everything the service does for a request
(its access log line rendered and written to /dev/null, its metrics counted as a serving
process counts them) with no sockets and no other process. The bare h2grpc ext_proc fed the
same frames gives the transport's own cost.

TREE (default: this script's) is the source tree whose package is measured; the bench's own
helpers come from this script's tree, so that one copy of it compares two commits. Process
CPU time, best of ROUNDS; figures are printed, not asserted.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

OWN = Path(__file__).resolve().parent.parent
TREE = Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else OWN
# The package from TREE, imported before the helpers that import it; the helpers (and the
# bare ext_proc) from this script's tree.
sys.path.insert(0, str(TREE))
import extproc  # noqa: E402

sys.path[0:0] = [str(OWN), str(OWN / "bench")]

import hpack  # noqa: E402
import orjson  # noqa: E402
import uvloop  # noqa: E402
from envoy.service.ext_proc.v3 import external_processor_pb2 as ext  # noqa: E402

from bench.exchange import ANTHROPIC_JSON, OPENAI_JSON  # noqa: E402
from bench.large_prompts import FULL, agent_turn, cold_prompt  # noqa: E402
from bench.request_path import MODELS  # noqa: E402
from bench.run import POLICY, chat_body, machine  # noqa: E402
from bench.transport import (  # noqa: E402
    CHAT_REQUEST,
    END_HEADERS,
    FIELDS,
    HEADERS,
    OPENING,
    _Dropped,
    bare_server,
    data_frames,
    frame,
    headers,
    in_reads,
    message,
)
from extproc import transport  # noqa: E402
from extproc.config.loader import load_text  # noqa: E402
from extproc.dataplane.service import Service  # noqa: E402
from extproc.telemetry import logging  # noqa: E402
from extproc.telemetry.metrics import Metrics  # noqa: E402
from extproc.transport.server import Connection  # noqa: E402

STREAMS = int(os.environ.get("SERVICE_STREAMS", "16"))
REQUESTS = int(os.environ.get("SERVICE_REQUESTS", "4000"))
ROUNDS = int(os.environ.get("SERVICE_ROUNDS", "7"))
# The 400 KB requests: this many per run, one stream at a time, in reads and frames of the
# sizes the service's socket and Envoy give (bench/transport.py's READ and MAX_FRAME).
LARGE_REQUESTS = int(os.environ.get("SERVICE_LARGE_REQUESTS", "40"))
# `make bench`'s full pipeline (the demo policy on requests, accounting, a tenant, prices),
# with bench/request_path.py's two models. Drift checks off: a backend's first answers are
# all read for them, so the rounds would differ.
CONFIG = (
    MODELS
    + POLICY.replace("DIRS", "request")
    + """prices: {models: [{models: ["*"], input: 0.15, output: 0.6}]}
schema_drift: {disabled: true}
"""
)
# bench/large_prompts.py's pipeline: the demo policy, a token budget in the in-process
# store, accounting.
LARGE_CONFIG = (
    MODELS
    + FULL
    + """prices: {models: [{models: ["*"], input: 0.15, output: 0.6}]}
schema_drift: {disabled: true}
"""
)
# (label, model, the backend's answer, its cluster: every request is routed there)
CASES = [
    ("1 KB JSON, demo policy and accounting", "gpt", OPENAI_JSON, b"backend.openai"),
    ("the same for an Anthropic backend", "claude", ANTHROPIC_JSON, b"backend.anthropic"),
]


def messages(model: str, answer: bytes, sent: bytes | None = None) -> list[bytes]:
    """A request's four ext_proc messages, its body `sent` (default: 1 KB of chat)."""
    body = orjson.loads(chat_body(1024) if sent is None else sent)
    body["model"] = model
    response = {":status": "200", "content-type": "application/json"}
    return [
        message(
            ext.ProcessingRequest(request_headers=ext.HttpHeaders(headers=headers(CHAT_REQUEST)))
        ),
        message(
            ext.ProcessingRequest(
                request_body=ext.HttpBody(body=orjson.dumps(body), end_of_stream=True)
            )
        ),
        message(ext.ProcessingRequest(response_headers=ext.HttpHeaders(headers=headers(response)))),
        message(ext.ProcessingRequest(response_body=ext.HttpBody(body=answer, end_of_stream=True))),
    ]


def reads_of(
    requests: int, steps: list[bytes] | Callable[[int], list[bytes]], streams: int = STREAMS
) -> list[bytes]:
    """The connection's reads: its preface, then per `streams` streams one read per step
    (a step's bytes past READ in more reads). `steps` may give each request its own."""
    encoder = hpack.Encoder()
    first, again = encoder.encode(FIELDS), encoder.encode(FIELDS)
    connection = [OPENING]
    for start in range(0, requests, streams):
        indices = range(start, min(start + streams, requests))
        of = {i: steps(i) if callable(steps) else steps for i in indices}
        for step in range(len(of[start])):
            last = step == len(of[start]) - 1
            data = b"".join(
                (
                    frame(HEADERS, END_HEADERS, 2 * i + 1, first if not i else again)
                    if not step
                    else b""
                )
                + data_frames(2 * i + 1, of[i][step], last)
                for i in indices
            )
            connection += in_reads(data)
    return connection


class _Kept(_Dropped):
    """A transport that keeps what is written (the check's run) or drops it (the timed
    runs)."""

    def __init__(self, keep: bool) -> None:
        self.keep = keep
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        if self.keep:
            self.written.append(bytes(data))


async def run(
    server: transport.Server, reads: list[bytes], keep: bool = False
) -> tuple[float, bytes]:
    """CPU seconds for the reads, and what the connection wrote when `keep`."""
    conn = Connection(server)
    out = _Kept(keep)
    conn.connection_made(out)  # type: ignore[arg-type]
    started = time.process_time()
    for data in reads:
        conn.data_received(data)
        await asyncio.sleep(0)  # a reply the shell awaits, and the turn's writes
    for _ in range(10_000):  # a large body's work goes on in slices, a loop turn each
        if not conn.streams:
            break
        await asyncio.sleep(0)
    spent = time.process_time() - started
    if conn.streams:
        raise RuntimeError(f"{len(conn.streams)} streams were not answered")
    conn.connection_lost(None)
    return spent, b"".join(out.written)


async def per_request(
    make: Callable[[], transport.Server],
    steps: list[bytes] | Callable[[int], list[bytes]],
    cluster: bytes | None,
    requests: int = REQUESTS,
    streams: int = STREAMS,
) -> float:
    """µs of CPU per request, best of ROUNDS, each round on a new connection."""
    server = make()
    _, written = await run(server, reads_of(streams, steps, streams), keep=True)
    if cluster is not None and written.count(cluster) != streams:
        raise RuntimeError(f"not every request was routed to {cluster!r}: a refusal?")
    reads = reads_of(requests, steps, streams)
    best = min([(await run(server, reads))[0] for _ in range(ROUNDS)])
    return best / requests * 1e6


def service(config: str = CONFIG) -> transport.Server:
    metrics = Metrics()
    metrics.defer()  # as a serving process with one loop counts
    return Service(load_text(config), metrics).server


def quiet_logs() -> None:
    """JSON lines as served, one per request, written to /dev/null."""
    stderr, sys.stderr = sys.stderr, open(os.devnull, "w")  # noqa: SIM115
    try:
        logging.configure(json=True)
    finally:
        sys.stderr = stderr


async def main() -> None:
    quiet_logs()
    print(machine())
    print(f"tree: {Path(extproc.__file__).parent.parent}")
    print(f"{REQUESTS:,} requests per run, {STREAMS} at a time, best of {ROUNDS}:")
    _, model, answer, _ = CASES[0]
    bare = await per_request(bare_server, messages(model, answer), None)
    print(f"  {'bare h2grpc ext_proc (the transport)':<40} {bare:7.1f} µs per request", flush=True)
    for label, model, answer, cluster in CASES:
        spent = await per_request(service, messages(model, answer), cluster)
        print(f"  {label:<40} {spent:7.1f} µs per request", flush=True)
    print(
        f"400 KB requests (bench/large_prompts.py's), demo policy, budget and accounting,"
        f" {LARGE_REQUESTS} per run, one at a time, in 64 KiB reads, best of {ROUNDS}:"
    )
    _, model, answer, cluster = CASES[0]
    for label, bodies in (("agent turn", agent_turn()), ("cold prompt", cold_prompt())):

        def steps(index: int, bodies: Callable[[int], bytes] = bodies) -> list[bytes]:
            return messages(model, answer, bodies(index))

        spent = await per_request(lambda: service(LARGE_CONFIG), steps, cluster, LARGE_REQUESTS, 1)
        print(f"  {label:<40} {spent:7.0f} µs per request", flush=True)


if __name__ == "__main__":
    uvloop.run(main())  # the service's loop
