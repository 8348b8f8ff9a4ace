"""Load a YAML config: schema mapping, defaults, semantic checks, then the compiled Runtime."""

from __future__ import annotations

import datetime as dt
import email.utils
import os
import re
import time
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from extproc import names
from extproc.config import accounting, grpc_tls
from extproc.config import runtime as rt
from extproc.config.schema import NAME, fill
from extproc.config.v1 import config_pb2 as pb
from extproc.digits import strict_int
from extproc.glob import Glob
from extproc.policy.compile import compile_policy
from extproc.policy.rules import Policy

DEFAULT_RETRY_ON = ("connect-failure", "reset", "5xx", "429")
RETRY_CONDITIONS = frozenset(
    {"connect-failure", "reset", "5xx", "gateway-error", "refused-stream", "retriable-4xx"}
)
# Gateway defaults. The Envoy ones exist because Envoy's own defaults suit short RPCs,
# not LLM calls that stream for minutes.
DEFAULT_LISTENER = ("127.0.0.1", 10000)
DEFAULT_ADMIN = ("127.0.0.1", 9901)
DEFAULT_GRPC_ADDRESS = "127.0.0.1:50051"
DEFAULT_METRICS_ADDRESS = "127.0.0.1:9464"
DEFAULT_MESSAGE_TIMEOUT_S = 2.0
DEFAULT_SHUTDOWN_GRACE_S = 10.0
DEFAULT_CONFIG_CHECK_S = 5
DEFAULT_REQUEST_TIMEOUT_S = 300.0
DEFAULT_CONNECT_TIMEOUT_S = 5.0
# Several base64 images of ~10 MB each, as multimodal clients send (OpenAI takes images up
# to 20 MB); docs/configuration/request-body-limit.md gives the memory such a body costs.
DEFAULT_MAX_REQUEST_BYTES = 32 * 1024 * 1024
DEFAULT_MAX_TOKENS = 4096
ANTHROPIC_VERSION = "2023-06-01"
DEFAULT_AZURE_API_VERSION = "2024-10-21"
DEFAULT_DRIFT_LEARNING = 100
DEFAULT_DRIFT_CHECK_EVERY = 20
SYSTEM_CA_FILE = "/etc/ssl/certs/ca-certificates.crt"

# Model names are header-safe: printable ASCII without spaces ("org/model:tag" is fine).
MODEL_NAME = re.compile(r"^[\x21-\x7e]{1,256}$")
_HEADER_NAME = re.compile(r"^[a-z0-9!#$%&'*+.^_`|~-]+$")
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
# Unreserved URI characters: a name that needs no escaping, matched after unescaping.
_QUERY_PARAM = re.compile(r"^[a-z0-9._~-]{1,64}$")
_CREDENTIAL_HEADERS = {
    pb.OPENAI: "authorization",
    pb.ANTHROPIC: "x-api-key",
    pb.AZURE_OPENAI: "api-key",
}
_RESERVED_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})


class _Loader(yaml.SafeLoader):
    """YAML 1.2 scalars: no implicit timestamps (dates stay strings and are checked by the
    schema), and only true/false are booleans (YAML 1.1 also reads yes/no/on/off)."""


_Loader.yaml_implicit_resolvers = {
    first: [
        (tag, regexp)
        for tag, regexp in resolvers
        if tag not in ("tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:bool")
    ]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


class ConfigError(Exception):
    """The config cannot be used; `problems` lists every reason, each starting with a path."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def load_file(
    path: str | Path, *, resolve_secrets: bool = True, start_files: bool = True
) -> rt.Runtime:
    """start_files=False (a reload): the files read only when the processes start (the
    listener's and the ext_proc port's TLS files, backends' CA bundles) are resolved but
    not checked. A reload refuses any change to the sections naming them, and the service
    reads its TLS files again on its own, so a rotation caught half done must not refuse
    the credential or routing change landing at the same moment."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: not UTF-8 text (byte {exc.start})"]) from None
    return load_text(
        text,
        base_dir=Path(path).resolve().parent,
        resolve_secrets=resolve_secrets,
        start_files=start_files,
    )


