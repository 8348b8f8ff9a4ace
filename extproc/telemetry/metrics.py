"""Prometheus metrics of the service. Label values come from the config only (bounded)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.process_collector import ProcessCollector

# The service's own processing time per ext_proc message: tens of microseconds when all
# is well, so the buckets start far below the usual web-request defaults.
_PHASE_BUCKETS = (
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
PHASES = (
    "request_headers",
    "request_body",
    "response_headers",
    "response_body",
    "upstream_request_headers",
    "upstream_request_body",
)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
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
            "extproc_active_streams", "ext_proc streams in progress.", registry=self.registry
        )
        # Bound children once: labels() costs a dict lookup and a lock per call.
        self.phase = {name: self.phase_seconds.labels(name) for name in PHASES}

    def serve(self, address: str) -> None:
        host, _, port = address.rpartition(":")
        start_http_server(int(port), addr=host, registry=self.registry)
