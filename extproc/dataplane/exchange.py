"""One HTTP exchange through the gateway as a state machine, with no I/O.

The gRPC handler feeds it the decoded phases (request headers, request body, response
headers) and turns each returned decision into a ProcessingResponse. Everything here is
plain data in, plain data out, so every rule is testable without Envoy or gRPC.
"""

from __future__ import annotations

import datetime as dt
import random
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import unquote

import orjson

from extproc import cache, names
from extproc.accounting.budgets import NANOS, Charge, Reservation, plan
from extproc.accounting.prices import Price
from extproc.accounting.usage import Meter, Usage, prompt_bound, prompt_estimate
from extproc.apis import (
    ENDPOINTS,
    MODELS_PREFIX,
    ApiError,
    Endpoint,
    Kind,
    Schema,
    api_for_path,
    azure,
)
from extproc.apis.checks import json_type
from extproc.apis.validation import validate
from extproc.capture import Sampler, truncated
from extproc.config.runtime import Backend, Runtime, Tenant
from extproc.dataplane.decisions import Continue, Decision, Lookup, Reply, Reserve
from extproc.dataplane.reader import ErrorReader, JsonReader, StreamReader
from extproc.digits import strict_int
from extproc.drift import DriftMonitor
from extproc.identity import identify, without_params
from extproc.policy.engine import (
    Decisions,
    Redactions,
    body_size_error,
    evaluate_request,
    response_needs,
)
from extproc.policy.filters import json_filter, media_type, payload_of, stream_filter
from extproc.policy.rules import EMPTY
from extproc.routing import (
    Routed,
    anthropic_model,
    canonical_name,
    listing,
    model_object,
    resolve,
)
from extproc.sse import Parser
from extproc.telemetry.observation import Observation
from extproc.translate.hub import Untranslatable
from extproc.translate.translation import Translation, translatable

JSON_HEADERS = [("content-type", "application/json")]
_OPERATIONS = {
    Kind.CHAT: "chat",
    Kind.MESSAGES: "chat",
    Kind.EMBEDDINGS: "embeddings",
    Kind.COMPLETIONS: "text_completion",
}
OTHER = "_OTHER"
# Endpoints whose responses carry token usage.
METERED = frozenset({Kind.CHAT, Kind.MESSAGES, Kind.EMBEDDINGS, Kind.COMPLETIONS})
# Endpoints whose streams report usage only when `stream_options.include_usage` is set.
_STREAM_OPTIONS = frozenset({Kind.CHAT, Kind.COMPLETIONS})


def requested_output_tokens(kind: Kind, body: dict[str, Any]) -> int | None:
    """The completion length the request caps itself at, if it sets one."""
    if kind is Kind.EMBEDDINGS:
        return 0
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return None


def _host_of(authority: str) -> str:
    """The host of an :authority value ("host", "host:443", "[::1]:443")."""
    if authority.startswith("["):
        return authority[1 : authority.find("]")]
    host, sep, port = authority.rpartition(":")
    return host if sep and strict_int(port, 65535) is not None else authority


