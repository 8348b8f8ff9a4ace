"""TLS of the ext_proc socket (service.grpc_tls): the server's SSLContext, its files read
again when they change, and the allow-list of callers checked once a handshake is done.

Every caller presents a certificate signed by client_ca_file (the handshake fails
otherwise); a caller whose certificate names none of allowed_peers among its URI or DNS
subject alternative names is disconnected before it may open a stream, with a log line
naming what it presented."""

from __future__ import annotations

import hashlib
import os
import ssl
import time
from collections.abc import Sequence
from typing import Any

import structlog

from extproc.config.settings import GrpcTls

log = structlog.get_logger("extproc")

# What a refusal's log line repeats of a certificate's names (it comes from a peer).
_MAX_LOGGED_NAMES = 8
_MAX_LOGGED_LENGTH = 256
# Time stamps tick coarsely: a file written this recently may be written again without
# its stat changing, so its contents are compared until it is older than this.
_SETTLING_NS = 1_000_000_000


def _identities(files: Sequence[str]) -> tuple[tuple[int, ...], ...]:
    """What shows that a file changed without reading it: a file replaced (a Secret
    volume's ..data symlink swapped to a new directory) is another inode, one written in
    place has a new mtime, ctime or size. Symlinks are followed."""
    found = []
    for name in files:
        stat = os.stat(name)
        found.append((stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns))
    return tuple(found)


class ServerTls:
    """The listening SSLContext and the admission of peers for one grpc_tls config."""

    def __init__(self, config: GrpcTls) -> None:
        self.files = (config.cert_file, config.key_file, config.client_ca_file)
        self.uris = frozenset(p for p in config.allowed_peers if "://" in p)
        self.dns_names = frozenset(p.lower() for p in config.allowed_peers if "://" not in p)
        # Looked at before the contents are read: a change in between shows next time.
        self.seen, self.settled = self._look()
        self.stamp = self._stamp()
        # The context the server listens with; each handshake starts there and is moved to
        # `current`, the one built from the files as they are now (see _handshake).
        self.context = self._build()
        self.context.sni_callback = self._handshake
        self.current = self.context

    def _build(self) -> ssl.SSLContext:
        cert_file, key_file, ca_file = self.files
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2  # Envoy's upstream maximum by default
        context.options |= ssl.OP_NO_RENEGOTIATION
        context.load_cert_chain(cert_file, key_file)
        context.load_verify_locations(ca_file)
        context.verify_mode = ssl.CERT_REQUIRED
        context.set_alpn_protocols(["h2"])
        return context

    def _look(self) -> tuple[tuple[tuple[int, ...], ...], bool]:
        """The files' identities, and whether they are old enough to be trusted."""
        now = time.time_ns()
        seen = _identities(self.files)
        return seen, all(now - mtime > _SETTLING_NS for _, _, _, mtime, _ in seen)

    def _stamp(self) -> bytes:
        """A digest of the files' contents: what decides whether they changed, once
        their identities say they may have (a few KB read)."""
        digest = hashlib.sha256()
        for name in self.files:
            with open(name, "rb") as file:
                digest.update(hashlib.sha256(file.read()).digest())
        return digest.digest()

    def _handshake(self, connection: Any, server_name: str | None, context: Any) -> None:
        """OpenSSL's server-name callback, called for every ClientHello (with or without
        SNI) before the certificate is chosen: the place to switch to rotated files. Any
        peer may send one, so it costs three stat calls while the files stay the same."""
        self.refresh()
        if self.current is not context:
            connection.context = self.current

    def refresh(self) -> None:
        """Build a new context when the files changed; keep the one in use when they
        cannot be read or do not fit together (a rotation half done), until they change
        again."""
        try:
            seen, settled = self._look()
            if seen == self.seen and self.settled:
                return
            stamp = self._stamp()
        except OSError:
            return
        self.seen, self.settled = seen, settled
        if stamp == self.stamp:
            return
        self.stamp = stamp
        try:
            fresh = self._build()
        except (OSError, ssl.SSLError) as error:
            log.warning("grpc_tls_reload_failed", error=f"{type(error).__name__}: {error}")
            return
        self.current = fresh
        log.info("grpc_tls_reloaded")

    def admit(self, transport: Any) -> bool:
        """Whether a connection whose handshake is done may speak: its certificate names
        an allowed peer. A refusal is logged with the names it presented."""
        certificate = transport.get_extra_info("peercert") or {}
        names = [
            (kind, str(value))
            for kind, value in certificate.get("subjectAltName", ())
            if kind in ("URI", "DNS")
        ]
        for kind, value in names:
            if (kind == "URI" and value in self.uris) or (
                kind == "DNS" and value.lower() in self.dns_names
            ):
                return True
        log.warning(
            "grpc_peer_refused",
            peer=str(transport.get_extra_info("peername")),
            presented=[
                f"{kind}:{value[:_MAX_LOGGED_LENGTH]}" for kind, value in names[:_MAX_LOGGED_NAMES]
            ],
        )
        return False
