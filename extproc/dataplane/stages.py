"""What each phase of an exchange established, as immutable records.

An exchange moves through its phases once: the request headers give an `Arrival`, the
request body a `Plan`, the response headers an `Answer`. Each record is complete when it
exists, so a later phase reads fields, never checks for unset ones; an exchange refused
early simply has fewer records. Their fields are `Final`: the type check refuses an
assignment after `__init__`. The `__init__`s are written out because these are built on
every request and the compiled build compiles a written one, where a dataclass's generated
`__init__` (or a named tuple's `__new__`) stays interpreted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from extproc.accounting.usage import Meter, Usage
from extproc.apis import Endpoint, Kind, Schema
from extproc.config.runtime import Backend, Target, Tenant
from extproc.policy.rules import PolicySet
from extproc.routing import Routed

if TYPE_CHECKING:
    from extproc.dataplane.conversation import Memory
    from extproc.dataplane.reader import CountReader, ErrorReader, JsonReader, StreamReader
    from extproc.translate.translation import Translation


@dataclass(slots=True)
class Line:
    """The request line, as the client sent it: known of every exchange."""

    request_id: Final[str]
    method: Final[str]
    path: Final[str]  # without the query
    authority: Final[str]

    def __init__(self, request_id: str, method: str, path: str, authority: str) -> None:
        self.request_id = request_id
        self.method = method
        self.path = path
        self.authority = authority


@dataclass(slots=True)
class Arrival:
    """What the request headers established: which endpoint, for which tenant."""

    line: Final[Line]
    served_path: Final[str]  # the gateway's own path for it (an Azure path's OpenAI one)
    query: Final[str]  # as forwarded: without the client's credentials
    endpoint: Final[Endpoint]
    tenant: Final[Tenant]
    deployment: Final[str | None]  # the model an Azure deployment path names
    cache_read: Final[bool]  # Cache-Control: no-cache asks the provider, then stores the answer
    cache_write: Final[bool]  # no-store: neither read nor store

    def __init__(
        self,
        line: Line,
        served_path: str,
        query: str,
        endpoint: Endpoint,
        tenant: Tenant,
        deployment: str | None,
        cache_read: bool,
        cache_write: bool,
    ) -> None:
        self.line = line
        self.served_path = served_path
        self.query = query
        self.endpoint = endpoint
        self.tenant = tenant
        self.deployment = deployment
        self.cache_read = cache_read
        self.cache_write = cache_write

    @property
    def api(self) -> Schema:
        """The client's API on this endpoint."""
        return self.endpoint.api

    @property
    def path(self) -> str:
        return self.line.path


@dataclass(slots=True)
class Plan:
    """What the request body produced: where it goes and what the gateway does on the way."""

    request: Final[dict[str, Any]]  # the client's request as sent upstream, before translation
    stream: Final[bool]
    routed: Final[Routed]
    model: Final[str]  # the model's name as records, metrics and budgets know it
    first: Final[Target]  # the route's first attempt: where the request is sent
    # Set when the client's API differs from the backend's (on a route of one API).
    translation: Final[Translation | None]
    mixed_schemas: Final[bool]  # a fallback chain across APIs: each attempt translates for itself
    policies: Final[PolicySet]
    client_include_usage: Final[bool]  # the client asked for a stream's usage chunk
    strip_usage: Final[bool]  # the gateway asked for stream usage the client did not
    cache_key: Final[str | None]
    dropped_fields: Final[tuple[str, ...]]  # the client's fields the backend's API has no place for
    memory: Final[Memory | None]  # a Responses request whose conversation the gateway keeps

    def __init__(
        self,
        request: dict[str, Any],
        stream: bool,
        routed: Routed,
        model: str,
        first: Target,
        translation: Translation | None,
        mixed_schemas: bool,
        policies: PolicySet,
        client_include_usage: bool,
        strip_usage: bool,
        cache_key: str | None,
        dropped_fields: tuple[str, ...],
        memory: Memory | None,
    ) -> None:
        self.request = request
        self.stream = stream
        self.routed = routed
        self.model = model
        self.first = first
        self.translation = translation
        self.mixed_schemas = mixed_schemas
        self.policies = policies
        self.client_include_usage = client_include_usage
        self.strip_usage = strip_usage
        self.cache_key = cache_key
        self.dropped_fields = dropped_fields
        self.memory = memory

    def upstream_suffix(self, endpoint: Endpoint) -> str:
        """The endpoint the first backend is asked at, below its base path."""
        translation = self.translation
        if translation is None:
            return endpoint.suffix
        if endpoint.kind is Kind.COUNT_TOKENS and translation.count_suffix is not None:
            return translation.count_suffix
        return translation.suffix


@dataclass(slots=True)
class Answer:
    """What the response headers established: which attempt answered, and how its body
    is read (or not)."""

    status: Final[int]
    attempt: Final[int]  # 1-based, as Envoy counts
    target: Final[Target]  # the route's attempt that answered
    translation: Final[Translation | None]  # of the answering backend's API, if it differs
    reader: Final[JsonReader | StreamReader | ErrorReader | CountReader | None]
    meter: Final[Meter | None]  # the reader's, in the backend's API: usage and completeness
    drift_endpoint: Final[str]  # the endpoint as the schema-drift watch knows it

    def __init__(
        self,
        status: int,
        attempt: int,
        target: Target,
        translation: Translation | None,
        reader: JsonReader | StreamReader | ErrorReader | CountReader | None,
        meter: Meter | None,
        drift_endpoint: str,
    ) -> None:
        self.status = status
        self.attempt = attempt
        self.target = target
        self.translation = translation
        self.reader = reader
        self.meter = meter
        self.drift_endpoint = drift_endpoint

    @property
    def backend(self) -> Backend:
        return self.target.backend


@dataclass(slots=True)
class Outcome:
    """The exchange's usage and cost, fixed once: reported where the provider reported,
    estimated elsewhere."""

    usage: Final[Usage]
    cost: Final[float | None]
    ended_at: Final[float]

    def __init__(self, usage: Usage, cost: float | None, ended_at: float) -> None:
        self.usage = usage
        self.cost = cost
        self.ended_at = ended_at
