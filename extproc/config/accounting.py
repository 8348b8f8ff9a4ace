"""The accounting part of the config: price table, budgets, budget store."""

from __future__ import annotations

from extproc.accounting.budgets import NANOS, Budget, Window
from extproc.accounting.prices import Price, PriceRule, PriceTable
from extproc.config import settings as st
from extproc.config.context import Context
from extproc.config.service import redis
from extproc.config.v1 import config_pb2 as pb
from extproc.glob import Glob

WINDOWS = {
    pb.Budget.MINUTE: Window.MINUTE,
    pb.Budget.HOUR: Window.HOUR,
    pb.Budget.DAY: Window.DAY,
    pb.Budget.MONTH: Window.MONTH,
}


def build_prices(ctx: Context, backends: set[str]) -> PriceTable:
    table = ctx.config.prices
    rules = []
    for index, entry in enumerate(table.models):
        path = f"prices.models[{index}]"
        if entry.backend and entry.backend not in backends:
            ctx.problem(f"{path}.backend", f'no backend named "{entry.backend}"')
        if ctx.failed(path):
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


def build_budgets(ctx: Context, tenant: pb.Tenant, path: str) -> tuple[Budget, ...]:
    budgets = []
    seen: set[str] = set()
    for index, source in enumerate(tenant.budgets):
        here = f"{path}.budgets[{index}]"
        if not ctx.failed(f"{here}.name") and source.name in seen:
            ctx.problem(f"{here}.name", f'duplicate budget name "{source.name}"')
        seen.add(source.name)
        window = WINDOWS.get(source.window)
        if ctx.failed(here) or window is None:
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


def budget_store(ctx: Context) -> st.BudgetStore:
    store = ctx.config.accounting.store
    return st.BudgetStore(
        redis=redis(store.redis) if store.HasField("redis") else None, fail_open=store.fail_open
    )
