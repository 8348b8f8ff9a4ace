"""What an exchange reserves in its tenant's budgets before it is sent, and the price it
is charged at."""

from __future__ import annotations

from typing import Any, Final

from extproc.accounting.budgets import NANOS, Reservation, plan
from extproc.accounting.prices import Price
from extproc.accounting.usage import prompt_bounding
from extproc.apis import METERED, Kind
from extproc.config.runtime import Runtime
from extproc.dataplane.stages import Arrival, Plan
from extproc.routing import Routed
from extproc.slices import Sliced


def requested_output_tokens(kind: Kind, body: dict[str, Any]) -> int | None:
    """The completion length the request caps itself at, if it sets one."""
    if kind is Kind.EMBEDDINGS:
        return 0
    keys = (
        ("max_output_tokens",)
        if kind is Kind.RESPONSES
        else ("max_completion_tokens", "max_tokens")
    )
    for key in keys:
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return None


def price(runtime: Runtime, routed: Routed, attempt: int) -> Price | None:
    """The price of the route's `attempt` (1-based), if the config prices it."""
    if runtime.prices is None:
        return None
    target = routed.route.attempts[attempt - 1]
    return runtime.prices.lookup(target.backend.name, routed.upstream_model_for(attempt - 1))


# Bytes of new text (not counted before in the tenant's requests) a first reservation
# tokenizes, so that a long prompt does not hold the event loop; texts past them reserve
# their bytes (a token is at least one byte). Only texts long enough for their counts to be
# kept (tokens.MEMO_CHARS) are counted: an agent's next turn reserves them by those counts,
# where a short text would be counted again on every request, a large share of a small
# request's work, for a bound that a budget not near its limit does not need. Only a
# refused reservation counts the rest and asks again (the exchange).
QUICK_READ: Final = 16 * 1024


def reservation(
    runtime: Runtime,
    arrival: Arrival,
    planned: Plan,
    sent: dict[str, Any],
    now: float,
    read: int | None = QUICK_READ,
    slices: bool = False,
) -> Sliced[Reservation | None]:
    """The reservation for the request `sent` to the first backend, when its tenant has
    budgets; its prompt counted up to `read` bytes of new text (None: up to the exact
    count's bounds), in slices with `slices` (tokens.measuring's pauses)."""
    tenant, kind = arrival.tenant, arrival.endpoint.kind
    if not tenant.budgets or kind not in METERED:  # a token count is not charged
        return None
    output = requested_output_tokens(kind, sent)
    if output is None:
        output = runtime.reserved_output_tokens
    # An upper bound, never below the count (docs: accounting, budgets): counting a long
    # prompt exactly would hold the event loop.
    short = read is None  # the exact count counts them all
    prompt = yield from prompt_bounding(kind, planned.request, tenant.name, read, slices, short)
    found = price(runtime, planned.routed, 1)
    cost = round(found.estimate(prompt, output) * NANOS) if found else 0
    return plan(tenant.budgets, tenant.name, planned.model, prompt + output, cost, now)
