"""The listeners: the gateway's (TLS, the HTTP connection manager, its filters, Envoy's
own replies in the client's schema, the access log) and the readiness port's."""

from __future__ import annotations

from typing import Any

from extproc import names
from extproc.config.runtime import Runtime
from extproc.config.settings import Admin, ListenerTls
from extproc.control.render.ext_proc import EXT_PROC_FILTER, ext_proc_filter
from extproc.control.render.routes import route_config
from extproc.control.render.values import TYPE, address

_HCM = TYPE + "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
_HEADER_MUTATION = TYPE + "envoy.extensions.filters.http.header_mutation.v3.HeaderMutation"
_CEL_FILTER = TYPE + "envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter"

# Usage the service leaves in dynamic metadata, written to every access log line.
USAGE_LOG_FIELDS = (
    "tenant",
    "model",
    "backend",
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "cached_input_tokens",
    "reasoning_tokens",
    "cost",
    "estimated",
)
# The ext_proc filter's own timings of its calls to the service (its filter state), per
# phase, written to every access log line: what the gateway's processing added to the
# request as Envoy waited for it (a round trip each, transport included). Envoy writes
# these fields as strings of digits.
EXTPROC_LOG_FIELDS = {
    "extproc_request_headers_us": "request_header_latency_us",
    "extproc_request_body_us": "request_body_total_latency_us",
    "extproc_response_headers_us": "response_header_latency_us",
    "extproc_response_body_us": "response_body_total_latency_us",
    "extproc_response_body_max_us": "response_body_max_latency_us",
    "extproc_response_body_calls": "response_body_call_count",
}


def _error_body(kind: str, code: str, message: str, anthropic_type: str) -> dict[str, Any]:
    """A local-reply body in the OpenAI or Anthropic error schema."""
    if kind == "anthropic":
        return {"type": "error", "error": {"type": anthropic_type, "message": message}}
    openai_type = "invalid_request_error" if code == "request_too_large" else "server_error"
    return {"error": {"message": message, "type": openai_type, "param": None, "code": code}}


def gateway_listener(runtime: Runtime, bare_backend: str | None) -> dict[str, Any]:
    listener = runtime.listener
    chain: dict[str, Any] = {
        "filters": [
            {
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": http_connection_manager(runtime, bare_backend),
            }
        ]
    }
    if listener.tls is not None:
        chain["transport_socket"] = downstream_tls(listener.tls)
    return {
        "name": "gateway",
        "address": address(listener.address, listener.port),
        # Bounds what Envoy buffers per connection; above the body limit so the service,
        # not Envoy, answers oversized requests (in the client's schema).
        "per_connection_buffer_limit_bytes": runtime.max_request_bytes + 1024 * 1024,
        "filter_chains": [chain],
    }


def readiness_listener(admin: Admin) -> dict[str, Any]:
    """GET /ready: 200 once Envoy serves (listeners start after initialisation), 503
    while it drains; anything else 404. Exposes nothing of the admin interface."""
    host, _, port = admin.readiness_address.rpartition(":")
    manager = {
        "@type": _HCM,
        "stat_prefix": "readiness",
        "route_config": {
            "virtual_hosts": [
                {
                    "name": "readiness",
                    "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "direct_response": {"status": 404}}],
                }
            ]
        },
        "http_filters": [
            {
                "name": "envoy.filters.http.health_check",
                "typed_config": {
                    "@type": TYPE + "envoy.extensions.filters.http.health_check.v3.HealthCheck",
                    "pass_through_mode": False,
                    "headers": [{"name": ":path", "string_match": {"exact": "/ready"}}],
                },
            },
            {
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": TYPE + "envoy.extensions.filters.http.router.v3.Router"},
            },
        ],
    }
    return {
        "name": "readiness",
        "address": address(host.strip("[]"), int(port)),
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": manager,
                    }
                ]
            }
        ],
    }


def downstream_tls(tls: ListenerTls) -> dict[str, Any]:
    common: dict[str, Any] = {
        "tls_certificates": [
            {
                "certificate_chain": {"filename": tls.cert_file},
                "private_key": {"filename": tls.key_file},
            }
        ],
        "alpn_protocols": ["h2", "http/1.1"],
    }
    context: dict[str, Any] = {
        "@type": TYPE + "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
        "common_tls_context": common,
    }
    if tls.client_ca_file:
        common["validation_context"] = {"trusted_ca": {"filename": tls.client_ca_file}}
        context["require_client_certificate"] = True
    return {"name": "envoy.transport_sockets.tls", "typed_config": context}


