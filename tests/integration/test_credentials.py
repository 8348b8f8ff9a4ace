"""The client's credentials through a real Envoy: every form a client SDK sends is accepted
as the gateway key where it is one, and none of them reaches a provider or a log."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.helpers import sha256
from tests.integration.conftest import (
    GATEWAY_KEYS,
    PROVIDER_KEYS,
    PROXY_AUTHORIZATION,
    Gateway,
)

CREDENTIAL_HEADERS = {"authorization", "x-api-key", "api-key", "x-goog-api-key"}


def every_form(key: str) -> list[tuple[str, str]]:
    """Every form at once; x-api-key and api-key twice (Envoy keeps each value apart, where
    it joins repeated Authorization headers into one)."""
    return [
        ("authorization", f"Bearer {key}"),
        ("x-api-key", key),
        ("x-api-key", key),
        ("api-key", key),
        ("api-key", key),
        ("x-goog-api-key", key),
        ("proxy-authorization", PROXY_AUTHORIZATION),
        ("anthropic-version", "2023-06-01"),
    ]


def body(model: str) -> dict[str, Any]:
    return {"model": model, "max_tokens": 20, "messages": [{"role": "user", "content": "keys?"}]}


# (path, model, tenant, the header the provider's key arrives in, its value)
CASES = {
    "openai": (
        "/v1/chat/completions",
        "gpt-4o-mini",
        "team-a",
        "authorization",
        f"Bearer {PROVIDER_KEYS['openai']}",
    ),
    "anthropic": (
        "/v1/messages",
        "claude-3-5-haiku-latest",
        "team-b",
        "x-api-key",
        PROVIDER_KEYS["anthropic"],
    ),
    "translated": (
        "/v1/chat/completions",
        "claude-3-5-haiku-latest",
        "team-b",
        "x-api-key",
        PROVIDER_KEYS["anthropic"],
    ),
    "azure": (
        "/v1/chat/completions",
        "azure-gpt",
        "team-a",
        "api-key",
        PROVIDER_KEYS["openai"],
    ),
    # Third attempt, after a refused connection and a 503.
    "fallback": (
        "/v1/chat/completions",
        "resilient",
        "team-a",
        "authorization",
        f"Bearer {PROVIDER_KEYS['openai']}",
    ),
    # Second attempt, Anthropic's API after an OpenAI one.
    "fallback-across-apis": (
        "/v1/chat/completions",
        "mixed",
        "team-b",
        "x-api-key",
        PROVIDER_KEYS["anthropic"],
    ),
}
ECHO = {
    "authorization": "x-mock-authorization-sha256",
    "x-api-key": "x-mock-api-key-sha256",
    "api-key": "x-mock-azure-api-key-sha256",
}


@pytest.mark.parametrize("case", list(CASES))
def test_no_client_credential_reaches_a_provider(gateway: Gateway, case: str) -> None:
    path, model, tenant, own, provider_value = CASES[case]
    key = GATEWAY_KEYS[tenant]
    with gateway.http() as http:
        reply = http.post(f"{path}?key={key}&x=1", json=body(model), headers=every_form(key))
    assert reply.status_code == 200, reply.text
    received = set(reply.headers["x-mock-headers"].split(","))
    # Only the backend's own credential header arrives, holding the provider's key once.
    assert received & (CREDENTIAL_HEADERS | {"proxy-authorization"}) == {own}
    assert reply.headers[ECHO[own]] == sha256(provider_value)
    upstream = reply.headers["x-mock-path"]
    assert key not in upstream
    assert parse_qs(urlsplit(upstream).query)["x"] == ["1"]  # other parameters pass
    request_id = reply.headers["x-request-id"]
    assert gateway.record(request_id)["tenant"] == tenant
    assert key not in gateway.access_log(request_id)["path"]


@pytest.mark.parametrize("header", ["authorization", "x-api-key", "api-key", "x-goog-api-key"])
def test_the_gateway_key_is_accepted_in_each_sdks_header(gateway: Gateway, header: str) -> None:
    key = GATEWAY_KEYS["team-a"]
    value = f"Bearer {key}" if header == "authorization" else key
    with gateway.http() as http:
        # gpt-4o is team-a's only: the anonymous tenant would get 403.
        reply = http.post("/v1/chat/completions", json=body("gpt-4o"), headers={header: value})
    assert reply.status_code == 200, reply.text
    assert gateway.record(reply.headers["x-request-id"])["tenant"] == "team-a"
    received = set(reply.headers["x-mock-headers"].split(","))
    assert received & CREDENTIAL_HEADERS == {"authorization"}  # the provider's, only
    assert reply.headers["x-mock-authorization-sha256"] == sha256(
        f"Bearer {PROVIDER_KEYS['openai']}"
    )


@pytest.mark.parametrize(
    ("path", "model"),
    [("/v1/chat/completions", "gpt-4o-mini"), ("/v1/messages", "claude-3-5-haiku-latest")],
)
def test_two_different_keys_are_refused_in_the_clients_schema(
    gateway: Gateway, path: str, model: str
) -> None:
    headers = {
        "authorization": f"Bearer {GATEWAY_KEYS['team-a']}",
        "api-key": GATEWAY_KEYS["team-b"],
        "anthropic-version": "2023-06-01",
    }
    with gateway.http() as http:
        reply = http.post(path, json=body(model), headers=headers)
    assert reply.status_code == 401 and "x-mock-path" not in reply.headers
    error = reply.json()["error"]
    assert error["type"] == (
        "authentication_error" if path == "/v1/messages" else "invalid_request_error"
    )
    assert "'authorization'" in error["message"] and "'api-key'" in error["message"]
    assert not [k for k in GATEWAY_KEYS.values() if k in reply.text]
    assert gateway.record(reply.headers["x-request-id"])["error"] == "conflicting_api_keys"


def test_a_key_in_the_query_string_is_neither_accepted_nor_logged(gateway: Gateway) -> None:
    key = GATEWAY_KEYS["team-a"]
    with gateway.http() as http:
        # Not a gateway key: the anonymous tenant, whose allow-list lacks gpt-4o.
        refused = http.post(f"/v1/chat/completions?key={key}", json=body("gpt-4o"))
        # Refused by the service before any routing: Envoy logs the client's own path.
        unknown = http.post(f"/v1/nowhere?alt=sse&key={key}", json=body("gpt-4o"))
        served = http.post(f"/v1/chat/completions?%6Bey={key}", json=body("gpt-4o-mini"))
    assert refused.status_code == 403 and "x-mock-path" not in refused.headers
    assert unknown.status_code == 404
    assert served.status_code == 200 and key not in served.headers["x-mock-path"]
    for reply, path in (
        (refused, "/v1/chat/completions"),
        (unknown, "/v1/nowhere"),
        (served, "/v1/chat/completions"),
    ):
        request_id = reply.headers["x-request-id"]
        assert gateway.access_log(request_id)["path"] == path
        assert gateway.record(request_id)["path"] == path
    assert key not in (gateway.stack.workdir / "envoy.log").read_text()
    assert key not in gateway.service_log()


def test_the_proxy_credential_never_identifies_a_tenant(gateway: Gateway) -> None:
    headers = {"proxy-authorization": f"Bearer {GATEWAY_KEYS['team-a']}"}
    with gateway.http() as http:
        reply = http.post("/v1/chat/completions", json=body("gpt-4o"), headers=headers)
    assert reply.status_code == 403 and "x-mock-path" not in reply.headers


def test_the_mock_reports_every_credential_it_receives(gateway: Gateway) -> None:
    """What the cases above rely on: sent to the mock directly, every form shows."""
    key = GATEWAY_KEYS["team-a"]
    with httpx.Client(base_url=f"http://127.0.0.1:{gateway.mock_port}") as mock:
        reply = mock.post("/v1/chat/completions?key=1", json=body("m"), headers=every_form(key))
    received = set(reply.headers["x-mock-headers"].split(","))
    assert received >= CREDENTIAL_HEADERS | {"proxy-authorization"}
    assert reply.headers["x-mock-api-key-sha256"] == sha256(f"{key}, {key}")
    assert reply.headers["x-mock-path"] == "/v1/chat/completions?key=1"
