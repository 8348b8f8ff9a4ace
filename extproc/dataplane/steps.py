"""The request body's steps: plain functions over one working record, run in order.

Each step reads what the steps before it established in the `Draft` and adds its own
part; a step refuses the request by returning the error the client gets, and no later
step runs. The exchange turns a draft that passed every step into its `Plan`. Adding a
step (retrieval, a guardrail) is a function and its place in `STEPS`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import orjson

from extproc import cache, names
from extproc.accounting.usage import prompt_estimating
from extproc.apis import METERED, ApiError, Kind, Schema
from extproc.apis.checks import json_type
from extproc.apis.validation import validate
from extproc.config.runtime import Backend, Runtime
from extproc.dataplane import conversation
from extproc.dataplane.conversation import Memory
from extproc.dataplane.decisions import PAUSE, LoadState, Pause
from extproc.dataplane.stages import Arrival, Plan
from extproc.digits import strict_int
from extproc.policy.engine import (
    Decisions,
    Evaluated,
    Redactions,
    body_size_error,
    evaluation,
    response_needs,
)
from extproc.policy.rules import EMPTY, PolicySet
from extproc.routing import Routed, canonical_name, resolve
from extproc.slices import Stepwise, advance, stepwise
from extproc.state.turns import Dropped, Turn
from extproc.translate.hub import Untranslatable
from extproc.translate.translation import CODECS, Translation, translatable

# Endpoints whose streams report usage only when `stream_options.include_usage` is set.
_STREAM_OPTIONS: Final = frozenset({Kind.CHAT, Kind.COMPLETIONS})


@dataclass(frozen=True, slots=True)
class Answered:
    """The service answers the request itself: a step's other way to end the run."""

    status: int
    payload: Any  # any JSON value (`object` does not resolve in a compiled dataclass)
    headers: tuple[tuple[str, str], ...] = ()


def too_large(limit: int) -> ApiError:
    return ApiError(
        413, f"The request body exceeds the limit of {limit} bytes.", "request_too_large"
    )


@dataclass(slots=True)
class Draft:
    """What the steps have established so far about one request body."""

    runtime: Runtime
    arrival: Arrival
    raw: bytes
    now: float  # the clock when the body arrived
    roll: float  # the dice of a weighted route, in [0, 1)
    redactions: Redactions  # the exchange's: the response puts the values back
    decisions: Decisions  # the exchange's: counted into its record and metrics
    body: dict[str, Any]
    changed: bool  # the body differs from what the client sent
    stream: bool
    routed: Routed | None
    translation: Translation | None
    mixed_schemas: bool
    policies: PolicySet
    client_include_usage: bool
    strip_usage: bool
    request: dict[str, Any] | None
    cache_key: str | None
    dropped_fields: tuple[str, ...]
    count_here: bool  # a token count the backend cannot answer: counted offline
    memory: Memory | None  # a Responses request whose conversation the gateway keeps
    evaluation: Stepwise[Evaluated] | None  # the policies' reading of a large body, paused
    counting: Stepwise[int] | None  # an offline token count of a large body, paused

    def __init__(
        self,
        runtime: Runtime,
        arrival: Arrival,
        raw: bytes,
        now: float,
        roll: float,
        redactions: Redactions,
        decisions: Decisions,
    ) -> None:
        self.runtime = runtime
        self.arrival = arrival
        self.raw = raw
        self.now = now
        self.roll = roll
        self.redactions = redactions
        self.decisions = decisions
        self.body = {}
        self.changed = False
        self.stream = False
        self.routed = None
        self.translation = None
        self.mixed_schemas = False
        self.policies = EMPTY
        self.client_include_usage = False
        self.strip_usage = False
        self.request = None
        self.cache_key = None
        self.dropped_fields = ()
        self.count_here = False
        self.memory = None
        self.evaluation = None
        self.counting = None

    @property
    def route(self) -> Routed:
        """The routing outcome, for the steps after `route`."""
        assert self.routed is not None, "a step before `route` asked for the route"
        return self.routed

    def plan(self) -> Plan:
        """The plan of a draft that passed every step."""
        assert self.request is not None, "a plan before the steps ran"
        routed = self.route
        return Plan(
            self.request,
            self.stream,
            routed,
            canonical_name(routed.model, routed.name),
            routed.route.attempts[0],
            self.translation,
            self.mixed_schemas,
            self.policies,
            self.client_include_usage,
            self.strip_usage,
            self.cache_key,
            self.dropped_fields,
            self.memory,
        )


# A step ends the run (a refusal, the service's own answer), asks for an effect (the run
# pauses and resumes after it; after a Pause, at the same step), or passes (None).
Step = Callable[[Draft], ApiError | Answered | LoadState | Pause | None]


