"""The MCP protocol module: JSON-RPC messages read and written, the error table, the
protocol version check, the helpers for tools/call and the lists, and the bounded reader
of an MCP server's event stream (with the SSE fields it needs: id, retry)."""

from __future__ import annotations

import json
import re
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from extproc.apis import mcp
from extproc.apis.mcp import Kind, Message, RpcError
from extproc.sse import Event, Parser
from tests.helpers import ROOT
from tests.unit.test_hostile import _json

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MAX = 4 * 1024 * 1024
DEPTH = 64
SECRET = "sk-SECRET-a1b2c3"  # a value no error may repeat


def read(body: bytes | str, max_depth: int = DEPTH, max_bytes: int = MAX) -> Message | RpcError:
    data = body.encode() if isinstance(body, str) else body
    return mcp.read_message(data, max_bytes=max_bytes, max_depth=max_depth)


def dumps(value: Any) -> bytes:
    return json.dumps(value).encode()  # unlike orjson, it writes integers past 64 bits


def error(body: bytes | str, **limits: int) -> RpcError:
    found = read(body, **limits)
    assert isinstance(found, RpcError), found
    # Every error is a well-formed JSON-RPC error response.
    answer = orjson.loads(found.body())
    assert answer["jsonrpc"] == "2.0" and answer["error"]["code"] == found.code
    return found


def cut(data: bytes, points: list[int]) -> list[bytes]:
    marks = sorted({p % (len(data) + 1) for p in points})
    return [data[a:b] for a, b in zip([0, *marks], [*marks, len(data)], strict=True)]


REQUEST = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo"}}


# -- the four kinds ---------------------------------------------------------------------


def test_a_request_is_read_with_its_id_method_and_params() -> None:
    message = read(dumps(REQUEST))
    assert isinstance(message, Message)
    assert (message.kind, message.id, message.method) == (Kind.REQUEST, 1, "tools/call")
    assert message.params == {"name": "echo"} and message.payload == REQUEST
    assert not message.is_response and message.result is None and message.error is None


def test_a_notification_has_no_id() -> None:
    message = read(b'{"jsonrpc": "2.0", "method": "notifications/initialized"}')
    assert isinstance(message, Message)
    assert (message.kind, message.id, message.params) == (Kind.NOTIFICATION, None, None)


def test_responses_carry_their_result_or_error() -> None:
    result = read(b'{"jsonrpc": "2.0", "id": "a-1", "result": {"tools": []}}')
    assert isinstance(result, Message) and result.kind is Kind.RESULT and result.is_response
    assert (result.id, result.result, result.error) == ("a-1", {"tools": []}, None)
    failed = read(b'{"jsonrpc": "2.0", "id": 7, "error": {"code": -32601, "message": "no"}}')
    assert isinstance(failed, Message) and failed.kind is Kind.ERROR
    assert failed.error == {"code": -32601, "message": "no"} and failed.result is None


@pytest.mark.parametrize("tail", ['"id": null, ', ""])
def test_an_error_response_may_lack_its_id(tail: str) -> None:
    """JSON-RPC puts null where the id could not be read; MCP leaves the id out."""
    message = read(f'{{"jsonrpc": "2.0", {tail}"error": {{"code": -32700, "message": "x"}}}}')
    assert isinstance(message, Message) and message.kind is Kind.ERROR and message.id is None


def test_null_params_count_as_absent() -> None:
    message = read(b'{"jsonrpc": "2.0", "id": 2, "method": "ping", "params": null}')
    assert isinstance(message, Message) and message.params is None


# -- bodies that are no JSON ------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"\xff\xfe{}", "not UTF-8"),
        (b'{"jsonrpc": "2.0", "method": "\xc3("}', "not UTF-8"),
        (b"", "empty"),
        (b" \n\t ", "empty"),
        (b'{"jsonrpc": "2.0",', "not valid JSON"),
        (b'{"jsonrpc": "2.0", "id": 1, "method": "a"} {}', "not valid JSON"),
        (b"NaN", "not valid JSON"),
        (b'{"jsonrpc": "2.0", "id": 1, "result": {"x": Infinity}}', "not valid JSON"),
        (b'{"jsonrpc": "2.0", "id": 1, "result": {"x": -Infinity}}', "not valid JSON"),
        (b'{"jsonrpc": "2.0", "id": 1, "result": {"x": 1e400}}', "not valid JSON"),
        (b"\xef\xbb\xbf{}", "not valid JSON"),  # a byte order mark
        (b'{"a": "\\ud800"}', "not valid JSON"),  # a lone surrogate
    ],
)
def test_text_that_is_no_json_is_a_parse_error(body: bytes, why: str) -> None:
    found = error(body)
    assert (found.code, found.id, found.status) == (mcp.PARSE_ERROR, None, 400)
    assert why in found.message


