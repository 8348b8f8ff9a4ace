"""Usage records, dynamic metadata and GenAI metrics through a real Envoy, with the SDKs."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from extproc.control.render.listener import EXTPROC_LOG_FIELDS
from tests.integration.conftest import Gateway

PROMPT = "Count the tokens of this sentence, please: café ☕ and more words."


def direct(gateway: Gateway, path: str, body: dict[str, Any]) -> httpx.Response:
    """The same request sent straight to the mock provider, bypassing the gateway."""
    return httpx.post(f"http://127.0.0.1:{gateway.mock_port}/v1{path}", json=body, timeout=15)


def sse_chunks(raw: bytes) -> list[dict[str, Any]]:
    return [
        orjson.loads(block[len(b"data: ") :])
        for block in raw.split(b"\n\n")
        if block.startswith(b"data: {")
    ]


def without_ids(chunk: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in chunk.items() if k not in ("id", "created")}


def test_stream_without_include_usage_is_recorded_and_unchanged(gateway: Gateway) -> None:
    client = gateway.openai()
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": PROMPT}], stream=True
    )
    request_id = raw.headers["x-request-id"]
    chunks = list(raw.parse())
    # The SDK sees no usage chunk and no usage members: exactly a stream without usage.
    assert all(chunk.choices for chunk in chunks)
    assert all(chunk.usage is None for chunk in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == PROMPT
    # Byte-level: the same chunks the provider sends to a client that did not ask.
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": PROMPT}]}
    plain = direct(gateway, "/chat/completions", {**body, "stream": True})
    through = gateway.http().post(
        "/v1/chat/completions",
        json={**body, "stream": True},
        headers={"authorization": "Bearer gw-key-team-a"},
    )
    assert [without_ids(c) for c in sse_chunks(through.content)] == [
        without_ids(c) for c in sse_chunks(plain.content)
    ]
    assert b'"usage"' not in through.content
    # The record has the provider's own counts.
    with_usage = direct(
        gateway,
        "/chat/completions",
        {**body, "stream": True, "stream_options": {"include_usage": True}},
    )
    reported = sse_chunks(with_usage.content)[-1]["usage"]
    usage = gateway.record(request_id)["usage"]
    assert usage["input_tokens"] == reported["prompt_tokens"]
    assert usage["output_tokens"] == reported["completion_tokens"]
    assert usage["estimated"] == [] and usage["complete"] is True
    assert usage["cost"] > 0 and usage["currency"] == "USD"


def test_stream_that_asked_for_usage_gets_it(gateway: Gateway) -> None:
    chunks = list(
        gateway.openai().chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": PROMPT}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens > 0


def test_access_log_line_carries_the_usage(gateway: Gateway) -> None:
    raw = gateway.openai().chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": PROMPT}]
    )
    completion = raw.parse()
    request_id = raw.headers["x-request-id"]
    entry = gateway.access_log(request_id)
    assert completion.usage is not None
    assert entry["input_tokens"] == completion.usage.prompt_tokens
    assert entry["output_tokens"] == completion.usage.completion_tokens
    assert entry["total_tokens"] == completion.usage.total_tokens
    assert entry["tenant"] == "team-a"
    assert entry["model"] == "gpt-4o-mini"
    assert entry["backend"] == "openai"
    expected_cost = (
        completion.usage.prompt_tokens * 0.15 + completion.usage.completion_tokens * 0.6
    ) / 1e6
    assert abs(entry["cost"] - expected_cost) < 1e-12
    assert entry["estimated"] == ""
    record = gateway.record(request_id)
    assert record["usage"]["total_tokens"] == entry["total_tokens"]


def _extproc_fields(entry: dict[str, Any]) -> dict[str, int]:
    """The access log's ext_proc timings (Envoy writes them as strings of digits)."""
    fields = {key: value for key, value in entry.items() if key.startswith("extproc_")}
    assert set(fields) == set(EXTPROC_LOG_FIELDS)
    assert all(isinstance(value, str) and value.isdigit() for value in fields.values()), fields
    return {key: int(value) for key, value in fields.items()}


