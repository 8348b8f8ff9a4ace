"""One ext_proc stream: each message admitted in the phases' order, answered by the
exchange (or, on the per-attempt processor, the attempt) and timed; the replies to the
phases a stream was not configured to need."""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Final

import structlog

from extproc import names, transport
from extproc.dataplane import envoy, incoming
from extproc.dataplane.attempt import Attempt
from extproc.dataplane.effects import Effects
from extproc.dataplane.exchange import Exchange
from extproc.dataplane.incoming import Incoming
from extproc.dataplane.phases import PhaseOrder
from extproc.dataplane.tool_shell import ToolEffects
from extproc.dataplane.tools import ToolExchange, is_mcp_path
from extproc.telemetry.metrics import Tally

if TYPE_CHECKING:
    import grpc

log: Final = structlog.get_logger("extproc")
# The phases' timer, read as a C variable (time.perf_counter is an attribute read per message).
_clock: Final = time.perf_counter


class StreamFailed(transport.RpcError):
    """The stream ends with this gRPC status (Envoy then answers the client itself)."""


def _protocol_violation(message: str) -> StreamFailed:
    """The stream does not follow the ext_proc protocol (phases out of order)."""
    return StreamFailed(transport.INVALID_ARGUMENT, message)


def _phase_failed() -> StreamFailed:
    """A phase handler raised (logged): Envoy gets a gRPC error and answers 500, never a
    hang."""
    return StreamFailed(transport.INTERNAL, "internal error")


def _is_upstream(context: grpc.aio.ServicerContext) -> bool:
    for key, value in context.invocation_metadata() or ():
        if key == names.ROLE_METADATA and value == names.ROLE_UPSTREAM:
            return True
    return False


class Stream:
    """One ext_proc stream: each message admitted in the phases' order, answered by the
    exchange (or, on the per-attempt processor, the attempt), and timed. message() raises
    StreamFailed (logged) when the stream must end with an error; close() ends it."""

    __slots__ = (
        "chunk_times",
        "closed",
        "describe",
        "effects",
        "exchange",
        "phases",
        "reply_to",
        "timers",
        "tool",
    )

    def __init__(
        self, effects: Effects, context: grpc.aio.ServicerContext | transport.Context
    ) -> None:
        self.effects = effects
        self.phases = PhaseOrder()
        self.closed = False
        # The response_body timer's observations for chunks taking the short way: added
        # to it when the stream ends.
        self.chunk_times: Tally | None = None
        if not effects.active:
            effects.idle.clear()
        effects.active += 1
        effects.metrics.streams.inc()
        self.exchange: Exchange | None = None
        self.tool: ToolExchange | None = None  # an MCP request's, in place of the exchange
        self.reply_to: Callable[
            [str, Incoming],
            bytes | Coroutine[Any, Any, bytes],
        ]
        if _is_upstream(context):
            attempt = Attempt(effects.runtime)
            self.reply_to = lambda kind, message: _attempt_reply(attempt, kind, message)
            self.timers = effects.timers_upstream
            self.describe: Callable[[], dict[str, object]] = lambda: {"role": "upstream"}
        else:
            exchange = Exchange(effects.runtime, drift=effects.drift, capture=effects.sampler)
            self.exchange = exchange
            self.reply_to = self._first
            self.timers = effects.metrics.phase
            self.describe = lambda: {"request_id": exchange.line.request_id}

    def _first(self, kind: str, message: Incoming) -> bytes | Coroutine[Any, Any, bytes]:
        """The request headers say what the stream is: an MCP request's, or the LLM
        exchange's; the rest of its messages go to that one."""
        effects, exchange = self.effects, self.exchange
        assert exchange is not None
        path = ""
        if effects.runtime.mcp_servers and kind == "request_headers":
            # Only a gateway that fronts MCP servers has two kinds of stream to tell apart.
            path = message.headers.get(":path", "").partition("?")[0]
        if path and is_mcp_path(path):
            shell = effects.tools
            tool = self.tool = shell.exchange(path)
            self.exchange = None
            self.reply_to = lambda kind, message: _tool_reply(shell, tool, kind, message)
            self.describe = lambda: {"request_id": tool.request_id}
        else:
            self.reply_to = lambda kind, message: _exchange_reply(effects, exchange, kind, message)
        return self.reply_to(kind, message)

    def message(self, request: Incoming) -> bytes | Coroutine[Any, Any, bytes]:
        """The reply to one message, as bytes for the wire, or a coroutine that gives it
        (a store to ask)."""
        started = _clock()
        kind = request.kind
        if kind == "response_body":
            exchange = self.exchange
            if (
                exchange is not None
                and exchange.streamed_response
                and not request.end_of_stream
                and self.phases.chunk()
            ):
                # The message a stream carries most: the short way, same checks.
                try:
                    encoded = envoy.chunk_reply(exchange.response_chunk(request.body))
                except Exception:
                    log.exception("phase_failed", phase=kind, **self.describe())
                    raise _phase_failed() from None
                tally = self.chunk_times
                if tally is None:
                    tally = self.chunk_times = Tally(self.timers["response_body"])
                tally.observe(_clock() - started)
                return encoded
        if not self.phases.admit(kind):
            log.warning("phase_out_of_order", phase=kind, **self.describe())
            raise _protocol_violation(f"ext_proc phase {kind} out of order")
        assert kind is not None
        try:
            reply = self.reply_to(kind, request)
        except Exception:
            log.exception("phase_failed", phase=kind, **self.describe())
            raise _phase_failed() from None
        if isinstance(reply, bytes):
            self._answered(kind, request, reply, started)
            return reply
        return self._awaited(kind, request, reply, started)

    async def _awaited(
        self,
        kind: str,
        request: Incoming,
        reply: Coroutine[Any, Any, bytes],
        started: float,
    ) -> bytes:
        try:
            answer = await reply
        except Exception:
            log.exception("phase_failed", phase=kind, **self.describe())
            raise _phase_failed() from None
        self._answered(kind, request, answer, started)
        return answer

    def _answered(
        self,
        kind: str,
        request: Incoming,
        reply: bytes,
        started: float,
    ) -> None:
        self.phases.done(request.end_of_stream, envoy.is_immediate(reply))
        timer = self.timers.get(kind)
        if timer is not None:
            timer.observe(_clock() - started)

    def close(self, failed: bool) -> None:
        """The stream is over (answered, failed, or cancelled by Envoy); once."""
        if self.closed:
            return
        self.closed = True
        effects = self.effects
        if self.chunk_times is not None:
            self.chunk_times.add_to(self.timers["response_body"])
        try:
            if self.exchange is not None:
                effects.finished(self.exchange, failed)
            elif self.tool is not None:
                effects.tool_finished(self.tool, failed)
        finally:
            effects.active -= 1
            if not effects.active:
                effects.idle.set()
            effects.metrics.streams.dec()


