"""The sidecar setup: Envoy reaches the service over a Unix socket; without the service it fails closed."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator

import pytest

from tests.integration.conftest import Gateway, start_gateway

CONFIG = """
listener: {{port: {port}, request_timeout: 1s}}
admin: {{port: {admin_port}}}
service:
  grpc_address: "unix://{socket}"
  metrics_address: "127.0.0.1:{metrics_port}"
  message_timeout: 1s
backends: [{{name: mock, url: "http://127.0.0.1:{mock_port}/v1"}}]
models: [{{name: gpt-4o-mini, routes: [{{backend: mock}}]}}]
tenants: [{{name: pod}}]
auth: {{anonymous_tenant: pod}}
"""
HELLO = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "via a socket"}]}


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    workdir = tmp_path_factory.mktemp("sidecar")
    gateway = start_gateway(workdir, CONFIG, socket=workdir / "run" / "extproc.sock")
    yield gateway
    gateway.stack.stop()


def test_requests_flow_over_the_unix_socket(sidecar: Gateway) -> None:
    assert (sidecar.stack.workdir / "run" / "extproc.sock").is_socket()
    with sidecar.http() as http:
        reply = http.post("/v1/chat/completions", json=HELLO)
    assert reply.status_code == 200
    assert reply.json()["choices"][0]["message"]["content"] == "via a socket"


def test_a_provider_slower_than_the_request_timeout_gets_a_json_504(sidecar: Gateway) -> None:
    with sidecar.http() as http:
        started = time.monotonic()
        reply = http.post("/v1/chat/completions", json=HELLO, headers={"x-mock-delay-ms": "3000"})
        elapsed = time.monotonic() - started
    assert reply.status_code == 504
    assert reply.json()["error"]["code"] == "upstream_error"
    assert elapsed < 2.5


def test_without_the_service_requests_fail_closed_with_json(sidecar: Gateway) -> None:
    service = sidecar.stack.processes["service"]
    service.send_signal(signal.SIGKILL)
    service.wait()
    with sidecar.http() as http:
        started = time.monotonic()
        reply = http.post("/v1/chat/completions", json=HELLO)
        elapsed = time.monotonic() - started
    # Never forwarded unprocessed: policy cannot be bypassed by taking the service down.
    assert reply.status_code == 500
    assert reply.json()["error"]["code"] == "upstream_error"
    assert "x-mock-path" not in reply.headers
    assert elapsed < 2.0
