"""Prometheus metrics of the service. Label values come from the config only (bounded)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from dataclasses import dataclass
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.process_collector import ProcessCollector

from extproc.telemetry.observation import Observation

# The service's own processing time per ext_proc message: tens of microseconds when all
# is well, so the buckets start far below the usual web-request defaults.
_PHASE_BUCKETS: Final = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
)
PHASES: Final = (
    "request_headers",
    "request_body",
    "response_headers",
    "response_body",
    "upstream_request_headers",
    "upstream_request_body",
)


class Tally:
    """Observations for one histogram child, counted here and added to it in one step
    (add_to). An observation costs ~0.1 µs instead of observe()'s ~1.1 (two locked
    increments and a walk of the buckets): for the many messages of one stream, added when
    the stream ends; in the serving process, for every observation, added when scraped."""

    __slots__ = ("_upper_bounds", "counts", "total")

    def __init__(self, child: Histogram | Tally) -> None:
        self._upper_bounds: list[float] = child._upper_bounds  # ends with +Inf
        self.counts = [0] * len(self._upper_bounds)
        self.total = 0.0

    def observe(self, value: float) -> None:
        # The first bucket whose bound is >= value: where Histogram.observe counts it. A
        # walk from the smallest in compiled code (an observation mostly lands in the first
        # few, and the last is +Inf) costs less than a call of bisect on boxed floats.
        bounds = self._upper_bounds
        index = 0
        while bounds[index] < value:
            index += 1
        self.counts[index] += 1
        self.total += value

    def add_to(self, target: Histogram | Tally) -> None:
        if isinstance(target, Tally):
            target.total += self.total
            for index, count in enumerate(self.counts):
                target.counts[index] += count
            return
        target._sum.inc(self.total)
        for index, count in enumerate(self.counts):
            if count:
                target._buckets[index].inc(count)

    def clear(self) -> None:
        self.counts = [0] * len(self._upper_bounds)
        self.total = 0.0


class Count:
    """Increments of one counter child, added to it in one step (see Tally)."""

    __slots__ = ("total",)

    def __init__(self) -> None:
        self.total = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.total += amount


class Level:
    """A gauge's level, kept here and set on it in one step (see Tally): two increments a
    stream instead of two locked ones in prometheus_client."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        self.value -= amount


