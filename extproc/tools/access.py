"""Which MCP servers and tools a tenant may use: glob patterns over server names, and over
"<server>/<tool>" for tools."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from extproc.accounting.budgets import Budget, Reservation, Window, plan
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
class ToolRate:
    """Calls per window, counted per tool, of the tools its patterns match."""

    name: str
    tools: tuple[ToolPattern, ...]  # empty: every tool
    budget: Budget  # the counter: a call is one "token", one counter per tool

    @classmethod
    def of(
        cls, name: str, tools: tuple[ToolPattern, ...], window: Window, max_calls: int
    ) -> ToolRate:
        # "tools:" keeps its counters apart from token budgets' (a budget name has no ":").
        budget = Budget(f"tools:{name}", window, max_calls, 0, (), per_model=True)
        return cls(name, tools, budget)

    def applies(self, server: str, tool: str) -> bool:
        return not self.tools or any(pattern.match(server, tool) for pattern in self.tools)


@dataclass(frozen=True, slots=True)
class ToolAccess:
    """One tenant's MCP access. The default: no server at all."""

    servers: tuple[Glob, ...] = ()
    allow: tuple[ToolPattern, ...] = ()  # empty: every tool of its servers
    deny: tuple[ToolPattern, ...] = ()  # wins over allow
    max_argument_bytes: int = 0  # a tools/call's arguments, in bytes of JSON
    rates: tuple[ToolRate, ...] = ()

    def reservation(
        self, tenant: str, server: str, tool: str, now: float, counter: str | None = None
    ) -> Reservation | None:
        """One call of the tool in each rate that counts it (None: none does), on the
        tool's counter, or on `counter` in its place."""
        budgets = [rate.budget for rate in self.rates if rate.applies(server, tool)]
        if not budgets:
            return None
        return plan(budgets, tenant, f"{server}/{counter or tool}", 1, 0, now)

    def rate_name(self, budget: str) -> str:
        """The config's name of a rate, from its counter's budget name."""
        return budget.removeprefix("tools:")

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
