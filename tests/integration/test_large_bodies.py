"""Multimodal requests at the default body limit, through a real Envoy, with both SDKs: ~30 MB
of base64 images reach the provider whole, on every path a body can take (as sent,
translated, through a fallback chain); a body over the limit is a 413 in the client's
schema."""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from extproc.config.loader import DEFAULT_MAX_REQUEST_BYTES
from tests.integration.conftest import PORTS, Gateway, start_gateway

CONFIG = (
    PORTS
    + """backends:
  - {{name: openai, url: "http://127.0.0.1:{mock_port}/v1"}}
  - {{name: anthropic, schema: anthropic, url: "http://127.0.0.1:{mock_port}/v1"}}
  - name: failing
    url: http://127.0.0.1:{mock_port}/failing/v1
    headers: {{x-mock-status: "503"}}
models:
  - {{name: gpt-4o-mini, routes: [{{backend: openai}}]}}
  - {{name: "claude-*", routes: [{{backend: anthropic}}]}}
  - {{name: gpt-on-claude, routes: [{{backend: anthropic, upstream_model: claude-x}}]}}
  - name: resilient
    routes: [{{backend: failing}}]
    fallbacks: [{{backend: openai}}]
  - name: mixed
    routes: [{{backend: failing}}]
    fallbacks: [{{backend: anthropic, upstream_model: claude-x}}]
tenants: [{{name: public}}]
auth: {{anonymous_tenant: public}}
"""
)
IMAGE_BASE64_BYTES = 10_000_000  # a ~7.5 MB image; OpenAI accepts images up to 20 MB
TIMEOUT = 120  # a 30 MB body crosses four processes on a loaded 2-core machine


@pytest.fixture(scope="module")
def large(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    started = start_gateway(tmp_path_factory.mktemp("large"), CONFIG)
    yield started
    started.stack.stop()


def images(count: int, size: int = IMAGE_BASE64_BYTES) -> list[str]:
    """`count` distinct random PNG-typed payloads, base64, `size` characters each."""
    return [base64.b64encode(os.urandom(size * 3 // 4)).decode() for _ in range(count)]


def digest(payloads: list[str]) -> str:
    hashed = hashlib.sha256()
    for payload in payloads:
        hashed.update(payload.encode())
    return hashed.hexdigest()


def openai_client(gateway: Gateway) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{gateway.url}/v1", api_key="none", max_retries=0, timeout=TIMEOUT
    )


def anthropic_client(gateway: Gateway) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.url, api_key="none", max_retries=0, timeout=TIMEOUT)


def chat_content(payloads: list[str]) -> list[dict[str, Any]]:
    return [
        {"type": "text", "text": "What is in these pictures?"},
        *(
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{p}"}}
            for p in payloads
        ),
    ]


def message_content(payloads: list[str]) -> list[dict[str, Any]]:
    return [
        {"type": "text", "text": "What is in these pictures?"},
        *(
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": p}}
            for p in payloads
        ),
    ]


@pytest.mark.parametrize("model", ["gpt-4o-mini", "gpt-on-claude", "resilient", "mixed"])
def test_thirty_megabytes_of_images_reach_the_provider_from_openais_sdk(
    large: Gateway, model: str
) -> None:
    payloads = images(3)
    raw = openai_client(large).chat.completions.with_raw_response.create(
        model=model,
        messages=[{"role": "user", "content": chat_content(payloads)}],  # type: ignore[misc]
    )
    assert raw.http_response.status_code == 200
    assert raw.headers["x-mock-images-sha256"] == digest(payloads)
    assert int(raw.headers["x-mock-body-bytes"]) > 3 * IMAGE_BASE64_BYTES
    answer = raw.parse()
    assert answer.choices[0].message.content == "What is in these pictures?"


@pytest.mark.parametrize("model", ["claude-x", "mixed"])
def test_thirty_megabytes_of_images_reach_the_provider_from_anthropics_sdk(
    large: Gateway, model: str
) -> None:
    payloads = images(3)
    raw = anthropic_client(large).messages.with_raw_response.create(
        model=model,
        max_tokens=64,
        messages=[{"role": "user", "content": message_content(payloads)}],  # type: ignore[misc]
    )
    assert raw.http_response.status_code == 200
    assert raw.headers["x-mock-images-sha256"] == digest(payloads)
    answer = raw.parse()
    assert answer.content[0].text == "What is in these pictures?"  # type: ignore[union-attr]


def over_the_limit() -> list[str]:
    """Four images whose base64 passes the default limit by ~2 MB."""
    return images(4, (DEFAULT_MAX_REQUEST_BYTES + 2_000_000) // 4)


def test_over_the_default_limit_is_a_413_in_openais_schema(large: Gateway) -> None:
    with pytest.raises(openai.APIStatusError) as raised:
        openai_client(large).chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": chat_content(over_the_limit())}],  # type: ignore[misc]
        )
    assert raised.value.status_code == 413
    error = raised.value.body
    assert isinstance(error, dict) and error["code"] == "request_too_large"
    assert str(DEFAULT_MAX_REQUEST_BYTES) in error["message"]


def test_over_the_default_limit_is_a_413_in_anthropics_schema(large: Gateway) -> None:
    with pytest.raises(anthropic.APIStatusError) as raised:
        anthropic_client(large).messages.create(
            model="claude-x",
            max_tokens=64,
            messages=[{"role": "user", "content": message_content(over_the_limit())}],  # type: ignore[misc]
        )
    assert raised.value.status_code == 413
    assert isinstance(raised.value.body, dict)
    assert raised.value.body["error"]["type"] == "request_too_large"


def test_an_unsized_body_over_the_limit_is_counted_and_refused(large: Gateway) -> None:
    """Without content-length the service counts the body Envoy buffered (up to the limit
    plus 1 MiB) and refuses it in the client's schema."""
    body = (
        b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "'
        + b"x" * (DEFAULT_MAX_REQUEST_BYTES + 512 * 1024)
        + b'"}]}'
    )
    chunks = (body[i : i + 1024 * 1024] for i in range(0, len(body), 1024 * 1024))
    with large.http() as http:
        reply = http.post(
            "/v1/chat/completions",
            content=chunks,
            headers={"content-type": "application/json"},
            timeout=TIMEOUT,
        )
    assert reply.status_code == 413
    error = reply.json()["error"]
    assert error["code"] == "request_too_large"
    assert str(DEFAULT_MAX_REQUEST_BYTES) in error["message"]  # the service's, not Envoy's
