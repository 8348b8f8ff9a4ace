"""The route table: a route per backend and per fallback chain, picked by the routing
header the service sets, and the unrouted reply."""

from __future__ import annotations

from typing import Any

from extproc import names
from extproc.apis import ApiError, Schema
from extproc.config.runtime import Backend, McpServer, Model, Route, Runtime
from extproc.control.render.values import seconds

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


def route_config(runtime: Runtime, bare_backend: str | None) -> dict[str, Any]:
    timeout = seconds(runtime.listener.request_timeout)
    routes: list[dict[str, Any]] = []
    if bare_backend is not None:
        cluster = runtime.backends[bare_backend].cluster
        routes.append(
            {
                "match": {"prefix": "/"},
                "route": {"cluster": cluster, "timeout": timeout, "auto_host_rewrite": True},
            }
        )
    else:
        for model in runtime.models:
            for route in model.routes:
                if route.has_fallbacks:
                    routes.append(fallback_route(runtime, model, route, timeout))
        routes.extend(backend_route(runtime, b, timeout) for b in runtime.backends.values())
        for server in runtime.mcp_servers.values():
            routes.extend(mcp_routes(runtime, server))
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


def backend_route(runtime: Runtime, backend: Backend, timeout: str) -> dict[str, Any]:
    """The route to one backend, chosen by the service. It removes the client's
    credentials once more, after the service has set this backend's own: only the
    headers the service sets for it are left for the service to have replaced."""
    own = {name for name, _ in backend.headers} | {backend.credential_header}
    return {
        "name": backend.cluster,
        "match": {
            "prefix": "/",
            "headers": [{"name": names.ROUTE_HEADER, "string_match": {"exact": backend.cluster}}],
        },
        "route": {"cluster": backend.cluster, "timeout": timeout, "auto_host_rewrite": True},
        "request_headers_to_remove": [
            *names.INTERNAL_REQUEST_HEADERS,
            *names.PROXY_REQUEST_HEADERS,
            *(h for h in runtime.client_credential_headers if h not in own),
        ],
    }


def mcp_routes(runtime: Runtime, server: McpServer) -> list[dict[str, Any]]:
    """The routes to one MCP server, chosen by the service as a backend's are: its GET
    stream (the server's own messages) may stay open as long as it is not idle; any
    other request's answer, JSON or an SSE stream, has the server's timeout."""
    own = {name for name, _ in server.headers} | {server.credential_header}
    picked = {"name": names.ROUTE_HEADER, "string_match": {"exact": server.cluster}}
    removed = [
        *names.INTERNAL_REQUEST_HEADERS,
        *names.PROXY_REQUEST_HEADERS,
        *(h for h in runtime.client_credential_headers if h not in own),
    ]
    stream = {
        "name": f"{server.cluster}.stream",
        "match": {
            "prefix": "/",
            "headers": [picked, {"name": ":method", "string_match": {"exact": "GET"}}],
        },
        "route": {
            "cluster": server.cluster,
            "timeout": "0s",
            "idle_timeout": seconds(server.stream_idle_timeout),
            "auto_host_rewrite": True,
        },
        "request_headers_to_remove": removed,
    }
    calls = {
        "name": server.cluster,
        "match": {"prefix": "/", "headers": [picked]},
        "route": {
            "cluster": server.cluster,
            "timeout": seconds(server.timeout),
            "auto_host_rewrite": True,
        },
        "request_headers_to_remove": removed,
    }
    return [stream, calls]


def fallback_route(runtime: Runtime, model: Model, route: Route, timeout: str) -> dict[str, Any]:
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
            *runtime.client_credential_headers,
        ],
    }