def test_access_log_line_times_each_ext_proc_phase(gateway: Gateway) -> None:
    """Envoy's own timing of each call to the service, per phase: a JSON exchange makes
    one call per phase it asks for, a stream one response_body call per chunk."""
    raw = gateway.openai().chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": PROMPT}]
    )
    entry = _extproc_fields(gateway.access_log(raw.headers["x-request-id"]))
    for phase in ("request_headers", "request_body", "response_headers", "response_body"):
        assert entry[f"extproc_{phase}_us"] > 0, phase
    assert entry["extproc_response_body_calls"] == 1
    assert entry["extproc_response_body_max_us"] == entry["extproc_response_body_us"]

    # Paced, each event reaches Envoy, and the service, on its own.
    with gateway.openai().chat.completions.with_streaming_response.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": PROMPT}],
        stream=True,
        extra_headers={"x-mock-chunk-delay-ms": "5"},
    ) as response:
        events = [line for line in response.iter_lines() if line.startswith("data: ")]
        request_id = response.headers["x-request-id"]
    entry = _extproc_fields(gateway.access_log(request_id))
    # One call per event the provider sent (the usage-only one the client did not get
    # included), and the end of the stream.
    assert len(events) + 1 <= entry["extproc_response_body_calls"] <= len(events) + 2
    assert 0 < entry["extproc_response_body_max_us"] <= entry["extproc_response_body_us"]


def test_anthropic_stream_usage_is_merged(gateway: Gateway) -> None:
    client = gateway.anthropic()
    with client.messages.stream(
        model="claude-3-5-haiku",
        max_tokens=200,
        messages=[{"role": "user", "content": PROMPT}],
    ) as stream:
        final = stream.get_final_message()
        request_id = stream.response.headers["x-request-id"]
    usage = gateway.record(request_id)["usage"]
    assert usage["input_tokens"] == final.usage.input_tokens
    assert usage["output_tokens"] == final.usage.output_tokens
    assert usage["estimated"] == []
    assert usage["cost"] == round(
        (final.usage.input_tokens * 3 + final.usage.output_tokens * 15) / 1e6, 9
    )


def test_embeddings_usage(gateway: Gateway) -> None:
    raw = gateway.openai().embeddings.with_raw_response.create(
        model="text-embedding-3-small", input=["one text", "another text"]
    )
    result = raw.parse()
    usage = gateway.record(raw.headers["x-request-id"])["usage"]
    assert usage["input_tokens"] == result.usage.prompt_tokens
    assert usage["output_tokens"] == 0 and usage["estimated"] == []


def test_cut_stream_is_estimated(gateway: Gateway) -> None:
    """The provider resets the stream before its usage: the record is estimated, and
    Envoy's access log still names the tenant and model."""
    received = b""
    with gateway.http().stream(
        "POST",
        "/v1/chat/completions",
        json={
            "model": "gpt-4o-mini",
            "stream": True,
            "messages": [{"role": "user", "content": PROMPT}],
        },
        headers={"authorization": "Bearer gw-key-team-a", "x-mock-cut-after": "4"},
    ) as response:
        request_id = response.headers["x-request-id"]
        with pytest.raises(httpx.RemoteProtocolError):
            for piece in response.iter_bytes():
                received += piece
    assert received.count(b"data: ") == 4
    usage = gateway.record(request_id)["usage"]
    assert usage["complete"] is False
    assert usage["estimated"] == ["input_tokens", "output_tokens", "total_tokens"]
    assert usage["output_tokens"] > 0 and usage["input_tokens"] > 0
    entry = gateway.access_log(request_id)
    assert (entry["tenant"], entry["model"], entry["backend"]) == (
        "team-a",
        "gpt-4o-mini",
        "openai",
    )
    assert entry["flags"] == "UPE"


def metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_genai_metrics(gateway: Gateway) -> None:
    client = gateway.openai()
    labels = {
        "gen_ai_operation_name": "chat",
        "gen_ai_provider_name": "openai",
        "gen_ai_request_model": "mini",
        "backend": "openai",
    }
    streamed = {**labels, "gen_ai_request_model": "gpt-4o-mini"}
    series = {
        "input": ("gen_ai_client_token_usage_sum", {**labels, "gen_ai_token_type": "input"}),
        "duration": ("gen_ai_server_request_duration_seconds_count", labels),
        "cost": ("extproc_cost_total", {**labels, "currency": "USD"}),
        "ttft": ("gen_ai_server_time_to_first_token_seconds_count", streamed),
        "tpot": ("gen_ai_server_time_per_output_token_seconds_count", streamed),
        "streamed": ("gen_ai_server_request_duration_seconds_count", streamed),
    }
    before = {key: gateway.metric(name, **match) for key, (name, match) in series.items()}
    raw = client.chat.completions.with_raw_response.create(
        model="mini", messages=[{"role": "user", "content": PROMPT}]
    )
    completion = raw.parse()
    stream = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": PROMPT}], stream=True
    )
    list(stream.parse())
    # Both exchanges are recorded, and counted, once their records are written.
    record = gateway.record(raw.headers["x-request-id"])
    streamed_record = gateway.record(stream.headers["x-request-id"])
    assert streamed_record["usage"]["output_tokens"] > 1
    grown = {
        key: gateway.metric(name, **match) - before[key] for key, (name, match) in series.items()
    }
    assert completion.usage is not None
    assert grown["input"] == completion.usage.prompt_tokens
    assert grown["duration"] == 1
    assert grown["cost"] == pytest.approx(record["usage"]["cost"], rel=1e-6)
    assert grown["ttft"] == grown["tpot"] == grown["streamed"] == 1
    # Label values come from the config only: a model matched by a pattern is _OTHER.
    others = ("gen_ai_server_request_duration_seconds_count", {"gen_ai_request_model": "_OTHER"})
    counted = gateway.metric(others[0], **others[1])
    other = gateway.anthropic().messages.with_raw_response.create(
        model="claude-free-form-name-123",
        max_tokens=50,
        messages=[{"role": "user", "content": "hi"}],
    )
    gateway.record(other.headers["x-request-id"])
    assert gateway.metric(others[0], **others[1]) == counted + 1
    assert "claude-free-form-name-123" not in httpx.get(gateway.metrics_url).text


def test_compressed_responses_are_still_read(gateway: Gateway) -> None:
    """The provider compresses JSON for clients that accept gzip; the gateway asks for
    identity when it reads the body, so usage is the provider's, not an estimate."""
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": PROMPT}]}
    compressed = httpx.post(
        f"http://127.0.0.1:{gateway.mock_port}/v1/chat/completions",
        json=body,
        headers={"accept-encoding": "gzip"},
    )
    assert compressed.headers["content-encoding"] == "gzip"  # the mock does compress
    response = gateway.http().post(
        "/v1/chat/completions",
        json=body,
        headers={"authorization": "Bearer gw-key-team-a", "accept-encoding": "gzip"},
    )
    assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"]
    assert "accept-encoding" not in response.headers["x-mock-headers"].split(",")
    usage = gateway.record(response.headers["x-request-id"])["usage"]
    assert usage["estimated"] == [] and usage["output_tokens"] > 0


def test_a_provider_adding_a_field_is_reported_once(gateway: Gateway) -> None:
    client = gateway.openai()

    def ask(**headers: str) -> None:
        client.chat.completions.create(
            model="drift-model",
            messages=[{"role": "user", "content": "hi"}],
            extra_headers=headers,
        )

    for _ in range(5):  # the learning period
        ask()
    for _ in range(3):
        ask(**{"x-mock-extra-field": "reasoning_details"})
    log = gateway.wait_for_log('"schema_drift"')
    reports = [
        orjson.loads(line)
        for line in log.splitlines()
        if '"schema_drift"' in line and '"drifting"' in line
    ]
    assert len(reports) == 1, reports
    assert reports[0]["change"] == "added" and reports[0]["path"] == "reasoning_details"
    assert reports[0]["endpoint"] == "/chat/completions (buffered)"
    text = httpx.get(gateway.metrics_url).text
    assert metric(text, "extproc_schema_drift_total", backend="drifting", change="added") == 1
