"""Accounting through the Exchange state machine: stream usage, reservations, records."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import orjson
import pytest

from extproc import tokens
from extproc.accounting.budgets import NANOS
from extproc.config import ConfigError
from extproc.dataplane import report
from extproc.dataplane.decisions import Continue, Reply, Reserve, Reserved
from extproc.dataplane.exchange import Exchange
from tests.helpers import runtime, sha256

DATA = Path(__file__).parent.parent / "data" / "responses"
NOW = dt.datetime(2026, 11, 25, 14, 0, 30, tzinfo=dt.UTC).timestamp()

CONFIG = f"""
backends:
  - {{name: openai, url: "http://127.0.0.1:9/v1"}}
  - {{name: anthropic, schema: anthropic, url: "http://127.0.0.1:9/v1"}}
models:
  - {{name: gpt-4o-mini, routes: [{{backend: openai}}]}}
  - {{name: gpt-4o, routes: [{{backend: openai, upstream_model: gpt-4o-2024-08-06}}]}}
  - {{name: "claude-*", routes: [{{backend: anthropic}}]}}
  - {{name: text-embedding-3-small, routes: [{{backend: openai}}]}}
prices:
  currency: EUR
  models:
    - {{models: ["gpt-4o-mini*"], input: 0.15, output: 0.60, cached_input: 0.075}}
    - {{models: ["claude-*"], input: 3, output: 15, cached_input: 0.3, cache_creation_input: 3.75}}
accounting: {{default_reserved_output_tokens: 500}}
tenants:
  - name: metered
    api_key_sha256: ["{sha256("key-m")}"]
    budgets:
      - {{name: minute, window: minute, max_tokens: 2000}}
      - {{name: claude-daily, window: day, max_cost: 0.05, models: ["claude-*"], per_model: true}}
  - name: free
    api_key_sha256: ["{sha256("key-f")}"]
