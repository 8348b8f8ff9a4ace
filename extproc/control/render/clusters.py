"""The clusters: one per backend (TLS origination), a composite cluster per fallback chain,
and the ext_proc service's (one endpoint per worker, mutual TLS when configured)."""

from __future__ import annotations

import ipaddress
from typing import Any

from extproc import names
from extproc.config.runtime import Route, Runtime, Upstream
from extproc.config.settings import GrpcTlsClient, Service
from extproc.control.render.ext_proc import (
    EXT_PROC_FILTER,
    EXTPROC_CLUSTER,
    upstream_ext_proc_filter,
)
from extproc.control.render.values import TYPE, address, seconds
from extproc.transport.limits import Limits

_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _protocol_options(body: dict[str, Any]) -> dict[str, Any]:
    return {_PROTOCOL_OPTIONS: {"@type": TYPE + _PROTOCOL_OPTIONS, **body}}


def _grpc_target(target: str) -> dict[str, Any]:
    if target.startswith("unix://"):
        return {"pipe": {"path": target[len("unix://") :]}}
    host, _, port = target.rpartition(":")
    return address(host.strip("[]"), int(port))


def clusters(runtime: Runtime, bare_backend: str | None) -> list[dict[str, Any]]:
    service = runtime.service
    # One endpoint per worker; each new stream goes to the one with fewer in flight.
    endpoints = [{"endpoint": {"address": _grpc_target(a)}} for a in service.addresses]
    # The service's transport takes this many streams per connection: Envoy opens
    # another connection past them (none is refused), holds as many streams as the
    # service's connections take (its default circuit breakers stop at 1,024 requests
    # in flight, each an ext_proc stream), and closes an idle connection before the
    # service would.
    served = Limits()
    streams = len(endpoints) * served.max_connections * served.max_concurrent_streams
    built = [backend_cluster(b, streams) for b in runtime.backends.values()]
    if bare_backend is not None:
        return built
    built.extend(backend_cluster(s, streams) for s in runtime.mcp_servers.values())
    for route in runtime.fallback_routes.values():
        built.append(composite_cluster(route, runtime.service))
    cluster: dict[str, Any] = {
        "name": EXTPROC_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": _protocol_options(
            {
                "common_http_protocol_options": {"idle_timeout": seconds(served.idle_timeout / 2)},
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
        cluster["transport_socket"] = extproc_tls(service.grpc_tls.envoy_client)
    built.append(cluster)
    return built


def extproc_tls(client: GrpcTlsClient) -> dict[str, Any]:
    """Envoy's side of the ext_proc port's mutual TLS (service.grpc_tls): its client
    certificate, and the service's certificate checked for the configured name."""
    name = client.server_name
    san_type = "URI" if "://" in name else "IP_ADDRESS" if _is_ip(name) else "DNS"
    context: dict[str, Any] = {
        "@type": TYPE + "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
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


def backend_cluster(backend: Upstream, in_flight: int) -> dict[str, Any]:
    """A provider's (or MCP server's) cluster. Its circuit breakers take `in_flight`, what
    the ext_proc cluster takes streams (a request whose answer the service reads holds one
    for its whole life): Envoy's defaults (1,024 requests, or HTTP/1.1 connections) would
    refuse long streams to one provider with a 503 while the service still has room."""
    default_port = 443 if backend.tls else 80
    authority = backend.host if backend.port == default_port else f"{backend.host}:{backend.port}"
    cluster: dict[str, Any] = {
        "name": backend.cluster,
        "type": "STATIC" if _is_ip(backend.host) else "STRICT_DNS",
        "dns_lookup_family": "V4_PREFERRED",
        "connect_timeout": seconds(backend.connect_timeout),
        "circuit_breakers": {
            "thresholds": [
                {
                    "max_connections": in_flight,
                    "max_pending_requests": in_flight,
                    "max_requests": in_flight,
                }
            ]
        },
        "load_assignment": {
            "cluster_name": backend.cluster,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {
                            # hostname: the Host header sent upstream (auto_host_rewrite).
                            "endpoint": {
                                "address": address(backend.host, backend.port),
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
                "@type": TYPE + "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
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


def composite_cluster(route: Route, service: Service) -> dict[str, Any]:
    """Attempt N goes to the N-th backend; the upstream ext_proc rewrites each attempt."""
    return {
        "name": route.cluster,
        "connect_timeout": "5s",
        "lb_policy": "CLUSTER_PROVIDED",
        "cluster_type": {
            "name": "envoy.clusters.composite",
            "typed_config": {
                "@type": TYPE + "envoy.extensions.clusters.composite.v3.ClusterConfig",
                "clusters": [{"name": t.backend.cluster} for t in route.attempts],
            },
        },
        "typed_extension_protocol_options": _protocol_options(
            {
                "explicit_http_config": {"http_protocol_options": {}},
                "http_filters": [
                    {
                        "name": EXT_PROC_FILTER,
                        "typed_config": upstream_ext_proc_filter(service),
                    },
                    {
                        "name": "envoy.filters.http.upstream_codec",
                        "typed_config": {
                            "@type": TYPE
                            + "envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec"
                        },
                    },
                ],
            }
        ),
    }