# -- the envelope -----------------------------------------------------------------------


def test_a_batch_is_refused_as_unsupported() -> None:
    found = error(dumps([REQUEST, REQUEST]))
    assert found.code == mcp.INVALID_REQUEST and "batches" in found.message
    assert error(b"[]").code == mcp.INVALID_REQUEST


@pytest.mark.parametrize("body", [b'"text"', b"3", b"null", b"true"])
def test_a_message_is_an_object(body: bytes) -> None:
    assert error(body).code == mcp.INVALID_REQUEST


@pytest.mark.parametrize("version", [None, "1.0", "2", 2.0, 2])
def test_jsonrpc_must_be_2_0_and_the_error_keeps_the_id(version: Any) -> None:
    message = {"id": "call-9", "method": "ping"}
    if version is not None:
        message["jsonrpc"] = version
    found = error(dumps(message))
    assert (found.code, found.id) == (mcp.INVALID_REQUEST, "call-9")
    assert '"jsonrpc"' in found.message


@pytest.mark.parametrize(
    "value",
    [True, False, 1.0, 1.5, [1], {"a": 1}, 2**53, -(2**53), "x" * 257, 2**64],
)
def test_ids_are_strings_or_safe_integers(value: Any) -> None:
    for message in (
        {"jsonrpc": "2.0", "id": value, "method": "ping"},
        {"jsonrpc": "2.0", "id": value, "result": {}},
    ):
        found = error(dumps(message))
        assert (found.code, found.id) == (mcp.INVALID_REQUEST, None)
        assert '"id"' in found.message


@pytest.mark.parametrize("value", [0, 2**53 - 1, -(2**53 - 1), "", "x" * 256, "550e8400-e29b"])
def test_ids_at_the_bounds_are_read(value: Any) -> None:
    message = read(dumps({"jsonrpc": "2.0", "id": value, "method": "ping"}))
    assert isinstance(message, Message) and message.id == value


def test_a_request_id_is_never_null() -> None:
    found = error(b'{"jsonrpc": "2.0", "id": null, "method": "tools/list"}')
    assert found.code == mcp.INVALID_REQUEST and "null" in found.message


@pytest.mark.parametrize("method", [1, None, [], {}, "", "m" * 257])
def test_method_is_a_short_string(method: Any) -> None:
    found = error(dumps({"jsonrpc": "2.0", "id": 4, "method": method}))
    assert (found.code, found.id) == (mcp.INVALID_REQUEST, 4) and '"method"' in found.message


@pytest.mark.parametrize("params", [[1, 2], "a", 3, True])
def test_params_are_an_object(params: Any) -> None:
    found = error(dumps({"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": params}))
    assert (found.code, found.id) == (mcp.INVALID_REQUEST, 5) and '"params"' in found.message


@pytest.mark.parametrize(
    ("message", "field"),
    [
        (
            {"jsonrpc": "2.0", "id": 1, "result": {}, "error": {"code": 1, "message": "m"}},
            "not both",
        ),
        ({"jsonrpc": "2.0", "id": 1}, '"method", "result" or "error"'),
        ({"jsonrpc": "2.0", "id": 1, "result": [1]}, '"result"'),
        ({"jsonrpc": "2.0", "id": 1, "result": None}, '"result"'),
        ({"jsonrpc": "2.0", "result": {}}, '"id"'),
        ({"jsonrpc": "2.0", "id": None, "result": {}}, '"id"'),
        ({"jsonrpc": "2.0", "id": 1, "error": "bad"}, '"error"'),
        ({"jsonrpc": "2.0", "id": 1, "error": {"message": "m"}}, '"error"'),
        ({"jsonrpc": "2.0", "id": 1, "error": {"code": True, "message": "m"}}, '"error"'),
        ({"jsonrpc": "2.0", "id": 1, "error": {"code": 1.5, "message": "m"}}, '"error"'),
        ({"jsonrpc": "2.0", "id": 1, "error": {"code": 1}}, '"error"'),
        ({"jsonrpc": "2.0", "id": 1, "method": "a", "result": {}}, '"result" or "error"'),
    ],
)
def test_responses_have_one_well_formed_result_or_error(message: Any, field: str) -> None:
    found = error(dumps(message))
    assert found.code == mcp.INVALID_REQUEST and field in found.message


