"""The ext_proc port's client authentication: the config rules (a port other hosts can
reach authenticates its callers), the allow-list of peers, and certificate rotation."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import textwrap
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
import trustme
import uvloop
from grpc_health.v1 import health_pb2, health_pb2_grpc
from structlog.testing import capture_logs

from extproc import transport
from extproc.config import ConfigError, load_text
from extproc.config.runtime import Runtime
from extproc.config.settings import GrpcTls
from extproc.control.cli import main
from extproc.control.render import render, render_yaml
from extproc.control.stack import free_port, validate_envoy_config
from extproc.dataplane import grpc_tls
from extproc.dataplane.grpc_tls import ServerTls
from tests.helpers import BASE_CONFIG, issue_certificate, runtime

MINIMAL = """
backends: [{name: b, url: "http://127.0.0.1:9/v1"}]
models: [{name: m, routes: [{backend: b}]}]
"""
ENVOY_ID = "spiffe://test/ns/gw/sa/envoy"
TLS = """
service:
  grpc_address: "{address}"
  grpc_tls:
    cert_file: service.pem
    key_file: service.key
    client_ca_file: client-ca.pem
    allowed_peers: ["{envoy_id}", Egress.Example]
    envoy_client: {{cert_file: envoy.pem, key_file: envoy.key, ca_file: service-ca.pem}}
