from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator

import pytest

from extproc.stack import free_port, wait_until

# Provider keys of the test configs; set at import so module-level runtimes can load.
os.environ["TEST_OPENAI_KEY"] = "sk-test-openai"
os.environ["TEST_ANTHROPIC_KEY"] = "sk-ant-test"


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server on a free loopback port (`make test` installs the package)."""
    binary = shutil.which("redis-server")
    assert binary, "redis-server is not installed; `make test` installs it with apt-get"
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=workdir,
        stdout=(workdir / "redis.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until(lambda: _redis_ping(port), 10.0, "redis-server", process)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(10)


def _redis_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as connection:
            connection.sendall(b"PING\r\n")
            return connection.recv(16).startswith(b"+PONG")
    except OSError:
        return False
