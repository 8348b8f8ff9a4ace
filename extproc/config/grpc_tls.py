"""Who may call the ext_proc port: its TLS settings checked, and the rule that a port
reachable from other hosts authenticates its callers (its replies carry provider keys)."""

from __future__ import annotations

import ipaddress
import re
import ssl
from collections.abc import Callable

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


def check(service: pb.Service, resolve: Callable[[str, str], str | None], problem: Problem) -> None:
    """resolve(field path, file name): the file's absolute path, or None (reported) when it
    does not exist. Rewrites the TLS paths to absolute ones and fills envoy_client's
    server_name default."""
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
        return
    path = "service.grpc_tls"
    tls = service.grpc_tls
    if service.unauthenticated_grpc:
        problem("service.unauthenticated_grpc", "grpc_tls authenticates callers; set only one")
    if unix:
        problem(path, "only for a TCP grpc_address (a Unix socket's file permissions guard it)")
    _files(tls, ("cert_file", "key_file", "client_ca_file"), path, resolve, problem)
    if not tls.allowed_peers:
        problem(
            f"{path}.allowed_peers",
            "required: the identities that may call (otherwise anyone the CA signed for could)",
        )
    for index, peer in enumerate(tls.allowed_peers):
        if not is_peer_name(peer):
            problem(
                f"{path}.allowed_peers[{index}]",
                f'"{peer}" is neither a URI (spiffe://...) nor a DNS name',
            )
    if service.external_envoy and not tls.HasField("envoy_client"):
        return
    client = tls.envoy_client
    if not tls.HasField("envoy_client"):
        problem(
            f"{path}.envoy_client",
            "required: the certificate the Envoy rendered from this config presents",
        )
        return
    _files(client, ("cert_file", "key_file", "ca_file"), f"{path}.envoy_client", resolve, problem)
    if not client.server_name:
        client.server_name = host.strip("[]")
    name = client.server_name
    if _is_ip(name) and ipaddress.ip_address(name).is_unspecified:
        problem(
            f"{path}.envoy_client.server_name",
            f'required: grpc_address\'s host "{name}" is no name a certificate carries',
        )
    elif not (_is_ip(name) or is_peer_name(name)):
        problem(
            f"{path}.envoy_client.server_name",
            f'"{name}" is neither a DNS name, an IP address nor a URI',
        )


def _files(
    message: pb.GrpcTls | pb.GrpcTlsClient,
    names: tuple[str, ...],
    path: str,
    resolve: Callable[[str, str], str | None],
    problem: Problem,
) -> None:
    for name in names:
        value = getattr(message, name)
        if not value:
            problem(f"{path}.{name}", "required")
            continue
        resolved = resolve(f"{path}.{name}", value)
        if resolved is not None:
            setattr(message, name, resolved)


def check_usable(tls: pb.GrpcTls, problem: Problem) -> None:
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