def http_connection_manager(runtime: Runtime, bare_backend: str | None) -> dict[str, Any]:
    tls = runtime.listener.tls
    mtls = tls is not None and bool(tls.client_ca_file)
    filters: list[dict[str, Any]] = []
    if bare_backend is None:
        if runtime.service.failure_mode_allow:
            filters.append(strip_internal_headers())
        filters.append({"name": EXT_PROC_FILTER, "typed_config": ext_proc_filter(runtime.service)})
    filters.append(
        {
            "name": "envoy.filters.http.router",
            "typed_config": {
                "@type": TYPE + "envoy.extensions.filters.http.router.v3.Router",
                "suppress_envoy_headers": True,
            },
        }
    )
    return {
        "@type": _HCM,
        "stat_prefix": "gateway",
        "codec_type": "AUTO",
        "normalize_path": True,
        "merge_slashes": True,
        "use_remote_address": True,
        # Clients get the id of their request, the key of its log record.
        "always_set_request_id_in_response": True,
        # Only Envoy may say who the mTLS peer is: a client-sent header is dropped.
        "forward_client_cert_details": "SANITIZE_SET" if mtls else "SANITIZE",
        **({"set_current_client_cert_details": {"uri": True}} if mtls else {}),
        "local_reply_config": local_reply_config(),
        "access_log": [access_log()],
        "route_config": route_config(runtime, bare_backend),
        "http_filters": filters,
    }


def strip_internal_headers() -> dict[str, Any]:
    """In fail-open mode a request may skip the service: never trust client-sent routing."""
    return {
        "name": "envoy.filters.http.header_mutation",
        "typed_config": {
            "@type": _HEADER_MUTATION,
            "mutations": {
                "request_mutations": [{"remove": h} for h in names.INTERNAL_REQUEST_HEADERS]
            },
        },
    }


def local_reply_config() -> dict[str, Any]:
    """Envoy's own replies (upstream unreachable, timeouts, oversized bodies, service
    failures) get a JSON body in the client's schema; the service's replies and the
    unrouted direct response are JSON already and are left alone."""
    envoy_made = (
        "!(response.code_details.startsWith('extproc_')"
        " || response.code_details == 'direct_response')"
    )
    too_large = "response.code_details == 'request_payload_too_large'"
    anthropic = "request.path.startsWith('/v1/messages')"
    mappers = []
    for kind, path_test in (("anthropic", anthropic), ("openai", f"!{anthropic}")):
        for test, code, message, error_type in (
            (
                too_large,
                "request_too_large",
                "The request body exceeds the gateway's buffer limit.",
                "request_too_large",
            ),
            ("true", "upstream_error", "%LOCAL_REPLY_BODY%", "api_error"),
        ):
            expression = f"{envoy_made} && {path_test} && {test}"
            mappers.append(
                {
                    "filter": {
                        "extension_filter": {
                            "name": "envoy.access_loggers.extension_filters.cel",
                            "typed_config": {"@type": _CEL_FILTER, "expression": expression},
                        }
                    },
                    "body_format_override": {
                        "json_format": _error_body(kind, code, message, error_type)
                    },
                }
            )
    return {"mappers": mappers}


def access_log() -> dict[str, Any]:
    return {
        "name": "envoy.access_loggers.stdout",
        "typed_config": {
            "@type": TYPE + "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
            "log_format": {
                "json_format": {
                    "time": "%START_TIME%",
                    "request_id": "%REQ(X-REQUEST-ID)%",
                    "method": "%REQ(:METHOD)%",
                    # Never the query string: a client's key may travel there.
                    "path": "%PATH(NQ)%",
                    "status": "%RESPONSE_CODE%",
                    "flags": "%RESPONSE_FLAGS%",
                    "details": "%RESPONSE_CODE_DETAILS%",
                    "duration_ms": "%DURATION%",
                    "upstream_cluster": "%UPSTREAM_CLUSTER%",
                    "upstream_host": "%UPSTREAM_HOST%",
                    "attempts": "%UPSTREAM_REQUEST_ATTEMPT_COUNT%",
                    **{
                        key: f"%DYNAMIC_METADATA({names.METADATA_NAMESPACE}:{key})%"
                        for key in USAGE_LOG_FIELDS
                    },
                    **{
                        key: f"%FILTER_STATE({EXT_PROC_FILTER}:FIELD:{field})%"
                        for key, field in EXTPROC_LOG_FIELDS.items()
                    },
                }
            },
        },
    }
