"""The virtual MCP server at `/mcp`: every server a tenant may use, as one.

The gateway answers `initialize`, `ping` and the lists itself (the lists merged from its
servers', through tool access and pinning), and sends `tools/call`, `prompts/get` and
`resources/read` to the server that owns the name, through Envoy, with the name as that
server knows it and the gateway's own session with that server. The client's session is
the gateway's: its record (whose it is, the upstream sessions behind it) lives in the
session store.

No I/O here. A request that needs the store or the servers is a `Flow`: a generator that
yields effects (load or save a session, fetch lists, open an upstream session) and is sent
their results; it returns the phase's decision. The shell drives it.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from typing import Any

import orjson

from extproc.apis import mcp
from extproc.dataplane.decisions import Continue, Decision, Reply
from extproc.dataplane.flows import (
    Effect,
    EndSession,
    Fetch,
    Fetched,
    Flow,
    LoadSession,
    Open,
    Opened,
    Result,
    SaveSession,
    SessionFound,
    StoreDown,
)
from extproc.dataplane.tools import ToolExchange
from extproc.state.sessions import Session, new_session_id
from extproc.tools.catalog import LIST_OF, LISTS, ROUTED, Merged, merge

_JSON = [("content-type", "application/json")]
SERVER_INFO = {"name": "extproc", "title": "extproc MCP gateway", "version": "0.1.0"}
CAPABILITIES = {
    "tools": {"listChanged": False},
    "prompts": {"listChanged": False},
    "resources": {"subscribe": False, "listChanged": False},
}
# The specification's code for a resource no server has.
RESOURCE_NOT_FOUND = -32002
# Answered by the gateway with an empty result: nothing behind it to tell.
_EMPTY = frozenset({"ping", "logging/setLevel"})


class VirtualExchange(ToolExchange):
    """One HTTP request on `/mcp`, the tenant's virtual server."""

    virtual = True
    version = ""  # a stateless client's protocol version
    mirrored: tuple[str | None, str | None] = (None, None)  # its Mcp-Method, Mcp-Name

    def request_headers(self, headers: Mapping[str, str], end_of_stream: bool) -> Decision | Flow:
        refused = self.begin(headers)
        if refused is not None:
            return refused
        assert self.tenant is not None
        if not self.tenant.mcp.servers:
            error = mcp.RpcError(mcp.INVALID_REQUEST, f"No MCP server at {self.path}.")
            return self.refuse(Reply(404, error.body(), list(_JSON)), reason="not_found")
        asked = headers.get(mcp.PROTOCOL_VERSION_HEADER)
        if asked is not None:
            version = mcp.protocol_version(asked, mcp.VERSIONS)
            if isinstance(version, mcp.RpcError):
                return self.refuse(Reply(400, version.body(), list(_JSON)), reason="version")
            self.stateless = version in mcp.SESSIONLESS_VERSIONS
        if self.stateless:
            self.version = asked or ""
            self.mirrored = (headers.get(mcp.METHOD_HEADER), headers.get(mcp.NAME_HEADER))
            # One record per tenant holds the upstream sessions its clients share.
            self.store_key = f"tenant\x00{self.tenant.name}"
            if self.http_method != "POST":
                error = mcp.RpcError(
                    mcp.INVALID_REQUEST, f"Method {self.http_method} is not allowed."
                )
                reply = Reply(405, error.body(), [*_JSON, ("allow", "POST")])
                return self.refuse(reply, reason="method")
        else:
            self.store_key = self.session
        return _headers(self, self.http_method, headers, end_of_stream)

    def request_body(self, raw: bytes) -> Decision | Flow:
        message = self.read(raw)
        if isinstance(message, Reply):
            return message
        if self.stateless:
            return _stateless(self, message)
        if message.method == "initialize" and message.id is not None:
            return _initialize(self, message)
        if not self.session:
            return _no_session(self)
        return _in_session(self, message)