def parse(draft: Draft) -> ApiError | None:
    if len(draft.raw) > draft.runtime.max_request_bytes:
        return too_large(draft.runtime.max_request_bytes)
    try:
        body = orjson.loads(draft.raw)
    except orjson.JSONDecodeError:
        return ApiError(400, "We could not parse the JSON body of your request.", "invalid_json")
    if not isinstance(body, dict):
        return ApiError(
            400, f"The request body must be a JSON object, not {json_type(body)}.", "invalid_json"
        )
    draft.body = body
    return None


def name_deployment(draft: Draft) -> ApiError | None:
    """Azure names the model in the path and ignores the body's; so does the gateway."""
    deployment = draft.arrival.deployment
    if deployment is not None and draft.body.get("model") != deployment:
        draft.body["model"] = deployment
        draft.changed = True
    return None


def check(draft: Draft) -> ApiError | None:
    invalid = validate(draft.arrival.endpoint, draft.body)
    if invalid is not None:
        return invalid
    draft.stream = draft.body.get("stream") is True
    return None


def route(draft: Draft) -> ApiError | None:
    model: str = draft.body["model"]
    now = dt.datetime.fromtimestamp(draft.now, dt.UTC)
    routed = resolve(draft.runtime, model, draft.arrival.tenant, now=now, roll=draft.roll)
    if isinstance(routed, ApiError):
        return routed
    draft.routed = routed
    # Behind an Envoy configured elsewhere the request goes to the host the app called,
    # whatever this exchange decides.
    if draft.runtime.external_envoy:
        return misdirected(model, draft.arrival.line.authority, routed.route.attempts[0].backend)
    return None


def misdirected(model: str, authority: str, backend: Backend) -> ApiError | None:
    """At a mesh's egress the request reaches the host the app called: only a model
    served by that host may proceed, or its credential would go to another provider."""
    called = _host_of(authority)
    if called.lower() == backend.host.lower():
        return None
    return ApiError(
        421,
        f"The model `{model}` is served by {backend.host}; this request was sent to "
        f"{called or 'no host'}.",
        "misdirected_request",
        "model",
    )


def _host_of(authority: str) -> str:
    """The host of an :authority value ("host", "host:443", "[::1]:443")."""
    if authority.startswith("["):
        return authority[1 : authority.find("]")]
    host, sep, port = authority.rpartition(":")
    return host if sep and strict_int(port, 65535) is not None else authority


def choose_translation(draft: Draft) -> ApiError | None:
    endpoint, routed = draft.arrival.endpoint, draft.route
    client = endpoint.api
    spoken = routed.route.attempts[0].backend.speaks(client)
    schemas = routed.route.schemas(client)
    translates = translatable(endpoint.kind)
    if endpoint.kind is Kind.COUNT_TOKENS:
        # Sent to the one backend of a route without fallbacks: as it came when it takes
        # the client's API, translated when its API has a count endpoint too; counted
        # offline for any other route.
        if routed.route.has_fallbacks or not counts(spoken):
            draft.count_here = True
        elif spoken is not client:
            draft.translation = Translation(client, spoken)
    elif translates and len(schemas) > 1:
        # A fallback chain across APIs: the body leaves in the client's schema and each
        # attempt's processor translates it for its backend (attempt.py); the response
        # is translated from whichever backend answered.
        draft.mixed_schemas = True
    elif translates and spoken is not client:
        # Chat, messages and responses translate between the APIs; other endpoints exist
        # in one.
        draft.translation = Translation(client, spoken)
    elif spoken is not client:
        return ApiError(
            400,
            f"The model `{draft.body['model']}` is served by an {spoken.value} "
            f"backend and is not available on {draft.arrival.path}.",
            "model_not_supported_on_endpoint",
            "model",
        )
    return None


def counts(api: Schema) -> bool:
    """Whether an API has a token count endpoint."""
    return CODECS[api].COUNT_SUFFIX is not None


# A body this large is read by the policies in slices: the step pauses before, between and
# after them (the run comes back to it), so that other streams' messages are served in
# between rather than behind the whole of it.
SLICE_BYTES: Final = 128 * 1024


def apply_policies(draft: Draft) -> ApiError | Pause | None:
    running = draft.evaluation
    if running is None:
        policies = draft.runtime.policy_set(draft.arrival.tenant, draft.route.model)
        draft.policies = policies
        if policies.empty:
            return None
        refusal = body_size_error(policies, len(draft.raw), draft.decisions)
        if refusal is not None:
            return refusal
        running = draft.evaluation = stepwise(
            evaluation(
                policies,
                draft.arrival.endpoint.body_kind,
                draft.body,
                draft.redactions,
                draft.decisions,
                draft.arrival.tenant.name,
                slices=len(draft.raw) >= SLICE_BYTES,
            )
        )
    ended = advance(running)
    if ended is None:
        return PAUSE
    draft.evaluation = None
    refusal, redacted = ended.value
    draft.changed = draft.changed or redacted
    return refusal


