"""Backends: URLs split into Envoy cluster parts, credentials read, headers checked."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from typing import NamedTuple, TypeVar
from urllib.parse import urlsplit

from extproc.config import runtime as rt
from extproc.config.context import Context
from extproc.config.service import seconds
from extproc.config.v1 import config_pb2 as pb

ANTHROPIC_VERSION = "2023-06-01"
SYSTEM_CA_FILE = "/etc/ssl/certs/ca-certificates.crt"
S = TypeVar("S", pb.Backend, pb.McpServer)
U = TypeVar("U", bound=rt.Upstream)
_API_VERSION = re.compile(r"^[0-9A-Za-z.-]{1,40}$")
# Where each schema's SDKs send the key (credential.header's default).
_CREDENTIAL_HEADERS = {
    pb.OPENAI: "authorization",
    pb.ANTHROPIC: "x-api-key",
    pb.AZURE_OPENAI: "api-key",
    pb.OPENAI_RESPONSES: "authorization",
}
# The API each schema's backends speak (Azure OpenAI: OpenAI's, at other paths).
_SCHEMAS = {
    pb.ANTHROPIC: rt.Schema.ANTHROPIC,
    pb.OPENAI_RESPONSES: rt.Schema.OPENAI_RESPONSES,
}


def build_backends(ctx: Context) -> dict[str, rt.Backend]:
    return by_name(ctx, ctx.config.backends, "backends", "backend", _backend)


def by_name(
    ctx: Context,
    sources: Iterable[S],
    field: str,
    kind: str,
    build: Callable[[Context, S, str], U | None],
) -> dict[str, U]:
    """The config's upstreams of one kind, built, by their unique names."""
    built: dict[str, U] = {}
    for index, source in enumerate(sources):
        path = f"{field}[{index}]"
        if ctx.failed(f"{path}.name"):
            continue
        name: str = source.name
        if name in built:
            ctx.problem(f"{path}.name", f'duplicate {kind} name "{name}"')
            continue
        upstream = build(ctx, source, path)
        if upstream is not None:
            built[name] = upstream
    return built


class Address(NamedTuple):
    """An upstream URL as Envoy's cluster takes it."""

    scheme: str
    host: str
    port: int
    base_path: str
    sni: str
    ca_file: str


def address(
    ctx: Context, url_text: str, tls: pb.BackendTls, has_tls: bool, path: str
) -> Address | None:
    """An http(s) URL split for a cluster, with its TLS settings; None when unusable."""
    url = urlsplit(url_text)
    if url.scheme not in ("http", "https"):
        ctx.problem(f"{path}.url", f'expected an http:// or https:// URL, got "{url_text}"')
        return None
    try:
        port = url.port or (443 if url.scheme == "https" else 80)
    except ValueError:
        ctx.problem(f"{path}.url", f'invalid port in "{url_text}"')
        return None
    if not url.hostname:
        ctx.problem(f"{path}.url", f'no host in "{url_text}"')
    if url.query or url.fragment or url.username:
        ctx.problem(f"{path}.url", "must not carry a query, fragment or user info")
    if has_tls and url.scheme != "https":
        ctx.problem(f"{path}.tls", "only applies to https URLs")
    if tls.ca_file:
        ctx.check_file(f"{path}.tls.ca_file", tls.ca_file)
    return Address(
        scheme=url.scheme,
        host=url.hostname or "",
        port=port,
        base_path=url.path.rstrip("/"),
        sni=tls.sni or (url.hostname or ""),
        ca_file=str(ctx.path_of(tls.ca_file)) if tls.ca_file else SYSTEM_CA_FILE,
    )


def _backend(ctx: Context, backend: pb.Backend, path: str) -> rt.Backend | None:
    where = address(ctx, backend.url, backend.tls, backend.HasField("tls"), path)
    if where is None:
        return None
    # Azure OpenAI speaks OpenAI's API at other paths: an OPENAI backend with a version.
    schema = _SCHEMAS.get(backend.schema, rt.Schema.OPENAI)
    azure = backend.schema == pb.AZURE_OPENAI
    if azure and not _API_VERSION.match(backend.api_version):
        ctx.problem(f"{path}.api_version", "expected a version such as 2024-10-21")
    headers = sorted((name.lower(), value) for name, value in backend.headers.items())
    if schema is rt.Schema.ANTHROPIC and not any(n == "anthropic-version" for n, _ in headers):
        # Anthropic requires the header; a translated OpenAI client does not send it.
        headers = sorted([*headers, ("anthropic-version", ANTHROPIC_VERSION)])
    responses_api = where.host == "api.openai.com"
    if backend.HasField("responses_api"):
        responses_api = backend.responses_api
        if responses_api and backend.schema not in (pb.SCHEMA_UNSPECIFIED, pb.OPENAI):
            ctx.problem(f"{path}.responses_api", "applies to openai backends only")
    header, secret, file = credential(
        ctx, backend.credential, _CREDENTIAL_HEADERS[backend.schema], f"{path}.credential"
    )
    # A credential's problem leaves the backend for the checks that name it.
    if ctx.failed(path, ignoring=(".credential",)):
        return None
    return rt.Backend(
        name=backend.name,
        schema=schema,
        cluster=f"backend.{backend.name}",
        scheme=where.scheme,
        host=where.host,
        port=where.port,
        base_path=where.base_path,
        credential_header=header,
        credential=secret,
        headers=tuple(headers),
        sni=where.sni,
        ca_file=where.ca_file,
        connect_timeout=seconds(backend.connect_timeout),
        omit_stream_options=backend.omit_stream_options,
        default_max_tokens=backend.default_max_tokens,
        azure_api_version=backend.api_version if azure else None,
        credential_file=file,
        responses_api=responses_api and schema is rt.Schema.OPENAI and not azure,
    )


def credential(
    ctx: Context, credential: pb.Credential, default_header: str, path: str
) -> tuple[str | None, rt.Secret | None, str | None]:
    """The header, the key, and the file it is read from (watched for rotation)."""
    source = credential.WhichOneof("source")
    if source is None:
        return None, None, None  # a header alone is reported by the schema
    header = credential.header.lower() or default_header
    file = str(ctx.path_of(credential.file)) if source == "file" else None
    if not ctx.resolve_secrets:
        return header, rt.Secret(""), file
    if source == "env":
        value = os.environ.get(credential.env)
        if not value:
            ctx.problem(f"{path}.env", f'environment variable "{credential.env}" is not set')
            return header, None, file
    else:
        try:
            value = ctx.path_of(credential.file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            ctx.problem(f"{path}.file", f'cannot read "{credential.file}": {exc.strerror}')
            return header, None, file
        except UnicodeDecodeError:
            ctx.problem(f"{path}.file", f'"{credential.file}" is not UTF-8 text')
            return header, None, file
        if not value:
            ctx.problem(f"{path}.file", f'"{credential.file}" is empty')
            return header, None, file
    if any(c in value for c in "\r\n\0"):
        # Say where, never what: the value is a secret.
        ctx.problem(f"{path}.{source}", "the credential contains a control character")
        return header, None, file
    return header, rt.Secret(value), file
