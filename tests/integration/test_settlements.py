"""Budget settlements while Redis cannot take them, through a real Envoy and a real Redis
behind a relay the test can cut: they wait in the service, one entry per budget counter
however many streams settle, are written again until Redis takes them, and each counter
ends at the true charge, never counted twice."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import RedisServer
from tests.helpers import sha256
from tests.integration.conftest import Gateway, start_gateway
from tests.integration.test_abandoned_reservations import (  # Envoy waits 0.5 s, Redis 3 s
    AUTH,
    CONFIG,
    REQUEST,
    settles_to,
    stall,
    used,
    warm,
)

STREAMS = 20
WORDS = "one two three four five six seven eight"


class Relay:
    """A TCP relay to Redis. cut() refuses new connections and drops the ones it holds,
    as a network partition or a Redis restart does; restore() listens again."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = 0
        self.connections: set[socket.socket] = set()
        self.lock = threading.Lock()
        self.listener: socket.socket | None = None
        self.restore()

    def restore(self) -> None:
        listener = socket.create_server(("127.0.0.1", self.port))
        self.port = listener.getsockname()[1]
        listener.settimeout(0.05)
        self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while self.listener is listener:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            upstream = socket.create_connection(("127.0.0.1", self.target))
            with self.lock:
                self.connections |= {client, upstream}
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        listener, self.listener = self.listener, None
        if listener is not None:
            listener.close()
        with self.lock:
            dropped, self.connections = self.connections, set()
        for connection in dropped:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()


@pytest.fixture
def relayed(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[RedisServer, Relay, Gateway, str]]:
    """A gateway of its own per test: a cut leaves its Redis connections broken (each
    fails one request when next used)."""
    server = RedisServer(tmp_path_factory.mktemp("redis-relayed"))
    server.start()
    relay = Relay(server.port)
    prefix = f"st{uuid.uuid4().hex[:8]}:"
    try:
        gateway = start_gateway(
            tmp_path_factory.mktemp("settlements"),
            CONFIG,
            redis=f"redis://127.0.0.1:{relay.port}/0",
            prefix=prefix,
            key=sha256("key-team"),
        )
    except Exception:
        relay.cut()
        server.stop()
        raise
    try:
        yield server, relay, gateway, prefix
    finally:
        gateway.stack.stop()
        relay.cut()
        server.stop()


def slow_streams(gateway: Gateway, count: int, started: threading.Barrier) -> list[str]:
    """`count` streams at once, each ~2.4 s long; `started` is passed once every one has
    its response headers (its reservation is made). Their request ids, once all ended."""
    ids: list[str] = []

    def one() -> None:
        body = {**REQUEST, "stream": True, "messages": [{"role": "user", "content": WORDS}]}
        headers = {**AUTH, "x-mock-chunk-delay-ms": "300"}
        with httpx.stream(
            "POST", f"{gateway.url}/v1/chat/completions", json=body, headers=headers, timeout=30
        ) as reply:
            assert reply.status_code == 200
            started.wait(timeout=20)
            assert b"data: [DONE]" in reply.read()
            ids.append(reply.headers["x-request-id"])

    threads = [threading.Thread(target=one) for _ in range(count)]
    for thread in threads:
        thread.start()
    started.wait(timeout=20)
    for thread in threads:
        thread.join()
    return ids


def test_settlements_wait_while_redis_is_unreachable_and_land_once(
    relayed: tuple[RedisServer, Relay, Gateway, str],
) -> None:
    server, relay, gateway, prefix = relayed
    before = warm(server, gateway, prefix)
    failed_before = gateway.metric("extproc_budget_store_errors_total", operation="settle")
    started = threading.Barrier(STREAMS + 1, action=relay.cut)  # cut once all reserved
    try:
        ids = slow_streams(gateway, STREAMS, started)
        assert len(ids) == STREAMS
        records = [gateway.record(request_id)["usage"] for request_id in ids]
        deadline = time.monotonic() + 10
        while gateway.metric("extproc_budget_store_errors_total", operation="settle") <= (
            failed_before
        ):
            assert time.monotonic() < deadline, "no settlement was tried while Redis was away"
            time.sleep(0.05)
        # Twenty streams' settlements wait as one counter's adjustments: the batch being
        # written, and what came after it.
        assert 1 <= gateway.metric("extproc_budget_settlements_pending") <= 2
        # Redis still holds the reservations.
        assert used(server, prefix) == before + sum(r["reserved_tokens"] for r in records)
    finally:
        relay.restore()
    # Written again until Redis takes them: the true charge, each settlement once.
    settles_to(server, prefix, before + sum(r["total_tokens"] for r in records))
    deadline = time.monotonic() + 10
    while gateway.metric("extproc_budget_settlements_pending"):
        assert time.monotonic() < deadline, "settlements still pending"
        time.sleep(0.05)


def test_streams_abandoned_while_redis_stalls_are_all_taken_back(
    relayed: tuple[RedisServer, Relay, Gateway, str],
) -> None:
    server, _, gateway, prefix = relayed
    before = warm(server, gateway, prefix)
    replies: list[int] = []
    # Each client is made before Redis stalls, so that on a busy machine every request
    # still reaches it while it sleeps.
    ready = threading.Barrier(STREAMS + 1)

    def one() -> None:
        with httpx.Client(timeout=10) as client:
            ready.wait(timeout=20)
            reply = client.post(f"{gateway.url}/v1/chat/completions", json=REQUEST, headers=AUTH)
        replies.append(reply.status_code)

    threads = [threading.Thread(target=one) for _ in range(STREAMS)]
    for thread in threads:
        thread.start()
    sleeper = stall(server, 2.0)  # under the store's 3 s timeout: each reservation applies
    ready.wait(timeout=20)
    for thread in threads:
        thread.join()
    sleeper.join()
    # Envoy answered each itself; Redis applied each reservation when it woke, and the
    # service took every one back, in as few writes as it could.
    assert replies == [504] * STREAMS
    settles_to(server, prefix, before)
    assert gateway.metric("extproc_budget_store_errors_total") == 0
