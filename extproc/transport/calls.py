"""gRPC calls on HTTP/2 streams: length-prefixed messages (uncompressed only), status
trailers, and what a handler sees of a call (Context: read/write/abort, the subset of
grpc.aio's ServicerContext the service uses).

A call's received bytes stay as they came until they are consumed: a session's message
when its session takes it, a handler's when it reads. Only then is the stream's window
given back, so a call whose consumer is busy, or whose replies the peer does not read,
holds at most its window. A message larger than the window gets room for the rest from
the server's Budget (or waits for it): the largest message always fits, and the room all
streams hold together is bounded.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Final, Protocol

import structlog

from extproc.transport.frames import literal
from extproc.transport.peer import Peer
from extproc.transport.received import PREFIX, Received
from extproc.transport.stream import Stream

log: Final = structlog.get_logger("extproc.h2grpc")

# gRPC status codes used here (grpc.StatusCode values).
OK, CANCELLED, UNKNOWN, INVALID_ARGUMENT, DEADLINE_EXCEEDED, NOT_FOUND = 0, 1, 2, 3, 4, 5
RESOURCE_EXHAUSTED, UNIMPLEMENTED, INTERNAL = 8, 12, 13

# ":status: 200" is static entry 8; content-type is literal (stateless for our encoder).
RESPONSE_HEADERS: Final = b"\x88" + literal(b"content-type", b"application/grpc")
OK_TRAILERS: Final = literal(b"grpc-status", b"0")
# A status message is cut to this many bytes of UTF-8 (it may echo what the peer sent).
MAX_STATUS_MESSAGE: Final = 1024


def percent_encode(message: str) -> bytes:
    """grpc-message: printable ASCII except '%' as is, everything else %XX of UTF-8."""
    out = bytearray()
    raw = message.encode()[:MAX_STATUS_MESSAGE].decode(errors="ignore").encode()
    for byte in raw:
        if 0x20 <= byte <= 0x7E and byte != 0x25:
            out.append(byte)
        else:
            out += b"%%%02X" % byte
    return bytes(out)


def status_block(code: int, message: str, headers_sent: bool) -> bytes:
    """The header block that ends a call: trailers, or trailers-only with no reply sent."""
    if code == OK and not message:
        block = OK_TRAILERS
    else:
        block = literal(b"grpc-status", str(code).encode())
        if message:
            block += literal(b"grpc-message", percent_encode(message))
    return block if headers_sent else RESPONSE_HEADERS + block


# The reply types met that are not coroutines: `isinstance` against the abstract class runs
# Python code (ABCMeta.__instancecheck__) for every message; a session returns few types.
_PLAIN_REPLIES: Final[set[type]] = set()


def _is_coroutine(reply: object) -> bool:
    kind = type(reply)
    if kind in _PLAIN_REPLIES:
        return False
    if isinstance(reply, Coroutine):
        return True
    if len(_PLAIN_REPLIES) < 8:
        _PLAIN_REPLIES.add(kind)
    return False


class RpcError(Exception):
    """A call fails with this status (raise it in a handler); the connection carries on."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class Aborted(Exception):
    """Raised by Context.abort after the status was sent (as grpc.aio's abort does)."""


class _EndOfStream:
    def __repr__(self) -> str:
        return "h2grpc.EOF"


# What Context.read returns once the peer half-closed (grpc.aio has its own: a handler
# written for both servers checks for a message instead).
EOF: Final[Any] = _EndOfStream()


class Session(Protocol):
    """A bidirectional stream answered message by message: message() returns the reply
    (or a coroutine that gives it) and raises RpcError to end the call with a status;
    close() is called once, when the call is over in any way. Opened at the call's first
    message: a stream reset before any costs nothing."""

    def message(self, message: Any) -> Any: ...

    def close(self, failed: bool) -> None: ...


async def _no_handler(*_: Any) -> None:
    raise RuntimeError("a session method has no handler coroutine")


@dataclass(frozen=True)
class Method:
    """A handler: a bidirectional stream (handler(context)) or a unary call
    (handler(request) -> response), with its message types' parse and serialise. With a
    session factory (Method.of_session), a stream's messages are answered as their frames
    arrive instead: no coroutine wakes up for a message that is answered at once."""

    streaming: bool
    handler: Callable[..., Awaitable[Any]]
    parse: Callable[[bytes], Any]
    serialise: Callable[[Any], bytes]
    session: Callable[[Context], Session] | None = None

    @classmethod
    def of_session(
        cls,
        session: Callable[[Context], Session],
        parse: Callable[[bytes], Any],
        serialise: Callable[[Any], bytes],
    ) -> Method:
        """A bidirectional stream whose calls are each answered by session(context)."""
        return cls(True, _no_handler, parse, serialise, session)


