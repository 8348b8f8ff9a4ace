"""Conversation state as the exchange keeps it: the earlier turn asked for as an effect and
put before the new input, the turn kept after the answer, the stored-response endpoints,
tenants kept apart, bounds, and a store that fails."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from extproc.dataplane.decisions import (
    Continue,
    Deleted,
    DeleteState,
    Loaded,
    LoadState,
    Reply,
    Unavailable,
)
from extproc.dataplane.exchange import Exchange
from extproc.state.store import MemoryStateStore
from extproc.state.turns import Dropped, Over, Turn
from tests.helpers import runtime, sha256

CONFIG = f"""
backends:
  - {{name: chat, url: "http://127.0.0.1:9/v1"}}
  - {{name: native, url: "http://127.0.0.1:9/n/v1", responses_api: true}}
models:
  - {{name: gpt-4o-mini, routes: [{{backend: chat}}]}}
  - {{name: gpt-native, routes: [{{backend: native}}]}}
conversations: {{max_items: 6}}
tenants:
  - {{name: a, api_key_sha256: ["{sha256("key-a")}"]}}
  - {{name: b, api_key_sha256: ["{sha256("key-b")}"]}}
"""
RUNTIME = runtime(CONFIG)
CHAT_ANSWER = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-4o-mini",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "Hello"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 8, "completion_tokens": 1, "total_tokens": 9},
}


def headers(path: str, method: str = "POST", key: str = "key-a") -> dict[str, str]:
    return {":path": path, ":method": method, "authorization": f"Bearer {key}"}


def post(body: dict[str, Any], key: str = "key-a") -> tuple[Exchange, Any]:
    exchange = Exchange(RUNTIME)
    assert isinstance(exchange.request_headers(headers("/v1/responses", key=key), False), Continue)
    return exchange, exchange.request_body(orjson.dumps(body))


def answered(exchange: Exchange, forward: Any) -> dict[str, Any]:
    """The backend's chat answer through the exchange: the client's Responses answer."""
    assert isinstance(forward, Continue), forward
    exchange.response_headers({":status": "200", "content-type": "application/json"})
    decision = exchange.response_body(orjson.dumps(CHAT_ANSWER), True)
    assert decision.body is not None
    answer: dict[str, Any] = orjson.loads(decision.body)
    return answer


def kept(store: MemoryStateStore, exchange: Exchange) -> None:
    assert exchange.turn is not None and exchange.arrival is not None
    asyncio.run(store.save(exchange.arrival.tenant.name, exchange.turn))


def test_a_conversation_continues_from_the_kept_turn() -> None:
    store = MemoryStateStore(RUNTIME.conversations.bounds, max_total_bytes=2**20, max_entries=9)
    exchange, forward = post({"model": "gpt-4o-mini", "input": "My name is Ann."})
    first = answered(exchange, forward)
    assert first["id"] == exchange.turn.response_id  # type: ignore[union-attr]
    assert first["id"].startswith("resp_") and len(first["id"]) == 53
    kept(store, exchange)
    exchange, effect = post(
        {"model": "gpt-4o-mini", "input": "Who am I?", "previous_response_id": first["id"]}
    )
    assert effect == LoadState("a", first["id"])
    turn = asyncio.run(store.load("a", first["id"]))
    forward = exchange.resolve(Loaded(turn))
    assert isinstance(forward, Continue) and forward.body is not None
    sent = orjson.loads(forward.body)  # in Chat Completions, to the chat backend
    assert [m["content"] for m in sent["messages"]] == ["My name is Ann.", "Hello", "Who am I?"]
    assert "previous_response_id" not in sent and "store" not in sent
    answered(exchange, forward)
    turn = exchange.turn
    assert turn is not None and turn.input_start == 2 and turn.output_start == 3
    assert [item.get("role") for item in turn.items] == ["user", "assistant", "user", "assistant"]


def test_an_unknown_or_foreign_previous_response_is_a_400() -> None:
    exchange, effect = post({"model": "gpt-4o-mini", "input": "x", "previous_response_id": "r"})
    assert isinstance(effect, LoadState)
    reply = exchange.resolve(Loaded(None))
    assert isinstance(reply, Reply) and reply.status == 400
    assert orjson.loads(reply.body)["error"]["code"] == "previous_response_not_found"
    # A shape no store holds is refused without asking one.
    exchange, reply = post({"model": "gpt-4o-mini", "input": "x", "previous_response_id": "a b"})
    assert isinstance(reply, Reply) and reply.status == 400


@pytest.mark.parametrize("reason", list(Over))
def test_a_conversation_past_a_bound_says_which(reason: Over) -> None:
    exchange, _ = post({"model": "gpt-4o-mini", "input": "x", "previous_response_id": "r1"})
    reply = exchange.resolve(Loaded(Dropped("r1", reason)))
    assert isinstance(reply, Reply) and reply.status == 400
    error = orjson.loads(reply.body)["error"]
    assert error["code"] == "conversation_too_long" and reason.value in error["message"]


def test_max_items_counts_the_new_input_too() -> None:
    items = tuple({"role": "user", "content": str(n)} for n in range(5))
    turn = Turn("r1", "gpt-4o-mini", 0, items, 0, 4, {})
    two = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    exchange, effect = post({"model": "gpt-4o-mini", "input": two, "previous_response_id": "r1"})
    assert isinstance(effect, LoadState)  # 5 stored and 2 new: past max_items 6
    reply = exchange.resolve(Loaded(turn))
    assert isinstance(reply, Reply) and orjson.loads(reply.body)["error"]["param"] == (
        "previous_response_id"
    )


def test_a_store_that_fails_is_a_503_for_a_continuation() -> None:
    exchange, _ = post({"model": "gpt-4o-mini", "input": "x", "previous_response_id": "r1"})
    reply = exchange.resolve(Unavailable())
    assert isinstance(reply, Reply) and reply.status == 503
    assert orjson.loads(reply.body)["error"]["code"] == "conversation_state_unavailable"


def test_store_false_and_native_routes_keep_no_conversation() -> None:
    exchange, forward = post({"model": "gpt-4o-mini", "input": "x", "store": False})
    answered(exchange, forward)
    assert exchange.turn is None
    exchange, forward = post({"model": "gpt-native", "input": "x", "previous_response_id": "r"})
    assert isinstance(forward, Continue)  # the backend's own id: sent as it came
    assert exchange.plan is not None and exchange.plan.memory is None


def stored(path: str, method: str = "GET", key: str = "key-a") -> tuple[Exchange, Any]:
    exchange = Exchange(RUNTIME)
    return exchange, exchange.request_headers(headers(path, method, key), True)


TURN = Turn(
    "resp_1",
    "gpt-4o-mini",
    0,
    ({"role": "user", "content": "hi"}, {"type": "message", "role": "assistant", "content": []}),
    0,
    1,
    {"id": "resp_1", "object": "response", "output": []},
)


def test_get_delete_and_input_items_of_a_kept_answer() -> None:
    exchange, effect = stored("/v1/responses/resp_1")
    assert effect == LoadState("a", "resp_1")
    reply = exchange.resolve(Loaded(TURN))
    assert isinstance(reply, Reply) and orjson.loads(reply.body) == TURN.response
    exchange, _ = stored("/v1/responses/resp_1/input_items?order=asc&limit=5")
    reply = exchange.resolve(Loaded(TURN))
    assert isinstance(reply, Reply)
    page = orjson.loads(reply.body)
    assert page["object"] == "list" and not page["has_more"]
    assert page["data"][0]["content"] == [{"type": "input_text", "text": "hi"}]
    exchange, _ = stored("/v1/responses/resp_1", "DELETE")
    assert exchange.resolve(Loaded(TURN)) == DeleteState("a", "resp_1")
    reply = exchange.resolve(Deleted(True))
    assert isinstance(reply, Reply) and orjson.loads(reply.body)["deleted"] is True
    exchange, _ = stored("/v1/responses/resp_1", key="key-b")
    reply = exchange.resolve(Loaded(None))
    assert isinstance(reply, Reply) and reply.status == 404


def test_a_backends_own_answer_is_reached_for_its_tenant_only() -> None:
    marker = Turn("resp_n", "gpt-native", 0, (), 0, 0, {"backend": "native"}, native=True)
    exchange, _ = stored("/v1/responses/resp_n")
    forward = exchange.resolve(Loaded(marker))
    assert isinstance(forward, Continue)
    assert (":path", "/n/v1/responses/resp_n") in forward.set_headers
    assert "authorization" in forward.remove_headers  # the client's key never goes
    exchange, _ = stored("/v1/responses/resp_n", "DELETE")
    assert exchange.resolve(Loaded(marker)) == DeleteState("a", "resp_n")
    assert isinstance(exchange.resolve(Deleted(True)), Continue)


@pytest.mark.parametrize(
    ("path", "method", "status"),
    [
        ("/v1/responses/resp_1/input_items", "DELETE", 405),
        ("/v1/responses/resp_1", "POST", 405),
        ("/v1/responses/a/b", "GET", 404),
        ("/v1/responses/" + "x" * 300, "GET", 404),
    ],
)
def test_stored_response_paths_refuse_what_they_do_not_serve(
    path: str, method: str, status: int
) -> None:
    _, reply = stored(path, method)
    assert isinstance(reply, Reply) and reply.status == status


@pytest.mark.parametrize("limit", ["1000", "0", "9" * 5000, "%C2%B2", "-1", "abc"])
def test_input_items_pages_are_bounded(limit: str) -> None:
    exchange, _ = stored(f"/v1/responses/resp_1/input_items?limit={limit}")
    reply = exchange.resolve(Loaded(TURN))
    assert isinstance(reply, Reply) and reply.status == 400
    assert orjson.loads(reply.body)["error"]["param"] == "limit"
