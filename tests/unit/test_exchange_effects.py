"""The exchange's effects: asked as values, answered through `resolve`, in order; and the
request body's steps, which stop at the first refusal."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from extproc.apis import ApiError
from extproc.dataplane import steps
from extproc.dataplane.decisions import (
    Continue,
    Found,
    Lookup,
    Reply,
    Reserve,
    Reserved,
    Unavailable,
)
from extproc.dataplane.exchange import Exchange
from tests.helpers import runtime, sha256

CONFIG = f"""
backends:
  - {{name: openai, url: "http://127.0.0.1:9/v1"}}
models:
  - {{name: gpt-4o-mini, routes: [{{backend: openai}}], cache: {{mode: all}}}}
accounting:
  store: {{fail_open: FAIL_OPEN}}
tenants:
  - name: metered
    api_key_sha256: ["{sha256("key-m")}"]
    budgets: [{{name: minute, window: minute, max_tokens: 2000}}]
"""
CLOSED = runtime(CONFIG.replace("FAIL_OPEN", "false"))
OPEN = runtime(CONFIG.replace("FAIL_OPEN", "true"))
CHAT = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
ANSWER = orjson.dumps(
    {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 8, "completion_tokens": 1, "total_tokens": 9},
    }
)


def started(rt: Any = CLOSED) -> Exchange:
    exchange = Exchange(rt)
    headers = {":path": "/v1/chat/completions", ":method": "POST", "x-api-key": "key-m"}
    assert isinstance(exchange.request_headers(headers, end_of_stream=False), Continue)
    return exchange


def test_the_cache_is_asked_first_then_the_budget_then_the_request_goes() -> None:
    exchange = started()
    lookup = exchange.request_body(CHAT)
    assert isinstance(lookup, Lookup) and exchange.plan is not None
    assert lookup.key == exchange.plan.cache_key
    reserve = exchange.resolve(Found(None))
    assert isinstance(reserve, Reserve) and not exchange.forwarded
    forward = exchange.resolve(Reserved(None))
    assert isinstance(forward, Continue) and forward.clear_route_cache
    assert exchange.forwarded and exchange.reservation is reserve.reservation


def test_a_cache_hit_answers_and_reserves_nothing() -> None:
    exchange = started()
    assert isinstance(exchange.request_body(CHAT), Lookup)
    reply = exchange.resolve(Found(ANSWER))
    assert isinstance(reply, Reply) and reply.status == 200
    assert orjson.loads(reply.body)["choices"][0]["message"]["content"] == "Hello"
    assert not exchange.forwarded and exchange.reservation is None
    assert exchange.finish() == []
    assert exchange.outcome is not None and exchange.outcome.usage.total_tokens == 9


def test_an_exhausted_budget_is_the_clients_429() -> None:
    exchange = started()
    exchange.request_body(CHAT)
    reserve = exchange.resolve(Found(None))
    assert isinstance(reserve, Reserve)
    refusal = exchange.resolve(Reserved(reserve.reservation.charges[0]))
    assert isinstance(refusal, Reply) and refusal.status == 429
    assert orjson.loads(refusal.body)["error"]["code"] == "budget_exceeded"
    assert not exchange.forwarded and exchange.finish() == []


@pytest.mark.parametrize(("rt", "status"), [(CLOSED, 503), (OPEN, None)])
def test_a_budget_store_that_cannot_answer_fails_as_configured(rt: Any, status: int | None) -> None:
    exchange = started(rt)
    exchange.request_body(CHAT)
    assert isinstance(exchange.resolve(Found(None)), Reserve)
    decided = exchange.resolve(Unavailable())
    if status is None:
        assert isinstance(decided, Continue) and exchange.forwarded
        assert exchange.reservation is None  # nothing was taken: nothing to settle
    else:
        assert isinstance(decided, Reply) and decided.status == status
        assert orjson.loads(decided.body)["error"]["code"] == "budget_unavailable"
        assert not exchange.forwarded


def test_a_result_with_no_effect_asked_is_a_programming_error() -> None:
    exchange = started()
    with pytest.raises(AssertionError):
        exchange.resolve(Found(None))


def test_the_steps_stop_at_the_first_refusal() -> None:
    exchange = started()
    assert exchange.arrival is not None
    ran: list[str] = []

    def first(draft: steps.Draft) -> ApiError | None:
        ran.append("first")
        return ApiError(400, "no", "refused")

    def second(draft: steps.Draft) -> ApiError | None:
        ran.append("second")
        return None

    draft = steps.Draft(
        CLOSED, exchange.arrival, CHAT, 0.0, 0.0, exchange.redactions, exchange.decisions
    )
    refusal, resume_at = steps.run(draft, 0, (first, second))
    assert isinstance(refusal, ApiError) and refusal.code == "refused" and ran == ["first"]
    assert resume_at == 1


def test_every_step_passes_a_plain_request_into_a_plan() -> None:
    exchange = started()
    assert exchange.arrival is not None
    draft = steps.Draft(
        CLOSED, exchange.arrival, CHAT, 0.0, 0.0, exchange.redactions, exchange.decisions
    )
    assert steps.run(draft) == (None, len(steps.STEPS))
    plan = draft.plan()
    assert plan.model == "gpt-4o-mini" and plan.translation is None and not plan.stream
    assert plan.cache_key is not None and plan.first.backend.name == "openai"
