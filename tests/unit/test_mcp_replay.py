"""Replay of captured MCP requests: which records are sent, as what, and how answers compare."""

from __future__ import annotations

from typing import Any

import pytest

from extproc.control.mcp_replay import compare, message_of

CALL = {
    "jsonrpc": "2.0",
    "id": 3,
    "method": "tools/call",
    "params": {"name": "echo", "arguments": {"text": "hi"}},
}


def captured(**fields: Any) -> dict[str, Any]:
    return {"mcp": True, "path": "/mcp/tools", "status": 200, "request": CALL, **fields}


def answer(result: dict[str, Any] | None = None, error: int | None = None) -> dict[str, Any]:
    if error is not None:
        return {"jsonrpc": "2.0", "id": 3, "error": {"code": error, "message": "no"}}
    return {"jsonrpc": "2.0", "id": 3, "result": result or {}}


def tools(*names: str) -> dict[str, Any]:
    return {"tools": [{"name": name, "inputSchema": {}} for name in names]}


def test_a_message_is_sent_as_the_client_sent_it() -> None:
    assert message_of(captured()) == CALL
    # The virtual server is called by the name the client used there.
    renamed = message_of(captured(path="/mcp", requested_name="t_echo"))
    assert renamed is not None and renamed["params"]["name"] == "t_echo"
    read = {"jsonrpc": "2.0", "id": 1, "method": "resources/read", "params": {"uri": "a://x"}}
    uri = message_of(captured(path="/mcp", request=read, requested_name="b://x"))
    assert uri is not None and uri["params"] == {"uri": "b://x"}


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"request": {"truncated": True, "bytes": 9}}, id="cut"),
        pytest.param({"request": {"unread": True, "bytes": 9}, "withheld": "request"}, id="unread"),
        pytest.param({"withheld": "arguments"}, id="withheld"),
        pytest.param({"refusal": "session", "status": 404}, id="the-clients-session"),
        pytest.param({"path": "http://elsewhere.example/mcp"}, id="not-an-mcp-path"),
        pytest.param({"path": "/v1/chat/completions"}, id="not-mcp"),
    ],
)
def test_records_that_cannot_be_replayed_are_skipped(fields: dict[str, Any]) -> None:
    assert message_of(captured(**fields)) is None


def test_the_same_answer_is_no_difference() -> None:
    kept = captured(response=answer({"content": [{"type": "text", "text": "a"}]}))
    streamed = {
        "events": [
            {"jsonrpc": "2.0", "method": "notifications/progress"},
            answer({"content": [{"type": "text", "text": "b"}]}),
        ]
    }
    assert compare(kept, 200, streamed) == []


def test_status_outcome_and_error_codes_are_compared() -> None:
    kept = captured(response=answer({"content": []}))
    assert compare(kept, 200, answer(error=-31001)) == ["result -> error -31001"]
    refused = captured(response=answer(error=-31001), refusal="access")
    assert compare(refused, 200, answer(error=-31002)) == ["error -31001 -> error -31002"]
    assert compare(refused, 200, answer({"content": []})) == ["error -31001 -> result"]
    assert compare(kept, 503, None) == ["status 200 -> 503", "result -> no answer"]
    note = captured(status=202, request={"jsonrpc": "2.0", "method": "notifications/initialized"})
    assert compare(note, 202, None) == []


def test_a_results_keys_and_a_tool_lists_names_are_compared() -> None:
    kept = captured(response=answer({"content": [], "isError": False}))
    assert compare(kept, 200, answer({"content": [], "structuredContent": {}})) == [
        "fields added: structuredContent",
        "fields missing: isError",
    ]
    listed = captured(rpc_method="tools/list", response=answer(tools("echo", "add")))
    assert compare(listed, 200, answer(tools("echo", "add"))) == []
    assert compare(listed, 200, answer(tools("echo", "search"))) == [
        "tools added: search",
        "tools missing: add",
    ]


def test_an_answer_kept_as_its_size_is_compared_by_status_alone() -> None:
    kept = captured(response={"truncated": True, "bytes": 5_000_000})
    assert compare(kept, 200, answer(error=-31004)) == []
    assert compare(kept, 500, None) == ["status 200 -> 500"]
