"""Shared test helpers."""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.util
import ipaddress
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from extproc.config import Runtime, load_text
from extproc.control.stack import extproc_argv, grpc_serving, process_env, wait_until

ROOT = Path(__file__).resolve().parent.parent


# An MCP client's first request (a session of the 2025-06-18 revision).
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "test", "version": "1"},
    },
}


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


BASE_CONFIG = """
backends:
  - name: openai
    url: https://api.openai.test/v1
    credential: {env: TEST_OPENAI_KEY}
  - name: second
    url: http://10.0.0.2:8000/v1
    headers: {x-extra: "1"}
  - name: anthropic
    schema: anthropic
    url: https://api.anthropic.test/v1
    credential: {env: TEST_ANTHROPIC_KEY}
models:
  - name: gpt-4o-mini
    aliases: [mini]
    routes: [{backend: openai}]
  - name: gpt-4o
    routes: [{backend: openai, upstream_model: gpt-4o-2024-08-06}]
  - name: split
    routes:
      - {backend: openai, weight: 3, upstream_model: split-a}
      - {backend: second, weight: 1, upstream_model: split-b}
  - name: claude-*
    routes: [{backend: anthropic}]
  - name: resilient
    routes: [{backend: openai, upstream_model: first}]
    fallbacks: [{backend: second, upstream_model: second}, {backend: anthropic}]
  - name: old
    routes: [{backend: openai}]
    deprecation: {deprecated_at: "2026-01-01", sunset: "2026-06-30", replacement: gpt-4o-mini}
  - name: gone
    routes: [{backend: openai}]
    deprecation: {sunset: "2026-06-30", replacement: gpt-4o}
  - name: moved
    routes: [{backend: openai}]
    deprecation: {sunset: "2026-06-30", replacement: gpt-4o, after_sunset: reroute}
tenants:
  - name: team-a
    api_key_sha256: ["%(key_a)s"]
    models: ["gpt-*", "split", "resilient", "old", "gone", "moved"]
  - name: team-b
    api_key_sha256: ["%(key_b)s"]
    spiffe_ids: ["spiffe://test/ns/b/sa/app"]
    models: ["claude-*"]
  - name: public
    models: ["gpt-4o-mini"]
auth:
  anonymous_tenant: public
""".replace("%(key_a)s", sha256("key-a")).replace("%(key_b)s", sha256("key-b"))


def runtime(text: str = BASE_CONFIG, **kwargs: object) -> Runtime:
    return load_text(textwrap.dedent(text), **kwargs)  # type: ignore[arg-type]


MINIMAL_WITH_ANONYMOUS = """
backends: [{name: b, url: "http://127.0.0.1:9/v1"}]
models: [{name: m, routes: [{backend: b}]}]
tenants: [{name: everyone}]
auth: {anonymous_tenant: everyone}
"""


def start_service(
    config: Path, address: str, log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """`extproc serve CONFIG` as its own process, once its gRPC health says SERVING."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            extproc_argv("serve", str(config)),
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=process_env(env or {}),
        )
    try:
        wait_until(lambda: grpc_serving(address), 20, "service", process)
    except BaseException:
        process.kill()
        process.wait()
        raise
    return process


def issue_certificate(
    ca: trustme.CA,
    directory: Path,
    stem: str,
    *,
    uris: tuple[str, ...] = (),
    dns: tuple[str, ...] = (),
    ips: tuple[str, ...] = (),
) -> tuple[Path, Path]:
    """A leaf certificate with these subject alternative names (trustme cannot issue URI
    SANs such as SPIFFE ids), written as <stem>.pem and <stem>.key."""
    ca_key = serialization.load_pem_private_key(ca.private_key_pem.bytes(), password=None)
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in uris]
    names += [x509.DNSName(d) for d in dns]
    names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, stem)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def bench_script(name: str) -> ModuleType:
    """A script of bench/ loaded as a module (bench/ is not a package the tests import),
    registered under `bench_<name>`: dataclasses look their module up."""
    path = Path(__file__).resolve().parents[1] / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
