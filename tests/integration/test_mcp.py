"""MCP servers through the gateway (`/mcp/<server>`): a real Envoy, the service, real MCP
servers built with the official SDK (SSE with sessions, JSON stateless, one whose tool
changes, a hand-written broken one) and the official `mcp` client."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamablehttp_client
from mcp.shared.exceptions import McpError
from mcp.types import TextContent

from extproc.apis import mcp
from extproc.control.stack import free_port
from tests.conftest import RedisServer
from tests.helpers import INITIALIZE, sha256
from tests.integration.conftest import GATEWAY_KEYS, PORTS, Gateway, start_gateway
from tests.integration.mcp_servers import INJECTION, TOOLS_KEY

KEY_A, KEY_B = GATEWAY_KEYS["team-a"], GATEWAY_KEYS["team-b"]
TIMEOUT = 20

CONFIG = (
    PORTS
    + """mcp_servers:
  - name: tools
    url: http://127.0.0.1:{tools_port}/mcp
    credential: {{file: mcp-key.txt}}
  - name: plain
    url: http://127.0.0.1:{json_port}/mcp
    tool_prefix: plain_
  - name: changing
    url: http://127.0.0.1:{changing_port}/mcp
    pinning: enforce
  - name: raw
    url: http://127.0.0.1:{raw_port}/mcp
    timeout: 1s
  - name: down
    url: http://127.0.0.1:{dead_port}/mcp
    connect_timeout: 1s
mcp: {{max_message_bytes: 65536, max_depth: 16{redis}}}
schema_drift: {{learning_responses: 2, check_every: 1}}
policies:
  - name: guard
    pii: [{{detector: email, apply_to: [tool_call, tool_result]}}]
    deny:
      - name: injection
        patterns: ["ignore (all )?previous instructions"]
        apply_to: [tool_result]
tenants:
  - name: team-a
    api_key_sha256: ["{key_a}"]
    policies: [guard]
    mcp:
      servers: ["*"]
      deny_tools: ["*/run_shell"]
      max_argument_bytes: 2048
  - name: team-b
    api_key_sha256: ["{key_b}"]
    mcp:
      servers: [plain]
      allow_tools: [plain/echo, plain/add]
      deny_tools: [plain/add]
      rates: [{{name: echoes, tools: [plain/echo], window: month, max_calls: 3}}]
