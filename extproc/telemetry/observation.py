"""One finished exchange as the metrics see it (Metrics.observe)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from extproc.accounting.usage import Usage


@dataclass(slots=True)
class Observation:
    labels: Final[tuple[str, ...]]
    usage: Final[Usage]
    cost: Final[float | None]
    duration: Final[float]
    error_type: Final[str]
    time_to_first_token: Final[float | None]
    time_per_output_token: Final[float | None]

    def __init__(
        self,
        labels: tuple[str, ...],
        usage: Usage,
        cost: float | None,
        duration: float,
        error_type: str,
        time_to_first_token: float | None,
        time_per_output_token: float | None,
    ) -> None:
        self.labels = labels
        self.usage = usage
        self.cost = cost
        self.duration = duration
        self.error_type = error_type
        self.time_to_first_token = time_to_first_token
        self.time_per_output_token = time_per_output_token
