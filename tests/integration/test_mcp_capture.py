"""Capture of MCP tool traffic and `extproc replay` of it, through a real Envoy: the MCP
servers of test_mcp (the official SDK's), a gateway of this module's own with capture on,
the official `mcp` client."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from mcp.shared.exceptions import McpError

from extproc.control.replay import replay
from tests.helpers import INITIALIZE, sha256
from tests.integration.conftest import (
    GATEWAY_KEYS,
    PORTS,
    Gateway,
    assert_no_secret_logged,
    start_gateway,
)
from tests.integration.mcp_servers import TOOLS_KEY
from tests.integration.test_mcp import post, servers, session, text_of

__all__ = ["servers"]  # the MCP servers' fixture, shared with test_mcp

KEY_A, KEY_B = GATEWAY_KEYS["team-a"], GATEWAY_KEYS["team-b"]
CONFIG = (
    PORTS
    + """mcp_servers:
  - name: tools
    url: http://127.0.0.1:{tools_port}/mcp
    credential: {{file: mcp-key.txt}}
  - name: plain
    url: http://127.0.0.1:{json_port}/mcp
    tool_prefix: plain_
policies:
  - name: guard
    pii: [{{detector: email, apply_to: [tool_call, tool_result]}}]
tenants:
  - name: team-a
    api_key_sha256: ["{key_a}"]
    policies: [guard]
    mcp: {{servers: ["*"], deny_tools: ["*/run_shell"]}}
  - name: team-b
    api_key_sha256: ["{key_b}"]
    mcp: {{servers: [plain]}}
capture:
  path: capture/mcp.jsonl
  rates: [{{mcp_servers: ["*"], tenants: [team-a], rate: 1}}]
"""
)


@pytest.fixture(scope="module")
def gateway(servers: dict[str, int], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    workdir = tmp_path_factory.mktemp("mcp-capture")
    (workdir / "mcp-key.txt").write_text(TOOLS_KEY + "\n")
    started = start_gateway(
        workdir,
        CONFIG,
        key_a=sha256(KEY_A),
        key_b=sha256(KEY_B),
        tools_port=servers["tools"],
        json_port=servers["json"],
    )
    yield started
    started.stack.stop()


def capture_file(gateway: Gateway) -> Path:
    return gateway.stack.workdir / "capture" / "mcp.jsonl"


def captured(gateway: Gateway, last: str, timeout: float = 10.0) -> list[dict[str, Any]]:
    """The capture's records once it holds the one of request `last` (each is written as
    its request ends, which may be just after the client has its answer)."""
    path = capture_file(gateway)
    deadline = time.monotonic() + timeout
    while True:
        lines = path.read_bytes().splitlines() if path.exists() else []
        records = [orjson.loads(line) for line in lines]
        if any(r["request_id"] == last for r in records):
            return records
        assert time.monotonic() < deadline, f"request {last} is not in the capture"
        time.sleep(0.05)


def test_calls_are_captured_redacted_without_key_or_session_then_replayed(
    gateway: Gateway, tmp_path: Path
) -> None:
    async def run() -> tuple[str, str, list[str]]:
        async with session(f"{gateway.url}/mcp/tools", KEY_A) as client:
            listed = sorted(t.name for t in (await client.list_tools()).tools)
            echoed = text_of(await client.call_tool("echo", {"text": "mail bob@example.com"}))
            with pytest.raises(McpError):
                await client.call_tool("run_shell", {"command": "ls"})
        async with session(f"{gateway.url}/mcp", KEY_A) as client:
            plain = text_of(await client.call_tool("plain_echo", {"text": "through /mcp"}))
        async with session(f"{gateway.url}/mcp/plain", KEY_B) as client:
            await client.call_tool("echo", {"text": "team-b is not sampled"})
        return echoed, plain, listed

    echoed, plain, listed = asyncio.run(run())
    assert echoed == "mail [EMAIL_1]" and plain == "through /mcp"
    assert "echo" in listed and "run_shell" not in listed
    # A last request, whose record is written after every other's.
    opened = post(f"{gateway.url}/mcp", KEY_A, INITIALIZE)
    session_id = opened.headers["mcp-session-id"]
    records = captured(gateway, opened.headers["x-request-id"])
    text = capture_file(gateway).read_text()
    assert_no_secret_logged(gateway.stack.workdir)
    for secret in (TOOLS_KEY, KEY_A, session_id, "bob@example.com"):
        assert secret not in text
    assert "team-b is not sampled" not in text and {r["tenant"] for r in records} == {"team-a"}
    assert all(r["mcp"] and r["method"] == "POST" for r in records)

    calls = {(r["path"], r["tool"]): r for r in records if r["rpc_method"] == "tools/call"}
    echo = calls[("/mcp/tools", "echo")]
    assert echo["request"]["params"]["arguments"] == {"text": "mail [EMAIL_1]"}
    events = echo["response"]["events"]  # the tools server answers with a stream
    assert events[-1]["result"]["content"][0]["text"] == "mail [EMAIL_1]"
    shell = calls[("/mcp/tools", "run_shell")]
    assert shell["refusal"] == "access" and shell["response"]["error"]["code"] == -31001
    virtual = calls[("/mcp", "echo")]
    assert virtual["server"] == "plain" and virtual["requested_name"] == "plain_echo"
    assert virtual["request"]["params"]["name"] == "echo"  # as the server knows it
    lists = [r for r in records if r["rpc_method"] == "tools/list"]
    assert lists and all("run_shell" not in str(r["response"]) for r in lists)

    # The file replayed through the same gateway (which captures the replay too, into
    # the file: it is read whole first): nothing differs.
    count = len(capture_file(gateway).read_bytes().splitlines())
    out = io.StringIO()
    assert replay(capture_file(gateway), gateway.url, api_key=KEY_A, out=out) == 0, out.getvalue()
    assert out.getvalue().endswith(f"{count} replayed, 0 differ, 0 skipped\n")

    # Records changed by hand: the differences are reported.
    edited = tmp_path / "edited.jsonl"
    tools_list = next(r for r in lists if r["path"] == "/mcp/tools")
    events = tools_list["response"]["events"]
    events[-1]["result"]["tools"] = [t for t in events[-1]["result"]["tools"] if t["name"] != "add"]
    echo["request"]["params"]["name"] = "run_shell"
    edited.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in (tools_list, echo)))
    out = io.StringIO()
    assert replay(edited, gateway.url, api_key=KEY_A, out=out) == 1
    report = out.getvalue().splitlines()
    assert report == [
        f"{tools_list['request_id']}: tools added: add",
        f"{echo['request_id']}: result -> error -31001",
        "2 replayed, 2 differ, 0 skipped",
    ]