"""
)


def _wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, "an MCP server exited while starting"
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"no MCP server on port {port}")


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, int]]:
    ports = {kind: free_port() for kind in ("tools", "json", "changing", "raw")}
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.integration.mcp_servers", kind, str(port)],
            stderr=subprocess.DEVNULL,
        )
        for kind, port in ports.items()
    ]
    try:
        for process, port in zip(processes, ports.values(), strict=True):
            _wait_for_port(port, process)
        yield ports
    finally:
        for process in processes:
            process.kill()
            process.wait(10)


@pytest.fixture(scope="module")
def gateway(servers: dict[str, int], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    workdir = tmp_path_factory.mktemp("mcp")
    started = start_mcp_gateway(workdir, servers)
    yield started
    started.stack.stop()


def start_mcp_gateway(workdir: Path, servers: dict[str, int], redis: str = "") -> Gateway:
    (workdir / "mcp-key.txt").write_text(TOOLS_KEY + "\n")
    return start_gateway(
        workdir,
        CONFIG,
        key_a=sha256(KEY_A),
        key_b=sha256(KEY_B),
        redis=f", redis: {{url: {redis}}}" if redis else "",
        **{f"{kind}_port": port for kind, port in servers.items()},
    )


@asynccontextmanager
async def session(url: str, key: str) -> AsyncIterator[ClientSession]:
    headers = {"authorization": f"Bearer {key}"}
    async with (
        streamablehttp_client(url, headers=headers, timeout=TIMEOUT) as (read, write, _),
        ClientSession(read, write) as client,
    ):
        await asyncio.wait_for(client.initialize(), TIMEOUT)
        yield client


def text_of(result: Any) -> str:
    block = result.content[0]
    assert isinstance(block, TextContent)
    return block.text


def records(gateway: Gateway) -> list[dict[str, Any]]:
    found = (orjson.loads(line) for line in gateway.service_log().splitlines() if line[:1] == "{")
    return [record for record in found if record.get("event") == "mcp"]


def eventually(value: Callable[[], float], timeout: float = 5.0) -> float:
    """A metric once it counts the request: a stream's metrics are counted when Envoy ends
    it, just after the client has its answer."""
    deadline = time.monotonic() + timeout
    while not (found := value()):
        assert time.monotonic() < deadline, "the metric did not count the request"
        time.sleep(0.02)
    return found


def mcp_error(raised: BaseException) -> McpError:
    """The McpError a session raised, from inside the task groups it may be wrapped in."""
    while isinstance(raised, BaseExceptionGroup):
        raised = raised.exceptions[0]
    assert isinstance(raised, McpError), raised
    return raised


def stats(port: int, key: str | None = None) -> dict[str, Any]:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    reply = httpx.get(f"http://127.0.0.1:{port}/mcp-demo/stats", headers=headers, timeout=5)
    return dict(reply.json())


def test_tools_listed_and_called_through_a_server_with_sessions(
    gateway: Gateway, servers: dict[str, int]
) -> None:
    async def run() -> tuple[list[str], str, str]:
        async with session(f"{gateway.url}/mcp/tools", KEY_A) as client:
            listed = await client.list_tools()
            echoed = await client.call_tool("echo", {"text": "hello"})
            added = await client.call_tool("add", {"a": 2, "b": 3})
        return sorted(t.name for t in listed.tools), text_of(echoed), text_of(added)

    names, echoed, added = asyncio.run(run())
    # run_shell is the tenant's denied tool: absent from its list.
    assert names == ["add", "announce", "contact", "echo", "fetch_page"]
    assert (echoed, added) == ("hello", "5.0")
    # The server saw the gateway's credential on every request, never the client's key.
    auth = httpx.get(f"http://127.0.0.1:{servers['tools']}/test/auth", timeout=5).json()
    assert auth["ok"] > 0 and auth["refused"] == 0


def test_a_refused_tool_never_reaches_the_server(gateway: Gateway, servers: dict[str, int]) -> None:
    before = stats(servers["tools"], TOOLS_KEY)["calls"]["run_shell"]

    async def run() -> McpError:
        async with session(f"{gateway.url}/mcp/tools", KEY_A) as client:
            with pytest.raises(McpError) as refused:
                await client.call_tool("run_shell", {"command": "rm -rf /"})
            # The session goes on.
            assert text_of(await client.call_tool("echo", {"text": "still here"})) == "still here"
        return refused.value

    error = asyncio.run(run())
    assert error.error.code == mcp.TOOL_NOT_ALLOWED
    assert "run_shell" in error.error.message
    assert stats(servers["tools"], TOOLS_KEY)["calls"]["run_shell"] == before
    assert eventually(
        lambda: gateway.metric("extproc_mcp_refusals_total", mcp_server="tools", reason="access")
    )


def test_two_tenants_see_different_tools(gateway: Gateway, servers: dict[str, int]) -> None:
    async def run(key: str) -> list[str]:
        async with session(f"{gateway.url}/mcp/plain", key) as client:
            return sorted(t.name for t in (await client.list_tools()).tools)

    assert asyncio.run(run(KEY_A)) == ["add", "echo"]
    assert asyncio.run(run(KEY_B)) == ["echo"]

    async def refused() -> McpError:
        async with session(f"{gateway.url}/mcp/plain", KEY_B) as client:
            with pytest.raises(McpError) as error:
                await client.call_tool("add", {"a": 1, "b": 1})
            return error.value

    assert asyncio.run(refused()).error.code == mcp.TOOL_NOT_ALLOWED
    # A server the tenant may not use does not exist for it.
    reply = httpx.post(
        f"{gateway.url}/mcp/tools",
        headers={"authorization": f"Bearer {KEY_B}", "accept": "application/json"},
        content=b'{"jsonrpc": "2.0", "id": 1, "method": "ping"}',
        timeout=5,
    )
    assert reply.status_code == 404
    assert reply.json()["error"]["code"] == mcp.INVALID_REQUEST
    no_key = httpx.post(f"{gateway.url}/mcp/plain", content=b"{}", timeout=5)
    assert no_key.status_code == 401


def test_policy_redacts_arguments_and_results_and_blocks_an_injection(gateway: Gateway) -> None:
    async def run() -> tuple[str, str, Any]:
        async with session(f"{gateway.url}/mcp/tools", KEY_A) as client:
            echoed = await client.call_tool("echo", {"text": "mail bob@example.com"})
            contact = await client.call_tool("contact", {"name": "Alice"})
            page = await client.call_tool("fetch_page", {"url": "https://example.org"})
        return text_of(echoed), text_of(contact), page

    echoed, contact, page = asyncio.run(run())
    assert echoed == "mail [EMAIL_1]"  # the server never saw the address
    assert "alice@example.com" not in contact and "[EMAIL_" in contact
    assert page.isError
    assert "injection" in text_of(page) and INJECTION not in text_of(page)
    log = gateway.service_log()
    assert "bob@example.com" not in log and "alice@example.com" not in log


def test_a_changed_tool_is_withheld_where_pinning_enforces(gateway: Gateway) -> None:
    async def listed() -> list[str]:
        async with session(f"{gateway.url}/mcp/changing", KEY_A) as client:
            return sorted(t.name for t in (await client.list_tools()).tools)

    assert asyncio.run(listed()) == ["add", "echo"]  # first seen: learned
    assert asyncio.run(listed()) == ["add"]  # echo's description changed

    async def call() -> McpError:
        async with session(f"{gateway.url}/mcp/changing", KEY_A) as client:
            with pytest.raises(McpError) as error:
                await client.call_tool("echo", {"text": "x"})
            return error.value

    assert asyncio.run(call()).error.code == mcp.TOOL_NOT_ALLOWED
    gateway.wait_for_log("mcp_tool_changed")
    changes = gateway.metric("extproc_mcp_tool_changes_total", mcp_server="changing")
    assert changes >= 1
    # A tool added after two lists (the drift watch's learning here) is drift.
    assert "extra" in asyncio.run(listed())
    gateway.wait_for_log('"path":"tool:extra"')
    drift = gateway.metric(
        "extproc_schema_drift_total", backend="changing", endpoint="mcp:tools/list", change="added"
    )
    assert drift == 1


def test_broken_slow_and_down_servers_give_the_agent_errors(
    gateway: Gateway, servers: dict[str, int]
) -> None:
    async def raw() -> tuple[McpError, McpError, str]:
        async with session(f"{gateway.url}/mcp/raw", KEY_A) as client:
            with pytest.raises(McpError) as crashed:
                await client.call_tool("crash", {})
            assert crashed.value.error.code == mcp.SERVER_UNAVAILABLE
            assert "502" in crashed.value.error.message
            with pytest.raises(McpError) as garbage:
                await client.call_tool("garbage", {})
            slow = asyncio.create_task(client.call_tool("sleepy", {}))
            # Another server is served meanwhile.
            async with session(f"{gateway.url}/mcp/plain", KEY_A) as other:
                served = text_of(await other.call_tool("echo", {"text": "meanwhile"}))
            with pytest.raises(McpError) as late:
                await asyncio.wait_for(slow, TIMEOUT)
        return garbage.value, late.value, served

    garbage, late, served = asyncio.run(raw())
    assert garbage.error.code == mcp.BAD_SERVER_RESPONSE
    assert late.error.code == mcp.SERVER_UNAVAILABLE and "504" in late.error.message
    assert served == "meanwhile"

    async def down() -> BaseException:
        with pytest.raises(BaseException) as error:
            async with session(f"{gateway.url}/mcp/down", KEY_A):
                pass
        return error.value

    assert mcp_error(asyncio.run(down())).error.code == mcp.SERVER_UNAVAILABLE


@pytest.mark.parametrize(
    ("body", "code"),
    [
        pytest.param(
            b'[{"jsonrpc": "2.0", "id": 1, "method": "ping"}]', mcp.INVALID_REQUEST, id="batch"
        ),
        pytest.param(b'{"id": 1, "method": "ping"}', mcp.INVALID_REQUEST, id="no-jsonrpc"),
        pytest.param(
            b'{"jsonrpc": "2.0", "id": ' + b"9" * 400 + b', "method": "ping"}',
            mcp.PARSE_ERROR,
            id="huge-id",
        ),
        pytest.param(
            b'{"jsonrpc": "2.0", "id": 1152921504606846976, "method": "ping"}',
            mcp.INVALID_REQUEST,
            id="id-past-2**53",
        ),
        pytest.param(b'{"jsonrpc": "2.0", "id": 1, "method": 7}', mcp.INVALID_REQUEST, id="method"),
        pytest.param(
            b'{"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"a": '
            + b"[" * 100
            + b"]" * 100
            + b"}}",
            mcp.INVALID_REQUEST,
            id="deep",
        ),
        pytest.param(
            b'{"jsonrpc": "2.0", "id": 1, "method": "\xff\xfe"}', mcp.PARSE_ERROR, id="not-utf8"
        ),
        pytest.param(b"{", mcp.PARSE_ERROR, id="truncated"),
    ],
)
def test_hostile_messages_get_json_rpc_errors(gateway: Gateway, body: bytes, code: int) -> None:
    reply = httpx.post(
        f"{gateway.url}/mcp/plain",
        headers={
            "authorization": f"Bearer {KEY_A}",
            "accept": "application/json, text/event-stream",
            "content-type": "application/json",
        },
        content=body,
        timeout=5,
    )
    assert reply.status_code == 400
    error = reply.json()
    assert error["jsonrpc"] == "2.0" and error["error"]["code"] == code

    # The service keeps serving.
    async def echo() -> str:
        async with session(f"{gateway.url}/mcp/plain", KEY_A) as client:
            return text_of(await client.call_tool("echo", {"text": "ok"}))

    assert asyncio.run(echo()) == "ok"


def test_one_audit_record_per_request_without_argument_values(gateway: Gateway) -> None:
    async def run() -> None:
        async with session(f"{gateway.url}/mcp/plain", KEY_A) as client:
            await client.list_tools()  # a tool name labels metrics once its server listed it
            await client.call_tool("echo", {"text": "secret-argument-value"})

    asyncio.run(run())
    deadline = time.monotonic() + 5
    while not (
        found := [
            r for r in records(gateway) if r.get("tool") == "echo" and r.get("server") == "plain"
        ]
    ):
        # The record is written when Envoy ends the stream, just after the answer left.
        assert time.monotonic() < deadline, "no audit record of the call"
        time.sleep(0.02)
    record = found[-1]
    assert record["tenant"] == "team-a" and record["rpc_method"] == "tools/call"
    # Envoy's access log line names the tenant and the server too.
    line = gateway.access_log(record["request_id"])
    assert (line["tenant"], line["backend"]) == ("team-a", "plain")
    assert record["outcome"] == "ok" and record["status"] == 200 and record["bytes_in"] > 0
    assert "secret-argument-value" not in gateway.service_log()
    assert (
        gateway.metric(
            "mcp_server_operation_duration_seconds_count",
            mcp_method_name="tools/call",
            gen_ai_tool_name="echo",
            mcp_server="plain",
        )
        >= 1
    )


def test_the_virtual_server_offers_every_server_a_tenant_may_use_as_one(
    gateway: Gateway, servers: dict[str, int]
) -> None:
    before = stats(servers["tools"], TOOLS_KEY)["calls"]["echo"]

    async def run(key: str) -> tuple[list[str], list[str]]:
        async with session(f"{gateway.url}/mcp", key) as client:
            names = sorted(t.name for t in (await client.list_tools()).tools)
            texts = []
            for name, arguments in (("echo", {"text": "hi"}), ("plain_add", {"a": 1, "b": 2})):
                if name in names:
                    texts.append(text_of(await client.call_tool(name, arguments)))
        return names, texts

    names, texts = asyncio.run(run(KEY_A))
    # The tools server's echo and add keep their names; the changing server's, listed
    # after it, collide and are left out; plain's carry its prefix; the down server is
    # left out of the list; run_shell is denied; "changing"'s echo may be withheld.
    assert {"echo", "add", "contact", "fetch_page", "plain_echo", "plain_add"} <= set(names)
    assert {"garbage", "sleepy"} <= set(names)
    assert "run_shell" not in names and "plain_run_shell" not in names
    assert texts == ["hi", "3.0"]
    assert stats(servers["tools"], TOOLS_KEY)["calls"]["echo"] == before + 1
    only_b, _ = asyncio.run(run(KEY_B))
    assert only_b == ["plain_echo"]

    async def unknown() -> McpError:
        async with session(f"{gateway.url}/mcp", KEY_B) as client:
            with pytest.raises(McpError) as error:
                await client.call_tool("plain_add", {"a": 1, "b": 1})
            return error.value

    assert asyncio.run(unknown()).error.code == mcp.INVALID_PARAMS


def post(url: str, key: str, body: dict[str, Any], session_id: str = "") -> httpx.Response:
    headers = {
        "authorization": f"Bearer {key}",
        "accept": "application/json, text/event-stream",
        "content-type": "application/json",
    }
    if session_id:
        headers["mcp-session-id"] = session_id
    return httpx.post(url, headers=headers, content=orjson.dumps(body), timeout=10)


LIST = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}


def test_virtual_sessions_belong_to_their_tenant_and_end(gateway: Gateway) -> None:
    url = f"{gateway.url}/mcp"
    opened = post(url, KEY_A, INITIALIZE)
    assert opened.status_code == 200
    assert opened.json()["result"]["protocolVersion"] == "2025-06-18"
    session_id = opened.headers["mcp-session-id"]
    assert post(url, KEY_A, LIST, session_id).status_code == 200
    # Another tenant holding the id, no id, an id never issued: refused.
    assert post(url, KEY_B, LIST, session_id).status_code == 404
    assert post(url, KEY_A, LIST).status_code == 400
    assert post(url, KEY_A, LIST, "not-a-session").status_code == 404
    headers = {"authorization": f"Bearer {KEY_A}", "mcp-session-id": session_id}
    assert httpx.get(url, headers=headers, timeout=5).status_code == 405
    assert httpx.delete(url, headers=headers, timeout=5).status_code == 200
    gone = post(url, KEY_A, LIST, session_id)
    assert gone.status_code == 404
    assert gone.json()["error"]["code"] == mcp.SESSION_UNKNOWN


def test_virtual_sessions_are_shared_through_redis_by_two_gateways(
    servers: dict[str, int], tmp_path_factory: pytest.TempPathFactory
) -> None:
    redis = RedisServer(tmp_path_factory.mktemp("redis-mcp"))
    redis.start()
    first = start_mcp_gateway(tmp_path_factory.mktemp("mcp-first"), servers, redis.url)
    try:
        second = start_mcp_gateway(tmp_path_factory.mktemp("mcp-second"), servers, redis.url)
        try:
            opened = post(f"{first.url}/mcp", KEY_A, INITIALIZE)
            session_id = opened.headers["mcp-session-id"]
            call = {
                "jsonrpc": "2.0",
                "id": 3,
                "method": "tools/call",
                "params": {"name": "plain_echo", "arguments": {"text": "across"}},
            }
            answered = post(f"{second.url}/mcp", KEY_A, call, session_id)
            assert answered.status_code == 200
            assert answered.json()["result"]["content"][0]["text"] == "across"
            # The upstream session the second opened is the first's to use too.
            again = post(f"{first.url}/mcp", KEY_A, {**call, "id": 4}, session_id)
            assert again.json()["result"]["content"][0]["text"] == "across"
            # While Redis is down, a session cannot be read: a clear 503.
            redis.stop()
            down = post(f"{second.url}/mcp", KEY_A, {**call, "id": 5}, session_id)
            assert down.status_code == 503
            assert down.json()["error"]["code"] == mcp.SERVER_UNAVAILABLE
        finally:
            second.stack.stop()
    finally:
        first.stack.stop()
        redis.stop()


def test_prompts_and_resources_through_the_virtual_server(gateway: Gateway) -> None:
    async def run() -> tuple[list[str], str, list[str], str]:
        async with session(f"{gateway.url}/mcp", KEY_A) as client:
            prompts = [p.name for p in (await client.list_prompts()).prompts]
            got = await client.get_prompt("review", {"code": "x = 1"})
            resources = [str(r.uri) for r in (await client.list_resources()).resources]
            read = await client.read_resource("notes://today")  # type: ignore[arg-type]
        message = got.messages[0].content
        assert isinstance(message, TextContent)
        contents = read.contents[0]
        return prompts, message.text, resources, getattr(contents, "text", "")

    prompts, prompt, resources, notes = asyncio.run(run())
    assert prompts == ["review"] and prompt == "Please review: x = 1"
    assert resources == ["notes://today"] and notes == "Nothing planned."


def test_a_tool_rate_refuses_calls_past_it(gateway: Gateway, servers: dict[str, int]) -> None:
    async def run() -> tuple[list[str], McpError]:
        async with session(f"{gateway.url}/mcp/plain", KEY_B) as client:
            texts = [text_of(await client.call_tool("echo", {"text": str(n)})) for n in range(3)]
            with pytest.raises(McpError) as refused:
                await client.call_tool("echo", {"text": "one too many"})
        return texts, refused.value

    texts, refused = asyncio.run(run())
    assert texts == ["0", "1", "2"]
    assert refused.error.code == mcp.RATE_LIMITED and "echoes" in refused.error.message
    assert isinstance(refused.error.data, dict) and refused.error.data["retry_after"] >= 1

    # Team A has no such rate: its calls go on.
    async def other() -> str:
        async with session(f"{gateway.url}/mcp/plain", KEY_A) as client:
            return text_of(await client.call_tool("echo", {"text": "free"}))

    assert asyncio.run(other()) == "free"


def test_the_server_stream_passes_and_an_oversized_answer_is_an_error(
    gateway: Gateway, servers: dict[str, int]
) -> None:
    opened = post(f"{gateway.url}/mcp/tools", KEY_A, INITIALIZE)
    assert opened.status_code == 200
    session_id = opened.headers["mcp-session-id"]
    headers = {
        "authorization": f"Bearer {KEY_A}",
        "accept": "text/event-stream",
        "mcp-session-id": session_id,
        "mcp-protocol-version": "2025-06-18",
    }
    with httpx.stream("GET", f"{gateway.url}/mcp/tools", headers=headers, timeout=10) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")

    async def flood() -> tuple[McpError, str]:
        async with session(f"{gateway.url}/mcp/raw", KEY_A) as client:
            with pytest.raises(McpError) as error:
                await client.call_tool("flood", {})
            async with session(f"{gateway.url}/mcp/plain", KEY_A) as other:
                served = text_of(await other.call_tool("echo", {"text": "still"}))
        return error.value, served

    error, served = asyncio.run(flood())
    assert error.error.code == mcp.MESSAGE_TOO_LARGE
    assert served == "still"


def test_the_servers_own_messages_reach_the_client_on_its_stream(gateway: Gateway) -> None:
    """A notification the server sends on its GET stream (no request of the client's
    asked for it) passes through the gateway as it comes."""

    async def run() -> list[str]:
        received: list[str] = []
        changed = asyncio.Event()

        async def handler(message: Any) -> None:
            root = getattr(message, "root", None)
            method = getattr(root, "method", None)
            if isinstance(method, str):
                received.append(method)
                if method == "notifications/tools/list_changed":
                    changed.set()

        headers = {"authorization": f"Bearer {KEY_A}"}
        async with (
            streamablehttp_client(f"{gateway.url}/mcp/tools", headers=headers) as (read, write, _),
            ClientSession(read, write, message_handler=handler) as client,
        ):
            await asyncio.wait_for(client.initialize(), TIMEOUT)
            # The client opens its GET stream after initialize; announce until it is heard
            # (each call is answered whether or not the stream was open yet).
            for _ in range(50):
                assert text_of(await client.call_tool("announce", {})) == "announced"
                try:
                    await asyncio.wait_for(changed.wait(), 0.2)
                    break
                except TimeoutError:
                    continue
        return received

    assert "notifications/tools/list_changed" in asyncio.run(run())


def stateless_post(
    gateway: Gateway, body: dict[str, Any], name: str | None = None
) -> httpx.Response:
    """A request as a client of MCP's 2026-07-28 revision sends it: no session, its
    version, method and name in headers and in the body's _meta."""
    params = dict(body.get("params") or {})
    params["_meta"] = {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}
    headers = {
        "authorization": f"Bearer {KEY_A}",
        "accept": "application/json, text/event-stream",
        "content-type": "application/json",
        "mcp-protocol-version": "2026-07-28",
        "mcp-method": str(body["method"]),
    }
    if name is not None:
        headers["mcp-name"] = name
    message = {"jsonrpc": "2.0", "id": 1, **body, "params": params}
    return httpx.post(
        f"{gateway.url}/mcp", headers=headers, content=orjson.dumps(message), timeout=10
    )