"""


@pytest.fixture(scope="module")
def cas() -> tuple[trustme.CA, trustme.CA]:
    """The CA of the service's certificate, and the CA of its callers'."""
    return trustme.CA(), trustme.CA()


@pytest.fixture
def certs(tmp_path: Path, cas: tuple[trustme.CA, trustme.CA]) -> Path:
    service_ca, client_ca = cas
    issue_certificate(service_ca, tmp_path, "service", dns=("extproc.test",), ips=("127.0.0.1",))
    issue_certificate(client_ca, tmp_path, "envoy", uris=(ENVOY_ID,))
    service_ca.cert_pem.write_to_path(str(tmp_path / "service-ca.pem"))
    client_ca.cert_pem.write_to_path(str(tmp_path / "client-ca.pem"))
    return tmp_path


def load(text: str, base_dir: Path | None = None) -> Runtime:
    return load_text(textwrap.dedent(text) + MINIMAL, base_dir=base_dir)


def problems(text: str, base_dir: Path | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(text, base_dir)
    return caught.value.problems


@pytest.mark.parametrize(
    "address",
    [
        "0.0.0.0:50051",
        "[::]:50051",
        "10.1.2.3:50051",
        "extproc.svc:50051",
        # A name is resolved when the server binds (/etc/hosts, DNS), not when the config
        # is checked: only a literal loopback address is known to stay on the host.
        "localhost:50051",
        "LOCALHOST:50051",
    ],
)
def test_a_port_other_hosts_reach_needs_client_authentication(address: str) -> None:
    (problem,) = problems(f"service: {{grpc_address: '{address}'}}")
    reach = "is reachable" if address[0] in "0123456789[" else "may be reachable"
    assert problem.startswith(f'service.grpc_address: "{address}" {reach} from other hosts')
    assert "service.grpc_tls" in problem and "service.unauthenticated_grpc: true" in problem
    # Saying so explicitly is the way out (a mesh authenticates the callers).
    load(f"service: {{grpc_address: '{address}', unauthenticated_grpc: true}}")


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1:50051",
        "127.9.8.7:50051",
        "[::1]:50051",
        "unix:///run/extproc/x.sock",
    ],
)
def test_loopback_and_unix_sockets_need_no_client_authentication(address: str) -> None:
    load(f"service: {{grpc_address: '{address}'}}")


def test_check_config_prints_the_refusal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "open.yaml"
    config.write_text("service: {grpc_address: '0.0.0.0:50051'}\n" + MINIMAL)
    with pytest.raises(SystemExit) as exit_info:
        main(["check-config", "--skip-secrets", str(config)])
    assert exit_info.value.code == 1
    assert 'service.grpc_address: "0.0.0.0:50051" is reachable' in capsys.readouterr().err


def test_tls_paths_resolve_against_the_config_and_the_name_defaults_to_the_host(
    certs: Path,
) -> None:
    tls = load(
        TLS.format(address="0.0.0.0:50051", envoy_id=ENVOY_ID).replace(
            "ca_file: service-ca.pem}", "ca_file: service-ca.pem, server_name: extproc.test}"
        ),
        certs,
    ).service.grpc_tls
    assert tls is not None and tls.envoy_client is not None
    assert tls.cert_file == str(certs / "service.pem")
    assert tls.client_ca_file == str(certs / "client-ca.pem")
    assert tls.envoy_client.key_file == str(certs / "envoy.key")
    assert tls.envoy_client.server_name == "extproc.test"
    default = load(TLS.format(address="[::1]:50051", envoy_id=ENVOY_ID), certs)
    assert default.service.grpc_tls is not None and default.service.grpc_tls.envoy_client
    assert default.service.grpc_tls.envoy_client.server_name == "::1"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("cert_file: service.pem", "cert_file: gone.pem"), 'grpc_tls.cert_file: file "gone.pem"'),
        (("    key_file: service.key\n", ""), "service.grpc_tls.key_file: required"),
        (
            ('allowed_peers: ["{envoy_id}", Egress.Example]', "allowed_peers: []"),
            "service.grpc_tls.allowed_peers: required",
        ),
        (
            ("Egress.Example", "'not a name'"),
            'service.grpc_tls.allowed_peers[1]: "not a name" is neither',
        ),
        (("Egress.Example", "10.0.0.1"), 'allowed_peers[1]: "10.0.0.1" is neither'),
        (
            (
                "    envoy_client: {{cert_file: envoy.pem, key_file: envoy.key, ca_file: service-ca.pem}}\n",
                "",
            ),
            "service.grpc_tls.envoy_client: required",
        ),
        (
            ("ca_file: service-ca.pem", "ca_file: ''"),
            "service.grpc_tls.envoy_client.ca_file: required",
        ),
        (
            ('"{address}"', "0.0.0.0:50051"),
            'envoy_client.server_name: required: grpc_address\'s host "0.0.0.0"',
        ),
        (
            ('"{address}"', "unix:///run/x.sock"),
            "service.grpc_tls: only for a TCP grpc_address",
        ),
        (
            ("  grpc_tls:\n", "  unauthenticated_grpc: true\n  grpc_tls:\n"),
            "service.unauthenticated_grpc: grpc_tls authenticates callers; set only one",
        ),
    ],
    ids=[
        "missing-file",
        "no-key",
        "no-peers",
        "bad-peer",
        "ip-peer",
        "no-envoy-client",
        "no-envoy-ca",
        "unspecified-host",
        "unix-socket",
        "both",
    ],
)
def test_tls_problems_name_their_field(certs: Path, change: tuple[str, str], expected: str) -> None:
    template = TLS.replace(*change)
    found = problems(template.format(address="127.0.0.1:50051", envoy_id=ENVOY_ID), certs)
    assert any(expected in p for p in found), found


def test_unusable_tls_files_are_named_without_their_contents(certs: Path) -> None:
    text = TLS.format(address="127.0.0.1:50051", envoy_id=ENVOY_ID)
    # A key of another certificate, and a "CA bundle" that is a private key.
    found = problems(
        text.replace("key_file: service.key", "key_file: envoy.key").replace(
            "client_ca_file: client-ca.pem", "client_ca_file: service.key"
        ),
        certs,
    )
    assert [p.split(":")[0] for p in found] == [
        "service.grpc_tls.key_file",
        "service.grpc_tls.client_ca_file",
    ]
    assert "not a key for cert_file's certificate" in found[0]
    assert not any("BEGIN" in p or "PRIVATE" in p for p in found)
    # check-config --skip-secrets reads no key.
    load_text(
        textwrap.dedent(text.replace("key_file: service.key", "key_file: envoy.key")) + MINIMAL,
        base_dir=certs,
        resolve_secrets=False,
    )


def test_an_envoy_configured_elsewhere_needs_no_envoy_client(certs: Path) -> None:
    text = TLS.format(address="0.0.0.0:50051", envoy_id=ENVOY_ID).replace(
        "    envoy_client: {cert_file: envoy.pem, key_file: envoy.key, ca_file: service-ca.pem}\n",
        "  external_envoy: true\n",
    )
    tls = load(text, certs).service.grpc_tls
    assert tls is not None and tls.envoy_client is None


# -- the service's side ----------------------------------------------------------------


class Transport:
    """What admit reads of a connection: its peer's certificate and address."""

    def __init__(self, names: tuple[tuple[str, str], ...]) -> None:
        self.extra = {"peercert": {"subjectAltName": names}, "peername": ("10.0.0.7", 41000)}

    def get_extra_info(self, name: str) -> Any:
        return self.extra[name]


def server_tls(certs: Path) -> ServerTls:
    tls = load(TLS.format(address="127.0.0.1:1", envoy_id=ENVOY_ID), certs).service.grpc_tls
    assert tls is not None
    return ServerTls(tls)


