"""Budgets through a real Envoy: 429s in the client's schema, concurrency with the
in-process store, with Redis, and with two gateways sharing Redis; partial charges."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
import redis

from tests.helpers import sha256
from tests.integration.conftest import MOCK_BOTH, PORTS, Gateway, start_gateway

BUDGET = 300
CONFIG = (
    PORTS
    + MOCK_BOTH
    + """prices:
  models: [{{models: ["*"], input: 1, output: 2}}]
accounting:
  store: {store}
tenants:
  - name: capped
    api_key_sha256: ["{capped}"]
    budgets: [{{name: daily-tokens, window: day, max_tokens: {budget}}}]
  - name: tiny
    api_key_sha256: ["{tiny}"]
    budgets:
      - {{name: pennies, window: month, max_cost: 0.000001}}
  - name: streamer
    api_key_sha256: ["{streamer}"]
    budgets: [{{name: hourly, window: hour, max_tokens: 1000000}}]
  - name: bystander
    api_key_sha256: ["{bystander}"]
    budgets: [{{name: hourly, window: hour, max_tokens: 1000000}}]
  - name: long
    api_key_sha256: ["{long}"]
    budgets: [{{name: long-prompts, window: day, max_tokens: 40000}}]
"""
)
# One request: a short prompt and a completion cap of 40 (the reservation), of which the
# mock uses about half.
HELLO = [{"role": "user", "content": "Hello there, how are you today?"}]


def launch(workdir: Path, store: str, **ports: int) -> Gateway:
    return start_gateway(
        workdir,
        CONFIG,
        store=store,
        budget=BUDGET,
        capped=sha256("key-capped"),
        tiny=sha256("key-tiny"),
        streamer=sha256("key-streamer"),
        bystander=sha256("key-bystander"),
        long=sha256("key-long"),
        ports=ports,
    )


@pytest.fixture(scope="module")
def memory_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gateway = launch(tmp_path_factory.mktemp("budgets-memory"), "{memory: {}}")
    yield gateway
    gateway.stack.stop()


@pytest.fixture(scope="module")
def redis_gateways(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str
) -> Iterator[tuple[Gateway, Gateway, str]]:
    prefix = f"it{uuid.uuid4().hex[:8]}:"
    store = f'{{redis: {{url: "{redis_url}", key_prefix: "{prefix}"}}}}'
    first = launch(tmp_path_factory.mktemp("budgets-redis-1"), store)
    try:
        second = launch(tmp_path_factory.mktemp("budgets-redis-2"), store)
    except Exception:
        first.stack.stop()
        raise
    yield first, second, prefix
    first.stack.stop()
    second.stack.stop()


def fire(gateways: list[Gateway], count: int) -> list[httpx.Response]:
    """`count` parallel requests, alternating gateways; each holds its reservation ~300 ms."""

    def one(number: int) -> httpx.Response:
        gateway = gateways[number % len(gateways)]
        return httpx.post(
            f"{gateway.url}/v1/chat/completions",
            json={"model": "gpt-4o-mini", "messages": HELLO, "max_tokens": 40},
            headers={"authorization": "Bearer key-capped", "x-mock-delay-ms": "300"},
            timeout=15,
        )

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(one, range(count)))


def charged(gateways: list[Gateway], responses: list[httpx.Response]) -> tuple[int, int]:
    """Tokens used by the admitted requests (from the service's records) and the largest
    reservation among them."""
    used = largest = 0
    for response in responses:
        if response.status_code != 200:
            continue
        request_id = response.headers["x-request-id"]
        record = next(
            (r for g in gateways for r in g.records(request_id)),
            None,
        ) or _wait_record(gateways, request_id)
        used += record["usage"]["total_tokens"]
        largest = max(largest, record["usage"]["reserved_tokens"])
    return used, largest


def _wait_record(gateways: list[Gateway], request_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for gateway in gateways:
            found = gateway.records(request_id)
            if found:
                return found[0]
        time.sleep(0.05)
    raise AssertionError(f"no record for {request_id}")


def check_concurrency(gateways: list[Gateway], responses: list[httpx.Response]) -> int:
    statuses = sorted(r.status_code for r in responses)
    admitted = statuses.count(200)
    assert 0 < admitted < len(responses), statuses
    assert set(statuses) == {200, 429}, statuses
    used, largest = charged(gateways, responses)
    # The guarantee: never more than one request's reservation over the budget.
    assert used <= BUDGET + largest, (used, largest)
    refused = next(r for r in responses if r.status_code == 429)
    assert int(refused.headers["retry-after"]) > 0
    assert refused.json()["error"]["code"] == "budget_exceeded"
    return used


def test_concurrent_requests_against_the_in_process_store(memory_gateway: Gateway) -> None:
    check_concurrency([memory_gateway], fire([memory_gateway], 16))


def redis_tokens(redis_url: str, prefix: str, tenant: str) -> int:
    client = redis.Redis.from_url(redis_url)
    try:
        return sum(
            int(client.hget(key, "t") or 0)
            for key in client.scan_iter(f"{prefix}{{{tenant}}}:*", _type="hash")  # no marks
        )
    finally:
        client.close()


def settled(redis_url: str, prefix: str, tenant: str, expected: int) -> int:
    """The Redis counter once the settlements (written after each response) landed."""
    deadline = time.monotonic() + 5
    while True:
        value = redis_tokens(redis_url, prefix, tenant)
        if value == expected or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def test_concurrent_requests_on_two_gateways_sharing_redis(
    redis_gateways: tuple[Gateway, Gateway, str], redis_url: str
) -> None:
    first, second, prefix = redis_gateways
    responses = fire([first, second], 16)
    used = check_concurrency([first, second], responses)
    # Both replicas took part: each decided on its half of the requests.
    for number, gateway in enumerate((first, second)):
        mine = responses[number::2]
        assert all(gateway.records(r.headers["x-request-id"]) for r in mine)
    # After settlement the shared counter holds exactly what was used.
    assert settled(redis_url, prefix, "capped", used) == used


def test_over_budget_is_429_in_each_client_schema(memory_gateway: Gateway) -> None:
    client = openai.OpenAI(
        base_url=f"{memory_gateway.url}/v1", api_key="key-tiny", max_retries=0, timeout=15
    )
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, max_tokens=10)
    assert caught.value.code == "budget_exceeded"
    assert "pennies" in caught.value.message
    retry_after = int(caught.value.response.headers["retry-after"])
    assert 0 < retry_after <= 31 * 86400
    claude = anthropic.Anthropic(
        base_url=memory_gateway.url, api_key="key-tiny", max_retries=0, timeout=15
    )
    with pytest.raises(anthropic.RateLimitError) as refused:
        claude.messages.create(model="claude-x", max_tokens=10, messages=HELLO)
    assert refused.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert refused.value.response.headers["retry-after"]


def test_one_tenants_exhausted_budget_is_not_anothers(
    redis_gateways: tuple[Gateway, Gateway, str], redis_url: str
) -> None:
    """Budgets are counted per tenant: one at its limit leaves the others' counters and
    requests alone, and nothing a client sends chooses whose budget is charged."""
    gateway, _, prefix = redis_gateways
    before = redis_tokens(redis_url, prefix, "bystander")
    tiny = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="key-tiny", max_retries=0)
    for _ in range(3):
        with pytest.raises(openai.RateLimitError):
            tiny.chat.completions.create(
                model="gpt-4o-mini",
                messages=HELLO,
                max_tokens=10,
                extra_headers={"x-extproc-tenant": "bystander", "x-tenant": "bystander"},
            )
    assert redis_tokens(redis_url, prefix, "bystander") == before
    bystander = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="key-bystander", max_retries=0)
    reply = bystander.chat.completions.create(model="gpt-4o-mini", messages=HELLO, max_tokens=10)
    assert reply.choices[0].message.content
    expected = before + reply.usage.total_tokens  # type: ignore[union-attr]
    assert settled(redis_url, prefix, "bystander", expected) == expected


def test_client_disconnect_is_charged_for_what_was_streamed(
    redis_gateways: tuple[Gateway, Gateway, str], redis_url: str
) -> None:
    gateway, _, prefix = redis_gateways
    prompt = "word " * 200
    with (
        httpx.Client(timeout=15) as client,
        client.stream(
            "POST",
            f"{gateway.url}/v1/chat/completions",
            json={
                "model": "gpt-4o-mini",
                "stream": True,
                "max_tokens": 5000,
                "messages": [{"role": "user", "content": prompt}],
            },
            headers={"authorization": "Bearer key-streamer", "x-mock-chunk-delay-ms": "50"},
        ) as response,
    ):
        request_id = response.headers["x-request-id"]
        seen = 0
        for line in response.iter_lines():
            seen += line.startswith("data: ")
            if seen == 5:
                break  # leave mid-stream: the connection closes with the client
    record = _wait_record([gateway], request_id)
    usage = record["usage"]
    assert usage["complete"] is False
    assert "output_tokens" in usage["estimated"]
    assert 0 < usage["output_tokens"] < 5000
    assert usage["reserved_tokens"] > usage["total_tokens"]
    # The reservation was settled down to the partial usage.
    assert settled(redis_url, prefix, "streamer", usage["total_tokens"]) == usage["total_tokens"]


@pytest.mark.parametrize("store", ["memory", "redis"])
def test_a_long_prompt_is_admitted_by_its_count_not_its_bytes(
    store: str, request: pytest.FixtureRequest
) -> None:
    """A long prompt first reserves its bytes (counting it would hold the event loop); where
    the budget refuses that, it is counted and asked again, so a request is refused only
    when its count does not fit. Only the client's 429s are counted as refusals."""
    if store == "memory":
        gateway: Gateway = request.getfixturevalue("memory_gateway")
    else:
        gateway = request.getfixturevalue("redis_gateways")[0]
    refusals = gateway.metric("extproc_budget_refusals_total", budget="long-prompts")

    def send(number: int) -> httpx.Response:
        words = " ".join(f"{store}{number}w{n % 89}" for n in range(6_000))  # ~60 KB, new
        return httpx.post(
            f"{gateway.url}/v1/chat/completions",
            json={
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": words}],
                "max_tokens": 10,
            },
            headers={"authorization": "Bearer key-long"},
            timeout=15,
        )

    first = send(0)
    assert first.status_code == 200, first.text  # ~60K bytes: past 40,000 by its bytes
    record = _wait_record([gateway], first.headers["x-request-id"])
    assert 10 < record["usage"]["reserved_tokens"] < 40_000
    responses = [first]
    for number in range(1, 6):
        responses.append(send(number))
        if responses[-1].status_code == 429:
            break
    assert responses[-1].status_code == 429, [r.status_code for r in responses]
    assert responses[-1].json()["error"]["code"] == "budget_exceeded"
    after = gateway.metric("extproc_budget_refusals_total", budget="long-prompts")
    assert after == refusals + 1
