"""MCP over Streamable HTTP: JSON-RPC messages read and written, without I/O.

A message comes from a client's POST body or an MCP server's answer (one JSON object, or
server-sent events of one message each). Reading one never raises: it returns a `Message`
or an `RpcError` the caller can send as it is. Errors name fields, never quote values.
The rules follow the MCP revisions from 2025-03-26 to 2026-07-28 (JSON-RPC 2.0, one
message per body since batches were removed in 2025-06-18, ids that are strings or
integers and never null on a request).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Collection
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson

from extproc.apis import bounded_json
from extproc.apis.bounded_json import NotLoaded, Why
from extproc.sse import Event, Parser, event_end

# -- protocol constants -----------------------------------------------------------------

SESSION_HEADER = "mcp-session-id"  # 2025-03-26 to 2025-11-25; gone in 2026-07-28
PROTOCOL_VERSION_HEADER = "mcp-protocol-version"  # since 2025-06-18
LAST_EVENT_ID_HEADER = "last-event-id"  # resuming a stream: 2025-03-26 to 2025-11-25
# 2026-07-28 mirrors the body's method, and a tools/call, prompts/get or resources/read's
# name or uri, into headers a server checks against the body (-32020 when they differ):
# a name the gateway rewrites in the body is rewritten there too (header_value).
METHOD_HEADER = "mcp-method"
NAME_HEADER = "mcp-name"

# Every published revision, oldest first. 2026-07-28 has no initialize handshake and no
# sessions: each request carries its version (and the client's capabilities) in `_meta`.
VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25", "2026-07-28")
LATEST_VERSION = VERSIONS[-1]
# What a server assumes of a request without the version header (2025-06-18 on).
ASSUMED_VERSION = "2025-03-26"
SESSIONLESS_VERSIONS = frozenset({"2026-07-28"})
# The versions with initialize and sessions: what the virtual server speaks, and what
# the gateway asks its servers for (2026-07-28 clients are not served there yet).
SESSION_VERSIONS = tuple(v for v in VERSIONS if v not in SESSIONLESS_VERSIONS)
_VERSION_SHAPE = re.compile(r"\d{4}-\d{2}-\d{2}")

JSONRPC = "2.0"
# A JavaScript number holds integers exactly up to 2**53 - 1: a larger id would change
# on its way through a client or server written in it.
MAX_SAFE_INTEGER = 2**53 - 1
# Longest string id, method or tool name the gateway takes: each ends up in logs and
# metrics. Real ones are tens of characters (tool names: at most 128 by 2025-11-25's advice).
MAX_NAME_CHARS = 256

# -- error codes ------------------------------------------------------------------------

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
# Defined by 2026-07-28 in the range it reserves for MCP (-32020 to -32099).
HEADER_MISMATCH = -32020
UNSUPPORTED_PROTOCOL_VERSION = -32022
# The gateway's own. 2026-07-28 reserves -32020..-32099 for the specification, asks new
# implementations not to use -32000..-32019 (SDKs' legacy codes: -32000 connection closed,
# -32001 request timeout) and to allocate outside -32768..-32000: so -31001 on.
TOOL_NOT_ALLOWED = -31001
RATE_LIMITED = -31002
BLOCKED_BY_POLICY = -31003
SERVER_UNAVAILABLE = -31004
BAD_SERVER_RESPONSE = -31005
MESSAGE_TOO_LARGE = -31006
SESSION_UNKNOWN = -31007


@dataclass(frozen=True, slots=True)
class ErrorCode:
    code: int
    name: str
    # The HTTP status the gateway answers a client's POST with, when it answers itself.
    # 200 for a request's error: the MCP SDK's client reads a JSON-RPC error only from a
    # 2xx (any other status is a transport failure to it, 404 a lost session).
    status: int
    meaning: str


ERROR_CODES: tuple[ErrorCode, ...] = (
    ErrorCode(PARSE_ERROR, "Parse error", 400, "the body is not UTF-8 JSON"),
    ErrorCode(
        INVALID_REQUEST,
        "Invalid Request",
        400,
        "not one JSON-RPC 2.0 message: a batch (JSON array), no object, a wrong `jsonrpc`,"
        " `id`, `method`, `params`, `result` or `error`, or nested deeper than `max_depth`",
    ),
    ErrorCode(METHOD_NOT_FOUND, "Method not found", 200, "a method the gateway does not serve"),
    ErrorCode(
        INVALID_PARAMS,
        "Invalid params",
        200,
        "a `tools/call` without a string `name`, or with `arguments` that are not an object",
    ),
    ErrorCode(INTERNAL_ERROR, "Internal error", 200, "the gateway failed; its log says why"),
    ErrorCode(
        HEADER_MISMATCH,
        "Header mismatch",
        400,
        "a 2026-07-28 request whose `mcp-method`, `mcp-name` or `mcp-protocol-version` says"
        " other than its body",
    ),
    ErrorCode(
        UNSUPPORTED_PROTOCOL_VERSION,
        "Unsupported protocol version",
        400,
        "an `mcp-protocol-version` the gateway does not know; `data.supported` lists those it does",
    ),
    ErrorCode(
        TOOL_NOT_ALLOWED,
        "Tool not allowed",
        200,
        "the tenant's access rules do not let it call this tool, or use this server",
    ),
    ErrorCode(
        RATE_LIMITED, "Rate limited", 200, "one of the tenant's tool rates is used up for now"
    ),
    ErrorCode(
        BLOCKED_BY_POLICY,
        "Blocked by policy",
        200,
        "a policy refused a tool call's arguments or a tool's result; the message names the"
        " rule, never the text",
    ),
    ErrorCode(
        SERVER_UNAVAILABLE,
        "Server unavailable",
        200,
        "the MCP server could not be reached, failed, or did not answer in time",
    ),
    ErrorCode(
        BAD_SERVER_RESPONSE,
        "Bad server response",
        200,
        "the MCP server answered something that is not JSON-RPC, or a list without its items",
    ),
    ErrorCode(
        MESSAGE_TOO_LARGE,
        "Message too large",
        413,
        "a message over `max_message_bytes`: a client's body (413), or a server's answer"
        " or event (in the client's answer)",
    ),
    ErrorCode(
        SESSION_UNKNOWN,
        "Session unknown",
        404,
        "an `mcp-session-id` the gateway did not issue, or one that expired: the client"
        " starts a new session, as the specification's 404 asks",
    ),
)
_STATUS = {code.code: code.status for code in ERROR_CODES}

RequestId = str | int


@dataclass(frozen=True, slots=True)
class RpcError:
    """A JSON-RPC error response; `id` None when the message's id could not be read."""

    code: int
    message: str
    id: RequestId | None = None
    data: Any = None

    @property
    def status(self) -> int:
        """The HTTP status for this error when the gateway answers a POST with it."""
        return _STATUS.get(self.code, 200)

    def with_id(self, id: RequestId | None) -> RpcError:
        return RpcError(self.code, self.message, id, self.data)

    def body(self) -> bytes:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        if self.id is None:
            # No `id` at all, not JSON-RPC's null: MCP's transport speaks of "an error
            # response that has no id", and its schema (2025-11-25 on) has `id?: RequestId`,
            # which null does not fit.
            return orjson.dumps({"jsonrpc": JSONRPC, "error": error})
        return orjson.dumps({"jsonrpc": JSONRPC, "id": self.id, "error": error})


