"""Azure OpenAI's front door: its paths served as the OpenAI endpoints they stand for."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from extproc.apis.azure import openai_path
from extproc.capture import Sampler
from extproc.dataplane import report
from extproc.dataplane.decisions import Continue, Reply
from extproc.dataplane.exchange import Exchange
from tests.helpers import BASE_CONFIG, runtime

RT = runtime(
    BASE_CONFIG.replace(
        "models:\n",
        """  - {name: azure, schema: azure_openai, url: "https://res.test/openai",
     credential: {env: TEST_OPENAI_KEY}}
models:
  - {name: gpt-4o-azure, routes: [{backend: azure, upstream_model: prod-deployment}]}
""",
        1,
    )
)
KEY = {"api-key": "key-a"}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/openai/deployments/gpt-4o/chat/completions", ("/v1/chat/completions", "gpt-4o")),
        ("/openai/deployments/gpt-4o/completions", ("/v1/completions", "gpt-4o")),
        ("/openai/deployments/emb/embeddings", ("/v1/embeddings", "emb")),
        ("/openai/deployments/org%2Fm%3Atag/embeddings", ("/v1/embeddings", "org/m:tag")),
        ("/openai/v1/chat/completions", ("/v1/chat/completions", None)),
        ("/openai/v1/models/gpt-4o", ("/v1/models/gpt-4o", None)),
        ("/openai/models", ("/v1/models", None)),
        ("/openai/models/gpt-4o", ("/v1/models/gpt-4o", None)),
        ("/openai/deployments/gpt-4o/images/generations", None),
        ("/openai/deployments//chat/completions", None),
        ("/openai/v1/messages", None),  # Anthropic's API is not Azure OpenAI's
        ("/openai/modelsx", None),
        ("/v1/chat/completions", None),
    ],
)
def test_azure_paths_map_onto_openai_endpoints(
    path: str, expected: tuple[str, str | None] | None
) -> None:
    assert openai_path(path) == expected


def send(path: str, body: dict[str, Any], headers: dict[str, str] = KEY) -> Continue | Reply:
    exchange = Exchange(RT)
    first = exchange.request_headers({":path": path, ":method": "POST", **headers}, False)
    if isinstance(first, Reply):
        return first
    decision = exchange.request_body(orjson.dumps(body))
    assert isinstance(decision, Continue | Reply), decision
    return decision


CHAT = {"messages": [{"role": "user", "content": "hi"}]}


def test_the_deployment_is_the_model_and_wins_over_the_body() -> None:
    decision = send(
        "/openai/deployments/gpt-4o-mini/chat/completions?api-version=2024-10-21",
        {**CHAT, "model": "anything"},
    )
    assert isinstance(decision, Continue) and decision.body is not None
    assert orjson.loads(decision.body)["model"] == "gpt-4o-mini"
    # api-version is Azure's; an OpenAI backend gets the plain endpoint.
    assert dict(decision.set_headers)[":path"] == "/v1/chat/completions"
    assert decision.metadata["model"] == "gpt-4o-mini"
    # The body may name no model at all, as Azure allows.
    assert isinstance(send("/openai/deployments/gpt-4o/chat/completions", CHAT), Continue)


def test_the_deployment_reaches_the_backend_when_a_policy_leaves_the_body_alone() -> None:
    """A policy that changes nothing must not undo the model the deployment put in."""
    guarded = runtime(
        BASE_CONFIG.replace("  - name: public\n", "  - name: public\n    policies: [guard]\n", 1)
        + "policies:\n  - name: guard\n    deny: [{name: never, keywords: [zzzz-never]}]\n"
    )
    exchange = Exchange(guarded)
    exchange.request_headers(
        {":path": "/openai/deployments/gpt-4o-mini/chat/completions", ":method": "POST"}, False
    )
    decision = exchange.request_body(orjson.dumps(CHAT))
    assert isinstance(decision, Continue) and decision.body is not None
    assert orjson.loads(decision.body) == {**CHAT, "model": "gpt-4o-mini"}


def test_an_azure_backend_gets_its_own_api_version_not_the_clients() -> None:
    decision = send(
        "/openai/deployments/gpt-4o-azure/chat/completions?api-version=2099-01-01&key=secret",
        CHAT,
    )
    assert isinstance(decision, Continue)
    path = dict(decision.set_headers)[":path"]
    assert path == "/openai/deployments/prod-deployment/chat/completions?api-version=2024-10-21"
    set_headers = dict(decision.set_headers)
    assert set_headers["api-key"] == "sk-test-openai"
    assert "api-key" in decision.remove_headers  # the client's values go before the set


def test_other_query_parameters_pass_and_credential_ones_do_not() -> None:
    decision = send("/v1/chat/completions?key=secret&x=1&%6Bey=2", {**CHAT, "model": "gpt-4o"})
    assert isinstance(decision, Continue)
    assert dict(decision.set_headers)[":path"] == "/v1/chat/completions?x=1"


@pytest.mark.parametrize(
    ("path", "kept"),
    [
        ("/v1/chat/completions?key=secret&x=1", "/v1/chat/completions?x=1"),
        ("/v1/chat/completions?key=secret", "/v1/chat/completions"),
        (
            "/openai/deployments/d/chat/completions?api-version=1",
            "/openai/deployments/d/chat/completions",
        ),
        ("/v1/chat/completions?x=1", None),
        ("/v1/chat/completions", None),
    ],
)
def test_the_headers_phase_takes_the_credential_query_off_the_path(
    path: str, kept: str | None
) -> None:
    """Before the body is read: a request refused after it is logged without the key."""
    decision = Exchange(RT).request_headers({":path": path, ":method": "POST", **KEY}, False)
    assert isinstance(decision, Continue)
    assert decision.set_headers == ([] if kept is None else [(":path", kept)])


def test_a_translated_deployment_keeps_no_azure_query() -> None:
    decision = send(
        "/openai/deployments/claude-sonnet/chat/completions?api-version=2024-10-21",
        {**CHAT, "max_tokens": 5},
        {"api-key": "key-b"},
    )
    assert isinstance(decision, Continue) and decision.body is not None
    assert dict(decision.set_headers)[":path"] == "/v1/messages"
    assert orjson.loads(decision.body)["model"] == "claude-sonnet"


def test_azure_errors_are_openai_errors() -> None:
    unknown = send("/openai/deployments/nope/chat/completions", CHAT)
    assert isinstance(unknown, Reply) and unknown.status == 404
    body = orjson.loads(unknown.body)
    assert body["error"]["code"] == "model_not_found" and body["error"]["type"]
    bad = send("/openai/deployments/a%20b/chat/completions", CHAT)
    assert isinstance(bad, Reply) and orjson.loads(bad.body)["error"]["code"] == "invalid_value"
    url = send("/openai/deployments/gpt-4o/images/generations", CHAT)
    assert isinstance(url, Reply) and orjson.loads(url.body)["error"]["code"] == "unknown_url"
    # An Anthropic-only endpoint for an Azure deployment: the OpenAI schema still.
    embeddings = send(
        "/openai/deployments/claude-x/embeddings", {"input": "x"}, {"api-key": "key-b"}
    )
    assert isinstance(embeddings, Reply) and embeddings.status == 400
    assert "error" in orjson.loads(embeddings.body)


def test_the_model_listing_answers_at_azures_path() -> None:
    exchange = Exchange(RT)
    decision = exchange.request_headers(
        {":path": "/openai/models?api-version=2024-10-21", ":method": "GET", **KEY}, True
    )
    assert isinstance(decision, Reply) and decision.status == 200
    listed = {m["id"] for m in orjson.loads(decision.body)["data"]}
    assert "gpt-4o" in listed and "gpt-4o-azure" in listed
    one = Exchange(RT).request_headers(
        {":path": "/openai/models/gpt-4o", ":method": "GET", **KEY}, True
    )
    assert isinstance(one, Reply) and orjson.loads(one.body)["id"] == "gpt-4o"


def test_a_fallback_chain_hands_its_attempts_the_query_without_credentials() -> None:
    decision = send(
        "/openai/deployments/resilient/chat/completions?api-version=1&key=secret&x=1", CHAT
    )
    assert isinstance(decision, Continue)
    assert decision.metadata["suffix"] == "/chat/completions?x=1"
    assert decision.metadata["query"] == "x=1"  # the chain mixes APIs: attempts translate


def test_the_record_and_the_capture_carry_no_query_string() -> None:
    exchange = Exchange(RT, capture=Sampler(1.0, []))
    path = "/openai/deployments/gpt-4o/chat/completions?api-version=1&key=query-secret"
    exchange.request_headers({":path": path, ":method": "POST", **KEY}, False)
    assert isinstance(exchange.request_body(orjson.dumps(CHAT)), Continue)
    exchange.response_headers({":status": "200", "content-type": "application/json"})
    record = report.record(exchange)
    assert record["path"] == "/openai/deployments/gpt-4o/chat/completions"
    captured = report.capture_record(exchange, record, 1 << 20)
    assert captured is not None and b"query-secret" not in orjson.dumps(captured)
