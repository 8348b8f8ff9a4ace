"""The ext_proc port with mutual TLS (service.grpc_tls), through a real Envoy: Envoy
presents its certificate and is served, on every worker and for fallback attempts; a
client without a certificate, with a certificate whose name is not allowed, or without
TLS, gets no ext_proc reply, and Envoy keeps being served."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import trustme
import uvloop
from grpc_health.v1 import health_pb2, health_pb2_grpc

from extproc import transport
from extproc.config import load_file
from extproc.control.stack import free_port
from extproc.dataplane.grpc_tls import ServerTls
from extproc.transport import frames
from tests.helpers import issue_certificate
from tests.integration.conftest import PORTS, PROVIDER_KEYS, Gateway, start_gateway

ENVOY_ID = "spiffe://test/ns/gateway/sa/envoy"
STRANGER_ID = "spiffe://test/ns/apps/sa/curious"
HELLO = [{"role": "user", "content": "through mutual TLS"}]

CONFIG = (
    PORTS
    + """  workers: 2
  grpc_tls:
    cert_file: service.pem
    key_file: service.key
    client_ca_file: client-ca.pem
    allowed_peers: ["{envoy_id}"]
    envoy_client: {{cert_file: envoy.pem, key_file: envoy.key, ca_file: service-ca.pem}}
backends:
  - {{name: openai, url: "http://127.0.0.1:{mock_port}/v1", credential: {{env: IT_OPENAI_KEY}}}}
  - {{name: broken, url: "http://127.0.0.1:{dead_port}/v1", connect_timeout: 1s}}
models:
  - {{name: gpt-4o-mini, routes: [{{backend: openai}}]}}
  - name: resilient
    routes: [{{backend: broken, upstream_model: first}}]
    fallbacks: [{{backend: openai, upstream_model: second}}]
tenants: [{{name: public}}]
auth: {{anonymous_tenant: public}}
"""
)


def two_free_ports() -> int:
    """A port whose next one is free too (the second worker's)."""
    while True:
        first, second = free_port(), free_port()
        if second == first + 1:
            return first


@pytest.fixture(scope="module")
def mtls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, Path]]:
    workdir = tmp_path_factory.mktemp("extproc-tls")
    service_ca, client_ca = trustme.CA(), trustme.CA()
    service_ca.cert_pem.write_to_path(str(workdir / "service-ca.pem"))
    client_ca.cert_pem.write_to_path(str(workdir / "client-ca.pem"))
    issue_certificate(service_ca, workdir, "service", ips=("127.0.0.1",))
    issue_certificate(client_ca, workdir, "envoy", uris=(ENVOY_ID,))
    # Signed by the CA the service trusts, for a name it does not allow.
    issue_certificate(client_ca, workdir, "stranger", uris=(STRANGER_ID,), dns=("localhost",))
    gateway = start_gateway(
        workdir, CONFIG, envoy_id=ENVOY_ID, ports={"grpc_port": two_free_ports()}
    )
    yield gateway, workdir
    gateway.stack.stop()
    log = gateway.service_log()
    assert "PRIVATE KEY" not in log and PROVIDER_KEYS["openai"] not in log


def grpc_port(gateway: Gateway, worker: int = 0) -> int:
    """The port of a worker (the first's, then the next ones)."""
    config = load_file(gateway.stack.config_path, resolve_secrets=False)
    return int(config.service.grpc_address.rpartition(":")[2]) + worker


def health(port: int, workdir: Path, stem: str | None) -> int:
    """A grpcio health check over TLS, presenting <stem>.pem when given."""
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(workdir / "service-ca.pem").read_bytes(),
        private_key=(workdir / f"{stem}.key").read_bytes() if stem else None,
        certificate_chain=(workdir / f"{stem}.pem").read_bytes() if stem else None,
    )
    with grpc.secure_channel(f"127.0.0.1:{port}", credentials) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        return int(reply.status)


