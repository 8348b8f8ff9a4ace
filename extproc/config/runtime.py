"""The compiled configuration: everything the hot path needs, precomputed at load time."""

from __future__ import annotations

import bisect
import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import quote

# Schema is the APIs' (apis/); translate/ imports it from here too.
from extproc.apis import Schema as Schema
from extproc.config import settings as st
from extproc.glob import Glob
from extproc.policy.rules import EMPTY, Policy, PolicySet
from extproc.tools.access import NO_ACCESS, ToolAccess
from extproc.tools.pins import Pinning

if TYPE_CHECKING:
    from extproc.accounting.budgets import Budget
    from extproc.accounting.prices import PriceTable


class Secret:
    """A credential value that never shows itself in logs, reprs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret(***)"

    def __str__(self) -> str:
        return "Secret(***)"


@dataclass(frozen=True, slots=True, kw_only=True)
class Upstream:
    """A server the gateway sends requests to, as Envoy reaches it: its cluster, address,
    TLS, credential and extra headers (an LLM backend or an MCP server)."""

    name: str
    cluster: str
    scheme: str
    host: str
    port: int
    base_path: str
    credential_header: str | None
    credential: Secret | None
    headers: tuple[tuple[str, str], ...]
    sni: str
    ca_file: str
    connect_timeout: float
    # Where the credential is read from, when a file (watched for rotation).
    credential_file: str | None = None

    @property
    def tls(self) -> bool:
        return self.scheme == "https"

    def credential_value(self) -> str | None:
        if self.credential is None or self.credential_header is None:
            return None
        key = self.credential.reveal()
        return f"Bearer {key}" if self.credential_header == "authorization" else key


@dataclass(frozen=True, slots=True, kw_only=True)
class Backend(Upstream):
    schema: Schema
    omit_stream_options: bool = False
    default_max_tokens: int = 4096
    # Azure OpenAI's deployment API (the schema is then OPENAI): its api-version.
    azure_api_version: str | None = None
    # An OPENAI backend that also takes the Responses API as it is (OpenAI's own).
    responses_api: bool = False
    # gen_ai.provider.name of the OpenTelemetry conventions (known at load).
    provider: str = field(init=False)

    def __post_init__(self) -> None:
        provider = "azure.ai.openai" if self.azure_api_version else self.schema.value
        object.__setattr__(self, "provider", provider)

    def speaks(self, api: Schema) -> Schema:
        """The API this backend takes a request of the client's `api` in."""
        if api is Schema.OPENAI_RESPONSES and self.responses_api:
            return api
        return self.schema

    def path(self, suffix: str, model: str) -> str:
        """The request path for an endpoint suffix ("/chat/completions?x=1") and the
        upstream model (Azure addresses deployments by path)."""
        if self.azure_api_version is None:
            return self.base_path + suffix
        endpoint, _, query = suffix.partition("?")
        version = f"api-version={quote(self.azure_api_version)}"
        query = f"{query}&{version}" if query else version
        return f"{self.base_path}/deployments/{quote(model, safe='')}{endpoint}?{query}"


@dataclass(frozen=True, slots=True, kw_only=True)
class McpServer(Upstream):
    """An MCP server the gateway fronts (Streamable HTTP), reached at its URL's path."""

    timeout: float  # a POST's whole answer
    stream_idle_timeout: float  # a GET stream with nothing sent
    tool_prefix: str  # before its names in the virtual server
    pins: dict[str, str]  # tool name -> accepted definition digest
    pinning: Pinning


@dataclass(frozen=True, slots=True)
class Target:
    backend: Backend
    upstream_model: str  # "" means: the model the client asked for


@dataclass(frozen=True, slots=True)
class Route:
    """One weighted choice of a model: its first target, then fallbacks in order."""

    attempts: tuple[Target, ...]
    # Envoy cluster the request is routed to: the backend's own cluster, or a composite
    # cluster that sends attempt N to attempts[N-1]'s backend.
    cluster: str
    # The APIs its backends take a client of each API in: whether a request on it
    # translates, known at load.
    _schemas: dict[Schema, frozenset[Schema]] = field(init=False)

    def __post_init__(self) -> None:
        speak = {api: frozenset(t.backend.speaks(api) for t in self.attempts) for api in Schema}
        object.__setattr__(self, "_schemas", speak)

    def schemas(self, api: Schema) -> frozenset[Schema]:
        """The APIs a request of the client's `api` leaves in, over the route's attempts."""
        return self._schemas[api]

    @property
    def has_fallbacks(self) -> bool:
        return len(self.attempts) > 1