def test_allowed_peers_match_uri_sans_exactly_and_dns_sans_in_any_case(certs: Path) -> None:
    tls = server_tls(certs)
    assert tls.admit(Transport((("DNS", "x.test"), ("URI", ENVOY_ID))))
    assert tls.admit(Transport((("DNS", "egress.example"),)))
    with capture_logs() as logs:
        assert not tls.admit(Transport((("URI", ENVOY_ID.upper()),)))
        assert not tls.admit(Transport((("URI", ENVOY_ID + "/more"), ("DNS", "x" * 300))))
        # A DNS name in a URI SAN, or an identity only in the subject, is not a match.
        assert not tls.admit(Transport((("URI", "egress.example"), ("email", ENVOY_ID))))
    assert [entry["event"] for entry in logs] == ["grpc_peer_refused"] * 3
    assert logs[1]["presented"] == [f"URI:{ENVOY_ID}/more", "DNS:" + "x" * 256]
    assert logs[1]["peer"] == "('10.0.0.7', 41000)"
    assert logs[2]["presented"] == ["URI:egress.example"]


def handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> bytes:
    """A TLS handshake over memory buffers; the DER certificate the server presented."""
    server_in, server_out, client_in, client_out = (ssl.MemoryBIO() for _ in range(4))
    server_side = server.wrap_bio(server_in, server_out, server_side=True)
    client_side = client.wrap_bio(client_in, client_out, server_hostname="127.0.0.1")
    done = {"client": False, "server": False}
    for _ in range(10):
        for name, side in (("client", client_side), ("server", server_side)):
            if not done[name]:
                try:
                    side.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        server_in.write(client_out.read())
        client_in.write(server_out.read())
        if all(done.values()):
            break
    assert all(done.values())
    presented = client_side.getpeercert(binary_form=True)
    assert presented is not None
    return presented


def test_rotated_certificate_files_serve_new_handshakes(
    certs: Path, cas: tuple[trustme.CA, trustme.CA]
) -> None:
    service_ca, _ = cas
    tls = server_tls(certs)
    client = ssl.create_default_context(cafile=str(certs / "service-ca.pem"))
    client.load_cert_chain(certs / "envoy.pem", certs / "envoy.key")
    first = handshake(tls.context, client)
    assert handshake(tls.context, client) == first
    # A rotation half done (the certificate replaced, its key not yet): the old pair stays.
    issue_certificate(service_ca, certs, "next", ips=("127.0.0.1",))
    (certs / "service.pem").write_bytes((certs / "next.pem").read_bytes())
    with capture_logs() as logs:
        assert handshake(tls.context, client) == first
    assert [entry["event"] for entry in logs] == ["grpc_tls_reload_failed"]
    assert "BEGIN" not in logs[0]["error"]
    (certs / "service.key").write_bytes((certs / "next.key").read_bytes())
    with capture_logs() as logs:
        rotated = handshake(tls.context, client)
    assert rotated != first and rotated == ssl.PEM_cert_to_DER_cert(
        (certs / "next.pem").read_text()
    )
    assert [entry["event"] for entry in logs] == ["grpc_tls_reloaded"]
    # The rotated context still asks for a client certificate from the configured CA.
    anonymous = ssl.create_default_context(cafile=str(certs / "service-ca.pem"))
    with pytest.raises(ssl.SSLError):
        handshake(tls.context, anonymous)


def settle(*paths: Path) -> None:
    """Files last written long ago (time stamps an hour back)."""
    past = time.time() - 3600
    for path in paths:
        os.utime(path, (past, past))


def counting_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per time a ServerTls reads its files' contents."""
    reads: list[int] = []
    original = ServerTls._stamp

    def counted(self: ServerTls) -> bytes:
        reads.append(1)
        return original(self)

    monkeypatch.setattr(ServerTls, "_stamp", counted)
    return reads