def _headers(
    tool: VirtualExchange, method: str, headers: Mapping[str, str], end_of_stream: bool
) -> Decision | Flow:
    if method == "POST":
        refused = tool.unreadable(headers, end_of_stream)
        return refused if refused is not None else Continue()
    if method == "DELETE" and tool.session:
        return _delete(tool)
    if method == "DELETE":
        return _no_session(tool)
    # No stream of the servers' own messages: the virtual server has no single server
    # whose stream it would be (the spec's answer for that is 405).
    error = mcp.RpcError(mcp.INVALID_REQUEST, f"Method {method} is not allowed.")
    reply = Reply(405, error.body(), [*_JSON, ("allow", "POST, DELETE")])
    return tool.refuse(reply, reason="method")


def _initialize(tool: VirtualExchange, message: mcp.Message) -> Flow:
    asked = (message.params or {}).get("protocolVersion")
    version = (
        asked
        if isinstance(asked, str) and asked in mcp.SESSION_VERSIONS
        else mcp.SESSION_VERSIONS[-1]
    )
    assert tool.tenant is not None
    session_id = new_session_id()
    done = yield SaveSession(session_id, Session(tool.tenant.name, version))
    if isinstance(done, StoreDown):
        return _store_down(tool)
    tool.session = session_id
    answer = {"protocolVersion": version, "capabilities": CAPABILITIES, "serverInfo": SERVER_INFO}
    return result(tool, answer, [(mcp.SESSION_HEADER, session_id)])


def _owned(tool: VirtualExchange) -> Generator[Effect, Result, Session | Reply]:
    """The client's session, when it is the tenant's; else the refusal."""
    found = yield LoadSession(tool.session)
    if isinstance(found, StoreDown):
        return _store_down(tool)
    assert isinstance(found, SessionFound) and tool.tenant is not None
    session = found.session
    if session is None or session.tenant != tool.tenant.name:
        # Unknown, expired or another tenant's: the spec's 404, after which a client
        # starts a new session.
        reply = Reply(404, mcp.RpcError(mcp.SESSION_UNKNOWN, "Session not found.").body(), _JSON)
        return tool.refuse(reply, reason="session")
    return session


def _in_session(tool: VirtualExchange, message: mcp.Message) -> Flow:
    session = yield from _owned(tool)
    if isinstance(session, Reply):
        return session
    method = message.method
    if method is None or message.id is None:
        # A notification, or a response to a request the gateway never sent: accepted.
        tool.outcome = "ok"
        tool.status = 202
        return Reply(202, b"")
    if method in _EMPTY:
        return result(tool, {})
    served = yield from serve(tool, session, message)
    if served is not None:
        return served
    error = mcp.RpcError(mcp.METHOD_NOT_FOUND, f"Method not found: {method}.", message.id)
    return tool.answer_error(error, "method")


def serve(
    tool: VirtualExchange, session: Session, message: mcp.Message
) -> Generator[Effect, Result, Decision | None]:
    """A list merged, or a call on its way to its server; None for any other method."""
    method = message.method
    if method in LISTS:
        merged, session = yield from _merged(tool, session, method)
        return result(tool, {LISTS[method][0]: merged.items}, cacheable=True)
    if method in ROUTED:
        return (yield from _routed(tool, session, message))
    return None


