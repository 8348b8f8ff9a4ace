"""The asyncio driver: sockets, the loop's turns and the clock around H2Connection.

A message arrives in data_received, its stream's session answers it there, and the reply
leaves with one transport.write when data_received returns, with no thread or coroutine
in between. The driver also stops reading from a peer that does not read (the transport
above its high-water mark) or whose header blocks used up a turn, and runs one timer per
server for the handshake, idle and message timeouts and the rapid-reset bucket.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, cast

import structlog

from extproc.transport.budget import Budget
from extproc.transport.calls import (
    CANCELLED,
    EOF,
    INTERNAL,
    OK,
    RESPONSE_HEADERS,
    UNIMPLEMENTED,
    UNKNOWN,
    Aborted,
    Context,
    Method,
    RpcError,
    status_block,
)
from extproc.transport.frames import (
    CANCEL,
    END_HEADERS,
    ENHANCE_YOUR_CALM,
    HEADERS,
    NO_ERROR,
    PROTOCOL_ERROR,
    frame,
    goaway,
    header_frames,
    rst_stream,
)
from extproc.transport.h2 import H2Connection
from extproc.transport.headers import Request
from extproc.transport.limits import Limits
from extproc.transport.received import PREFIX
from extproc.transport.stream import Stream

if TYPE_CHECKING:
    from ssl import SSLContext

log: Final = structlog.get_logger("extproc.h2grpc")

# Bytes one read may bring: one buffer per server, which every read lands in (see
# Connection.get_buffer).
READ_SIZE: Final = 64 * 1024
# Frames queued for the end of the loop turn beyond this many bytes are sent at once.
_SEND_NOW: Final = 64 * 1024
# Seconds a connection that ended reads (and drops) what the peer still sends.
_LINGER: Final = 1.0


class Connection(H2Connection, asyncio.BufferedProtocol):
    def __init__(self, server: Server) -> None:
        super().__init__(server.limits)
        self.server = server
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        # Frames written during one turn of the loop leave in one transport.write (one
        # send call for the replies of every stream that ran in that turn).
        self.outgoing: list[bytes | memoryview] = []
        self.outgoing_bytes = 0
        # Inside data_received: what its frames' handlers write leaves when it returns.
        self.receiving = False
        # Set while the transport's buffer is above its high-water mark.
        self.paused: asyncio.Future[None] | None = None
        self.reading = True
        self.gone = False  # the transport is closed
        self.opened = self.idle_since = self.loop.time()

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport: asyncio's, or uvloop's (which does not subclass it).
        self.transport = cast(asyncio.Transport, transport)
        # Over TLS this comes once the handshake is done: the peer's certificate is known.
        admit = self.server.admit
        if admit is not None and not admit(transport):
            self.closed = self.gone = True
            self.transport.abort()  # at once: no TLS shutdown to wait for
            return
        if len(self.server.connections) >= self.limits.max_connections:
            # Closed at once: lingering would hold a descriptor outside the count.
            self.transport.write(self.preamble() + goaway(0, ENHANCE_YOUR_CALM, b"busy"))
            self.transport.close()
            self.closed = self.gone = True
            return
        self.server.connections.add(self)
        self.transport.set_write_buffer_limits(high=self.limits.write_buffer)
        self.transport.write(self.preamble())

    def pause_writing(self) -> None:
        if self.paused is None:
            self.paused = self.loop.create_future()
            self._update_reading()

    def resume_writing(self) -> None:
        if self._unpause():
            self._update_reading()
            for stream in list(self.streams.values()):  # at most max_concurrent_streams
                if isinstance(stream, Context) and stream.is_session:
                    stream.flush()  # its messages that waited for the peer to read

    def _unpause(self) -> bool:
        paused, self.paused = self.paused, None
        if paused is not None and not paused.done():
            paused.set_result(None)
        return paused is not None

    def connection_lost(self, exc: Exception | None) -> None:
        self.gone = self.closed = True
        self._unpause()
        self.server.connections.discard(self)
        streams = list(self.streams.values())
        self.streams.clear()
        self.blocked.clear()
        for stream in streams:
            stream.on_reset()
        self.server.changed()

    def get_buffer(self, sizehint: int) -> memoryview:
        # Reads land in the server's buffer and are copied out at once: get_buffer and
        # buffer_updated run back to back on the loop's thread. One buffer per connection
        # would hold 64 KiB for each idle one; asyncio's own allocates 256 KiB per read.
        return self.server.read_view

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(bytes(self.server.read_view[:nbytes]))

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self.receiving = True
        try:
            self.receive(data)
        finally:
            self.receiving = False
            # Replies of sessions answered at once: sent now, not a loop turn later.
            if self.outgoing:
                self.send_buffered()
        if self.suspended and not self.closed:
            # Header blocks used up this turn: the rest waits for the next one.
            self._update_reading()
            self.loop.call_soon(self._resume)

    def _resume(self) -> None:
        self.suspended = False
        self._update_reading()
        self.data_received(b"")

    def _update_reading(self) -> None:
        """Read while the peer reads our replies and no turn is left over (and, once the
        connection is over, to drop what still comes)."""
        want = self.closed or (self.paused is None and not self.suspended)
        transport = self.transport
        if want != self.reading and transport is not None and not transport.is_closing():
            self.reading = want
            if want:
                transport.resume_reading()
            else:
                transport.pause_reading()

    # -- what H2Connection asks of its driver ------------------------------------------------

    def write(self, data: bytes | memoryview) -> None:
        if self.transport is not None and not self.gone:
            if not self.outgoing and not self.receiving:
                self.loop.call_soon(self.send_buffered)
            self.outgoing.append(data)
            self.outgoing_bytes += len(data)
            if self.outgoing_bytes >= _SEND_NOW:
                # Large replies go at once, so the transport can say when it is full.
                self.send_buffered()

    def send_buffered(self) -> None:
        outgoing = self.outgoing
        if not outgoing:
            return
        transport = self.transport
        if self.outgoing_bytes >= _SEND_NOW:
            # Written as they are (the transport writes them in one call, and keeps what the
            # socket did not take): joining would copy a large reply once more.
            self.outgoing = []
            self.outgoing_bytes = 0
            if transport is not None and not self.gone:
                transport.writelines(outgoing)
            return
        data = b"".join(outgoing)
        outgoing.clear()
        self.outgoing_bytes = 0
        if transport is not None and not self.gone:
            transport.write(data)

    def abort(self, code: int, reason: str) -> None:
        if not self.closed:
            # One line per connection at most: what a peer got wrong.
            log.warning("h2_connection_error", code=code, error=reason)
        super().abort(code, reason)

    def ended(self) -> None:
        """Send what is queued (GOAWAY last), then close. The peer may still be sending:
        our side is shut and what arrives is read and dropped for a moment first, since
        closing a socket with unread data resets it and the peer could lose the GOAWAY."""
        transport = self.transport
        if transport is None or self.gone:
            return
        self.send_buffered()
        self.gone = True
        try:
            if transport.can_write_eof():
                transport.write_eof()
                self._update_reading()
                self.loop.call_later(_LINGER, transport.close)
                return
        except OSError:  # the peer has gone already
            pass
        transport.close()

    def open_call(self, stream_id: int, request: Request, end_stream: bool) -> Stream | None:
        method = self.server.methods.get(request.path)
        if method is None:
            name = request.path[:100].decode("latin-1")
            block = status_block(UNIMPLEMENTED, f"unknown method {name}", headers_sent=False)
            self.write(header_frames(stream_id, block, True, self.max_frame))
            if not end_stream:
                self.write(rst_stream(stream_id, NO_ERROR))
            return None
        context = Context(self, stream_id, method, request.metadata)
        if method.session is None:
            context.task = self.loop.create_task(self.server.run(context, method))
        return context

    def stream_ended(self, stream: Stream) -> None:
        self.server.changed()
        if not self.streams:
            self.idle_since = self.server.now
            self.close_if_idle()

    # -- gRPC replies ---------------------------------------------------------------------

    def send_message(self, context: Context, payload: bytes) -> None:
        if not context.headers_sent:
            context.headers_sent = True
            self.write(frame(HEADERS, END_HEADERS, context.id, RESPONSE_HEADERS))
        head = PREFIX.pack(0, len(payload))
        if context.pending:
            context.pending += head
            context.pending += payload
        else:
            self.send_data(context, payload, head)

    def finish(self, context: Context, code: int, message: str) -> None:
        """Send the call's status as trailers (after any pending data)."""
        if context.done:
            return
        context.done = True
        if context.pending:  # the peer stopped reading; the call cannot end cleanly
            self.write(rst_stream(context.id, CANCEL))
        else:
            block = status_block(code, message, context.headers_sent)
            self.write(header_frames(context.id, block, True, self.max_frame))
            if not context.remote_closed:
                # The client may still be sending; it has what it needs to stop.
                self.write(rst_stream(context.id, NO_ERROR))
        context.headers_sent = True
        context.release()
        self.remove(context)

    # -- the timer ------------------------------------------------------------------------

    def tick(self, now: float, interval: float) -> None:
        limits = self.limits
        self.resets = min(float(limits.reset_burst), self.resets + limits.reset_rate * interval)
        if not self.settled and now - self.opened > limits.handshake_timeout:
            self.abort(PROTOCOL_ERROR, "no SETTINGS in time")
        elif not self.streams and now - self.idle_since > limits.idle_timeout:
            self.go_away()


