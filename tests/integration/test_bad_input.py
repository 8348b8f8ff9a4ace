"""Bad input through a real Envoy: a clear error in the client's schema, and the service keeps serving."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.integration.conftest import GATEWAY_KEYS, Gateway

AUTH = {"authorization": f"Bearer {GATEWAY_KEYS['team-a']}", "content-type": "application/json"}
GOOD = b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "still here"}]}'
LIMIT = 65536  # limits.max_request_bytes of the integration config


def oversized() -> bytes:
    return (
        b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "'
        + b"x" * LIMIT
        + b'"}]}'
    )


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        ("POST", "/v1/chat/completions", b"{not json", 400, "invalid_json"),
        ("POST", "/v1/chat/completions", b"[1, 2, 3]", 400, "invalid_json"),
        ("POST", "/v1/chat/completions", b"", 400, "invalid_json"),
        (
            "POST",
            "/v1/chat/completions",
            b'{"messages": [{"role": "user", "content": "x"}]}',
            400,
            "missing_required_parameter",
        ),
        ("POST", "/v1/chat/completions", b'{"model": 7, "messages": []}', 400, "invalid_type"),
        (
            "POST",
            "/v1/chat/completions",
            b'{"model": "gpt-4o-mini", "messages": "hi"}',
            400,
            "invalid_type",
        ),
        (
            "POST",
            "/v1/chat/completions",
            b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}',
            400,
            "invalid_type",
        ),
        ("POST", "/v1/chat/completions", oversized(), 413, "request_too_large"),
        (
            "POST",
            "/v1/embeddings",
            b'{"model": "text-embedding-3-small", "input": 5}',
            400,
            "invalid_type",
        ),
        ("POST", "/v1/nothing-here", GOOD, 404, "unknown_url"),
        ("GET", "/v1/chat/completions", b"", 405, "method_not_allowed"),
        ("PUT", "/v1/models", b"", 405, "method_not_allowed"),
    ],
)
def test_bad_requests_get_openai_errors(
    gateway: Gateway, method: str, path: str, body: bytes, status: int, code: str
) -> None:
    with gateway.http() as http:
        reply = http.request(method, path, content=body, headers=AUTH)
        assert reply.status_code == status, reply.text
        assert reply.headers["content-type"] == "application/json"
        error = reply.json()["error"]
        assert error["code"] == code and error["message"] and error["type"]
        # The service keeps serving.
        assert http.post("/v1/chat/completions", content=GOOD, headers=AUTH).status_code == 200


def test_bad_requests_on_the_anthropic_path_get_anthropic_errors(gateway: Gateway) -> None:
    headers = {"x-api-key": GATEWAY_KEYS["team-b"], "content-type": "application/json"}
    with gateway.http() as http:
        for body, status in (
            (b"{oops", 400),
            (b'{"model": "claude-x", "messages": [{"role": "user", "content": "x"}]}', 400),
        ):
            reply = http.post("/v1/messages", content=body, headers=headers)
            assert reply.status_code == status
            payload = reply.json()
            assert (
                payload["type"] == "error" and payload["error"]["type"] == "invalid_request_error"
            )
        reply = http.post(
            "/v1/messages", content=b'{"model": "gpt-4o"}', headers={"x-api-key": "wrong"}
        )
        assert reply.status_code == 401 and reply.json()["error"]["type"] == "authentication_error"


def _chunks(payload: bytes, size: int = 8192) -> Iterator[bytes]:
    for start in range(0, len(payload), size):
        yield payload[start : start + size]


def test_oversized_chunked_body_without_content_length(gateway: Gateway) -> None:
    with gateway.http() as http:
        reply = http.post("/v1/chat/completions", content=_chunks(oversized()), headers=AUTH)
        assert reply.status_code == 413
        assert reply.json()["error"]["code"] == "request_too_large"


def test_body_larger_than_envoys_buffer_is_still_a_json_413(gateway: Gateway) -> None:
    # Envoy's per-connection buffer is the limit plus 1 MiB; beyond it Envoy answers itself.
    huge = (
        b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "'
        + b"y" * (3 * 1024 * 1024)
        + b'"}]}'
    )
    with gateway.http() as http:
        reply = http.post("/v1/chat/completions", content=_chunks(huge, 65536), headers=AUTH)
        assert reply.status_code == 413
        assert reply.headers["content-type"].startswith("application/json")
        assert reply.json()["error"]["code"] == "request_too_large"
        assert http.post("/v1/chat/completions", content=GOOD, headers=AUTH).status_code == 200


def test_broken_stream_from_provider_ends_the_response(gateway: Gateway) -> None:
    # The provider cuts the stream after 3 events; the client sees the stream end early
    # (the gateway must not hang), and the next request is served normally.
    body = b'{"model": "gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": "a b c d e f g"}]}'
    with gateway.http() as http:
        with pytest.raises(httpx.RemoteProtocolError):  # noqa: SIM117
            with http.stream(
                "POST",
                "/v1/chat/completions",
                content=body,
                headers={**AUTH, "x-mock-cut-after": "3"},
            ) as reply:
                assert reply.status_code == 200
                b"".join(reply.iter_bytes())
        assert http.post("/v1/chat/completions", content=GOOD, headers=AUTH).status_code == 200