def _merged(
    tool: VirtualExchange, session: Session, method: str
) -> Generator[Effect, Result, tuple[Merged, Session]]:
    """The tenant's servers' lists as one, fetching those not in the cache; and the
    session with any upstream session opened on the way."""
    runtime, tenant, cache = tool.runtime, tool.tenant, tool.lists
    assert tenant is not None
    access = tenant.mcp
    servers = [s for s in runtime.mcp_servers.values() if access.server_allowed(s.name)]
    missing = tuple(s for s in servers if cache.get(s.name, method) is None)
    if missing:
        fetched = yield Fetch(method, missing, session)
        assert isinstance(fetched, Fetched)
        for server in missing:
            items = fetched.lists.get(server.name)
            if items is None:
                tool.unavailable.append(server.name)
                cache.failed(server.name, method)
                continue
            if method == "tools/list":
                tool.listed.append((server.name, {t["name"] for t in items}))
                items, changes = tool.pins.check(server.name, items, server.pinning)
                tool.changes.extend(changes)
            cache.put(server.name, method, items)
        if fetched.upstream:
            for name, upstream in fetched.upstream.items():
                session = session.with_upstream(name, upstream)
            saved = yield SaveSession(tool.store_key, session)
            if isinstance(saved, StoreDown):
                tool.unavailable.append("session store")
    lists = []
    for server in servers:
        items = cache.get(server.name, method) or []
        if method == "tools/list":
            items = access.visible(server.name, items)
        lists.append((server.name, server.tool_prefix, items))
    merged = merge(method, lists)
    tool.collisions.extend(merged.collisions)
    return merged, session


def _routed(tool: VirtualExchange, session: Session, message: mcp.Message) -> Flow:
    method = message.method
    assert method is not None
    field = ROUTED[method]
    name = (message.params or {}).get(field)
    if not isinstance(name, str):
        error = mcp.RpcError(mcp.INVALID_PARAMS, f"params.{field} must be a string.", message.id)
        return tool.answer_error(error, "invalid")
    merged, session = yield from _merged(tool, session, LIST_OF[method])
    owner = merged.owners.get(name)
    if owner is None:
        tool.tool = name if method == "tools/call" else None
        unknown = "Resource not found" if method == "resources/read" else "Unknown name"
        code = RESOURCE_NOT_FOUND if method == "resources/read" else mcp.INVALID_PARAMS
        return tool.answer_error(mcp.RpcError(code, f"{unknown}: {name}.", message.id), "unknown")
    server = tool.runtime.mcp_servers[owner.server]
    tool.server = server
    if method == "tools/call":
        called = tool.call(message, owner.name)
        if isinstance(called, Reply):
            return called
        sent, reservation = called
        if reservation is not None:
            counted = yield from tool.counted(reservation, Continue())
            if isinstance(counted, Reply):
                return counted
    else:
        # Written anew, as every forwarded message is (a key given twice goes once).
        sent = orjson.dumps(
            {**message.payload, "params": {**(message.params or {}), field: owner.name}}
        )
    upstream = session.upstream.get(server.name)
    if upstream is None:
        opened = yield Open(server)
        assert isinstance(opened, Opened)
        if opened.upstream is None:
            error = mcp.RpcError(
                mcp.SERVER_UNAVAILABLE,
                f"MCP server '{server.name}' is unavailable ({opened.failure}).",
                message.id,
            )
            tool.unavailable.append(server.name)
            return tool.answer_error(error, "unavailable")
        upstream = opened.upstream
        saved = yield SaveSession(tool.store_key, session.with_upstream(server.name, upstream))
        if isinstance(saved, StoreDown):
            return _store_down(tool)
    decision = tool.route(server)
    # The client's cookies are for the gateway's origin, not for any of its servers; its
    # method and name headers (2026-07-28) named the call as the gateway lists it.
    decision.remove_headers.extend(("cookie", mcp.METHOD_HEADER, mcp.NAME_HEADER))
    if upstream.session_id:
        decision.set_headers.append((mcp.SESSION_HEADER, upstream.session_id))
    else:
        decision.remove_headers.append(mcp.SESSION_HEADER)
    decision.set_headers.append((mcp.PROTOCOL_VERSION_HEADER, upstream.protocol))
    decision.body = sent
    decision.set_headers.append(("content-length", str(len(sent))))
    tool.forwarded = True
    return decision


