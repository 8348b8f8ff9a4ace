"""End to end through a real Envoy with the official SDKs: data path and routing."""

from __future__ import annotations

import hashlib
import json
from collections import Counter

import anthropic
import openai
import pytest

from tests.integration.conftest import GATEWAY_KEYS, PROVIDER_KEYS, Gateway

HELLO = [{"role": "user", "content": "Hello, gateway!"}]


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def test_chat_completion_through_envoy(gateway: Gateway) -> None:
    raw = gateway.openai().chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=HELLO
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == "Hello, gateway!"
    assert completion.model == "gpt-4o-mini"
    assert completion.usage is not None and completion.usage.total_tokens > 0
    # What reached the provider: its own key, not the client's gateway key.
    assert raw.headers["x-mock-path"] == "/v1/chat/completions"
    assert raw.headers["x-mock-authorization-sha256"] == digest(f"Bearer {PROVIDER_KEYS['openai']}")
    received = set(raw.headers["x-mock-headers"].split(","))
    assert not {h for h in received if h.startswith("x-extproc") or h.startswith("x-envoy")}
    assert "x-forwarded-for" not in received and "x-api-key" not in received
    assert "x-envoy-attempt-count" not in raw.headers


def test_streaming_chat_completion(gateway: Gateway) -> None:
    stream = gateway.openai().chat.completions.create(
        model="gpt-4o-mini", messages=HELLO, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello, gateway!"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


def test_model_listing_is_filtered_by_tenant(gateway: Gateway) -> None:
    team_a = {m.id for m in gateway.openai().models.list()}
    assert {"gpt-4o-mini", "mini", "gpt-4o", "canary", "text-embedding-3-small"} <= team_a
    assert not any(i.startswith("claude") for i in team_a)
    with gateway.http() as http:  # no key at all: the anonymous tenant
        anonymous = http.get("/v1/models").json()
    assert {m["id"] for m in anonymous["data"]} == {"gpt-4o-mini", "mini"}
    assert gateway.openai().models.retrieve("mini").id == "mini"


def test_unknown_model_is_404_in_openai_schema(gateway: Gateway) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        gateway.openai().chat.completions.create(model="gpt-9-ultra", messages=HELLO)
    assert caught.value.code == "model_not_found"
    assert "gpt-9-ultra" in caught.value.message


def test_alias_and_upstream_model_rewrite(gateway: Gateway) -> None:
    client = gateway.openai()
    # The provider is asked for the model an alias stands for.
    assert client.chat.completions.create(model="mini", messages=HELLO).model == "gpt-4o-mini"
    assert (
        client.chat.completions.create(model="gpt-4o", messages=HELLO).model == "gpt-4o-2024-08-06"
    )


def test_wildcard_model_with_the_anthropic_sdk(gateway: Gateway) -> None:
    raw = gateway.anthropic().messages.with_raw_response.create(
        model="claude-3-5-haiku-latest", max_tokens=64, messages=HELLO
    )
    message = raw.parse()
    assert message.content[0].type == "text" and message.content[0].text == "Hello, gateway!"
    assert message.model == "claude-3-5-haiku-latest"
    assert raw.headers["x-mock-api-key-sha256"] == digest(PROVIDER_KEYS["anthropic"])
    assert raw.headers["x-mock-host"] == f"localhost:{gateway.mock_port}"


def test_anthropic_streaming(gateway: Gateway) -> None:
    with gateway.anthropic().messages.stream(
        model="claude-sonnet-4-6", max_tokens=64, messages=HELLO
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Hello, gateway!"
    assert final.stop_reason == "end_turn" and final.usage.output_tokens > 0


def test_embeddings(gateway: Gateway) -> None:
    result = gateway.openai().embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    assert len(result.data) == 2 and len(result.data[0].embedding) == 8


def test_weighted_split_reaches_both_backends(gateway: Gateway) -> None:
    client = gateway.openai()
    seen: Counter[tuple[str, str]] = Counter()
    for _ in range(40):
        raw = client.chat.completions.with_raw_response.create(model="canary", messages=HELLO)
        seen[(raw.parse().model, raw.headers["x-mock-path"])] += 1
    assert set(seen) == {
        ("canary-a", "/v1/chat/completions"),
        ("canary-b", "/b/v1/chat/completions"),
    }


def test_credential_from_file_reaches_its_backend(gateway: Gateway) -> None:
    client = gateway.openai()
    for _ in range(40):
        raw = client.chat.completions.with_raw_response.create(model="canary", messages=HELLO)
        if raw.headers["x-mock-path"].startswith("/b/"):
            assert raw.headers["x-mock-authorization-sha256"] == digest(
                "Bearer sk-provider-openai-b"
            )
            return
    pytest.fail("the canary split never chose backend openai-b")


def test_deprecated_model_carries_headers_before_sunset(gateway: Gateway) -> None:
    raw = gateway.openai().chat.completions.with_raw_response.create(
        model="old-model", messages=HELLO
    )
    assert raw.headers["deprecation"] == "@1735689600"
    assert raw.headers["sunset"] == "Thu, 01 Jan 2099 00:00:00 GMT"
    assert raw.headers["link"] == '</v1/models/gpt-4o-mini>; rel="successor-version"'


def test_retired_model_is_410_naming_the_replacement(gateway: Gateway) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        gateway.openai().chat.completions.create(model="retired-model", messages=HELLO)
    assert caught.value.status_code == 410
    assert "gpt-4o-mini" in caught.value.message


def test_retired_model_can_reroute_to_its_replacement(gateway: Gateway) -> None:
    raw = gateway.openai().chat.completions.with_raw_response.create(
        model="moved-model", messages=HELLO
    )
    assert raw.parse().model == "gpt-4o-2024-08-06"
    assert raw.headers["sunset"] == "Wed, 01 Jan 2020 00:00:00 GMT"


def test_fallback_walks_the_chain_with_per_attempt_rewrites(gateway: Gateway) -> None:
    # Attempt 1: connection refused. Attempt 2: 503. Attempt 3: served.
    raw = gateway.openai().chat.completions.with_raw_response.create(
        model="resilient", messages=HELLO
    )
    assert raw.parse().model == "r-third"
    assert raw.headers["x-mock-path"] == "/v1/chat/completions"
    assert raw.headers["x-mock-authorization-sha256"] == digest(f"Bearer {PROVIDER_KEYS['openai']}")
    received = set(raw.headers["x-mock-headers"].split(","))
    # The failing backend's extra header stayed with the failing backend.
    assert "x-mock-status" not in received
    assert not {h for h in received if h.startswith("x-extproc") or h.startswith("x-envoy")}
    assert raw.headers["x-mock-host"] == f"127.0.0.1:{gateway.mock_port}"


def test_fallback_on_429(gateway: Gateway) -> None:
    completion = gateway.openai().chat.completions.create(model="resilient-429", messages=HELLO)
    assert completion.model == "q-second"


def test_fallback_streaming(gateway: Gateway) -> None:
    stream = gateway.openai().chat.completions.create(
        model="resilient", messages=HELLO, stream=True
    )
    assert (
        "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "Hello, gateway!"
    )


def test_all_attempts_failing_ends_in_a_json_error(gateway: Gateway) -> None:
    with gateway.http() as http:
        reply = http.post(
            "/v1/chat/completions",
            json={"model": "doomed", "messages": HELLO},
            headers={"authorization": f"Bearer {GATEWAY_KEYS['team-a']}"},
        )
    assert reply.status_code == 503
    assert reply.headers["content-type"].startswith("application/json")
    assert reply.json()["error"]["code"] == "upstream_error"


def test_tenants_keys_and_allow_lists(gateway: Gateway) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        gateway.openai(key="not-a-gateway-key").chat.completions.create(
            model="gpt-4o-mini", messages=HELLO
        )
    assert caught.value.code == "invalid_api_key"
    with pytest.raises(openai.PermissionDeniedError):
        gateway.openai(key=GATEWAY_KEYS["team-b"]).chat.completions.create(
            model="gpt-4o", messages=HELLO
        )
    with gateway.http() as http:  # no key at all: the anonymous tenant
        denied_anonymous = http.post(
            "/v1/chat/completions", json={"model": "gpt-4o", "messages": HELLO}
        )
        allowed_anonymous = http.post(
            "/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": HELLO}
        )
    assert denied_anonymous.status_code == 403
    assert denied_anonymous.json()["error"]["code"] == "model_not_allowed"
    assert allowed_anonymous.status_code == 200
    with pytest.raises(anthropic.PermissionDeniedError) as denied:
        anthropic.Anthropic(
            base_url=gateway.url, api_key=GATEWAY_KEYS["team-a"], max_retries=0
        ).messages.create(model="claude-3-opus", max_tokens=8, messages=HELLO)
    assert denied.value.body["error"]["type"] == "permission_error"  # type: ignore[index]


def test_the_log_has_one_record_per_exchange_and_no_secrets(gateway: Gateway) -> None:
    raw = gateway.openai().chat.completions.with_raw_response.create(model="gpt-4o", messages=HELLO)
    request_id = raw.headers["x-request-id"]
    # The record is written when Envoy closes the exchange's stream, just after the reply.
    log = gateway.wait_for_log(request_id)
    for secret in (*GATEWAY_KEYS.values(), *PROVIDER_KEYS.values(), "sk-provider-openai-b"):
        assert secret not in log
    assert "Hello, gateway!" not in log  # no prompt text in logs
    records = [json.loads(line) for line in log.splitlines() if request_id in line]
    assert len(records) == 1
    record = records[0]
    assert record["event"] == "exchange"
    assert record["tenant"] == "team-a" and record["status"] == 200
    assert (record["requested_model"], record["backend"], record["upstream_model"]) == (
        "gpt-4o",
        "openai",
        "gpt-4o-2024-08-06",
    )
    assert record["duration_ms"] > 0


def test_metrics_count_requests_and_time_phases(gateway: Gateway) -> None:
    requests = ("extproc_requests_total", {"model": "gpt-4o-mini", "status": "200"})
    phases = {
        phase: ("extproc_phase_duration_seconds_count", {"phase": phase})
        for phase in ("request_headers", "request_body", "response_headers", "response_body")
    }
    served = gateway.metric(requests[0], **requests[1])
    timed = {phase: gateway.metric(name, **match) for phase, (name, match) in phases.items()}
    cpu = gateway.metric("process_cpu_seconds_total")
    raw = gateway.openai().chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=HELLO
    )
    gateway.record(raw.headers["x-request-id"])  # counted when its record is written
    assert gateway.metric(requests[0], **requests[1]) == served + 1
    # One message per phase for a JSON exchange (this one; no other runs meanwhile).
    for phase, (name, match) in phases.items():
        assert gateway.metric(name, **match) == timed[phase] + 1, phase
    assert gateway.metric("process_cpu_seconds_total") >= cpu > 0