"""
RT = runtime(CONFIG)


def start(path: str = "/v1/chat/completions", key: str = "key-f") -> Exchange:
    exchange = Exchange(RT, clock=lambda: NOW, roll=lambda: 0.0)
    request = {":path": path, ":method": "POST", "authorization": f"Bearer {key}"}
    assert isinstance(exchange.request_headers(request, end_of_stream=False), Continue)
    return exchange


def body_of(decision: object) -> dict[str, Any]:
    assert isinstance(decision, Continue) and decision.body is not None, decision
    parsed = orjson.loads(decision.body)
    assert isinstance(parsed, dict)
    return parsed


def chat(**fields: Any) -> bytes:
    messages = [{"role": "user", "content": "Say hello to the world"}]
    return orjson.dumps({"model": "gpt-4o-mini", "messages": messages, **fields})


def test_stream_without_usage_asks_the_provider_for_it() -> None:
    exchange = start()
    sent = body_of(exchange.request_body(chat(stream=True)))
    assert sent["stream_options"] == {"include_usage": True}
    assert exchange.plan is not None and exchange.plan.strip_usage


@pytest.mark.parametrize("options", [{"include_usage": False}, {"other": 1}])
def test_other_stream_options_are_kept(options: dict[str, Any]) -> None:
    exchange = start()
    sent = body_of(exchange.request_body(chat(stream=True, stream_options=options)))
    assert sent["stream_options"] == {**options, "include_usage": True}


def test_stream_that_asked_for_usage_is_left_alone() -> None:
    exchange = start()
    decision = exchange.request_body(chat(stream=True, stream_options={"include_usage": True}))
    assert isinstance(decision, Continue) and decision.body is None
    assert exchange.plan is not None and not exchange.plan.strip_usage


def run_stream(exchange: Exchange, name: str, cut: int | None = None) -> bytes:
    headers = {":status": "200", "content-type": "text/event-stream; charset=utf-8"}
    decision = exchange.response_headers(headers)
    assert decision.response_body == "streamed"
    stream = (DATA / name).read_bytes()
    if cut is not None:
        stream = stream[:cut]
    out = b""
    for position in range(0, len(stream), 100):
        piece = stream[position : position + 100]
        last = cut is None and position + 100 >= len(stream)
        reply = exchange.response_body(piece, last)
        out += piece if reply.body is None else reply.body
        if last:
            assert reply.metadata is not None
            assert reply.metadata["input_tokens"] == 82
    return out


def test_stream_usage_is_recorded_and_hidden_from_the_client() -> None:
    exchange = start()
    exchange.request_body(chat(stream=True))
    out = run_stream(exchange, "openai_stream_usage.sse")
    assert out == (DATA / "openai_stream.sse").read_bytes()
    assert exchange.finish() == []
    usage = report.record(exchange)["usage"]
    assert isinstance(usage, dict)
    assert usage["input_tokens"] == 82 and usage["output_tokens"] == 17
    assert usage["cached_input_tokens"] == 64 and usage["estimated"] == []
    # (82 - 64) x 0.15 + 64 x 0.075 + 17 x 0.60 per million
    assert usage["cost"] == pytest.approx((18 * 0.15 + 64 * 0.075 + 17 * 0.6) / 1e6)
    assert usage["currency"] == "EUR" and usage["complete"] is True


def test_json_usage_becomes_dynamic_metadata() -> None:
    exchange = start()
    exchange.request_body(chat())
    decision = exchange.response_headers({":status": "200", "content-type": "application/json"})
    assert decision.response_body == "buffered"
    reply = exchange.response_body((DATA / "openai_chat.json").read_bytes(), True)
    assert reply.body is None  # nothing changed: the provider's bytes go through
    assert reply.metadata is not None
    assert {k: reply.metadata[k] for k in ("input_tokens", "output_tokens", "total_tokens")} == {
        "input_tokens": 1117,
        "output_tokens": 46,
        "total_tokens": 1163,
    }
    assert reply.metadata["cached_input_tokens"] == 1024
    assert reply.metadata["model"] == "gpt-4o-mini"
    assert reply.metadata["backend"] == "openai"
    assert reply.metadata["tenant"] == "free"
    assert reply.metadata["estimated"] == ""
    assert isinstance(reply.metadata["cost"], float) and reply.metadata["cost"] > 0


def test_error_responses_are_not_read() -> None:
    exchange = start()
    exchange.request_body(chat())
    assert exchange.response_headers({":status": "429"}).response_body is None
    exchange.finish()
    assert report.record(exchange)["usage"] == {
        "input_tokens": 0,
        "output_tokens": 0,
        "total_tokens": 0,
        "cached_input_tokens": 0,
        "cache_creation_input_tokens": 0,
        "reasoning_tokens": 0,
        "reported": [],
        "estimated": [],
        "cost": 0.0,
        "currency": "EUR",
    }


def test_cut_stream_is_estimated_and_marked() -> None:
    exchange = start()
    exchange.request_body(chat(stream=True))
    stream = (DATA / "openai_stream_usage.sse").read_bytes()
    run_stream(exchange, "openai_stream_usage.sse", cut=stream.index(b"get_weather"))
    exchange.finish()
    usage = report.record(exchange)["usage"]
    assert isinstance(usage, dict)
    assert usage["complete"] is False
    assert usage["estimated"] == ["input_tokens", "output_tokens", "total_tokens"]
    assert usage["output_tokens"] == tokens.count(["Héllo", " wörld ☕"])
    assert usage["input_tokens"] == tokens.count(["Say hello to the world"]) + 6


def reserve(exchange: Exchange, body: bytes) -> Reserve:
    decision = exchange.request_body(body)
    assert isinstance(decision, Reserve), decision
    return decision


def test_reservation_is_the_prompts_bound_plus_the_completion_cap() -> None:
    """A first reservation counts no new text: its prompt part is the text's bytes (never
    below its tokens). Refused, the prompt is counted and the exact reservation asked."""
    exchange = start(key="key-m")
    bound = len(b"Say hello to the world") + 6
    decision = reserve(exchange, chat(max_tokens=100))
    assert decision.reservation.tokens == bound + 100
    assert [c.budget for c in decision.reservation.charges] == ["minute"]
    assert decision.reservation.charges[0].window_end == int(NOW) - 30 + 60
    again = exchange.resolve(Reserved(decision.reservation.charges[0]))
    assert isinstance(again, Reserve)
    assert again.reservation.tokens == tokens.count(["Say hello to the world"]) + 6 + 100
    # No cap in the request: the configured default.
    assert reserve(start(key="key-m"), chat()).reservation.tokens == bound + 500
    # A text long enough for its count to be kept is counted at once.
    text = "Say hello to the world, and to everyone in it. " * 30
    messages = [{"role": "user", "content": text}]
    first = reserve(start(key="key-m"), chat(messages=messages, max_tokens=100))
    assert len(text) >= tokens.MEMO_CHARS
    assert first.reservation.tokens == tokens.count([text]) + 6 + 100


def test_a_prompt_past_the_counting_bounds_reserves_at_least_its_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past tokens.measure()'s bounds the reservation is the exact count of what fits and
    the bytes of the rest: never below the count it replaces. Its usage record, when the
    provider reports no input, is estimated from the part counted."""
    monkeypatch.setattr(tokens, "EXACT_TOKENS", 20)
    text = "Say hello to the world, and to everyone in it, twice over. " * 4
    messages = [{"role": "user", "content": "Say hello"}, {"role": "user", "content": text}]

    def counted(body: bytes) -> int:
        """The reservation asked after the first, rough one is refused: counted."""
        exchange = start(key="key-m")
        first = reserve(exchange, body)
        again = exchange.resolve(Reserved(first.reservation.charges[0]))
        assert isinstance(again, Reserve) and again.reservation.tokens < first.reservation.tokens
        return again.reservation.tokens

    exact = tokens.count(["Say hello", text]) + 3 + 3 * 2
    bound = tokens.count(["Say hello"]) + len(text) + 3 + 3 * 2
    assert counted(chat(messages=messages, max_tokens=100)) == bound + 100 > exact + 100
    monkeypatch.setattr(tokens, "EXACT_TOKENS", 1 << 17)
    assert counted(chat(messages=messages, max_tokens=100)) == exact + 100


