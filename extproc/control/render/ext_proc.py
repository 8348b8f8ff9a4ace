"""The ext_proc filter's config: on the listener (the exchange), and in each fallback
route's composite cluster (the per-attempt processor)."""

from __future__ import annotations

from typing import Any

from extproc import names
from extproc.config.settings import Service
from extproc.control.render.values import TYPE, seconds

EXTPROC_CLUSTER = "extproc"
EXT_PROC_FILTER = "envoy.filters.http.ext_proc"
_EXT_PROC = TYPE + "envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor"


def ext_proc_filter(service: Service) -> dict[str, Any]:
    return {
        "@type": _EXT_PROC,
        "grpc_service": {"envoy_grpc": {"cluster_name": EXTPROC_CLUSTER}},
        "failure_mode_allow": service.failure_mode_allow,
        "message_timeout": seconds(service.message_timeout),
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


def upstream_ext_proc_filter(service: Service) -> dict[str, Any]:
    config = ext_proc_filter(service)
    config["grpc_service"]["initial_metadata"] = [
        {"key": names.ROLE_METADATA, "value": names.ROLE_UPSTREAM}
    ]
    config["processing_mode"]["response_header_mode"] = "SKIP"
    config["request_attributes"] = [names.HOST_METADATA_ATTRIBUTE]
    config["metadata_options"] = {"forwarding_namespaces": {"untyped": [names.METADATA_NAMESPACE]}}
    return config
