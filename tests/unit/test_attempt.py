from __future__ import annotations

import orjson

from extproc.attempt import Attempt
from extproc.decisions import Continue
from tests.helpers import runtime

RT = runtime()
CLUSTER = next(iter(RT.fallback_routes))


def attempt_headers(number: str) -> dict[str, str]:
    return {
        ":path": "/v1/chat/completions",
        "x-extproc-cluster": CLUSTER,
        "x-extproc-model": "resilient",
        "x-extproc-suffix": "/chat/completions",
        "x-envoy-attempt-count": number,
        "authorization": "Bearer sk-test-openai",
        "x-forwarded-for": "10.0.0.9",
    }


def test_first_attempt_only_drops_internal_headers() -> None:
    decision = Attempt(RT).request_headers(attempt_headers("1"), "openai")
    assert isinstance(decision, Continue)
    assert decision.skip_request_body and not decision.set_headers
    assert {
        "x-extproc-cluster",
        "x-extproc-model",
        "x-forwarded-for",
        "x-envoy-attempt-count",
    } <= set(decision.remove_headers)


def test_second_attempt_gets_its_own_path_credentials_and_model() -> None:
    attempt = Attempt(RT)
    decision = attempt.request_headers(attempt_headers("2"), "second")
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
    decision = attempt.request_headers(attempt_headers("3"), "anthropic")
    assert isinstance(decision, Continue)
    assert dict(decision.set_headers)["x-api-key"] == "sk-ant-test"
    assert "x-extra" in decision.remove_headers and "authorization" in decision.remove_headers
    body = attempt.request_body(b'{"model": "second"}')
    assert isinstance(body, Continue) and body.body is not None
    assert orjson.loads(body.body)["model"] == "resilient"


def test_host_metadata_corrects_a_skipped_backend() -> None:
    # The composite cluster moved on to the third backend within attempt 2.
    attempt = Attempt(RT)
    attempt.request_headers(attempt_headers("2"), "anthropic")
    assert attempt.target is not None and attempt.target.backend.name == "anthropic"


def test_unknown_cluster_passes_through() -> None:
    headers = attempt_headers("2") | {"x-extproc-cluster": "backend.openai"}
    decision = Attempt(RT).request_headers(headers, None)
    assert (
        isinstance(decision, Continue) and decision.skip_request_body and not decision.set_headers
    )
