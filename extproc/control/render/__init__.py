"""The Envoy bootstrap, rendered from the gateway config: one source of truth for both."""

from __future__ import annotations

from typing import Any

import yaml

from extproc.config.runtime import Runtime
from extproc.control.render.clusters import clusters
from extproc.control.render.listener import gateway_listener, readiness_listener
from extproc.control.render.values import TYPE, address

_CONNECTIONS_MONITOR = (
    "envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig"
)


def render(runtime: Runtime, *, bare_backend: str | None = None) -> dict[str, Any]:
    """bare_backend: route everything to that backend with no ext_proc (benchmarks only)."""
    admin = runtime.admin
    listeners = [gateway_listener(runtime, bare_backend)]
    if admin.readiness_address:
        listeners.append(readiness_listener(admin))
    return {
        "admin": {"address": address(admin.address, admin.port)},
        "overload_manager": {
            "resource_monitors": [
                {
                    "name": "envoy.resource_monitors.global_downstream_max_connections",
                    "typed_config": {
                        "@type": TYPE + _CONNECTIONS_MONITOR,
                        "max_active_downstream_connections": 50000,
                    },
                }
            ]
        },
        "static_resources": {"listeners": listeners, "clusters": clusters(runtime, bare_backend)},
    }


def render_yaml(runtime: Runtime, *, bare_backend: str | None = None) -> str:
    header = "# Rendered by `extproc render-envoy` from the gateway config; do not edit by hand.\n"
    return header + yaml.safe_dump(
        render(runtime, bare_backend=bare_backend), sort_keys=False, width=120
    )
