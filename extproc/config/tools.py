"""MCP tool governance from the config: a tenant's tool access (`tenants[].mcp`) and a
server's pinning (`mcp_servers[].pins`, `.pinning`)."""

from __future__ import annotations

from collections.abc import Collection

from extproc.config.accounting import WINDOWS
from extproc.config.context import Context
from extproc.config.v1 import config_pb2 as pb
from extproc.glob import Glob
from extproc.tools.access import NO_ACCESS, ToolAccess, ToolPattern, ToolRate
from extproc.tools.pins import Pinning

_PINNING = {
    pb.McpServer.REPORT: Pinning.REPORT,
    pb.McpServer.ENFORCE: Pinning.ENFORCE,
    pb.McpServer.OFF: Pinning.OFF,
}


def compile_tool_access(
    ctx: Context, source: pb.Tenant, path: str, servers: Collection[str]
) -> ToolAccess:
    """The tenant's access (no server without `mcp`), given the configured servers' names;
    a name written without "*" that names none of them is a problem (a typo)."""
    if not source.HasField("mcp"):
        return NO_ACCESS
    mcp, here = source.mcp, f"{path}.mcp"
    if not mcp.servers:
        ctx.problem(f"{here}.servers", "lists no server: name the servers this tenant may use")
    server_globs: list[Glob] = []
    for index, pattern in enumerate(mcp.servers):
        where = f"{here}.servers[{index}]"
        if ctx.failed(where):
            continue
        if "*" not in pattern and pattern not in servers:
            ctx.problem(where, f'no MCP server named "{pattern}"')
        server_globs.append(Glob(pattern))
    return ToolAccess(
        servers=tuple(server_globs),
        allow=_patterns(ctx, list(mcp.allow_tools), f"{here}.allow_tools", servers),
        deny=_patterns(ctx, list(mcp.deny_tools), f"{here}.deny_tools", servers),
        max_argument_bytes=mcp.max_argument_bytes,
        rates=_rates(ctx, mcp, here, servers),
    )


def _rates(
    ctx: Context, mcp: pb.TenantMcp, here: str, servers: Collection[str]
) -> tuple[ToolRate, ...]:
    rates: list[ToolRate] = []
    names: set[str] = set()
    for index, rate in enumerate(mcp.rates):
        where = f"{here}.rates[{index}]"
        if ctx.failed(where):
            continue
        if rate.name in names:
            ctx.problem(f"{where}.name", f'duplicate rate name "{rate.name}"')
            continue
        names.add(rate.name)
        tools = _patterns(ctx, list(rate.tools), f"{where}.tools", servers)
        rates.append(ToolRate.of(rate.name, tools, WINDOWS[rate.window], rate.max_calls))
    return tuple(rates)


def _patterns(
    ctx: Context, patterns: list[str], path: str, servers: Collection[str]
) -> tuple[ToolPattern, ...]:
    compiled: list[ToolPattern] = []
    for index, pattern in enumerate(patterns):
        where = f"{path}[{index}]"
        if ctx.failed(where):
            continue
        server, slash, tool = pattern.partition("/")
        if not slash or not server or not tool:
            ctx.problem(where, f'"{pattern}" is not "<server>/<tool>" ("github/*", "*/search")')
            continue
        if "*" not in server and server not in servers:
            ctx.problem(where, f'no MCP server named "{server}"')
            continue
        compiled.append(ToolPattern.parse(pattern))
    return tuple(compiled)


def server_pinning(source: pb.McpServer) -> tuple[Pinning, dict[str, str]]:
    """What a changed tool definition of this server does, and its pins (tool -> digest;
    the schema checks each is 64 lower-case hex digits)."""
    return _PINNING.get(source.pinning, Pinning.REPORT), dict(source.pins)
