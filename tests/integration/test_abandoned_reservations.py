"""A budget reservation still in flight when its stream is cancelled (the client leaves,
or Envoy's message timeout ends the wait) is taken back once Redis answers: through a
real Envoy, with a real Redis stalled by DEBUG SLEEP."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
import redis

from tests.conftest import RedisServer
from tests.helpers import sha256
from tests.integration.conftest import MOCK_BOTH, PORTS, Gateway, start_gateway

# Envoy gives up on a reply after 0.5 s; the store waits for Redis up to 3 s.
CONFIG = (
    PORTS.replace("message_timeout: 5s", "message_timeout: 0.5s")
    + MOCK_BOTH
    + """accounting:
  store: {{redis: {{url: "{redis}", key_prefix: "{prefix}", timeout: 3s}}}}
tenants:
  - name: team
    api_key_sha256: ["{key}"]
    budgets: [{{name: hourly, window: hour, max_tokens: 1000000}}]
"""
)
REQUEST = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "hi"}],
    "max_tokens": 50,
}
AUTH = {"authorization": "Bearer key-team"}


@pytest.fixture(scope="module")
def stalled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RedisServer, Gateway, str]]:
    server = RedisServer(tmp_path_factory.mktemp("redis-stalled"))
    server.start()
    prefix = f"ab{uuid.uuid4().hex[:8]}:"
    try:
        gateway = start_gateway(
            tmp_path_factory.mktemp("abandoned"),
            CONFIG,
            redis=server.url,
            prefix=prefix,
            key=sha256("key-team"),
        )
    except Exception:
        server.stop()
        raise
    try:
        yield server, gateway, prefix
    finally:
        gateway.stack.stop()
        server.stop()


def used(server: RedisServer, prefix: str) -> int:
    client = redis.Redis.from_url(server.url)
    try:
        counters = client.scan_iter(f"{prefix}*", _type="hash")  # not the settlements' marks
        return sum(int(client.hget(key, "t") or 0) for key in counters)
    finally:
        client.close()


def stall(server: RedisServer, seconds: float) -> threading.Thread:
    """Redis answers nothing for `seconds` (from about now on)."""

    def sleep() -> None:
        client = redis.Redis.from_url(server.url, socket_timeout=seconds + 5)
        try:
            client.execute_command("DEBUG", "SLEEP", str(seconds))
        finally:
            client.close()

    thread = threading.Thread(target=sleep)
    thread.start()
    time.sleep(0.1)  # the DEBUG SLEEP has reached Redis
    return thread


def settles_to(server: RedisServer, prefix: str, expected: int) -> None:
    deadline = time.monotonic() + 10
    while (value := used(server, prefix)) != expected:
        assert time.monotonic() < deadline, f"{value} tokens counted, not {expected}"
        time.sleep(0.05)


def served(gateway: Gateway) -> int:
    """One request answered in full: the tokens it was charged."""
    reply = httpx.post(f"{gateway.url}/v1/chat/completions", json=REQUEST, headers=AUTH, timeout=10)
    assert reply.status_code == 200
    return int(gateway.record(reply.headers["x-request-id"])["usage"]["total_tokens"])


def warm(server: RedisServer, gateway: Gateway, prefix: str) -> int:
    """One request served and settled, so that the service's Redis connection is up and
    its scripts are loaded: the tokens counted then."""
    expected = used(server, prefix) + served(gateway)
    settles_to(server, prefix, expected)
    return expected


def test_the_client_leaving_while_redis_stalls_leaves_no_charge(
    stalled: tuple[RedisServer, Gateway, str],
) -> None:
    server, gateway, prefix = stalled
    before = warm(server, gateway, prefix)
    sleeper = stall(server, 1.5)
    with pytest.raises(httpx.ReadTimeout):  # the client gives up before Envoy does
        httpx.post(f"{gateway.url}/v1/chat/completions", json=REQUEST, headers=AUTH, timeout=0.3)
    sleeper.join()
    # Redis applied the reservation when it woke; the service took it back.
    settles_to(server, prefix, before)
    assert served(gateway) > 0  # and the next request is served as usual


def test_envoys_message_timeout_while_redis_stalls_leaves_no_charge(
    stalled: tuple[RedisServer, Gateway, str],
) -> None:
    server, gateway, prefix = stalled
    before = warm(server, gateway, prefix)
    sleeper = stall(server, 1.5)
    reply = httpx.post(f"{gateway.url}/v1/chat/completions", json=REQUEST, headers=AUTH, timeout=10)
    assert reply.status_code == 504  # Envoy's own answer: the service did not reply in time
    sleeper.join()
    settles_to(server, prefix, before)
    assert gateway.metric("extproc_budget_store_errors_total") == 0
