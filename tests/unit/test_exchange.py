from __future__ import annotations

import datetime as dt
from typing import Any

import orjson
import pytest

from extproc.dataplane import report
from extproc.dataplane.decisions import Continue, Reply
from extproc.dataplane.exchange import Exchange
from tests.helpers import BASE_CONFIG, runtime

RT = runtime(BASE_CONFIG + "\nlimits: {max_request_bytes: 2048}\n")
NOW = dt.datetime(2026, 3, 1, tzinfo=dt.UTC).timestamp()
AFTER_SUNSET = dt.datetime(2026, 7, 1, tzinfo=dt.UTC).timestamp()


def headers(
    path: str = "/v1/chat/completions", method: str = "POST", **extra: str
) -> dict[str, str]:
    return {
        ":path": path,
        ":method": method,
        "x-request-id": "rid-1",
        "authorization": "Bearer key-a",
        **extra,
    }


def start(
    path: str = "/v1/chat/completions", *, clock: float = NOW, roll: float = 0.0, **extra: str
) -> Exchange:
    exchange = Exchange(RT, clock=lambda: clock, roll=lambda: roll)
    assert isinstance(
        exchange.request_headers(headers(path, **extra), end_of_stream=False), Continue
    )
    return exchange


def chat(model: Any = "gpt-4o-mini", **fields: Any) -> bytes:
    return orjson.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}], **fields})


def reply(decision: object) -> tuple[int, dict[str, Any]]:
    assert isinstance(decision, Reply), decision
    assert ("content-type", "application/json") in decision.headers
    return decision.status, orjson.loads(decision.body)


def openai_error(decision: object, status: int, code: str) -> str:
    got_status, body = reply(decision)
    assert got_status == status, body
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["type"]
    return str(body["error"]["message"])


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "invalid_json"),
        (b"", 400, "invalid_json"),
        (b"[1, 2]", 400, "invalid_json"),
        (b'"text"', 400, "invalid_json"),
        (b'{"messages": []}', 400, "missing_required_parameter"),
        (b'{"model": 42, "messages": []}', 400, "invalid_type"),
        (b'{"model": null, "messages": []}', 400, "missing_required_parameter"),
        (b'{"model": "a b", "messages": [{"role": "user"}]}', 400, "invalid_value"),
        (b'{"model": "gpt-4o-mini", "messages": "hi"}', 400, "invalid_type"),
        (b'{"model": "gpt-4o-mini", "messages": []}', 400, "empty_array"),
        (b'{"model": "gpt-4o-mini", "messages": ["hi"]}', 400, "invalid_type"),
        (b'{"model": "gpt-4o-mini"}', 400, "missing_required_parameter"),
        (chat(stream="yes"), 400, "invalid_type"),
        (chat("gpt-9"), 404, "model_not_found"),
        (chat("claude-3-haiku"), 403, "model_not_allowed"),
        (
            b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "'
            + b"x" * 3000
            + b'"}]}',
            413,
            "request_too_large",
        ),
    ],
)
def test_bad_chat_bodies_get_openai_errors(body: bytes, status: int, code: str) -> None:
    openai_error(start().request_body(body), status, code)


def test_bad_bodies_on_the_anthropic_path_get_anthropic_errors() -> None:
    exchange = Exchange(RT, clock=lambda: NOW)
    exchange.request_headers(
        headers("/v1/messages", authorization="", **{"x-api-key": "key-b"}), False
    )
    status, body = reply(exchange.request_body(b"{oops"))
    assert status == 400
    assert body == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": body["error"]["message"]},
    }
    exchange = start("/v1/messages")
    status, body = reply(
        exchange.request_body(
            orjson.dumps({"model": "claude-x", "messages": [{"role": "user", "content": "hi"}]})
        )
    )
    assert (status, body["error"]["type"]) == (400, "invalid_request_error")
    assert "max_tokens" in body["error"]["message"]


@pytest.mark.parametrize(
    ("path", "method", "status", "code"),
    [
        ("/v1/nothing", "POST", 404, "unknown_url"),
        ("/", "GET", 404, "unknown_url"),
        ("/v1/chat/completions", "GET", 405, "method_not_allowed"),
        ("/v1/models", "POST", 405, "method_not_allowed"),
        ("/v1/models/gpt-9", "GET", 404, "model_not_found"),
    ],
)
def test_bad_paths_and_methods(path: str, method: str, status: int, code: str) -> None:
    decision = Exchange(RT).request_headers(headers(path, method), end_of_stream=True)
    openai_error(decision, status, code)