def test_a_client_hello_reads_no_file_that_did_not_change(
    certs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Any peer may send a ClientHello: unchanged files cost a stat each, not a read."""
    settle(certs / "service.pem", certs / "service.key", certs / "client-ca.pem")
    tls = server_tls(certs)
    reads = counting_reads(monkeypatch)
    client = ssl.create_default_context(cafile=str(certs / "service-ca.pem"))
    client.load_cert_chain(certs / "envoy.pem", certs / "envoy.key")
    first = handshake(tls.context, client)
    for _ in range(3):
        assert handshake(tls.context, client) == first
    assert reads == []


def test_a_file_written_within_its_time_stamps_tick_is_compared_by_content(
    certs: Path, cas: tuple[trustme.CA, trustme.CA], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Time stamps tick coarsely: a file rewritten in place in the same tick, at the
    same size, looks unchanged to stat. While the files are that recent their contents
    are compared; once they are older, stat alone is trusted."""
    service_ca, _ = cas
    tls = server_tls(certs)
    # What stat says, frozen: recently written, then never again.
    frozen = grpc_tls._identities(tls.files)
    monkeypatch.setattr(grpc_tls, "_identities", lambda files: frozen)
    issue_certificate(service_ca, certs, "next", ips=("127.0.0.1",))
    client = ssl.create_default_context(cafile=str(certs / "service-ca.pem"))
    client.load_cert_chain(certs / "envoy.pem", certs / "envoy.key")
    first = handshake(tls.context, client)
    for stem in ("service", "next"):
        (certs / "service.pem").write_bytes((certs / f"{stem}.pem").read_bytes())
        (certs / "service.key").write_bytes((certs / f"{stem}.key").read_bytes())
    rotated = handshake(tls.context, client)
    assert rotated == ssl.PEM_cert_to_DER_cert((certs / "next.pem").read_text()) != first
    # The same stat an hour later: trusted, the contents not read.
    settled = tuple((*i[:3], i[3] - 3600 * 10**9, *i[4:]) for i in frozen)
    monkeypatch.setattr(grpc_tls, "_identities", lambda files: settled)
    handshake(tls.context, client)
    reads = counting_reads(monkeypatch)
    assert handshake(tls.context, client) == rotated
    assert reads == []


def secret_volume(directory: Path, generation: str, files: dict[str, bytes]) -> None:
    """How the kubelet updates a Secret volume: the files written to a new directory,
    then the ..data symlink swapped to it at once; each file's name is a symlink through
    ..data. The new files' time stamps say nothing (an hour back here)."""
    target = directory / f"..{generation}"
    target.mkdir()
    for name, content in files.items():
        (target / name).write_bytes(content)
        settle(target / name)
        if not (directory / name).is_symlink():
            (directory / name).symlink_to(Path("..data") / name)
    (directory / "..data_tmp").symlink_to(target.name)
    os.replace(directory / "..data_tmp", directory / "..data")


def test_a_secret_volume_update_serves_new_handshakes(
    certs: Path, cas: tuple[trustme.CA, trustme.CA], tmp_path: Path
) -> None:
    service_ca, _ = cas
    issue_certificate(service_ca, certs, "next", ips=("127.0.0.1",))
    volume = tmp_path / "volume"
    volume.mkdir()
    pair = {"tls.crt": "service.pem", "tls.key": "service.key", "ca.crt": "client-ca.pem"}
    secret_volume(volume, "1", {name: (certs / stem).read_bytes() for name, stem in pair.items()})
    tls = ServerTls(
        GrpcTls(
            cert_file=str(volume / "tls.crt"),
            key_file=str(volume / "tls.key"),
            client_ca_file=str(volume / "ca.crt"),
            allowed_peers=(ENVOY_ID,),
            envoy_client=None,
        )
    )
    client = ssl.create_default_context(cafile=str(certs / "service-ca.pem"))
    client.load_cert_chain(certs / "envoy.pem", certs / "envoy.key")
    first = handshake(tls.context, client)
    pair.update({"tls.crt": "next.pem", "tls.key": "next.key"})
    secret_volume(volume, "2", {name: (certs / stem).read_bytes() for name, stem in pair.items()})
    assert (
        handshake(tls.context, client)
        == ssl.PEM_cert_to_DER_cert((certs / "next.pem").read_text())
        != first
    )


def test_rotation_on_uvloop_serves_new_handshakes_from_the_new_files(
    certs: Path, cas: tuple[trustme.CA, trustme.CA], tmp_path: Path
) -> None:
    """The server as `extproc serve` runs it (uvloop's TLS, the transport's listener):
    a Secret update rotating the service's certificate and its callers' CA applies to
    the next handshake. The new certificate is served, a caller of the new CA is served,
    a caller of the old CA is refused."""
    service_ca, _ = cas
    next_client_ca = trustme.CA()
    issue_certificate(service_ca, certs, "next", ips=("127.0.0.1",))
    issue_certificate(next_client_ca, certs, "envoy-next", uris=(ENVOY_ID,))
    next_client_ca.cert_pem.write_to_path(str(certs / "client-ca-next.pem"))
    volume = tmp_path / "volume"
    volume.mkdir()
    files = {"tls.crt": "service.pem", "tls.key": "service.key", "ca.crt": "client-ca.pem"}
    secret_volume(volume, "1", {name: (certs / stem).read_bytes() for name, stem in files.items()})
    tls = ServerTls(
        GrpcTls(
            cert_file=str(volume / "tls.crt"),
            key_file=str(volume / "tls.key"),
            client_ca_file=str(volume / "ca.crt"),
            allowed_peers=(ENVOY_ID,),
            envoy_client=None,
        )
    )
    port = free_port()

    def served_certificate(caller: str) -> bytes:
        client = ssl.create_default_context(cafile=str(certs / "service-ca.pem"))
        client.load_cert_chain(certs / f"{caller}.pem", certs / f"{caller}.key")
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            client.wrap_socket(raw, server_hostname="127.0.0.1") as connection,
        ):
            presented = connection.getpeercert(binary_form=True)
        assert presented is not None
        return presented

    def check(caller: str) -> str:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=(certs / "service-ca.pem").read_bytes(),
            private_key=(certs / f"{caller}.key").read_bytes(),
            certificate_chain=(certs / f"{caller}.pem").read_bytes(),
        )
        # A channel of its own: a new connection, so a new handshake.
        options = [("grpc.use_local_subchannel_pool", 1)]
        with grpc.secure_channel(f"127.0.0.1:{port}", credentials, options) as channel:
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=10
                )
            except grpc.RpcError as error:
                return str(error.code())
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)

    async def scenario() -> tuple[bytes, bytes]:
        assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
        server = transport.Server()
        health = transport.Health()
        health.serve_on(server)
        health.set("", health_pb2.HealthCheckResponse.SERVING)
        await server.listen(f"127.0.0.1:{port}", ssl=tls.context, admit=tls.admit)
        try:
            first = await asyncio.to_thread(served_certificate, "envoy")
            assert await asyncio.to_thread(check, "envoy") == "SERVING"
            rotated = {"tls.crt": "next.pem", "tls.key": "next.key", "ca.crt": "client-ca-next.pem"}
            secret_volume(
                volume, "2", {name: (certs / stem).read_bytes() for name, stem in rotated.items()}
            )
            served = await asyncio.to_thread(served_certificate, "envoy-next")
            assert await asyncio.to_thread(check, "envoy-next") == "SERVING"
            assert await asyncio.to_thread(check, "envoy") == str(grpc.StatusCode.UNAVAILABLE)
        finally:
            await server.stop(0)
        return first, served

    with capture_logs() as logs:
        first, served = uvloop.run(scenario())
    assert first == ssl.PEM_cert_to_DER_cert((certs / "service.pem").read_text())
    assert served == ssl.PEM_cert_to_DER_cert((certs / "next.pem").read_text())
    assert [e["event"] for e in logs if e["event"].startswith("grpc_tls")] == ["grpc_tls_reloaded"]


