"""The MCP exchanges without Envoy: a direct request's decisions, and the virtual server's
flows driven by hand (each effect answered as the shell would)."""

from __future__ import annotations

from typing import Any

import orjson

from extproc import names
from extproc.apis import mcp
from extproc.config.loader import load_text
from extproc.dataplane import flows, tool_report
from extproc.dataplane.decisions import Continue, Reply
from extproc.dataplane.tools import ToolExchange
from extproc.dataplane.virtual import VirtualExchange
from extproc.state.sessions import Session, Upstream
from extproc.tools.catalog import ListCache
from extproc.tools.pins import PinBook, Pinning
from tests.helpers import sha256

CONFIG = f"""
mcp_servers:
  - {{name: one, url: "http://one.internal/mcp", credential: {{env: HOME}}}}
  - {{name: two, url: "http://two.internal:8080/tools/mcp", tool_prefix: two_}}
  - {{name: three, url: "http://three.internal/mcp", pinning: enforce}}
policies:
  - name: guard
    pii: [{{detector: email, apply_to: [tool_call]}}]
tenants:
  - name: a
    api_key_sha256: ["{sha256("key-a")}"]
    policies: [guard]
    mcp:
      servers: ["*"]
      deny_tools: ["one/secret"]
      rates: [{{name: few, tools: ["one/echo"], window: month, max_calls: 1}}]
  - name: b
    api_key_sha256: ["{sha256("key-b")}"]
"""
RUNTIME = load_text(CONFIG)
TOOL = {"inputSchema": {"type": "object"}}


def exchange(kind: type[ToolExchange], path: str, key: str = "key-a", **headers: str) -> Any:
    tool = kind(RUNTIME, PinBook({}), ListCache(60))
    head = {
        ":method": "POST",
        ":path": path,
        "authorization": f"Bearer {key}",
        "content-length": "10",
        **headers,
    }
    return tool, tool.request_headers(head, False)


def message(method: str, params: dict[str, Any] | None = None, id: int | None = 1) -> bytes:
    body: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if id is not None:
        body["id"] = id
    if params is not None:
        body["params"] = params
    return orjson.dumps(body)


def drive(step: Any, answers: dict[type, Any]) -> tuple[Any, list[Any]]:
    """A flow run to its decision, each effect answered from `answers` by its type."""
    asked: list[Any] = []
    if isinstance(step, Continue | Reply):
        return step, asked
    result = None
    try:
        while True:
            effect = step.send(result) if asked else next(step)
            asked.append(effect)
            answer = answers[type(effect)]
            result = answer(effect) if callable(answer) else answer
    except StopIteration as stop:
        return stop.value, asked


def test_a_direct_request_is_routed_with_the_servers_credential_and_not_the_key() -> None:
    tool, first = exchange(ToolExchange, "/mcp/two?x=1&key=secret")
    # A POST goes nowhere until its message is read and governed.
    assert first == Continue()
    body = message("tools/list") + b" "
    decision = tool.request_body(body)
    assert isinstance(decision, Continue)
    headers = dict(decision.set_headers)
    assert headers[names.ROUTE_HEADER] == "mcp.two"
    assert headers[":path"] == "/tools/mcp?x=1"
    assert "authorization" in decision.remove_headers
    assert decision.body == message("tools/list")  # written anew
    tool, _ = exchange(ToolExchange, "/mcp/one")
    routed = tool.request_body(message("ping"))
    assert dict(routed.set_headers)["authorization"].startswith("Bearer ")


def test_a_key_given_twice_reaches_the_server_once_as_the_gateway_read_it() -> None:
    tool, _ = exchange(ToolExchange, "/mcp/two")
    twice = (
        b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call", '
        b'"params": {"name": "secret", "name": "echo", "arguments": {}}}'
    )
    decision = tool.request_body(twice)
    assert isinstance(decision, Continue) and decision.body is not None
    assert decision.body.count(b'"name"') == 1 and b"secret" not in decision.body


