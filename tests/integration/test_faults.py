"""Faults through a real Envoy: provider failures, the service killed under load, clients
leaving mid-stream, Redis down or slow. Each ends promptly in a well-formed answer in the
client's schema (or a cleanly ended stream), and what happened is recorded."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

from tests.integration.conftest import GATEWAY_KEYS, PORTS, Gateway, start_gateway

QUESTION = [{"role": "user", "content": "are you there?"}]


def openai_failure(
    gateway: Gateway, model: str, headers: dict[str, str]
) -> tuple[openai.APIStatusError, float]:
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as caught:
        gateway.openai(default_headers=headers).chat.completions.create(
            model=model, messages=QUESTION
        )
    return caught.value, time.monotonic() - started


@pytest.mark.parametrize(
    ("model", "headers", "status", "code"),
    [
        ("gpt-4o-mini", {"x-mock-status": "500"}, 500, None),
        ("gpt-4o-mini", {"x-mock-status": "503"}, 503, None),
        ("gpt-4o-mini", {"x-mock-status": "429"}, 429, None),
        ("unreachable", {}, 503, "upstream_error"),
        ("gpt-4o-mini", {"x-mock-cut-after": "0"}, 503, "upstream_error"),
    ],
    ids=["500", "503", "429", "connection-refused", "reset-before-answer"],
)
def test_provider_failures_reach_openai_clients_in_their_schema(
    gateway: Gateway, model: str, headers: dict[str, str], status: int, code: str | None
) -> None:
    error, elapsed = openai_failure(gateway, model, headers)
    assert error.status_code == status
    body = error.body
    assert isinstance(body, dict) and isinstance(body.get("message"), str), body
    if code is not None:
        assert body["code"] == code
    if status == 429:
        # The provider's advice reaches the client.
        assert error.response.headers["retry-after"] == "1"
    assert elapsed < 5
    request_id = error.response.headers["x-request-id"]
    record = gateway.record(request_id)
    assert record["status"] == status


@pytest.mark.parametrize(
    ("headers", "status", "error_type"),
    [
        ({"x-mock-status": "503"}, 503, None),
        ({"x-mock-status": "429"}, 429, "rate_limit_error"),
        ({"x-mock-cut-after": "0"}, 503, "api_error"),
    ],
    ids=["503", "429", "reset-before-answer"],
)
def test_provider_failures_reach_anthropic_clients_in_their_schema(
    gateway: Gateway, headers: dict[str, str], status: int, error_type: str | None
) -> None:
    client = anthropic.Anthropic(
        base_url=gateway.url, api_key=GATEWAY_KEYS["team-b"], max_retries=0, default_headers=headers
    )
    with pytest.raises(anthropic.APIStatusError) as caught:
        client.messages.create(model="claude-3-5-haiku-latest", max_tokens=20, messages=QUESTION)
    assert caught.value.status_code == status
    body = caught.value.body
    assert isinstance(body, dict) and body["type"] == "error", body
    if error_type is not None:
        assert body["error"]["type"] == error_type


# -- the service killed under load ------------------------------------------------------

OWN = (
    PORTS
    + """backends:
  - name: openai
    url: http://127.0.0.1:{mock_port}/v1
    credential: {{env: IT_OPENAI_KEY}}
models:
  - name: gpt-4o-mini
    routes: [{{backend: openai}}]