def test_settlement_refunds_what_was_not_used() -> None:
    exchange = start(key="key-m")
    decision = reserve(exchange, chat(max_tokens=2000))
    forwarded = exchange.resolve(Reserved(None))
    assert isinstance(forwarded, Continue) and exchange.reservation is decision.reservation
    exchange.response_headers({":status": "200", "content-type": "application/json"})
    exchange.response_body((DATA / "openai_chat.json").read_bytes(), True)
    [charge] = exchange.finish()
    assert charge.tokens == 1163 - decision.reservation.tokens
    assert charge.key == decision.reservation.charges[0].key


def test_cost_budget_reserves_the_priced_estimate_per_model() -> None:
    exchange = start("/v1/messages", key="key-m")
    body = orjson.dumps(
        {"model": "claude-x", "max_tokens": 1000, "messages": [{"role": "user", "content": "hi"}]}
    )
    decision = reserve(exchange, body)
    prompt = decision.reservation.tokens - 1000
    assert decision.reservation.cost == round((prompt * 3 + 1000 * 15) / 1e6 * NANOS)
    charges = {c.budget: c for c in decision.reservation.charges}
    assert set(charges) == {"minute", "claude-daily"}
    assert ":claude-daily:claude-x:" in charges["claude-daily"].key


def test_over_budget_is_429_with_retry_after_in_the_client_schema() -> None:
    exchange = start("/v1/messages", key="key-m")
    body = b'{"model": "claude-x", "max_tokens": 10, "messages": [{"role":"user","content":"hi"}]}'
    decision = reserve(exchange, body)
    again = exchange.resolve(Reserved(decision.reservation.charges[0]))  # counted, asked again
    assert isinstance(again, Reserve)
    refusal = exchange.resolve(Reserved(again.reservation.charges[0]))
    assert isinstance(refusal, Reply) and refusal.status == 429
    assert ("retry-after", "30") in refusal.headers
    payload = orjson.loads(refusal.body)
    assert payload["type"] == "error" and payload["error"]["type"] == "rate_limit_error"
    assert "minute" in payload["error"]["message"]