def test_a_tenant_without_the_server_and_an_unknown_server_get_the_same_404() -> None:
    _, other = exchange(ToolExchange, "/mcp/one", key="key-b")
    _, unknown = exchange(ToolExchange, "/mcp/nowhere")
    assert isinstance(other, Reply) and isinstance(unknown, Reply)
    assert other.status == unknown.status == 404
    _, nested = exchange(ToolExchange, "/mcp/one/more")
    assert nested.status == 404


def test_a_denied_tool_and_its_arguments_never_leave() -> None:
    tool, _ = exchange(ToolExchange, "/mcp/one")
    refused = tool.request_body(message("tools/call", {"name": "secret", "arguments": {}}))
    assert isinstance(refused, Reply) and refused.status == 200
    assert orjson.loads(refused.body)["error"]["code"] == mcp.TOOL_NOT_ALLOWED
    assert tool_report.record(tool)["refusal"] == "access"


def test_arguments_are_redacted_before_the_server_sees_them() -> None:
    tool, _ = exchange(ToolExchange, "/mcp/two")
    sent = tool.request_body(
        message("tools/call", {"name": "echo", "arguments": {"text": "mail bob@example.com"}})
    )
    assert isinstance(sent, Continue) and sent.body is not None
    assert b"bob@example.com" not in sent.body and b"[EMAIL_1]" in sent.body
    assert "bob@example.com" not in repr(tool_report.record(tool))


def test_a_rate_counts_calls_and_refuses_past_it() -> None:
    tool, _ = exchange(ToolExchange, "/mcp/one")
    call = message("tools/call", {"name": "echo", "arguments": {"text": "hi"}})
    decision, asked = drive(tool.request_body(call), {flows.Count: flows.Counted(-1)})
    assert isinstance(decision, Continue) and isinstance(asked[0], flows.Count)
    tool, _ = exchange(ToolExchange, "/mcp/one")
    refused, _ = drive(tool.request_body(call), {flows.Count: flows.Counted(0)})
    error = orjson.loads(refused.body)["error"]
    assert error["code"] == mcp.RATE_LIMITED and error["data"]["retry_after"] >= 1


def test_a_server_failure_is_an_error_for_the_call_in_place_of_the_answer() -> None:
    tool, _ = exchange(ToolExchange, "/mcp/two")
    tool.request_body(message("tools/call", {"name": "echo", "arguments": {}}, id=9))
    decision = tool.response_headers({":status": "503", "content-type": "text/plain"})
    assert decision.replace_body and dict(decision.set_headers)[":status"] == "200"
    assert orjson.loads(decision.body) == {
        "jsonrpc": "2.0",
        "id": 9,
        "error": {
            "code": mcp.SERVER_UNAVAILABLE,
            "message": "MCP server 'two' is unavailable (503).",
        },
    }


def test_the_virtual_server_answers_initialize_with_a_session_of_its_own() -> None:
    tool, decision = exchange(VirtualExchange, "/mcp")
    assert decision == Continue()
    initialize = message("initialize", {"protocolVersion": "2025-06-18", "capabilities": {}})
    saved: list[Any] = []
    reply, _asked = drive(
        tool.request_body(initialize),
        {flows.SaveSession: lambda e: saved.append(e) or flows.Done()},
    )
    session_id = dict(reply.headers)[mcp.SESSION_HEADER]
    assert saved[0].session_id == session_id and saved[0].session.tenant == "a"
    assert orjson.loads(reply.body)["result"]["protocolVersion"] == "2025-06-18"


def test_the_virtual_list_merges_servers_and_leaves_out_one_that_failed() -> None:
    tool, _ = exchange(VirtualExchange, "/mcp", **{mcp.SESSION_HEADER: "s"})
    fetched = flows.Fetched(
        {"one": [{"name": "echo", **TOOL}, {"name": "secret", **TOOL}], "two": None, "three": []},
        {"one": Upstream("up-1", "2025-06-18", ("tools",))},
        {"two": "timeout"},
    )
    reply, asked = drive(
        tool.request_body(message("tools/list")),
        {
            flows.LoadSession: flows.SessionFound(Session("a", "2025-06-18")),
            flows.Fetch: fetched,
            flows.SaveSession: flows.Done(),
        },
    )
    assert [t["name"] for t in orjson.loads(reply.body)["result"]["tools"]] == ["echo"]
    assert tool.unavailable == ["two"]
    saved = [e for e in asked if isinstance(e, flows.SaveSession)]
    assert saved[0].session.upstream["one"].session_id == "up-1"


