"""A real Envoy + the service + the mock provider, on free loopback ports."""

from __future__ import annotations

import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest

from extproc.control.stack import Stack, free_port
from tests.helpers import sha256

GATEWAY_KEYS = {"team-a": "gw-key-team-a", "team-b": "gw-key-team-b"}
PROVIDER_KEYS = {
    "openai": "sk-provider-openai",
    "anthropic": "sk-ant-provider",
    "failing": "sk-failing",
}
# What a client gives its own forward proxy ("proxy-user:proxy-pass-123", Basic).
PROXY_AUTHORIZATION = "Basic cHJveHktdXNlcjpwcm94eS1wYXNzLTEyMw=="

# The ports every test gateway's config takes (filled in by start_gateway).
PORTS = """
listener: {{port: {port}}}
admin: {{port: {admin_port}}}
service:
  grpc_address: 127.0.0.1:{grpc_port}
  metrics_address: 127.0.0.1:{metrics_port}
  message_timeout: 5s
  shutdown_grace: 2s
"""
# An OpenAI and an Anthropic backend on the mock, and a model for each.
MOCK_BOTH = """backends:
  - {{name: openai, url: "http://127.0.0.1:{mock_port}/v1"}}
  - name: anthropic
    schema: anthropic
    url: http://127.0.0.1:{mock_port}/v1
models:
  - {{name: gpt-4o-mini, routes: [{{backend: openai}}]}}
  - {{name: "claude-*", routes: [{{backend: anthropic}}]}}
"""
CONFIG = (
    PORTS
    + """limits: {{max_request_bytes: 65536}}
backends:
  - name: openai
    url: http://127.0.0.1:{mock_port}/v1
    credential: {{env: IT_OPENAI_KEY}}
  - name: openai-b
    url: http://127.0.0.1:{mock_port}/b/v1
    credential: {{file: key-b.txt}}
  - name: anthropic
    schema: anthropic
    url: http://localhost:{mock_port}/v1
    credential: {{env: IT_ANTHROPIC_KEY}}
    headers: {{anthropic-version: "2023-06-01"}}
  - name: broken
    url: http://127.0.0.1:{dead_port}/v1
    connect_timeout: 1s
  - name: failing
    url: http://127.0.0.1:{mock_port}/failing/v1
    credential: {{env: IT_FAILING_KEY}}
    headers: {{x-mock-status: "503"}}
  - name: azure
    schema: azure_openai
    url: http://127.0.0.1:{mock_port}/openai
    credential: {{env: IT_OPENAI_KEY}}
  - name: drifting
    url: http://127.0.0.1:{mock_port}/drifting/v1
  - name: ratelimited
    url: http://127.0.0.1:{mock_port}/ratelimited/v1
    headers: {{x-mock-status: "429"}}
  - name: openai-native
    url: http://127.0.0.1:{mock_port}/v1
    credential: {{env: IT_OPENAI_KEY}}
    responses_api: true
  - name: responses-only
    schema: openai_responses
    url: http://127.0.0.1:{mock_port}/v1
    credential: {{env: IT_OPENAI_KEY}}
models:
  - name: gpt-4o-mini
    aliases: [mini]
    routes: [{{backend: openai}}]
  - name: gpt-4o
    routes: [{{backend: openai, upstream_model: gpt-4o-2024-08-06}}]
  - name: canary
    routes:
      - {{backend: openai, weight: 1, upstream_model: canary-a}}
      - {{backend: openai-b, weight: 1, upstream_model: canary-b}}
  - name: claude-*
    routes: [{{backend: anthropic}}]
  - name: text-embedding-3-small
    routes: [{{backend: openai}}]
  - name: old-model
    routes: [{{backend: openai}}]
    deprecation: {{deprecated_at: "2025-01-01", sunset: "2099-01-01", replacement: gpt-4o-mini}}
  - name: retired-model
    routes: [{{backend: openai}}]
    deprecation: {{sunset: "2020-01-01", replacement: gpt-4o-mini}}
  - name: moved-model
    routes: [{{backend: openai}}]
    deprecation: {{sunset: "2020-01-01", replacement: gpt-4o, after_sunset: reroute}}
  - name: resilient
    routes: [{{backend: broken, upstream_model: r-first}}]
    fallbacks:
      - {{backend: failing, upstream_model: r-second}}
      - {{backend: openai, upstream_model: r-third}}
  - name: resilient-429
    routes: [{{backend: ratelimited, upstream_model: q-first}}]
    fallbacks: [{{backend: openai, upstream_model: q-second}}]
  - name: doomed
    routes: [{{backend: failing}}]
    fallbacks: [{{backend: broken}}]
  - name: unreachable
    routes: [{{backend: broken}}]
  - name: drift-model
    routes: [{{backend: drifting}}]
  - name: captured-gpt
    routes: [{{backend: openai, upstream_model: gpt-4o-mini}}]
  - name: cached-gpt
    routes: [{{backend: openai}}]
    cache: {{mode: deterministic}}
  - name: cached-claude
    routes: [{{backend: anthropic}}]
    cache: {{mode: all}}
  - name: azure-gpt
    routes: [{{backend: azure, upstream_model: gpt-4o-prod}}]
  - name: mixed
    routes: [{{backend: failing, upstream_model: m-first}}]
    fallbacks: [{{backend: anthropic, upstream_model: claude-mixed}}]
  - name: gpt-native
    routes: [{{backend: openai-native}}]
  - name: responses-model
    routes: [{{backend: responses-only}}]
  - name: cached-responses
    routes: [{{backend: responses-only}}]
    cache: {{mode: all}}
tenants:
  - name: team-a
    api_key_sha256: ["{key_a}"]
    models: ["gpt-*", "text-*", "canary", "old-model", "retired-model", "moved-model", "resilient*", "doomed", "unreachable", "mixed", "azure-gpt", "drift-model", "captured-gpt", "cached-gpt"]
  - name: team-b
    api_key_sha256: ["{key_b}"]
    models: ["claude-*", "gpt-4o-mini", "mixed", "azure-gpt", "cached-claude", "responses-model", "cached-responses"]
  - name: public
    models: ["gpt-4o-mini"]
auth: {{anonymous_tenant: public}}
schema_drift: {{learning_responses: 5, check_every: 1}}
capture:
  path: capture/traffic.jsonl
  rates: [{{models: ["captured-gpt"], rate: 1}}]
  max_file_bytes: 6000
  max_files: 2
prices:
  models:
    - {{models: ["gpt-4o-mini", "text-embedding-*"], input: 0.15, output: 0.6, cached_input: 0.075}}
    - {{models: ["claude-*"], input: 3, output: 15}}
"""
)


