"""One upstream attempt of a request on a fallback route, with no I/O.

Envoy's composite cluster sends attempt N to the N-th backend of a route, and the
upstream ext_proc filter (which runs once per attempt) calls the service with the
attempt's headers and the exchange's dynamic metadata. Upstream filters share one
request header map across attempts, so every attempt is written in full: its path,
credential, extra headers and upstream model, with whatever an earlier attempt's
backend needed removed.
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson

from extproc import names
from extproc.apis import Schema
from extproc.config.runtime import Route, Runtime, Target
from extproc.dataplane.decisions import Continue, Decision
from extproc.dataplane.upstream import backend_headers
from extproc.digits import strict_int
from extproc.translate.hub import Untranslatable
from extproc.translate.translation import Translation


def _header_names(target: Target) -> set[str]:
    backend = target.backend
    found = {name for name, _ in backend.headers}
    if backend.credential_header:
        found.add(backend.credential_header)
    return found


def attempt_index(route: Route, attempt_header: str | None, host_backend: str | None) -> int:
    """Which of the route's attempts this is: the chosen host says which backend, the
    attempt count tells apart a backend that appears twice in the chain."""
    counted = (strict_int(attempt_header or "") or 1) - 1
    counted = min(max(counted, 0), len(route.attempts) - 1)
    if host_backend is None or route.attempts[counted].backend.name == host_backend:
        return counted
    matches = [i for i, t in enumerate(route.attempts) if t.backend.name == host_backend]
    later = [i for i in matches if i >= counted]
    return (later or matches or [counted])[0]


class Attempt:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.route: Route | None = None
        self.index = 0
        self.upstream_model = ""
        self.drop_stream_options = False
        self.translation: Translation | None = None

    @property
    def target(self) -> Target | None:
        return self.route.attempts[self.index] if self.route else None

    def request_headers(
        self, headers: Mapping[str, str], metadata: Mapping[str, str], host_backend: str | None
    ) -> Decision:
        proxy_headers = list(names.PROXY_REQUEST_HEADERS)
        route = self.runtime.fallback_routes.get(metadata.get(names.METADATA_ROUTE, ""))
        if route is None:
            return Continue(remove_headers=proxy_headers, skip_request_body=True)
        self.route = route
        self.index = attempt_index(route, headers.get(names.ATTEMPT_HEADER), host_backend)
        target = route.attempts[self.index]
        backend = target.backend
        self.upstream_model = target.upstream_model or metadata.get(names.METADATA_MODEL, "")
        self.drop_stream_options = backend.omit_stream_options and bool(
            metadata.get(names.METADATA_ADDED_STREAM_OPTIONS)
        )
        decision = Continue(remove_headers=proxy_headers)
        suffix = metadata.get(names.METADATA_SUFFIX, "")
        client = metadata.get(names.METADATA_API)
        api = Schema(client) if client is not None else None
        if api is not None and (spoken := backend.speaks(api)) is not api:
            # The body is in the client's API; this backend speaks another one.
            self.translation = Translation(api, spoken)
            query = metadata.get(names.METADATA_QUERY, "")
            suffix = self.translation.suffix + (f"?{query}" if query else "")
        decision.set_headers.extend(backend_headers(backend, suffix, self.upstream_model))
        # Envoy applies removals before sets: every value of the client's credentials and of
        # what an earlier attempt's backend needed goes, then this attempt's are set once.
        stale = set(self.runtime.client_credential_headers).union(
            *(_header_names(t) for t in route.attempts)
        )
        decision.remove_headers.extend(sorted(stale))
        return decision

    def request_body(self, raw: bytes) -> Decision:
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return Continue()
        if not isinstance(body, dict):
            return Continue()
        if self.translation is not None and self.target is not None:
            try:
                translated, _ = self.translation.request(
                    body, self.upstream_model, self.target.backend.default_max_tokens
                )
            except Untranslatable:
                # The exchange checked the client's request already; what this backend
                # cannot take goes as it is, and its error reaches the client translated.
                return Continue()
            new = orjson.dumps(translated)
            return Continue(body=new, set_headers=[("content-length", str(len(new)))])
        changed = False
        if self.upstream_model and body.get("model") != self.upstream_model:
            body["model"] = self.upstream_model
            changed = True
        if self.drop_stream_options and "stream_options" in body:
            del body["stream_options"]  # the gateway's, not the client's: see exchange.py
            changed = True
        if not changed:
            return Continue()
        new = orjson.dumps(body)
        return Continue(body=new, set_headers=[("content-length", str(len(new)))])
