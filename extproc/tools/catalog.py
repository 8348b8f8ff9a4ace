"""What the virtual server lists: its servers' tools, prompts and resources as one server,
and which server owns each name.

Names are the server's own, after the server's `tool_prefix` when it has one. Where two
of a tenant's servers would list the same name, the server first in the config keeps it
and the other's item is left out (and reported): a name an agent was given always means
one tool, and no name changes because another server was added (decision record:
mcp-virtual-server). Resources keep their URIs, which name their server already.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

# What each list method lists, and the field that names an item.
LISTS = {
    "tools/list": ("tools", "name"),
    "prompts/list": ("prompts", "name"),
    "resources/list": ("resources", "uri"),
    "resources/templates/list": ("resourceTemplates", "uriTemplate"),
}
# The methods sent to the server that owns the name in their params, and that param.
ROUTED = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}
# Which list holds the names each routed method uses.
LIST_OF = {
    "tools/call": "tools/list",
    "prompts/get": "prompts/list",
    "resources/read": "resources/list",
}
_PREFIXED = frozenset({"tools/list", "prompts/list"})


class Owner(NamedTuple):
    server: str
    name: str  # as the server names it


class Merged(NamedTuple):
    items: list[dict[str, Any]]  # as the virtual server lists them
    owners: dict[str, Owner]  # listed name -> who owns it
    collisions: list[tuple[str, str]]  # (server, name) left out: another server has it


def merge(method: str, lists: Sequence[tuple[str, str, list[dict[str, Any]]]]) -> Merged:
    """One list from the servers' (server, prefix, items), in the order given."""
    _, field = LISTS[method]
    prefixed = method in _PREFIXED
    items: list[dict[str, Any]] = []
    owners: dict[str, Owner] = {}
    collisions: list[tuple[str, str]] = []
    for server, prefix, found in lists:
        for item in found:
            name = item.get(field)
            if not isinstance(name, str):
                continue
            listed = prefix + name if prefixed else name
            if listed in owners:
                collisions.append((server, name))
                continue
            owners[listed] = Owner(server, name)
            items.append({**item, field: listed} if listed != name else item)
    return Merged(items, owners, collisions)


# Seconds a server that failed to list is taken to list nothing.
FAILED_TTL = 5.0


class ListCache:
    """Each server's lists as last fetched, for `ttl` seconds: the virtual server answers
    lists and routes calls from it. One entry per (server, method): bounded by the config."""

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._clock = clock
        self._entries: dict[tuple[str, str], tuple[float, list[dict[str, Any]]]] = {}

    def get(self, server: str, method: str) -> list[dict[str, Any]] | None:
        entry = self._entries.get((server, method))
        if entry is None or entry[0] <= self._clock():
            return None
        return entry[1]

    def put(self, server: str, method: str, items: list[dict[str, Any]]) -> None:
        self._entries[(server, method)] = (self._clock() + self.ttl, items)

    def failed(self, server: str, method: str) -> None:
        """A server that did not answer lists nothing for a few seconds, rather than
        having every request wait for it again."""
        self._entries[(server, method)] = (self._clock() + min(self.ttl, FAILED_TTL), [])

    def forget(self, server: str) -> None:
        for key in [k for k in self._entries if k[0] == server]:
            del self._entries[key]
