"""One finished exchange as the metrics see it (Metrics.observe)."""

from __future__ import annotations

from dataclasses import dataclass

from extproc.accounting.usage import Usage


@dataclass(frozen=True, slots=True)
class Observation:
    labels: tuple[str, ...]
    usage: Usage
    cost: float | None
    duration: float
    error_type: str
    time_to_first_token: float | None
    time_per_output_token: float | None