def recall(draft: Draft) -> ApiError | LoadState | None:
    """A Responses request whose conversation the gateway keeps: its answer named, and the
    earlier turn it continues asked for (the run resumes once it is loaded)."""
    arrival = draft.arrival
    draft.memory, ended = conversation.recall(
        arrival.endpoint,
        draft.route.route,
        draft.runtime.conversations,
        draft.body,
        arrival.tenant.name,
    )
    return ended


def resume(draft: Draft, turn: Turn | Dropped | None) -> ApiError | None:
    """The earlier turn the run paused for, put before the request's input."""
    recalled = conversation.resume(draft.runtime.conversations, draft.body, turn)
    if isinstance(recalled, ApiError):
        return recalled
    assert draft.memory is not None
    draft.memory = draft.memory._replace(recalled=recalled)
    draft.changed = True
    return None


def count_here(draft: Draft) -> ApiError | Answered | Pause | None:
    """A token count the route's backend cannot answer: the prompt as it would be sent
    (after the policies), counted by the service's tokenizer, named an estimate. A large
    body's count pauses between its slices, as the policies' reading does."""
    if not draft.count_here:
        return None
    counting = draft.counting
    if counting is None:
        arrival = draft.arrival
        kind, tenant = arrival.endpoint.body_kind, arrival.tenant.name
        slices = len(draft.raw) >= SLICE_BYTES
        counting = draft.counting = stepwise(prompt_estimating(kind, draft.body, tenant, slices))
    ended = advance(counting)
    if ended is None:
        return PAUSE
    draft.counting = None
    return Answered(200, {"input_tokens": ended.value}, ((names.ESTIMATE_HEADER, "offline"),))


def ask_stream_usage(draft: Draft) -> ApiError | None:
    """Usage for the gateway from a stream whose client did not ask for it; the client's
    stream stays as it asked (reader.py takes the usage chunk out again)."""
    options = draft.body.get("stream_options")
    asked = isinstance(options, dict) and options.get("include_usage") is True
    draft.client_include_usage = asked
    endpoint = draft.arrival.endpoint
    if (
        draft.stream
        and not asked
        and draft.runtime.read_usage
        and draft.translation is None
        and endpoint.api is Schema.OPENAI
        and endpoint.kind in _STREAM_OPTIONS
        and not draft.route.route.attempts[0].backend.omit_stream_options
        and (options is None or isinstance(options, dict))
    ):
        draft.body["stream_options"] = {**(options or {}), "include_usage": True}
        draft.strip_usage = draft.changed = True
    return None


def key_cache(draft: Draft) -> ApiError | None:
    """The cache key of a request the config lets be cached. Requests whose answers a
    policy reads or restores are never cached (the entry would hold what the policy
    changes, or another request's values)."""
    draft.request = body = draft.body
    tenant, routed = draft.arrival.tenant, draft.route
    setting = tenant.cache or routed.model.cache
    mode = setting.mode if setting is not None else None
    if draft.arrival.endpoint.kind not in METERED or not cache.cacheable(mode, body):
        return None
    if response_needs(draft.policies, draft.redactions):
        return None
    assert setting is not None
    draft.cache_key = cache.key(
        "" if setting.shared else tenant.name,
        routed.route.attempts[0].backend.name,
        routed.upstream_model,
        draft.arrival.endpoint.suffix,
        body,
    )
    return None


def translate(draft: Draft) -> ApiError | None:
    translation = draft.translation
    if translation is None:
        return None
    routed = draft.route
    try:
        if draft.arrival.endpoint.kind is Kind.COUNT_TOKENS:
            draft.body, dropped = translation.count_request(draft.body, routed.upstream_model)
        else:
            backend = routed.route.attempts[0].backend
            draft.body, dropped = translation.request(
                draft.body, routed.upstream_model, backend.default_max_tokens
            )
    except Untranslatable as untranslatable:
        return untranslatable.error
    draft.dropped_fields = tuple(dropped)
    draft.changed = True
    return None


STEPS: Final[tuple[Step, ...]] = (
    parse,
    name_deployment,
    check,
    route,
    choose_translation,
    apply_policies,
    recall,
    count_here,
    ask_stream_usage,
    key_cache,
    translate,
)


def run(
    draft: Draft, start: int = 0, steps: tuple[Step, ...] = STEPS
) -> tuple[ApiError | Answered | LoadState | Pause | None, int]:
    """Run the steps in order from `start`; the first refusal, answer or effect ends the
    run. Returns it, and the step to resume at (a step that paused goes on)."""
    for index in range(start, len(steps)):
        ended = steps[index](draft)
        if ended is not None:
            return ended, index if isinstance(ended, Pause) else index + 1
    return None, len(steps)