def test_budget_config_is_checked() -> None:
    with pytest.raises(ConfigError) as error:
        runtime(
            """
            backends: [{name: b, url: "http://127.0.0.1:9/v1"}]
            models: [{name: m, routes: [{backend: b}]}]
            accounting: {store: {redis: {url: "http://x"}}}
            prices: {currency: dollars, models: [{models: [], input: -1}]}
            tenants:
              - name: t
                budgets:
                  - {name: a, window: day}
                  - {name: a, max_cost: 1, window: hour}
                  - {name: c, max_tokens: 5}
            """
        )
    problems = "\n".join(error.value.problems)
    for expected in (
        "accounting.store.redis.url: expected",
        "prices.currency: expected an ISO 4217 code",
        "prices.models[0].models: at least one",
        "prices.models[0].input: must be a non-negative number",
        "tenants[0].budgets[0]: set max_tokens, max_cost or both",
        'tenants[0].budgets[1].name: duplicate budget name "a"',
        "tenants[0].budgets[2].window: required",
    ):
        assert expected in problems, problems


def test_skip_usage_reads_no_response() -> None:
    quiet = runtime(
        """
        backends: [{name: b, url: "http://127.0.0.1:9/v1"}]
        models: [{name: m, routes: [{backend: b}]}]
        accounting: {skip_usage: true}
        tenants: [{name: t}]
        auth: {anonymous_tenant: t}
        """
    )
    exchange = Exchange(quiet)
    exchange.request_headers({":path": "/v1/chat/completions", ":method": "POST"}, False)
    body = b'{"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]}'
    decision = exchange.request_body(body)
    assert isinstance(decision, Continue) and decision.body is None  # no include_usage
    headers = {":status": "200", "content-type": "text/event-stream"}
    assert exchange.response_headers(headers).response_body is None
    exchange.finish()
    assert "usage" not in report.record(exchange)
    with pytest.raises(ConfigError, match="budgets need usage"):
        runtime(
            """
            backends: [{name: b, url: "http://127.0.0.1:9/v1"}]
            models: [{name: m, routes: [{backend: b}]}]
            accounting: {skip_usage: true}
            tenants: [{name: t, budgets: [{name: d, window: day, max_tokens: 5}]}]
            """
        )


def test_backend_that_omits_stream_options_gets_none_and_usage_is_estimated() -> None:
    config = runtime(
        """
        backends: [{name: b, url: "http://127.0.0.1:9/v1", omit_stream_options: true}]
        models: [{name: m, routes: [{backend: b}]}]
        tenants: [{name: t}]
        auth: {anonymous_tenant: t}
        """
    )
    exchange = Exchange(config)
    exchange.request_headers({":path": "/v1/chat/completions", ":method": "POST"}, False)
    body = b'{"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]}'
    decision = exchange.request_body(body)
    assert isinstance(decision, Continue) and decision.body is None
    run = (DATA / "openai_stream.sse").read_bytes()
    exchange.response_headers({":status": "200", "content-type": "text/event-stream"})
    assert exchange.response_body(run, True).body is None  # passed through untouched
    exchange.finish()
    usage = report.record(exchange)["usage"]
    assert isinstance(usage, dict) and "output_tokens" in usage["estimated"]
