"""What a client cannot do through the gateway: steer routing or identity with headers,
see a provider's key, hand its own key to a provider, or use another tenant's models."""

from __future__ import annotations

import hashlib

import httpx
import pytest

from tests.integration.conftest import GATEWAY_KEYS, PROVIDER_KEYS, Gateway

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "who am I?"}]}


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def post(gateway: Gateway, body: dict[str, object], **headers: str) -> httpx.Response:
    with gateway.http() as http:
        return http.post("/v1/chat/completions", json=body, headers=headers)


def test_a_client_cannot_pick_the_cluster(gateway: Gateway) -> None:
    reply = post(
        gateway,
        CHAT,
        authorization=f"Bearer {GATEWAY_KEYS['team-a']}",
        **{"x-extproc-cluster": "backend.anthropic"},
    )
    assert reply.status_code == 200
    # It went where the model routes, with that backend's key.
    assert reply.headers["x-mock-path"] == "/v1/chat/completions"
    assert reply.headers["x-mock-authorization-sha256"] == digest(
        f"Bearer {PROVIDER_KEYS['openai']}"
    )
    assert "x-extproc-cluster" not in reply.headers["x-mock-headers"].split(",")
    # A request the service refuses is not forwarded because of the header either.
    refused = post(
        gateway,
        {**CHAT, "model": "no-such-model"},
        authorization=f"Bearer {GATEWAY_KEYS['team-a']}",
        **{"x-extproc-cluster": "backend.openai"},
    )
    assert refused.status_code == 404 and "x-mock-path" not in refused.headers


def test_a_client_cannot_claim_an_identity_by_header(gateway: Gateway) -> None:
    """Without mTLS on the listener Envoy drops a client's certificate header: the request
    is the anonymous tenant's, whose allow-list lacks Claude."""
    body = {**CHAT, "model": "claude-3-5-haiku-latest"}
    forged = post(
        gateway,
        body,
        **{"x-forwarded-client-cert": "By=spiffe://x;URI=spiffe://cluster.local/ns/b/sa/app"},
    )
    assert forged.status_code in (403, 404) and "x-mock-path" not in forged.headers


def test_internal_headers_from_clients_are_not_trusted(gateway: Gateway) -> None:
    # The log's key is Envoy's id, not the client's.
    reply = post(
        gateway,
        CHAT,
        authorization=f"Bearer {GATEWAY_KEYS['team-a']}",
        **{"x-request-id": "chosen-by-client", "x-mock-delay-ms": "300"},
        **{"x-envoy-upstream-rq-timeout-ms": "1", "x-envoy-max-retries": "5"},
    )
    assert reply.status_code == 200  # Envoy's own timeout governs, not the client's
    assert reply.headers["x-request-id"] != "chosen-by-client"
    sent = reply.headers["x-mock-headers"].split(",")
    assert not [name for name in sent if name.startswith("x-envoy-")]
    assert "x-forwarded-for" not in sent


@pytest.mark.parametrize(
    ("path", "model", "credential"),
    [
        (
            "/v1/chat/completions",
            "gpt-4o-mini",
            {"authorization": f"Bearer {GATEWAY_KEYS['team-a']}"},
        ),
        ("/v1/chat/completions", "gpt-4o-mini", {"x-api-key": GATEWAY_KEYS["team-b"]}),
        ("/v1/messages", "claude-3-5-haiku-latest", {"x-api-key": GATEWAY_KEYS["team-b"]}),
        ("/v1/messages", "gpt-4o-mini", {"authorization": f"Bearer {GATEWAY_KEYS['team-b']}"}),
    ],
    ids=["openai-bearer", "openai-x-api-key", "anthropic-x-api-key", "translated"],
)
def test_keys_stay_on_their_side(
    gateway: Gateway, path: str, model: str, credential: dict[str, str]
) -> None:
    """The gateway key never reaches a provider; a provider key never reaches the client."""
    body: dict[str, object] = {
        "model": model,
        "max_tokens": 20,
        "messages": [{"role": "user", "content": "keys?"}],
    }
    headers = {**credential, "anthropic-version": "2023-06-01"}
    with gateway.http() as http:
        reply = http.post(path, json=body, headers=headers)
    assert reply.status_code == 200, reply.text
    gateway_key = next(iter(credential.values())).removeprefix("Bearer ")
    seen = {
        reply.headers.get("x-mock-authorization-sha256"),
        reply.headers.get("x-mock-api-key-sha256"),
    }
    assert digest(gateway_key) not in seen and digest(f"Bearer {gateway_key}") not in seen
    assert seen & {
        digest(f"Bearer {PROVIDER_KEYS['openai']}"),
        digest(PROVIDER_KEYS["anthropic"]),
    }
    answer = reply.text + " ".join(f"{k}: {v}" for k, v in reply.headers.items())
    for key in PROVIDER_KEYS.values():
        assert key not in answer


def test_a_tenant_cannot_use_another_tenants_models(gateway: Gateway) -> None:
    claude = {**CHAT, "model": "claude-3-5-haiku-latest"}
    assert post(gateway, claude, authorization=f"Bearer {GATEWAY_KEYS['team-a']}").status_code in (
        403,
        404,
    )
    assert (
        post(gateway, claude, authorization=f"Bearer {GATEWAY_KEYS['team-b']}").status_code == 200
    )
    # A key that is not a tenant's is refused, not treated as anonymous.
    assert post(gateway, CHAT, authorization="Bearer gw-key-guessed").status_code == 401
