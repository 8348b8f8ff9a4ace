"""Render the Envoy bootstrap from the gateway config: one source of truth for both."""

from __future__ import annotations

import ipaddress
from typing import Any

import yaml

from extproc import names
from extproc.apis import ApiError
from extproc.config.runtime import Backend, Model, Route, Runtime, Schema
from extproc.config.settings import GrpcTlsClient, ListenerTls
from extproc.transport.limits import Limits

EXTPROC_CLUSTER = "extproc"
_TYPE = "type.googleapis.com/"
_HCM = _TYPE + "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
_EXT_PROC = _TYPE + "envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor"
_EXTPROC_FILTER = "envoy.filters.http.ext_proc"
_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_CONNECTIONS_MONITOR = (
    "envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig"
)
_HEADER_MUTATION = _TYPE + "envoy.extensions.filters.http.header_mutation.v3.HeaderMutation"

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
_CEL_FILTER = _TYPE + "envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter"
_UNROUTED = ApiError(404, "No route for this request.", "unknown_url")

# Retry conditions of the config that are Envoy retry_on values as they are.
_ENVOY_RETRY_ON = {
    "connect-failure",
    "reset",
    "5xx",
    "gateway-error",
    "refused-stream",
    "retriable-4xx",
}


def _address(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _seconds(value: float) -> str:
    return f"{value:.3f}s"


def _protocol_options(body: dict[str, Any]) -> dict[str, Any]:
    return {_PROTOCOL_OPTIONS: {"@type": _TYPE + _PROTOCOL_OPTIONS, **body}}


def _grpc_target(address: str) -> dict[str, Any]:
    if address.startswith("unix://"):
        return {"pipe": {"path": address[len("unix://") :]}}
    host, _, port = address.rpartition(":")
    return _address(host.strip("[]"), int(port))


def _error_body(kind: str, code: str, message: str, anthropic_type: str) -> dict[str, Any]:
    """A local-reply body in the OpenAI or Anthropic error schema."""
    if kind == "anthropic":
        return {"type": "error", "error": {"type": anthropic_type, "message": message}}
    openai_type = "invalid_request_error" if code == "request_too_large" else "server_error"
    return {"error": {"message": message, "type": openai_type, "param": None, "code": code}}


class Renderer:
    def __init__(self, runtime: Runtime, *, bare_backend: str | None = None) -> None:
        """bare_backend: route everything to that backend with no ext_proc (benchmarks only)."""
        self.runtime = runtime
        self.bare_backend = bare_backend

    def render(self) -> dict[str, Any]:
        admin = self.runtime.admin
        return {
            "admin": {"address": _address(admin.address, admin.port)},
            "overload_manager": {
                "resource_monitors": [
                    {
                        "name": "envoy.resource_monitors.global_downstream_max_connections",
                        "typed_config": {
                            "@type": _TYPE + _CONNECTIONS_MONITOR,
                            "max_active_downstream_connections": 50000,
                        },
                    }
                ]
            },
            "static_resources": {"listeners": self.listeners(), "clusters": self.clusters()},
        }

    # -- listener -----------------------------------------------------------------------

    def listeners(self) -> list[dict[str, Any]]:
        listeners = [self.listener()]
        if self.runtime.admin.readiness_address:
            listeners.append(self.readiness_listener())
        return listeners

    def readiness_listener(self) -> dict[str, Any]:
        """GET /ready: 200 once Envoy serves (listeners start after initialisation), 503
        while it drains; anything else 404. Exposes nothing of the admin interface."""
        host, _, port = self.runtime.admin.readiness_address.rpartition(":")
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
                        "@type": _TYPE
                        + "envoy.extensions.filters.http.health_check.v3.HealthCheck",
                        "pass_through_mode": False,
                        "headers": [{"name": ":path", "string_match": {"exact": "/ready"}}],
                    },
                },
                {
                    "name": "envoy.filters.http.router",
                    "typed_config": {
                        "@type": _TYPE + "envoy.extensions.filters.http.router.v3.Router"
                    },
                },
            ],
        }
        return {
            "name": "readiness",
            "address": _address(host.strip("[]"), int(port)),
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

    def listener(self) -> dict[str, Any]:
        listener = self.runtime.listener
        chain: dict[str, Any] = {
            "filters": [
                {
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": self.http_connection_manager(),
                }
            ]
        }
        if listener.tls is not None:
            chain["transport_socket"] = self.downstream_tls(listener.tls)
        return {
            "name": "gateway",
            "address": _address(listener.address, listener.port),
            # Bounds what Envoy buffers per connection; above the body limit so the service,
            # not Envoy, answers oversized requests (in the client's schema).
            "per_connection_buffer_limit_bytes": self.runtime.max_request_bytes + 1024 * 1024,
            "filter_chains": [chain],
        }

    def downstream_tls(self, tls: ListenerTls) -> dict[str, Any]:
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
            "@type": _TYPE + "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "common_tls_context": common,
        }
        if tls.client_ca_file:
            common["validation_context"] = {"trusted_ca": {"filename": tls.client_ca_file}}
            context["require_client_certificate"] = True
        return {"name": "envoy.transport_sockets.tls", "typed_config": context}

    def http_connection_manager(self) -> dict[str, Any]:
        tls = self.runtime.listener.tls
        mtls = tls is not None and bool(tls.client_ca_file)
        filters: list[dict[str, Any]] = []
        if self.bare_backend is None:
            if self.runtime.service.failure_mode_allow:
                filters.append(self.strip_internal_headers())
            filters.append({"name": _EXTPROC_FILTER, "typed_config": self.ext_proc()})
        filters.append(
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": _TYPE + "envoy.extensions.filters.http.router.v3.Router",
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
            "local_reply_config": self.local_reply_config(),
            "access_log": [self.access_log()],
            "route_config": self.route_config(),
            "http_filters": filters,
        }

    def strip_internal_headers(self) -> dict[str, Any]:
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

    def ext_proc(self) -> dict[str, Any]:
        service = self.runtime.service
        return {
            "@type": _EXT_PROC,
            "grpc_service": {"envoy_grpc": {"cluster_name": EXTPROC_CLUSTER}},
            "failure_mode_allow": service.failure_mode_allow,
            "message_timeout": _seconds(service.message_timeout),
            "processing_mode": {
                "request_header_mode": "SEND",
                "request_body_mode": "BUFFERED",
                "request_trailer_mode": "SKIP",
                "response_header_mode": "SEND",
                "response_body_mode": "NONE",
                "response_trailer_mode": "SKIP",
            },
            "allow_mode_override": True,
            # Fallback routes: the exchange hands its route to the per-attempt processor.
            "metadata_options": {"receiving_namespaces": {"untyped": [names.METADATA_NAMESPACE]}},
            # The service rewrites :path and removes Envoy's attempt count before the client
            # sees it; without these rules Envoy silently drops such mutations.
            "mutation_rules": {"allow_all_routing": True, "allow_envoy": True},
        }

    def upstream_ext_proc(self) -> dict[str, Any]:
        config = self.ext_proc()
        config["grpc_service"]["initial_metadata"] = [
            {"key": names.ROLE_METADATA, "value": names.ROLE_UPSTREAM}
        ]
        config["processing_mode"]["response_header_mode"] = "SKIP"
        config["request_attributes"] = [names.HOST_METADATA_ATTRIBUTE]
        config["metadata_options"] = {
            "forwarding_namespaces": {"untyped": [names.METADATA_NAMESPACE]}
        }
        return config

    def local_reply_config(self) -> dict[str, Any]:
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

    def access_log(self) -> dict[str, Any]:
        return {
            "name": "envoy.access_loggers.stdout",
            "typed_config": {
                "@type": _TYPE + "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
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
                            key: f"%FILTER_STATE({_EXTPROC_FILTER}:FIELD:{field})%"
                            for key, field in EXTPROC_LOG_FIELDS.items()
                        },
                    }
                },
            },
        }

    # -- routes -------------------------------------------------------------------------

    def route_config(self) -> dict[str, Any]:
        timeout = _seconds(self.runtime.listener.request_timeout)
        routes: list[dict[str, Any]] = []
        if self.bare_backend is not None:
            cluster = self.runtime.backends[self.bare_backend].cluster
            routes.append(
                {
                    "match": {"prefix": "/"},
                    "route": {"cluster": cluster, "timeout": timeout, "auto_host_rewrite": True},
                }
            )
        else:
            for model in self.runtime.models:
                for route in model.routes:
                    if route.has_fallbacks:
                        routes.append(self.fallback_route(model, route, timeout))
            routes.extend(self.backend_route(b, timeout) for b in self.runtime.backends.values())
            # Reached only when the service did not route the request (fail-open mode).
            routes.append(
                {
                    "name": "unrouted",
                    "match": {"prefix": "/"},
                    "direct_response": {
                        "status": 404,
                        "body": {"inline_string": _UNROUTED.body(Schema.OPENAI).decode()},
                    },
                    "response_headers_to_add": [
                        {
                            "header": {"key": "content-type", "value": "application/json"},
                            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                        }
                    ],
                }
            )
        return {
            "name": "gateway",
            "virtual_hosts": [
                {
                    "name": "gateway",
                    "domains": ["*"],
                    # The per-attempt processor and the response phase read the attempt number.
                    "include_request_attempt_count": True,
                    "include_attempt_count_in_response": True,
                    "routes": routes,
                }
            ],
        }

    def backend_route(self, backend: Backend, timeout: str) -> dict[str, Any]:
        """The route to one backend, chosen by the service. It removes the client's
        credentials once more, after the service has set this backend's own: only the
        headers the service sets for it are left for the service to have replaced."""
        own = {name for name, _ in backend.headers} | {backend.credential_header}
        return {
            "name": backend.cluster,
            "match": {
                "prefix": "/",
                "headers": [
                    {"name": names.ROUTE_HEADER, "string_match": {"exact": backend.cluster}}
                ],
            },
            "route": {"cluster": backend.cluster, "timeout": timeout, "auto_host_rewrite": True},
            "request_headers_to_remove": [
                *names.INTERNAL_REQUEST_HEADERS,
                *names.PROXY_REQUEST_HEADERS,
                *(h for h in self.runtime.client_credential_headers if h not in own),
            ],
        }

    def fallback_route(self, model: Model, route: Route, timeout: str) -> dict[str, Any]:
        retry_on = sorted({c for c in model.retry_on if c in _ENVOY_RETRY_ON})
        statuses = sorted(int(c) for c in model.retry_on if c.isdigit())
        if statuses:
            retry_on.append("retriable-status-codes")
        policy: dict[str, Any] = {
            "retry_on": ",".join(retry_on),
            "num_retries": len(route.attempts) - 1,
            "retry_back_off": {"base_interval": "0.025s", "max_interval": "0.25s"},
        }
        if statuses:
            policy["retriable_status_codes"] = statuses
        return {
            "name": route.cluster,
            "match": {
                "prefix": "/",
                "headers": [{"name": names.ROUTE_HEADER, "string_match": {"exact": route.cluster}}],
            },
            "route": {
                "cluster": route.cluster,
                "timeout": timeout,
                "auto_host_rewrite": True,
                "retry_policy": policy,
            },
            # Matched already; the per-attempt processor strips the proxy headers itself
            # because it needs the attempt count. The client's credentials go before any
            # attempt: the per-attempt processor sets each attempt's own.
            "request_headers_to_remove": [
                *names.INTERNAL_REQUEST_HEADERS,
                *self.runtime.client_credential_headers,
            ],
        }

    # -- clusters -----------------------------------------------------------------------

    def clusters(self) -> list[dict[str, Any]]:
        clusters = [self.backend_cluster(b) for b in self.runtime.backends.values()]
        if self.bare_backend is not None:
            return clusters
        for route in self.runtime.fallback_routes.values():
            clusters.append(self.composite_cluster(route))
        service = self.runtime.service
        # One endpoint per worker; each new stream goes to the one with fewer in flight.
        endpoints = [
            {"endpoint": {"address": _grpc_target(address)}} for address in service.addresses
        ]
        # The service's transport takes this many streams per connection: Envoy opens
        # another connection past them (none is refused), holds as many streams as the
        # service's connections take (its default circuit breakers stop at 1,024 requests
        # in flight, each an ext_proc stream), and closes an idle connection before the
        # service would.
        served = Limits()
        streams = len(endpoints) * served.max_connections * served.max_concurrent_streams
        cluster: dict[str, Any] = {
            "name": EXTPROC_CLUSTER,
            "type": "STATIC",
            "connect_timeout": "1s",
            "typed_extension_protocol_options": _protocol_options(
                {
                    "common_http_protocol_options": {
                        "idle_timeout": _seconds(served.idle_timeout / 2)
                    },
                    "explicit_http_config": {
                        "http2_protocol_options": {
                            "max_concurrent_streams": served.max_concurrent_streams
                        }
                    },
                }
            ),
            "circuit_breakers": {
                "thresholds": [
                    {
                        "max_connections": len(endpoints) * served.max_connections,
                        "max_pending_requests": streams,
                        "max_requests": streams,
                    }
                ]
            },
            "load_assignment": {
                "cluster_name": EXTPROC_CLUSTER,
                "endpoints": [{"lb_endpoints": endpoints}],
            },
        }
        if len(endpoints) > 1:
            cluster["lb_policy"] = "LEAST_REQUEST"
        if service.grpc_tls is not None and service.grpc_tls.envoy_client is not None:
            cluster["transport_socket"] = self.extproc_tls(service.grpc_tls.envoy_client)
        clusters.append(cluster)
        return clusters

    def extproc_tls(self, client: GrpcTlsClient) -> dict[str, Any]:
        """Envoy's side of the ext_proc port's mutual TLS (service.grpc_tls): its client
        certificate, and the service's certificate checked for the configured name."""
        name = client.server_name
        san_type = "URI" if "://" in name else "IP_ADDRESS" if _is_ip(name) else "DNS"
        context: dict[str, Any] = {
            "@type": _TYPE + "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "common_tls_context": {
                "alpn_protocols": ["h2"],
                "tls_certificates": [
                    {
                        "certificate_chain": {"filename": client.cert_file},
                        "private_key": {"filename": client.key_file},
                    }
                ],
                "validation_context": {
                    "trusted_ca": {"filename": client.ca_file},
                    "match_typed_subject_alt_names": [
                        {"san_type": san_type, "matcher": {"exact": name}}
                    ],
                },
            },
        }
        if san_type == "DNS":
            context["sni"] = name
        return {"name": "envoy.transport_sockets.tls", "typed_config": context}

    def backend_cluster(self, backend: Backend) -> dict[str, Any]:
        default_port = 443 if backend.tls else 80
        authority = (
            backend.host if backend.port == default_port else f"{backend.host}:{backend.port}"
        )
        cluster: dict[str, Any] = {
            "name": backend.cluster,
            "type": "STATIC" if _is_ip(backend.host) else "STRICT_DNS",
            "dns_lookup_family": "V4_PREFERRED",
            "connect_timeout": _seconds(backend.connect_timeout),
            "load_assignment": {
                "cluster_name": backend.cluster,
                "endpoints": [
                    {
                        "lb_endpoints": [
                            {
                                # hostname: the Host header sent upstream (auto_host_rewrite).
                                "endpoint": {
                                    "address": _address(backend.host, backend.port),
                                    "hostname": authority,
                                },
                                "metadata": {
                                    "filter_metadata": {
                                        names.METADATA_NAMESPACE: {"backend": backend.name}
                                    }
                                },
                            }
                        ]
                    }
                ],
            },
        }
        if backend.tls:
            cluster["typed_extension_protocol_options"] = _protocol_options(
                {"auto_config": {"http_protocol_options": {}, "http2_protocol_options": {}}}
            )
            cluster["transport_socket"] = {
                "name": "envoy.transport_sockets.tls",
                "typed_config": {
                    "@type": _TYPE + "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                    "sni": backend.sni,
                    "common_tls_context": {
                        "alpn_protocols": ["h2", "http/1.1"],
                        "validation_context": {
                            "trusted_ca": {"filename": backend.ca_file},
                            "match_typed_subject_alt_names": [
                                {"san_type": "DNS", "matcher": {"exact": backend.sni}}
                            ],
                        },
                    },
                },
            }
        else:
            cluster["typed_extension_protocol_options"] = _protocol_options(
                {"explicit_http_config": {"http_protocol_options": {}}}
            )
        return cluster

    def composite_cluster(self, route: Route) -> dict[str, Any]:
        """Attempt N goes to the N-th backend; the upstream ext_proc rewrites each attempt."""
        return {
            "name": route.cluster,
            "connect_timeout": "5s",
            "lb_policy": "CLUSTER_PROVIDED",
            "cluster_type": {
                "name": "envoy.clusters.composite",
                "typed_config": {
                    "@type": _TYPE + "envoy.extensions.clusters.composite.v3.ClusterConfig",
                    "clusters": [{"name": t.backend.cluster} for t in route.attempts],
                },
            },
            "typed_extension_protocol_options": _protocol_options(
                {
                    "explicit_http_config": {"http_protocol_options": {}},
                    "http_filters": [
                        {
                            "name": _EXTPROC_FILTER,
                            "typed_config": self.upstream_ext_proc(),
                        },
                        {
                            "name": "envoy.filters.http.upstream_codec",
                            "typed_config": {
                                "@type": _TYPE
                                + "envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec"
                            },
                        },
                    ],
                }
            ),
        }


def render(runtime: Runtime, *, bare_backend: str | None = None) -> dict[str, Any]:
    return Renderer(runtime, bare_backend=bare_backend).render()


def render_yaml(runtime: Runtime, *, bare_backend: str | None = None) -> str:
    header = "# Rendered by `extproc render-envoy` from the gateway config; do not edit by hand.\n"
    return header + yaml.safe_dump(
        render(runtime, bare_backend=bare_backend), sort_keys=False, width=120
    )