def test_errors_name_fields_never_values() -> None:
    """What the client sent never comes back in an error's text (a key, a token, a
    prompt): the message names the field."""
    bodies = [
        {"jsonrpc": SECRET, "id": 1, "method": "a"},
        {"jsonrpc": "2.0", "id": SECRET * 20, "method": "a"},
        {"jsonrpc": "2.0", "id": 1, "method": SECRET * 20},
        {"jsonrpc": "2.0", "id": 1, "method": "a", "params": [SECRET]},
        {"jsonrpc": "2.0", "id": 1, "result": SECRET},
        {"jsonrpc": "2.0", "id": 1, "error": SECRET},
        [SECRET],
        SECRET,
    ]
    texts = [dumps(body) for body in bodies] + [f'{{"x": "{SECRET}"'.encode(), SECRET.encode()]
    for text in texts:
        assert SECRET not in error(text).body().decode()
    name = mcp.tool_call(Message(Kind.REQUEST, {}, 1, "tools/call", {"name": [SECRET]}))
    args = mcp.tool_call(
        Message(Kind.REQUEST, {}, 1, "tools/call", {"name": "a", "arguments": SECRET})
    )
    version = mcp.protocol_version(SECRET)
    for found in (name, args, version):
        assert isinstance(found, RpcError) and SECRET not in found.body().decode()


# -- bounds -----------------------------------------------------------------------------


def test_a_body_over_max_bytes_is_refused_before_it_is_parsed() -> None:
    body = dumps(REQUEST)
    assert isinstance(read(body, max_bytes=len(body)), Message)
    found = error(body, max_bytes=len(body) - 1)
    assert (found.code, found.status) == (mcp.MESSAGE_TOO_LARGE, 413)
    assert error(b"{" * 100, max_bytes=10).code == mcp.MESSAGE_TOO_LARGE  # no parse error


def nested(depth: int, *, long: bool = False, objects: bool = False) -> bytes:
    """A request nesting exactly `depth` arrays or objects deep (the envelope is 1, params 2);
    `long`: past the length up to which the depth is checked by writing the message again."""
    inner = depth - 2
    value = (b'{"k":' * inner + b"0" + b"}" * inner) if objects else (b"[" * inner + b"]" * inner)
    pad = b', "pad": "' + b"x" * (200 * 1024) + b'"' if long else b""
    return b'{"jsonrpc": "2.0", "id": 1, "method": "a", "params": {"v": ' + value + pad + b"}}"


@pytest.mark.parametrize("max_depth", [4, 5, 64, 253, 254, 255, 512, 1023])
@pytest.mark.parametrize("long", [False, True])
@pytest.mark.parametrize("objects", [False, True])
def test_nesting_deeper_than_max_depth_is_refused(
    max_depth: int, long: bool, objects: bool
) -> None:
    message = read(nested(max_depth, long=long, objects=objects), max_depth=max_depth)
    assert isinstance(message, Message), message
    found = error(nested(max_depth + 1, long=long, objects=objects), max_depth=max_depth)
    assert found.code == mcp.INVALID_REQUEST
    assert found.message == f"Invalid Request: the message nests deeper than {max_depth} levels"


def test_brackets_inside_strings_do_not_nest() -> None:
    for pad in (0, 200 * 1024):
        text = "[" * 3000 + "{" * 3000 + "x" * pad
        message = read(
            dumps({"jsonrpc": "2.0", "id": 1, "method": "a", "params": {"t": text}}), max_depth=4
        )
        assert isinstance(message, Message) and message.params == {"t": text}


def test_orjson_limits_the_depth_check_relies_on() -> None:
    """The check moves orjson's own limits to max_depth: if an upgrade moves them, this
    fails before the check goes wrong."""
    assert orjson.loads("[" * 1024 + "]" * 1024) is not None
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads("[" * 1025 + "]" * 1025)
    value: Any = 0
    for _ in range(254):
        value = [value]
    assert orjson.dumps(value)
    with pytest.raises(orjson.JSONEncodeError):
        orjson.dumps([value])