# -- Envoy's side ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("server_name", "san_type"),
    [("", "IP_ADDRESS"), ("extproc.test", "DNS"), ("spiffe://test/ns/x/sa/extproc", "URI")],
)
def test_the_rendered_envoy_presents_its_certificate_and_checks_the_services(
    certs: Path, tmp_path: Path, server_name: str, san_type: str
) -> None:
    text = TLS.format(address="127.0.0.1:50051", envoy_id=ENVOY_ID)
    if server_name:
        text = text.replace(
            "ca_file: service-ca.pem}", f"ca_file: service-ca.pem, server_name: '{server_name}'}}"
        )
    config = runtime(BASE_CONFIG + textwrap.dedent(text), base_dir=certs, resolve_secrets=False)
    bootstrap = render(config)
    (cluster,) = [c for c in bootstrap["static_resources"]["clusters"] if c["name"] == "extproc"]
    context = cluster["transport_socket"]["typed_config"]
    common = context["common_tls_context"]
    assert common["alpn_protocols"] == ["h2"]
    assert common["tls_certificates"] == [
        {
            "certificate_chain": {"filename": str(certs / "envoy.pem")},
            "private_key": {"filename": str(certs / "envoy.key")},
        }
    ]
    validation = common["validation_context"]
    assert validation["trusted_ca"] == {"filename": str(certs / "service-ca.pem")}
    assert validation["match_typed_subject_alt_names"] == [
        {"san_type": san_type, "matcher": {"exact": server_name or "127.0.0.1"}}
    ]
    assert context.get("sni") == (server_name if san_type == "DNS" else None)
    path = tmp_path / "envoy.yaml"
    path.write_text(render_yaml(config))
    result = validate_envoy_config(path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_plaintext_service_gets_a_plaintext_cluster() -> None:
    bootstrap = render(runtime())
    (cluster,) = [c for c in bootstrap["static_resources"]["clusters"] if c["name"] == "extproc"]
    assert "transport_socket" not in cluster
