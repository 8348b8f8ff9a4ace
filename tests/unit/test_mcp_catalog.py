"""The virtual server's merged lists and its session records."""

from __future__ import annotations

import asyncio

from extproc.state.sessions import MemorySessionStore, Session, Upstream, decode, new_session_id
from extproc.tools.catalog import ListCache, Owner, merge


def _tool(name: str, description: str = "") -> dict[str, object]:
    return {"name": name, "description": description, "inputSchema": {"type": "object"}}


def test_names_keep_their_server_and_prefix() -> None:
    merged = merge(
        "tools/list",
        [("github", "gh_", [_tool("search")]), ("docs", "", [_tool("search"), _tool("read")])],
    )
    assert [t["name"] for t in merged.items] == ["gh_search", "search", "read"]
    assert merged.owners["gh_search"] == Owner("github", "search")
    assert merged.owners["search"] == Owner("docs", "search")
    assert merged.collisions == []


def test_a_colliding_name_stays_with_the_first_server() -> None:
    first, second = _tool("search", "first"), _tool("search", "second")
    merged = merge("tools/list", [("a", "", [first]), ("b", "", [second, _tool("other")])])
    assert merged.items == [first, _tool("other")]
    assert merged.owners["search"] == Owner("a", "search")
    assert merged.collisions == [("b", "search")]


def test_resources_keep_their_uris_and_items_without_a_name_are_left_out() -> None:
    merged = merge(
        "resources/list",
        [("files", "fs_", [{"uri": "file:///a", "name": "a"}, {"name": "no uri"}])],
    )
    assert merged.items == [{"uri": "file:///a", "name": "a"}]
    assert merged.owners == {"file:///a": Owner("files", "file:///a")}


def test_lists_are_kept_for_their_ttl() -> None:
    now = [100.0]
    cache = ListCache(60, clock=lambda: now[0])
    cache.put("a", "tools/list", [_tool("x")])
    assert cache.get("a", "tools/list") == [_tool("x")]
    assert cache.get("a", "prompts/list") is None
    now[0] += 60
    assert cache.get("a", "tools/list") is None
    cache.put("a", "tools/list", [])
    cache.forget("a")
    assert cache.get("a", "tools/list") is None


def test_sessions_round_trip_and_expire_after_their_last_use() -> None:
    now = [0.0]
    store = MemorySessionStore(ttl=10, max_sessions=2, clock=lambda: now[0])
    first, second, third = new_session_id(), new_session_id(), new_session_id()
    session = Session("team", "2025-06-18").with_upstream("a", Upstream("s-1", "2025-03-26"))
    store.put_now(first, session)
    assert store.get_now(first) == session
    now[0] = 9
    assert store.get_now(first) == session  # used: lives 10 s more
    now[0] = 18
    assert store.get_now(first) == session
    store.put_now(second, Session("team", "v"))
    store.put_now(third, Session("team", "v"))  # past max_sessions: the least recent goes
    assert len(store) == 2
    assert store.get_now(first) is None
    now[0] = 100
    assert store.get_now(second) is None
    assert asyncio.run(store.delete(third)) is False  # expired: nothing live was deleted


def test_session_ids_are_never_stored_and_bad_records_read_as_none() -> None:
    store = MemorySessionStore(ttl=10, max_sessions=10)
    session_id = new_session_id()
    store.put_now(session_id, Session("t", "v"))
    assert session_id not in repr(store._entries)
    assert len(session_id) >= 43
    assert decode(b"{") is None
    assert decode(b'{"tenant": "t"}') is None
    assert store.delete_now(session_id) is True
    assert store.get_now(session_id) is None