@pytest.mark.parametrize(
    "inner",
    [
        b'{"jsonrpc": "2.0", "id": 1, "method": "a"}],[{"x": 1}',
        b'{"jsonrpc": "2.0", "id": 1, "method": "a"}]]],[[[0',
        b"",
        b"1,2",
        b'{"jsonrpc": "2.0", "id": 1, "method": "a"},{}',
    ],
)
def test_a_long_body_cannot_break_out_of_the_padding(inner: bytes) -> None:
    """Long bodies are parsed between arrays of the gateway's: text that closes them and
    opens others must be refused as the invalid JSON it is, never read as a message."""
    body = inner + b" " * (200 * 1024)
    for max_depth in (4, 64, 512):
        assert error(body, max_depth=max_depth).code == mcp.PARSE_ERROR
    assert error(b"[" * 3 + body, max_depth=64).code == mcp.PARSE_ERROR


def test_a_long_message_is_read_as_a_short_one_is() -> None:
    short = {"jsonrpc": "2.0", "id": "x", "result": {"content": [{"type": "text", "text": "hi"}]}}
    long = {**short, "result": {"content": [{"type": "text", "text": "y" * 300_000}]}}
    for message in (short, long):
        found = read(dumps(message))
        assert isinstance(found, Message) and found.payload == message


# -- error responses and the table ------------------------------------------------------


def test_an_error_body_has_an_id_only_when_one_was_read() -> None:
    assert orjson.loads(RpcError(mcp.PARSE_ERROR, "Parse error").body()) == {
        "jsonrpc": "2.0",
        "error": {"code": -32700, "message": "Parse error"},
    }
    answer = orjson.loads(RpcError(mcp.RATE_LIMITED, "slow down", 0, {"retry_after": 3}).body())
    assert answer == {
        "jsonrpc": "2.0",
        "id": 0,
        "error": {"code": -31002, "message": "slow down", "data": {"retry_after": 3}},
    }
    assert RpcError(mcp.SESSION_UNKNOWN, "gone").with_id("s").id == "s"


def test_the_error_table_is_whole_and_in_the_gateways_own_range() -> None:
    codes = [code.code for code in mcp.ERROR_CODES]
    assert len(codes) == len(set(codes))
    assert {-32700, -32600, -32601, -32602, -32603} <= set(codes)
    own = [
        mcp.TOOL_NOT_ALLOWED,
        mcp.RATE_LIMITED,
        mcp.BLOCKED_BY_POLICY,
        mcp.SERVER_UNAVAILABLE,
        mcp.BAD_SERVER_RESPONSE,
        mcp.MESSAGE_TOO_LARGE,
        mcp.SESSION_UNKNOWN,
    ]
    assert set(own) <= set(codes)
    # 2026-07-28 reserves -32768..-32000 (JSON-RPC's and its own); the gateway stays out.
    assert all(not -32768 <= code <= -32000 for code in own)
    assert RpcError(mcp.SESSION_UNKNOWN, "x").status == 404
    assert RpcError(mcp.TOOL_NOT_ALLOWED, "x").status == 200
    assert RpcError(12345, "a server's own").status == 200


def test_the_docs_list_every_code_as_the_table_has_it() -> None:
    page = (ROOT / "docs" / "configuration" / "mcp-errors.md").read_text()
    rows = {
        int(m[1]): (m[2], int(m[3]), m[4])
        for m in re.finditer(r"^\| `(-\d+)` \| (.+?) \| (\d{3}) \| (.+) \|$", page, re.MULTILINE)
    }
    assert rows == {c.code: (c.name, c.status, c.meaning) for c in mcp.ERROR_CODES}


# -- tools/call and the lists -----------------------------------------------------------


def call(params: Any, id: mcp.RequestId = 3) -> tuple[str, dict[str, Any]] | RpcError:
    return mcp.tool_call(Message(Kind.REQUEST, {}, id, "tools/call", params))


def test_a_tool_call_gives_its_name_and_arguments() -> None:
    assert call({"name": "add", "arguments": {"a": 1, "b": 2}}) == ("add", {"a": 1, "b": 2})
    assert call({"name": "now"}) == ("now", {})
    assert call({"name": "now", "arguments": None}) == ("now", {})


