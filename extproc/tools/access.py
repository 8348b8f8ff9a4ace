"""Which MCP servers and tools a tenant may use: glob patterns over server names, and over
"<server>/<tool>" for tools."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from extproc.glob import Glob


@dataclass(frozen=True, slots=True)
class ToolPattern:
    """ "<server>/<tool>", split at the first "/": a server name has none, so "*" in one
    half never matches into the other ("*/search" is every server's `search`)."""

    server: Glob
    tool: Glob

    @classmethod
    def parse(cls, text: str) -> ToolPattern:
        server, _, tool = text.partition("/")
        return cls(Glob(server), Glob(tool))

    def match(self, server: str, tool: str) -> bool:
        return self.server.match(server) and self.tool.match(tool)


@dataclass(frozen=True, slots=True)
class ToolAccess:
    """One tenant's MCP access. The default: no server at all."""

    servers: tuple[Glob, ...] = ()
    allow: tuple[ToolPattern, ...] = ()  # empty: every tool of its servers
    deny: tuple[ToolPattern, ...] = ()  # wins over allow
    max_argument_bytes: int = 0  # a tools/call's arguments, in bytes of JSON

    def server_allowed(self, server: str) -> bool:
        return any(glob.match(server) for glob in self.servers)

    def reachable(self, servers: Iterable[str]) -> list[str]:
        """The servers of those given that the tenant may use, in their order."""
        return [server for server in servers if self.server_allowed(server)]

    def allowed(self, server: str, tool: str) -> bool:
        if not self.server_allowed(server):
            return False
        if any(pattern.match(server, tool) for pattern in self.deny):
            return False
        return not self.allow or any(pattern.match(server, tool) for pattern in self.allow)

    def visible(self, server: str, tools: list[Any]) -> list[Any]:
        """The definitions of a server's tools/list the tenant may use (a definition with
        no string name is no tool it could call)."""
        if not self.server_allowed(server):
            return []
        return [
            tool
            for tool in tools
            if isinstance(tool, dict)
            and isinstance(tool.get("name"), str)
            and self.allowed(server, tool["name"])
        ]


NO_ACCESS = ToolAccess()