def _exchange_reply(
    effects: Effects, exchange: Exchange, kind: str, message: Incoming
) -> bytes | Coroutine[Any, Any, bytes]:
    if kind == "request_body":
        return effects.request_body(exchange, message.body)
    if kind == "request_headers":
        step = exchange.request_headers(message.headers, message.end_of_stream)
        return effects.decided(exchange, step, envoy.request_headers_reply)
    if kind == "response_headers":
        return envoy.response_headers_reply(exchange.response_headers(message.headers))
    if kind == "response_body":
        reply = envoy.response_body_reply(
            exchange.response_body(message.body, message.end_of_stream)
        )
        if exchange.turn is not None:
            return effects.keep_turn(exchange, reply)
        return reply
    return envoy.passthrough(kind)


def _tool_reply(
    shell: ToolEffects, tool: ToolExchange, kind: str, message: Incoming
) -> bytes | Coroutine[Any, Any, bytes]:
    if kind == "request_headers":
        step = tool.request_headers(message.headers, message.end_of_stream)
        return shell.reply(step, envoy.request_headers_reply)
    if kind == "request_body":
        return shell.request_body(tool, message.body, envoy.request_body_reply)
    if kind == "response_headers":
        return envoy.response_headers_reply(tool.response_headers(message.headers))
    if kind == "response_body":
        return envoy.response_body_reply(tool.response_body(message.body, message.end_of_stream))
    return envoy.passthrough(kind)


def _attempt_reply(attempt: Attempt, kind: str, message: Incoming) -> bytes:
    if kind == "request_headers":
        decision = attempt.request_headers(
            message.headers,
            incoming.exchange_metadata(message),
            incoming.host_backend(message),
        )
        return envoy.request_headers_reply(decision)
    if kind == "request_body":
        return envoy.request_body_reply(attempt.request_body(message.body))
    return envoy.passthrough(kind)