def test_a_client_of_the_sessionless_revision_uses_the_virtual_server(gateway: Gateway) -> None:
    discovered = stateless_post(gateway, {"method": "server/discover"})
    assert discovered.status_code == 200
    found = discovered.json()["result"]
    assert "2026-07-28" in found["supportedVersions"] and found["resultType"] == "complete"
    listed = stateless_post(gateway, {"method": "tools/list"}).json()["result"]
    assert "echo" in [t["name"] for t in listed["tools"]]
    assert (listed["resultType"], listed["cacheScope"]) == ("complete", "private")
    call = {"method": "tools/call", "params": {"name": "plain_echo", "arguments": {"text": "new"}}}
    answered = stateless_post(gateway, call, name="plain_echo")
    assert answered.status_code == 200
    result = answered.json()["result"]
    assert result["content"][0]["text"] == "new" and result["resultType"] == "complete"
    assert "mcp-session-id" not in answered.headers
    # The headers must say what the body does; a method the revision has not is a 404.
    other = stateless_post(gateway, call, name="plain_add")
    assert other.status_code == 400 and other.json()["error"]["code"] == mcp.HEADER_MISMATCH
    unknown = stateless_post(gateway, {"method": "subscriptions/listen"})
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == mcp.METHOD_NOT_FOUND