def load_text(
    text: str,
    *,
    base_dir: Path | None = None,
    resolve_secrets: bool = True,
    start_files: bool = True,
) -> rt.Runtime:
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError([f"<yaml>: {where}{getattr(exc, 'problem', exc)}"]) from None
    return load_data(
        data, base_dir=base_dir, resolve_secrets=resolve_secrets, start_files=start_files
    )


def load_data(
    data: object,
    *,
    base_dir: Path | None = None,
    resolve_secrets: bool = True,
    start_files: bool = True,
) -> rt.Runtime:
    config = pb.Config()
    problems: list[str] = []
    fill(config, data if data is not None else {}, "", problems)
    if problems:
        raise ConfigError(problems)
    apply_defaults(config)
    checker = _Checker(config, base_dir or Path.cwd(), resolve_secrets, start_files)
    runtime = checker.build()
    if checker.problems:
        raise ConfigError(checker.problems)
    return runtime


def apply_defaults(config: pb.Config) -> None:
    """Write the documented defaults into unset fields, so every consumer sees one truth."""
    if not config.listener.address:
        config.listener.address = DEFAULT_LISTENER[0]
    if not config.listener.port:
        config.listener.port = DEFAULT_LISTENER[1]
    if not config.listener.HasField("request_timeout"):
        config.listener.request_timeout.FromSeconds(int(DEFAULT_REQUEST_TIMEOUT_S))
    if not config.admin.address:
        config.admin.address = DEFAULT_ADMIN[0]
    if not config.admin.port:
        config.admin.port = DEFAULT_ADMIN[1]
    service = config.service
    if not service.grpc_address:
        service.grpc_address = DEFAULT_GRPC_ADDRESS
    if not service.metrics_address:
        service.metrics_address = DEFAULT_METRICS_ADDRESS
    if not service.HasField("message_timeout"):
        service.message_timeout.FromNanoseconds(int(DEFAULT_MESSAGE_TIMEOUT_S * 1e9))
    if not service.HasField("config_check_interval"):
        service.config_check_interval.FromSeconds(DEFAULT_CONFIG_CHECK_S)
    if not service.HasField("shutdown_grace"):
        service.shutdown_grace.FromNanoseconds(int(DEFAULT_SHUTDOWN_GRACE_S * 1e9))
    if not config.auth.client_credential_headers:
        config.auth.client_credential_headers.extend(names.CLIENT_CREDENTIAL_HEADERS)
    if not config.auth.client_credential_query_params:
        config.auth.client_credential_query_params.extend(names.CLIENT_CREDENTIAL_QUERY_PARAMS)
    if not config.limits.max_request_bytes:
        config.limits.max_request_bytes = DEFAULT_MAX_REQUEST_BYTES
    for backend in config.backends:
        if backend.schema == pb.SCHEMA_UNSPECIFIED:
            backend.schema = pb.OPENAI
        if not backend.HasField("connect_timeout"):
            backend.connect_timeout.FromSeconds(int(DEFAULT_CONNECT_TIMEOUT_S))
        if not backend.default_max_tokens:
            backend.default_max_tokens = DEFAULT_MAX_TOKENS
        if backend.schema == pb.AZURE_OPENAI and not backend.api_version:
            backend.api_version = DEFAULT_AZURE_API_VERSION
        if backend.schema == pb.ANTHROPIC and not any(
            name.lower() == "anthropic-version" for name in backend.headers
        ):
            # Anthropic requires the header; a translated OpenAI client does not send it.
            backend.headers["anthropic-version"] = ANTHROPIC_VERSION
    accounting.apply_defaults(config)
    if not config.schema_drift.learning_responses:
        config.schema_drift.learning_responses = DEFAULT_DRIFT_LEARNING
    cache = config.cache
    if not cache.HasField("ttl"):
        cache.ttl.FromSeconds(3600)
    cache.max_entry_bytes = cache.max_entry_bytes or 1024 * 1024
    cache.max_bytes = cache.max_bytes or 64 * 1024 * 1024
    if cache.HasField("redis"):
        cache.redis.key_prefix = cache.redis.key_prefix or "extproc:cache:"
        if not cache.redis.HasField("timeout"):
            cache.redis.timeout.FromNanoseconds(250_000_000)
    if config.capture.path:
        capture = config.capture
        capture.max_file_bytes = capture.max_file_bytes or 64 * 1024 * 1024
        capture.max_files = capture.max_files or 3
        capture.max_body_bytes = capture.max_body_bytes or 1024 * 1024
    if not config.schema_drift.check_every:
        config.schema_drift.check_every = DEFAULT_DRIFT_CHECK_EVERY
    for model in config.models:
        if not model.retry_on:
            model.retry_on.extend(DEFAULT_RETRY_ON)
        if not model.owned_by:
            model.owned_by = "extproc"


