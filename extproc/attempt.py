"""One upstream attempt of a request on a fallback route, with no I/O.

Envoy's composite cluster sends attempt N to the N-th backend of a route, and the
upstream ext_proc filter (which runs once per attempt) calls the service with the
attempt's headers. The first attempt was already prepared by the downstream exchange,
so it only loses the internal headers; a fallback attempt gets its own path, credential,
extra headers and upstream model.
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson

from extproc import names
from extproc.config.runtime import Route, Runtime, Target
from extproc.decisions import Continue, Decision
from extproc.exchange import CLIENT_CREDENTIAL_HEADERS


def _header_names(target: Target) -> set[str]:
    backend = target.backend
    found = {name for name, _ in backend.headers}
    if backend.credential_header:
        found.add(backend.credential_header)
    return found


class Attempt:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.route: Route | None = None
        self.index = 0
        self.upstream_model = ""

    @property
    def target(self) -> Target | None:
        return self.route.attempts[self.index] if self.route else None

    def request_headers(self, headers: Mapping[str, str], host_backend: str | None) -> Decision:
        internal = [*names.INTERNAL_REQUEST_HEADERS, *names.PROXY_REQUEST_HEADERS]
        route = self.runtime.fallback_routes.get(headers.get(names.ROUTE_HEADER, ""))
        if route is None:
            return Continue(remove_headers=internal, skip_request_body=True)
        self.route = route
        attempt = headers.get(names.ATTEMPT_HEADER, "1")
        index = (
            min(int(attempt) - 1, len(route.attempts) - 1)
            if attempt.isdigit() and attempt != "0"
            else 0
        )
        # The composite cluster skips a backend with no available host within the same
        # attempt; the host's metadata says which backend was really chosen.
        if host_backend and route.attempts[index].backend.name != host_backend:
            for later in range(index, len(route.attempts)):
                if route.attempts[later].backend.name == host_backend:
                    index = later
                    break
        self.index = index
        if index == 0:
            return Continue(remove_headers=internal, skip_request_body=True)
        target = route.attempts[index]
        backend = target.backend
        self.upstream_model = target.upstream_model or headers.get(names.MODEL_HEADER, "")
        decision = Continue(remove_headers=internal)
        decision.set_headers.append(
            (":path", backend.base_path + headers.get(names.SUFFIX_HEADER, ""))
        )
        credential = backend.credential_value()
        if credential is not None and backend.credential_header is not None:
            decision.set_headers.append((backend.credential_header, credential))
        decision.set_headers.extend(backend.headers)
        # Whatever an earlier attempt's backend needed must not reach this one.
        stale = set(CLIENT_CREDENTIAL_HEADERS).union(*(_header_names(t) for t in route.attempts))
        stale -= {name for name, _ in decision.set_headers}
        decision.remove_headers.extend(sorted(stale))
        return decision

    def request_body(self, raw: bytes) -> Decision:
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return Continue()
        if not isinstance(body, dict) or not self.upstream_model:
            return Continue()
        body["model"] = self.upstream_model
        new = orjson.dumps(body)
        return Continue(body=new, set_headers=[("content-length", str(len(new)))])