def _stateless(tool: VirtualExchange, message: mcp.Message) -> Decision | Flow:
    """A request of MCP's 2026-07-28 revision: its headers checked against its body, then
    served as in a session, the tenant's own record holding the upstream sessions."""
    mismatch = _mismatch(tool, message)
    if mismatch is not None:
        error = mcp.RpcError(mcp.HEADER_MISMATCH, mismatch, message.id)
        return tool.refuse(Reply(400, error.body(), list(_JSON)), error.code, "headers")
    if message.id is None:
        tool.outcome, tool.status = "ok", 202
        return Reply(202, b"")
    if message.method == "server/discover":
        meta = {"io.modelcontextprotocol/serverInfo": SERVER_INFO}
        answer = {"supportedVersions": list(mcp.VERSIONS), "capabilities": CAPABILITIES}
        return result(tool, {**answer, "_meta": meta}, cacheable=True)
    return _tenant_session(tool, message)


def _tenant_session(tool: VirtualExchange, message: mcp.Message) -> Flow:
    assert tool.tenant is not None
    found = yield LoadSession(tool.store_key)
    if isinstance(found, StoreDown):
        return _store_down(tool)
    assert isinstance(found, SessionFound)
    session = found.session or Session(tool.tenant.name, tool.version)
    served = yield from serve(tool, session, message)
    if served is not None:
        return served
    # The revision's answer to a method a server does not implement: 404 with -32601.
    error = mcp.RpcError(mcp.METHOD_NOT_FOUND, f"Method not found: {message.method}.", message.id)
    return tool.refuse(Reply(404, error.body(), list(_JSON)), error.code, "method")


def _mismatch(tool: VirtualExchange, message: mcp.Message) -> str | None:
    """What the request's headers say that its body does not (the revision requires
    both, and a server to refuse a difference)."""
    method, name = tool.mirrored
    if method != message.method:
        return "Mcp-Method does not match the message's method."
    meta = (message.params or {}).get("_meta")
    version = (
        meta.get("io.modelcontextprotocol/protocolVersion") if isinstance(meta, dict) else None
    )
    if version != tool.version:
        return "MCP-Protocol-Version does not match the message's protocol version."
    field = ROUTED.get(message.method or "")
    if field is not None:
        named = (message.params or {}).get(field)
        if name is None or mcp.read_header_value(name) != named:
            return f"Mcp-Name does not match params.{field}."
    return None


def _delete(tool: VirtualExchange) -> Flow:
    session = yield from _owned(tool)
    if isinstance(session, Reply):
        return session
    ended = yield EndSession(tool.session, session)
    if isinstance(ended, StoreDown):
        return _store_down(tool)
    tool.status, tool.outcome = 200, "ok"
    return Reply(200, b"")


# -- replies -------------------------------------------------------------------------------


def result(
    tool: VirtualExchange,
    answer: dict[str, Any],
    headers: list[tuple[str, str]] | None = None,
    cacheable: bool = False,
) -> Reply:
    if tool.stateless:
        # 2026-07-28: every result says its type; lists and discovery say how long a
        # client may keep them (the lists are the tenant's: private).
        answer = {"resultType": "complete", **answer}
        if cacheable:
            ttl = round(tool.runtime.mcp.list_ttl * 1000)
            answer.update(ttlMs=ttl, cacheScope="private")
    body = orjson.dumps({"jsonrpc": "2.0", "id": tool.rpc_id, "result": answer})
    tool.status, tool.outcome, tool.bytes_out = 200, "ok", len(body)
    return Reply(200, body, [*_JSON, *(headers or [])])


def _no_session(tool: VirtualExchange) -> Reply:
    error = mcp.RpcError(mcp.INVALID_REQUEST, "Mcp-Session-Id is required; initialize first.")
    return tool.refuse(Reply(400, error.body(), list(_JSON)), reason="session")


def _store_down(tool: VirtualExchange) -> Reply:
    error = mcp.RpcError(
        mcp.SERVER_UNAVAILABLE, "MCP sessions cannot be read right now; try again.", tool.rpc_id
    )
    return tool.refuse(Reply(503, error.body(), list(_JSON)), reason="store")
