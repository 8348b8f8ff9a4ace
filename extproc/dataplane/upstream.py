"""The request as a backend gets it: the route, the path, the credential and the body.

The exchange sends every request to its route's first attempt; on a fallback route the
per-attempt processor (attempt.py) writes each later attempt with the same pieces.
"""

from __future__ import annotations

from typing import Any

import orjson

from extproc import names
from extproc.config.runtime import Backend, Runtime
from extproc.dataplane.decisions import Continue
from extproc.dataplane.stages import Arrival, Plan


def backend_headers(backend: Backend, suffix: str, upstream_model: str) -> list[tuple[str, str]]:
    """What sends a request to `backend`: its path for the endpoint `suffix`, its
    credential, the extra headers it is configured with."""
    headers = [(":path", backend.path(suffix, upstream_model))]
    credential = backend.credential_value()
    if credential is not None and backend.credential_header is not None:
        headers.append((backend.credential_header, credential))
    headers.extend(backend.headers)
    return headers


def first_attempt(
    runtime: Runtime,
    arrival: Arrival,
    plan: Plan,
    body: dict[str, Any],
    changed: bool,
    reads_response: bool,
) -> Continue:
    """Rewrite the request for the route's first backend and route it; `changed`: the
    body differs from the client's and is sent anew."""
    routed = plan.routed
    backend = plan.first.backend
    query = arrival.query
    suffix = plan.upstream_suffix(arrival.endpoint) + (f"?{query}" if query else "")
    decision = Continue(clear_route_cache=True)
    if body["model"] != routed.upstream_model:
        body["model"] = routed.upstream_model
        changed = True
    if changed:
        decision.body = orjson.dumps(body)
    headers = decision.set_headers
    if not runtime.external_envoy:
        # The route table picks the cluster by it; another Envoy would pass it upstream.
        headers.append((names.ROUTE_HEADER, routed.route.cluster))
    headers.extend(backend_headers(backend, suffix, routed.upstream_model))
    decision.metadata = _metadata(arrival, plan, suffix)
    if decision.body is not None:
        headers.append(("content-length", str(len(decision.body))))
    # The client's credentials never reach a provider. Envoy applies removals before
    # sets, so a header the backend needs under the same name is removed (every value
    # the client sent) and then set once, to the provider's key.
    decision.remove_headers.extend(runtime.client_credential_headers)
    if plan.translation is not None:
        # The client SDK's protocol headers mean nothing to another API's backend.
        set_names = {name for name, _ in headers}
        protocol = plan.translation.client_headers
        decision.remove_headers.extend(h for h in protocol if h not in set_names)
    if reads_response:
        # The gateway will read the response: ask for it uncompressed.
        decision.remove_headers.append("accept-encoding")
    return decision


def _metadata(arrival: Arrival, plan: Plan, suffix: str) -> dict[str, str | int | float]:
    """Who and what, for Envoy's access log even when no usage follows (an error, a
    reset); the fallback route's attempts also read their path suffix from here."""
    routed = plan.routed
    metadata: dict[str, str | int | float] = {
        names.METADATA_MODEL: plan.model,
        "backend": plan.first.backend.name,
        "tenant": arrival.tenant.name,
    }
    if routed.route.has_fallbacks:
        metadata[names.METADATA_ROUTE] = routed.route.cluster
        metadata[names.METADATA_SUFFIX] = suffix
        if plan.mixed_schemas:
            metadata[names.METADATA_API] = arrival.api.value
            metadata[names.METADATA_QUERY] = arrival.query
        if plan.strip_usage:
            metadata[names.METADATA_ADDED_STREAM_OPTIONS] = "1"
    return metadata
