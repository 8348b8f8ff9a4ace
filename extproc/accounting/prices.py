"""The price table: cost of a usage record, looked up once per (backend, upstream model)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from extproc.glob import Glob

if TYPE_CHECKING:
    from extproc.accounting.usage import Usage
PER_MILLION: Final = 1_000_000


@dataclass(frozen=True, slots=True)
class Price:
    """Prices per million tokens."""

    input: float
    output: float
    cached_input: float
    cache_creation_input: float

    def cost(self, usage: Usage) -> float:
        return (
            usage.uncached_input_tokens * self.input
            + usage.cached_input_tokens * self.cached_input
            + usage.cache_creation_input_tokens * self.cache_creation_input
            + usage.output_tokens * self.output
        ) / PER_MILLION

    def estimate(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.input + output_tokens * self.output) / PER_MILLION


@dataclass(frozen=True, slots=True)
class PriceRule:
    models: tuple[Glob, ...]
    backend: str  # "" matches any backend
    price: Price


@dataclass(slots=True)
class PriceTable:
    currency: str = "USD"
    rules: tuple[PriceRule, ...] = ()
    # Bounded by the config for exact models; glob models add one entry per upstream id
    # seen, so the cache is capped.
    _cache: dict[tuple[str, str], Price | None] = field(default_factory=dict)
    _CACHE_MAX = 4096

    def lookup(self, backend: str, upstream_model: str) -> Price | None:
        key = (backend, upstream_model)
        try:
            return self._cache[key]
        except KeyError:
            pass
        found = None
        for rule in self.rules:
            if rule.backend and rule.backend != backend:
                continue
            if any(glob.match(upstream_model) for glob in rule.models):
                found = rule.price
                break
        if len(self._cache) >= self._CACHE_MAX:
            self._cache.clear()
        self._cache[key] = found
        return found