tenants: [{{name: anyone}}]
auth: {{anonymous_tenant: anyone}}
"""
)


@pytest.fixture
def own_gateway(tmp_path: Path) -> Iterator[Gateway]:
    gateway = start_gateway(tmp_path / "gateway", OWN)
    yield gateway
    gateway.stack.stop()


def outcome(gateway: Gateway, stream: bool, headers: dict[str, str]) -> tuple[str, float]:
    """What one client saw, and when it ended."""
    client = gateway.openai(key="none", default_headers=headers)
    try:
        if stream:
            text = ""
            for chunk in client.chat.completions.create(
                model="gpt-4o-mini",
                stream=True,
                messages=[{"role": "user", "content": "a b c d e f g h i j k l"}],
            ):
                if chunk.choices and chunk.choices[0].delta.content:
                    text += chunk.choices[0].delta.content
            result = "complete" if text == "a b c d e f g h i j k l" else "short"
        else:
            client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION)
            result = "complete"
    except openai.InternalServerError as error:
        body = error.body
        assert isinstance(body, dict) and isinstance(body["message"], str)  # OpenAI schema
        result = f"json {error.status_code}"
    except openai.APIConnectionError:
        result = "cut"
    return result, time.monotonic()


def test_service_killed_under_load_fails_promptly_and_recovers(own_gateway: Gateway) -> None:
    gateway = own_gateway
    work = [(False, {"x-mock-delay-ms": "1500"})] * 6 + [
        (True, {"x-mock-chunk-delay-ms": "200"})
    ] * 6
    with ThreadPoolExecutor(len(work)) as pool:
        futures = [pool.submit(outcome, gateway, stream, headers) for stream, headers in work]
        time.sleep(0.7)
        service = gateway.stack.processes["service"]
        service.kill()
        killed = time.monotonic()
        results = [future.result(timeout=30) for future in futures]
    service.wait(5)
    # Every affected request ended promptly: a JSON 500 in the client's schema, or (a
    # stream whose answer had begun) a cut stream; none hung.
    for result, ended in results:
        assert result in ("json 500", "cut"), results
        assert ended - killed < 3, results
    # While it is down, requests fail closed at once, with JSON.
    started = time.monotonic()
    assert outcome(gateway, False, {})[0] == "json 500"
    assert time.monotonic() - started < 2
    # Back up: traffic recovers without restarting Envoy.
    envoy = gateway.stack.processes["envoy"]
    gateway.stack.restart_service()
    deadline = time.monotonic() + 10
    while outcome(gateway, False, {})[0] != "complete":
        assert time.monotonic() < deadline, "no recovery"
        time.sleep(0.1)
    assert outcome(gateway, True, {})[0] == "complete"
    assert envoy.poll() is None and gateway.stack.processes["envoy"] is envoy


# -- clients leaving mid-stream ---------------------------------------------------------


def metric(gateway: Gateway, name: str) -> float:
    for row in httpx.get(gateway.metrics_url, timeout=5).text.splitlines():
        if row.startswith(name + " "):
            return float(row.split()[-1])
    raise AssertionError(f"no metric {name}")


def test_clients_leaving_mid_stream_leave_nothing_behind(gateway: Gateway) -> None:
    """Each departure ends its exchange: no stream stays open, the partial usage is
    recorded, and memory does not grow with the number of departures."""

    def leave_early(_: int) -> str:
        with (
            httpx.Client(base_url=gateway.url, timeout=10) as http,
            http.stream(
                "POST",
                "/v1/chat/completions",
                headers={
                    "authorization": f"Bearer {GATEWAY_KEYS['team-a']}",
                    "x-mock-chunk-delay-ms": "100",
                },
                json={
                    "model": "gpt-4o-mini",
                    "stream": True,
                    "messages": [{"role": "user", "content": " ".join(["word"] * 40)}],
                },
            ) as response,
        ):
            lines = response.iter_lines()
            while "data:" not in next(lines):
                pass  # one event arrived: leave
            return response.headers["x-request-id"]

    leave_early(0)
    time.sleep(0.5)
    before = metric(gateway, "process_resident_memory_bytes")
    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(leave_early, range(40)))
    deadline = time.monotonic() + 10
    while metric(gateway, "extproc_active_streams") != 0:
        assert time.monotonic() < deadline, "streams left open"
        time.sleep(0.1)
    for request_id in ids[:5]:
        usage = gateway.record(request_id)["usage"]
        assert usage["complete"] is False and "output_tokens" in usage["estimated"]
        assert usage["input_tokens"] > 40 and 0 <= usage["output_tokens"] < 40
    grown = metric(gateway, "process_resident_memory_bytes") - before
    assert grown < 16 * 1024 * 1024, f"RSS grew {grown / 1e6:.1f} MB over 40 departures"
