"""The response headers' stage: which attempt answered, and whether and how the service
reads the body (a reader for JSON, one for a stream, one for an error to translate)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from extproc import names
from extproc.accounting.usage import Meter
from extproc.apis import METERED, Kind
from extproc.config.runtime import Runtime, Target
from extproc.dataplane.decisions import Continue
from extproc.dataplane.reader import CountReader, ErrorReader, JsonReader, StreamReader
from extproc.dataplane.stages import Answer, Arrival, Plan
from extproc.digits import strict_int
from extproc.drift import DriftMonitor
from extproc.policy.engine import Decisions, Redactions, response_needs
from extproc.policy.filters import json_filter, media_type, stream_filter
from extproc.translate.translation import Translation


@dataclass(slots=True)
class Reading:
    """What the exchange holds while its response passes: the policy's running state, and
    what it watches for."""

    redactions: Final[Redactions]
    decisions: Final[Decisions]
    capture: Final[bool]  # keep the raw body: the exchange was sampled for capture
    drift: Final[DriftMonitor | None]

    def __init__(
        self,
        redactions: Redactions,
        decisions: Decisions,
        capture: bool,
        drift: DriftMonitor | None,
    ) -> None:
        self.redactions = redactions
        self.decisions = decisions
        self.capture = capture
        self.drift = drift


def reads_response(runtime: Runtime, arrival: Arrival, plan: Plan, redactions: Redactions) -> bool:
    """Whether the service will read the response body (if it is a 200, or an error to
    translate)."""
    return (
        plan.translation is not None
        or plan.mixed_schemas
        or (runtime.read_usage and arrival.endpoint.kind in METERED)
        or response_needs(plan.policies, redactions)
    )


def answer(
    runtime: Runtime,
    arrival: Arrival,
    plan: Plan,
    headers: Mapping[str, str],
    reading: Reading,
    decision: Continue,
) -> Answer:
    """The answer the response headers announce; adds to `decision` what Envoy must do
    for the service to read it."""
    status = strict_int(headers.get(":status", ""), 999) or 0
    routed = plan.routed
    attempt = 1
    translation = plan.translation
    if routed.route.has_fallbacks:
        counted = strict_int(headers.get(names.ATTEMPT_HEADER, "1"))
        if counted is not None and 1 <= counted <= len(routed.route.attempts):
            attempt = counted
        schema = routed.route.attempts[attempt - 1].backend.speaks(arrival.api)
        if plan.mixed_schemas and schema is not arrival.api:
            translation = Translation(arrival.api, schema)
            if plan.memory is not None:
                translation.answer_id = plan.memory.response_id
    if routed.deprecation is not None:
        decision.set_headers.extend(routed.deprecation.response_headers)
    target = routed.route.attempts[attempt - 1]
    reader = _reader(
        runtime, arrival, plan, headers, status, target, translation, reading, decision
    )
    drift_endpoint = ""
    if reader is not None:
        decision.response_body = reader.mode
        if isinstance(reader, (JsonReader, StreamReader)):
            if reading.capture:
                reader.raw = []
            if reading.drift is not None:
                suffix = translation.suffix if translation else arrival.endpoint.suffix
                drift_endpoint = f"{suffix} ({reader.mode})"
                if reading.drift.wants(target.backend.name, drift_endpoint):
                    reader.paths = set()  # watched for schema drift
    meter = reader.meter if isinstance(reader, (JsonReader, StreamReader)) else None
    return Answer(status, attempt, target, translation, reader, meter, drift_endpoint)


def _reader(
    runtime: Runtime,
    arrival: Arrival,
    plan: Plan,
    headers: Mapping[str, str],
    status: int,
    target: Target,
    translation: Translation | None,
    reading: Reading,
    decision: Continue,
) -> JsonReader | StreamReader | ErrorReader | CountReader | None:
    """The reader of this response's body; None: the body passes unread."""
    endpoint = arrival.endpoint
    if translation is not None and status >= 400:
        # The provider's error, in the client's schema.
        decision.remove_headers.append("content-encoding")  # the new body is plain
        client_status = translation.status(status)
        if client_status != status:
            decision.set_headers.append((":status", str(client_status)))
        return ErrorReader(translation, status)
    if endpoint.kind is Kind.COUNT_TOKENS:
        return CountReader(translation) if translation is not None and status == 200 else None
    if status != 200 or endpoint.kind not in METERED:
        return None
    if headers.get("content-encoding", "identity").lower() != "identity":
        # Compressed although the gateway asked for identity: pass it through unread
        # (usage is then estimated) rather than parse bytes that are not JSON.
        return None
    media = media_type(headers.get("content-type", ""))
    checked = response_needs(plan.policies, reading.redactions)
    if not checked and not runtime.read_usage and translation is None:
        return None
    if translation is not None:
        meter = Meter(translation.backend, translation.backend_kind)
    else:
        meter = Meter(endpoint.api, endpoint.kind)
    policy_args = (endpoint, plan.policies, reading.redactions, reading.decisions)
    if media == "text/event-stream":
        stream_policy = stream_filter(*policy_args) if checked else None
        # A translated OpenAI stream always carries usage; the reader drops it for a
        # client that did not ask, after the cache has seen it.
        stream = translation.stream(True) if translation else None
        reader = StreamReader(meter, stream_policy, plan.strip_usage, stream)
        reader.emit_usage = plan.client_include_usage
        reader.usage_asked = (
            translation is not None
            or plan.client_include_usage
            or (plan.strip_usage and not target.backend.omit_stream_options)
        )
        if arrival.cache_write and plan.cache_key is not None and stream_policy is None:
            reader.collected = []
        # Chunks change size as they pass, and a stream cut short gets an end of its
        # own: the length is no longer known.
        decision.remove_headers.append("content-length")
        return reader
    if media == "application/json":
        json_policy = json_filter(*policy_args) if checked else None
        json_reader = JsonReader(meter, json_policy, translation)
        json_reader.keep_answer = plan.memory is not None and plan.memory.keep
        return json_reader
    return None
