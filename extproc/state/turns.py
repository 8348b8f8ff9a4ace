"""A stored response and the conversation it ends, its bounds, its encoding, its id.

Each response is kept with the whole conversation up to it (earlier turns' items, its
own input, its output), so a request naming it as `previous_response_id` costs one read.
The copies cost bytes over a long conversation; `max_bytes` bounds each one
(docs/decisions/conversation-state.md).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeGuard

import orjson

# Response ids a store accepts: OpenAI's ("resp_" and hex), and the usual id characters of
# other servers, bounded so that a client's previous_response_id cannot make a large key.
_ID = re.compile(r"[A-Za-z0-9_.:-]{1,256}", re.ASCII)
_VERSION = 1


def new_response_id() -> str:
    """An unguessable id in OpenAI's shape: "resp_" and 48 hex digits (192 random bits)."""
    return "resp_" + secrets.token_hex(24)


def valid_id(response_id: str) -> bool:
    return _ID.fullmatch(response_id) is not None


class Over(StrEnum):
    """Why a conversation is not kept."""

    ITEMS = "max_items"
    BYTES = "max_bytes"
    EXPIRED = "ttl"


@dataclass(frozen=True, slots=True)
class Bounds:
    ttl: int  # seconds a turn is kept after its created_at
    max_items: int  # items of one conversation
    max_bytes: int  # one conversation, encoded


@dataclass(frozen=True, slots=True)
class Turn:
    """A response and the conversation up to and including it."""

    response_id: str
    model: str
    created_at: int  # seconds since the epoch
    # Responses API items: earlier turns', this request's input, this response's output.
    items: tuple[dict[str, Any], ...]
    input_start: int  # where this request's own input items begin in items
    output_start: int  # where this response's output items begin
    response: dict[str, Any]  # the response object as GET /v1/responses/{id} returns it
    # A response its backend keeps (it takes the Responses API as it is): only whose it
    # is, so that GET and DELETE reach the backend for that tenant alone; `response`
    # then names the backend ({"backend": name}) and there are no items.
    native: bool = False

    @property
    def input_items(self) -> tuple[dict[str, Any], ...]:
        return self.items[self.input_start : self.output_start]

    @property
    def output_items(self) -> tuple[dict[str, Any], ...]:
        return self.items[self.output_start :]


@dataclass(frozen=True, slots=True)
class Dropped:
    """A response whose conversation was not kept, and why: a request naming it gets a
    clear error rather than "not found"."""

    response_id: str
    reason: Over


def check(bounds: Bounds, items: int, size: int, created_at: int, now: float) -> Over | None:
    """The bound a conversation of `items` items, `size` bytes encoded, created at
    `created_at`, is over at `now`; None when it is within all of them."""
    if now >= created_at + bounds.ttl:
        return Over.EXPIRED
    if items > bounds.max_items:
        return Over.ITEMS
    if size > bounds.max_bytes:
        return Over.BYTES
    return None


def encode(turn: Turn | Dropped) -> bytes:
    if isinstance(turn, Dropped):
        return orjson.dumps({"v": _VERSION, "id": turn.response_id, "over": turn.reason})
    return orjson.dumps(
        {
            "v": _VERSION,
            "id": turn.response_id,
            "at": turn.created_at,
            "model": turn.model,
            "items": turn.items,
            "in": turn.input_start,
            "out": turn.output_start,
            "response": turn.response,
            **({"native": True} if turn.native else {}),
        }
    )


def decode(value: bytes, response_id: str) -> Turn | Dropped | None:
    """What `encode` wrote for `response_id`; None for anything else (another version,
    another id, a value some other writer left under the key, bytes that are not JSON)."""
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict) or data.get("v") != _VERSION or data.get("id") != response_id:
        return None
    if "over" in data:
        try:
            return Dropped(response_id, Over(data["over"]))
        except ValueError:
            return None
    at, items, start, end = data.get("at"), data.get("items"), data.get("in"), data.get("out")
    model, response = data.get("model"), data.get("response")
    if (
        not _is_int(at)
        or not isinstance(items, list)
        or not all(isinstance(item, dict) for item in items)
        or not _is_int(start)
        or not _is_int(end)
        or not 0 <= start <= end <= len(items)
        or not isinstance(model, str)
        or not isinstance(response, dict)
    ):
        return None
    return Turn(
        response_id, model, at, tuple(items), start, end, response, data.get("native") is True
    )


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)
