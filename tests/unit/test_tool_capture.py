"""Capture of MCP requests: which are sampled, and what their records hold (the message as
the server got it, the answer as the client got it; no key, no session id, nothing a
policy kept from a server)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from extproc.capture import Sink
from extproc.dataplane.decisions import Continue, Decision, Reply
from extproc.dataplane.effects import Effects
from extproc.dataplane.tools import ToolExchange
from extproc.state.sessions import MemorySessionStore, Session, Upstream
from extproc.telemetry.metrics import Metrics
from tests.helpers import runtime, sha256

KEY = "key-capture-a"
CONFIG = f"""
mcp_servers:
  - {{name: tools, url: "http://127.0.0.1:9/mcp", tool_prefix: t_}}
  - {{name: plain, url: "http://127.0.0.1:9/plain/mcp", tool_prefix: plain_}}
policies:
  - name: guard
    pii: [{{detector: email, apply_to: [tool_call, tool_result]}}]
    deny: [{{name: codes, patterns: ["launch codes"], apply_to: [tool_call]}}]
tenants:
  - name: team-a
    api_key_sha256: ["{sha256(KEY)}"]
    policies: [guard]
    mcp: {{servers: ["*"], deny_tools: ["*/run_shell"]}}
capture:
  path: PATH
  max_body_bytes: 2048
  rates:
    - {{mcp_servers: [plain], rate: 0}}
    - {{mcp_servers: ["*"], rate: 1}}
"""


def call(name: str, arguments: dict[str, Any], id: int = 7) -> bytes:
    params = {"name": name, "arguments": arguments}
    return orjson.dumps({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params})


def result(text: str, id: int = 7) -> dict[str, Any]:
    content = [{"type": "text", "text": text}]
    return {"jsonrpc": "2.0", "id": id, "result": {"content": content}}


class Gateway:
    """The service's effects over a capture file, driven as the stream drives them."""

    def __init__(self, tmp_path: Path) -> None:
        self.file = tmp_path / "traffic.jsonl"
        self.effects = Effects(runtime(CONFIG.replace("PATH", str(self.file))), Metrics())

    def start(self, path: str, body: bytes, session: str = "") -> tuple[ToolExchange, Decision]:
        tool = self.effects.tools.exchange(path)
        headers = {":method": "POST", ":path": path, "authorization": f"Bearer {KEY}"}
        if session:
            headers["mcp-session-id"] = session
        assert isinstance(tool.request_headers(headers, end_of_stream=False), Continue)
        decision = self.effects.tools.request_body(tool, body, lambda decided: decided)
        assert isinstance(decision, Continue | Reply)
        return tool, decision

    def answer(
        self, tool: ToolExchange, body: bytes, content_type: str = "application/json"
    ) -> bytes:
        tool.response_headers({":status": "200", "content-type": content_type})
        changed = tool.response_body(body, end_of_stream=True).body
        return body if changed is None else changed

    def finish(self, tool: ToolExchange) -> list[dict[str, Any]]:
        self.effects.tool_finished(tool, failed=False)
        if not self.file.exists():
            return []
        return [orjson.loads(line) for line in self.file.read_bytes().splitlines()]


@pytest.fixture
def gateway(tmp_path: Path) -> Gateway:
    return Gateway(tmp_path)


def test_a_call_is_recorded_as_the_server_got_it_and_answered_as_the_client_got_it(
    gateway: Gateway,
) -> None:
    tool, decision = gateway.start("/mcp/tools", call("echo", {"text": "mail bob@example.com"}))
    assert isinstance(decision, Continue) and decision.body is not None
    sent = gateway.answer(tool, orjson.dumps(result("write to alice@example.com")))
    [record] = gateway.finish(tool)
    assert record["mcp"] is True and record["server"] == "tools" and record["tool"] == "echo"
    assert record["status"] == 200 and record["outcome"] == "ok"
    assert record["request"] == orjson.loads(decision.body)
    assert record["request"]["params"]["arguments"] == {"text": "mail [EMAIL_1]"}
    assert record["response"] == orjson.loads(sent)
    assert "time" in record and "duration_ms" in record
    text = gateway.file.read_text()
    for secret in ("bob@example.com", "alice@example.com", KEY):
        assert secret not in text


