"""Budgets in Redis while Redis goes away, comes back, and stalls: the gateway follows
its configured failure mode promptly and recovers by itself."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import anthropic
import httpx
import openai
import pytest

from tests.conftest import RedisServer
from tests.integration.conftest import MOCK_BOTH, PORTS, Gateway, start_gateway

CONFIG = (
    PORTS
    + MOCK_BOTH
    + """accounting:
  store: {{redis: {{url: "{redis}", timeout: 0.2s}}, fail_open: {fail_open}}}
tenants:
  - name: anyone
    budgets: [{{name: hourly, window: hour, max_tokens: 10000000}}]
auth: {{anonymous_tenant: anyone}}
"""
)
HELLO = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def outage(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[RedisServer, Gateway, Gateway]]:
    server = RedisServer(tmp_path_factory.mktemp("redis-outage"))
    server.start()
    closed = start_gateway(
        tmp_path_factory.mktemp("closed"), CONFIG, redis=server.url, fail_open="false"
    )
    opened = start_gateway(
        tmp_path_factory.mktemp("open"), CONFIG, redis=server.url, fail_open="true"
    )
    try:
        yield server, closed, opened
    finally:
        opened.stack.stop()
        closed.stack.stop()
        server.stop()


def answer(gateway: Gateway) -> tuple[str, float]:
    started = time.monotonic()
    try:
        gateway.openai(key="none").chat.completions.create(model="gpt-4o-mini", messages=HELLO)
        result = "ok"
    except openai.APIStatusError as error:
        assert isinstance(error.body, dict)
        result = f"{error.status_code} {error.body['code']}"
    return result, time.monotonic() - started


def store_errors(gateway: Gateway) -> float:
    total = 0.0
    for row in httpx.get(gateway.metrics_url, timeout=5).text.splitlines():
        if row.startswith("extproc_budget_store_errors_total{"):
            total += float(row.split()[-1])
    return total


def until(gateway: Gateway, expected: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while answer(gateway)[0] != expected:
        assert time.monotonic() < deadline, f"never {expected}"
        time.sleep(0.1)


def test_redis_down_then_back(outage: tuple[RedisServer, Gateway, Gateway]) -> None:
    server, closed, opened = outage
    assert answer(closed)[0] == "ok" and answer(opened)[0] == "ok"
    server.stop()
    try:
        # Closed: a prompt 503 in the client's schema, never an unchecked request.
        result, took = answer(closed)
        assert result == "503 budget_unavailable" and took < 2, (result, took)
        with pytest.raises(anthropic.APIStatusError) as caught:
            anthropic.Anthropic(base_url=closed.url, api_key="none", max_retries=0).messages.create(
                model="claude-3-5-haiku-latest", max_tokens=10, messages=HELLO
            )
        assert caught.value.status_code == 503 and caught.value.body["type"] == "error"  # type: ignore[index]
        # Open: served, and the failure is counted.
        before = store_errors(opened)
        result, took = answer(opened)
        assert result == "ok" and took < 2, (result, took)
        assert store_errors(opened) > before
    finally:
        server.start()  # the same port
    # Both recover by themselves.
    until(closed, "ok")
    until(opened, "ok")


def test_a_stalled_redis_is_a_prompt_failure_not_a_hang(
    outage: tuple[RedisServer, Gateway, Gateway],
) -> None:
    server, closed, _ = outage
    until(closed, "ok")

    def stall() -> None:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as connection:
            connection.sendall(b"DEBUG SLEEP 3\r\n")
            connection.recv(16)

    sleeper = threading.Thread(target=stall)
    sleeper.start()
    time.sleep(0.2)
    result, took = answer(closed)
    assert result == "503 budget_unavailable" and took < 2, (result, took)
    sleeper.join()
    until(closed, "ok")
