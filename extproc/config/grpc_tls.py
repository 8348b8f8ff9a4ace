"""Who may call the ext_proc port: its TLS settings checked, and the rule that a port
reachable from other hosts authenticates its callers (its replies carry provider keys)."""

from __future__ import annotations

import ipaddress
import re
import ssl
from collections.abc import Callable

from extproc.config.settings import GrpcTls, GrpcTlsClient
from extproc.config.v1 import config_pb2 as pb

_DNS_NAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
_URI = re.compile(r"^[a-z][a-z0-9+.-]*://\S+$")

Problem = Callable[[str, str], None]


def is_loopback(host: str) -> bool:
    """A literal 127.0.0.0/8 or ::1 (bracketed or not). Not a name, localhost included:
    the server resolves it when it binds (/etc/hosts, DNS), on whatever host it runs,
    after this check has passed."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def is_peer_name(text: str) -> bool:
    """An allowed_peers entry: a URI SAN (a SPIFFE id) or a DNS name."""
    return bool(_URI.match(text) or (_DNS_NAME.match(text) and not _is_ip(text)))


def build(
    service: pb.Service, resolve: Callable[[str, str], str | None], problem: Problem
) -> GrpcTls | None:
    """The ext_proc port's TLS, or None (plaintext, or problems reported). resolve(field
    path, file name): the file's absolute path, or None (reported) when it does not exist.
    Files left empty are reported by the schema."""
    address = service.grpc_address
    unix = address.startswith("unix://")
    host = "" if unix else address.rpartition(":")[0]
    if not service.HasField("grpc_tls"):
        if not unix and host and not is_loopback(host) and not service.unauthenticated_grpc:
            reach = (
                "is reachable from other hosts"
                if _is_ip(host.strip("[]"))
                else "may be reachable from other hosts (a name is resolved when the "
                "service binds; loopback is 127.0.0.1 or [::1])"
            )
            problem(
                "service.grpc_address",
                f'"{address}" {reach} and nothing authenticates its '
                "callers (ext_proc replies carry provider keys): set service.grpc_tls, or "
                "service.unauthenticated_grpc: true when a mesh authenticates them",
            )
        return None
    path = "service.grpc_tls"
    tls = service.grpc_tls
    ok = True
    if service.unauthenticated_grpc:
        problem("service.unauthenticated_grpc", "grpc_tls authenticates callers; set only one")
        ok = False
    if unix:
        problem(path, "only for a TCP grpc_address (a Unix socket's file permissions guard it)")
        ok = False
    files = _files(tls, ("cert_file", "key_file", "client_ca_file"), path, resolve)
    for index, peer in enumerate(tls.allowed_peers):
        if not is_peer_name(peer):
            problem(
                f"{path}.allowed_peers[{index}]",
                f'"{peer}" is neither a URI (spiffe://...) nor a DNS name',
            )
            ok = False
    client = None
    if tls.HasField("envoy_client"):
        client = _client(
            tls.envoy_client, host.strip("[]"), f"{path}.envoy_client", resolve, problem
        )
        ok = ok and client is not None
    elif not service.external_envoy:
        problem(
            f"{path}.envoy_client",
            "required: the certificate the Envoy rendered from this config presents",
        )
        ok = False
    if not ok or files is None or not tls.allowed_peers:
        return None
    cert_file, key_file, client_ca_file = files
    return GrpcTls(cert_file, key_file, client_ca_file, tuple(tls.allowed_peers), client)


def _client(
    client: pb.GrpcTlsClient,
    host: str,
    path: str,
    resolve: Callable[[str, str], str | None],
    problem: Problem,
) -> GrpcTlsClient | None:
    files = _files(client, ("cert_file", "key_file", "ca_file"), path, resolve)
    name = client.server_name or host
    if _is_ip(name) and ipaddress.ip_address(name).is_unspecified:
        problem(
            f"{path}.server_name",
            f'required: grpc_address\'s host "{name}" is no name a certificate carries',
        )
        return None
    if not (_is_ip(name) or is_peer_name(name)):
        problem(f"{path}.server_name", f'"{name}" is neither a DNS name, an IP address nor a URI')
        return None
    if files is None:
        return None
    cert_file, key_file, ca_file = files
    return GrpcTlsClient(cert_file, key_file, ca_file, name)


def _files(
    message: pb.GrpcTls | pb.GrpcTlsClient,
    names: tuple[str, ...],
    path: str,
    resolve: Callable[[str, str], str | None],
) -> tuple[str, ...] | None:
    """The files' absolute paths, or None when one is missing (reported)."""
    resolved = []
    for name in names:
        value = getattr(message, name)
        resolved.append((resolve(f"{path}.{name}", value) if value else None) or "")
    return tuple(resolved) if all(resolved) else None


def check_usable(tls: GrpcTls, problem: Problem) -> None:
    """The service's key pair and its callers' CA load (read like credentials: not with
    check-config --skip-secrets). Says which file, never what is in it."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    except (ssl.SSLError, OSError) as error:
        reason = getattr(error, "reason", None) or type(error).__name__
        problem("service.grpc_tls.key_file", f"not a key for cert_file's certificate ({reason})")
    try:
        context.load_verify_locations(tls.client_ca_file)
    except (ssl.SSLError, OSError) as error:
        reason = getattr(error, "reason", None) or type(error).__name__
        problem(
            "service.grpc_tls.client_ca_file", f"not a PEM bundle of CA certificates ({reason})"
        )