def test_unsupported_method_names_the_allowed_one() -> None:
    decision = Exchange(RT).request_headers(
        headers("/v1/chat/completions", "DELETE"), end_of_stream=True
    )
    assert isinstance(decision, Reply) and ("allow", "POST") in decision.headers


def test_empty_body_is_rejected_at_headers() -> None:
    decision = Exchange(RT).request_headers(headers(), end_of_stream=True)
    openai_error(decision, 400, "invalid_json")


def test_oversized_content_length_is_rejected_before_the_body() -> None:
    decision = Exchange(RT).request_headers(
        headers(**{"content-length": "4096"}), end_of_stream=False
    )
    openai_error(decision, 413, "request_too_large")


def test_missing_and_invalid_keys() -> None:
    decision = Exchange(RT).request_headers(
        headers(authorization="Bearer nope"), end_of_stream=False
    )
    openai_error(decision, 401, "invalid_api_key")


def test_models_listing_is_answered_locally() -> None:
    status, body = reply(
        Exchange(RT).request_headers(headers("/v1/models", "GET", authorization=""), True)
    )
    assert status == 200 and body["object"] == "list"
    assert {m["id"] for m in body["data"]} == {"gpt-4o-mini", "mini"}
    status, body = reply(
        Exchange(RT).request_headers(headers("/v1/models/mini", "GET", authorization=""), True)
    )
    assert (status, body["id"], body["object"]) == (200, "mini", "model")


@pytest.mark.parametrize(
    ("key", "name", "status"),
    [
        ("key-b", "claude-3-haiku", 200),  # served through the `claude-*` pattern
        ("key-b", "claude-x", 200),
        ("key-a", "claude-3-haiku", 404),  # a pattern team-a may not use
        ("key-a", "gpt-4o", 200),
        ("key-b", "gpt-4o", 404),
        ("key-b", "llama-3", 404),  # no model and no pattern serves it
    ],
)
def test_a_model_is_retrieved_by_any_name_the_gateway_routes(
    key: str, name: str, status: int
) -> None:
    decision = Exchange(RT).request_headers(
        headers(f"/v1/models/{name}", "GET", authorization=f"Bearer {key}"), True
    )
    got, body = reply(decision)
    assert got == status, body
    if status == 200:
        assert (body["id"], body["object"]) == (name, "model")
    else:
        assert body["error"]["code"] == "model_not_found"


def test_forward_routes_and_injects_the_provider_credential() -> None:
    decision = start().request_body(chat())
    assert isinstance(decision, Continue)
    set_headers = dict(decision.set_headers)
    assert set_headers["x-extproc-cluster"] == "backend.openai"
    assert set_headers[":path"] == "/v1/chat/completions"
    assert set_headers["authorization"] == "Bearer sk-test-openai"
    assert decision.clear_route_cache
    assert decision.body is None  # nothing to rewrite: the bytes go through untouched
    # Envoy removes before it sets: every value the client sent under the backend's own
    # header goes too, and the provider's key is then the only one.
    assert set(decision.remove_headers) >= {
        "authorization",
        "x-api-key",
        "api-key",
        "x-goog-api-key",
        "proxy-authorization",
    }


def test_forward_removes_client_credentials_when_backend_has_none() -> None:
    decision = start(roll=0.9).request_body(chat("split"))
    assert isinstance(decision, Continue)
    assert {"authorization", "x-api-key", "api-key", "x-goog-api-key"} <= set(
        decision.remove_headers
    )
    assert dict(decision.set_headers)["x-extra"] == "1"
    assert not {"authorization", "x-api-key"} & {name for name, _ in decision.set_headers}


def test_forward_rewrites_the_model_and_content_length() -> None:
    decision = start().request_body(chat("gpt-4o", temperature=0.5))
    assert isinstance(decision, Continue) and decision.body is not None
    body = orjson.loads(decision.body)
    assert body["model"] == "gpt-4o-2024-08-06" and body["temperature"] == 0.5
    assert dict(decision.set_headers)["content-length"] == str(len(decision.body))


def test_forward_keeps_the_query_string() -> None:
    exchange = Exchange(RT, clock=lambda: NOW)
    exchange.request_headers(headers("/v1/chat/completions?trace=1"), False)
    decision = exchange.request_body(chat())
    assert isinstance(decision, Continue)
    assert dict(decision.set_headers)[":path"] == "/v1/chat/completions?trace=1"


