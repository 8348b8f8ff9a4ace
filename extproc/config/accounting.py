"""The accounting part of the config: price table, budgets, budget store."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from urllib.parse import urlsplit

from extproc.accounting.budgets import NANOS, Budget, Window
from extproc.accounting.prices import Price, PriceRule, PriceTable
from extproc.config.schema import NAME
from extproc.config.v1 import config_pb2 as pb
from extproc.glob import Glob

DEFAULT_CURRENCY = "USD"
DEFAULT_RESERVED_OUTPUT_TOKENS = 4096
DEFAULT_REDIS_PREFIX = "extproc:"
DEFAULT_REDIS_TIMEOUT_S = 0.25
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_MODEL_PATTERN = re.compile(r"^[\x21-\x7e]{1,256}$")
_WINDOWS = {
    pb.Budget.MINUTE: Window.MINUTE,
    pb.Budget.HOUR: Window.HOUR,
    pb.Budget.DAY: Window.DAY,
    pb.Budget.MONTH: Window.MONTH,
}

Problem = Callable[[str, str], None]


def apply_defaults(config: pb.Config) -> None:
    if not config.prices.currency:
        config.prices.currency = DEFAULT_CURRENCY
    accounting = config.accounting
    if not accounting.default_reserved_output_tokens:
        accounting.default_reserved_output_tokens = DEFAULT_RESERVED_OUTPUT_TOKENS
    if accounting.store.WhichOneof("kind") is None:
        accounting.store.memory.SetInParent()
    if accounting.store.HasField("redis"):
        store = accounting.store.redis
        if not store.key_prefix:
            store.key_prefix = DEFAULT_REDIS_PREFIX
        if not store.HasField("timeout"):
            store.timeout.FromNanoseconds(int(DEFAULT_REDIS_TIMEOUT_S * 1e9))


def _non_negative(value: float, path: str, problem: Problem) -> bool:
    if not math.isfinite(value) or value < 0:
        problem(path, "must be a non-negative number")
        return False
    return True


def build_prices(config: pb.Config, backends: set[str], problem: Problem) -> PriceTable:
    table = config.prices
    if not _CURRENCY.match(table.currency):
        problem("prices.currency", "expected an ISO 4217 code such as USD or EUR")
    rules = []
    for index, entry in enumerate(table.models):
        path = f"prices.models[{index}]"
        ok = True
        if not entry.models:
            problem(f"{path}.models", "at least one model id or pattern is required")
            ok = False
        for position, pattern in enumerate(entry.models):
            if not _MODEL_PATTERN.match(pattern):
                problem(f"{path}.models[{position}]", f'"{pattern}" is not a valid pattern')
                ok = False
        if entry.backend and entry.backend not in backends:
            problem(f"{path}.backend", f'no backend named "{entry.backend}"')
            ok = False
        for name in ("input", "output", "cached_input", "cache_creation_input"):
            ok = _non_negative(getattr(entry, name), f"{path}.{name}", problem) and ok
        if not ok:
            continue
        price = Price(
            input=entry.input,
            output=entry.output,
            cached_input=entry.cached_input if entry.HasField("cached_input") else entry.input,
            cache_creation_input=(
                entry.cache_creation_input
                if entry.HasField("cache_creation_input")
                else entry.input
            ),
        )
        rules.append(PriceRule(tuple(Glob(p) for p in entry.models), entry.backend, price))
    return PriceTable(currency=table.currency, rules=tuple(rules))


def build_budgets(tenant: pb.Tenant, path: str, problem: Problem) -> tuple[Budget, ...]:
    budgets = []
    seen: set[str] = set()
    for index, source in enumerate(tenant.budgets):
        here = f"{path}.budgets[{index}]"
        ok = True
        if not NAME.match(source.name):
            problem(f"{here}.name", f'"{source.name}" is not a valid name')
            ok = False
        elif source.name in seen:
            problem(f"{here}.name", f'duplicate budget name "{source.name}"')
            ok = False
        seen.add(source.name)
        window = _WINDOWS.get(source.window)
        if window is None:
            problem(f"{here}.window", "required: minute, hour, day or month")
            ok = False
        ok = _non_negative(source.max_cost, f"{here}.max_cost", problem) and ok
        if not source.max_tokens and not source.max_cost:
            problem(here, "set max_tokens, max_cost or both")
            ok = False
        for position, pattern in enumerate(source.models):
            if not _MODEL_PATTERN.match(pattern):
                problem(f"{here}.models[{position}]", f'"{pattern}" is not a valid pattern')
                ok = False
        if not ok or window is None:
            continue
        budgets.append(
            Budget(
                name=source.name,
                window=window,
                max_tokens=source.max_tokens,
                max_cost_nanos=round(source.max_cost * NANOS),
                models=tuple(Glob(p) for p in source.models),
                per_model=source.per_model,
            )
        )
    return tuple(budgets)


def check_store(config: pb.Config, problem: Problem) -> None:
    store = config.accounting.store
    if not store.HasField("redis"):
        return
    url = store.redis.url
    scheme = urlsplit(url).scheme
    if scheme not in ("redis", "rediss", "unix"):
        problem(
            "accounting.store.redis.url",
            'expected "redis://host:port/db", "rediss://..." or "unix:///path"',
        )
    if store.redis.timeout.ToNanoseconds() <= 0:
        problem("accounting.store.redis.timeout", "must be positive")