class _Flush:
    """Registered first in the registry: a scrape (prometheus_client's HTTP thread) has the
    event loop add the tallies to their metrics before any metric is read."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> list[Any]:
        self.metrics.flush_soon()
        return []


# OpenTelemetry GenAI semantic conventions: the advised bucket boundaries.
_TOKEN_BUCKETS: Final = (
    1,
    4,
    16,
    64,
    256,
    1024,
    4096,
    16384,
    65536,
    262144,
    1048576,
    4194304,
    16777216,
)
_DURATION_BUCKETS: Final = (
    0.01,
    0.02,
    0.04,
    0.08,
    0.16,
    0.32,
    0.64,
    1.28,
    2.56,
    5.12,
    10.24,
    20.48,
    40.96,
)
_TTFT_BUCKETS: Final = (
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
)
_TPOT_BUCKETS: Final = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
# A label value for names that are not in the config (bounded cardinality).
OTHER: Final = "_OTHER"
GENAI_LABELS: Final = (
    "gen_ai_operation_name",
    "gen_ai_provider_name",
    "gen_ai_request_model",
    "backend",
)


@dataclass(frozen=True, slots=True)
class _GenAiChildren:
    input_tokens: Histogram | Tally
    output_tokens: Histogram | Tally
    duration: Histogram | Tally
    time_to_first_token: Histogram | Tally
    time_per_output_token: Histogram | Tally
    cost: Counter | Count
    estimated: Counter | Count


class Metrics:
    def __init__(self, *, tenant_labels: bool = False) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_Flush(self))
        # defer(): the loop whose thread alone observes, and what it has not added yet.
        self.loop: asyncio.AbstractEventLoop | None = None
        self.loop_thread = 0
        self.tallies: list[tuple[Histogram, Tally]] = []
        self.counts: list[tuple[Counter, Count]] = []
        self.tenant_labels = tenant_labels
        genai = list(GENAI_LABELS) + (["tenant"] if tenant_labels else [])
        self.token_usage = Histogram(
            "gen_ai_client_token_usage",
            "Tokens used per request (gen_ai.client.token.usage), by token type.",
            [*genai, "gen_ai_token_type"],
            buckets=_TOKEN_BUCKETS,
            registry=self.registry,
        )
        self.request_duration = Histogram(
            "gen_ai_server_request_duration",
            "Time from the request to the end of the response (gen_ai.server.request.duration).",
            [*genai, "error_type"],
            unit="seconds",
            buckets=_DURATION_BUCKETS,
            registry=self.registry,
        )
        self.time_to_first_token = Histogram(
            "gen_ai_server_time_to_first_token",
            "Time to the first streamed chunk (gen_ai.server.time_to_first_token).",
            genai,
            unit="seconds",
            buckets=_TTFT_BUCKETS,
            registry=self.registry,
        )
        self.time_per_output_token = Histogram(
            "gen_ai_server_time_per_output_token",
            "Time per output token after the first (gen_ai.server.time_per_output_token).",
            genai,
            unit="seconds",
            buckets=_TPOT_BUCKETS,
            registry=self.registry,
        )
        self.cost = Counter(
            "extproc_cost",
            "Cost of requests from the price table, in the table's currency.",
            [*genai, "currency"],
            registry=self.registry,
        )
        self.estimated = Counter(
            "extproc_usage_estimated",
            "Requests whose usage was (partly) counted by the gateway, not reported.",
            genai,
            registry=self.registry,
        )
        self.budget_refusals = Counter(
            "extproc_budget_refusals",
            "Requests refused because a budget was exhausted, by budget.",
            ["budget"],
            registry=self.registry,
        )
        self.cache_lookups = Counter(
            "extproc_cache_lookups",
            "Response cache lookups, by result (hit or miss).",
            ["result"],
            registry=self.registry,
        )
        self.cache_stored = Counter(
            "extproc_cache_stored", "Answers stored in the response cache.", registry=self.registry
        )
        self.cache_tokens_saved = Counter(
            "extproc_cache_tokens_saved",
            "Tokens (input + output) of answers served from the cache instead of a provider.",
            registry=self.registry,
        )
        self.cache_bytes = Gauge(
            "extproc_cache_bytes",
            "Bytes held by the in-process response cache.",
            registry=self.registry,
            multiprocess_mode="livesum",  # service.workers > 1: the workers' caches together
        )
        self.schema_drift = Counter(
            "extproc_schema_drift",
            "Provider response fields that appeared or went missing after the learning period.",
            ["backend", "endpoint", "change"],
            registry=self.registry,
        )
        self.budget_store_errors = Counter(
            "extproc_budget_store_errors",
            "Budget store operations that failed (reserve or settle).",
            ["operation"],
            registry=self.registry,
        )
        self.budget_settlements_pending = Gauge(
            "extproc_budget_settlements_pending",
            "Budget adjustments waiting for the store: at most two per counter.",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.conversation_store_errors = Counter(
            "extproc_conversation_store_errors",
            "Conversation state store operations that failed (load, save or delete).",
            ["operation"],
            registry=self.registry,
        )
        self.conversation_turns = Counter(
            "extproc_conversation_turns",
            "Answers the gateway kept as conversation state, by outcome: kept, or the bound "
            "(max_items, max_bytes, ttl) that kept the conversation from being stored.",
            ["outcome"],
            registry=self.registry,
        )
        self.conversation_items = Histogram(
            "extproc_conversation_items",
            "Input items of Responses requests on routes whose state the gateway keeps, by "
            "source: the request's own (given) or the stored earlier turns (recalled).",
            ["source"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
            registry=self.registry,
        )
        mcp = ["mcp_server", *(["tenant"] if tenant_labels else [])]
        self.mcp_operation_duration = Histogram(
            "mcp_server_operation_duration",
            "MCP requests and notifications through the gateway, from the request to the "
            "end of the answer (mcp.server.operation.duration), by server.",
            ["mcp_method_name", "gen_ai_tool_name", "error_type", *mcp],
            unit="seconds",
            buckets=_DURATION_BUCKETS,
            registry=self.registry,
        )
        self.mcp_refusals = Counter(
            "extproc_mcp_refusals",
            "MCP requests the gateway answered itself instead of the server, by reason.",
            ["mcp_server", "reason"],
            registry=self.registry,
        )
        self.mcp_tool_changes = Counter(
            "extproc_mcp_tool_changes",
            "Tool definitions that differ from their pinned or first-seen digest.",
            ["mcp_server", "gen_ai_tool_name", "against"],
            registry=self.registry,
        )
        self.capture_errors = Counter(
            "extproc_capture_errors",
            "Captured exchanges that could not be written, by cause (an errno name).",
            ["cause"],
            registry=self.registry,
        )
        ProcessCollector(registry=self.registry)
        self.requests = Counter(
            "extproc_requests",
            "HTTP exchanges processed, by the model entry, backend and response status.",
            ["model", "backend", "status"],
            registry=self.registry,
        )
        self.phase_seconds = Histogram(
            "extproc_phase_duration_seconds",
            "Time the service spent on one ext_proc message, by phase.",
            ["phase"],
            buckets=_PHASE_BUCKETS,
            registry=self.registry,
        )
        self.policy_decisions = Counter(
            "extproc_policy_decisions",
            "Exchanges in which a policy rule fired, by what it did or (shadow) would have done.",
            ["policy", "kind", "rule", "action", "mode", "direction"],
            registry=self.registry,
        )
        self.active_streams = Gauge(
            "extproc_active_streams",
            "ext_proc streams in progress.",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        # The gauge itself, or its Level once deferred.
        self.streams: Gauge | Level = self.active_streams
        self.config_reloads = Counter(
            "extproc_config_reloads",
            "Config reload attempts, by result (applied, invalid, restart_required).",
            ["result"],
            registry=self.registry,
        )
        self.config_last_reload_successful = Gauge(
            "extproc_config_last_reload_successful",
            "1 when the last config load succeeded (at start or reload), 0 when refused.",
            registry=self.registry,
            multiprocess_mode="livemin",  # 0 when any worker refused its last load
        )
        # Bound children once: labels() costs a dict lookup and a lock per call.
        self.phase: dict[str, Histogram | Tally] = {
            name: self.phase_seconds.labels(name) for name in PHASES
        }
        self._genai: dict[tuple[str, ...], _GenAiChildren] = {}
        self._requests: dict[tuple[str, str, str], Counter | Count] = {}

    def _children(self, labels: tuple[str, ...], currency: str) -> _GenAiChildren:
        # labels() costs a lock and a dict lookup per call; label sets are bounded by the
        # config, so each one's children are bound once.
        found = self._genai.get(labels)
        if found is None:
            found = self._genai[labels] = _GenAiChildren(
                self._histogram(self.token_usage.labels(*labels, "input")),
                self._histogram(self.token_usage.labels(*labels, "output")),
                self._histogram(self.request_duration.labels(*labels, "")),
                self._histogram(self.time_to_first_token.labels(*labels)),
                self._histogram(self.time_per_output_token.labels(*labels)),
                self._counter(self.cost.labels(*labels, currency)),
                self._counter(self.estimated.labels(*labels)),
            )
        return found

    def request(self, model: str, backend: str, status: str) -> None:
        """One exchange processed (extproc_requests)."""
        key = (model, backend, status)
        child = self._requests.get(key)
        if child is None:
            child = self._requests[key] = self._counter(self.requests.labels(*key))
        child.inc()

    # -- deferred observations: the serving process's own -------------------------------

    def defer(self) -> None:
        """From now on the running loop's thread alone observes: the busiest metrics are
        counted in plain tallies (~0.1 µs an observation instead of ~1.1) and added to
        their children when a scrape asks (flush_soon). Not for service.workers, whose
        multiprocess metrics are read from files by the supervisor."""
        self.loop = asyncio.get_running_loop()
        self.loop_thread = threading.get_ident()
        self.phase = {name: self._histogram(self.phase_seconds.labels(name)) for name in PHASES}
        self.streams = Level()

    def _histogram(self, child: Histogram) -> Histogram | Tally:
        if self.loop is None:
            return child
        tally = Tally(child)
        self.tallies.append((child, tally))
        return tally

    def _counter(self, child: Counter) -> Counter | Count:
        if self.loop is None:
            return child
        count = Count()
        self.counts.append((child, count))
        return count

    def flush(self) -> None:
        """Add the tallies to their metrics (on the loop's thread)."""
        for child, tally in self.tallies:
            if tally.total or any(tally.counts):
                tally.add_to(child)
                tally.clear()
        for counter, count in self.counts:
            if count.total:
                counter.inc(count.total)
                count.total = 0.0
        if isinstance(self.streams, Level):
            self.active_streams.set(self.streams.value)

    def flush_soon(self) -> None:
        """flush() from any thread: on the loop's, waiting up to a second for it (a scrape
        then reads what was observed before it asked)."""
        loop = self.loop
        if loop is None:
            return
        if threading.get_ident() == self.loop_thread:
            self.flush()
            return
        done = concurrent.futures.Future[None]()

        def flush() -> None:
            try:
                self.flush()
            finally:
                done.set_result(None)

        try:
            loop.call_soon_threadsafe(flush)
            done.result(timeout=1.0)
        except (RuntimeError, concurrent.futures.TimeoutError):
            pass  # the loop is closed or busy: this scrape reads what was added so far

    def observe(self, observation: Observation, currency: str) -> None:
        labels = observation.labels
        usage = observation.usage
        children = self._children(labels, currency)
        if not observation.error_type or usage.total_tokens:
            children.input_tokens.observe(usage.input_tokens)
            children.output_tokens.observe(usage.output_tokens)
        duration: Histogram | Tally
        if observation.error_type:
            duration = self.request_duration.labels(*labels, observation.error_type)
        else:
            duration = children.duration
        duration.observe(observation.duration)
        if observation.time_to_first_token is not None:
            children.time_to_first_token.observe(observation.time_to_first_token)
        if observation.time_per_output_token is not None:
            children.time_per_output_token.observe(observation.time_per_output_token)
        if observation.cost:
            children.cost.inc(observation.cost)
        if usage.estimated:
            children.estimated.inc()

    def serve(self, address: str) -> None:
        serve_registry(address, self.registry)


def serve_registry(address: str, registry: CollectorRegistry) -> None:
    """A Prometheus endpoint for `registry` on "host:port", in a thread."""
    host, _, port = address.rpartition(":")
    start_http_server(int(port), addr=host, registry=registry)