@dataclass(frozen=True, slots=True)
class Deprecation:
    deprecated_at: dt.datetime | None
    sunset: dt.datetime | None
    replacement: str
    reroute: bool
    # Header values precomputed at load: they are the same for every response.
    response_headers: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Model:
    name: str
    aliases: tuple[str, ...]
    routes: tuple[Route, ...]
    cumulative_weights: tuple[int, ...]
    deprecation: Deprecation | None
    owned_by: str
    retry_on: tuple[str, ...]
    is_pattern: bool
    policies: tuple[Policy, ...] = ()
    cache: st.CachePolicy | None = None

    def pick(self, roll: float) -> Route:
        """The route for a uniform random roll in [0, 1)."""
        if len(self.routes) == 1:
            return self.routes[0]
        point = roll * self.cumulative_weights[-1]
        return self.routes[bisect.bisect_right(self.cumulative_weights, point)]


@dataclass(frozen=True, slots=True)
class Tenant:
    name: str
    model_globs: tuple[Glob, ...]
    policies: tuple[Policy, ...] = ()
    budgets: tuple[Budget, ...] = ()
    cache: st.CachePolicy | None = None  # None: the model's
    mcp: ToolAccess = NO_ACCESS  # the MCP servers and tools it may use

    def allows(self, model: str) -> bool:
        return not self.model_globs or any(g.match(model) for g in self.model_globs)


@dataclass(slots=True)
class Runtime:
    """What the service reads: the config compiled (defaults filled, names resolved)."""

    listener: st.Listener
    service: st.Service
    admin: st.Admin
    store: st.BudgetStore
    cache: st.Cache
    conversations: st.ConversationSettings
    capture: st.Capture
    schema_drift: st.SchemaDrift
    telemetry: st.Telemetry
    backends: dict[str, Backend]
    models: list[Model]
    exact_models: dict[str, Model]
    pattern_models: list[tuple[Glob, Model]]
    tenants: dict[str, Tenant]
    tenants_by_key_digest: dict[str, Tenant]
    tenants_by_spiffe_id: dict[str, Tenant]
    anonymous_tenant: Tenant | None
    max_request_bytes: int
    mcp: st.McpSettings
    mcp_servers: dict[str, McpServer] = field(default_factory=dict)
    fallback_routes: dict[str, Route] = field(default_factory=dict)
    loaded_at: int = 0
    policies: dict[str, Policy] = field(default_factory=dict)
    prices: PriceTable | None = None
    # Read responses for usage (accounting.skip_usage turns it off).
    read_usage: bool = True
    # Served by an Envoy configured elsewhere (service.external_envoy): it routes by host.
    external_envoy: bool = False
    # Output tokens a request without max_tokens reserves against its budgets.
    reserved_output_tokens: int = 4096
    # Model names that may appear as metric label values (the config's, never a client's).
    metric_models: frozenset[str] = frozenset()
    # The client's credentials, removed from every upstream request (auth.*), lower case.
    client_credential_headers: tuple[str, ...] = ()
    client_credential_query_params: frozenset[str] = frozenset()
    # One merged set per (tenant, model) pair, built on first use; bounded by the config.
    _policy_sets: dict[tuple[str, str], PolicySet] = field(default_factory=dict)

    def policy_set(self, tenant: Tenant, model: Model) -> PolicySet:
        key = (tenant.name, model.name)
        found = self._policy_sets.get(key)
        if found is None:
            merged = tenant.policies + tuple(p for p in model.policies if p not in tenant.policies)
            found = PolicySet(merged) if merged else EMPTY
            self._policy_sets[key] = found
        return found

    def tool_policies(self, tenant: Tenant) -> PolicySet:
        """The tenant's policies, for its MCP traffic (no model's apply there)."""
        key = (tenant.name, "")
        found = self._policy_sets.get(key)
        if found is None:
            found = PolicySet(tenant.policies) if tenant.policies else EMPTY
            self._policy_sets[key] = found
        return found

    def find_model(self, name: str) -> Model | None:
        model = self.exact_models.get(name)
        if model is not None:
            return model
        for glob, candidate in self.pattern_models:
            if glob.match(name):
                return candidate
        return None