class Kind(StrEnum):
    REQUEST = "request"
    NOTIFICATION = "notification"
    RESULT = "result"  # a response carrying `result`
    ERROR = "error"  # a response carrying `error`


@dataclass(slots=True)
class Message:
    """One JSON-RPC message, its envelope checked; `payload` is the whole object."""

    kind: Kind
    payload: dict[str, Any]
    id: RequestId | None = None
    method: str | None = None
    params: dict[str, Any] | None = None

    @property
    def is_response(self) -> bool:
        return self.kind is Kind.RESULT or self.kind is Kind.ERROR

    @property
    def result(self) -> dict[str, Any] | None:
        return self.payload["result"] if self.kind is Kind.RESULT else None

    @property
    def error(self) -> dict[str, Any] | None:
        return self.payload["error"] if self.kind is Kind.ERROR else None


# -- reading ----------------------------------------------------------------------------


def read_message(body: bytes, *, max_bytes: int, max_depth: int) -> Message | RpcError:
    """One message from a POST body or a JSON answer. Never raises."""
    if len(body) > max_bytes:
        return RpcError(MESSAGE_TOO_LARGE, f"Message too large: over {max_bytes} bytes")
    payload = _load(body, max_depth)
    return payload if isinstance(payload, RpcError) else _message(payload)


