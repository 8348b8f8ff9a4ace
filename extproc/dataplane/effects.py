"""The effects an exchange asks the ext_proc shell for, performed with their bounds and
failure modes, and what a process's streams share."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Final

import structlog

from extproc.accounting.budgets import Charge, MemoryStore, Reservation, Store, StoreError
from extproc.cache import CacheStore, MemoryCache
from extproc.capture import Rate, Sampler, Sink, worker_path
from extproc.config.runtime import Runtime
from extproc.dataplane import envoy, report, tool_capture
from extproc.dataplane.decisions import (
    RESUMED,
    Continue,
    Decision,
    Deleted,
    DeleteState,
    Effect,
    Found,
    Loaded,
    LoadState,
    Lookup,
    Pause,
    Reply,
    Reserve,
    Reserved,
    Result,
    Resumed,
    Unavailable,
)
from extproc.dataplane.exchange import Exchange
from extproc.dataplane.settling import Settler
from extproc.dataplane.tool_shell import ToolEffects
from extproc.dataplane.tools import ToolExchange
from extproc.drift import DriftMonitor
from extproc.glob import Glob
from extproc.state.store import MemoryStateStore, StateStore, StateStoreError
from extproc.state.turns import Over, Turn
from extproc.telemetry import logging as json_lines
from extproc.telemetry.metrics import Metrics

log: Final = structlog.get_logger("extproc")
# Cache writes in flight at once, per process: each holds a Redis connection for up to
# the store's timeout. (Budget settlements wait in settling.Settler's map instead.)
MAX_BACKGROUND: Final = 1024


def make_state_store(runtime: Runtime) -> StateStore:
    """The conversation state store the config names (connections open lazily)."""
    config = runtime.conversations
    if config.redis is not None:
        from extproc.state.redis_store import RedisStateStore

        redis = config.redis
        return RedisStateStore(
            redis.url,
            prefix=redis.key_prefix,
            timeout=redis.timeout,
            bounds=config.bounds,
            password_env=redis.password_env,
        )
    return MemoryStateStore(
        config.bounds, max_total_bytes=config.max_total_bytes, max_entries=config.max_entries
    )


def make_store(runtime: Runtime) -> Store:
    """The budget store the config names (connections open lazily)."""
    config = runtime.store.redis
    if config is not None:
        from extproc.accounting.redis_store import RedisStore

        return RedisStore(
            config.url,
            prefix=config.key_prefix,
            timeout=config.timeout,
            password_env=config.password_env,
        )
    return MemoryStore()


class Effects:
    """What a process's streams share, and the effects their exchanges ask for (each
    returned as a value): budget reservations and settlements, cache lookups and writes;
    at an exchange's end its capture and log records and its metrics. The drain waits for
    what streams leave behind."""

    def __init__(
        self, runtime: Runtime, metrics: Metrics, store: Store | None = None, worker: int = 0
    ) -> None:
        self.runtime = runtime
        self.metrics = metrics
        self.store = store if store is not None else MemoryStore()
        self.active = 0  # ext_proc streams in progress
        # The per-attempt processor's phase timers, by phase.
        self.timers_upstream = {
            name.removeprefix("upstream_"): timer
            for name, timer in metrics.phase.items()
            if name.startswith("upstream_")
        }
        self.idle = asyncio.Event()  # set while no stream is in progress
        self.idle.set()
        drift_config = runtime.schema_drift
        self.drift = (
            None
            if drift_config.disabled
            else DriftMonitor(drift_config.learning_responses, drift_config.check_every)
        )
        cache_config = runtime.cache
        self.cache_ttl = cache_config.ttl
        self.cache: CacheStore = MemoryCache(cache_config.max_bytes)
        if cache_config.redis is not None:
            from extproc.accounting.redis_store import RedisCache

            redis_config = cache_config.redis
            self.cache = RedisCache(
                redis_config.url,
                prefix=redis_config.key_prefix,
                timeout=redis_config.timeout,
                password_env=redis_config.password_env,
            )
        self.state = make_state_store(runtime)
        capture = runtime.capture
        self.sampler: Sampler | None = None
        self.sink: Sink | None = None
        if capture.path:
            rules = [
                Rate(
                    tuple(Glob(m) for m in rate.models),
                    frozenset(rate.tenants),
                    rate.rate,
                    tuple(Glob(s) for s in rate.mcp_servers),
                )
                for rate in capture.rates
            ]
            self.sampler = Sampler(capture.sample_rate, rules)
            self.sink = Sink(
                worker_path(capture.path, worker),
                capture.max_file_bytes,
                capture.max_files,
            )
        self.tools = ToolEffects(  # MCP requests'
            runtime, metrics, self.store, self.drift, self.sampler
        )
        self.capture_failing: str | None = None  # the cause of the last write's failure
        # Budget adjustments on their way to a store that can fail (the in-process one
        # cannot: it adjusts at once).
        self.settler: Settler | None = None
        if not isinstance(self.store, MemoryStore):
            pending = metrics.budget_settlements_pending.set
            self.settler = Settler(self.store, self._settle_failed, pending)
        # Reservations still being answered for streams that are gone (each for at most
        # the store's timeout), and cache writes: they outlive their streams.
        self.reserving: set[asyncio.Future[int]] = set()
        self.background: set[asyncio.Future[Any]] = set()

    def apply(self, runtime: Runtime) -> None:
        """A reloaded config, for exchanges that start from now on."""
        self.runtime = runtime
        self.tools.apply(runtime)

    def finished(self, exchange: Exchange, failed: bool) -> None:
        """The exchange is over: settle its budgets, store its answer, write its capture
        and log records, and count it."""
        charges = exchange.finish()
        if charges:
            self._settle(charges)
        entry = exchange.plan.cache_key if exchange.plan is not None else None
        value = exchange.cache_value
        if (
            entry is not None
            and value is not None
            and not self._background(self._store(entry, value))
        ):
            log.warning("cache_store_failed", operation="set", error="too many in flight")
        record = report.record(exchange)
        if failed:
            record["status"] = 500
            record["error"] = "internal_error"
        if self.drift is not None and (sample := report.drift_sample(exchange)) is not None:
            for change in self.drift.observe(*sample):
                self.metrics.schema_drift.labels(
                    change.backend, change.endpoint, change.change
                ).inc()
                log.warning(
                    "schema_drift",
                    backend=change.backend,
                    endpoint=change.endpoint,
                    change=change.change,
                    path=change.path,
                )
        observation = report.observation(exchange, self.metrics.tenant_labels)
        if observation is not None:
            currency = self.runtime.prices.currency if self.runtime.prices else ""
            self.metrics.observe(observation, currency)
        routed = exchange.routed
        model = routed.model.name if routed else ""
        backend = str(record.get("backend", ""))
        self.metrics.request(model, backend, str(record["status"] or "none"))
        conversation = record.get("conversation")
        if isinstance(conversation, dict):
            items = self.metrics.conversation_items
            items.labels("recalled").observe(conversation["recalled"])
            items.labels("given").observe(conversation["items"] - conversation["recalled"])
        for key in exchange.decisions.counts:
            self.metrics.policy_decisions.labels(*key).inc()
        json_lines.info("exchange", record)
        if exchange.plan is not None and exchange.plan.dropped_fields:
            # Fields the target API has no place for (names only, never values).
            log.debug(
                "translation_dropped_fields",
                request_id=exchange.line.request_id,
                fields=list(exchange.plan.dropped_fields),
            )
        if self.sink is not None:
            captured = report.capture_record(exchange, record, self.runtime.capture.max_body_bytes)
            if captured is not None:
                self._capture(self.sink, captured)

    def tool_finished(self, tool: ToolExchange, failed: bool) -> None:
        """An MCP request is over: its audit record, metrics and capture record."""
        record = self.tools.finished(tool, failed)
        if tool.kept is not None and self.sink is not None:
            self._capture(self.sink, tool_capture.capture_record(tool, record, time.time()))

    def _capture(self, sink: Sink, record: dict[str, Any]) -> None:
        """Write a captured exchange; a failure is counted, and logged when its cause
        changes (not once per exchange while a disk stays full)."""
        cause = sink.write(record)
        if cause is not None:
            self.metrics.capture_errors.labels(cause).inc()
        if cause == self.capture_failing:
            return
        if cause is not None:
            log.error("capture_failed", cause=cause, path=str(sink.path))
        else:
            log.info("capture_recovered", path=str(sink.path))
        self.capture_failing = cause

    def request_body(self, exchange: Exchange, body: bytes) -> bytes | Coroutine[Any, Any, bytes]:
        """The reply to the request body: at once, or once the effects the exchange asks
        for (a cache lookup, a budget reservation, a conversation's turn) are performed."""
        return self.decided(exchange, exchange.request_body(body), envoy.request_body_reply)

    def decided(
        self,
        exchange: Exchange,
        step: Decision | Effect,
        reply: Callable[[Decision], bytes],
    ) -> bytes | Coroutine[Any, Any, bytes]:
        """The reply to a phase whose exchange decided (`step`), or asked for effects: those
        of the in-process stores performed at once (nothing there waits, and a task per
        request would cost more than the work), any other awaited."""
        while not isinstance(step, (Continue, Reply)):
            result = self._at_once(step)
            if result is None:
                break
            step = exchange.resolve(result)
            self._resolved(exchange, result)
        if not isinstance(step, (Continue, Reply)):
            return self._perform(exchange, step, reply)
        return reply(step)

    async def _perform(
        self,
        exchange: Exchange,
        effect: Effect,
        reply: Callable[[Decision], bytes],
    ) -> bytes:
        """Perform each effect the exchange asks for and feed it the result, until it
        decides."""
        while True:
            result = self._at_once(effect)
            if result is not None:
                pass
            elif isinstance(effect, Lookup):
                result = await self._lookup(effect)
            elif isinstance(effect, Reserve):
                result = await self._reserve(effect)
            elif isinstance(effect, Pause):
                await asyncio.sleep(0)
                result = RESUMED
            else:
                result = await self._state(effect)
            step = exchange.resolve(result)
            self._resolved(exchange, result)
            if isinstance(step, (Continue, Reply)):
                return reply(step)
            effect = step

    def _at_once(self, effect: Effect) -> Result | None:
        """The result of an effect an in-process store answers without waiting (None: it
        must be awaited)."""
        state = self.state
        if isinstance(effect, Reserve) and isinstance(self.store, MemoryStore):
            return self._reserved(effect, self.store.reserve_now(effect.reservation.charges))
        if isinstance(effect, Lookup) and isinstance(self.cache, MemoryCache):
            return self._found(self.cache.get_now(effect.key))
        if isinstance(state, MemoryStateStore):
            if isinstance(effect, LoadState):
                return Loaded(state.load_now(effect.tenant, effect.response_id))
            if isinstance(effect, DeleteState):
                return Deleted(state.delete_now(effect.tenant, effect.response_id))
        return None

    def _resolved(self, exchange: Exchange, result: Result) -> None:
        if isinstance(result, Found) and result.stored is not None and exchange.outcome:
            self.metrics.cache_tokens_saved.inc(exchange.outcome.usage.total_tokens)
        # A refusal the exchange answered with a 429, once: after the store's answer, or
        # after the pause that ended an exact count (a first, rough reservation refused is
        # counted exactly and may be asked again).
        elif isinstance(result, (Reserved, Resumed)) and exchange.refused is not None:
            self.metrics.budget_refusals.labels(exchange.refused.budget).inc()

    async def _state(self, effect: LoadState | DeleteState) -> Loaded | Deleted | Unavailable:
        operation = "load" if isinstance(effect, LoadState) else "delete"
        try:
            if isinstance(effect, LoadState):
                return Loaded(await self.state.load(effect.tenant, effect.response_id))
            return Deleted(await self.state.delete(effect.tenant, effect.response_id))
        except StateStoreError as error:
            self.metrics.conversation_store_errors.labels(operation).inc()
            log.warning("conversation_store_failed", operation=operation, error=str(error))
            return Unavailable()

    def keep_turn(self, exchange: Exchange, reply: bytes) -> bytes | Coroutine[Any, Any, bytes]:
        """The answer's turn kept before its last chunk goes: the client's next request,
        which names it, finds it on any replica."""
        turn, exchange.turn = exchange.turn, None
        assert turn is not None and exchange.arrival is not None
        tenant = exchange.arrival.tenant.name
        if isinstance(self.state, MemoryStateStore):
            self._kept(self.state.save_now(tenant, turn))
            return reply
        return self._keep_awaited(tenant, turn, reply)

    async def _keep_awaited(self, tenant: str, turn: Turn, reply: bytes) -> bytes:
        try:
            over = await self.state.save(tenant, turn)
        except StateStoreError as error:
            self.metrics.conversation_store_errors.labels("save").inc()
            log.warning("conversation_store_failed", operation="save", error=str(error))
            return reply
        self._kept(over)
        return reply

    def _kept(self, over: Over | None) -> None:
        self.metrics.conversation_turns.labels(over.value if over else "kept").inc()

    async def _lookup(self, lookup: Lookup) -> Found:
        try:
            stored = await self.cache.get(lookup.key)
        except StoreError as error:
            log.warning("cache_store_failed", operation="get", error=str(error))
            stored = None
        return self._found(stored)

    def _found(self, stored: bytes | None) -> Found:
        self.metrics.cache_lookups.labels("miss" if stored is None else "hit").inc()
        return Found(stored)

    async def _store(self, key: str, value: bytes) -> None:
        try:
            await self.cache.set(key, value, self.cache_ttl)
        except StoreError as error:
            log.warning("cache_store_failed", operation="set", error=str(error))
            return
        self.metrics.cache_stored.inc()
        if isinstance(self.cache, MemoryCache):
            self.metrics.cache_bytes.set(self.cache.bytes)

    async def _reserve(self, reserve: Reserve) -> Reserved | Unavailable:
        try:
            refused = await self._reserve_shielded(reserve.reservation)
        except StoreError as error:
            self.metrics.budget_store_errors.labels("reserve").inc()
            log.warning("budget_store_failed", operation="reserve", error=str(error))
            return Unavailable()
        return self._reserved(reserve, refused)

    def _reserved(self, reserve: Reserve, refused: int) -> Reserved:
        """The store's answer (the index of the charge it refused, or -1) as a result."""
        charges = reserve.reservation.charges
        return Reserved(charges[refused] if refused >= 0 else None)

    async def _reserve_shielded(self, reservation: Reservation) -> int:
        """The store's answer even when the stream is cancelled meanwhile (the client left,
        Envoy's message timeout): a reservation it applied would otherwise stay counted
        until its window ends. The task and the shield cost some CPU per reservation
        (docs/benchmarks.md)."""
        reserving = asyncio.ensure_future(self.store.reserve(reservation.charges))
        try:
            return await asyncio.shield(reserving)
        except asyncio.CancelledError:
            self.reserving.add(reserving)  # the drain waits for it too
            reserving.add_done_callback(self.reserving.discard)
            reserving.add_done_callback(lambda done: self._abandoned(done, reservation))
            raise

    def _abandoned(self, reserving: asyncio.Future[int], reservation: Reservation) -> None:
        """The store answered a reservation whose stream is gone: nothing was sent to a
        provider, so what it applied is taken back whole."""
        if reserving.cancelled():
            return
        error = reserving.exception()
        if error is not None:
            # Not known to be applied (the store's timeout): nothing to take back.
            self.metrics.budget_store_errors.labels("reserve").inc()
            log.warning("budget_store_failed", operation="reserve", error=str(error))
            return
        if reserving.result() < 0:
            self._settle(reservation.settle(0, 0, time.time()))

    def _settle(self, charges: Sequence[Charge]) -> None:
        if self.settler is not None:
            self.settler.add(charges)  # written by the settler's task, however the store is
        elif isinstance(self.store, MemoryStore):
            self.store.adjust_now(charges)

    def _settle_failed(self, error: StoreError, waiting: int) -> None:
        self.metrics.budget_store_errors.labels("settle").inc()
        log.warning("budget_store_failed", operation="settle", error=str(error), waiting=waiting)

    def _background(self, work: Coroutine[Any, Any, None]) -> bool:
        """Cache writes that outlive their stream; the drain waits for them. At most
        MAX_BACKGROUND at once: a store that stalls holds each one up to its timeout, and
        a flood of streams must not make them pile up. False when `work` was dropped."""
        if len(self.background) >= MAX_BACKGROUND:
            work.close()
            return False
        task = asyncio.get_running_loop().create_task(work)
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        return True

    async def drain(self, grace: float) -> None:
        """Wait, up to `grace` seconds, for what streams left behind: reservations still
        answering (and their take-backs), budget adjustments, cache writes."""
        deadline = time.monotonic() + grace
        if self.reserving:
            await asyncio.wait(set(self.reserving), timeout=grace)
        if self.background:
            await asyncio.wait(set(self.background), timeout=max(deadline - time.monotonic(), 0))
        ending = self.tools.ending  # upstream MCP sessions being ended
        if ending:
            await asyncio.wait(set(ending), timeout=max(deadline - time.monotonic(), 0))
        settler = self.settler
        if settler is not None and not settler.idle.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(settler.idle.wait(), max(deadline - time.monotonic(), 0))
            if settler.task is not None:  # the store is still failing: stop trying
                settler.task.cancel()
                log.error("budget_settlements_lost", adjustments=len(settler))
