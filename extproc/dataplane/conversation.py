"""Conversation state for the Responses API, as the exchange keeps it for backends that
have none: which requests the gateway remembers, the earlier turns put before a request's
input, the turn kept after the answer, and the stored-response endpoints' answers.

A route keeps its own state when every attempt takes the Responses API as it is (the
request goes as sent, `previous_response_id` and all); on any other route the gateway does.
Policies read a request's new input only: the stored items passed them when they were new.
"""

from __future__ import annotations

from typing import Any, Final, NamedTuple

import orjson

from extproc.accounting.usage import Meter
from extproc.apis import ApiError, Endpoint, Kind, Schema
from extproc.config.runtime import Route
from extproc.config.settings import ConversationSettings
from extproc.dataplane.decisions import LoadState
from extproc.digits import strict_int
from extproc.state.turns import Dropped, Over, Turn, new_response_id, valid_id


class Memory(NamedTuple):
    """What the gateway does with a Responses request's conversation."""

    response_id: str  # the id its answer gets
    keep: bool  # the answer is kept under that id (`store`)
    recalled: int  # items put before the request's input from the stored turn


def keeps_state(endpoint: Endpoint, route: Route) -> bool:
    """Whether the gateway, not the backend, holds this route's conversations."""
    client = endpoint.api
    return client is Schema.OPENAI_RESPONSES and route.schemas(client) != {client}


def recall(
    endpoint: Endpoint,
    route: Route,
    settings: ConversationSettings,
    body: dict[str, Any],
    tenant: str,
) -> tuple[Memory | None, ApiError | LoadState | None]:
    """What the gateway does with a request's conversation, and the earlier turn to load
    (`previous_response_id`; `resume` once it is loaded), or why it cannot."""
    if endpoint.body_kind is not Kind.RESPONSES or not keeps_state(endpoint, route):
        return None, None
    previous = body.get("previous_response_id")
    keep = endpoint.kind is Kind.RESPONSES and body.get("store") is not False
    memory = Memory(new_response_id(), keep and not settings.disabled, 0)
    if previous is None:
        return memory, None
    if settings.disabled:
        return memory, ApiError(
            400,
            "This gateway keeps no conversation state for this model "
            f"({settings.disabled_because}); send the whole conversation as `input`.",
            "conversation_state_disabled",
            "previous_response_id",
        )
    if not valid_id(previous):
        return memory, _not_found(previous)
    return memory, LoadState(tenant, previous)


def _not_found(previous: str) -> ApiError:
    return ApiError(
        400,
        f"Previous response with id '{previous}' not found.",
        "previous_response_not_found",
        "previous_response_id",
    )


_OVER: Final = {
    Over.ITEMS: "max_items",
    Over.BYTES: "max_bytes",
    Over.EXPIRED: "ttl",
}


def resume(
    settings: ConversationSettings, body: dict[str, Any], turn: Turn | Dropped | None
) -> ApiError | int:
    """The earlier turn, loaded: its items put before the request's input (the body
    changes), within the bounds; the number of items recalled. The turn kept after this
    answer is checked against the byte bound."""
    previous = body["previous_response_id"]
    if turn is None:
        return _not_found(previous)
    given = input_items(body.get("input"))
    over: Over | None = None
    if isinstance(turn, Dropped):
        over = turn.reason
    elif len(turn.items) + len(given) > settings.bounds.max_items:
        over = Over.ITEMS
    if over is not None or not isinstance(turn, Turn):
        bound = _OVER[over or Over.ITEMS]
        return ApiError(
            400,
            f"The conversation up to '{previous}' is past the gateway's `{bound}` for "
            "conversations it keeps; start a new one with the whole conversation as `input`.",
            "conversation_too_long",
            "previous_response_id",
        )
    body["input"] = [*turn.items, *given]
    del body["previous_response_id"]  # the gateway's id: no backend knows it
    return len(turn.items)


