"""Azure OpenAI's front door through a real Envoy, with the openai SDK's AzureOpenAI and
AsyncAzureOpenAI clients: deployment paths to every kind of backend, plain and streamed."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from tests.helpers import sha256
from tests.integration.conftest import GATEWAY_KEYS, PROVIDER_KEYS, Gateway

QUESTION = [{"role": "user", "content": "Which deployment answers?"}]
# The client's api-version: Azure's, not forwarded (an Azure backend gets its own).
CLIENT_API_VERSION = "2025-01-01-preview"


def azure(gateway: Gateway, key: str = GATEWAY_KEYS["team-a"], **kwargs: Any) -> openai.AzureOpenAI:
    return openai.AzureOpenAI(**client_options(gateway, key), **kwargs)


def async_azure(gateway: Gateway, key: str = GATEWAY_KEYS["team-a"]) -> openai.AsyncAzureOpenAI:
    return openai.AsyncAzureOpenAI(**client_options(gateway, key))


def client_options(gateway: Gateway, key: str) -> dict[str, Any]:
    return {
        "azure_endpoint": gateway.url,
        "api_key": key,
        "api_version": CLIENT_API_VERSION,
        "max_retries": 0,
        "timeout": 15,
    }


# deployment -> (tenant, upstream path, the header with the provider's key, its value)
BACKENDS = {
    "gpt-4o-mini": (
        "team-a",
        "/v1/chat/completions",
        "x-mock-authorization-sha256",
        f"Bearer {PROVIDER_KEYS['openai']}",
    ),
    "claude-3-5-haiku-latest": (
        "team-b",
        "/v1/messages",
        "x-mock-api-key-sha256",
        PROVIDER_KEYS["anthropic"],
    ),
    "azure-gpt": (
        "team-a",
        "/openai/deployments/gpt-4o-prod/chat/completions?api-version=2024-10-21",
        "x-mock-azure-api-key-sha256",
        PROVIDER_KEYS["openai"],
    ),
}


@pytest.mark.parametrize("deployment", list(BACKENDS), ids=["openai", "translated", "azure"])
def test_chat_on_a_deployment_reaches_its_backend(gateway: Gateway, deployment: str) -> None:
    tenant, upstream, echo, provider_value = BACKENDS[deployment]
    raw = azure(gateway, GATEWAY_KEYS[tenant]).chat.completions.with_raw_response.create(
        model=deployment, messages=QUESTION, max_tokens=30
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == QUESTION[0]["content"]
    assert completion.usage is not None and completion.usage.total_tokens > 0
    # The path names the deployment; api-version went nowhere but to the Azure backend,
    # and there as that backend's own.
    assert raw.headers["x-mock-path"] == upstream
    assert raw.headers[echo] == sha256(provider_value)
    received = set(raw.headers["x-mock-headers"].split(","))
    assert "api-key" not in received or deployment == "azure-gpt"
    record = gateway.record(raw.headers["x-request-id"])
    assert record["tenant"] == tenant and record["requested_model"] == deployment
    assert record["path"] == f"/openai/deployments/{deployment}/chat/completions"


@pytest.mark.parametrize("deployment", list(BACKENDS), ids=["openai", "translated", "azure"])
def test_streamed_chat_on_a_deployment(gateway: Gateway, deployment: str) -> None:
    tenant = BACKENDS[deployment][0]
    stream = azure(gateway, GATEWAY_KEYS[tenant]).chat.completions.create(
        model=deployment,
        messages=QUESTION,
        max_tokens=30,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == QUESTION[0]["content"]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


@pytest.mark.parametrize("deployment", ["gpt-4o-mini", "azure-gpt"])
def test_completions_plain_and_streamed(gateway: Gateway, deployment: str) -> None:
    client = azure(gateway)
    raw = client.completions.with_raw_response.create(model=deployment, prompt="say this")
    assert raw.parse().choices[0].text == "say this"
    assert raw.headers["x-mock-path"].split("?")[0].endswith("/completions")
    assert "chat" not in raw.headers["x-mock-path"]
    stream = client.completions.create(model=deployment, prompt="say this", stream=True)
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "say this"
    # The gateway asked for usage; the client, which did not, gets none.
    assert all(c.usage is None for c in chunks)


@pytest.mark.parametrize("deployment", ["text-embedding-3-small", "azure-gpt"])
def test_embeddings(gateway: Gateway, deployment: str) -> None:
    raw = azure(gateway).embeddings.with_raw_response.create(model=deployment, input=["a", "b"])
    assert len(raw.parse().data) == 2
    assert raw.headers["x-mock-path"].split("?")[0].endswith("/embeddings")


async def test_the_async_client_plain_and_streamed(gateway: Gateway) -> None:
    async with async_azure(gateway) as client:
        completion = await client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION)
        assert completion.choices[0].message.content == QUESTION[0]["content"]
        stream = await client.chat.completions.create(
            model="azure-gpt", messages=QUESTION, stream=True
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert text == QUESTION[0]["content"]
        legacy = await client.completions.create(model="gpt-4o-mini", prompt="p", stream=True)
        assert "".join([c.choices[0].text async for c in legacy if c.choices]) == "p"
        vectors = await client.embeddings.create(model="text-embedding-3-small", input="x")
        assert len(vectors.data) == 1
    async with async_azure(gateway, GATEWAY_KEYS["team-b"]) as client:
        translated = await client.chat.completions.create(
            model="claude-3-5-haiku-latest", messages=QUESTION, stream=True
        )
        chunks = [c async for c in translated]
        assert (
            "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            == (QUESTION[0]["content"])
        )


def test_a_client_bound_to_a_deployment_is_routed_by_it(gateway: Gateway) -> None:
    """azure_deployment puts the deployment in the base URL; the body's model (which the
    SDK still requires) is ignored, as Azure ignores it."""
    client = azure(gateway, azure_deployment="gpt-4o-mini")
    raw = client.chat.completions.with_raw_response.create(
        model="whatever-the-app-says", messages=QUESTION
    )
    assert raw.parse().model == "gpt-4o-mini"
    assert gateway.record(raw.headers["x-request-id"])["requested_model"] == "gpt-4o-mini"


def test_an_azure_ad_token_is_the_gateway_key_as_a_bearer(gateway: Gateway) -> None:
    client = openai.AzureOpenAI(
        azure_endpoint=gateway.url,
        azure_ad_token=GATEWAY_KEYS["team-a"],
        api_version=CLIENT_API_VERSION,
        max_retries=0,
        timeout=15,
    )
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=QUESTION)
    assert gateway.record(raw.headers["x-request-id"])["tenant"] == "team-a"
    assert raw.headers["x-mock-authorization-sha256"] == sha256(f"Bearer {PROVIDER_KEYS['openai']}")


def test_the_model_listing_at_azures_path(gateway: Gateway) -> None:
    listed = {m.id for m in azure(gateway).models.list()}
    assert {"gpt-4o-mini", "gpt-4o", "azure-gpt"} <= listed
    assert not any(name.startswith("claude") for name in listed)  # team-a's allow-list
    assert azure(gateway).models.retrieve("azure-gpt").id == "azure-gpt"


def test_azures_v1_api_is_openais(gateway: Gateway) -> None:
    client = openai.OpenAI(
        base_url=f"{gateway.url}/openai/v1", api_key=GATEWAY_KEYS["team-a"], max_retries=0
    )
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=QUESTION)
    assert raw.parse().choices[0].message.content == QUESTION[0]["content"]
    assert raw.headers["x-mock-path"] == "/v1/chat/completions"


def test_errors_are_in_openais_schema(gateway: Gateway) -> None:
    client = azure(gateway)
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="no-such-deployment", messages=QUESTION)
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.PermissionDeniedError) as forbidden:
        client.chat.completions.create(model="claude-3-5-haiku-latest", messages=QUESTION)
    assert forbidden.value.code == "model_not_allowed"
    with pytest.raises(openai.AuthenticationError) as refused:
        azure(gateway, "gw-key-guessed").chat.completions.create(
            model="gpt-4o-mini", messages=QUESTION
        )
    assert refused.value.code == "invalid_api_key"
    with pytest.raises(openai.BadRequestError) as unsupported:
        azure(gateway, GATEWAY_KEYS["team-b"]).embeddings.create(
            model="claude-3-5-haiku-latest", input="x"
        )
    assert unsupported.value.code == "model_not_supported_on_endpoint"
    with pytest.raises(openai.NotFoundError) as unserved:
        client.images.generate(model="gpt-4o-mini", prompt="a cat")
    assert unserved.value.code == "unknown_url"
