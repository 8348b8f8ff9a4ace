"""The process-level sections: listener, service (and its workers), admin, cache,
conversations, capture, schema drift, telemetry. Their single-field rules are the
schema's; what is left here reads addresses, files, and fields against each other."""

from __future__ import annotations

from google.protobuf.duration_pb2 import Duration

from extproc.config import grpc_tls
from extproc.config import settings as st
from extproc.config.context import Context
from extproc.config.v1 import config_pb2 as pb
from extproc.digits import strict_int
from extproc.state.turns import Bounds


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


def seconds(duration: Duration) -> float:
    return duration.ToNanoseconds() / 1e9


def listener(ctx: Context) -> st.Listener:
    source = ctx.config.listener
    tls = None
    if source.HasField("tls"):
        files = {}
        for name in ("cert_file", "key_file", "client_ca_file"):
            value = getattr(source.tls, name)
            if value:  # an empty one is reported by the schema
                ctx.check_file(f"listener.tls.{name}", value)
                # Relative to the config file; Envoy runs elsewhere.
                files[name] = str(ctx.path_of(value))
        tls = st.ListenerTls(
            files.get("cert_file", ""), files.get("key_file", ""), files.get("client_ca_file", "")
        )
    return st.Listener(source.address, source.port, seconds(source.request_timeout), tls)


def service(ctx: Context) -> st.Service:
    source = ctx.config.service
    tls = None
    error = parse_grpc_address(source.grpc_address)
    if error:
        ctx.problem("service.grpc_address", error)
    else:
        tls = grpc_tls.build(source, ctx.check_file, ctx.problem)
        if (
            tls is not None
            and ctx.resolve_secrets
            and ctx.start_files
            and not ctx.failed("service.grpc_tls")
        ):
            grpc_tls.check_usable(tls, ctx.problem)
    metrics = source.metrics_address
    if metrics != "off" and parse_grpc_address(metrics):
        ctx.problem("service.metrics_address", 'expected "host:port" or "off"')
    for field, value in (
        ("service.health_address", source.health_address),
        ("admin.readiness_address", ctx.config.admin.readiness_address),
    ):
        if value and (value.startswith("unix:") or parse_grpc_address(value)):
            ctx.problem(field, 'expected "host:port"')
    _check_workers(ctx)
    return st.Service(
        grpc_address=source.grpc_address,
        metrics_address=metrics,
        message_timeout=seconds(source.message_timeout),
        shutdown_grace=seconds(source.shutdown_grace),
        failure_mode_allow=source.failure_mode_allow,
        health_address=source.health_address,
        external_envoy=source.external_envoy,
        config_check_interval=seconds(source.config_check_interval),
        workers=source.workers,
        grpc_tls=tls,
        unauthenticated_grpc=source.unauthenticated_grpc,
    )


def _check_workers(ctx: Context) -> None:
    service = ctx.config.service
    if service.workers <= 1 or ctx.failed("service.workers"):
        return
    if service.external_envoy:
        # That Envoy's ext_proc cluster names one address; scale with replicas there.
        ctx.problem(
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
        ctx.problem("service.workers", f"workers would need port {last}")
        return
    admin = ctx.config.admin
    others = [("listener.port", ctx.config.listener.port), ("admin.port", admin.port)] + [
        (field, int(value.rpartition(":")[2]))
        for field, value in (
            ("service.metrics_address", service.metrics_address),
            ("service.health_address", service.health_address),
            ("admin.readiness_address", admin.readiness_address),
        )
        if value and value != "off" and not parse_grpc_address(value)
    ]
    for field, port in others:
        if first <= port <= last:
            ctx.problem(
                "service.workers", f"the workers' ports {first}-{last} include {field}'s {port}"
            )


def admin(ctx: Context) -> st.Admin:
    source = ctx.config.admin
    return st.Admin(source.address, source.port, source.readiness_address)


def redis(source: pb.RedisStore) -> st.Redis:
    return st.Redis(source.url, source.key_prefix, seconds(source.timeout), source.password_env)


def cache(ctx: Context) -> st.Cache:
    source = ctx.config.cache
    store = redis(source.redis) if source.HasField("redis") else None
    return st.Cache(seconds(source.ttl), source.max_entry_bytes, source.max_bytes, store)


def conversations(ctx: Context) -> st.ConversationSettings:
    source = ctx.config.conversations
    store = redis(source.redis) if source.HasField("redis") else None
    because = ""
    if source.disabled:
        because = "conversations.disabled is set"
    elif store is None and ctx.config.service.workers > 1:
        # Each worker would keep its own: a conversation would continue only where Envoy
        # happened to send it.
        because = "more than one service worker and no conversations.redis"
    elif (
        store is None
        and source.max_bytes > source.max_total_bytes
        and not ctx.failed("conversations.max_bytes")
    ):
        ctx.problem(
            "conversations.max_bytes",
            "larger than conversations.max_total_bytes: such a conversation could never be kept",
        )
    return st.ConversationSettings(
        bounds=Bounds(
            ttl=max(1, round(seconds(source.ttl))),
            max_items=source.max_items,
            max_bytes=source.max_bytes,
        ),
        max_total_bytes=source.max_total_bytes,
        max_entries=source.max_entries,
        redis=store,
        disabled=bool(because),
        disabled_because=because,
    )


def capture(ctx: Context) -> st.Capture:
    source = ctx.config.capture
    servers = {server.name for server in ctx.config.mcp_servers}
    for index, rate in enumerate(source.rates):
        for number, pattern in enumerate(rate.mcp_servers):
            # A typo would otherwise capture nothing, quietly.
            where = f"capture.rates[{index}].mcp_servers[{number}]"
            if "*" not in pattern and pattern not in servers and not ctx.failed(where):
                ctx.problem(where, f'no MCP server named "{pattern}"')
    rates = tuple(
        st.CaptureRate(tuple(rate.models), tuple(rate.tenants), rate.rate, tuple(rate.mcp_servers))
        for rate in source.rates
    )
    return st.Capture(
        # Relative to the config file, like every other path in it.
        path=str(ctx.path_of(source.path)) if source.path else "",
        sample_rate=source.sample_rate,
        rates=rates,
        max_file_bytes=source.max_file_bytes,
        max_files=source.max_files,
        max_body_bytes=source.max_body_bytes,
    )


def schema_drift(ctx: Context) -> st.SchemaDrift:
    source = ctx.config.schema_drift
    return st.SchemaDrift(source.learning_responses, source.disabled, source.check_every)


_CACHE_MODES = {
    pb.CachePolicy.OFF: st.CacheMode.OFF,
    pb.CachePolicy.DETERMINISTIC: st.CacheMode.DETERMINISTIC,
    pb.CachePolicy.ALL: st.CacheMode.ALL,
}


def cache_policy(source: pb.CachePolicy) -> st.CachePolicy | None:
    """A model's or tenant's cache setting; None where it sets no mode (a tenant's then
    leaves it to the model)."""
    mode = _CACHE_MODES.get(source.mode)
    return None if mode is None else st.CachePolicy(mode, source.shared)
