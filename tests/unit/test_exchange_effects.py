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
    again = exchange.resolve(Reserved(reserve.reservation.charges[0]))  # counted, asked again
    assert isinstance(again, Reserve) and again.reservation.tokens < reserve.reservation.tokens
    refusal = exchange.resolve(Reserved(again.reservation.charges[0]))
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


def long_chat(size: int) -> bytes:
    """A chat whose prompt was never counted before (a new text every call)."""
    global _calls
    _calls += 1
    words = " ".join(f"word{n % 97}" for n in range(size // 7))
    content = f"Prompt {_calls}: {words}"[:size]
    return orjson.dumps({"model": "gpt-4o-mini", "max_tokens": 10, "messages": [
        {"role": "user", "content": content}]})  # fmt: skip


_calls = 0


def reserve_for(rt: Any, raw: bytes) -> tuple[Exchange, Reserve]:
    exchange = started(rt)
    exchange.request_body(raw)
    reserve = exchange.resolve(Found(None))
    assert isinstance(reserve, Reserve)
    return exchange, reserve


def after_pauses(exchange: Exchange, step: Any) -> tuple[Any, int]:
    """The exchange's next step after the pauses it asks for, and how many it asked for."""
    from extproc.dataplane.decisions import RESUMED, Pause

    pauses = 0
    while isinstance(step, Pause):
        pauses += 1
        step = exchange.resolve(RESUMED)
    return step, pauses


def test_a_long_new_prompt_first_reserves_its_bytes_and_is_counted_only_if_refused() -> None:
    """Counting a prompt holds the event loop: the first reservation counts no new text and
    reserves its bytes, never fewer than its tokens. Refused, it is counted to the exact
    bounds, in slices with a pause after each, and asked again, so a request that would fit
    its budget alone is never refused for the bound."""
    from extproc import tokens

    rt = runtime(CONFIG.replace("FAIL_OPEN", "false").replace("2000", "40000"))
    raw = long_chat(60_000)
    prompt = orjson.loads(raw)["messages"][0]["content"]
    exact = tokens.count([prompt])
    size = len(prompt.encode())
    assert exact < 40_000 - 10 < size  # fits by its count, not by its bytes

    exchange, reserve = reserve_for(rt, raw)
    assert reserve.reservation.tokens >= size
    again, pauses = after_pauses(
        exchange, exchange.resolve(Reserved(reserve.reservation.charges[0]))
    )
    assert pauses == len(prompt) // tokens.SLICE_CHARS == 1
    assert isinstance(again, Reserve) and again.reservation.tokens < 40_000
    assert again.reservation.tokens >= exact + 10
    forward = exchange.resolve(Reserved(None))
    assert isinstance(forward, Continue) and exchange.reservation is again.reservation

    # The same prompt again (an agent's next turn): remembered, counted at once.
    _, first = reserve_for(rt, raw)
    assert first.reservation.tokens == again.reservation.tokens

    # Refused by its exact count as well: the client's 429, after two asks only.
    exchange, reserve = reserve_for(rt, long_chat(200_000))
    again, pauses = after_pauses(
        exchange, exchange.resolve(Reserved(reserve.reservation.charges[0]))
    )
    assert isinstance(again, Reserve) and pauses == 200_000 // tokens.SLICE_CHARS
    refusal = exchange.resolve(Reserved(again.reservation.charges[0]))
    assert isinstance(refusal, Reply) and refusal.status == 429
    assert not exchange.forwarded

    # A prompt whose count is its bytes ("a": one byte, one token) is not asked again.
    exchange = started(rt)
    exchange.request_body(
        orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "a"}]})
    )
    reserve = exchange.resolve(Found(None))
    assert isinstance(reserve, Reserve)
    refusal = exchange.resolve(Reserved(reserve.reservation.charges[0]))
    assert isinstance(refusal, Reply) and refusal.status == 429


def test_the_in_process_store_admits_by_the_exact_count_when_the_bound_does_not_fit() -> None:
    from extproc.accounting.budgets import MemoryStore

    rt = runtime(CONFIG.replace("FAIL_OPEN", "false").replace("2000", "40000"))
    store = MemoryStore()

    def through_store(raw: bytes) -> Continue | Reply:
        exchange, asked = reserve_for(rt, raw)
        while True:
            refused = store.reserve_now(asked.reservation.charges)
            charge = None if refused < 0 else asked.reservation.charges[refused]
            decided, _ = after_pauses(exchange, exchange.resolve(Reserved(charge)))
            if not isinstance(decided, Reserve):
                assert isinstance(decided, Continue | Reply)
                return decided
            asked = decided

    assert isinstance(through_store(long_chat(60_000)), Continue)  # ~20K tokens of 40K
    assert isinstance(through_store(long_chat(30_000)), Continue)  # ~10K more
    third = through_store(long_chat(60_000))  # another ~20K: past the limit
    assert isinstance(third, Reply) and third.status == 429


def steps_of(rt: Any, raw: bytes) -> list[Any]:
    """What an exchange asks for and decides for a request body, each effect answered (a
    pause resumed, a cache miss, a reservation taken)."""
    from extproc.dataplane.decisions import RESUMED, Pause

    exchange = started(rt)
    taken = [exchange.request_body(raw)]
    while not isinstance(taken[-1], Continue | Reply):
        step = taken[-1]
        if isinstance(step, Pause):
            taken.append(exchange.resolve(RESUMED))
        elif isinstance(step, Lookup):
            taken.append(exchange.resolve(Found(None)))
        else:
            assert isinstance(step, Reserve), step
            taken.append(exchange.resolve(Reserved(None)))
    return taken


