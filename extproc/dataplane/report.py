"""A finished exchange as others see it: its log record, its capture record, its metrics
observation, its sample for the schema-drift watch. Read from the exchange's stage records;
nothing here changes it."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any, Final

from extproc.apis import Kind
from extproc.capture import truncated
from extproc.dataplane.exchange import Exchange
from extproc.dataplane.reader import JsonReader, StreamReader
from extproc.policy.filters import payload_of
from extproc.sse import Parser
from extproc.telemetry.observation import Observation
from extproc.translate.translation import Translation

_OPERATIONS: Final = {
    Kind.CHAT: "chat",
    Kind.MESSAGES: "chat",
    Kind.EMBEDDINGS: "embeddings",
    Kind.COMPLETIONS: "text_completion",
    Kind.RESPONSES: "chat",
}
OTHER: Final = "_OTHER"


def record(exchange: Exchange) -> dict[str, object]:
    """The fields of the exchange's log record. Never carries credentials or bodies."""
    line, routed, arrival = exchange.line, exchange.routed, exchange.arrival
    fields: dict[str, object] = {
        "request_id": line.request_id,
        "method": line.method,
        "path": line.path,
        "tenant": arrival.tenant.name if arrival else None,
        "status": exchange.status,
        # Milliseconds to the microsecond (round(x, 3) goes through a decimal conversion).
        "duration_ms": round((time.monotonic() - exchange.started) * 1e6) / 1000,
    }
    if routed is not None:
        attempt = exchange.attempt
        fields["requested_model"] = routed.requested
        fields["model"] = routed.model.name
        fields["backend"] = routed.route.attempts[attempt - 1].backend.name
        fields["upstream_model"] = routed.upstream_model_for(attempt - 1)
        fields["stream"] = exchange.stream
        if routed.rerouted:
            fields["rerouted_to"] = routed.name
        if routed.route.has_fallbacks:
            fields["attempt"] = attempt
        if (translation := _translation(exchange)) is not None:
            fields["translated"] = f"{translation.client}->{translation.backend}"
    if exchange.error_code is not None:
        fields["error"] = exchange.error_code
    plan = exchange.plan
    if plan is not None and plan.memory is not None:
        # How long the conversation is, and how much of it came from stored state.
        given = plan.request.get("input")
        fields["conversation"] = {
            "response_id": plan.memory.response_id,
            "items": len(given) if isinstance(given, list) else 1,
            "recalled": plan.memory.recalled,
            "kept": plan.memory.keep,
        }
    if exchange.decisions.counts:
        fields["policy"] = exchange.decisions.records()
    if exchange.outcome is not None:
        fields["usage"] = _usage(exchange)
    return fields


def _translation(exchange: Exchange) -> Translation | None:
    """The translation of the answering backend's API (the plan's until one answered)."""
    if exchange.answer is not None:
        return exchange.answer.translation
    return exchange.plan.translation if exchange.plan is not None else None


def _usage(exchange: Exchange) -> dict[str, object]:
    outcome = exchange.outcome
    assert outcome is not None
    usage = outcome.usage
    fields: dict[str, object] = {
        **usage.fields(),
        "reported": sorted(usage.reported),
        "estimated": sorted(usage.estimated),
    }
    if outcome.cost is not None:
        prices = exchange.runtime.prices
        fields["cost"] = round(outcome.cost, 9)
        fields["currency"] = prices.currency if prices else ""
    if exchange.stream and not exchange.cached:
        fields["complete"] = exchange.response_complete
    if exchange.cached:
        fields["cached"] = True
    if exchange.reservation is not None:
        fields["reserved_tokens"] = exchange.reservation.tokens
    return fields


def capture_record(
    exchange: Exchange, summary: dict[str, object], max_body_bytes: int
) -> dict[str, Any] | None:
    """The exchange as the provider saw it, when it was sampled for capture: its log
    record's fields, the body sent, the body or events received. No headers."""
    plan, arrival = exchange.plan, exchange.arrival
    if exchange.sent_body is None or plan is None or arrival is None:
        return None
    captured: dict[str, Any] = {
        "time": dt.datetime.fromtimestamp(exchange.clock(), dt.UTC).isoformat(),
        **summary,
    }
    answer = exchange.answer
    translation = _translation(exchange)
    captured["upstream_api"] = (translation.backend if translation else arrival.api).value
    captured["upstream_endpoint"] = (translation or arrival.endpoint).suffix
    captured["backend"] = plan.routed.route.attempts[exchange.attempt - 1].backend.name
    if exchange.first_chunk_at is not None:
        first_byte = exchange.first_chunk_at - exchange.started
        captured["first_byte_ms"] = round(first_byte * 1000, 3)
    captured["request"] = truncated(exchange.sent_body, max_body_bytes)
    reader = answer.reader if answer is not None else None
    raw = (
        b"".join(reader.raw)
        if isinstance(reader, (JsonReader, StreamReader)) and reader.raw is not None
        else None
    )
    if raw is not None and isinstance(reader, StreamReader):
        if len(raw) > max_body_bytes:
            captured["response"] = {"truncated": True, "bytes": len(raw)}
        else:
            parser = Parser()
            events = parser.feed(raw) + parser.close()
            captured["response"] = {"events": [payload_of(e) or e.data for e in events]}
    elif raw is not None:
        captured["response"] = truncated(raw, max_body_bytes)
    return captured


def drift_sample(exchange: Exchange) -> tuple[str, str, set[str]] | None:
    """(backend, endpoint, field paths) of a complete 200 response the service read, for
    the schema-drift watch; None when there is nothing to learn from."""
    answer = exchange.answer
    if answer is None or answer.meter is None or not answer.meter.complete:
        return None
    reader = answer.reader
    if not isinstance(reader, (JsonReader, StreamReader)) or reader.paths is None:
        return None
    if answer.status != 200:
        return None
    return answer.backend.name, answer.drift_endpoint, reader.paths


def observation(exchange: Exchange, tenant_label: bool) -> Observation | None:
    """What the GenAI metrics record for the exchange; None when no provider was called.
    Label values come from the config only."""
    plan, arrival, outcome = exchange.plan, exchange.arrival, exchange.outcome
    if not exchange.forwarded or plan is None or arrival is None or outcome is None:
        return None
    routed = plan.routed
    backend = routed.route.attempts[exchange.attempt - 1].backend
    metric_models = exchange.runtime.metric_models
    requested = routed.requested if routed.requested in metric_models else OTHER
    labels: tuple[str, ...] = (
        _OPERATIONS.get(arrival.endpoint.kind, "chat"),
        backend.provider,
        requested,
        backend.name,
    )
    if tenant_label:
        labels += (arrival.tenant.name,)
    usage, end = outcome.usage, outcome.ended_at
    ttft = tpot = None
    first = exchange.first_chunk_at
    if plan.stream and first is not None and exchange.status == 200:
        ttft = first - exchange.started
        if usage.output_tokens > 1:
            tpot = (end - first) / (usage.output_tokens - 1)
    return Observation(
        labels=labels,
        usage=usage,
        cost=outcome.cost,
        duration=end - exchange.started,
        error_type="" if exchange.status == 200 else str(exchange.status or "cancelled"),
        time_to_first_token=ttft,
        time_per_output_token=tpot,
    )