def _load(data: bytes | str, max_depth: int) -> Any:
    """The parsed JSON, or an RpcError saying why there is none."""
    try:
        return bounded_json.loads(data, max_depth)
    except NotLoaded as failed:
        if failed.why is Why.TOO_DEEP:
            return _invalid(f"the message nests deeper than {max_depth} levels")
        return RpcError(PARSE_ERROR, f"Parse error: the message is {failed.why}")


def _invalid(text: str, id: RequestId | None = None) -> RpcError:
    return RpcError(INVALID_REQUEST, f"Invalid Request: {text}", id)


# The names the gateway reads a message by. A key that a case-insensitive decoder (Go's
# encoding/json folds case, the long s U+017F to "s", the Kelvin sign U+212A to "k") would
# read as one of them, but is not it, would let a server act on what the gateway never
# checked: refused.
_ENVELOPE = frozenset({"jsonrpc", "id", "method", "params", "result", "error"})
_PARAMS = frozenset({"name", "arguments", "uri", "cursor"})


def _smuggled(keys: Any, names: frozenset[str]) -> str | None:
    for key in keys:
        folded = str(key).casefold()
        if folded != key and folded in names:
            return folded
    return None


def _message(payload: Any) -> Message | RpcError:
    if type(payload) is not dict:
        if type(payload) is list:
            return _invalid("batches (JSON arrays) are not supported; send one message per POST")
        return _invalid("a message is a JSON object")
    has_id = "id" in payload
    id = payload.get("id")
    if (found := _smuggled(payload, _ENVELOPE)) is not None:
        return _invalid(f'a key differs from "{found}" only in case', None)
    params = payload.get("params")
    if type(params) is dict and (found := _smuggled(params, _PARAMS)) is not None:
        return _invalid(f'a key of "params" differs from "{found}" only in case', None)
    if id is not None and not _valid_id(id):
        return _invalid(
            f'"id" must be a string of at most {MAX_NAME_CHARS} characters or an integer'
            f" within ±(2**53 - 1)"
        )
    if payload.get("jsonrpc") != JSONRPC:
        return _invalid('"jsonrpc" must be "2.0"', id)
    if "method" in payload:
        return _request(payload, has_id, id)
    if "result" in payload:
        if "error" in payload:
            return _invalid('a response has "result" or "error", not both', id)
        if id is None:
            return _invalid('a result must carry its request\'s "id"')
        if type(payload["result"]) is not dict:
            return _invalid('"result" must be an object', id)
        return Message(Kind.RESULT, payload, id)
    if "error" in payload:
        error = payload["error"]
        if (
            type(error) is not dict
            or type(error.get("code")) is not int
            or type(error.get("message")) is not str
        ):
            return _invalid(
                '"error" must be an object with an integer "code" and a string "message"', id
            )
        return Message(Kind.ERROR, payload, id)
    return _invalid('a message has "method", "result" or "error"', id)