def input_items(given: Any) -> list[Any]:
    """A request's `input` as items (a string is one user message)."""
    if isinstance(given, str):
        return [{"type": "message", "role": "user", "content": given}]
    return list(given) if isinstance(given, list) else []


def turn(memory: Memory, request: dict[str, Any], answer: bytes | None, now: float) -> Turn | None:
    """The turn to keep: the input as sent (earlier turns' items, then the request's own)
    and the answer's output items. None when the answer is no whole response."""
    if answer is None:
        return None
    try:
        response = orjson.loads(answer)
    except orjson.JSONDecodeError:
        return None
    output = response.get("output") if isinstance(response, dict) else None
    if not isinstance(output, list) or response.get("status") not in ("completed", "incomplete"):
        return None
    given = input_items(request.get("input"))
    return Turn(
        response_id=memory.response_id,
        model=str(response.get("model", "")),
        created_at=int(now),
        items=(*given, *output),
        input_start=memory.recalled,
        output_start=len(given),
        response=response,
    )


def owned(
    request: dict[str, Any], model: str, backend: str, meter: Meter | None, now: float
) -> Turn | None:
    """The record of an answer its backend keeps (`store`), whose id the meter read: the
    tenant that made it may reach it through the gateway."""
    # A JSON answer's, or a stream's `response.created`.
    answer = (meter.body if meter.body is not None else meter.created) if meter else None
    response_id = answer.get("id") if answer is not None else None
    if request.get("store") is False or type(response_id) is not str or not valid_id(response_id):
        return None
    return Turn(response_id, model, int(now), (), 0, 0, {"backend": backend}, native=True)


# -- GET and DELETE /v1/responses/{id}, GET /v1/responses/{id}/input_items ----------------


def not_found(response_id: str) -> ApiError:
    return ApiError(404, f"No response found with id '{response_id}'.", "not_found", None)


def deleted(response_id: str) -> dict[str, Any]:
    return {"id": response_id, "object": "response.deleted", "deleted": True}


_ORDERS: Final = ("asc", "desc")


def listed(turn: Turn, query: dict[str, str]) -> ApiError | dict[str, Any]:
    """The page of a turn's input items the query asks for (`limit` 1-100, default 20;
    `order` asc or desc, default desc; `after` an item id), as the API lists them."""
    limit = strict_int(query.get("limit", "20"), 100) or 0
    if not 1 <= limit <= 100:
        return ApiError(400, "limit must be an integer from 1 to 100.", "invalid_value", "limit")
    order = query.get("order", "desc")
    if order not in _ORDERS:
        return ApiError(400, "order must be 'asc' or 'desc'.", "invalid_value", "order")
    items = [
        _with_id(item, turn.response_id, index)
        for index, item in enumerate(turn.items[turn.input_start : turn.output_start])
    ]
    if order == "desc":
        items.reverse()
    after = query.get("after")
    if after is not None:
        ids = [item.get("id") for item in items]
        items = items[ids.index(after) + 1 :] if after in ids else []
    page = items[:limit]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0].get("id") if page else None,
        "last_id": page[-1].get("id") if page else None,
        "has_more": len(items) > limit,
    }


def _with_id(item: Any, response_id: str, index: int) -> dict[str, Any]:
    """An input item as the API lists it: with an id (given ones keep theirs) and, for a
    message, its content as parts."""
    if not isinstance(item, dict):
        return {"id": f"msg_{response_id[5:]}_in{index}", "type": "message", "content": []}
    listed = dict(item)
    listed.setdefault("id", f"msg_{response_id[5:]}_in{index}")
    if listed.get("type", "message") == "message":
        listed["type"] = "message"
        content = listed.get("content")
        if isinstance(content, str):
            kind = "output_text" if listed.get("role") == "assistant" else "input_text"
            listed["content"] = [{"type": kind, "text": content}]
    return listed