class Context(Stream):
    """One gRPC call: what a handler reads, writes and ends it with."""

    __slots__ = (
        "_buffer",
        "_conn",
        "_drained",
        "_limit",
        "_method",
        "_parse",
        "_serialise",
        "_waiter",
        "busy",
        "done",
        "extension",
        "is_session",
        "metadata",
        "session",
        "task",
        "waiting",
    )

    def __init__(
        self,
        conn: Peer,
        stream_id: int,
        method: Method,
        metadata: tuple[tuple[str, str], ...],
    ) -> None:
        super().__init__(stream_id, conn.limits.initial_window_size, conn.initial_window)
        self._conn = conn
        self._method = method
        self._parse = method.parse
        self._serialise = method.serialise
        self.is_session = method.session is not None
        self._limit = conn.limits.max_message
        self._buffer = Received()  # received, not yet consumed
        self._waiter: asyncio.Future[None] | None = None
        self._drained: asyncio.Future[None] | None = None
        self.metadata = metadata
        self.done = False  # trailers sent (or the stream was reset)
        self.extension = 0  # room beyond the window the head message holds
        self.waiting = False  # ...or waits for
        self.task: asyncio.Task[None] | None = None
        self.session: Session | None = None
        self.busy = False  # the session's reply to a message is being awaited

    # -- what handlers use (grpc.aio's names) ------------------------------------------

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self.metadata

    async def read(self) -> Any:
        """The next message, or EOF when the peer has no more."""
        while True:
            raw = self._take()
            if raw is not None:
                try:
                    return self._parse(raw)
                except Exception:
                    raise RpcError(INVALID_ARGUMENT, "the message does not parse") from None
            if self.reset:
                return EOF
            if self.remote_closed:
                if self._buffer.size:
                    raise RpcError(INVALID_ARGUMENT, "the stream ended mid-message")
                return EOF
            self._waiter = self._conn.loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    async def write(self, message: Any) -> None:
        if self.done:
            raise asyncio.CancelledError("the stream is closed")
        payload = self._serialise(message)
        conn = self._conn
        while conn.paused is not None:
            # The peer reads slower than we write: wait until the socket drains (every
            # writer woken checks again: the first may fill it up).
            await asyncio.shield(conn.paused)
            if self.done:
                raise asyncio.CancelledError("the stream is closed")
        conn.send_message(self, payload)
        if self.pending:
            self._drained = conn.loop.create_future()
            try:
                await self._drained
            finally:
                self._drained = None

    async def abort(self, code: Any, details: str = "") -> None:
        """End the call with a status (a grpc.StatusCode or its number) and raise."""
        number = code.value[0] if hasattr(code, "value") else int(code)
        self._conn.finish(self, number, details)
        raise Aborted(details)

    # -- fed by the connection ---------------------------------------------------------

    def receive(self, data: bytes) -> None:
        buffer = self._buffer
        if (
            not buffer.size
            and self.is_session
            and not self.busy
            and not self.pending
            and self._conn.paused is None
            and len(data) >= 5
        ):
            compressed, length = PREFIX.unpack_from(data)
            size = len(data)
            if size == 5 + length and not compressed and length <= self._limit:
                # The usual case: one whole message in one frame, answered now.
                self._conn.consumed(self, size)
                self._handle(data[5:])
                return
        buffer.add(data)
        self._pump()

    def close_remote(self) -> None:
        self.remote_closed = True
        if self.is_session:
            self._continue()
        self._wake()

    def on_reset(self) -> None:
        self._stop(False)

    def flush(self) -> None:
        """Send what the windows now allow; a write or a session waiting for that goes on."""
        if self.pending:
            self._conn.send_data(self, self.pending)
        if not self.pending and not self.done:
            drained = self._drained
            if drained is not None and not drained.done():
                drained.set_result(None)
            if self.is_session:
                self._continue()

    def expire(self) -> None:
        """The message that was given room did not arrive in time."""
        self._refuse(DEADLINE_EXCEEDED, "the message did not arrive in time")

    # -- the received bytes --------------------------------------------------------------

    def _pump(self) -> None:
        """Whole messages to the session while it can take them (to a reader: woken); the
        head message checked as soon as its prefix is in, and given room to complete."""
        buffer = self._buffer
        while not self.done:
            head = buffer.prefix()
            if head is None:
                return
            compressed, length = head
            if length > self._limit:
                self._refuse(RESOURCE_EXHAUSTED, f"message of {length} bytes over {self._limit}")
                return
            if compressed:
                self._refuse(UNIMPLEMENTED, "compressed messages are not accepted")
                return
            size = 5 + length
            if buffer.size < size:
                if not self.remote_closed:
                    self._room(size - buffer.size)
                return
            if not self.is_session:
                self._wake()
                return
            if self.busy or self.pending or self._conn.paused is not None:
                return
            raw = buffer.cut(size)
            self._consumed(size)
            self._handle(raw)

    def _take(self) -> bytes | None:
        """A reader's next whole message (checked by _pump when it arrived)."""
        buffer = self._buffer
        size = buffer.whole()
        if not size:
            return None
        raw = buffer.cut(size)
        self._consumed(size)
        self._pump()
        return raw

    def _consumed(self, size: int) -> None:
        conn = self._conn
        if self.extension:
            size -= self.extension  # that room goes back to the budget, not the window
            self.extension = 0
            conn.server.budget.drop(self, conn.server.now)
        conn.consumed(self, size)

    def _room(self, missing: int) -> None:
        """The head message lacks `missing` bytes: let them come."""
        if missing <= self.recv_window or self.extension or self.waiting:
            return
        beyond = missing - self.recv_window - self.unacked
        conn = self._conn
        if beyond <= 0:
            conn.give_back(self)  # what was consumed suffices; return it now
        elif conn.server.budget.ask(self, beyond, conn.server.now):
            self._admitted(beyond)
        else:
            self.waiting = True

    def _admitted(self, amount: int) -> None:
        self.waiting = False
        self.extension = amount
        self._conn.give_back(self, amount)

    def release(self) -> None:
        """The call is over: what it held is dropped."""
        self._buffer.clear()
        if self.extension or self.waiting:
            self.extension = 0
            self.waiting = False
            self._conn.server.budget.drop(self, self._conn.server.now)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- a session's stream ---------------------------------------------------------------

    def _handle(self, raw: bytes) -> None:
        if self.done:
            return
        try:
            message = self._parse(raw)
        except Exception:
            self._refuse(INVALID_ARGUMENT, "the message does not parse")
            return
        session = self.session
        if session is None:
            try:
                session = self.session = self._method.session(self)  # type: ignore[misc]
            except Exception:
                log.exception("grpc_handler_failed")
                self._fail(UNKNOWN, "internal error")
                return
        try:
            reply = session.message(message)
        except Exception as error:
            self._failed(error)
            return
        if _is_coroutine(reply):
            self.busy = True
            self.task = self._conn.loop.create_task(self._later(reply))
            return
        self._reply(reply)

    async def _later(self, reply: Coroutine[Any, Any, Any]) -> None:
        try:
            answer = await reply
        except Exception as error:
            self.task = None
            self._failed(error)
            return
        self.busy = False
        self.task = None
        if self.done:
            return
        self._reply(answer)
        self._continue()

    def _reply(self, reply: Any) -> None:
        payload = self._serialise(reply)
        self._conn.send_message(self, payload)

    def _continue(self) -> None:
        """Messages that came while a reply was awaited or the peer was not reading (their
        replies wait, as a handler's write does); the end, once all are answered."""
        self._pump()
        if not self.remote_closed or self.busy or self.done:
            return
        buffer = self._buffer
        if not buffer.size:
            self._conn.finish(self, OK, "")
            self._close_session(False)
        elif not buffer.whole():
            self._refuse(INVALID_ARGUMENT, "the stream ended mid-message")

    def _failed(self, error: Exception) -> None:
        """The session raised (called in its except block): the call ends with the status
        an RpcError names, or UNKNOWN for anything else (logged)."""
        if isinstance(error, RpcError):
            self._fail(error.code, str(error))
        else:
            log.exception("grpc_handler_failed")
            self._fail(UNKNOWN, "internal error")

    def _refuse(self, code: int, message: str) -> None:
        """What the peer sent breaks gRPC's rules (or ours): logged, the call ends."""
        log.warning("grpc_stream_failed", code=code, error=message)
        self._fail(code, message)

    def _fail(self, code: int, message: str) -> None:
        """The call ends with this status, its session failed, its handler cancelled."""
        self._conn.finish(self, code, message)
        self._stop(True)

    def _stop(self, failed: bool) -> None:
        self.reset = self.done = True
        self.release()
        self._close_session(failed)
        self._wake()
        if self._drained is not None and not self._drained.done():
            self._drained.set_exception(asyncio.CancelledError())
        if self.task is not None and not self.task.done():
            self.task.cancel()  # as grpc.aio cancels the handler of a cancelled call

    def _close_session(self, failed: bool) -> None:
        session, self.session = self.session, None
        if session is not None:
            try:
                session.close(failed)
            except Exception:
                log.exception("grpc_handler_failed")