def _request(payload: dict[str, Any], has_id: bool, id: RequestId | None) -> Message | RpcError:
    method = payload["method"]
    if type(method) is not str or not method or len(method) > MAX_NAME_CHARS:
        return _invalid(f'"method" must be a string of 1 to {MAX_NAME_CHARS} characters', id)
    if "result" in payload or "error" in payload:
        return _invalid('a request or notification has no "result" or "error"', id)
    params = payload.get("params")  # null counts as absent
    if params is not None and type(params) is not dict:
        return _invalid('"params" must be an object', id)
    if not has_id:
        return Message(Kind.NOTIFICATION, payload, None, method, params)
    if id is None:
        return _invalid('a request\'s "id" must not be null')
    return Message(Kind.REQUEST, payload, id, method, params)


def _valid_id(id: Any) -> bool:
    if type(id) is str:
        return len(id) <= MAX_NAME_CHARS
    return type(id) is int and -MAX_SAFE_INTEGER <= id <= MAX_SAFE_INTEGER


# -- what the gateway reads of some methods ---------------------------------------------

# The lists a server serves, and the field naming each item.
LIST_KEYS = {
    "tools": "name",
    "prompts": "name",
    "resources": "uri",
    "resourceTemplates": "uriTemplate",
}


def tool_call(message: Message) -> tuple[str, dict[str, Any]] | RpcError:
    """A `tools/call` request's tool name and arguments (absent or null: {})."""
    params = message.params or {}
    name = params.get("name")
    if type(name) is not str or not name or len(name) > MAX_NAME_CHARS:
        return RpcError(
            INVALID_PARAMS,
            f'Invalid params: "name" must be a string of 1 to {MAX_NAME_CHARS} characters',
            message.id,
        )
    arguments = params.get("arguments")
    if arguments is None:
        return name, {}
    if type(arguments) is not dict:
        return RpcError(INVALID_PARAMS, 'Invalid params: "arguments" must be an object', message.id)
    return name, arguments


def listed(result: Any, key: str) -> list[dict[str, Any]] | RpcError:
    """The items of a `tools/list`, `prompts/list`, `resources/list` or
    `resources/templates/list` result (`key`: tools, prompts, resources, resourceTemplates),
    each an object with a non-empty string name (uri, uriTemplate). The error has no id:
    `with_id` gives it the client's."""
    field = LIST_KEYS[key]
    items = result.get(key) if type(result) is dict else None
    if type(items) is not list:
        return RpcError(BAD_SERVER_RESPONSE, f'Bad server response: the result has no "{key}" list')
    for item in items:
        if type(item) is not dict or type(item.get(field)) is not str or not item[field]:
            return RpcError(
                BAD_SERVER_RESPONSE,
                f'Bad server response: an item of "{key}" has no string "{field}"',
            )
    return items


def next_cursor(result: dict[str, Any]) -> str | None:
    """The cursor of a list's next page, if the server has more."""
    cursor = result.get("nextCursor")
    return cursor if type(cursor) is str else None


def protocol_version(value: str | None, supported: Collection[str] = VERSIONS) -> str | RpcError:
    """The protocol version an `mcp-protocol-version` header names (absent: 2025-03-26)."""
    version = ASSUMED_VERSION if value is None else value
    if version in supported:
        return version
    data: dict[str, Any] = {"supported": list(supported)}
    if _VERSION_SHAPE.fullmatch(version):  # only a date goes back, never arbitrary text
        data["requested"] = version
    return RpcError(UNSUPPORTED_PROTOCOL_VERSION, "Unsupported protocol version", data=data)


# 2026-07-28's header values: plain when visible ASCII without edge spaces, else Base64
# between the sentinels (so is a plain value that looks like one).
_PLAIN_HEADER = re.compile(r"[\x21-\x7e](?:[\x20-\x7e\t]*[\x21-\x7e])?")
_B64_OPEN, _B64_CLOSE = "=?base64?", "?="


