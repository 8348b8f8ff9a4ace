from __future__ import annotations

import orjson

from extproc.dataplane.attempt import Attempt
from extproc.dataplane.decisions import Continue
from tests.helpers import runtime

RT = runtime()
CLUSTER = next(iter(RT.fallback_routes))


METADATA = {"route": CLUSTER, "model": "resilient", "suffix": "/chat/completions"}


def attempt_headers(number: str) -> dict[str, str]:
    return {
        ":path": "/v1/chat/completions",
        "x-envoy-attempt-count": number,
        "authorization": "Bearer sk-test-openai",
        "x-forwarded-for": "10.0.0.9",
    }


def test_every_attempt_is_written_in_full_and_drops_proxy_headers() -> None:
    attempt = Attempt(RT)
    decision = attempt.request_headers(attempt_headers("1"), METADATA, "openai")
    assert isinstance(decision, Continue) and not decision.skip_request_body
    assert dict(decision.set_headers) == {
        ":path": "/v1/chat/completions",
        "authorization": "Bearer sk-test-openai",
    }
    # Removed before the sets apply: the client's credentials, whatever earlier attempts'
    # backends needed, and every value of this backend's own header.
    assert {
        "x-forwarded-for",
        "x-envoy-attempt-count",
        "x-extra",
        "x-api-key",
        "api-key",
        "x-goog-api-key",
        "proxy-authorization",
        "authorization",
    } <= set(decision.remove_headers)
    # The body already names this attempt's model: it passes untouched.
    assert attempt.request_body(b'{"model": "first"}') == Continue()


def test_second_attempt_gets_its_own_path_credentials_and_model() -> None:
    attempt = Attempt(RT)
    decision = attempt.request_headers(attempt_headers("2"), METADATA, "second")
    assert isinstance(decision, Continue) and not decision.skip_request_body
    assert dict(decision.set_headers) == {":path": "/v1/chat/completions", "x-extra": "1"}
    # The first backend's credential must not reach the second backend.
    assert "authorization" in decision.remove_headers
    body = attempt.request_body(b'{"model": "first", "messages": []}')
    assert isinstance(body, Continue) and body.body is not None
    assert orjson.loads(body.body)["model"] == "second"
    assert dict(body.set_headers)["content-length"] == str(len(body.body))


def test_third_attempt_uses_the_requested_name_and_anthropic_credential() -> None:
    attempt = Attempt(RT)
    decision = attempt.request_headers(attempt_headers("3"), METADATA, "anthropic")
    assert isinstance(decision, Continue)
    assert dict(decision.set_headers)["x-api-key"] == "sk-ant-test"
    assert "x-extra" in decision.remove_headers and "authorization" in decision.remove_headers
    body = attempt.request_body(b'{"model": "second"}')
    assert isinstance(body, Continue) and body.body is not None
    assert orjson.loads(body.body)["model"] == "resilient"


def test_host_metadata_corrects_a_skipped_backend() -> None:
    # The composite cluster moved on to the third backend within attempt 2.
    attempt = Attempt(RT)
    attempt.request_headers(attempt_headers("2"), METADATA, "anthropic")
    assert attempt.target is not None and attempt.target.backend.name == "anthropic"


def test_host_metadata_wins_when_attempt_count_is_missing() -> None:
    attempt = Attempt(RT)
    attempt.request_headers({":path": "/x"}, METADATA, "second")
    assert attempt.index == 1


def test_unknown_route_passes_through() -> None:
    decision = Attempt(RT).request_headers(attempt_headers("2"), {"route": "backend.openai"}, None)
    assert (
        isinstance(decision, Continue) and decision.skip_request_body and not decision.set_headers
    )


def test_attempt_on_a_backend_without_stream_options_drops_the_gateways() -> None:
    config = runtime(
        """
        backends:
          - {name: main, url: "http://127.0.0.1:9/v1"}
          - {name: old-server, url: "http://127.0.0.1:8/v1", omit_stream_options: true}
        models:
          - {name: m, routes: [{backend: main}], fallbacks: [{backend: old-server}]}
        tenants: [{name: t}]
        auth: {anonymous_tenant: t}
        """
    )
    cluster = next(iter(config.fallback_routes))
    body = b'{"model": "m", "stream": true, "stream_options": {"include_usage": true}}'
    added = {"route": cluster, "model": "m", "suffix": "/chat/completions"}
    for metadata, backend, kept in (
        ({**added, "added_stream_options": "1"}, "old-server", False),
        ({**added, "added_stream_options": "1"}, "main", True),
        (added, "old-server", True),  # the client's own stream_options are its business
    ):
        attempt = Attempt(config)
        number = "2" if backend == "old-server" else "1"
        attempt.request_headers(attempt_headers(number), metadata, backend)
        decision = attempt.request_body(body)
        assert isinstance(decision, Continue)
        sent = orjson.loads(decision.body) if decision.body is not None else orjson.loads(body)
        assert ("stream_options" in sent) is kept, (metadata, backend)


def test_attempt_translates_a_chain_across_apis() -> None:
    config = runtime(
        """
        backends:
          - {name: oai, url: "http://127.0.0.1:9/v1"}
          - {name: claude, schema: anthropic, url: "http://127.0.0.1:8/api/v1", default_max_tokens: 99}
        models:
          - {name: m, routes: [{backend: oai, upstream_model: gpt-x}], fallbacks: [{backend: claude, upstream_model: claude-x}]}
        tenants: [{name: t}]
        auth: {anonymous_tenant: t}
        """
    )
    cluster = next(iter(config.fallback_routes))
    metadata = {
        "route": cluster,
        "model": "m",
        "suffix": "/chat/completions?trace=1",  # the client's endpoint and query
        "api": "openai",
        "query": "trace=1",
    }
    client_body = b'{"model": "gpt-x", "messages": [{"role": "user", "content": "hi"}]}'
    first = Attempt(config)
    decision = first.request_headers(attempt_headers("1"), metadata, "oai")
    assert dict(decision.set_headers)[":path"] == "/v1/chat/completions?trace=1"  # type: ignore[union-attr]
    assert first.request_body(client_body) == Continue()  # same API: untouched
    second = Attempt(config)
    decision = second.request_headers(attempt_headers("2"), metadata, "claude")
    headers = dict(decision.set_headers)  # type: ignore[union-attr]
    assert headers[":path"] == "/api/v1/messages?trace=1"
    assert headers["anthropic-version"] == "2023-06-01"
    translated = second.request_body(client_body)
    assert isinstance(translated, Continue) and translated.body is not None
    assert orjson.loads(translated.body) == {
        "model": "claude-x",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        "max_tokens": 99,
    }
