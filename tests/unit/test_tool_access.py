"""A tenant's MCP tool access: compiled from the config, then asked per server and tool."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from extproc.config import defaults, rules
from extproc.config.context import Context
from extproc.config.schema import YamlLoader, fill
from extproc.config.tools import compile_tool_access, server_pinning
from extproc.config.v1 import config_pb2 as pb
from extproc.tools.access import NO_ACCESS, ToolAccess
from extproc.tools.pins import Pinning

SERVERS = """
mcp_servers:
  - {name: github, url: "http://127.0.0.1:9/mcp"}
  - {name: gitlab, url: "http://127.0.0.1:9/mcp"}
  - {name: demo, url: "http://127.0.0.1:9/mcp", pinning: enforce, pins: {echo: %s}}
  - {name: search, url: "http://127.0.0.1:9/mcp"}
""" % ("ab" * 32)


def context(tenants: str) -> Context:
    config = pb.Config()
    problems: list[str] = []
    fill(config, yaml.load(SERVERS + tenants, Loader=YamlLoader), "", problems)
    assert not problems
    defaults.apply(config)
    ctx = Context(config, Path.cwd(), False, False)
    for path, message in rules.check(config):
        ctx.problem(path, message)
    return ctx


def access(tenant: str) -> tuple[ToolAccess, list[str]]:
    ctx = context(f"tenants:\n  - {tenant}\n")
    names = [server.name for server in ctx.config.mcp_servers]
    found = compile_tool_access(ctx, ctx.config.tenants[0], "tenants[0]", names)
    return found, ctx.problems


def compiled(tenant: str) -> ToolAccess:
    found, problems = access(tenant)
    assert problems == []
    return found


def test_a_tenant_without_mcp_reaches_no_server() -> None:
    found = compiled("{name: t}")
    assert found is NO_ACCESS
    assert not found.allowed("demo", "echo") and found.visible("demo", [{"name": "echo"}]) == []


def test_servers_by_glob_and_every_tool_of_them_when_allow_is_empty() -> None:
    found = compiled("{name: t, mcp: {servers: ['git*', demo]}}")
    assert found.reachable(["github", "gitlab", "demo", "search"]) == ["github", "gitlab", "demo"]
    assert found.allowed("github", "create_issue") and found.allowed("demo", "run_shell")
    assert not found.allowed("search", "query")
    assert found.max_argument_bytes == 65536  # the schema's default


def test_deny_wins_over_allow() -> None:
    found = compiled(
        "{name: t, mcp: {servers: ['*'], allow_tools: ['demo/*', '*/search'],"
        " deny_tools: ['demo/run_*'], max_argument_bytes: 1024}}"
    )
    assert found.allowed("demo", "echo") and found.allowed("demo", "add")
    assert not found.allowed("demo", "run_shell")
    assert found.allowed("github", "search") and found.allowed("search", "search")
    assert not found.allowed("github", "create_issue")
    assert found.max_argument_bytes == 1024


def test_a_star_never_matches_across_the_slash() -> None:
    found = compiled("{name: t, mcp: {servers: ['*'], allow_tools: ['git*/issues']}}")
    assert found.allowed("github", "issues")
    # "git*" is the server half only: it cannot reach into a tool named ".../issues".
    assert not found.allowed("github", "x/issues")
    found = compiled("{name: t, mcp: {servers: ['*'], deny_tools: ['*/*_admin']}}")
    assert not found.allowed("demo", "user_admin") and found.allowed("demo", "admin")


def test_visible_lists_only_the_tools_the_tenant_may_use() -> None:
    found = compiled("{name: t, mcp: {servers: [demo], deny_tools: [demo/run_shell]}}")
    tools: list[Any] = [
        {"name": "echo", "inputSchema": {}},
        {"name": "add", "inputSchema": {}},
        {"name": "run_shell", "inputSchema": {}},
        {"description": "no name"},
        "junk",
    ]
    assert found.visible("demo", tools) == tools[:2]
    assert found.visible("github", tools) == []


@pytest.mark.parametrize(
    ("tenant", "problem"),
    [
        ("{name: t, mcp: {}}", "tenants[0].mcp.servers: lists no server"),
        (
            "{name: t, mcp: {servers: [githb]}}",
            'tenants[0].mcp.servers[0]: no MCP server named "githb"',
        ),
        (
            "{name: t, mcp: {servers: ['*'], allow_tools: [github]}}",
            'tenants[0].mcp.allow_tools[0]: "github" is not "<server>/<tool>"',
        ),
        (
            "{name: t, mcp: {servers: ['*'], deny_tools: ['/echo']}}",
            'tenants[0].mcp.deny_tools[0]: "/echo" is not "<server>/<tool>"',
        ),
        (
            "{name: t, mcp: {servers: ['*'], deny_tools: ['demo/']}}",
            'tenants[0].mcp.deny_tools[0]: "demo/" is not "<server>/<tool>"',
        ),
        (
            "{name: t, mcp: {servers: ['*'], allow_tools: [dmeo/echo]}}",
            'tenants[0].mcp.allow_tools[0]: no MCP server named "dmeo"',
        ),
    ],
)
def test_tool_access_config_problems(tenant: str, problem: str) -> None:
    _, problems = access(tenant)
    assert any(p.startswith(problem) for p in problems), problems


def test_patterns_with_stars_need_not_name_a_configured_server() -> None:
    found = compiled("{name: t, mcp: {servers: ['team-*'], allow_tools: ['team-*/read']}}")
    assert found.reachable(["github", "team-a"]) == ["team-a"]


def test_server_pinning_from_the_config() -> None:
    ctx = context("")
    modes = [server_pinning(server) for server in ctx.config.mcp_servers]
    assert modes[0] == (Pinning.REPORT, {})  # the default
    assert modes[2] == (Pinning.ENFORCE, {"echo": "ab" * 32})