def parse_instant(text: str) -> dt.datetime | None:
    """An RFC 3339 date ("2026-01-31", midnight UTC) or timestamp; None when malformed."""
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value


MAX_WORKERS = 64


def parse_grpc_address(address: str) -> str | None:
    """The problem with a "unix:///path" or "host:port" address, or None when it is fine."""
    if address.startswith("unix://"):
        return (
            None
            if address[len("unix://") :].startswith("/")
            else "unix socket path must be absolute"
        )
    host, sep, port = address.rpartition(":")
    if not sep or not host or not strict_int(port, 65535):
        return 'expected "unix:///path" or "host:port"'
    return None


class _Checker:
    def __init__(
        self, config: pb.Config, base_dir: Path, resolve_secrets: bool, start_files: bool
    ) -> None:
        self.config = config
        self.base_dir = base_dir
        self.resolve_secrets = resolve_secrets
        self.start_files = start_files
        self.problems: list[str] = []

    def problem(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}")

    def path_of(self, name: str) -> Path:
        path = Path(name)
        return path if path.is_absolute() else self.base_dir / path

    def check_file(self, path: str, name: str) -> str | None:
        """The absolute path of a file read at start, or None (a problem) when it does
        not exist (not checked without start_files)."""
        if self.start_files and not self.path_of(name).is_file():
            self.problem(path, f'file "{name}" does not exist')
            return None
        return str(self.path_of(name))

    def build(self) -> rt.Runtime:
        config = self.config
        self.check_listener_and_service()
        self.policies = self.build_policies()
        backends = self.build_backends()
        models = self.build_models(backends)
        tenants, by_key, by_spiffe = self.build_tenants()
        anonymous = None
        if config.auth.anonymous_tenant:
            anonymous = tenants.get(config.auth.anonymous_tenant)
            if anonymous is None:
                self.problem(
                    "auth.anonymous_tenant", f'no tenant named "{config.auth.anonymous_tenant}"'
                )
        credential_headers, credential_params = self.build_client_credentials()
        runtime = rt.Runtime(
            source=config,
            backends=backends,
            models=models,
            exact_models={},
            pattern_models=[],
            tenants=tenants,
            tenants_by_key_digest=by_key,
            tenants_by_spiffe_id=by_spiffe,
            anonymous_tenant=anonymous,
            max_request_bytes=config.limits.max_request_bytes,
            loaded_at=int(time.time()),
            policies=self.policies,
            prices=accounting.build_prices(config, set(backends), self.problem),
            reserved_output_tokens=config.accounting.default_reserved_output_tokens,
            read_usage=not config.accounting.skip_usage,
            external_envoy=config.service.external_envoy,
            client_credential_headers=credential_headers,
            client_credential_query_params=credential_params,
        )
        if (
            config.service.workers > 1
            and not config.accounting.store.HasField("redis")
            and any(t.budgets for t in tenants.values())
        ):
            self.problem(
                "service.workers",
                "budgets with more than one worker need accounting.store.redis "
                "(each worker would keep its own books)",
            )
        if config.accounting.skip_usage and any(t.budgets for t in tenants.values()):
            self.problem("accounting.skip_usage", "budgets need usage; remove one or the other")
        accounting.check_store(config, self.problem)
        self.check_capture()
        if not config.prices.models and any(
            budget.max_cost_nanos for tenant in tenants.values() for budget in tenant.budgets
        ):
            self.problem("prices.models", "cost budgets need a price table")
        self.index_models(runtime)
        runtime.metric_models = frozenset(runtime.exact_models) | {m.name for m in runtime.models}
        return runtime

    def build_client_credentials(self) -> tuple[tuple[str, ...], frozenset[str]]:
        auth = self.config.auth
        headers: list[str] = []
        for i, name in enumerate(auth.client_credential_headers):
            lowered = name.lower()
            if not _HEADER_NAME.match(lowered) or lowered in _RESERVED_HEADERS:
                self.problem(f"auth.client_credential_headers[{i}]", f'"{name}" is not a header')
            elif lowered in headers:
                self.problem(f"auth.client_credential_headers[{i}]", f'"{name}" is listed twice')
            else:
                headers.append(lowered)
        missing = [name for name in names.GATEWAY_KEY_HEADERS if name not in headers]
        if missing:
            self.problem(
                "auth.client_credential_headers",
                f"must include {', '.join(missing)}: the gateway reads client keys there",
            )
        params = set()
        for i, name in enumerate(auth.client_credential_query_params):
            if not _QUERY_PARAM.match(name.lower()):
                self.problem(
                    f"auth.client_credential_query_params[{i}]",
                    f'"{name}" is not a plain query parameter name',
                )
            params.add(name.lower())
        return tuple(headers), frozenset(params)

    def check_capture(self) -> None:
        capture = self.config.capture
        rates = [("capture.sample_rate", capture.sample_rate)] + [
            (f"capture.rates[{i}].rate", r.rate) for i, r in enumerate(capture.rates)
        ]
        for path, rate in rates:
            if not 0 <= rate <= 1:
                self.problem(path, "must be between 0 and 1")
        if capture.path:
            # Relative to the config file, like every other path in it.
            capture.path = str(self.path_of(capture.path))

    def check_listener_and_service(self) -> None:
        tls = self.config.listener.tls
        if self.config.listener.HasField("tls"):
            for name in ("cert_file", "key_file", "client_ca_file"):
                value = getattr(tls, name)
                if not value:
                    if name != "client_ca_file":
                        self.problem(f"listener.tls.{name}", "required when tls is set")
                    continue
                self.check_file(f"listener.tls.{name}", value)
                # Relative to the config file; Envoy runs elsewhere.
                setattr(tls, name, str(self.path_of(value)))
        error = parse_grpc_address(self.config.service.grpc_address)
        if error:
            self.problem("service.grpc_address", error)
        else:
            before = len(self.problems)
            grpc_tls.check(self.config.service, self.check_file, self.problem)
            service = self.config.service
            if (
                service.HasField("grpc_tls")
                and self.resolve_secrets
                and self.start_files
                and len(self.problems) == before
            ):
                grpc_tls.check_usable(service.grpc_tls, self.problem)
        metrics = self.config.service.metrics_address
        if metrics != "off" and (error := parse_grpc_address(metrics)):
            self.problem("service.metrics_address", 'expected "host:port" or "off"')
        for field, value in (
            ("service.health_address", self.config.service.health_address),
            ("admin.readiness_address", self.config.admin.readiness_address),
        ):
            if value and (value.startswith("unix:") or parse_grpc_address(value)):
                self.problem(field, 'expected "host:port"')
        if self.config.service.message_timeout.ToNanoseconds() <= 0:
            self.problem("service.message_timeout", "must be positive")
        if self.config.service.config_check_interval.ToNanoseconds() < 0:
            self.problem("service.config_check_interval", "must not be negative")
        self.check_workers()

    def check_workers(self) -> None:
        service = self.config.service
        if service.workers <= 1:
            return
        if service.workers > MAX_WORKERS:
            self.problem("service.workers", f"at most {MAX_WORKERS}")
            return
        if service.external_envoy:
            # That Envoy's ext_proc cluster names one address; scale with replicas there.
            self.problem(
                "service.workers",
                "an Envoy configured elsewhere (external_envoy) sends to one address; "
                "run more replicas instead",
            )
            return
        address = service.grpc_address
        if address.startswith("unix://") or parse_grpc_address(address):
            return  # sockets "<path>.N" cannot collide; a bad address is reported already
        first = int(address.rpartition(":")[2])
        last = first + service.workers - 1
        if last > 65535:
            self.problem("service.workers", f"workers would need port {last}")
            return
        others = [
            ("listener.port", self.config.listener.port),
            ("admin.port", self.config.admin.port),
        ] + [
            (field, int(value.rpartition(":")[2]))
            for field, value in (
                ("service.metrics_address", service.metrics_address),
                ("service.health_address", service.health_address),
                ("admin.readiness_address", self.config.admin.readiness_address),
            )
            if value and value != "off" and not parse_grpc_address(value)
        ]
        for field, port in others:
            if first <= port <= last:
                self.problem(
                    "service.workers", f"the workers' ports {first}-{last} include {field}'s {port}"
                )

    def build_policies(self) -> dict[str, Policy]:
        policies: dict[str, Policy] = {}
        for index, source in enumerate(self.config.policies):
            path = f"policies[{index}]"
            if source.name in policies:
                self.problem(f"{path}.name", f'duplicate policy name "{source.name}"')
                continue
            built = compile_policy(source, path, self.problem)
            if built is not None:
                policies[source.name] = built
        return policies

    def policy_refs(self, names: list[str], path: str) -> tuple[Policy, ...]:
        found = []
        for index, name in enumerate(names):
            policy = self.policies.get(name)
            if policy is None:
                if not any(p.name == name for p in self.config.policies):
                    self.problem(f"{path}[{index}]", f'no policy named "{name}"')
            else:
                found.append(policy)
        return tuple(found)

    def build_backends(self) -> dict[str, rt.Backend]:
        backends: dict[str, rt.Backend] = {}
        for index, backend in enumerate(self.config.backends):
            path = f"backends[{index}]"
            if not NAME.match(backend.name):
                self.problem(
                    f"{path}.name", f'"{backend.name}" is not a valid name (letters, digits, "_.-")'
                )
                continue
            if backend.name in backends:
                self.problem(f"{path}.name", f'duplicate backend name "{backend.name}"')
                continue
            built = self.build_backend(backend, path)
            if built is not None:
                backends[backend.name] = built
        return backends

    def build_backend(self, backend: pb.Backend, path: str) -> rt.Backend | None:
        url = urlsplit(backend.url)
        ok = True
        if url.scheme not in ("http", "https"):
            self.problem(f"{path}.url", f'expected an http:// or https:// URL, got "{backend.url}"')
            return None
        try:
            port = url.port or (443 if url.scheme == "https" else 80)
        except ValueError:
            self.problem(f"{path}.url", f'invalid port in "{backend.url}"')
            return None
        if not url.hostname:
            self.problem(f"{path}.url", f'no host in "{backend.url}"')
            ok = False
        if url.query or url.fragment or url.username:
            self.problem(f"{path}.url", "must not carry a query, fragment or user info")
            ok = False
        if backend.HasField("tls") and url.scheme != "https":
            self.problem(f"{path}.tls", "only applies to https URLs")
            ok = False
        if backend.tls.ca_file:
            self.check_file(f"{path}.tls.ca_file", backend.tls.ca_file)
        # Azure OpenAI speaks OpenAI's API at other paths: an OPENAI backend with a version.
        schema = rt.Schema.ANTHROPIC if backend.schema == pb.ANTHROPIC else rt.Schema.OPENAI
        azure = backend.schema == pb.AZURE_OPENAI
        if azure and not re.match(r"^[0-9A-Za-z.-]{1,40}$", backend.api_version):
            self.problem(f"{path}.api_version", "expected a version such as 2024-10-21")
            ok = False
        headers = []
        for name, value in sorted(backend.headers.items()):
            lowered = name.lower()
            if not _HEADER_NAME.match(lowered) or lowered in _RESERVED_HEADERS:
                self.problem(f"{path}.headers.{name}", "not a header the gateway can set")
                ok = False
            elif any(c in value for c in "\r\n\0"):
                self.problem(f"{path}.headers.{name}", "value contains a control character")
                ok = False
            headers.append((lowered, value))
        credential_header, secret = self.build_credential(backend, f"{path}.credential")
        if not ok:
            return None
        return rt.Backend(
            name=backend.name,
            schema=schema,
            cluster=f"backend.{backend.name}",
            scheme=url.scheme,
            host=url.hostname or "",
            port=port,
            base_path=url.path.rstrip("/"),
            credential_header=credential_header,
            credential=secret,
            headers=tuple(headers),
            sni=backend.tls.sni or (url.hostname or ""),
            ca_file=str(self.path_of(backend.tls.ca_file))
            if backend.tls.ca_file
            else SYSTEM_CA_FILE,
            connect_timeout=backend.connect_timeout.ToNanoseconds() / 1e9,
            omit_stream_options=backend.omit_stream_options,
            default_max_tokens=backend.default_max_tokens,
            azure_api_version=backend.api_version if azure else None,
        )

    def build_credential(
        self, backend: pb.Backend, path: str
    ) -> tuple[str | None, rt.Secret | None]:
        credential = backend.credential
        source = credential.WhichOneof("source")
        if source is None:
            if credential.header:
                self.problem(path, "header is set but neither env nor file")
            return None, None
        header = (credential.header or "").lower() or _CREDENTIAL_HEADERS[backend.schema]
        if not _HEADER_NAME.match(header) or header in _RESERVED_HEADERS:
            self.problem(f"{path}.header", f'"{header}" is not a header the gateway can set')
        if not self.resolve_secrets:
            return header, rt.Secret("")
        if source == "env":
            value = os.environ.get(credential.env)
            if not value:
                self.problem(f"{path}.env", f'environment variable "{credential.env}" is not set')
                return header, None
        else:
            try:
                value = self.path_of(credential.file).read_text(encoding="utf-8").strip()
            except OSError as exc:
                self.problem(f"{path}.file", f'cannot read "{credential.file}": {exc.strerror}')
                return header, None
            except UnicodeDecodeError:
                self.problem(f"{path}.file", f'"{credential.file}" is not UTF-8 text')
                return header, None
            if not value:
                self.problem(f"{path}.file", f'"{credential.file}" is empty')
                return header, None
        if any(c in value for c in "\r\n\0"):
            # Say where, never what: the value is a secret.
            self.problem(f"{path}.{source}", "the credential contains a control character")
            return header, None
        return header, rt.Secret(value)

    def build_models(self, backends: dict[str, rt.Backend]) -> list[rt.Model]:
        models: list[rt.Model] = []
        for index, model in enumerate(self.config.models):
            built = self.build_model(model, index, backends)
            if built is not None:
                models.append(built)
        return models

    def build_model(
        self, model: pb.Model, index: int, backends: dict[str, rt.Backend]
    ) -> rt.Model | None:
        path = f"models[{index}]"
        ok = True
        if not MODEL_NAME.match(model.name):
            self.problem(f"{path}.name", f'"{model.name}" is not a valid model name')
            ok = False
        for position, alias in enumerate(model.aliases):
            if not MODEL_NAME.match(alias) or "*" in alias:
                self.problem(f"{path}.aliases[{position}]", f'"{alias}" is not a valid alias')
                ok = False
        for position, condition in enumerate(model.retry_on):
            if condition not in RETRY_CONDITIONS and not (
                400 <= (strict_int(condition) or 0) <= 599
            ):
                choices = ", ".join(sorted(RETRY_CONDITIONS))
                self.problem(
                    f"{path}.retry_on[{position}]",
                    f'"{condition}" is not one of {choices} or a 4xx/5xx status code',
                )
                ok = False
        if not model.routes:
            self.problem(f"{path}.routes", "at least one route is required")
            ok = False
        fallbacks = [
            self.build_target(t, f"{path}.fallbacks[{i}]", backends)
            for i, t in enumerate(model.fallbacks)
        ]
        routes: list[rt.Route] = []
        cumulative: list[int] = []
        total = 0
        for position, target in enumerate(model.routes):
            route_path = f"{path}.routes[{position}]"
            first = self.build_target(target, route_path, backends)
            if target.HasField("weight") and target.weight == 0:
                self.problem(f"{route_path}.weight", "must be positive")
                ok = False
            total += target.weight if target.HasField("weight") else 1
            if first is None or None in fallbacks:
                ok = False
                continue
            attempts = (first, *(f for f in fallbacks if f is not None))
            cluster = (
                first.backend.cluster if len(attempts) == 1 else f"fallback.{index}.{position}"
            )
            routes.append(rt.Route(attempts=attempts, cluster=cluster))
            cumulative.append(total)
        deprecation = self.build_deprecation(model, path)
        if not ok or (model.HasField("deprecation") and deprecation is None):
            return None
        return rt.Model(
            name=model.name,
            aliases=tuple(model.aliases),
            routes=tuple(routes),
            cumulative_weights=tuple(cumulative),
            deprecation=deprecation,
            owned_by=model.owned_by,
            retry_on=tuple(model.retry_on),
            is_pattern="*" in model.name,
            policies=self.policy_refs(list(model.policies), f"{path}.policies"),
            cache=(model.cache.mode, model.cache.shared),
        )

    def build_target(
        self, target: pb.Target, path: str, backends: dict[str, rt.Backend]
    ) -> rt.Target | None:
        backend = backends.get(target.backend)
        if backend is None:
            if not target.backend:
                self.problem(f"{path}.backend", "required")
            elif not any(b.name == target.backend for b in self.config.backends):
                self.problem(f"{path}.backend", f'no backend named "{target.backend}"')
            return None
        if target.upstream_model and not MODEL_NAME.match(target.upstream_model):
            self.problem(
                f"{path}.upstream_model", f'"{target.upstream_model}" is not a valid model id'
            )
            return None
        return rt.Target(backend=backend, upstream_model=target.upstream_model)

    def build_deprecation(self, model: pb.Model, path: str) -> rt.Deprecation | None:
        if not model.HasField("deprecation"):
            return None
        source = model.deprecation
        path = f"{path}.deprecation"
        ok = True
        instants: dict[str, dt.datetime | None] = {}
        for name in ("deprecated_at", "sunset"):
            text = getattr(source, name)
            instants[name] = parse_instant(text) if text else None
            if text and instants[name] is None:
                self.problem(f"{path}.{name}", f'"{text}" is not an RFC 3339 date or timestamp')
                ok = False
        deprecated_at, sunset = instants["deprecated_at"], instants["sunset"]
        if not source.deprecated_at and not source.sunset:
            self.problem(path, "set deprecated_at, sunset, or both")
            ok = False
        if deprecated_at and sunset and deprecated_at > sunset:
            self.problem(f"{path}.sunset", "is before deprecated_at")
            ok = False
        reroute = source.after_sunset == pb.Deprecation.REROUTE
        if reroute and not source.replacement:
            self.problem(f"{path}.replacement", "required when after_sunset is reroute")
            ok = False
        if not ok:
            return None
        headers: list[tuple[str, str]] = []
        # RFC 9745: a structured-field date; without a date the model is deprecated as of now.
        headers.append(
            ("deprecation", f"@{int((deprecated_at or dt.datetime.now(dt.UTC)).timestamp())}")
        )
        if sunset:
            headers.append(
                ("sunset", email.utils.format_datetime(sunset.astimezone(dt.UTC), usegmt=True))
            )
        if source.replacement:
            headers.append(("link", f'</v1/models/{source.replacement}>; rel="successor-version"'))
        return rt.Deprecation(
            deprecated_at=deprecated_at,
            sunset=sunset,
            replacement=source.replacement,
            reroute=reroute,
            response_headers=tuple(headers),
        )

    def index_models(self, runtime: rt.Runtime) -> None:
        seen: dict[str, str] = {}
        for index, source in enumerate(self.config.models):
            names = [(f"models[{index}].name", source.name)] + [
                (f"models[{index}].aliases[{i}]", a) for i, a in enumerate(source.aliases)
            ]
            for path, name in names:
                if name in seen:
                    self.problem(path, f'"{name}" is already defined at {seen[name]}')
                else:
                    seen[name] = path
        for model in runtime.models:
            if model.is_pattern:
                runtime.pattern_models.append((Glob(model.name), model))
            else:
                runtime.exact_models.setdefault(model.name, model)
            for alias in model.aliases:
                runtime.exact_models.setdefault(alias, model)
            for route in model.routes:
                if route.has_fallbacks:
                    runtime.fallback_routes[route.cluster] = route
        for index, source in enumerate(self.config.models):
            replacement = source.deprecation.replacement
            if replacement and runtime.find_model(replacement) is None:
                self.problem(
                    f"models[{index}].deprecation.replacement", f'no model named "{replacement}"'
                )
        self.check_reroute_cycles(runtime)

    def check_reroute_cycles(self, runtime: rt.Runtime) -> None:
        for index, model in enumerate(runtime.models):
            chain = [model.name]
            current: rt.Model | None = model
            while current and current.deprecation and current.deprecation.reroute:
                current = runtime.find_model(current.deprecation.replacement)
                if current is None:
                    break
                if current.name in chain:
                    cycle = " -> ".join([*chain, current.name])
                    self.problem(
                        f"models[{index}].deprecation.replacement", f"reroutes in a cycle: {cycle}"
                    )
                    break
                chain.append(current.name)

    def build_tenants(
        self,
    ) -> tuple[dict[str, rt.Tenant], dict[str, rt.Tenant], dict[str, rt.Tenant]]:
        tenants: dict[str, rt.Tenant] = {}
        by_key: dict[str, rt.Tenant] = {}
        by_spiffe: dict[str, rt.Tenant] = {}
        for index, source in enumerate(self.config.tenants):
            path = f"tenants[{index}]"
            if not NAME.match(source.name):
                self.problem(f"{path}.name", f'"{source.name}" is not a valid name')
                continue
            if source.name in tenants:
                self.problem(f"{path}.name", f'duplicate tenant name "{source.name}"')
                continue
            globs = []
            for position, pattern in enumerate(source.models):
                if not MODEL_NAME.match(pattern):
                    self.problem(
                        f"{path}.models[{position}]", f'"{pattern}" is not a valid pattern'
                    )
                globs.append(Glob(pattern))
            tenant = rt.Tenant(
                name=source.name,
                model_globs=tuple(globs),
                policies=self.policy_refs(list(source.policies), f"{path}.policies"),
                budgets=accounting.build_budgets(source, path, self.problem),
                cache=(source.cache.mode, source.cache.shared),
            )
            tenants[source.name] = tenant
            for position, digest in enumerate(source.api_key_sha256):
                normalized = digest.lower()
                if not _SHA256_HEX.match(normalized):
                    self.problem(
                        f"{path}.api_key_sha256[{position}]",
                        "expected 64 hex digits (a SHA-256 digest)",
                    )
                elif normalized in by_key:
                    self.problem(
                        f"{path}.api_key_sha256[{position}]",
                        f'digest already belongs to tenant "{by_key[normalized].name}"',
                    )
                else:
                    by_key[normalized] = tenant
            for position, spiffe_id in enumerate(source.spiffe_ids):
                if not spiffe_id.startswith("spiffe://"):
                    self.problem(f"{path}.spiffe_ids[{position}]", 'must start with "spiffe://"')
                elif spiffe_id in by_spiffe:
                    self.problem(
                        f"{path}.spiffe_ids[{position}]",
                        f'already belongs to tenant "{by_spiffe[spiffe_id].name}"',
                    )
                else:
                    by_spiffe[spiffe_id] = tenant
        return tenants, by_key, by_spiffe
