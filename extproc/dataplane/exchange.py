"""One HTTP exchange through the gateway as a state machine, with no I/O.

The ext_proc shell feeds it the decoded phases (request headers, request body, response
headers and body) and turns each returned decision into a ProcessingResponse. Each phase
leaves an immutable record (stages.py): an `Arrival`, a `Plan`, an `Answer`. I/O the
exchange needs (a cache lookup, a budget reservation) it returns as an effect value; the
shell performs it and feeds the result back through `resolve`, one entry point for every
effect. Everything here is plain data in, plain data out.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson

from extproc import cache, names
from extproc.accounting.budgets import NANOS, Charge, Reservation
from extproc.accounting.usage import Meter, Usage, prompt_estimate
from extproc.apis import (
    ENDPOINTS,
    METERED,
    MODELS_PREFIX,
    RESPONSES_PREFIX,
    STORED_RESPONSE,
    ApiError,
    Kind,
    Schema,
    api_for_path,
    azure,
)
from extproc.capture import Sampler
from extproc.config.runtime import Runtime
from extproc.dataplane import budget, conversation, models, steps, stored
from extproc.dataplane.decisions import (
    PAUSE,
    Continue,
    Decision,
    DeleteState,
    Effect,
    Found,
    Loaded,
    LoadState,
    Lookup,
    Pause,
    Reply,
    Reserve,
    Reserved,
    Result,
    Unavailable,
)
from extproc.dataplane.reader import JsonReader, StreamReader
from extproc.dataplane.response import Reading, answer, reads_response
from extproc.dataplane.stages import Answer, Arrival, Line, Outcome, Plan
from extproc.dataplane.upstream import first_attempt
from extproc.digits import strict_int
from extproc.drift import DriftMonitor
from extproc.identity import identify, without_params
from extproc.policy.engine import Decisions, Redactions
from extproc.routing import Routed
from extproc.slices import Sliced, Stepwise, advance, finish, stepwise
from extproc.state.turns import Turn

JSON_HEADERS: Final = [("content-type", "application/json")]


@dataclass(slots=True)
class _Recount:
    """A refused reservation's prompt being counted exactly: the count, the refused
    reservation and the charge that refused it."""

    counting: Stepwise[Reservation | None]
    refused: Reservation
    charge: Charge


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
        self.clock = clock
        self._roll = roll
        self.drift = drift  # the schema-drift watch, shared by the process's exchanges
        self.sampler = capture  # traffic capture's sampler, shared by the process
        self.started = time.monotonic()
        self.api = Schema.OPENAI  # the schema of this exchange's replies and errors
        # The stages' records, each set once by its phase.
        self.line = Line("", "", "", "")
        self.arrival: Arrival | None = None
        self.routed: Routed | None = None  # kept for the record when a later step refused
        self.stream = False
        self.plan: Plan | None = None
        self.answer: Answer | None = None
        self.outcome: Outcome | None = None
        # What runs through the whole exchange: the policy's state (values to put back,
        # decisions to count), the reply status, the budget reservation taken.
        self.redactions = Redactions()
        self.decisions = Decisions()
        self.status = 0
        self.error_code: str | None = None
        self.reservation: Reservation | None = None
        self.refused: Charge | None = None  # the budget charge the client's 429 names
        self.forwarded = False  # the request went to a provider
        self.cached = False  # answered from the cache
        self.cache_value: bytes | None = None  # the answer to store under the plan's key
        self.sent_body: bytes | None = None  # set when this exchange is captured
        self.first_chunk_at: float | None = None
        self._chunks: StreamReader | None = None  # the answer's reader, when it is a stream's
        self.response_complete = False
        self._pending: list[Effect] = []  # asked of the shell before the request goes on
        self._asked: Effect | None = None
        self._forward: Continue | None = None
        self._prompt: int | None = None
        # The body a first reservation was planned for, until its answer: if refused, its
        # prompt is counted to the exact count's bounds (in slices) and reserved again.
        self._sent: dict[str, Any] | None = None
        self._recount: _Recount | None = None
        # A request body whose steps wait for an effect, and the step they resume at.
        self._draft: steps.Draft | None = None
        self._resume_at = 0
        # GET or DELETE of a kept answer: its id, and the input items' page asked for.
        self._stored: stored.StoredRequest | None = None
        self.turn: Turn | None = None  # the answer to keep, for the shell to save

    # -- request headers ------------------------------------------------------------

    def request_headers(self, headers: Mapping[str, str], end_of_stream: bool) -> Decision | Effect:
        method = headers.get(":method", "")
        path, _, query = headers.get(":path", "").partition("?")
        request_id = headers.get(names.REQUEST_ID_HEADER, "")
        self.line = line = Line(request_id, method, path, headers.get(":authority", ""))
        self.api = api_for_path(path)
        served, deployment = path, None
        dropped = self.runtime.client_credential_query_params
        if served.startswith(azure.PREFIX) and (found := azure.openai_path(served)) is not None:
            served, deployment = found
            dropped = dropped | {azure.API_VERSION_PARAM}
        forwarded = without_params(query, dropped) if query else ""
        endpoint = ENDPOINTS.get(served)
        if endpoint is None and served.startswith(MODELS_PREFIX):
            endpoint = ENDPOINTS["/v1/models"]
        if endpoint is None and served.startswith(RESPONSES_PREFIX):
            return self._stored_response(headers, served, forwarded)
        if endpoint is None:
            return self.error(
                ApiError(404, f"Unknown request URL: {method} {path}.", "unknown_url")
            )
        self.api = endpoint.api
        if method != endpoint.method:
            return self.error(
                ApiError(
                    405,
                    f"Method {method} is not allowed on {path}; use {endpoint.method}.",
                    "method_not_allowed",
                ),
                [("allow", endpoint.method)],
            )
        tenant = identify(self.runtime, headers)
        if isinstance(tenant, ApiError):
            return self.error(tenant)
        directives = headers.get("cache-control", "").lower()
        self.arrival = Arrival(
            line,
            served,
            forwarded,
            endpoint,
            tenant,
            deployment,
            "no-cache" not in directives and "no-store" not in directives,  # cache_read
            "no-store" not in directives,  # cache_write
        )
        if endpoint.kind is Kind.MODELS:
            if names.ANTHROPIC_VERSION_HEADER in headers:
                self.api = Schema.ANTHROPIC  # the Anthropic SDK: its list format, its errors
            return self._reply(models.answer(self.runtime, self.arrival, self.api))
        length = strict_int(headers.get("content-length", ""))
        if length is not None and length > self.runtime.max_request_bytes:
            return self.error(steps.too_large(self.runtime.max_request_bytes))
        if end_of_stream:
            return self.error(
                ApiError(400, "The request body is empty; expected a JSON object.", "invalid_json")
            )
        if forwarded != query:
            # The client's key leaves the path now, not only on the way upstream: a request
            # refused after its body is then logged without it by any Envoy access log.
            return Continue(set_headers=[(":path", f"{path}?{forwarded}" if forwarded else path)])
        return Continue()

    # -- request body ---------------------------------------------------------------

    def request_body(self, raw: bytes) -> Decision | Effect:
        arrival = self.arrival
        assert arrival is not None, "a request body before its headers were admitted"
        self._draft = steps.Draft(
            self.runtime, arrival, raw, self.clock(), self._roll(), self.redactions, self.decisions
        )
        return self._run_steps(0)

    def _run_steps(self, start: int) -> Decision | Effect:
        """The body's steps from `start`: a refusal, the service's answer, an effect a step
        asked for, or the plan and the effects it needs before the request goes on."""
        draft, arrival = self._draft, self.arrival
        assert draft is not None and arrival is not None
        ended, self._resume_at = steps.run(draft, start)
        self.routed, self.stream = draft.routed, draft.stream
        if isinstance(ended, (LoadState, Pause)):
            self._asked = ended
            return ended
        self._draft = None
        if isinstance(ended, steps.Answered):
            return self._reply((ended.status, ended.payload), ended.headers)
        if ended is not None:
            return self.error(ended)
        self.plan = plan = draft.plan()
        if plan.memory is not None and plan.translation is not None:
            plan.translation.answer_id = plan.memory.response_id
        reads = reads_response(self.runtime, arrival, plan, self.redactions)
        forward = first_attempt(self.runtime, arrival, plan, draft.body, draft.changed, reads)
        if self.sampler is not None and self.sampler.sample(plan.model, arrival.tenant.name):
            self.sent_body = forward.body if forward.body is not None else draft.raw
        self._forward = forward
        if plan.cache_key is not None and arrival.cache_read:
            self._pending.append(Lookup(plan.cache_key))
        reservation = finish(
            budget.reservation(self.runtime, arrival, plan, draft.body, self.clock())
        )
        if reservation is not None:
            self._pending.append(Reserve(reservation))
            self._sent = draft.body
        return self._next()

    def resolve(self, result: Result) -> Decision | Effect:
        """The shell's result of the effect this exchange asked for last."""
        asked, self._asked = self._asked, None
        assert asked is not None, "a result for no effect"
        if isinstance(asked, Pause):
            if self._recount is not None:
                return self._count_on()
            return self._run_steps(self._resume_at)
        if self._stored is not None:
            return self._stored_step(self._stored.resolve(result))
        if isinstance(asked, LoadState):
            return self._recalled(result)
        if isinstance(result, Found):
            if result.stored is not None:
                return self._cache_hit(result.stored)
            return self._next()
        if isinstance(result, Reserved):
            assert isinstance(asked, Reserve)
            if result.refused is not None:
                counting = self._exact_reservation()
                if counting is None:
                    return self._over_budget(result.refused)
                self._recount = _Recount(stepwise(counting), asked.reservation, result.refused)
                return self._count_on()
            self.reservation = asked.reservation
            self._sent = None
            return self._next()
        assert isinstance(result, Unavailable)
        if isinstance(asked, Reserve) and not self.runtime.store.fail_open:
            return self.error(
                ApiError(
                    503, "Budgets cannot be checked right now; try again.", "budget_unavailable"
                )
            )
        return self._next()

    def _recalled(self, result: Result) -> Decision | Effect:
        """The earlier turn a Responses request names, loaded: the steps go on."""
        draft = self._draft
        assert draft is not None
        if not isinstance(result, Loaded):
            self._draft = None
            return self.error(
                ApiError(
                    503,
                    "Conversation state cannot be read right now; try again.",
                    "conversation_state_unavailable",
                )
            )
        refusal = steps.resume(draft, result.turn)
        if refusal is not None:
            self._draft = None
            return self.error(refusal)
        return self._run_steps(self._resume_at)

    # -- GET and DELETE /v1/responses/{id}, GET /v1/responses/{id}/input_items ----------

    def _stored_response(
        self, headers: Mapping[str, str], served: str, query: str
    ) -> Decision | Effect:
        line = self.line
        self.api = Schema.OPENAI_RESPONSES
        parsed = stored.parse(line, served)
        if isinstance(parsed, ApiError):
            return self.error(parsed)
        response_id, items, allowed = parsed
        if line.method not in allowed.split(", "):
            return self.error(
                ApiError(
                    405,
                    f"Method {line.method} is not allowed on {line.path}; use {allowed}.",
                    "method_not_allowed",
                ),
                [("allow", allowed)],
            )
        tenant = identify(self.runtime, headers)
        if isinstance(tenant, ApiError):
            return self.error(tenant)
        self.arrival = Arrival(line, served, query, STORED_RESPONSE, tenant, None, False, False)
        self._stored = request = stored.StoredRequest(
            self.runtime, self.arrival, response_id, items
        )
        return self._stored_step(request.first())

    def _stored_step(
        self, step: ApiError | stored.Answer | Continue | DeleteState | LoadState
    ) -> Decision | Effect:
        if isinstance(step, ApiError):
            return self.error(step)
        if isinstance(step, tuple):
            return self._reply(step)
        if isinstance(step, Continue):
            self.forwarded = True
            return step
        self._asked = step
        return step

    def _next(self) -> Decision | Effect:
        """The next effect to ask for, or the request on its way."""
        if self._pending:
            self._asked = self._pending.pop(0)
            return self._asked
        assert self._forward is not None
        self.forwarded = True
        return self._forward

    def _cache_hit(self, stored: bytes) -> Reply:
        """Answer from the cache: JSON, or replayed as a stream when the client streams."""
        arrival, plan = self.arrival, self.plan
        assert arrival is not None and plan is not None
        endpoint = arrival.endpoint
        body, content_type = cache.replay(
            endpoint.api, stored, plan.stream, plan.client_include_usage
        )
        meter = Meter(endpoint.api, endpoint.kind)
        meter.json(orjson.loads(stored))
        self.outcome = Outcome(self._usage_of(meter), 0.0, time.monotonic())
        self.cached = True
        self.status = 200
        return Reply(200, body, [("content-type", content_type), (names.CACHE_HEADER, "hit")])

    def _exact_reservation(self) -> Sliced[Reservation | None] | None:
        """The reservation with its prompt counted exactly, once, in slices: the first one
        counted only a little new text, and reserved the rest's bytes."""
        sent, self._sent = self._sent, None
        if sent is None:
            return None
        assert self.arrival is not None and self.plan is not None
        runtime, arrival, plan = self.runtime, self.arrival, self.plan
        return budget.reservation(runtime, arrival, plan, sent, self.clock(), None, slices=True)

    def _count_on(self) -> Decision | Effect:
        """The exact count's next slice (a pause after it), or, once it is counted, the
        exact reservation asked for where it is smaller than the refused one."""
        recount = self._recount
        assert recount is not None
        ended = advance(recount.counting)
        if ended is None:
            self._asked = PAUSE
            return PAUSE
        self._recount = None
        exact = ended.value
        if exact is not None and exact.tokens < recount.refused.tokens:
            self._pending.insert(0, Reserve(exact))  # it may fit where the first did not
            return self._next()
        return self._over_budget(recount.charge)

    def _over_budget(self, charge: Charge) -> Reply:
        self.refused = charge
        retry_after = max(1, charge.window_end - int(self.clock()))
        return self.error(
            ApiError(
                429,
                f"Budget `{charge.budget}` is exhausted for this period; "
                f"try again in {retry_after} seconds.",
                "budget_exceeded",
            ),
            [("retry-after", str(retry_after))],
        )

    # -- response -------------------------------------------------------------------

    def response_headers(self, headers: Mapping[str, str]) -> Continue:
        # Envoy reports the attempt count for the service, not for the client.
        decision = Continue(remove_headers=[names.ATTEMPT_HEADER])
        arrival, plan = self.arrival, self.plan
        if arrival is None or plan is None:
            self.status = strict_int(headers.get(":status", ""), 999) or 0
            return decision
        capture = self.sent_body is not None
        reading = Reading(self.redactions, self.decisions, capture, self.drift)
        self.answer = answer(self.runtime, arrival, plan, headers, reading, decision)
        self.status = self.answer.status
        if type(self.answer.reader) is StreamReader:
            self._chunks = self.answer.reader
        return decision

    @property
    def streamed_response(self) -> bool:
        """A StreamReader reads the response: its chunks may take response_chunk."""
        return self._chunks is not None

    def response_chunk(self, chunk: bytes) -> bytes | None:
        """A streamed response's chunk that is not its last (a StreamReader reads it): the
        bytes the client gets instead, or None when they pass as they came. What
        response_body(chunk, False) decides, with nothing else to decide."""
        reader = self._chunks
        assert reader is not None, "response_chunk without a stream"
        if self.first_chunk_at is None and chunk:
            self.first_chunk_at = time.monotonic()
        return reader.feed(chunk, False)

    def response_body(self, chunk: bytes, end_of_stream: bool) -> Continue:
        reader = self.answer.reader if self.answer is not None else None
        if reader is None:
            return Continue()
        if self.first_chunk_at is None and chunk:
            self.first_chunk_at = time.monotonic()
        body = reader.feed(chunk, end_of_stream)
        decision = Continue(body=body)
        if body is not None and reader.mode == "buffered":
            decision.set_headers.append(("content-length", str(len(body))))
        if end_of_stream:
            self._ended(reader, chunk if body is None else body)
            decision.metadata = self.usage_metadata()
        return decision

    def _ended(self, reader: object, sent: bytes) -> None:
        """The response's last chunk passed: keep the answer for the cache, fix usage."""
        assert self.arrival is not None and self.plan is not None and self.answer is not None
        meter = self.answer.meter
        if self.plan.cache_key is not None and self.arrival.cache_write:
            value = None
            whole = meter is not None and meter.complete
            if isinstance(reader, JsonReader) and not self.plan.stream and whole:
                # The answer as the client gets it (a 200: errors never reach), when it is
                # whole (not a background response still queued).
                value = sent
            elif isinstance(reader, StreamReader) and reader.collected is not None and whole:
                value = cache.assemble(self.arrival.api, reader.collected)
            if value is not None and len(value) <= self.runtime.cache.max_entry_bytes:
                self.cache_value = value  # (a larger one is not stored)
        # A stream whose body ended without its final event is no complete answer.
        self.response_complete = meter is None or meter.complete
        memory = self.plan.memory
        if self.status == 200 and self.response_complete:
            if memory is not None and memory.keep:
                self.turn = conversation.turn(
                    memory, self.plan.request, _answer_of(reader), self.clock()
                )
            elif self.arrival.endpoint.kind is Kind.RESPONSES and self.answer.translation is None:
                # Its backend keeps it: whose it is, for GET and DELETE.
                self.turn = conversation.owned(
                    self.plan.request,
                    self.plan.model,
                    self.answer.backend.name,
                    meter,
                    self.clock(),
                )
        self.settle_usage()

    # -- accounting -----------------------------------------------------------------

    def _usage_of(self, meter: Meter) -> Usage:
        """The meter's usage; the prompt is counted only when the answer did not say."""
        usage = meter.usage(None)
        if "input_tokens" in usage.estimated:
            usage.input_tokens = self.prompt_tokens()
        return usage

    def prompt_tokens(self) -> int:
        """Estimated prompt tokens of the request as sent; counted once, when needed."""
        if self._prompt is None:
            assert self.arrival is not None
            request = self.plan.request if self.plan is not None else {}
            arrival = self.arrival
            self._prompt = prompt_estimate(arrival.endpoint.kind, request, arrival.tenant.name)
        return self._prompt

    @property
    def attempt(self) -> int:
        """The attempt that answered (1 until one did)."""
        return self.answer.attempt if self.answer is not None else 1

    def settle_usage(self) -> None:
        """Fix this exchange's usage and cost: reported where the provider reported,
        estimated elsewhere (no usage in the response, or a response cut short)."""
        if self.outcome is not None or not self.forwarded or not self.runtime.read_usage:
            return
        assert self.arrival is not None and self.plan is not None
        if self.arrival.endpoint.kind not in METERED:
            return  # no generation to charge: a token count
        meter = self.answer.meter if self.answer is not None else None
        if meter is not None:
            usage = self._usage_of(meter)
        elif self.status == 0:
            # No response reached the gateway (the client left, or the attempt failed
            # before headers): the provider may still have read the prompt.
            usage = Usage(
                input_tokens=self.prompt_tokens(),
                estimated=frozenset({"input_tokens", "output_tokens", "total_tokens"}),
            )
        else:
            usage = Usage()  # an error answer: nothing to charge
        price = budget.price(self.runtime, self.plan.routed, self.attempt)
        cost = price.cost(usage) if price is not None else None
        self.outcome = Outcome(usage, cost, time.monotonic())

    def finish(self) -> list[Charge]:
        """The exchange is over: fix its usage; the adjustments that turn its reservation
        into what it really used."""
        self.settle_usage()
        if self.reservation is None:
            return []
        outcome = self.outcome
        usage = outcome.usage if outcome is not None else Usage()
        cost = round(outcome.cost * NANOS) if outcome is not None and outcome.cost else 0
        return self.reservation.settle(usage.total_tokens, cost, self.clock())

    def usage_metadata(self) -> dict[str, str | int | float]:
        """Usage as dynamic metadata in the service's namespace, for Envoy's access logs
        and rate-limit filter."""
        outcome, plan, arrival = self.outcome, self.plan, self.arrival
        if outcome is None or plan is None or arrival is None:
            return {}
        usage = outcome.usage
        metadata: dict[str, str | int | float] = {
            **usage.fields(),
            "model": plan.model,
            "backend": plan.routed.route.attempts[self.attempt - 1].backend.name,
            "tenant": arrival.tenant.name,
            "estimated": ",".join(sorted(usage.estimated)),
        }
        if outcome.cost is not None:
            metadata["cost"] = outcome.cost
        return metadata

    # -- replies --------------------------------------------------------------------

    def error(self, error: ApiError, extra_headers: list[tuple[str, str]] | None = None) -> Reply:
        self.status = error.status
        self.error_code = error.code
        return Reply(error.status, error.body(self.api), [*JSON_HEADERS, *(extra_headers or [])])

    def _reply(
        self, found: tuple[int, object] | ApiError, headers: tuple[tuple[str, str], ...] = ()
    ) -> Reply:
        if isinstance(found, ApiError):
            return self.error(found)
        status, payload = found
        self.status = status
        return Reply(status, orjson.dumps(payload), [*JSON_HEADERS, *headers])


def _answer_of(reader: object) -> bytes | None:
    """The Responses answer a translation wrote, as it was before a response policy read
    it (None: the backend answered in the Responses API itself, and keeps it)."""
    if isinstance(reader, JsonReader):
        return reader.translated
    if isinstance(reader, StreamReader) and reader.translation is not None:
        return reader.translation.encoder.answer
    return None
