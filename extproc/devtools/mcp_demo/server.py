"""The demo MCP server: FastMCP with three tools and a count of the calls that arrive."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import anyio
from mcp.server.fastmcp import FastMCP
from mcp.types import ContentBlock, ToolAnnotations
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

TOOLS = ("echo", "add", "run_shell")
STATS_PATH = "/mcp-demo/stats"


def echo(text: str) -> str:
    """Return the text it is given."""
    return text


def add(a: float, b: float) -> float:
    """Add two numbers."""
    return a + b


def run_shell(command: str) -> str:
    """Run a shell command. The demo only returns the command it would have run."""
    return f"would run: {command}"


class DemoServer(FastMCP[None]):
    """The demo's tools on FastMCP, counting every `tools/call` by the name it asks for."""

    def __init__(
        self, *, host: str = "127.0.0.1", json_response: bool = False, stateless: bool = False
    ) -> None:
        # `host` only decides the SDK's DNS-rebinding check: on loopback it accepts Host
        # headers naming loopback alone, as the transport's security advice asks.
        super().__init__(
            "extproc-demo",
            host=host,
            json_response=json_response,
            stateless_http=stateless,
            log_level="WARNING",
        )
        self.add_tool(echo, structured_output=False)
        self.add_tool(add, structured_output=True)
        self.add_tool(
            run_shell,
            structured_output=False,
            annotations=ToolAnnotations(destructiveHint=True, openWorldHint=True),
        )
        self.calls = dict.fromkeys(TOOLS, 0)
        # Any other name counts here: a fixed set of keys, whatever names clients send.
        self.unknown = 0
        self.custom_route(STATS_PATH, methods=["GET"])(self._stats)

    async def call_tool(
        self, name: str, arguments: dict[str, Any]
    ) -> Sequence[ContentBlock] | dict[str, Any]:
        if name in self.calls:
            self.calls[name] += 1
        else:
            self.unknown += 1
        return await super().call_tool(name, arguments)

    async def _stats(self, request: Request) -> Response:
        return JSONResponse({"calls": self.calls, "unknown": self.unknown})


class _SessionEndFilter(logging.Filter):
    """Drops the error SDK 1.30 logs, with a traceback, each time a client ends a session
    whose GET stream is open: ending it closes the stream under its writer, as it should."""

    def filter(self, record: logging.LogRecord) -> bool:
        closed = record.exc_info is not None and isinstance(
            record.exc_info[1], anyio.ClosedResourceError
        )
        return not (closed and record.getMessage() == "Error in standalone SSE writer")


def run(host: str, port: int, *, json_response: bool = False, stateless: bool = False) -> None:
    logging.getLogger("mcp.server.streamable_http").addFilter(_SessionEndFilter())
    server = DemoServer(host=host, json_response=json_response, stateless=stateless)
    server.settings.port = port
    server.run("streamable-http")