@pytest.mark.parametrize(
    ("params", "field"),
    [
        (None, '"name"'),
        ({}, '"name"'),
        ({"name": 3}, '"name"'),
        ({"name": ""}, '"name"'),
        ({"name": "t" * 257}, '"name"'),
        ({"name": "add", "arguments": [1, 2]}, '"arguments"'),
        ({"name": "add", "arguments": "a=1"}, '"arguments"'),
    ],
)
def test_a_bad_tool_call_is_invalid_params(params: Any, field: str) -> None:
    found = call(params, id="r-2")
    assert isinstance(found, RpcError)
    assert (found.code, found.id, found.status) == (mcp.INVALID_PARAMS, "r-2", 200)
    assert field in found.message


@pytest.mark.parametrize(
    ("key", "field"),
    [
        ("tools", "name"),
        ("prompts", "name"),
        ("resources", "uri"),
        ("resourceTemplates", "uriTemplate"),
    ],
)
def test_a_list_gives_its_items(key: str, field: str) -> None:
    items = [{field: "a", "x": 1}, {field: "b"}]
    assert mcp.listed({key: items, "nextCursor": "p2"}, key) == items
    assert mcp.listed({key: []}, key) == []


@pytest.mark.parametrize(
    "result",
    [
        {},
        None,
        [],
        {"tools": None},
        {"tools": {"name": "a"}},
        {"tools": ["a"]},
        {"tools": [{"title": "no name"}]},
        {"tools": [{"name": 3}]},
        {"tools": [{"name": ""}]},
        {"tools": [{"name": "a"}, {"uri": "b"}]},
    ],
)
def test_a_malformed_list_is_a_bad_server_response(result: Any) -> None:
    found = mcp.listed(result, "tools")
    assert isinstance(found, RpcError) and found.code == mcp.BAD_SERVER_RESPONSE
    assert found.id is None and found.with_id(8).id == 8


def test_the_next_page_cursor() -> None:
    assert mcp.next_cursor({"tools": [], "nextCursor": "c2"}) == "c2"
    assert mcp.next_cursor({"tools": []}) is None
    assert mcp.next_cursor({"tools": [], "nextCursor": 2}) is None


def test_bodies_the_gateway_writes_read_back() -> None:
    result = read(mcp.result_body(4, {"tools": []}))
    assert isinstance(result, Message) and (result.kind, result.id, result.result) == (
        Kind.RESULT,
        4,
        {"tools": []},
    )
    request = read(mcp.request_body("init-1", "initialize", {"protocolVersion": "2025-06-18"}))
    assert isinstance(request, Message) and request.kind is Kind.REQUEST
    assert request.params == {"protocolVersion": "2025-06-18"}
    bare = read(mcp.request_body(5, "tools/list"))
    assert isinstance(bare, Message) and "params" not in bare.payload
    note = read(mcp.notification_body("notifications/initialized"))
    assert isinstance(note, Message) and note.kind is Kind.NOTIFICATION
    cancelled = read(mcp.notification_body("notifications/cancelled", {"requestId": 5}))
    assert isinstance(cancelled, Message) and cancelled.params == {"requestId": 5}


# -- protocol versions and headers ------------------------------------------------------


def test_the_known_versions_oldest_first() -> None:
    assert list(mcp.VERSIONS) == sorted(mcp.VERSIONS) and mcp.VERSIONS[-1] == mcp.LATEST_VERSION
    assert set(mcp.VERSIONS) >= mcp.SESSIONLESS_VERSIONS
    for name in (mcp.SESSION_HEADER, mcp.PROTOCOL_VERSION_HEADER, mcp.LAST_EVENT_ID_HEADER):
        assert name == name.lower()


def test_the_protocol_version_header() -> None:
    for version in mcp.VERSIONS:
        assert mcp.protocol_version(version) == version
    assert mcp.protocol_version(None) == "2025-03-26"  # what a server assumes without one
    assert mcp.protocol_version("2025-06-18", supported=("2025-11-25",)) != "2025-06-18"
    found = mcp.protocol_version("2031-01-01")
    assert isinstance(found, RpcError)
    assert (found.code, found.status) == (mcp.UNSUPPORTED_PROTOCOL_VERSION, 400)
    assert found.data == {"supported": list(mcp.VERSIONS), "requested": "2031-01-01"}
    junk = mcp.protocol_version("latest\x00")
    assert isinstance(junk, RpcError) and "requested" not in junk.data  # only a date goes back