@dataclass
class Gateway:
    url: str
    stack: Stack
    mock_port: int
    metrics_url: str

    def openai(self, key: str = GATEWAY_KEYS["team-a"], **kwargs: Any) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"{self.url}/v1", api_key=key, max_retries=0, timeout=15, **kwargs
        )

    def anthropic(self, key: str = GATEWAY_KEYS["team-b"]) -> anthropic.Anthropic:
        return anthropic.Anthropic(base_url=self.url, api_key=key, max_retries=0, timeout=15)

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=15)

    def service_log(self) -> str:
        """The service's log up to its last whole line: it may be writing the next one."""
        data = (self.stack.workdir / "service.log").read_bytes()
        return data[: data.rfind(b"\n") + 1].decode()

    def records(self, request_id: str | None = None) -> list[dict[str, Any]]:
        """The service's exchange records (of one request id, when given)."""
        found = []
        for line in self.service_log().splitlines():
            if not line.startswith("{"):
                continue
            record = orjson.loads(line)
            if record.get("event") != "exchange":
                continue
            if request_id is None or record.get("request_id") == request_id:
                found.append(record)
        return found

    def record(self, request_id: str, timeout: float = 5.0) -> dict[str, Any]:
        """The one exchange record of a request, once the service has written it."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.records(request_id)
            if found or time.monotonic() > deadline:
                assert len(found) == 1, found
                return found[0]
            time.sleep(0.02)

    def access_log(self, request_id: str, timeout: float = 5.0) -> dict[str, Any]:
        """Envoy's access log line of a request."""
        deadline = time.monotonic() + timeout
        path = self.stack.workdir / "envoy.log"
        while True:
            for line in path.read_text().splitlines(keepends=True):
                if line.startswith("{") and line.endswith("\n") and request_id in line:
                    entry = orjson.loads(line)
                    if entry.get("request_id") == request_id:
                        return dict(entry)
            assert time.monotonic() < deadline, f"no access log line for {request_id}"
            time.sleep(0.05)

    def wait_for_log(self, text: str, timeout: float = 5.0) -> str:
        """The service's log once it holds `text`; the test fails if it does not in time."""
        assert text, "every log holds the empty string: wait for something of this test's"
        deadline = time.monotonic() + timeout
        while True:
            log = self.service_log()
            if text in log:
                return log
            assert time.monotonic() < deadline, f"{text!r} not in the service's log"
            time.sleep(0.02)

    def metric(self, name: str, **labels: str) -> float:
        """The sum of a metric's samples with these labels (others any), now."""
        total = 0.0
        for line in httpx.get(self.metrics_url, timeout=5).text.splitlines():
            sample, _, value = line.rpartition(" ")
            if sample != name and not sample.startswith(name + "{"):
                continue
            if all(f'{key}="{wanted}"' in sample for key, wanted in labels.items()):
                total += float(value)
        return total


