"""One MCP request through the gateway (Streamable HTTP), as a state machine with no I/O.

`/mcp/<server>` reaches one configured server: the tenant's access is checked, the
client's key removed and the server's credential set, the JSON-RPC message read and
governed (tool access, pinning, argument size, policy on arguments) before the server
sees it, and the answer, JSON or an SSE stream, read back (tool lists filtered, results
through policy, a broken or missing answer turned into a JSON-RPC error for the agent).
The shell feeds the phases and writes the audit record from `record()`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import orjson

from extproc import names
from extproc.accounting.budgets import Reservation
from extproc.apis import mcp
from extproc.capture import Kept
from extproc.config.runtime import McpServer, Runtime, Tenant
from extproc.dataplane.decisions import Continue, Decision, Reply
from extproc.dataplane.flows import Count, Counted, Fetch, Fetched, Flow
from extproc.dataplane.tool_answer import AnswerReader
from extproc.digits import strict_int
from extproc.identity import identify, without_params
from extproc.policy.engine import Decisions, Redactions
from extproc.policy.rules import EMPTY, PolicySet
from extproc.policy.tools import Refusal, result_needs, scan_arguments, scan_result
from extproc.state.sessions import Session
from extproc.tools.catalog import ListCache
from extproc.tools.pins import PinBook, Pinning

PREFIX = "/mcp"
_JSON = "application/json"
_SSE = "text/event-stream"
_METHODS = "GET, POST, DELETE"
# The methods whose answers the gateway changes; any other answer is still read, to
# turn a broken one into an error the agent can act on.
_TOOLS_LIST = "tools/list"
_TOOLS_CALL = "tools/call"


def is_mcp_path(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


def _http_error(status: int, code: int, message: str) -> Reply:
    """An HTTP refusal with a JSON-RPC error body (the spec's form for a request the
    server cannot take: the id is not known yet)."""
    return Reply(status, mcp.RpcError(code, message).body(), [("content-type", _JSON)])


class ToolExchange:
    """One HTTP request on an MCP endpoint and its answer."""

    virtual = False  # the virtual server's (VirtualExchange)
    # A virtual-server client of MCP's 2026-07-28 revision: no initialize, no session;
    # each request names its version, method and name in headers.
    stateless = False
    store_key = ""  # the virtual server's: where the session record lives

    def __init__(self, runtime: Runtime, pins: PinBook, lists: ListCache) -> None:
        self.runtime = runtime
        self.pins = pins  # tool definitions as first seen, the process's
        self.lists = lists  # the servers' lists, the process's (the virtual server's)
        self.started = time.monotonic()
        self.request_id = ""
        self.http_method = ""
        self.path = ""
        self.tenant: Tenant | None = None
        self.server: McpServer | None = None
        self.session = ""  # the client's Mcp-Session-Id
        self.paged = False  # a tools/list asking for a page after the first
        self.query = ""  # as forwarded, without the client's credentials
        self.policies: PolicySet = EMPTY
        self.redactions = Redactions()
        self.decisions = Decisions()
        # The JSON-RPC message the client sent (a POST), as far as it was read.
        self.rpc_method: str | None = None
        self.rpc_id: str | int | None = None
        self.tool: str | None = None
        self.status = 0
        # "ok", a JSON-RPC error's name, or what the gateway did instead of the server.
        self.outcome = ""
        self.error_code: int | None = None
        self.forwarded = False
        self.refusal: str | None = None  # why the gateway answered instead of the server
        self.bytes_in = 0
        self.bytes_out = 0
        self.changes: list[Any] = []  # tool definitions found changed (pinning)
        # Each server's tool names as it listed them, for the drift watch.
        self.listed: list[tuple[str, set[str]]] = []
        self.unavailable: list[str] = []  # servers left out of a virtual list: they failed
        self.collisions: list[tuple[str, str]] = []  # (server, name) another server has
        self.expired: str | None = None  # the server whose session with the gateway ended
        self.kept: Kept | None = None  # the messages, when sampled for traffic capture
        self._reader: AnswerReader | None = None

    # -- request --------------------------------------------------------------------

    def begin(self, headers: Mapping[str, str]) -> Reply | None:
        """What every MCP request's headers establish: the request and the tenant (None)
        or the refusal of a caller the gateway does not know."""
        self.http_method = headers.get(":method", "")
        path, _, query = headers.get(":path", "").partition("?")
        self.path = path
        self.query = without_params(query, self.runtime.client_credential_query_params)
        self.request_id = headers.get(names.REQUEST_ID_HEADER, "")
        self.session = headers.get(mcp.SESSION_HEADER, "")
        tenant = identify(self.runtime, headers)
        if not isinstance(tenant, Tenant):
            error = _http_error(tenant.status, mcp.INVALID_REQUEST, tenant.message)
            return self.refuse(error, reason="auth")
        self.tenant = tenant
        self.policies = self.runtime.tool_policies(tenant)
        return None

    def request_headers(self, headers: Mapping[str, str], end_of_stream: bool) -> Decision | Flow:
        refused = self.begin(headers)
        if refused is not None:
            return refused
        assert self.tenant is not None
        name = self.path[len(PREFIX) + 1 :]
        server = self.runtime.mcp_servers.get(name) if name and "/" not in name else None
        if server is None or not self.tenant.mcp.server_allowed(server.name):
            # One answer for unknown and not allowed: a tenant learns nothing of others.
            return self.refuse(
                _http_error(404, mcp.INVALID_REQUEST, f"No MCP server at {self.path}."),
                reason="not_found",
            )
        self.server = server
        method = self.http_method
        if method not in ("GET", "POST", "DELETE"):
            reply = _http_error(405, mcp.INVALID_REQUEST, f"Method {method} is not allowed.")
            reply.headers.append(("allow", _METHODS))
            return self.refuse(reply, reason="method")
        if method == "POST":
            # Routed once its message is governed: should the body's phase fail and Envoy
            # go on (failure_mode_allow), no route and no credential are set yet.
            return self.unreadable(headers, end_of_stream) or Continue()
        self.forwarded = True
        decision = self.route(server)
        if method == "GET":
            # No replay of an earlier POST's answers on this stream: they would reach the
            # client unread (tool lists unfiltered, results past policy). The client
            # sends such a request again.
            decision.remove_headers.append(mcp.LAST_EVENT_ID_HEADER)
        return decision

    def unreadable(self, headers: Mapping[str, str], end_of_stream: bool) -> Reply | None:
        """A POST refused before its body: none, or more than a message may be."""
        length = strict_int(headers.get("content-length", ""))
        limit = self.runtime.mcp.max_message_bytes
        if end_of_stream or (length is not None and length > limit):
            what = "empty" if end_of_stream else f"larger than {limit} bytes"
            return self.refuse(
                _http_error(400, mcp.INVALID_REQUEST, f"The message is {what}."),
                reason="invalid",
            )
        return None

    def route(self, server: McpServer) -> Continue:
        """The request on its way to `server`: its route, path and credential, the
        client's key removed."""
        decision = Continue(clear_route_cache=True)
        if not self.runtime.external_envoy:
            decision.set_headers.append((names.ROUTE_HEADER, server.cluster))
        target = server.base_path + (f"?{self.query}" if self.query else "")
        decision.set_headers.append((":path", target))
        credential = server.credential_value()
        if credential is not None and server.credential_header is not None:
            decision.set_headers.append((server.credential_header, credential))
        decision.set_headers.extend(server.headers)
        decision.remove_headers.extend(self.runtime.client_credential_headers)
        # The gateway reads the answer: uncompressed.
        decision.remove_headers.append("accept-encoding")
        if self.tenant is not None:
            # Who and where, for Envoy's access log line (a body's reply carries it).
            decision.metadata = {"tenant": self.tenant.name, "backend": server.name}
        return decision

    def read(self, raw: bytes) -> mcp.Message | Reply:
        """The client's JSON-RPC message, or the 400 of one the gateway cannot read."""
        settings = self.runtime.mcp
        self.bytes_in = len(raw)
        message = mcp.read_message(
            raw, max_bytes=settings.max_message_bytes, max_depth=settings.max_depth
        )
        if isinstance(message, mcp.RpcError):
            reply = Reply(400, message.body(), [("content-type", _JSON)])
            return self.refuse(reply, message.code, "invalid")
        self.rpc_method, self.rpc_id = message.method, message.id
        return message

    def request_body(self, raw: bytes) -> Decision | Flow:
        message = self.read(raw)
        if isinstance(message, Reply):
            return message
        server = self.server
        assert server is not None
        if message.method == _TOOLS_LIST:
            self.paged = bool((message.params or {}).get("cursor"))
        if (
            message.method == _TOOLS_CALL
            and server.pinning is Pinning.ENFORCE
            and not self.pins.checked(server.name)
        ):
            return self._list_first(message)
        return self._forward(message)

    def _list_first(self, message: mcp.Message) -> Flow:
        """A call to a server whose tools this process has not seen: which to withhold is
        known only once its list is read, so it is read first."""
        server, tenant = self.server, self.tenant
        assert server is not None and tenant is not None
        fetched = yield Fetch("tools/list", (server,), Session(tenant.name, ""))
        assert isinstance(fetched, Fetched)
        items = fetched.lists.get(server.name)
        if items is None:
            error = mcp.RpcError(
                mcp.SERVER_UNAVAILABLE,
                f"MCP server '{server.name}' did not list its tools "
                f"({fetched.failures.get(server.name, 'unavailable')}).",
                self.rpc_id,
            )
            return self.answer_error(error, "unavailable")
        self.listed.append((server.name, {t["name"] for t in items}))
        self.changes.extend(self.pins.check(server.name, items, server.pinning)[1])
        forward = self._forward(message)
        if isinstance(forward, Continue | Reply):
            return forward
        return (yield from forward)

    def _forward(self, message: mcp.Message) -> Decision | Flow:
        """The message governed and on its way to the server."""
        server = self.server
        assert server is not None
        body: bytes | None = None
        reservation = None
        if message.method == _TOOLS_CALL:
            called = self.call(message, None)
            if isinstance(called, Reply):
                return called
            body, reservation = called
        self.forwarded = True
        decision = self.route(server)
        # The message as the gateway read it, written anew: a key given twice reaches the
        # server once, with the value the gateway checked.
        decision.body = body if body is not None else orjson.dumps(message.payload)
        decision.set_headers.append(("content-length", str(len(decision.body))))
        if reservation is None:
            return decision
        return self.counted(reservation, decision)

    def counted(self, reservation: Reservation, decision: Decision) -> Flow:
        """The call counted in the tenant's tool rates first; refused past one."""
        counted = yield Count(reservation)
        assert isinstance(counted, Counted)
        refused = counted.refused
        if refused is None and not self.runtime.store.fail_open:
            error = mcp.RpcError(
                mcp.SERVER_UNAVAILABLE, "Tool call counters cannot be read right now.", self.rpc_id
            )
            return self.answer_error(error, "store")
        if refused is not None and refused >= 0:
            charge = reservation.charges[refused]
            assert self.tenant is not None
            wait = max(1, charge.window_end - int(time.time()))
            error = mcp.RpcError(
                mcp.RATE_LIMITED,
                f"Rate '{self.tenant.mcp.rate_name(charge.budget)}' for tool '{self.tool}' is "
                f"used up for this period; try again in {wait} seconds.",
                self.rpc_id,
                {"retry_after": wait},
            )
            return self.answer_error(error, "rate")
        return decision

    def call(
        self, message: mcp.Message, upstream_name: str | None
    ) -> Reply | tuple[bytes, Reservation | None]:
        """A tools/call governed for `self.server`: the gateway's refusal; or the body to
        send (written anew: the arguments as policy left them, the tool's name as its
        server knows it) and the call's count in the tenant's tool rates."""
        called = mcp.tool_call(message)
        if isinstance(called, mcp.RpcError):
            return self.answer_error(called, "invalid")
        name, arguments = called
        self.tool = tool = upstream_name or name
        refused = self._govern(tool, arguments)
        if refused is not None:
            return self.answer_error(*refused)
        sent = scan_arguments(
            self.policies,
            arguments,
            self.redactions,
            self.decisions,
            max_depth=self.runtime.mcp.max_depth,
        )
        if isinstance(sent, Refusal):
            blocked = mcp.RpcError(mcp.BLOCKED_BY_POLICY, sent.message, self.rpc_id)
            return self.answer_error(blocked, "policy")
        assert self.tenant is not None and self.server is not None
        # Counters by tool name, for names the server listed or the config pinned; any
        # other name a client makes up shares one counter (each would last the window).
        counter = None if self.pins.known(self.server.name, tool) else "_unlisted"
        reservation = self.tenant.mcp.reservation(
            self.tenant.name, self.server.name, tool, time.time(), counter
        )
        params = dict(message.params or {})
        params["name"], params["arguments"] = tool, sent
        return orjson.dumps({**message.payload, "params": params}), reservation

    def _govern(self, name: str, arguments: dict[str, Any]) -> tuple[mcp.RpcError, str] | None:
        """A refusal of the call before the server sees it, and its reason; or None."""
        server, tenant = self.server, self.tenant
        assert server is not None and tenant is not None
        if not tenant.mcp.allowed(server.name, name):
            return mcp.RpcError(
                mcp.TOOL_NOT_ALLOWED, f"Tool '{name}' is not available.", self.rpc_id
            ), "access"
        if self.pins.withheld(server.name, name):
            return mcp.RpcError(
                mcp.TOOL_NOT_ALLOWED,
                f"Tool '{name}' changed its definition and is withheld until it is pinned.",
                self.rpc_id,
            ), "pinning"
        size = len(orjson.dumps(arguments))
        if size > tenant.mcp.max_argument_bytes:
            return mcp.RpcError(
                mcp.INVALID_PARAMS,
                f"The arguments are {size} bytes; at most {tenant.mcp.max_argument_bytes} "
                "are allowed.",
                self.rpc_id,
            ), "arguments"
        return None

    def refuse(self, reply: Reply, code: int | None = None, reason: str = "invalid") -> Reply:
        self.status = reply.status
        self.outcome = "refused"
        self.refusal = reason
        self.error_code = code
        self.bytes_out = len(reply.body)
        return reply

    def answer_error(self, error: mcp.RpcError, reason: str) -> Reply:
        """A request answered by the gateway with a JSON-RPC error (HTTP 200, the
        request's id): the agent's SDK raises it for that call."""
        error = (
            error if error.id is not None else mcp.RpcError(error.code, error.message, self.rpc_id)
        )
        reply = Reply(200, error.body(), [("content-type", _JSON)])
        self.status = 200
        self.outcome = "refused"
        self.refusal = reason
        self.error_code = error.code
        self.bytes_out = len(reply.body)
        return reply

    # -- response -------------------------------------------------------------------

    def response_headers(self, headers: Mapping[str, str]) -> Continue:
        self.status = status = strict_int(headers.get(":status", ""), 999) or 0
        decision = Continue()
        if self.http_method != "POST" or self.rpc_id is None or self.rpc_method is None:
            # A notification's 202, a GET stream, a DELETE: passed as they come.
            self.outcome = "ok" if status < 400 else f"http_{status}"
            return decision
        content_type = headers.get("content-type", "").partition(";")[0].strip().lower()
        server = self.server
        assert server is not None
        if self.virtual:
            # The server's session is the gateway's, and its cookies and auth challenges
            # are the gateway's business too: the client's origin is the gateway, whose
            # other servers would get the cookies.
            decision.remove_headers.extend((mcp.SESSION_HEADER, "set-cookie", "www-authenticate"))
        failure = None
        if status >= 500:
            failure = mcp.RpcError(
                mcp.SERVER_UNAVAILABLE,
                f"MCP server '{server.name}' is unavailable ({status}).",
                self.rpc_id,
            )
            self.outcome = "server_unavailable"
        elif status == 404 and self.virtual:
            # The server ended the gateway's session with it; the client's goes on, and
            # the next call opens a new one.
            self.expired = server.name
            failure = mcp.RpcError(
                mcp.SERVER_UNAVAILABLE,
                f"MCP server '{server.name}' ended its session; call again.",
                self.rpc_id,
            )
            self.outcome = "server_session_ended"
        elif status != 200 and self.virtual:
            # 401, 403, 429...: the server's answer to the gateway, not to the client.
            failure = mcp.RpcError(
                mcp.SERVER_UNAVAILABLE,
                f"MCP server '{server.name}' refused the call ({status}).",
                self.rpc_id,
            )
            self.outcome = "server_refused"
        elif status == 200 and content_type not in (_JSON, _SSE):
            failure = mcp.RpcError(
                mcp.BAD_SERVER_RESPONSE,
                f"MCP server '{server.name}' did not answer JSON-RPC.",
                self.rpc_id,
            )
            self.outcome = "bad_answer"
        if failure is not None:
            # An error the agent's SDK raises for this call, rather than a transport
            # failure that ends its whole session; in place of any body the answer has.
            body = failure.body()
            self.error_code, self.bytes_out = failure.code, len(body)
            decision.body, decision.replace_body = body, True
            if self.kept is not None:
                self.kept.add(body)
            decision.set_headers.extend(
                ((":status", "200"), ("content-type", _JSON), ("content-length", str(len(body))))
            )
            decision.remove_headers.append("content-encoding")
            return decision
        if status != 200:
            self.outcome = f"http_{status}"  # 400, 404 (a session ended): the client's to see
            return decision
        streamed = content_type == _SSE
        self._reader = AnswerReader(self, streamed=streamed)
        decision.response_body = "streamed" if streamed else "buffered"
        if streamed:
            # Events may change on the way: the length the server sent no longer holds.
            decision.remove_headers.append("content-length")
        return decision

    def response_body(self, chunk: bytes, end_of_stream: bool) -> Continue:
        reader = self._reader
        if reader is None:
            return Continue()
        body = reader.feed(chunk, end_of_stream)
        if self.kept is not None:
            self.kept.add(chunk if body is None else body, reader.streamed)
        decision = Continue(body=body)
        if body is not None and not reader.streamed:
            decision.set_headers.append(("content-length", str(len(body))))
        return decision

    # -- the answer's messages ------------------------------------------------------

    def unread_answer(self, failure: mcp.RpcError) -> dict[str, Any]:
        """The error the agent gets for its request in place of an answer the gateway
        could not read (too large, or no JSON-RPC)."""
        code = failure.code if failure.code == mcp.MESSAGE_TOO_LARGE else None
        self.outcome = "bad_answer"
        self.error_code = code or mcp.BAD_SERVER_RESPONSE
        what = "too large." if code else "not valid JSON-RPC."
        failed = {"code": self.error_code, "message": f"The MCP server's answer was {what}"}
        return {"jsonrpc": "2.0", "id": self.rpc_id, "error": failed}

    def answered(self, message: mcp.Message) -> dict[str, Any] | None:
        """A message of the server's answer: a new payload for it, or None to pass it.
        Only the answer to the client's request is changed; progress and other messages
        of an SSE answer pass as they came."""
        if message.method is not None or message.id != self.rpc_id:
            return None
        error = message.error
        if error is not None:
            self.outcome = "error"
            number = error.get("code")
            self.error_code = number if type(number) is int else None
            return None
        self.outcome = "ok"
        result = message.payload.get("result")
        if not isinstance(result, dict):
            return None
        changed = result
        if self.stateless and "resultType" not in result:
            # The servers speak an earlier revision; the client's says every result has it.
            changed = {**result, "resultType": "complete"}
        if self.rpc_method == _TOOLS_LIST:
            changed = self._listed(changed)
        elif self.rpc_method == _TOOLS_CALL and result_needs(self.policies, self.redactions):
            scanned = scan_result(
                self.policies,
                changed,
                self.redactions,
                self.decisions,
                max_depth=self.runtime.mcp.max_depth,
            )
            if scanned is not changed and scanned.get("isError") and not changed.get("isError"):
                self.outcome = "blocked"
            changed = scanned
        if changed is result:
            return None
        return {**message.payload, "result": changed}

    def _listed(self, result: dict[str, Any]) -> dict[str, Any]:
        """A server's tool list as this tenant sees it: tools it may not use, or whose
        definition changed where pinning enforces, left out."""
        server, tenant = self.server, self.tenant
        assert server is not None and tenant is not None
        tools = mcp.listed(result, "tools")
        if isinstance(tools, mcp.RpcError):
            return result
        # A page decides nothing about the tools of the others (see PinBook.check).
        whole = not self.paged and not result.get("nextCursor")
        kept, changes = self.pins.check(server.name, tools, server.pinning, whole)
        self.changes.extend(changes)
        self.listed.append((server.name, {t["name"] for t in tools}))
        visible = tenant.mcp.visible(server.name, kept)
        if len(visible) == len(tools):
            return result
        return {**result, "tools": visible}
