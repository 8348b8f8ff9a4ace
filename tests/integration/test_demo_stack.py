"""`extproc up` with the demo config (what `make run` runs) starts the demo MCP server
beside the gateway and the mock provider; the official MCP client reaches it straight and
through the demo tenant's virtual server, which offers `echo` and `add` but not
`run_shell`, with the demo policy's e-mail redaction on tool arguments."""

from __future__ import annotations

import asyncio
from pathlib import Path

from mcp import ClientSession
from mcp.client.streamable_http import streamablehttp_client
from mcp.shared.exceptions import McpError
from mcp.types import TextContent

from extproc.control.stack import Stack, free_port

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo.yaml"


async def tools_and_echo(url: str, text: str) -> tuple[list[str], str]:
    async with (
        streamablehttp_client(url) as (read, write, _),
        ClientSession(read, write) as session,
    ):
        await asyncio.wait_for(session.initialize(), 20)
        listed = await asyncio.wait_for(session.list_tools(), 20)
        echoed = await asyncio.wait_for(session.call_tool("echo", {"text": text}), 20)
    block = echoed.content[0]
    assert isinstance(block, TextContent)
    return sorted(tool.name for tool in listed.tools), block.text


async def refused(url: str) -> McpError:
    async with (
        streamablehttp_client(url) as (read, write, _),
        ClientSession(read, write) as session,
    ):
        await asyncio.wait_for(session.initialize(), 20)
        try:
            await asyncio.wait_for(session.call_tool("run_shell", {"command": "ls"}), 20)
        except McpError as error:
            return error
    raise AssertionError("run_shell was called")


def demo_config(path: Path, ports: dict[str, int]) -> None:
    """examples/demo.yaml on free ports."""
    text = DEMO.read_text()
    for default, name in (
        ("port: 10000", "port"),
        ("port: 9901", "admin_port"),
        ("127.0.0.1:50051", "grpc_port"),
        ("127.0.0.1:9464", "metrics_port"),
        ("127.0.0.1:8001", "mock_port"),
        ("127.0.0.1:8002", "demo_port"),
    ):
        assert default in text, default
        value = str(ports[name])
        text = text.replace(
            default, f"port: {value}" if default.startswith("port") else f"127.0.0.1:{value}"
        )
    path.write_text(text)


def test_the_demo_stack_fronts_the_demo_mcp_server(tmp_path: Path) -> None:
    names = ("port", "admin_port", "grpc_port", "metrics_port", "mock_port", "demo_port")
    ports = {name: free_port() for name in names}
    config = tmp_path / "gateway.yaml"
    demo_config(config, ports)
    stack = Stack(
        config_path=config,
        workdir=tmp_path / "stack",
        mock_port=ports["mock_port"],
        mcp_demo_port=ports["demo_port"],
    )
    stack.start()
    demo = stack.processes["mcp-demo"]
    gateway = f"http://127.0.0.1:{ports['port']}"
    try:
        straight = asyncio.run(tools_and_echo(f"http://127.0.0.1:{ports['demo_port']}/mcp", "hi"))
        assert straight == (["add", "echo", "run_shell"], "hi")
        listed, echoed = asyncio.run(tools_and_echo(f"{gateway}/mcp", "mail bob@example.com"))
        assert listed == ["add", "echo"]
        assert echoed == "mail [EMAIL_1]"
        assert "run_shell" in asyncio.run(refused(f"{gateway}/mcp")).error.message
    finally:
        stack.stop()
    assert demo.poll() is not None  # stopped with the rest
