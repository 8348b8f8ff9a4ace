"""service.workers: one supervisor, several service processes, Envoy spreading streams."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from extproc.config.loader import ConfigError, load_text
from extproc.control.stack import extproc_argv
from tests.integration.conftest import MOCK_BOTH, Gateway, start_gateway

CONFIG = (
    """
listener: {{port: {port}}}
admin: {{port: {admin_port}}}
service:
  grpc_address: "unix://{socket}"
  metrics_address: 127.0.0.1:{metrics_port}
  shutdown_grace: 3s
  config_check_interval: 0s
  workers: 2
"""
    + MOCK_BOTH
    + """tenants: [{{name: anyone}}]
auth: {{anonymous_tenant: anyone}}
"""
)


@pytest.fixture
def workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    workdir = tmp_path_factory.mktemp("workers")
    gateway = start_gateway(workdir, CONFIG, socket=workdir / "sock" / "extproc.sock")
    yield gateway
    gateway.stack.stop()


def events(gateway: Gateway, name: str) -> list[dict[str, object]]:
    found = []
    for line in gateway.service_log().splitlines():
        if line.startswith("{"):
            record = orjson.loads(line)
            if record.get("event") == name:
                found.append(record)
    return found


def wait_for(check: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def metric(gateway: Gateway, name: str) -> float:
    total = 0.0
    for line in httpx.get(gateway.metrics_url, timeout=5).text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_streams_spread_over_the_workers_and_metrics_add_up(workers: Gateway) -> None:
    serving = events(workers, "serving")
    assert sorted(r["worker"] for r in serving) == [0, 1]
    assert len({r["pid"] for r in serving}) == 2
    client = workers.openai()

    def ask(index: int) -> str:
        reply = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": f"question {index}"}]
        )
        return reply.choices[0].message.content or ""

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, range(40)))
    assert answers == [f"question {index}" for index in range(40)]
    wait_for(lambda: len(workers.records()) == 40)
    by_worker = [sum(1 for r in workers.records() if r.get("worker") == w) for w in (0, 1)]
    assert sum(by_worker) == 40 and min(by_worker) > 0, by_worker
    # One Prometheus endpoint, the workers' counts together.
    assert metric(workers, "extproc_requests_total") == 40
    assert metric(workers, "gen_ai_client_token_usage_count") == 80  # input + output
    assert metric(workers, "extproc_active_streams") == 0


def test_sighup_reaches_every_worker_and_sigterm_drains_them(workers: Gateway) -> None:
    service = workers.stack.processes["service"]
    service.send_signal(signal.SIGHUP)
    wait_for(lambda: len(events(workers, "config_reloaded")) == 2)
    assert sorted(r["worker"] for r in events(workers, "config_reloaded")) == [0, 1]
    statuses = workers.stack.stop()
    assert statuses["service"] == 0
    stopped = events(workers, "stopped")
    assert sorted(str(r.get("worker", "supervisor")) for r in stopped) == [
        "0",
        "1",
        "supervisor",
    ]


def test_a_worker_that_dies_stops_the_service(workers: Gateway) -> None:
    service = workers.stack.processes["service"]
    victim = int(events(workers, "serving")[0]["pid"])  # type: ignore[call-overload]
    os.kill(victim, signal.SIGKILL)
    assert service.wait(15) == 1
    exited = events(workers, "worker_exited")
    assert [r["pid"] for r in exited] == [victim]
    # The other worker drained and exited on its own; no process is left behind.
    for record in events(workers, "serving"):
        pid = int(record["pid"])  # type: ignore[call-overload]
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()


@pytest.mark.parametrize(
    ("tail", "problem"),
    [
        (
            "tenants: [{name: t, budgets: [{name: d, window: day, max_tokens: 10}]}]\n",
            "service.workers: budgets with more than one worker need accounting.store.redis",
        ),
        ("", "service.workers: workers would need port 65536"),
        (
            "",
            "service.workers: an Envoy configured elsewhere (external_envoy) sends to one address",
        ),
        (
            "",
            "service.workers: the workers' ports 50051-50052 include service.metrics_address's "
            "50052",
        ),
    ],
)
def test_worker_configs_that_cannot_work_are_refused(tail: str, problem: str) -> None:
    port = "65535" if "65536" in problem else "50051"
    external = "true" if "external_envoy" in problem else "false"
    metrics = "127.0.0.1:50052" if "metrics" in problem else "127.0.0.1:9464"
    text = f"""
service:
  grpc_address: "127.0.0.1:{port}"
  workers: 2
  metrics_address: "{metrics}"
  external_envoy: {external}
backends: [{{name: b, url: "http://127.0.0.1:9/v1"}}]
models: [{{name: m, routes: [{{backend: b}}]}}]
{tail}"""
    with pytest.raises(ConfigError) as caught:
        load_text(text, resolve_secrets=False)
    assert problem in str(caught.value)


def test_a_worker_that_cannot_start_says_why_and_the_service_exits(tmp_path: Path) -> None:
    socket = tmp_path / "extproc.sock"
    (tmp_path / "extproc.sock.1").mkdir()  # worker 1's socket path is taken
    config = tmp_path / "c.yaml"
    config.write_text(
        f"""
service: {{grpc_address: "unix://{socket}", metrics_address: "off", workers: 2}}
backends: [{{name: b, url: "http://127.0.0.1:9/v1"}}]
models: [{{name: m, routes: [{{backend: b}}]}}]
"""
    )
    done = subprocess.run(
        extproc_argv("serve", str(config)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    records = [orjson.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    failed = [r for r in records if r["event"] == "worker_failed"]
    assert [r["worker"] for r in failed] == [1]
    assert "extproc.sock.1" in str(failed[0]["error"])
    assert [r["worker"] for r in records if r["event"] == "worker_exited"] == [1]


def test_sigterm_while_the_workers_start_stops_them_cleanly(tmp_path: Path) -> None:
    """A SIGTERM that reaches a worker before its handlers are installed waits for them: the
    worker drains (nothing to drain yet) and exits 0, instead of dying of the signal."""
    config = tmp_path / "c.yaml"
    config.write_text(
        f"""
service: {{grpc_address: "unix://{tmp_path / "extproc.sock"}", metrics_address: "off",
           workers: 4}}
backends: [{{name: b, url: "http://127.0.0.1:9/v1"}}]
models: [{{name: m, routes: [{{backend: b}}]}}]
"""
    )
    for _ in range(3):
        process = subprocess.Popen(
            extproc_argv("serve", str(config)),
            stderr=subprocess.PIPE,
            text=True,
        )
        assert process.stderr is not None
        lines = []
        for line in process.stderr:  # the workers exist once the supervisor says so
            lines.append(line)
            if '"supervising"' in line:
                break
        process.send_signal(signal.SIGTERM)
        lines.extend(process.stderr)
        assert process.wait(timeout=30) == 0, "".join(lines)
        events = [orjson.loads(line)["event"] for line in lines if line.startswith("{")]
        assert "worker_exited" not in events and "worker_failed" not in events
