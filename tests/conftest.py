from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from xml.etree import ElementTree

import pytest

from extproc import compiled
from extproc.control.stack import free_port, wait_until

ROOT = Path(__file__).resolve().parent.parent

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


# -- tests that reach inside the package ------------------------------------------------
# A test marked `sources` replaces a function or subclasses a class of the package to see
# how it works inside. Compiled modules call each other directly and take no interpreted
# subclasses, so under a compiled build (extproc.compiled) the marked tests of the session
# run in one child pytest on the package's sources, and each one's outcome is the child's.
_SOURCE_RUN: dict[str, str] = {}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "sources: runs on the package's sources (a child pytest when compiled)"
    )


def _source_run(tests: list[str], workdir: Path) -> dict[str, str]:
    """Each test by "module.name": "" when it passed, else its report."""
    report = workdir / "report.xml"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            f"--junitxml={report}",
            *tests,
        ],
        env={**os.environ, "EXTPROC_PURE": "1"},
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    outcomes: dict[str, str] = {}
    if report.exists():
        for case in ElementTree.parse(report).getroot().iter("testcase"):
            problems = [child for child in case if child.tag in ("failure", "error", "skipped")]
            outcomes[f"{case.get('classname')}.{case.get('name')}"] = "\n".join(
                f"{p.tag}: {p.get('message', '')}\n{p.text or ''}" for p in problems
            )
    if not outcomes:
        outcomes[""] = f"the child pytest ran nothing:\n{result.stdout[-3000:]}"
    return outcomes


def _name(item: pytest.Item) -> str:
    return ".".join(item.path.relative_to(ROOT).with_suffix("").parts) + f".{item.name}"


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    if pyfuncitem.get_closest_marker("sources") is None or compiled.STATE.startswith("sources"):
        return None
    if not _SOURCE_RUN:
        marked = [i for i in pyfuncitem.session.items if i.get_closest_marker("sources")]
        tests = sorted({f"{i.path.relative_to(ROOT)}::{i.originalname}" for i in marked})  # type: ignore[attr-defined]
        workdir = Path(tempfile.mkdtemp(prefix="extproc-sources-"))
        try:
            _SOURCE_RUN.update(_source_run(tests, workdir))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    found = _SOURCE_RUN.get(_name(pyfuncitem), _SOURCE_RUN.get("", "it did not run"))
    if found:
        pytest.fail(f"on the sources (EXTPROC_PURE=1): {found}", pytrace=False)
    return True