def test_fallback_route_passes_model_and_suffix_to_the_attempt_processor() -> None:
    decision = start().request_body(chat("resilient"))
    assert isinstance(decision, Continue)
    cluster = dict(decision.set_headers)["x-extproc-cluster"]
    assert cluster.startswith("fallback.")
    assert decision.metadata == {
        "route": cluster,
        "model": "resilient",
        "suffix": "/chat/completions",
        "backend": "openai",
        "tenant": "team-a",
        # The chain ends at an Anthropic backend: attempts translate from the client's API.
        "api": "openai",
        "query": "",
    }
    # Single-backend routes name who and what, for Envoy's access log.
    assert start().request_body(chat()).metadata == {  # type: ignore[union-attr]
        "model": "gpt-4o-mini",
        "backend": "openai",
        "tenant": "team-a",
    }


def test_openai_client_reaches_an_anthropic_backend_through_translation() -> None:
    exchange = Exchange(RT, clock=lambda: NOW)
    exchange.request_headers(headers(authorization="Bearer key-b"), False)
    decision = exchange.request_body(chat("claude-3-haiku"))
    assert isinstance(decision, Continue) and decision.body is not None
    sent = dict(decision.set_headers)
    assert sent[":path"] == "/v1/messages"
    assert sent["anthropic-version"] == "2023-06-01"  # added for Anthropic backends
    assert sent["content-length"] == str(len(decision.body))
    assert orjson.loads(decision.body) == {
        "model": "claude-3-haiku",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        "max_tokens": 4096,
    }
    assert report.record(exchange)["translated"] == "openai->anthropic"


def test_endpoints_only_one_api_has_are_not_translated() -> None:
    exchange = start("/v1/embeddings", authorization="Bearer key-b")
    body = orjson.dumps({"model": "claude-3-haiku", "input": "hi"})
    openai_error(exchange.request_body(body), 400, "model_not_supported_on_endpoint")


def test_deprecation_headers_on_the_response() -> None:
    exchange = start()
    exchange.request_body(chat("old"))
    decision = exchange.response_headers({":status": "200", "x-envoy-attempt-count": "1"})
    assert dict(decision.set_headers)["sunset"] == "Tue, 30 Jun 2026 00:00:00 GMT"
    assert "x-envoy-attempt-count" in decision.remove_headers
    openai_error(start(clock=AFTER_SUNSET).request_body(chat("gone")), 410, "model_retired")


def test_record_names_backend_of_the_attempt_that_answered() -> None:
    exchange = start()
    exchange.request_body(chat("resilient", stream=True))
    exchange.response_headers({":status": "200", "x-envoy-attempt-count": "2"})
    record = report.record(exchange)
    assert record["backend"] == "second" and record["upstream_model"] == "second"
    assert record["attempt"] == 2 and record["stream"] is True and record["status"] == 200
    assert record["tenant"] == "team-a" and record["request_id"] == "rid-1"
    assert "key-a" not in str(record) and "sk-test" not in str(record)


EXTERNAL = runtime(BASE_CONFIG + "\nservice: {external_envoy: true}\n")


@pytest.mark.parametrize("authority", ["api.openai.test", "API.openai.test:443"])
def test_behind_another_envoy_a_model_of_the_called_host_goes_through(authority: str) -> None:
    exchange = Exchange(EXTERNAL, clock=lambda: NOW)
    exchange.request_headers(headers(**{":authority": authority}), False)
    decision = exchange.request_body(chat())
    assert isinstance(decision, Continue)
    sent = dict(decision.set_headers)
    assert sent["authorization"] == "Bearer sk-test-openai"
    # That Envoy routes by host; the route header would only travel to the provider.
    assert "x-extproc-cluster" not in sent


def test_behind_another_envoy_a_model_of_another_host_is_refused_without_credentials() -> None:
    """The request would reach the host the app called: adding the model's backend key
    would hand it to the wrong provider."""
    exchange = Exchange(EXTERNAL, clock=lambda: NOW)
    exchange.request_headers(
        headers(**{":authority": "api.openai.test", "authorization": "Bearer key-b"}), False
    )
    decision = exchange.request_body(chat("claude-3-haiku"))
    message = openai_error(decision, 421, "misdirected_request")
    assert "api.anthropic.test" in message and "api.openai.test" in message
    assert b"sk-test" not in decision.body  # type: ignore[union-attr]
    anthropic = Exchange(EXTERNAL, clock=lambda: NOW)
    anthropic.request_headers(
        {
            **headers("/v1/messages", **{":authority": "[::1]:8080"}),
            "authorization": "Bearer key-b",
        },
        False,
    )
    refused = anthropic.request_body(
        orjson.dumps(
            {
                "model": "claude-3-haiku",
                "max_tokens": 5,
                "messages": [{"role": "user", "content": "hi"}],
            }
        )
    )
    status, body = reply(refused)
    assert status == 421 and body["error"]["type"] == "invalid_request_error"
    assert "sent to ::1" in body["error"]["message"]