@pytest.mark.parametrize(
    ("text", "header"),
    [
        ("us-west1", "us-west1"),
        ("Hello, 世界", "=?base64?SGVsbG8sIOS4lueVjA==?="),
        (" padded ", "=?base64?IHBhZGRlZCA=?="),
        ("line1\nline2", "=?base64?bGluZTEKbGluZTI=?="),
        ("=?base64?literal?=", "=?base64?PT9iYXNlNjQ/bGl0ZXJhbD89?="),
    ],
)
def test_name_header_values_as_2026_07_28_encodes_them(text: str, header: str) -> None:
    assert mcp.header_value(text) == header
    assert mcp.read_header_value(header) == text


def test_a_name_header_that_does_not_decode() -> None:
    assert mcp.read_header_value("=?base64?!!!?=") is None
    assert mcp.read_header_value("=?base64?/w==?=") is None  # not UTF-8
    assert mcp.read_header_value("plain") == "plain"


@FAST
@given(st.text())
def test_any_name_survives_its_header(text: str) -> None:
    header = mcp.header_value(text)
    assert re.fullmatch(r"[\x20-\x7e\t]*", header) and mcp.read_header_value(header) == text


# -- SSE fields an MCP stream needs ------------------------------------------------------


def test_events_keep_their_id_and_retry() -> None:
    data = b'id: 41\nevent: message\nretry: 3000\ndata: {"a": 1}\n\n'
    [event] = Parser().feed(data)
    assert (event.name, event.id, event.retry, event.data) == ("message", "41", 3000, '{"a": 1}')
    assert event.encode() == data  # unchanged: the bytes as they came
    changed = Event(event.name, '{"a": 2}', id=event.id, retry=event.retry)
    assert Parser().feed(changed.encode()) == [changed]


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        (b"id: 1\ndata: \n\n", Event(None, "", id="1")),  # 2025-11-25's priming event
        (b"id: 2\n\n", Event(None, "", id="2")),
        (b"retry: 500\n\n", Event(None, "", retry=500)),
        (b"retry: soon\ndata: x\n\n", Event(None, "x")),
        (b"retry: 12345678901\ndata: x\n\n", Event(None, "x")),
        (b"retry: " + b"9" * 5000 + b"\ndata: x\n\n", Event(None, "x")),
        (b"retry: \xd9\xa3\ndata: x\n\n", Event(None, "x")),  # an Arabic-Indic digit
        (b"id: a\x00b\ndata: x\n\n", Event(None, "x")),  # the SSE spec ignores such an id
        (b"id\ndata: x\n\n", Event(None, "x", id="")),
    ],
)
def test_id_and_retry_as_the_sse_standard_reads_them(block: bytes, expected: Event) -> None:
    assert Parser().feed(block) == [expected]


def test_a_cursor_alone_encodes_without_data() -> None:
    assert Event(None, "", id="7", retry=10).encode() == b"id: 7\nretry: 10\n\n"
    assert Parser().feed(Event(None, "", id="7").encode()) == [Event(None, "", id="7")]


# -- the event reader -------------------------------------------------------------------


def stream(*messages: dict[str, Any], crlf: bool = True) -> bytes:
    """Events as the MCP SDK's server writes them (sse-starlette: CRLF, an id each)."""
    end = "\r\n" if crlf else "\n"
    return b"".join(
        f"id: {i}{end}event: message{end}data: {orjson.dumps(m).decode()}{end}{end}".encode()
        for i, m in enumerate(messages)
    )


