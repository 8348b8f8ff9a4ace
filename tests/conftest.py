from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from extproc.control.stack import free_port, wait_until

# Provider keys of the test configs; set at import so module-level runtimes can load.
os.environ["TEST_OPENAI_KEY"] = "sk-test-openai"
os.environ["TEST_ANTHROPIC_KEY"] = "sk-ant-test"


class RedisServer:
    """A real redis-server on a free loopback port (`make test` installs the package),
    which a test may stop and start again on the same port."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed; `make test` installs it with apt-get"
        self.binary = binary
        self.port = free_port()
        self.workdir = workdir
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        with (self.workdir / "redis.log").open("ab") as log:
            self.process = subprocess.Popen(
                # DEBUG SLEEP lets a test stall the server.
                [*argv, "--save", "", "--appendonly", "no", "--enable-debug-command", "local"],
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_until(lambda: _redis_ping(self.port), 10.0, "redis-server", self.process)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


def _redis_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as connection:
            connection.sendall(b"PING\r\n")
            return connection.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _suite_secrets() -> list[str]:
    """Every credential the suite hands to a gateway, a provider or a pod."""
    from tests.integration.conftest import GATEWAY_KEYS, PROVIDER_KEYS, PROXY_AUTHORIZATION
    from tests.k8s.conftest import SECRETS

    return [
        os.environ["TEST_OPENAI_KEY"],
        os.environ["TEST_ANTHROPIC_KEY"],
        *GATEWAY_KEYS.values(),
        *PROVIDER_KEYS.values(),
        PROXY_AUTHORIZATION.removeprefix("Basic "),
        *(key for keys in SECRETS.values() for key in keys.values()),
        "sk-provider-openai-b",
        "sk-reload-first",
        "sk-reload-second",
        "key-capped",
        "key-tiny",
        "key-streamer",
        "key-bystander",
    ]


@pytest.fixture(scope="session", autouse=True)
def no_secret_in_any_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """After the whole suite: no credential appears in any log or capture file that any
    process of any test wrote (services, Envoys, mocks, injectors, pods)."""
    yield
    base = tmp_path_factory.getbasetemp()
    secrets = [s.encode() for s in _suite_secrets()]
    leaked = []
    for path in base.rglob("*"):
        if not path.is_file() or path.suffix not in (".log", ".jsonl"):
            continue
        data = path.read_bytes()
        leaked += [f"{path.relative_to(base)}: {s[:5].decode()}..." for s in secrets if s in data]
    assert not leaked, leaked