class Server:
    """Serves gRPC methods on TCP or Unix addresses ("host:port", "unix:/path"), each
    resource a peer can make it hold bounded by its Limits."""

    # Set by listen: who may speak on a new connection (None: anyone who connects).
    admit: Callable[[asyncio.BaseTransport], bool] | None = None

    def __init__(self, *, max_message: int | None = None, limits: Limits | None = None) -> None:
        limits = limits or Limits()
        if max_message is not None:
            limits = dataclasses.replace(limits, max_message=max_message)
        self.limits = limits
        self.methods: dict[bytes, Method] = {}
        self.connections: set[Connection] = set()
        self.servers: list[asyncio.Server] = []
        self.stopping = False
        self._idle = asyncio.Event()
        self.budget: Budget[Context] = Budget(limits.budget)
        self.read_view = memoryview(bytearray(READ_SIZE))
        self.now = 0.0  # the loop's time at the last tick
        self._ticking: asyncio.Task[None] | None = None

    def add(self, path: str, method: Method) -> None:
        self.methods[path.encode()] = method

    async def listen(
        self,
        address: str,
        *,
        ssl: SSLContext | None = None,
        admit: Callable[[asyncio.BaseTransport], bool] | None = None,
    ) -> None:
        """ssl: serve TLS, each handshake done within the limits' handshake_timeout or the
        connection closed (a peer that stalls holds a socket, never the loop). admit: asked
        about each new connection (after its handshake); False closes it unserved."""
        loop = asyncio.get_running_loop()
        self.admit = admit
        factory = lambda: Connection(self)  # noqa: E731
        tls: dict[str, Any] = (
            {}
            if ssl is None
            else {"ssl": ssl, "ssl_handshake_timeout": self.limits.handshake_timeout}
        )
        if address.startswith("unix:"):
            server = await loop.create_unix_server(factory, address[len("unix:") :], **tls)
        else:
            host, _, port = address.rpartition(":")
            server = await loop.create_server(
                factory, host.strip("[]") or None, int(port), reuse_address=True, **tls
            )
        self.servers.append(server)
        if self._ticking is None:
            self.now = loop.time()
            self._ticking = loop.create_task(self._tick())

    async def _tick(self) -> None:
        limits = self.limits
        interval = min(
            1.0, limits.handshake_timeout / 4, limits.idle_timeout / 4, limits.message_timeout / 4
        )
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(interval)
            self.now = now = loop.time()
            for conn in list(self.connections):
                conn.tick(now, interval)
            for context in self.budget.overdue(now - limits.message_timeout):
                context.expire()

    @property
    def active(self) -> int:
        return sum(len(c.streams) for c in self.connections)

    def changed(self) -> None:
        if self.stopping and not self.active:
            self._idle.set()

    async def run(self, context: Context, method: Method) -> None:
        conn = context._conn
        try:
            if method.streaming:
                await method.handler(context)
            else:
                request = await context.read()
                if request is EOF:
                    conn.finish(context, INTERNAL, "no request message")
                    return
                await context.write(await method.handler(request))
            conn.finish(context, OK, "")
        except Aborted:
            pass
        except asyncio.CancelledError:
            if not context.reset:
                conn.finish(context, CANCELLED, "cancelled")
        except RpcError as error:
            conn.finish(context, error.code, str(error))
        except Exception:
            log.exception("grpc_handler_failed")
            conn.finish(context, UNKNOWN, "internal error")

    async def stop(self, grace: float) -> None:
        """Refuse new streams (GOAWAY), let current ones finish within grace, then close."""
        self.stopping = True
        for server in self.servers:
            server.close()
        for conn in list(self.connections):
            conn.go_away()
        if self.active:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), grace)
        for conn in list(self.connections):
            for stream in list(conn.streams.values()):
                stream.on_reset()
            conn.send_buffered()
            if conn.transport is not None:
                conn.transport.close()
        if self._ticking is not None:
            self._ticking.cancel()
            self._ticking = None
        for server in self.servers:
            await server.wait_closed()