def test_a_virtual_call_goes_to_its_owner_with_the_upstream_session() -> None:
    lists = ListCache(60)
    lists.put("one", "tools/list", [{"name": "echo", **TOOL}])
    lists.put("two", "tools/list", [{"name": "echo", **TOOL}])
    lists.put("three", "tools/list", [])
    tool = VirtualExchange(RUNTIME, PinBook({}), lists)
    tool.request_headers(
        {
            ":method": "POST",
            ":path": "/mcp",
            "authorization": "Bearer key-a",
            mcp.SESSION_HEADER: "s",
        },
        False,
    )
    call = message("tools/call", {"name": "two_echo", "arguments": {"text": "hi"}})
    decision, _asked = drive(
        tool.request_body(call),
        {
            flows.LoadSession: flows.SessionFound(Session("a", "2025-06-18")),
            flows.Open: flows.Opened(Upstream("up-2", "2025-03-26", ("tools",))),
            flows.SaveSession: flows.Done(),
        },
    )
    headers = dict(decision.set_headers)
    assert headers[names.ROUTE_HEADER] == "mcp.two"
    assert headers[mcp.SESSION_HEADER] == "up-2"
    assert headers[mcp.PROTOCOL_VERSION_HEADER] == "2025-03-26"
    assert orjson.loads(decision.body)["params"]["name"] == "echo"


def test_a_session_of_another_tenant_or_none_at_all_is_refused() -> None:
    tool, _ = exchange(VirtualExchange, "/mcp", **{mcp.SESSION_HEADER: "s"})
    reply, _ = drive(
        tool.request_body(message("tools/list")),
        {flows.LoadSession: flows.SessionFound(Session("b", "2025-06-18"))},
    )
    assert reply.status == 404
    tool, _ = exchange(VirtualExchange, "/mcp")
    assert tool.request_body(message("tools/list")).status == 400
    tool, _ = exchange(VirtualExchange, "/mcp", **{mcp.SESSION_HEADER: "s"})
    down, _ = drive(tool.request_body(message("ping")), {flows.LoadSession: flows.StoreDown()})
    assert down.status == 503


def test_a_call_to_an_enforcing_server_waits_for_its_list_in_a_fresh_process() -> None:
    call = message("tools/call", {"name": "echo", "arguments": {}})
    tool, _ = exchange(ToolExchange, "/mcp/three")
    listed = flows.Fetched({"three": [{"name": "echo", **TOOL}]}, {}, {})
    decision, asked = drive(tool.request_body(call), {flows.Fetch: listed})
    assert isinstance(asked[0], flows.Fetch) and asked[0].method == "tools/list"
    assert isinstance(decision, Continue) and decision.body is not None
    # The same process now knows: the next call goes at once.
    again = ToolExchange(RUNTIME, tool.pins, ListCache(60))
    again.request_headers(
        {":method": "POST", ":path": "/mcp/three", "authorization": "Bearer key-a"}, False
    )
    assert isinstance(again.request_body(call), Continue)
    # A server that does not list: the call is refused, not let through unchecked.
    tool, _ = exchange(ToolExchange, "/mcp/three")
    failed = flows.Fetched({"three": None}, {}, {"three": "timeout"})
    refused, _ = drive(tool.request_body(call), {flows.Fetch: failed})
    assert orjson.loads(refused.body)["error"]["code"] == mcp.SERVER_UNAVAILABLE


def test_a_page_of_a_tool_list_never_undoes_what_the_whole_list_withheld() -> None:
    pins = PinBook({})
    changed = {"name": "echo", "description": "new", **TOOL}
    pins.check("s", [{"name": "echo", "description": "old", **TOOL}], Pinning.ENFORCE)
    pins.check("s", [changed], Pinning.ENFORCE)
    assert pins.withheld("s", "echo")
    pins.check("s", [{"name": "other", **TOOL}], Pinning.ENFORCE, whole=False)
    assert pins.withheld("s", "echo")
