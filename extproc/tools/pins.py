"""Tool definitions pinned against silent change: an MCP server that rewrites what a tool
says it does after clients have trusted it (tool poisoning, a "rug pull").

A tool's digest covers what a model reads of it and what clients decide on (name, title,
description, input and output schemas, annotations such as `destructiveHint`); not `_meta`,
which carries protocol and vendor metadata a server may change from one list to the next
without changing the tool, nor fields newer than these. Each (server, tool) is compared
with its pin in the config, or else with the digest it had when this process first saw it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson

# The fields of a tool definition a digest covers, in the MCP schema's names.
PINNED_FIELDS = ("name", "title", "description", "inputSchema", "outputSchema", "annotations")
# Tools remembered per server (servers are the config's): past it, a server's new tools are
# not learned, so a flood of names cannot push out what was learned of the others.
DEFAULT_MAX_TOOLS = 1024
# MCP asks tool names to be 1 to 128 characters; a name longer than twice that is not
# remembered (the memory a server can make the book hold stays bounded).
MAX_NAME_LENGTH = 256


class Pinning(StrEnum):
    REPORT = "report"  # a change is reported; the tool stays listed
    ENFORCE = "enforce"  # a change is reported and the tool withheld
    OFF = "off"  # definitions are not watched


@dataclass(frozen=True, slots=True)
class Change:
    """A tool whose definition is not the one pinned or first seen."""

    server: str
    tool: str
    old: str  # the digest pinned in the config, or learned when first seen
    new: str
    pinned: bool


class Undigestable(ValueError):
    """A definition the canonical JSON cannot hold (nested some 250 levels deep, past
    orjson's limit; an integer beyond 64 bits)."""


def digest(tool: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the canonical JSON of the pinned fields: keys sorted at every
    level, no whitespace, UTF-8 unescaped; a field absent or null is left out."""
    canonical = {name: tool[name] for name in PINNED_FIELDS if tool.get(name) is not None}
    try:
        text = orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError as error:
        raise Undigestable(str(error)) from None
    return hashlib.sha256(text).hexdigest()


@dataclass(slots=True)
class _Server:
    learned: dict[str, str]  # tool -> digest when first seen
    reported: dict[str, str]  # tool -> the changed digest last reported
    withheld: frozenset[str]  # by the last check in enforce mode
    checked: bool = False  # a list of the server's was read


class PinBook:
    """Per process: each server's tools' first-seen digests and the config's pins.

    Tools a server lists past `max_tools`, with names past MAX_NAME_LENGTH, without a name
    or with a definition that cannot be digested are unwatched: kept in report mode,
    withheld in enforce mode (a tool that cannot be compared is not trusted), counted in
    `unwatched`. Pinned tools are always compared with their pin."""

    def __init__(
        self, pins: Mapping[str, Mapping[str, str]], max_tools: int = DEFAULT_MAX_TOOLS
    ) -> None:
        self._pins = {server: dict(tools) for server, tools in pins.items()}
        self._servers: dict[str, _Server] = {}
        self._max_tools = max_tools
        self.unwatched = 0

    def repin(self, pins: Mapping[str, Mapping[str, str]]) -> None:
        """The pins of a reloaded config; what was learned stays."""
        self._pins = {server: dict(tools) for server, tools in pins.items()}

    def check(
        self, server: str, tools: list[Any], mode: Pinning, whole: bool = True
    ) -> tuple[list[Any], list[Change]]:
        """The tools to list (the same list when none is withheld) and the changes not
        reported before. A server's whole list (every page) decides what is withheld; a
        page only adds to it (`whole` False), so no page undoes another's verdict."""
        state = self._servers.get(server)
        if state is None:
            state = self._servers[server] = _Server({}, {}, frozenset())
        if mode is Pinning.OFF:
            state.withheld = frozenset()
            return tools, []
        pins = self._pins.get(server, {})
        kept: list[Any] = []
        withheld: list[str] = []
        changes: list[Change] = []
        for tool in tools:
            name = tool.get("name") if isinstance(tool, dict) else None
            verdict = self._verdict(server, state, pins, tool, name)
            if isinstance(verdict, Change):
                if state.reported.get(verdict.tool) != verdict.new:
                    state.reported[verdict.tool] = verdict.new
                    changes.append(verdict)
            elif verdict and isinstance(name, str):
                state.reported.pop(name, None)
            if verdict is True or mode is Pinning.REPORT:
                kept.append(tool)
            elif isinstance(name, str):
                withheld.append(name)
        state.withheld = frozenset(withheld) if whole else state.withheld | frozenset(withheld)
        state.checked = True
        return (tools if len(kept) == len(tools) else kept), changes

    def checked(self, server: str) -> bool:
        """Whether this process has read a list of the server's: until it has, it cannot
        know which of its tools to withhold."""
        state = self._servers.get(server)
        return state is not None and state.checked

    def known(self, server: str, tool: str) -> bool:
        """Whether the tool is pinned or was seen in the server's list: a name that may
        label a metric (a client can send any name; a server's list is bounded)."""
        state = self._servers.get(server)
        return tool in self._pins.get(server, ()) or (state is not None and tool in state.learned)

    def withheld(self, server: str, tool: str) -> bool:
        """Whether the server's last check in enforce mode withheld the tool."""
        state = self._servers.get(server)
        return state is not None and tool in state.withheld

    def _verdict(
        self, server: str, state: _Server, pins: dict[str, str], tool: Any, name: Any
    ) -> bool | Change:
        """True: as pinned or first seen (or learned now); a Change; False: unwatched."""
        if not isinstance(name, str) or not name or len(name) > MAX_NAME_LENGTH:
            self.unwatched += 1
            return False
        try:
            found = digest(tool)
        except Undigestable:
            self.unwatched += 1
            return False
        pinned = pins.get(name)
        if pinned is not None:
            return True if found == pinned else Change(server, name, pinned, found, True)
        learned = state.learned.get(name)
        if learned is None:
            if len(state.learned) >= self._max_tools:
                self.unwatched += 1
                return False
            state.learned[name] = found
            return True
        return True if found == learned else Change(server, name, learned, found, False)
