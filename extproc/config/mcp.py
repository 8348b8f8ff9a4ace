"""MCP servers (the config's `mcp_servers`) and how the gateway serves MCP (`mcp`)."""

from __future__ import annotations

from extproc.config import runtime as rt
from extproc.config import settings as st
from extproc.config.backends import address, by_name, credential
from extproc.config.context import Context
from extproc.config.service import redis, seconds
from extproc.config.tools import server_pinning
from extproc.config.v1 import config_pb2 as pb


def build_mcp_servers(ctx: Context) -> dict[str, rt.McpServer]:
    return by_name(ctx, ctx.config.mcp_servers, "mcp_servers", "MCP server", _server)


def _server(ctx: Context, source: pb.McpServer, path: str) -> rt.McpServer | None:
    where = address(ctx, source.url, source.tls, source.HasField("tls"), path)
    if where is None:
        return None
    header, secret, file = credential(ctx, source.credential, "authorization", f"{path}.credential")
    if ctx.failed(path, ignoring=(".credential",)):
        return None
    pinning, pins = server_pinning(source)
    return rt.McpServer(
        name=source.name,
        cluster=f"mcp.{source.name}",
        scheme=where.scheme,
        host=where.host,
        port=where.port,
        base_path=where.base_path or "/",
        credential_header=header,
        credential=secret,
        headers=tuple(sorted((name.lower(), value) for name, value in source.headers.items())),
        sni=where.sni,
        ca_file=where.ca_file,
        connect_timeout=seconds(source.connect_timeout),
        credential_file=file,
        timeout=seconds(source.timeout),
        stream_idle_timeout=seconds(source.stream_idle_timeout),
        tool_prefix=source.tool_prefix,
        pins=pins,
        pinning=pinning,
    )


def mcp_settings(ctx: Context) -> st.McpSettings:
    source = ctx.config.mcp
    return st.McpSettings(
        session_ttl=max(1, round(seconds(source.session_ttl))),
        max_sessions=source.max_sessions,
        redis=redis(source.redis) if source.HasField("redis") else None,
        max_message_bytes=source.max_message_bytes,
        max_depth=source.max_depth,
        list_ttl=seconds(source.list_ttl),
    )
