"""`extproc drain`, a gateway pod's preStop hook: Envoy stops being ready, its in-flight
streams finish, and the command returns once nothing is active (or says what is left)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from extproc.control.stack import free_port
from tests.integration.conftest import MOCK_BOTH, PORTS, Gateway, start_gateway

CONFIG = (
    PORTS.replace(
        "admin: {{port: {admin_port}}}",
        "admin: {{port: {admin_port}, readiness_address: '127.0.0.1:{ready_port}'}}",
    )
    + MOCK_BOTH
    + """tenants: [{{name: anyone}}]
auth: {{anonymous_tenant: anyone}}
"""
)


@pytest.fixture
def draining(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, int, int]]:
    ready_port = free_port()
    admin_port = free_port()
    gateway = start_gateway(
        tmp_path_factory.mktemp("drain"),
        CONFIG,
        ready_port=ready_port,
        ports={"admin_port": admin_port},
    )
    yield gateway, admin_port, ready_port
    gateway.stack.stop()


def ready(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as reply:
            return reply.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return 0


def drain(admin_port: int, timeout: float) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "extproc",
            "drain",
            "--admin",
            f"http://127.0.0.1:{admin_port}",
            "--timeout",
            str(timeout),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def stream(gateway: Gateway, words: int, delay_ms: int, out: list[str]) -> None:
    client = gateway.openai(key="none", default_headers={"x-mock-chunk-delay-ms": str(delay_ms)})
    for chunk in client.chat.completions.create(
        model="gpt-4o-mini",
        stream=True,
        messages=[{"role": "user", "content": " ".join(["word"] * words)}],
    ):
        if chunk.choices and chunk.choices[0].delta.content:
            out.append(chunk.choices[0].delta.content)


def test_drain_lets_the_stream_in_flight_finish(draining: tuple[Gateway, int, int]) -> None:
    gateway, admin_port, ready_port = draining
    assert ready(ready_port) == 200
    pieces: list[str] = []
    reader = threading.Thread(target=stream, args=(gateway, 30, 100, pieces))
    reader.start()
    time.sleep(0.4)
    started = time.monotonic()
    hook = drain(admin_port, 20)
    # No longer ready (the endpoint goes away) while the stream is still running.
    deadline = time.monotonic() + 10
    while ready(ready_port) == 200:
        assert time.monotonic() < deadline, "still ready"
        time.sleep(0.05)
    assert reader.is_alive()
    reader.join(timeout=20)
    out, err = hook.communicate(timeout=20)
    assert hook.returncode == 0, err
    assert "no request active" in out
    assert "".join(pieces) == " ".join(["word"] * 30)  # the whole answer
    assert time.monotonic() - started > 1.0  # it waited for the stream


def test_drain_says_what_is_left_when_time_runs_out(draining: tuple[Gateway, int, int]) -> None:
    gateway, admin_port, _ = draining
    pieces: list[str] = []
    reader = threading.Thread(target=stream, args=(gateway, 30, 100, pieces), daemon=True)
    reader.start()
    time.sleep(0.4)
    hook = drain(admin_port, 0.5)
    _, err = hook.communicate(timeout=20)
    assert hook.returncode == 1
    assert "1 requests still active" in err
    reader.join(timeout=20)
