"""The demo MCP server (`extproc mcp-demo`): its tools, its transport modes and its call
counter, over real HTTP with the official MCP client."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import uvicorn
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.types import TextContent

from extproc.control.stack import free_port
from extproc.devtools.mcp_demo import STATS_PATH, TOOLS, DemoServer
from tests.helpers import INITIALIZE

MODES = [
    pytest.param(False, False, id="sse-stateful"),
    pytest.param(True, False, id="json-stateful"),
    pytest.param(False, True, id="sse-stateless"),
    pytest.param(True, True, id="json-stateless"),
]

ACCEPT = {"accept": "application/json, text/event-stream"}


@asynccontextmanager
async def serving(*, json_response: bool, stateless: bool) -> AsyncIterator[tuple[DemoServer, str]]:
    """The demo server on a loopback port in this event loop: it and its base URL."""
    demo = DemoServer(json_response=json_response, stateless=stateless)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    config = uvicorn.Config(demo.streamable_http_app(), log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[listener]))
    try:
        async with asyncio.timeout(20):
            while not server.started:
                assert not task.done(), "the server stopped while starting"
                await asyncio.sleep(0.01)
        yield demo, f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 20)
        listener.close()


@asynccontextmanager
async def connected(url: str) -> AsyncIterator[tuple[ClientSession, str | None]]:
    """An initialized client session on the demo at `url`, and the session id it was given."""
    async with (
        streamable_http_client(f"{url}/mcp") as (read, write, session_id),
        ClientSession(read, write) as session,
    ):
        result = await asyncio.wait_for(session.initialize(), 20)
        assert result.serverInfo.name == "extproc-demo"
        yield session, session_id()


async def stats(url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=10) as client:
        reply = await client.get(f"{url}{STATS_PATH}")
        reply.raise_for_status()
        counted: dict[str, Any] = reply.json()
        return counted


def texts(content: list[Any]) -> list[str]:
    assert all(isinstance(block, TextContent) for block in content)
    return [block.text for block in content]


async def test_lists_exactly_echo_add_and_run_shell_with_their_schemas() -> None:
    async with (
        serving(json_response=False, stateless=False) as (_, url),
        connected(url) as (
            session,
            _,
        ),
    ):
        tools = {tool.name: tool for tool in (await session.list_tools()).tools}
    assert sorted(tools) == sorted(TOOLS)

    def shape(schema: dict[str, Any]) -> tuple[str, dict[str, Any], list[str]]:
        kinds = {name: spec["type"] for name, spec in schema["properties"].items()}
        return schema["type"], kinds, sorted(schema["required"])

    assert shape(tools["echo"].inputSchema) == ("object", {"text": "string"}, ["text"])
    assert shape(tools["add"].inputSchema) == ("object", {"a": "number", "b": "number"}, ["a", "b"])
    assert shape(tools["run_shell"].inputSchema) == ("object", {"command": "string"}, ["command"])
    assert tools["add"].outputSchema is not None
    assert shape(tools["add"].outputSchema) == ("object", {"result": "number"}, ["result"])
    assert tools["echo"].outputSchema is None and tools["run_shell"].outputSchema is None
    assert all(tool.description for tool in tools.values())
    annotations = tools["run_shell"].annotations
    assert annotations is not None and annotations.destructiveHint is True


@pytest.mark.parametrize(("json_response", "stateless"), MODES)
async def test_every_tool_answers_and_is_counted_in_every_mode(
    json_response: bool, stateless: bool
) -> None:
    async with serving(json_response=json_response, stateless=stateless) as (demo, url):
        assert await stats(url) == {"calls": dict.fromkeys(TOOLS, 0), "unknown": 0}
        async with connected(url) as (session, session_id):
            assert (session_id is None) is stateless
            echoed = await session.call_tool("echo", {"text": "mail bob@example.com"})
            added = await session.call_tool("add", {"a": 2, "b": 3.5})
            shell = await session.call_tool("run_shell", {"command": "rm -rf /"})
            again = await session.call_tool("echo", {"text": "twice"})
        counted = await stats(url)
    assert not (echoed.isError or added.isError or shell.isError or again.isError)
    assert texts(echoed.content) == ["mail bob@example.com"]
    assert echoed.structuredContent is None
    assert texts(added.content) == ["5.5"]
    assert added.structuredContent == {"result": 5.5}
    assert texts(shell.content) == ["would run: rm -rf /"]
    assert texts(again.content) == ["twice"]
    assert counted == {"calls": {"echo": 2, "add": 1, "run_shell": 1}, "unknown": 0}
    assert demo.calls == counted["calls"]


@pytest.mark.parametrize(("json_response", "stateless"), MODES)
async def test_answers_json_or_sse_with_or_without_a_session_id(
    json_response: bool, stateless: bool
) -> None:
    """What a gateway in front of the demo sees on the wire: the answer's media type and
    whether a session was opened."""
    async with (
        serving(json_response=json_response, stateless=stateless) as (_, url),
        httpx.AsyncClient(timeout=10) as client,
    ):
        reply = await client.post(f"{url}/mcp", json=INITIALIZE, headers=ACCEPT)
    assert reply.status_code == 200
    media = reply.headers["content-type"].partition(";")[0]
    assert media == ("application/json" if json_response else "text/event-stream")
    assert ("mcp-session-id" in reply.headers) is not stateless
    assert '"serverInfo"' in reply.text


async def test_a_call_to_an_unknown_tool_or_with_bad_arguments_is_counted_and_refused() -> None:
    """The counter counts what arrived, before the arguments are read: a call the gateway
    forwards with a name the demo lacks, or arguments it rejects, still reached it."""
    async with serving(json_response=True, stateless=False) as (_, url):
        async with connected(url) as (session, _):
            unknown = await session.call_tool("format_disk", {})
            bad = await session.call_tool("add", {"a": "two", "b": 3})
        counted = await stats(url)
    assert unknown.isError and "format_disk" in texts(unknown.content)[0]
    assert bad.isError
    assert counted == {"calls": {"echo": 0, "add": 1, "run_shell": 0}, "unknown": 1}


async def test_refuses_a_foreign_host_and_a_body_over_its_limit() -> None:
    """On loopback the SDK's DNS-rebinding check accepts loopback Host headers only, and a
    body over 4 MiB is refused before it is read whole."""
    async with (
        serving(json_response=True, stateless=True) as (_, url),
        httpx.AsyncClient(timeout=10) as client,
    ):
        foreign = await client.post(
            f"{url}/mcp", json=INITIALIZE, headers={**ACCEPT, "host": "attacker.example"}
        )
        large = await client.post(
            f"{url}/mcp",
            content=b'{"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"x": "'
            + b"x" * (4 * 1024 * 1024)
            + b'"}}',
            headers={**ACCEPT, "content-type": "application/json"},
        )
        served = await client.post(f"{url}/mcp", json=INITIALIZE, headers=ACCEPT)
    assert foreign.status_code == 421
    assert large.status_code == 413
    assert served.status_code == 200


@pytest.mark.parametrize(
    "flags",
    [
        pytest.param([], id="sse-stateful"),
        pytest.param(["--json", "--stateless"], id="json-stateless"),
    ],
)
async def test_the_command_serves_quietly_and_stops_on_sigterm(flags: list[str]) -> None:
    """`extproc mcp-demo` with its flags; a client ending its session logs nothing."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "extproc",
        "mcp-demo",
        "--port",
        str(port),
        *flags,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with httpx.AsyncClient(timeout=10) as client, asyncio.timeout(60):
            while True:
                assert process.returncode is None, "the demo MCP server exited"
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get(f"{url}{STATS_PATH}")).status_code == 200:
                        break
                await asyncio.sleep(0.05)
        async with connected(url) as (session, session_id):
            echoed = await session.call_tool("echo", {"text": "hello"})
        async with httpx.AsyncClient(timeout=10) as client:
            reply = await client.post(f"{url}/mcp", json=INITIALIZE, headers=ACCEPT)
        assert (session_id is None) is bool(flags)
        assert texts(echoed.content) == ["hello"]
        media = "application/json" if flags else "text/event-stream"
        assert reply.headers["content-type"].startswith(media)
        assert await stats(url) == {"calls": {"echo": 1, "add": 0, "run_shell": 0}, "unknown": 0}
        process.send_signal(signal.SIGTERM)
        # uvicorn shuts down, then raises the signal again: the status says what stopped it.
        assert await asyncio.wait_for(process.wait(), 20) == -signal.SIGTERM
        assert process.stdout is not None
        assert await process.stdout.read() == b""
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def test_the_command_without_the_sdk_says_which_extra_to_install() -> None:
    """The image installs the package without the `demo` extra."""
    code = (
        "import sys\n"
        "sys.modules['mcp'] = None\n"
        "from extproc.control.cli import main\n"
        "sys.exit(main(['mcp-demo', '--port', '1']))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr == "mcp-demo needs the MCP SDK: pip install 'extproc[demo]'\n"
