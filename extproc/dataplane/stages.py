"""What each phase of an exchange established, as immutable records.

An exchange moves through its phases once: the request headers give an `Arrival`, the
request body a `Plan`, the response headers an `Answer`. Each record is complete when it
exists, so a later phase reads fields, never checks for unset ones; an exchange refused
early simply has fewer records. Named tuples rather than frozen dataclasses: as immutable,
and several times cheaper to build on every request (docs: the exchange as stages); the
data path builds them positionally, which costs half what keywords do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

from extproc.accounting.usage import Meter, Usage
from extproc.apis import Endpoint, Kind, Schema
from extproc.config.runtime import Backend, Target, Tenant
from extproc.policy.rules import PolicySet
from extproc.routing import Routed

if TYPE_CHECKING:
    from extproc.dataplane.conversation import Memory
    from extproc.dataplane.reader import CountReader, ErrorReader, JsonReader, StreamReader
    from extproc.translate.translation import Translation


class Line(NamedTuple):
    """The request line, as the client sent it: known of every exchange."""

    request_id: str
    method: str
    path: str  # without the query
    authority: str


class Arrival(NamedTuple):
    """What the request headers established: which endpoint, for which tenant."""

    line: Line
    served_path: str  # the gateway's own path for it (an Azure path's OpenAI one)
    query: str  # as forwarded: without the client's credentials
    endpoint: Endpoint
    tenant: Tenant
    deployment: str | None  # the model an Azure deployment path names
    cache_read: bool  # Cache-Control: no-cache asks the provider, then stores the answer
    cache_write: bool  # no-store: neither read nor store

    @property
    def api(self) -> Schema:
        """The client's API on this endpoint."""
        return self.endpoint.api

    @property
    def path(self) -> str:
        return self.line.path


class Plan(NamedTuple):
    """What the request body produced: where it goes and what the gateway does on the way."""

    request: dict[str, Any]  # the client's request as sent upstream, before translation
    stream: bool
    routed: Routed
    model: str  # the model's name as records, metrics and budgets know it
    first: Target  # the route's first attempt: where the request is sent
    # Set when the client's API differs from the backend's (on a route of one API).
    translation: Translation | None
    mixed_schemas: bool  # a fallback chain across APIs: each attempt translates for itself
    policies: PolicySet
    client_include_usage: bool  # the client asked for a stream's usage chunk
    strip_usage: bool  # the gateway asked for stream usage the client did not
    cache_key: str | None
    dropped_fields: tuple[str, ...]  # the client's fields the backend's API has no place for
    memory: Memory | None  # a Responses request whose conversation the gateway keeps

    def upstream_suffix(self, endpoint: Endpoint) -> str:
        """The endpoint the first backend is asked at, below its base path."""
        translation = self.translation
        if translation is None:
            return endpoint.suffix
        if endpoint.kind is Kind.COUNT_TOKENS and translation.count_suffix is not None:
            return translation.count_suffix
        return translation.suffix


class Answer(NamedTuple):
    """What the response headers established: which attempt answered, and how its body
    is read (or not)."""

    status: int
    attempt: int  # 1-based, as Envoy counts
    target: Target  # the route's attempt that answered
    translation: Translation | None  # of the answering backend's API, if it differs
    reader: JsonReader | StreamReader | ErrorReader | CountReader | None
    meter: Meter | None  # the reader's, in the backend's API: usage and completeness
    drift_endpoint: str  # the endpoint as the schema-drift watch knows it

    @property
    def backend(self) -> Backend:
        return self.target.backend


class Outcome(NamedTuple):
    """The exchange's usage and cost, fixed once: reported where the provider reported,
    estimated elsewhere."""

    usage: Usage
    cost: float | None
    ended_at: float
