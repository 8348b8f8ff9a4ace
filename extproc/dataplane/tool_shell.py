"""What MCP requests share in a process, and the effects the virtual server's flows ask for:
the session store, the servers' lists, tool definitions as first seen, the client that
fetches lists and opens upstream sessions."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

from extproc.accounting.budgets import MemoryStore, Store, StoreError
from extproc.capture import Kept, Sampler
from extproc.config.runtime import McpServer, Runtime
from extproc.dataplane import flows, tool_report
from extproc.dataplane.decisions import Continue, Decision, Reply
from extproc.dataplane.mcp_client import McpClient, UpstreamError
from extproc.dataplane.tools import PREFIX, ToolExchange
from extproc.dataplane.virtual import VirtualExchange
from extproc.drift import DriftMonitor
from extproc.state.sessions import (
    MemorySessionStore,
    Session,
    SessionStore,
    SessionStoreError,
    Upstream,
)
from extproc.telemetry.metrics import Metrics
from extproc.tools.catalog import LISTS, ListCache
from extproc.tools.pins import PinBook

log = structlog.get_logger("extproc")

# Upstream sessions being ended after their client's ended, at once (past it, they are
# left to expire on their servers).
_MAX_ENDING = 256
# The share of Envoy's wait for a reply that a flow may spend on its servers: a slow
# server is left out of a list rather than failing the request at Envoy's deadline.
_DEADLINE_SHARE = 0.75
_MAX_REPORTED = 1024
# The endpoint the drift watch files servers' tool lists under.
TOOL_LIST = "mcp:tools/list"


def make_session_store(runtime: Runtime) -> SessionStore:
    settings = runtime.mcp
    if settings.redis is None:
        return MemorySessionStore(settings.session_ttl, settings.max_sessions)
    from extproc.state.sessions import RedisSessionStore

    redis = settings.redis
    return RedisSessionStore(
        redis.url,
        prefix=redis.key_prefix,
        timeout=redis.timeout,
        ttl=settings.session_ttl,
        password_env=redis.password_env,
    )


class ToolEffects:
    def __init__(
        self,
        runtime: Runtime,
        metrics: Metrics,
        counters: Store,
        drift: DriftMonitor | None,
        sampler: Sampler | None = None,
    ) -> None:
        self.runtime = runtime
        self.metrics = metrics
        self.drift = drift  # the schema-drift watch: servers' tool lists too
        self.counters = counters  # the budget store: tool rates count calls in it
        self.sampler = sampler  # traffic capture's, when the config captures
        self.pins = PinBook({s.name: s.pins for s in runtime.mcp_servers.values()})
        self.lists = ListCache(runtime.mcp.list_ttl)
        self.sessions = make_session_store(runtime)
        self.client = McpClient(runtime.mcp)
        self.ending: set[asyncio.Task[None]] = set()
        self.collided: set[tuple[str, str]] = set()  # name collisions reported

    def apply(self, runtime: Runtime) -> None:
        """A reloaded config: its pins; what was learned and fetched stays."""
        self.runtime = runtime
        self.pins.repin({s.name: s.pins for s in runtime.mcp_servers.values()})

    def exchange(self, path: str) -> ToolExchange:
        """The exchange of a request on an MCP path: the virtual server's, or one server's."""
        kind = VirtualExchange if path == PREFIX else ToolExchange
        return kind(self.runtime, self.pins, self.lists)

    def request_body(
        self,
        tool: ToolExchange,
        raw: bytes,
        reply: Callable[[Decision], bytes],
    ) -> bytes | Coroutine[Any, Any, bytes]:
        """The reply to a POST's message; sampled for capture once decided (the server it
        goes to is known then), keeping its bytes only when it is."""
        step = tool.request_body(raw)
        sampler = self.sampler
        if sampler is None:
            return self.reply(step, reply)

        def decided(decision: Decision) -> bytes:
            # "": the virtual server answers itself (initialize, its lists, a refusal).
            server = tool.server.name if tool.server is not None else ""
            tenant = tool.tenant
            if tenant is not None and sampler.sample_mcp(server, tenant.name):
                limit = self.runtime.capture.max_body_bytes
                if isinstance(decision, Reply):
                    tool.kept = Kept(limit, raw, None, forwarded=False)
                    tool.kept.add(decision.body)
                else:
                    tool.kept = Kept(limit, raw, decision.body, forwarded=True)
            return reply(decision)

        return self.reply(step, decided)

    def reply(
        self,
        step: Decision | flows.Flow,
        reply: Callable[[Decision], bytes],
    ) -> bytes | Coroutine[Any, Any, bytes]:
        """The reply to a phase: at once when it decided, or once its flow has: the
        in-process session store's effects done at once, any other awaited."""
        if not isinstance(step, (Continue, Reply)):
            flow = step
            result: flows.Result | None = None
            try:
                while True:
                    effect = flow.send(result) if result is not None else next(flow)
                    result = self._at_once(effect)
                    if result is None:
                        return self._drive(flow, effect, reply)
            except StopIteration as stop:
                return reply(stop.value)
        return reply(step)

    async def _drive(
        self,
        flow: flows.Flow,
        effect: flows.Effect,
        reply: Callable[[Decision], bytes],
    ) -> bytes:
        # One deadline for the whole flow: its effects together answer within Envoy's wait.
        deadline = self._deadline()
        try:
            while True:
                result = self._at_once(effect) or await self._perform(effect, deadline)
                effect = flow.send(result)
        except StopIteration as stop:
            return reply(stop.value)

    def _at_once(self, effect: flows.Effect) -> flows.Result | None:
        if isinstance(effect, flows.Count):
            if isinstance(self.counters, MemoryStore):
                return flows.Counted(self.counters.reserve_now(effect.reservation.charges))
            return None
        sessions = self.sessions
        if not isinstance(sessions, MemorySessionStore):
            return None
        if isinstance(effect, flows.LoadSession):
            return flows.SessionFound(sessions.get_now(effect.session_id))
        if isinstance(effect, flows.SaveSession):
            sessions.put_now(effect.session_id, effect.session)
            return flows.Done()
        if isinstance(effect, flows.EndSession):
            sessions.delete_now(effect.session_id)
            self._end_upstream(effect.session)
            return flows.Done()
        return None

    async def _perform(self, effect: flows.Effect, deadline: float) -> flows.Result:
        if isinstance(effect, flows.Count):
            try:
                return flows.Counted(await self.counters.reserve(effect.reservation.charges))
            except StoreError as failure:
                log.error("budget_store_failed", operation="reserve", error=str(failure))
                self.metrics.budget_store_errors.labels("reserve").inc()
                return flows.Counted(None)
        if isinstance(effect, flows.Fetch):
            return await self._fetch(effect, deadline)
        if isinstance(effect, flows.Open):
            try:
                return flows.Opened(await self.client.open(effect.server, deadline))
            except UpstreamError as failure:
                return flows.Opened(None, failure.kind)
        try:
            if isinstance(effect, flows.LoadSession):
                return flows.SessionFound(await self.sessions.get(effect.session_id))
            if isinstance(effect, flows.SaveSession):
                await self.sessions.put(effect.session_id, effect.session)
                return flows.Done()
            assert isinstance(effect, flows.EndSession)
            await self.sessions.delete(effect.session_id)
            self._end_upstream(effect.session)
            return flows.Done()
        except SessionStoreError as failure:
            log.error("mcp_session_store_failed", error=str(failure))
            self.metrics.mcp_refusals.labels("", "store").inc()
            return flows.StoreDown()

    def _deadline(self) -> float:
        return asyncio.get_running_loop().time() + (
            self.runtime.service.message_timeout * _DEADLINE_SHARE
        )

    async def _fetch(self, effect: flows.Fetch, deadline: float) -> flows.Fetched:
        """Every server's list at once, each within the flow's deadline."""
        key = LISTS[effect.method][0]
        outcomes = await asyncio.gather(
            *(self._list(s, effect.session, effect.method, key, deadline) for s in effect.servers)
        )
        lists: dict[str, list[dict[str, Any]] | None] = {}
        opened: dict[str, Upstream] = {}
        failures: dict[str, str] = {}
        for server, (items, upstream, failure) in zip(effect.servers, outcomes, strict=True):
            lists[server.name] = items
            if upstream is not None and effect.session.upstream.get(server.name) != upstream:
                opened[server.name] = upstream
            if failure:
                failures[server.name] = failure
                log.warning(
                    "mcp_list_failed", server=server.name, method=effect.method, error=failure
                )
        return flows.Fetched(lists, opened, failures)

    async def _list(
        self, server: McpServer, session: Session, method: str, key: str, deadline: float
    ) -> tuple[list[dict[str, Any]] | None, Upstream | None, str]:
        upstream = session.upstream.get(server.name)
        for _ in range(2):  # once more with a new session when the server ended the old one
            try:
                if upstream is None:
                    upstream = await self.client.open(server, deadline)
                if method.partition("/")[0] not in upstream.capabilities:
                    return [], upstream, ""  # it offers none: an empty list, no request
                items = await self.client.list_all(server, upstream, method, key, deadline)
                return items, upstream, ""
            except UpstreamError as failure:
                if failure.kind != "expired":
                    return None, None, failure.kind
                upstream = None
        return None, None, "expired"

    def _end_upstream(self, session: Session) -> None:
        """End the upstream sessions behind a client's ended session, in the background."""
        for name, upstream in session.upstream.items():
            server = self.runtime.mcp_servers.get(name)
            if server is None or not upstream.session_id or len(self.ending) >= _MAX_ENDING:
                continue
            task = asyncio.get_running_loop().create_task(
                self.client.end(server, upstream, self._deadline())
            )
            self.ending.add(task)
            task.add_done_callback(self.ending.discard)

    def finished(self, tool: ToolExchange, failed: bool) -> dict[str, object]:
        """Log and count the request; its audit record."""
        record = tool_report.finished(self.metrics, tool, failed)
        if self.drift is not None and tool.listed:
            self._drifted(self.drift, tool.listed)
        for server, name in tool.collisions:
            # Once per name: the same lists are merged on every request.
            if (server, name) not in self.collided and len(self.collided) < _MAX_REPORTED:
                self.collided.add((server, name))
                log.warning("mcp_name_collision", server=server, name=name)
        if tool.expired is not None and tool.store_key:
            self._forget(tool.store_key, tool.expired)
        return record

    def _drifted(self, drift: DriftMonitor, listed: list[tuple[str, set[str]]]) -> None:
        """Servers' tools as the paths of their tool lists: one added or gone is reported
        as a provider's new or missing field is."""
        for server, names in listed:
            if not drift.wants(server, TOOL_LIST):
                continue
            for change in drift.observe(server, TOOL_LIST, {f"tool:{n}" for n in names}):
                self.metrics.schema_drift.labels(server, TOOL_LIST, change.change).inc()
                log.warning(
                    "schema_drift",
                    backend=server,
                    endpoint=TOOL_LIST,
                    change=change.change,
                    path=change.path,
                )

    def _forget(self, session_id: str, server: str) -> None:
        """A server ended its session with the gateway: the next call opens a new one."""
        sessions = self.sessions
        if isinstance(sessions, MemorySessionStore):
            found = sessions.get_now(session_id)
            if found is not None:
                sessions.put_now(session_id, found.with_upstream(server, None))
            return

        async def forget() -> None:
            try:
                found = await sessions.get(session_id)
                if found is not None:
                    await sessions.put(session_id, found.with_upstream(server, None))
            except SessionStoreError as failure:
                log.error("mcp_session_store_failed", error=str(failure))

        if len(self.ending) < _MAX_ENDING:
            task: asyncio.Task[None] = asyncio.get_running_loop().create_task(forget())
            self.ending.add(task)
            task.add_done_callback(self.ending.discard)

    async def close(self) -> None:
        await self.client.close()
        await self.sessions.close()
