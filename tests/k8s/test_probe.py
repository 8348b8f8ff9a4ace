"""`extproc probe`: the command behind the non-native sidecar hook and the helm tests."""

from __future__ import annotations

import http.server
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
import trustme
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from extproc.control.stack import free_port


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status = 401 if self.path == "/locked" else 200 if self.path == "/ready" else 503
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, Path]]:
    plain = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    secure = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    authority = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(context)
    secure.socket = context.wrap_socket(secure.socket, server_side=True)
    ca = tmp_path_factory.mktemp("probe") / "ca.crt"
    authority.cert_pem.write_to_path(ca)
    for server in (plain, secure):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    yield (
        f"http://127.0.0.1:{plain.server_address[1]}",
        f"https://127.0.0.1:{secure.server_address[1]}",
        ca,
    )
    for server in (plain, secure):
        server.shutdown()


def probe(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "extproc", "probe", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_http_probe_succeeds_on_2xx_and_fails_after_the_wait(
    servers: tuple[str, str, Path],
) -> None:
    plain, _, _ = servers
    assert probe(f"{plain}/ready").returncode == 0
    failed = probe(f"{plain}/starting", "--wait", "0.5")
    assert failed.returncode == 1 and "HTTP 503" in failed.stderr


def test_accepted_statuses_count_as_up(servers: tuple[str, str, Path]) -> None:
    plain, _, _ = servers
    assert probe(f"{plain}/locked", "--wait", "0.5").returncode == 1
    assert probe(f"{plain}/locked", "--accept", "401").returncode == 0


def test_https_with_a_private_ca(servers: tuple[str, str, Path]) -> None:
    _, secure, ca = servers
    assert probe(f"{secure}/ready", "--wait", "0.5").returncode == 1  # not a public CA
    assert probe(f"{secure}/ready", "--ca-file", str(ca)).returncode == 0


def test_grpc_health_probe() -> None:
    port = free_port()
    assert probe(f"grpc://127.0.0.1:{port}", "--wait", "0.5").returncode == 1
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    try:
        servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        assert probe(f"grpc://127.0.0.1:{port}", "--wait", "0.5").returncode == 1
        servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        assert probe(f"grpc://127.0.0.1:{port}").returncode == 0
    finally:
        server.stop(0)