def header_value(text: str) -> str:
    """`text` as an `mcp-name` (or `mcp-param-*`) header's value."""
    if _PLAIN_HEADER.fullmatch(text) and not (
        text.startswith(_B64_OPEN) and text.endswith(_B64_CLOSE)
    ):
        return text
    return f"{_B64_OPEN}{base64.b64encode(text.encode()).decode()}{_B64_CLOSE}"


def read_header_value(value: str) -> str | None:
    """An `mcp-name` header's text; None when its Base64 form does not decode."""
    if not (value.startswith(_B64_OPEN) and value.endswith(_B64_CLOSE)) or len(value) < 11:
        return value
    try:
        return base64.b64decode(value[9:-2], validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None


# -- writing ----------------------------------------------------------------------------


def result_body(id: RequestId, result: dict[str, Any]) -> bytes:
    return orjson.dumps({"jsonrpc": JSONRPC, "id": id, "result": result})


def request_body(id: RequestId, method: str, params: dict[str, Any] | None = None) -> bytes:
    message: dict[str, Any] = {"jsonrpc": JSONRPC, "id": id, "method": method}
    if params is not None:
        message["params"] = params
    return orjson.dumps(message)


def notification_body(method: str, params: dict[str, Any] | None = None) -> bytes:
    message: dict[str, Any] = {"jsonrpc": JSONRPC, "method": method}
    if params is not None:
        message["params"] = params
    return orjson.dumps(message)


# -- server-sent events -----------------------------------------------------------------

Read = tuple[Event, Message | RpcError | None]


class EventReader:
    """An MCP server's event stream: each event with its message (None: a comment, or an
    event without data, such as 2025-11-25's priming event of an id alone).

    Bounded: an event longer than `max_event_bytes` yields a MESSAGE_TOO_LARGE error in
    place of its message, and its bytes are dropped as they come until it ends, so the
    reader never holds more than the bound and one chunk. The data of an event is decoded
    as the SSE standard does (invalid UTF-8 replaced), then read as JSON.
    """

    def __init__(self, max_event_bytes: int, max_depth: int) -> None:
        self.max_event_bytes = max_event_bytes
        self.max_depth = max_depth
        self._parser = Parser()
        self._dropping: bytes | None = None  # the dropped event's last bytes, while dropping

    def feed(self, chunk: bytes) -> list[Read]:
        if self._dropping is not None:
            data = self._dropping + chunk
            end = event_end(data)
            if end < 0:
                self._dropping = data[-3:]
                return []
            self._dropping = None
            chunk = data[end:]
        read = [self._read(event) for event in self._parser.feed(chunk)]
        if self._parser.pending > self.max_event_bytes:
            self._dropping = self._parser.drop()
            read.append((Event(None, ""), self._too_large()))
        return read

    @property
    def pending(self) -> int:
        """Bytes held of an event that has not ended yet."""
        return self._parser.pending if self._dropping is None else len(self._dropping)

    def close(self) -> list[Read]:
        """The stream ended: its last event, if it ended without its blank line."""
        if self._dropping is not None:
            self._dropping = None
            return []
        return [self._read(event) for event in self._parser.close()]

    @staticmethod
    def replace(event: Event, payload: dict[str, Any]) -> Event:
        """`event` carrying `payload` instead, with its name, id and retry."""
        return Event(event.name, orjson.dumps(payload).decode(), id=event.id, retry=event.retry)

    def _read(self, event: Event) -> Read:
        if event.raw is not None and len(event.raw) > self.max_event_bytes:
            return Event(event.name, "", id=event.id, retry=event.retry), self._too_large()
        if event.comment is not None or not event.data:
            return event, None
        payload = _load(event.data, self.max_depth)
        return event, payload if isinstance(payload, RpcError) else _message(payload)

    def _too_large(self) -> RpcError:
        return RpcError(
            MESSAGE_TOO_LARGE, f"Message too large: an event over {self.max_event_bytes} bytes"
        )
