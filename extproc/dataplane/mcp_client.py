"""The gateway as an MCP client of its servers, for what the virtual server asks of them
itself: opening an upstream session, and the lists it merges.

Calls go straight from the service (decision record: mcp-virtual-server). Each has a
deadline, reads at most a bounded answer (one message of `mcp.max_message_bytes`, a
stream of a few of them), and fails as `UpstreamError`, never with the server's text.
Requests to one server at a time are bounded too: a slow server holds no more than its
share of the process's connections.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import ssl
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
import orjson

from extproc.apis import mcp
from extproc.config.runtime import McpServer
from extproc.config.settings import McpSettings
from extproc.state.sessions import Upstream

# The gateway's name and version as a client, in its initialize requests.
CLIENT_INFO = {"name": "extproc", "version": "0.1.0"}
# Pages of one list read per server: a server that pages forever is cut there.
MAX_PAGES = 8
# Connections to one server at once.
PER_SERVER = 16
T = TypeVar("T")
_VISIBLE = re.compile(r"[\x21-\x7e]{1,256}")


class UpstreamError(Exception):
    """A server's call failed: `kind` is one of unavailable, timeout, bad_answer, error,
    expired (the server no longer knows the session)."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind


class McpClient:
    def __init__(self, settings: McpSettings) -> None:
        self.settings = settings
        self._http: aiohttp.ClientSession | None = None
        self._tls: dict[str, ssl.SSLContext] = {}
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._ids = 0
        # The gateway's request ids on an upstream session the client's calls share: a
        # prefix of its own, so no id of the client's is ever reused on it.
        self._id_prefix = f"extproc-{secrets.token_hex(6)}-"

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            connector = aiohttp.TCPConnector(limit=256, limit_per_host=PER_SERVER)
            self._http = aiohttp.ClientSession(
                connector=connector, auto_decompress=False, skip_auto_headers=("User-Agent",)
            )
        return self._http

    def _context(self, server: McpServer) -> ssl.SSLContext | bool:
        if not server.tls:
            return False
        context = self._tls.get(server.name)
        if context is None:
            context = ssl.create_default_context(cafile=server.ca_file)
            self._tls[server.name] = context
        return context

    def _url(self, server: McpServer) -> str:
        host = f"[{server.host}]" if ":" in server.host else server.host
        return f"{server.scheme}://{host}:{server.port}{server.base_path}"

    def _headers(self, server: McpServer, upstream: Upstream | None) -> dict[str, str]:
        headers = {
            "accept": "application/json, text/event-stream",
            "content-type": "application/json",
        }
        headers.update(server.headers)
        credential = server.credential_value()
        if credential is not None and server.credential_header is not None:
            headers[server.credential_header] = credential
        if upstream is not None:
            if upstream.session_id:
                headers[mcp.SESSION_HEADER] = upstream.session_id
            headers[mcp.PROTOCOL_VERSION_HEADER] = upstream.protocol
        return headers

    async def open(self, server: McpServer, deadline: float) -> Upstream:
        """A new session with the server: initialize, then the initialized notification."""
        params = {
            # The newest version with sessions: the gateway keeps one per server.
            "protocolVersion": mcp.SESSION_VERSIONS[-1],
            "capabilities": {},
            "clientInfo": CLIENT_INFO,
        }
        result, session_id = await self._post(server, None, "initialize", params, deadline)
        version = result.get("protocolVersion")
        if not isinstance(version, str) or version not in mcp.VERSIONS:
            raise UpstreamError("bad_answer", "unknown protocol version")
        offered = result.get("capabilities")
        capabilities = tuple(sorted(offered)) if isinstance(offered, dict) else ()
        upstream = Upstream(session_id, version, capabilities)
        await self._notify(server, upstream, "notifications/initialized", deadline)
        return upstream

    async def list_all(
        self, server: McpServer, upstream: Upstream, method: str, key: str, deadline: float
    ) -> list[dict[str, Any]]:
        """Every item of a list (tools/list, prompts/list, ...), page after page."""
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        for _ in range(MAX_PAGES):
            params = {"cursor": cursor} if cursor else {}
            result, _ = await self._post(server, upstream, method, params, deadline)
            page = mcp.listed(result, key)
            if isinstance(page, mcp.RpcError):
                raise UpstreamError("bad_answer", f"{method} without {key}")
            items.extend(page)
            following = result.get("nextCursor")
            if not isinstance(following, str) or not following:
                break
            cursor = following
        return items

    async def end(self, server: McpServer, upstream: Upstream, deadline: float) -> None:
        """Ends an upstream session (DELETE); a failure only leaves it to expire."""
        if not upstream.session_id:
            return
        try:
            slot = self._slots.setdefault(server.name, asyncio.Semaphore(PER_SERVER))
            async with (
                asyncio.timeout_at(deadline),
                slot,
                self._session().delete(
                    self._url(server),
                    headers=self._headers(server, upstream),
                    ssl=self._context(server),
                    server_hostname=server.sni if server.tls else None,
                    allow_redirects=False,
                ),
            ):
                pass
        except (aiohttp.ClientError, OSError, TimeoutError):
            pass

    async def _notify(
        self, server: McpServer, upstream: Upstream, method: str, deadline: float
    ) -> None:
        body = orjson.dumps({"jsonrpc": "2.0", "method": method})

        async def accepted(response: aiohttp.ClientResponse) -> None:
            if response.status >= 400:
                raise UpstreamError("unavailable", f"{method}: {response.status}")

        await self._exchange(server, upstream, body, deadline, accepted)

    async def _post(
        self,
        server: McpServer,
        upstream: Upstream | None,
        method: str,
        params: dict[str, Any],
        deadline: float,
    ) -> tuple[dict[str, Any], str]:
        """The result of one request, and the session id the answer carried."""
        self._ids += 1
        request_id = f"{self._id_prefix}{self._ids}"
        body = orjson.dumps(
            {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
        )

        async def answer(response: aiohttp.ClientResponse) -> tuple[mcp.Message, str]:
            if response.status == 404 and upstream is not None and upstream.session_id:
                raise UpstreamError("expired")
            if response.status != 200:
                raise UpstreamError("unavailable", f"{method}: {response.status}")
            session_id = response.headers.get(mcp.SESSION_HEADER, "")
            if session_id and not _VISIBLE.fullmatch(session_id):
                # The spec's characters (visible ASCII): anything else would be set on
                # every later call's request as it is.
                raise UpstreamError("bad_answer", "a session id of other characters")
            kind = response.headers.get("content-type", "").partition(";")[0].strip().lower()
            if kind == "application/json":
                return await self._json(response), session_id
            if kind == "text/event-stream":
                return await self._event(response, request_id), session_id
            raise UpstreamError("bad_answer", "not JSON-RPC")

        message, session_id = await self._exchange(server, upstream, body, deadline, answer)
        if message.id != request_id:
            raise UpstreamError("bad_answer", "an answer to another request")
        if message.payload.get("error") is not None:
            raise UpstreamError("error", f"{method} answered an error")
        result = message.payload.get("result")
        if not isinstance(result, dict):
            raise UpstreamError("bad_answer", "no result object")
        return result, session_id

    async def _exchange(
        self,
        server: McpServer,
        upstream: Upstream | None,
        body: bytes,
        deadline: float,
        read: Callable[[aiohttp.ClientResponse], Awaitable[T]],
    ) -> T:
        """One POST within the deadline and the server's share of connections."""
        slot = self._slots.setdefault(server.name, asyncio.Semaphore(PER_SERVER))
        try:
            async with (
                asyncio.timeout_at(deadline),
                slot,
                self._session().post(
                    self._url(server),
                    data=body,
                    headers=self._headers(server, upstream),
                    ssl=self._context(server),
                    server_hostname=server.sni if server.tls else None,
                    allow_redirects=False,
                ) as response,
            ):
                return await read(response)
        except TimeoutError:
            raise UpstreamError("timeout") from None
        except (aiohttp.ClientError, OSError) as failure:
            raise UpstreamError("unavailable", type(failure).__name__) from None

    async def _json(self, response: aiohttp.ClientResponse) -> mcp.Message:
        limit = self.settings.max_message_bytes
        data = await response.content.read(limit + 1)
        if len(data) > limit:
            raise UpstreamError("bad_answer", "answer too large")
        message = mcp.read_message(data, max_bytes=limit, max_depth=self.settings.max_depth)
        if isinstance(message, mcp.RpcError):
            raise UpstreamError("bad_answer", "not JSON-RPC")
        return message

    async def _event(self, response: aiohttp.ClientResponse, request_id: str) -> mcp.Message:
        """The answer among an SSE stream's messages (progress and the like come first)."""
        settings = self.settings
        reader = mcp.EventReader(settings.max_message_bytes, settings.max_depth)
        total = 0
        async for chunk in response.content.iter_any():
            total += len(chunk)
            if total > 4 * settings.max_message_bytes:
                raise UpstreamError("bad_answer", "answer too large")
            for _, message in reader.feed(chunk):
                if isinstance(message, mcp.RpcError):
                    raise UpstreamError("bad_answer", "not JSON-RPC")
                if message is not None and message.method is None and message.id == request_id:
                    return message
        raise UpstreamError("bad_answer", "the stream ended without an answer")

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