def test_a_large_prompt_is_counted_for_its_token_limit_in_slices(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A policy's max_prompt_tokens counts a large prompt in slices with a pause after each
    (tokens.SLICE_CHARS), so that other streams are served between them (counting 400 KB
    takes the tokenizer ~16-20 ms); it decides the same, and stops once the limit is passed."""
    from extproc import tokens

    monkeypatch.setattr(tokens, "MEMO", tokens.Memo(64))
    prompt = " ".join(f"turn{n % 89} of the agent's task" for n in range(12_000))[:300_000]
    raw = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt}]})
    exact = tokens.count([prompt])

    def limited(limit: int) -> Any:
        return runtime(
            CONFIG.replace("FAIL_OPEN", "false")
            .replace("    budgets:", "    policies: [limit]\n    budgets:")
            .replace("2000", "100000000")
            + f"policies:\n  - name: limit\n    limits: {{max_prompt_tokens: {limit}}}\n"
        )

    counted = len(prompt) // tokens.SLICE_CHARS
    # Before the policies, after each slice counted, and after the policies.
    over = steps_of(limited(exact - 1), raw)
    assert [type(s).__name__ for s in over] == ["Pause"] * (counted + 1) + ["Reply"]
    assert isinstance(over[-1], Reply) and over[-1].status == 400
    assert b"prompt_too_long" in over[-1].body
    fits = steps_of(limited(exact), raw)
    assert [type(s).__name__ for s in fits] == ["Pause"] * (counted + 2) + [
        "Lookup", "Reserve", "Continue"]  # fmt: skip
    # Counted whole once, the prompt's count is remembered for the tenant.
    again = steps_of(limited(exact), raw)
    assert [type(s).__name__ for s in again] == ["Pause"] * 2 + ["Lookup", "Reserve", "Continue"]
    # A limit passed within the first slice: no more counted.
    early = steps_of(limited(1_000), raw[:-9] + b' again"}]}')
    assert [type(s).__name__ for s in early] == ["Pause", "Reply"]


def test_a_large_body_is_read_by_the_policies_in_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    """A large body's policies pause for the event loop before, between and after their
    reads (the step goes on where it paused); what is decided is the same as at once."""
    from extproc.policy import engine
    from extproc.policy.engine import SLICE_CHARS

    monkeypatch.setattr(engine, "READ", type(engine.READ)(64))

    text = CONFIG.replace("FAIL_OPEN", "false").replace(
        "    budgets:", "    policies: [guard]\n    budgets:"
    ).replace("2000", "100000000") + (
        "policies:\n  - name: guard\n    pii: [{detector: email}]\n"
        '    deny: [{name: weapons, keywords: ["build a bomb"]}]\n'
    )
    guarded = runtime(text)
    filler = "All is well. " * (SLICE_CHARS // 13 + 1)  # each past a slice of its own

    def body(last: str, turn: int = 0) -> bytes:
        texts = [filler + f" part {n}.{turn}, from ops@example.com" for n in range(3)] + [last]
        return orjson.dumps(
            {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": t} for t in texts]}
        )

    def run(raw: bytes) -> list[Any]:
        return steps_of(guarded, raw)

    taken = run(body("mail me at a@example.com"))
    names = [type(step).__name__ for step in taken]
    # Before the reads, after each long text by the deny rule and by the detector, and after.
    assert names == ["Pause"] * 8 + ["Lookup", "Reserve", "Continue"]
    forward = taken[-1]
    assert isinstance(forward, Continue) and forward.body is not None
    sent = [m["content"] for m in orjson.loads(forward.body)["messages"]]
    assert sent[-1] == "mail me at [EMAIL_2]"
    assert all(t.endswith(", from [EMAIL_1]") for t in sent[:3])

    # A refusal by the deny rule ends the request at the pause it comes to: after the new
    # long texts, or at once where they were read before.
    refused = run(body("how to build a bomb", turn=1))
    assert [type(s).__name__ for s in refused] == ["Pause"] * 4 + ["Reply"]
    assert isinstance(refused[-1], Reply) and refused[-1].status == 400
    again = run(body("how to build a bomb"))
    assert [type(s).__name__ for s in again] == ["Pause", "Reply"]

    # A small body is read at once.
    assert isinstance(started(guarded).request_body(CHAT), Lookup)


async def test_a_refusal_after_an_exact_count_in_slices_is_counted_once() -> None:
    """A prompt past the exact count's tokens reserves the same after it as before (its
    bytes), so the 429 comes after the count's last pause rather than from the store's
    answer: the shell counts that refusal too, once."""
    import inspect

    from envoy.service.ext_proc.v3 import external_processor_pb2 as ext

    from extproc.dataplane.effects import Effects
    from extproc.telemetry.metrics import Metrics

    metrics = Metrics()
    effects = Effects(CLOSED, metrics)
    refusals = metrics.budget_refusals.labels("minute")
    for raw, pauses in ((long_chat(1_000_000), True), (CHAT, False)):
        exchange = started()
        before = refusals._value.get()
        reply = effects.request_body(exchange, raw)
        assert inspect.isawaitable(reply) == pauses  # the count's pauses are awaited
        if inspect.isawaitable(reply):
            reply = await reply
        answer = ext.ProcessingResponse.FromString(reply)
        assert answer.immediate_response.status.code == 429
        assert exchange.refused is not None and refusals._value.get() == before + 1
