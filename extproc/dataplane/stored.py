"""`GET` and `DELETE /v1/responses/{id}`, `GET /v1/responses/{id}/input_items`: answers
the gateway keeps are answered from its state; an answer a backend keeps itself is
reached on that backend, for the tenant that made it only (one provider key serves every
tenant: the id alone must not reach another's answer). No I/O: the store's loads and
deletes are effects the exchange returns, their results fed to `StoredRequest.resolve`.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from extproc import names
from extproc.apis import INPUT_ITEMS, RESPONSES_PREFIX, ApiError, Schema
from extproc.config.runtime import Runtime
from extproc.dataplane import conversation
from extproc.dataplane.decisions import (
    Continue,
    Deleted,
    DeleteState,
    Loaded,
    LoadState,
    Result,
    Unavailable,
)
from extproc.dataplane.stages import Arrival, Line
from extproc.dataplane.upstream import backend_headers
from extproc.state.turns import Turn, valid_id

UNAVAILABLE = ApiError(
    503, "Conversation state cannot be read right now; try again.", "conversation_state_unavailable"
)
# What the service answers itself: a status and its JSON payload.
Answer = tuple[int, object]


def parse(line: Line, served: str) -> ApiError | tuple[str, bool, str]:
    """The response id, whether its input items are asked for, and the methods the path
    takes; or the 404 of a path that names no response."""
    rest = served[len(RESPONSES_PREFIX) :]
    items = rest.endswith(INPUT_ITEMS)
    response_id = rest.removesuffix(INPUT_ITEMS)
    if not response_id or "/" in response_id:
        return ApiError(404, f"Unknown request URL: {line.method} {line.path}.", "unknown_url")
    return response_id, items, "GET" if items else "GET, DELETE"


class StoredRequest:
    """One request for a kept answer, from its first load to its reply."""

    def __init__(self, runtime: Runtime, arrival: Arrival, response_id: str, items: bool) -> None:
        self.runtime = runtime
        self.arrival = arrival
        self.response_id = response_id
        self.page = dict(parse_qsl(arrival.query)) if items else None
        self.deleting = arrival.line.method == "DELETE"
        self.forward: Continue | None = None  # a backend's answer, deleted there after here

    def first(self) -> ApiError | LoadState:
        """The answer's record, asked for (every request reads it first: whose it is)."""
        if self.runtime.conversations.disabled or not valid_id(self.response_id):
            return conversation.not_found(self.response_id)
        return LoadState(self.arrival.tenant.name, self.response_id)

    def resolve(self, result: Result) -> ApiError | Answer | Continue | DeleteState:
        """The next step once the store answered: the reply, the request on its way to
        the backend that keeps the answer, or the record's deletion."""
        if isinstance(result, Unavailable):
            return UNAVAILABLE
        if isinstance(result, Deleted):
            if self.forward is not None:
                return self.forward  # the backend's: deleted there too
            if not result.existed:
                return conversation.not_found(self.response_id)
            return 200, conversation.deleted(self.response_id)
        assert isinstance(result, Loaded)
        turn = result.turn
        if not isinstance(turn, Turn):
            return conversation.not_found(self.response_id)
        if turn.native:
            forward = self._to_backend(turn)
            if forward is None:
                return conversation.not_found(self.response_id)
            if not self.deleting:
                return forward
            self.forward = forward
        if self.deleting:
            return DeleteState(self.arrival.tenant.name, self.response_id)
        if self.page is None:
            return 200, turn.response
        listed = conversation.listed(turn, self.page)
        return listed if isinstance(listed, ApiError) else (200, listed)

    def _to_backend(self, turn: Turn) -> Continue | None:
        """The request, as it came, for the backend that keeps the answer (None: the
        config no longer has it)."""
        runtime, arrival = self.runtime, self.arrival
        backend = runtime.backends.get(str(turn.response.get("backend")))
        responses = Schema.OPENAI_RESPONSES
        if backend is None or backend.speaks(responses) is not responses:
            return None
        query = f"?{arrival.query}" if arrival.query else ""
        decision = Continue(clear_route_cache=True)
        if not runtime.external_envoy:
            decision.set_headers.append((names.ROUTE_HEADER, backend.cluster))
        suffix = arrival.served_path.removeprefix("/v1") + query
        decision.set_headers.extend(backend_headers(backend, suffix, ""))
        decision.remove_headers.extend(runtime.client_credential_headers)
        decision.metadata = {"backend": backend.name, "tenant": arrival.tenant.name}
        return decision