def start_gateway(workdir: Path, template: str, **values: Any) -> Gateway:
    ports = {
        name: free_port()
        for name in ("port", "admin_port", "grpc_port", "metrics_port", "mock_port", "dead_port")
    }
    ports.update(values.pop("ports", {}))
    text = textwrap.dedent(template).format(**ports, **values)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "gateway.yaml").write_text(text)
    stack = Stack(
        config_path=workdir / "gateway.yaml",
        workdir=workdir,
        mock_port=ports["mock_port"],
        mock_tls=values.get("mock_tls"),
        env={
            "IT_OPENAI_KEY": PROVIDER_KEYS["openai"],
            "IT_ANTHROPIC_KEY": PROVIDER_KEYS["anthropic"],
            "IT_FAILING_KEY": PROVIDER_KEYS["failing"],
        },
    )
    stack.start()
    return Gateway(
        url=f"{values.get('scheme', 'http')}://127.0.0.1:{ports['port']}",
        stack=stack,
        mock_port=ports["mock_port"],
        metrics_url=f"http://127.0.0.1:{ports['metrics_port']}/metrics",
    )


_RUNNING: list[Gateway] = []


@pytest.fixture(scope="session")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    workdir = tmp_path_factory.mktemp("gateway")
    (workdir / "key-b.txt").write_text("sk-provider-openai-b\n")
    started = start_gateway(
        workdir, CONFIG, key_a=sha256(GATEWAY_KEYS["team-a"]), key_b=sha256(GATEWAY_KEYS["team-b"])
    )
    _RUNNING.append(started)
    yield started
    _RUNNING.remove(started)
    started.stack.stop()
    assert_no_secret_logged(workdir)


def assert_no_secret_logged(workdir: Path) -> None:
    """After every test has used a gateway: no key, the client's or a provider's, appears
    in any log its processes wrote (service, Envoy's access log, mock) or in its capture."""
    secrets = [
        *GATEWAY_KEYS.values(),
        *PROVIDER_KEYS.values(),
        "sk-provider-openai-b",
        PROXY_AUTHORIZATION.removeprefix("Basic "),
    ]
    files = [*workdir.glob("*.log"), *workdir.glob("capture/*")]
    assert files
    for path in files:
        text = path.read_bytes()
        leaked = [s for s in secrets if s.encode() in text]
        assert not leaked, f"{path.name} contains a credential"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed and call.when == "call":
        for running in _RUNNING:
            report.sections.append((f"logs of {running.stack.workdir.name}", running.stack.logs()))