def first_bytes(port: int, context: ssl.SSLContext | None) -> bytes:
    """What the service sends a client that speaks HTTP/2 to it: a SETTINGS frame when
    it serves the client, nothing (end of stream, reset or a TLS alert) otherwise."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        try:
            conn = context.wrap_socket(raw, server_hostname="127.0.0.1") if context else raw
            conn.sendall(frames.PREFACE + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
            return conn.recv(9)
        except (ssl.SSLError, ConnectionResetError):
            return b""


def client_context(workdir: Path, stem: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(workdir / "service-ca.pem"))
    context.set_alpn_protocols(["h2"])
    if stem:
        context.load_cert_chain(workdir / f"{stem}.pem", workdir / f"{stem}.key")
    return context


def test_envoy_presents_its_certificate_and_is_served(mtls: tuple[Gateway, Path]) -> None:
    gateway, _ = mtls
    client = gateway.openai(key="unused")
    for _ in range(4):  # streams spread over both workers
        reply = client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
        assert reply.choices[0].message.content == "through mutual TLS"
    # A fallback chain's per-attempt processor calls the service over the same cluster.
    raw = client.chat.completions.with_raw_response.create(model="resilient", messages=HELLO)
    assert raw.parse().model == "second"
    assert gateway.record(raw.headers["x-request-id"])["attempt"] == 2


@pytest.mark.parametrize("worker", [0, 1])
def test_only_an_allowed_certificate_gets_an_ext_proc_reply(
    mtls: tuple[Gateway, Path], worker: int
) -> None:
    gateway, workdir = mtls
    port = grpc_port(gateway, worker)
    serving = health_pb2.HealthCheckResponse.SERVING
    # The same client code with Envoy's certificate is served: the refusals below are the
    # certificates', not the client's.
    assert health(port, workdir, "envoy") == serving
    assert first_bytes(port, client_context(workdir, "envoy"))[3] == frames.SETTINGS
    for stem in (None, "stranger"):
        with pytest.raises(grpc.RpcError) as refused:
            health(port, workdir, stem)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert first_bytes(port, client_context(workdir, stem)) == b""
    assert first_bytes(port, None) == b""  # no TLS at all
    log = gateway.wait_for_log(f"URI:{STRANGER_ID}")
    refusals = [line for line in log.splitlines() if "grpc_peer_refused" in line]
    assert refusals and all(f"URI:{STRANGER_ID}" in line for line in refusals)
    assert all("DNS:localhost" in line for line in refusals)
    # Envoy is still served.
    reply = gateway.openai(key="unused").chat.completions.create(
        model="gpt-4o-mini", messages=HELLO
    )
    assert reply.choices[0].message.content == "through mutual TLS"


def test_a_client_that_never_finishes_its_handshake_holds_nothing_up(
    mtls: tuple[Gateway, Path],
) -> None:
    gateway, _ = mtls
    stalled = [socket.create_connection(("127.0.0.1", grpc_port(gateway, w))) for w in (0, 1)]
    try:
        for stalled_socket in stalled:
            stalled_socket.sendall(b"\x16\x03\x01")  # the start of a ClientHello, no more
        for _ in range(3):
            reply = gateway.openai(key="unused").chat.completions.create(
                model="gpt-4o-mini", messages=HELLO
            )
            assert reply.choices[0].message.content == "through mutual TLS"
    finally:
        for stalled_socket in stalled:
            stalled_socket.close()


def test_a_stalled_handshake_is_closed_at_its_deadline(mtls: tuple[Gateway, Path]) -> None:
    """The transport with the service's TLS and a short handshake deadline: a peer that stops
    mid-handshake is disconnected, and a peer that completes one meanwhile is served."""
    _, workdir = mtls
    config = load_file(workdir / "gateway.yaml", resolve_secrets=False)
    assert config.service.grpc_tls is not None
    tls = ServerTls(config.service.grpc_tls)

    async def scenario() -> tuple[bytes, bytes]:
        server = transport.Server(
            limits=dataclasses.replace(transport.Limits(), handshake_timeout=0.5)
        )
        await server.listen("127.0.0.1:0", ssl=tls.context, admit=tls.admit)
        port = server.servers[0].sockets[0].getsockname()[1]
        stalled_reader, stalled = await asyncio.open_connection("127.0.0.1", port)
        stalled.write(b"\x16\x03\x01")
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_context(workdir, "envoy"), server_hostname="127.0.0.1"
        )
        served = await asyncio.wait_for(reader.readexactly(9), 10)
        writer.close()
        ended = await asyncio.wait_for(stalled_reader.read(), 10)
        stalled.close()
        await server.stop(0)
        return served, ended

    served, ended = uvloop.run(scenario())
    assert served[3] == frames.SETTINGS
    assert ended == b""