def test_a_streamed_answer_is_recorded_event_by_event(gateway: Gateway) -> None:
    tool, _ = gateway.start("/mcp/tools", call("echo", {"text": "hi"}))
    progress = {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progress": 1}}
    stream = (
        b"id: 0\n\n"  # a priming event: no data
        + b"event: message\ndata: "
        + orjson.dumps(progress)
        + b"\n\nevent: message\ndata: "
        + orjson.dumps(result("hi"))
        + b"\n\n"
    )
    gateway.answer(tool, stream, "text/event-stream")
    [record] = gateway.finish(tool)
    assert record["response"] == {"events": [progress, result("hi")]}


def test_a_failed_servers_answer_is_recorded_as_the_error_the_client_got(
    gateway: Gateway,
) -> None:
    tool, _ = gateway.start("/mcp/tools", call("echo", {"text": "x"}))
    # Replaced whole in the headers' reply: no body phase follows.
    replaced = tool.response_headers({":status": "503", "content-type": "text/html"})
    assert replaced.body is not None
    [record] = gateway.finish(tool)
    assert record["outcome"] == "server_unavailable"
    assert record["response"] == orjson.loads(replaced.body)
    assert record["response"]["error"]["code"] == -31004


def test_a_refused_call_keeps_its_arguments_as_policy_would_have_sent_them(
    gateway: Gateway,
) -> None:
    tool, decision = gateway.start("/mcp/tools", call("run_shell", {"command": "mail x@y.org"}))
    assert isinstance(decision, Reply)
    [record] = gateway.finish(tool)
    assert record["refusal"] == "access" and record["rpc_error"] == -31001
    assert record["request"]["params"] == {
        "name": "run_shell",
        "arguments": {"command": "mail [EMAIL_1]"},
    }
    assert "withheld" not in record
    assert record["response"] == orjson.loads(decision.body)  # the gateway's answer
    assert "x@y.org" not in gateway.file.read_text()


def test_arguments_a_policy_refuses_are_withheld(gateway: Gateway) -> None:
    tool, decision = gateway.start("/mcp/tools", call("echo", {"text": "the launch codes"}))
    assert isinstance(decision, Reply)
    [record] = gateway.finish(tool)
    assert record["refusal"] == "policy" and record["withheld"] == "arguments"
    assert record["request"]["params"] == {"name": "echo"}
    assert "launch codes" not in gateway.file.read_text()


def test_an_unreadable_message_is_recorded_as_its_size(gateway: Gateway) -> None:
    body = b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"arguments": '
    tool, decision = gateway.start("/mcp/tools", body)
    assert isinstance(decision, Reply) and decision.status == 400
    [record] = gateway.finish(tool)
    assert record["request"] == {"unread": True, "bytes": len(body)}
    assert record["withheld"] == "request"
    assert record["response"]["error"]["code"] == -32700


def test_an_answer_past_max_body_bytes_is_recorded_as_its_size(gateway: Gateway) -> None:
    tool, _ = gateway.start("/mcp/tools", call("echo", {"text": "x"}))
    answer = orjson.dumps(result("x" * 3000))
    gateway.answer(tool, answer)
    [record] = gateway.finish(tool)
    assert record["response"] == {"truncated": True, "bytes": len(answer)}
    assert record["request"]["params"]["arguments"] == {"text": "x"}


def test_a_request_not_sampled_keeps_nothing(gateway: Gateway) -> None:
    tool, _ = gateway.start("/mcp/plain", call("echo", {"text": "x"}))  # plain's rate is 0
    assert tool.kept is None
    gateway.answer(tool, orjson.dumps(result("x")))
    assert tool.kept is None
    assert gateway.finish(tool) == []


def test_the_virtual_servers_own_answers_are_captured_without_the_session_id(
    gateway: Gateway,
) -> None:
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}},
    }
    tool, decision = gateway.start("/mcp", orjson.dumps(initialize))
    assert isinstance(decision, Reply)
    session_id = dict(decision.headers)["mcp-session-id"]
    [record] = gateway.finish(tool)
    assert record["path"] == "/mcp" and record["server"] is None
    assert record["request"] == initialize
    assert record["response"]["result"]["protocolVersion"] == "2025-06-18"
    assert session_id not in gateway.file.read_text()


def test_a_virtual_call_records_the_servers_name_and_the_one_the_client_called(
    gateway: Gateway,
) -> None:
    tools = gateway.effects.tools
    listed = [{"name": "echo", "inputSchema": {"type": "object"}}]
    for server in ("tools", "plain"):
        tools.lists.put(server, "tools/list", listed)
    sessions = tools.sessions
    assert isinstance(sessions, MemorySessionStore)
    session = Session("team-a", "2025-06-18").with_upstream(
        "tools", Upstream("upstream-session", "2025-06-18")
    )
    sessions.put_now("client-session", session)
    tool, decision = gateway.start(
        "/mcp", call("t_echo", {"text": "to bob@example.com"}), "client-session"
    )
    assert isinstance(decision, Continue) and tool.server is not None
    assert tool.server.name == "tools"
    [record] = gateway.finish(tool)
    assert record["requested_name"] == "t_echo"
    assert record["request"]["params"] == {
        "name": "echo",
        "arguments": {"text": "to [EMAIL_1]"},
    }
    text = gateway.file.read_text()
    assert "client-session" not in text and "upstream-session" not in text


def test_a_record_too_deep_to_write_is_dropped_with_its_cause(tmp_path: Path) -> None:
    sink = Sink(tmp_path / "c.jsonl", max_bytes=1 << 20, max_files=1)
    deep: Any = {}
    for _ in range(300):
        deep = {"a": deep}
    assert sink.write({"request": deep}) == "unencodable"
    assert sink.write({"n": 1}) is None
    sink.close()
    assert (tmp_path / "c.jsonl").read_bytes() == b'{"n":1}\n'