PROGRESS = {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progress": 1}}
ANSWER = {"jsonrpc": "2.0", "id": 1, "result": {"content": [{"type": "text", "text": "hi"}]}}


def messages(reads: list[tuple[Event, Message | RpcError | None]]) -> list[Any]:
    return [m.payload if isinstance(m, Message) else m for _, m in reads]


def test_events_are_read_as_messages_however_split() -> None:
    data = b": keep-alive\r\n\r\n" + b"id: p\r\ndata: \r\n\r\n" + stream(PROGRESS, ANSWER)
    whole = mcp.EventReader(MAX, DEPTH).feed(data)
    assert messages(whole) == [None, None, PROGRESS, ANSWER]
    assert [event.id for event, _ in whole] == [None, "p", "0", "1"]
    assert (
        b"".join(event.encode() for event, _ in whole) == data
    )  # unchanged events pass as they came
    for size in (1, 2, 3, 7):
        reader = mcp.EventReader(MAX, DEPTH)
        split = [r for i in range(0, len(data), size) for r in reader.feed(data[i : i + size])]
        assert messages(split) == messages(whole)


def test_an_event_that_is_no_message_is_an_error_in_its_place() -> None:
    data = b"data: not json\n\n" + b"data: [1]\n\n" + stream(ANSWER, crlf=False)
    found = messages(mcp.EventReader(MAX, DEPTH).feed(data))
    assert [f.code for f in found[:2]] == [mcp.PARSE_ERROR, mcp.INVALID_REQUEST]
    assert found[2] == ANSWER


@pytest.mark.parametrize("long", [False, True])
def test_event_data_is_held_to_the_same_depth(long: bool) -> None:
    for depth, allowed in ((DEPTH, True), (DEPTH + 1, False)):
        event = b"data: " + nested(depth, long=long) + b"\n\n"
        [(_, found)] = mcp.EventReader(MAX, DEPTH).feed(event)
        assert isinstance(found, Message) is allowed
        assert allowed or (isinstance(found, RpcError) and found.code == mcp.INVALID_REQUEST)


def test_replace_keeps_the_events_name_id_and_retry() -> None:
    [(event, message)] = mcp.EventReader(MAX, DEPTH).feed(
        b"id: 9\r\nevent: message\r\nretry: 100\r\ndata: " + dumps(ANSWER) + b"\r\n\r\n"
    )
    assert isinstance(message, Message)
    changed = mcp.EventReader.replace(event, {**ANSWER, "id": 2})
    assert (changed.name, changed.id, changed.retry, changed.raw) == ("message", "9", 100, None)
    [(again, reread)] = mcp.EventReader(MAX, DEPTH).feed(changed.encode())
    assert isinstance(reread, Message) and reread.id == 2 and again.id == "9"


def test_an_event_over_the_bound_in_one_chunk_is_dropped() -> None:
    big = {**ANSWER, "result": {"text": "z" * 5000}}
    data = stream(PROGRESS, big, ANSWER)
    reads = mcp.EventReader(1000, DEPTH).feed(data)
    found = messages(reads)
    assert found[0] == PROGRESS and found[2] == ANSWER
    assert isinstance(found[1], RpcError) and found[1].code == mcp.MESSAGE_TOO_LARGE
    assert reads[1][0].data == "" and reads[1][0].id == "1"  # its cursor kept, its data not


@pytest.mark.parametrize("size", [1, 3, 64, 999, 1000, 4096])
def test_an_event_over_the_bound_in_small_chunks_is_never_held_whole(size: int) -> None:
    big = {**ANSWER, "result": {"text": "z" * 20_000}}
    data = stream(PROGRESS, big, ANSWER)
    reader = mcp.EventReader(1000, DEPTH)
    reads = []
    for i in range(0, len(data), size):
        reads += reader.feed(data[i : i + size])
        assert reader.pending <= 1000
    found = messages(reads)
    assert found[0] == PROGRESS and found[-1] == ANSWER and len(found) == 3
    assert isinstance(found[1], RpcError) and found[1].code == mcp.MESSAGE_TOO_LARGE
    assert reader.close() == []


@pytest.mark.parametrize("split", [0, 1, 2, 3])
def test_the_end_of_a_dropped_event_is_found_across_chunks(split: int) -> None:
    end = b"\r\n\r\n"
    first = b"data: " + b"a" * 2000 + end[:split]
    second = end[split:] + stream(ANSWER)
    reader = mcp.EventReader(1000, DEPTH)
    found = messages(reader.feed(first) + reader.feed(second))
    assert isinstance(found[0], RpcError) and found[1:] == [ANSWER]


def test_close_reads_a_last_event_left_unterminated() -> None:
    reader = mcp.EventReader(MAX, DEPTH)
    assert reader.feed(b"data: " + dumps(ANSWER)) == []
    assert messages(reader.close()) == [ANSWER]
    dropping = mcp.EventReader(10, DEPTH)
    assert messages(dropping.feed(b"data: " + dumps(ANSWER))) != []
    assert dropping.close() == []


# -- hostile input ----------------------------------------------------------------------

_envelope = st.dictionaries(
    st.sampled_from(["jsonrpc", "id", "method", "params", "result", "error", "x"]),
    st.one_of(
        _json,
        st.just("2.0"),
        st.sampled_from(["tools/call", "ping"]),
        st.fixed_dictionaries({"code": _json, "message": _json}),
    ),
)


def check_message(found: Message | RpcError) -> None:
    """What a read gives holds to the rules, whichever it is."""
    if isinstance(found, RpcError):
        answer = orjson.loads(found.body())
        assert answer["jsonrpc"] == "2.0" and ("id" not in answer or answer["id"] is not None)
        return
    payload = found.payload
    assert payload["jsonrpc"] == "2.0"
    assert (
        found.id is None
        or (type(found.id) is str and len(found.id) <= 256)
        or (type(found.id) is int and abs(found.id) <= 2**53 - 1)
    )
    if found.kind is Kind.REQUEST:
        assert found.id is not None and isinstance(found.method, str)
    elif found.kind is Kind.NOTIFICATION:
        assert "id" not in payload and isinstance(found.method, str)
    elif found.kind is Kind.RESULT:
        assert found.id is not None and isinstance(found.result, dict) and "error" not in payload
    else:
        assert isinstance(found.error, dict) and "result" not in payload
    assert found.params is None or isinstance(found.params, dict)


@FAST
@given(st.binary(max_size=2000))
@example(b"[" * 2000)
@example(b"{" * 1000 + b"}" * 1000)
@example(b'{"jsonrpc":"2.0","id":1,"method":"a"}' + b"]" * 900)
def test_any_bytes_read_as_a_message_or_an_error(body: bytes) -> None:
    for max_depth in (4, 64, 512):
        check_message(read(body, max_depth=max_depth))


@FAST
@given(_envelope, st.integers(0, 200 * 1024))
def test_any_envelope_reads_by_the_rules(message: dict[str, Any], pad: int) -> None:
    """Short and long (padded) bodies alike."""
    body = dumps(message)
    found = read(body)
    check_message(found)
    assert type(read(body + b" " * pad)) is type(found)
    if isinstance(found, Message):
        assert found.payload == message


@FAST
@given(st.binary(max_size=3000), st.lists(st.integers(0, 10**6), max_size=12), st.integers(16, 600))
def test_any_stream_is_read_within_its_bound(data: bytes, points: list[int], bound: int) -> None:
    reader = mcp.EventReader(bound, DEPTH)
    for chunk in cut(data, points):
        for _, found in reader.feed(chunk):
            if found is not None:
                check_message(found)
        assert reader.pending <= bound
    for _, found in reader.close():
        if found is not None:
            check_message(found)


_messages = st.lists(
    st.one_of(
        st.builds(lambda i: {"jsonrpc": "2.0", "id": i, "result": {"n": i}}, st.integers(0, 99)),
        st.builds(
            lambda t: {"jsonrpc": "2.0", "method": "notifications/message", "params": {"data": t}},
            st.text(max_size=40),
        ),
    ),
    max_size=6,
)


@FAST
@given(_messages, st.lists(st.integers(0, 10**6), max_size=12), st.booleans())
def test_messages_survive_any_split(
    sent: list[dict[str, Any]], points: list[int], crlf: bool
) -> None:
    data = stream(*sent, crlf=crlf)
    reader = mcp.EventReader(MAX, DEPTH)
    reads = [r for chunk in cut(data, points) for r in reader.feed(chunk)] + reader.close()
    assert messages(reads) == sent


def test_keys_that_fold_to_a_name_the_gateway_reads_are_refused() -> None:
    """A case-insensitive decoder upstream would read them where the gateway did not."""
    for body in (
        b'{"jsonrpc": "2.0", "id": 1, "method": "ping", "METHOD": "tools/call"}',
        b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo", "NAME": "secret"}}',
        b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo", "Arguments": {}}}',
        '{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo", "argument\u017f": {}}}'.encode(),
        '{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo", "\u212aey": 1}, "Params": {}}'.encode(),
    ):
        read = mcp.read_message(body, max_bytes=4096, max_depth=16)
        assert isinstance(read, mcp.RpcError) and read.code == mcp.INVALID_REQUEST, body
    fine = b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo", "Other": 1}}'
    assert isinstance(mcp.read_message(fine, max_bytes=4096, max_depth=16), mcp.Message)
