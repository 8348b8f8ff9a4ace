"""`extproc up` (what `make run` runs) starts the demo MCP server beside the gateway and
the mock provider; the official MCP client reaches it and calls its tools."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path

from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.types import TextContent

from extproc.control.stack import Stack, free_port
from tests.integration.conftest import MOCK_BOTH, PORTS


async def tools_and_echo(url: str) -> tuple[list[str], str]:
    async with (
        streamable_http_client(url) as (read, write, _),
        ClientSession(read, write) as session,
    ):
        await asyncio.wait_for(session.initialize(), 20)
        listed = await asyncio.wait_for(session.list_tools(), 20)
        echoed = await asyncio.wait_for(session.call_tool("echo", {"text": "hello"}), 20)
    block = echoed.content[0]
    assert isinstance(block, TextContent)
    return sorted(tool.name for tool in listed.tools), block.text


def test_the_stack_runs_the_demo_mcp_server(tmp_path: Path) -> None:
    ports = {
        name: free_port()
        for name in ("port", "admin_port", "grpc_port", "metrics_port", "mock_port")
    }
    config = tmp_path / "gateway.yaml"
    config.write_text(textwrap.dedent(PORTS + MOCK_BOTH).format(**ports))
    demo_port = free_port()
    stack = Stack(
        config_path=config,
        workdir=tmp_path / "stack",
        mock_port=ports["mock_port"],
        mcp_demo_port=demo_port,
    )
    stack.start()
    demo = stack.processes["mcp-demo"]
    try:
        names, echoed = asyncio.run(tools_and_echo(f"http://127.0.0.1:{demo_port}/mcp"))
        assert names == ["add", "echo", "run_shell"]
        assert echoed == "hello"
    finally:
        stack.stop()
    assert demo.poll() is not None  # stopped with the rest