class Exchange:
    """One client request and its response, as seen through the ext_proc phases."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        clock: Callable[[], float] = time.time,
        roll: Callable[[], float] = random.random,
        drift: DriftMonitor | None = None,
        capture: Sampler | None = None,
    ) -> None:
        self.runtime = runtime
        self.authority = ""
        self.sampler = capture  # traffic capture's sampler, shared by the process
        self.sent_body: bytes | None = None  # set when this exchange is captured
        self.cache_key: str | None = None
        self.cache_value: bytes | None = None  # the answer to store under cache_key
        self.cached = False  # answered from the cache
        self.cache_read = self.cache_write = True
        self.drift = drift  # the schema-drift watch, shared by the process's exchanges
        self.drift_endpoint = ""
        self._clock = clock
        self._roll = roll
        self.started = time.monotonic()
        self.api = Schema.OPENAI
        self.endpoint: Endpoint | None = None
        self.tenant: Tenant | None = None
        self.request_id = ""
        self.method = ""
        self.path = ""
        self.served_path = ""  # the gateway's own path for it (an Azure path's OpenAI one)
        self.deployment: str | None = None  # the model an Azure deployment path names
        self._query = ""  # as forwarded: without the client's credentials
        self.routed: Routed | None = None
        self.stream = False
        self.status = 0
        self.error_code: str | None = None
        self.attempt = 1
        self.policies = EMPTY
        self.redactions = Redactions()
        self.decisions = Decisions()
        self.reader: JsonReader | StreamReader | ErrorReader | None = None
        # Set when the client's API differs from the backend's.
        self.translation: Translation | None = None
        self.dropped_fields: list[str] = []
        self.client_include_usage = False
        self.mixed_schemas = False  # a fallback chain across APIs
        # Accounting: the request as sent (for estimates), what the response reported.
        self.request: dict[str, Any] | None = None
        self.forwarded = False
        self.strip_usage = False  # the gateway asked for stream usage the client did not
        self.meter: Meter | None = None
        self.reservation: Reservation | None = None
        self.first_chunk_at: float | None = None
        self.ended_at: float | None = None
        self.response_complete = False
        self.usage: Usage | None = None
        self.cost: float | None = None
        self._prompt: int | None = None

    # -- request headers ------------------------------------------------------------

    def request_headers(self, headers: Mapping[str, str], end_of_stream: bool) -> Decision:
        self.request_id = headers.get(names.REQUEST_ID_HEADER, "")
        directives = headers.get("cache-control", "").lower()
        # no-cache: ask the provider, then store the answer; no-store: neither read nor store.
        self.cache_read = "no-cache" not in directives and "no-store" not in directives
        self.cache_write = "no-store" not in directives
        self.method = headers.get(":method", "")
        self.authority = headers.get(":authority", "")
        self.path, _, query = headers.get(":path", "").partition("?")
        self.api = api_for_path(self.path)
        served = self.path
        dropped = self.runtime.client_credential_query_params
        if served.startswith(azure.PREFIX) and (found := azure.openai_path(served)) is not None:
            served, self.deployment = found
            dropped = dropped | {azure.API_VERSION_PARAM}
        self.served_path = served
        self._query = without_params(query, dropped) if query else ""
        endpoint = ENDPOINTS.get(served)
        if endpoint is None and served.startswith(MODELS_PREFIX):
            endpoint = ENDPOINTS["/v1/models"]
        if endpoint is None:
            return self.error(
                ApiError(404, f"Unknown request URL: {self.method} {self.path}.", "unknown_url")
            )
        self.endpoint = endpoint
        self.api = endpoint.api
        if self.method != endpoint.method:
            return self.error(
                ApiError(
                    405,
                    f"Method {self.method} is not allowed on {self.path}; use {endpoint.method}.",
                    "method_not_allowed",
                ),
                [("allow", endpoint.method)],
            )
        identity = identify(self.runtime, headers)
        if isinstance(identity, ApiError):
            return self.error(identity)
        self.tenant = identity
        if endpoint.kind is Kind.MODELS:
            if names.ANTHROPIC_VERSION_HEADER in headers:
                self.api = Schema.ANTHROPIC  # the Anthropic SDK: its list format, its errors
            return self.models_reply(identity)
        length = strict_int(headers.get("content-length", ""))
        if length is not None and length > self.runtime.max_request_bytes:
            return self.too_large()
        if end_of_stream:
            return self.error(
                ApiError(400, "The request body is empty; expected a JSON object.", "invalid_json")
            )
        if self._query != query:
            # The client's key leaves the path now, not only on the way upstream: a request
            # refused after its body is then logged without it by any Envoy access log.
            path = f"{self.path}?{self._query}" if self._query else self.path
            return Continue(set_headers=[(":path", path)])
        return Continue()

    def models_reply(self, tenant: Tenant) -> Reply:
        anthropic = self.api is Schema.ANTHROPIC
        if self.served_path == "/v1/models":
            items = listing(self.runtime, tenant)
            if anthropic:
                data = [anthropic_model(self.runtime, str(item["id"])) for item in items]
                return self.json_reply(
                    200,
                    {
                        "data": data,
                        "has_more": False,
                        "first_id": data[0]["id"] if data else None,
                        "last_id": data[-1]["id"] if data else None,
                    },
                )
            return self.json_reply(200, {"object": "list", "data": items})
        name = unquote(self.served_path[len(MODELS_PREFIX) :])
        model = self.runtime.exact_models.get(name)
        if model is None or not tenant.allows(model.name):
            return self.error(
                ApiError(
                    404,
                    f"The model `{name}` does not exist or you do not have access to it.",
                    "model_not_found",
                    "model",
                )
            )
        if anthropic:
            return self.json_reply(200, anthropic_model(self.runtime, name))
        return self.json_reply(200, model_object(self.runtime, model, name))

    # -- request body ---------------------------------------------------------------

    def request_body(self, raw: bytes) -> Decision | Reserve | Lookup:
        assert self.endpoint is not None and self.tenant is not None
        if len(raw) > self.runtime.max_request_bytes:
            return self.too_large()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return self.error(
                ApiError(400, "We could not parse the JSON body of your request.", "invalid_json")
            )
        if not isinstance(body, dict):
            return self.error(
                ApiError(
                    400,
                    f"The request body must be a JSON object, not {json_type(body)}.",
                    "invalid_json",
                )
            )
        replaced = False
        if self.deployment is not None and body.get("model") != self.deployment:
            # Azure names the model in the path and ignores the body's; so does the gateway.
            body["model"] = self.deployment
            replaced = True
        invalid = validate(self.endpoint, body)
        if invalid is not None:
            return self.error(invalid)
        model: str = body["model"]
        self.stream = body.get("stream") is True
        now = dt.datetime.fromtimestamp(self._clock(), dt.UTC)
        routed = resolve(self.runtime, model, self.tenant, now=now, roll=self._roll())
        if isinstance(routed, ApiError):
            return self.error(routed)
        self.routed = routed
        backend = routed.route.attempts[0].backend
        # Behind an Envoy configured elsewhere the request goes to the host the app called,
        # whatever this exchange decides.
        if self.runtime.external_envoy and (misdirected := self.misdirected(model, backend)):
            return self.error(misdirected)
        schemas = {t.backend.schema for t in routed.route.attempts}
        translates = translatable(self.endpoint.kind)
        if translates and len(schemas) > 1:
            # A fallback chain across APIs: the body leaves in the client's schema and each
            # attempt's processor translates it for its backend (attempt.py); the response
            # is translated from whichever backend answered.
            self.mixed_schemas = True
        elif translates and backend.schema is not self.endpoint.api:
            # Chat and messages translate between the APIs; other endpoints exist in one.
            self.translation = Translation(self.endpoint.api, backend.schema)
        elif backend.schema is not self.endpoint.api:
            return self.error(
                ApiError(
                    400,
                    f"The model `{model}` is served by an {backend.schema.value} backend "
                    f"and is not available on {self.path}.",
                    "model_not_supported_on_endpoint",
                    "model",
                )
            )
        self.policies = self.runtime.policy_set(self.tenant, routed.model)
        changed = replaced
        if not self.policies.empty:
            too_large = body_size_error(self.policies, len(raw), self.decisions)
            if too_large is not None:
                return self.error(too_large)
            refusal, redacted = evaluate_request(
                self.policies, self.endpoint.kind, body, self.redactions, self.decisions
            )
            if refusal is not None:
                return self.error(refusal)
            changed = changed or redacted
        endpoint = self.endpoint
        options = body.get("stream_options")
        self.client_include_usage = (
            isinstance(options, dict) and options.get("include_usage") is True
        )
        if (
            self.stream
            and self.runtime.read_usage
            and self.translation is None
            and endpoint.api is Schema.OPENAI
            and endpoint.kind in _STREAM_OPTIONS
            and not routed.route.attempts[0].backend.omit_stream_options
        ):
            options = body.get("stream_options")
            if options is None or (
                isinstance(options, dict) and options.get("include_usage") is not True
            ):
                # Usage for the gateway; the client's stream stays as it asked (reader.py).
                body["stream_options"] = {**(options or {}), "include_usage": True}
                self.strip_usage = changed = True
        self.request = body
        self.cache_key = self.cache_key_for(body)
        if self.translation is not None:
            try:
                body, self.dropped_fields = self.translation.request(
                    body, routed.upstream_model, backend.default_max_tokens
                )
            except Untranslatable as untranslatable:
                return self.error(untranslatable.error)
            changed = True
        decision = self.forward(body, changed)
        if self.sampler is not None and self.sampler.sample(
            canonical_name(routed.model, routed.name), self.tenant.name
        ):
            self.sent_body = decision.body if decision.body is not None else raw
        reservation = self.plan_reservation(body)
        then: Continue | Reserve = decision
        if reservation is not None:
            then = Reserve(reservation, decision)
        if self.cache_key is not None and self.cache_read:
            return Lookup(self.cache_key, then)
        if isinstance(then, Continue):
            self.forwarded = True
        return then

    # -- response cache ---------------------------------------------------------------

    def cache_key_for(self, body: dict[str, Any]) -> str | None:
        """The cache key of a request the config lets be cached; None otherwise. Requests
        whose answers a policy reads or restores are never cached (the entry would hold
        what the policy changes, or another request's values)."""
        assert self.tenant is not None and self.routed is not None and self.endpoint is not None
        setting = self.tenant.cache or self.routed.model.cache
        mode = setting.mode if setting is not None else None
        if not cache.cacheable(mode, body) or response_needs(self.policies, self.redactions):
            return None
        assert setting is not None
        target = self.routed.route.attempts[0]
        return cache.key(
            "" if setting.shared else self.tenant.name,
            target.backend.name,
            self.routed.upstream_model,
            self.endpoint.suffix,
            body,
        )

    def cache_hit(self, stored: bytes) -> Reply:
        """Answer from the cache: JSON, or replayed as a stream when the client streams."""
        assert self.endpoint is not None
        body, content_type = cache.replay(
            self.endpoint.api, stored, self.stream, self.client_include_usage
        )
        meter = Meter(self.endpoint.api, self.endpoint.kind)
        meter.json(orjson.loads(stored))
        self.usage = self.usage_of(meter)
        self.cost = 0.0
        self.cached = True
        self.status = 200
        headers = [("content-type", content_type), (names.CACHE_HEADER, "hit")]
        return Reply(200, body, headers)

    def cache_miss(self, lookup: Lookup) -> Continue | Reserve:
        if isinstance(lookup.then, Continue):
            self.forwarded = True
        return lookup.then

    @property
    def upstream_suffix(self) -> str:
        """The endpoint the backend is asked at, below its base path."""
        assert self.endpoint is not None
        return self.translation.suffix if self.translation else self.endpoint.suffix

    def reads_response(self) -> bool:
        """Whether the service will read this request's response body (if it is a 200, or
        an error to translate)."""
        assert self.endpoint is not None
        return (
            self.translation is not None
            or self.mixed_schemas
            or (self.runtime.read_usage and self.endpoint.kind in METERED)
            or response_needs(self.policies, self.redactions)
        )

    # -- budgets --------------------------------------------------------------------

    def usage_of(self, meter: Meter) -> Usage:
        """The meter's usage; the prompt is counted only when the answer did not say."""
        usage = meter.usage(None)
        if "input_tokens" in usage.estimated:
            usage.input_tokens = self.prompt_tokens()
        return usage

    def prompt_tokens(self) -> int:
        """Estimated prompt tokens of the request as sent; counted once, when needed."""
        if self._prompt is None:
            assert self.endpoint is not None
            self._prompt = prompt_estimate(self.endpoint.kind, self.request or {})
        return self._prompt

    def price(self) -> Price | None:
        routed = self.routed
        if routed is None or self.runtime.prices is None:
            return None
        target = routed.route.attempts[self.attempt - 1]
        return self.runtime.prices.lookup(
            target.backend.name, routed.upstream_model_for(self.attempt - 1)
        )

    def plan_reservation(self, body: dict[str, Any]) -> Reservation | None:
        assert self.tenant is not None and self.routed is not None and self.endpoint is not None
        if not self.tenant.budgets:
            return None
        output = requested_output_tokens(self.endpoint.kind, body)
        if output is None:
            output = self.runtime.reserved_output_tokens
        # An upper bound, never below the count (docs: accounting, budgets): counting a long prompt
        # exactly would hold the event loop.
        prompt = prompt_bound(self.endpoint.kind, self.request or {})
        price = self.price()
        cost = round(price.estimate(prompt, output) * NANOS) if price else 0
        return plan(
            self.tenant.budgets,
            self.tenant.name,
            canonical_name(self.routed.model, self.routed.name),
            prompt + output,
            cost,
            self._clock(),
        )

    def reserved(self, reserve: Reserve) -> Continue:
        """The store took the reservation."""
        self.reservation = reserve.reservation
        self.forwarded = True
        return reserve.then

    def over_budget(self, charge: Charge) -> Reply:
        retry_after = max(1, charge.window_end - int(self._clock()))
        return self.error(
            ApiError(
                429,
                f"Budget `{charge.budget}` is exhausted for this period; "
                f"try again in {retry_after} seconds.",
                "budget_exceeded",
            ),
            [("retry-after", str(retry_after))],
        )

    def misdirected(self, model: str, backend: Backend) -> ApiError | None:
        """At a mesh's egress the request reaches the host the app called: only a model
        served by that host may proceed, or its credential would go to another provider."""
        called = _host_of(self.authority)
        if called.lower() == backend.host.lower():
            return None
        return ApiError(
            421,
            f"The model `{model}` is served by {backend.host}; this request was sent to "
            f"{called or 'no host'}.",
            "misdirected_request",
            "model",
        )

    def budget_unavailable(self) -> Reply:
        return self.error(
            ApiError(503, "Budgets cannot be checked right now; try again.", "budget_unavailable")
        )

    def forward(self, body: dict[str, Any], changed: bool = False) -> Continue:
        """Rewrite the request for the first attempt's backend and route it."""
        assert self.routed is not None and self.endpoint is not None
        routed = self.routed
        backend = routed.route.attempts[0].backend
        suffix = self.upstream_suffix + (f"?{self._query}" if self._query else "")
        decision = Continue(clear_route_cache=True)
        if body["model"] != routed.upstream_model:
            body["model"] = routed.upstream_model
            changed = True
        if changed:
            decision.body = orjson.dumps(body)
        headers = decision.set_headers
        if not self.runtime.external_envoy:
            # The route table picks the cluster by it; another Envoy would pass it upstream.
            headers.append((names.ROUTE_HEADER, routed.route.cluster))
        headers.append((":path", backend.path(suffix, routed.upstream_model)))
        credential = backend.credential_value()
        if credential is not None and backend.credential_header is not None:
            headers.append((backend.credential_header, credential))
        headers.extend(backend.headers)
        # Who and what, for Envoy's access log even when no usage follows (an error, a
        # reset); the fallback route's attempts also read their path suffix from here.
        assert self.tenant is not None
        decision.metadata = {
            names.METADATA_MODEL: canonical_name(routed.model, routed.name),
            "backend": backend.name,
            "tenant": self.tenant.name,
        }
        if routed.route.has_fallbacks:
            decision.metadata[names.METADATA_ROUTE] = routed.route.cluster
            decision.metadata[names.METADATA_SUFFIX] = suffix
            if self.mixed_schemas:
                decision.metadata[names.METADATA_API] = self.endpoint.api.value
                decision.metadata[names.METADATA_QUERY] = self._query
            if self.strip_usage:
                decision.metadata[names.METADATA_ADDED_STREAM_OPTIONS] = "1"
        if decision.body is not None:
            headers.append(("content-length", str(len(decision.body))))
        # The client's credentials never reach a provider. Envoy applies removals before
        # sets, so a header the backend needs under the same name is removed (every value
        # the client sent) and then set once, to the provider's key.
        decision.remove_headers.extend(self.runtime.client_credential_headers)
        set_names = {name for name, _ in headers}
        if self.translation is not None:
            # The client SDK's protocol headers mean nothing to another API's backend.
            protocol = self.translation.client_headers
            decision.remove_headers.extend(h for h in protocol if h not in set_names)
        if self.reads_response():
            # The gateway will read the response: ask for it uncompressed.
            decision.remove_headers.append("accept-encoding")
        return decision

    # -- response headers -----------------------------------------------------------

    def response_headers(self, headers: Mapping[str, str]) -> Continue:
        self.status = strict_int(headers.get(":status", ""), 999) or 0
        # Envoy reports the attempt count for the service, not for the client.
        decision = Continue(remove_headers=[names.ATTEMPT_HEADER])
        routed = self.routed
        if routed is None:
            return decision
        if routed.route.has_fallbacks:
            attempt = strict_int(headers.get(names.ATTEMPT_HEADER, "1"))
            if attempt is not None and 1 <= attempt <= len(routed.route.attempts):
                self.attempt = attempt
            schema = routed.route.attempts[self.attempt - 1].backend.schema
            if self.mixed_schemas and self.endpoint is not None and schema is not self.api:
                self.translation = Translation(self.endpoint.api, schema)
        if routed.deprecation is not None:
            decision.set_headers.extend(routed.deprecation.response_headers)
        endpoint = self.endpoint
        translation = self.translation
        if translation is not None and self.status >= 400:
            # The provider's error, in the client's schema.
            self.reader = ErrorReader(translation, self.status)
            decision.response_body = self.reader.mode
            decision.remove_headers.append("content-encoding")  # the new body is plain
            status = translation.status(self.status)
            if status != self.status:
                decision.set_headers.append((":status", str(status)))
            return decision
        if self.status != 200 or endpoint is None or endpoint.kind not in METERED:
            return decision
        if headers.get("content-encoding", "identity").lower() != "identity":
            # Compressed although the gateway asked for identity: pass it through unread
            # (usage is then estimated) rather than parse bytes that are not JSON.
            return decision
        media = media_type(headers.get("content-type", ""))
        checked = response_needs(self.policies, self.redactions)
        if not checked and not self.runtime.read_usage and translation is None:
            return decision
        if translation is not None:
            meter = Meter(translation.backend, translation.backend_kind)
        else:
            meter = Meter(endpoint.api, endpoint.kind)
        self.meter = meter
        policy_args = (endpoint, self.policies, self.redactions, self.decisions)
        if media == "text/event-stream":
            stream_policy = stream_filter(*policy_args) if checked else None
            # A translated OpenAI stream always carries usage; the reader drops it for a
            # client that did not ask, after the cache has seen it.
            stream = translation.stream(True) if translation else None
            self.reader = StreamReader(meter, stream_policy, self.strip_usage, stream)
            self.reader.emit_usage = self.client_include_usage
            answering = routed.route.attempts[self.attempt - 1].backend
            self.reader.usage_asked = (
                translation is not None
                or self.client_include_usage
                or (self.strip_usage and not answering.omit_stream_options)
            )
            if self.cache_key is not None and self.cache_write and stream_policy is None:
                self.reader.collected = []
            # Chunks change size as they pass, and a stream cut short gets an end of its
            # own: the length is no longer known.
            decision.remove_headers.append("content-length")
        elif media == "application/json":
            json_policy = json_filter(*policy_args) if checked else None
            self.reader = JsonReader(meter, json_policy, translation)
        if self.reader is not None:
            decision.response_body = self.reader.mode
            if self.sent_body is not None and not isinstance(self.reader, ErrorReader):
                self.reader.raw = []
            if self.drift is not None and not isinstance(self.reader, ErrorReader):
                backend = routed.route.attempts[self.attempt - 1].backend.name
                self.drift_endpoint = f"{self.upstream_suffix} ({self.reader.mode})"
                if self.drift.wants(backend, self.drift_endpoint):
                    self.reader.paths = set()  # watched for schema drift
        return decision

    # -- response body ----------------------------------------------------------------

    @property
    def streamed_response(self) -> bool:
        """A StreamReader reads the response: its chunks may take response_chunk."""
        return type(self.reader) is StreamReader

    def response_chunk(self, chunk: bytes) -> bytes | None:
        """A streamed response's chunk that is not its last (a StreamReader reads it): the
        bytes the client gets instead, or None when they pass as they came. What
        response_body(chunk, False) decides, with nothing else to decide."""
        assert isinstance(self.reader, StreamReader), "response_chunk without a stream"
        if self.first_chunk_at is None and chunk:
            self.first_chunk_at = time.monotonic()
        return self.reader.feed(chunk, False)

    def response_body(self, chunk: bytes, end_of_stream: bool) -> Continue:
        reader = self.reader
        if reader is None:
            return Continue()
        if self.first_chunk_at is None and chunk:
            self.first_chunk_at = time.monotonic()
        body = reader.feed(chunk, end_of_stream)
        decision = Continue(body=body)
        if body is not None and reader.mode == "buffered":
            decision.set_headers.append(("content-length", str(len(body))))
        if (
            end_of_stream
            and self.cache_key is not None
            and self.cache_write
            and isinstance(reader, JsonReader)
            and not self.stream
        ):
            # The answer as the client gets it; errors never reach here (status 200 only).
            self.cache_value = body if body is not None else chunk
        if (
            end_of_stream
            and self.cache_key is not None
            and isinstance(reader, StreamReader)
            and reader.collected is not None
            and self.meter is not None
            and self.meter.complete
        ):
            assert self.endpoint is not None
            self.cache_value = cache.assemble(self.endpoint.api, reader.collected)
        value = self.cache_value
        if value is not None and len(value) > self.runtime.cache.max_entry_bytes:
            self.cache_value = None  # too large to store
        if end_of_stream:
            # A stream whose body ended without its final event is no complete answer.
            self.response_complete = self.meter is None or self.meter.complete
            self.settle_usage()
            decision.metadata = self.usage_metadata()
        return decision

    def capture_record(
        self, summary: dict[str, object], max_body_bytes: int
    ) -> dict[str, Any] | None:
        """This exchange as the provider saw it, when it was sampled for capture: its log
        record's fields, the body sent, the body or events received. No headers."""
        if self.sent_body is None or self.routed is None or self.endpoint is None:
            return None
        record: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(self._clock(), dt.UTC).isoformat(),
            **summary,
        }
        backend = self.routed.route.attempts[self.attempt - 1].backend
        api = self.translation.backend if self.translation else self.endpoint.api
        record["upstream_api"] = api.value
        record["upstream_endpoint"] = self.upstream_suffix
        record["backend"] = backend.name
        if self.first_chunk_at is not None:
            record["first_byte_ms"] = round((self.first_chunk_at - self.started) * 1000, 3)
        record["request"] = truncated(self.sent_body, max_body_bytes)
        reader = self.reader
        raw = (
            b"".join(reader.raw)
            if isinstance(reader, JsonReader | StreamReader) and reader.raw is not None
            else None
        )
        if raw is not None and isinstance(reader, StreamReader):
            if len(raw) > max_body_bytes:
                record["response"] = {"truncated": True, "bytes": len(raw)}
            else:
                parser = Parser()
                events = parser.feed(raw) + parser.close()
                record["response"] = {"events": [payload_of(e) or e.data for e in events]}
        elif raw is not None:
            record["response"] = truncated(raw, max_body_bytes)
        return record

    def drift_sample(self) -> tuple[str, str, set[str]] | None:
        """(backend, endpoint, field paths) of a complete 200 response the service read,
        for the schema-drift watch; None when there is nothing to learn from."""
        reader, routed, meter = self.reader, self.routed, self.meter
        if (
            not isinstance(reader, JsonReader | StreamReader)
            or reader.paths is None
            or routed is None
            or meter is None
            or not meter.complete
            or self.status != 200
        ):
            return None
        backend = routed.route.attempts[self.attempt - 1].backend
        return backend.name, self.drift_endpoint, reader.paths

    # -- accounting -----------------------------------------------------------------

    def settle_usage(self) -> None:
        """Fix this exchange's usage and cost: reported where the provider reported,
        estimated elsewhere (no usage in the response, or a response cut short)."""
        if self.usage is not None or not self.forwarded or not self.runtime.read_usage:
            return
        self.ended_at = time.monotonic()
        if self.meter is not None:
            self.usage = self.usage_of(self.meter)
        elif self.status == 0:
            # No response reached the gateway (the client left, or the attempt failed
            # before headers): the provider may still have read the prompt.
            self.usage = Usage(
                input_tokens=self.prompt_tokens(),
                estimated=frozenset({"input_tokens", "output_tokens", "total_tokens"}),
            )
        else:
            self.usage = Usage()  # an error answer: nothing to charge
        price = self.price()
        self.cost = price.cost(self.usage) if price is not None else None

    def finish(self) -> list[Charge]:
        """The exchange is over: fix its usage; the adjustments that turn its reservation
        into what it really used."""
        self.settle_usage()
        if self.reservation is None:
            return []
        usage = self.usage or Usage()
        cost = round(self.cost * NANOS) if self.cost else 0
        return self.reservation.settle(usage.total_tokens, cost, self._clock())

    def usage_metadata(self) -> dict[str, str | int | float]:
        """Usage as dynamic metadata in the service's namespace, for Envoy's access logs
        and rate-limit filter."""
        usage = self.usage
        routed = self.routed
        if usage is None or routed is None or self.tenant is None:
            return {}
        metadata: dict[str, str | int | float] = {
            **usage.fields(),
            "model": canonical_name(routed.model, routed.name),
            "backend": routed.route.attempts[self.attempt - 1].backend.name,
            "tenant": self.tenant.name,
            "estimated": ",".join(sorted(usage.estimated)),
        }
        if self.cost is not None:
            metadata["cost"] = self.cost
        return metadata

    def observation(self, tenant_label: bool) -> Observation | None:
        """What the GenAI metrics record for this exchange; None when no provider was
        called. Label values come from the config only."""
        routed, endpoint, usage = self.routed, self.endpoint, self.usage
        if not self.forwarded or routed is None or endpoint is None or usage is None:
            return None
        backend = routed.route.attempts[self.attempt - 1].backend
        requested = routed.requested if routed.requested in self.runtime.metric_models else OTHER
        labels: tuple[str, ...] = (
            _OPERATIONS.get(endpoint.kind, "chat"),
            backend.provider,
            requested,
            backend.name,
        )
        if tenant_label:
            labels += (self.tenant.name if self.tenant else "",)
        end = self.ended_at or time.monotonic()
        ttft = tpot = None
        if self.stream and self.first_chunk_at is not None and self.status == 200:
            ttft = self.first_chunk_at - self.started
            if usage.output_tokens > 1:
                tpot = (end - self.first_chunk_at) / (usage.output_tokens - 1)
        return Observation(
            labels=labels,
            usage=usage,
            cost=self.cost,
            duration=end - self.started,
            error_type="" if self.status == 200 else str(self.status or "cancelled"),
            time_to_first_token=ttft,
            time_per_output_token=tpot,
        )

    # -- replies and the record -----------------------------------------------------

    def error(self, error: ApiError, extra_headers: list[tuple[str, str]] | None = None) -> Reply:
        self.status = error.status
        self.error_code = error.code
        return Reply(error.status, error.body(self.api), [*JSON_HEADERS, *(extra_headers or [])])

    def too_large(self) -> Reply:
        limit = self.runtime.max_request_bytes
        return self.error(
            ApiError(
                413, f"The request body exceeds the limit of {limit} bytes.", "request_too_large"
            )
        )

    def json_reply(self, status: int, payload: object) -> Reply:
        self.status = status
        return Reply(status, orjson.dumps(payload), list(JSON_HEADERS))

    def record(self) -> dict[str, object]:
        """The fields of this exchange's log record. Never carries credentials or bodies."""
        routed = self.routed
        record: dict[str, object] = {
            "request_id": self.request_id,
            "method": self.method,
            "path": self.path,
            "tenant": self.tenant.name if self.tenant else None,
            "status": self.status,
            "duration_ms": round((time.monotonic() - self.started) * 1000, 3),
        }
        if routed is not None:
            target = routed.route.attempts[self.attempt - 1]
            record.update(
                requested_model=routed.requested,
                model=routed.model.name,
                backend=target.backend.name,
                upstream_model=routed.upstream_model_for(self.attempt - 1),
                stream=self.stream,
            )
            if routed.rerouted:
                record["rerouted_to"] = routed.name
            if routed.route.has_fallbacks:
                record["attempt"] = self.attempt
            if self.translation is not None:
                record["translated"] = f"{self.translation.client}->{self.translation.backend}"
        if self.error_code is not None:
            record["error"] = self.error_code
        if self.decisions.counts:
            record["policy"] = self.decisions.records()
        if self.usage is not None:
            usage: dict[str, object] = {
                **self.usage.fields(),
                "reported": sorted(self.usage.reported),
                "estimated": sorted(self.usage.estimated),
            }
            if self.cost is not None:
                usage["cost"] = round(self.cost, 9)
                usage["currency"] = self.runtime.prices.currency if self.runtime.prices else ""
            if self.stream and not self.cached:
                usage["complete"] = self.response_complete
            if self.cached:
                usage["cached"] = True
            if self.reservation is not None:
                usage["reserved_tokens"] = self.reservation.tokens
            record["usage"] = usage
        return record
