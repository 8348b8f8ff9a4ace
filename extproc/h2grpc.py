"""gRPC over HTTP/2 on the asyncio event loop, for the ext_proc socket.

grpc.aio hands every message between its C core's threads and the event loop; for
ext_proc's many small messages that hand-off, not the gateway's logic, was most of the
CPU per request. This server parses HTTP/2 frames on the loop itself: a message arrives
in data_received, its stream's handler runs, the reply leaves with transport.write, with
no thread in between.

It implements what gRPC servers need of RFC 9113 and the gRPC wire format: the preface,
SETTINGS (the peer's initial window and frame size honoured), flow control both ways,
HEADERS with CONTINUATION (HPACK through the hpack package), DATA with padding,
RST_STREAM, PING, GOAWAY (graceful shutdown), length-prefixed messages (uncompressed
only), trailers with grpc-status, and trailers-only errors. Handlers are bidirectional
streams (a context with read/write/abort, the subset of grpc.aio's ServicerContext the
service uses), unary calls, or sessions: a stream whose messages are answered inside
data_received, the replies sent when it returns (the ext_proc stream). Whatever a peer
sends, the damage stays within its connection: a protocol error ends that connection with
GOAWAY, never the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, cast

import hpack
import structlog
from grpc_health.v1 import health_pb2
from hpack.table import HeaderTable

if TYPE_CHECKING:
    from ssl import SSLContext

log = structlog.get_logger("extproc.h2grpc")

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY = range(8)
WINDOW_UPDATE, CONTINUATION = 8, 9
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20
NO_ERROR, PROTOCOL_ERROR, FLOW_CONTROL_ERROR = 0, 1, 3
STREAM_CLOSED, FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL = 5, 6, 7, 8
COMPRESSION_ERROR, ENHANCE_YOUR_CALM = 9, 11
MAX_WINDOW = 2**31 - 1
# Advertised: frames up to 1 MiB (fewer frames per body), a window no stream exhausts.
OUR_MAX_FRAME = 1 << 20
OUR_SETTINGS = struct.pack(">HIHIHI", 0x3, 1 << 20, 0x4, MAX_WINDOW, 0x5, OUR_MAX_FRAME)
_FRAME = struct.Struct(">BHBBI")  # length (8 + 16 bits), type, flags, stream id
_U32 = struct.Struct(">I")
_PREFIX = struct.Struct(">BI")  # gRPC message: compressed flag, length
# Frames queued for the end of the loop turn beyond this many bytes are sent at once.
_SEND_NOW = 64 * 1024

# gRPC status codes used here (grpc.StatusCode values).
OK, CANCELLED, UNKNOWN, INVALID_ARGUMENT, NOT_FOUND, RESOURCE_EXHAUSTED = 0, 1, 2, 3, 5, 8
UNIMPLEMENTED, INTERNAL = 12, 13


def _integer(value: int, prefix_bits: int, first: int) -> bytes:
    """HPACK integer with an N-bit prefix (RFC 7541 5.1)."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = bytearray([first | limit])
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _literal(name: bytes, value: bytes) -> bytes:
    """A header as a literal without indexing and with a literal name: no table state."""
    return b"\x00" + _integer(len(name), 7, 0) + name + _integer(len(value), 7, 0) + value


# ":status: 200" is static entry 8; content-type is literal (stateless for our encoder).
RESPONSE_HEADERS = b"\x88" + _literal(b"content-type", b"application/grpc")
OK_TRAILERS = _literal(b"grpc-status", b"0")


def _frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    size = len(payload)
    return _FRAME.pack(size >> 16, size & 0xFFFF, kind, flags, stream_id) + payload


def _percent_encode(message: str) -> bytes:
    """grpc-message: printable ASCII except '%' as is, everything else %XX of UTF-8."""
    out = bytearray()
    for byte in message.encode():
        if 0x20 <= byte <= 0x7E and byte != 0x25:
            out.append(byte)
        else:
            out += b"%%%02X" % byte
    return bytes(out)


def _status(stream_id: int, code: int, message: str, headers_sent: bool) -> bytes:
    """The frame that ends a call: trailers, or trailers-only when no reply was sent."""
    if code == OK and not message:
        block = OK_TRAILERS
    else:
        block = _literal(b"grpc-status", str(code).encode())
        if message:
            block += _literal(b"grpc-message", _percent_encode(message))
    if not headers_sent:
        block = RESPONSE_HEADERS + block
    return _frame(HEADERS, END_HEADERS | END_STREAM, stream_id, block)


class ConnectionError_(Exception):
    """The peer broke the protocol; the connection ends with GOAWAY(code)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


class Aborted(Exception):
    """Raised by Context.abort after the status was sent (as grpc.aio's abort does)."""


class _EndOfStream:
    def __repr__(self) -> str:
        return "h2grpc.EOF"


# What Context.read returns once the peer half-closed (grpc.aio has its own: a handler
# written for both servers checks for a message instead).
EOF: Any = _EndOfStream()


class Session(Protocol):
    """A bidirectional stream answered message by message: message() returns the reply
    (or a coroutine that gives it) and raises RpcError to end the call with a status;
    close() is called once, when the call is over in any way."""

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


class Context:
    """One gRPC call: what a handler reads, writes and ends it with."""

    __slots__ = (
        "_buffer",
        "_conn",
        "_drained",
        "_id",
        "_inbox",
        "_parse",
        "_pending",
        "_serialise",
        "_waiter",
        "busy",
        "done",
        "headers_sent",
        "metadata",
        "remote_closed",
        "reset",
        "send_window",
        "session",
        "task",
    )

    def __init__(
        self,
        conn: Connection,
        stream_id: int,
        method: Method,
        metadata: tuple[tuple[str, str], ...],
        send_window: int,
    ) -> None:
        self._conn = conn
        self._id = stream_id
        self._parse = method.parse
        self._serialise = method.serialise
        self._inbox: deque[Any] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._buffer = bytearray()  # a message split across DATA frames
        self.metadata = metadata
        self.remote_closed = False
        self.reset = False
        self.headers_sent = False
        self.done = False  # trailers sent (or the stream was reset)
        self.send_window = send_window
        self._pending = bytearray()  # DATA waiting for flow-control window
        self._drained: asyncio.Future[None] | None = None
        self.task: asyncio.Task[None] | None = None
        self.session: Session | None = None
        self.busy = False  # the session's reply to a message is being awaited

    # -- what handlers use (grpc.aio's names) ------------------------------------------

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self.metadata

    async def read(self) -> Any:
        """The next message, or EOF when the peer has no more."""
        while not self._inbox:
            if self.remote_closed or self.reset:
                return EOF
            self._waiter = self._conn.loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        item = self._inbox.popleft()
        if isinstance(item, BaseException):
            raise item
        return item

    async def write(self, message: Any) -> None:
        if self.done:
            raise asyncio.CancelledError("the stream is closed")
        payload = self._serialise(message)
        conn = self._conn
        conn.send_message(self, _PREFIX.pack(0, len(payload)) + payload)
        if conn.paused is not None:
            # The peer reads slower than we write: wait until the socket drains (a peer
            # with large flow-control windows could otherwise make the buffer grow).
            await asyncio.shield(conn.paused)
            if self.done:
                raise asyncio.CancelledError("the stream is closed")
        if self._pending:
            self._drained = self._conn.loop.create_future()
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

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _deliver(self, raw: bytes) -> None:
        try:
            message = self._parse(raw)
        except Exception:
            raise RpcError(INVALID_ARGUMENT, "the message does not parse") from None
        if (
            self.session is not None
            and not self.busy
            and not self._inbox
            and self._conn.paused is None
        ):
            self._handle(message)
        else:
            self._inbox.append(message)

    # -- a session's stream ---------------------------------------------------------------

    def _handle(self, message: Any) -> None:
        session = self.session
        if session is None or self.done:
            return
        try:
            reply = session.message(message)
        except Exception as error:
            self._failed(error)
            return
        if isinstance(reply, Coroutine):
            self.busy = True
            self.task = self._conn.loop.create_task(self._later(reply))
            return
        self._reply(reply)

    async def _later(self, reply: Coroutine[Any, Any, Any]) -> None:
        try:
            answer = await reply
        except Exception as error:
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
        self._conn.send_message(self, _PREFIX.pack(0, len(payload)) + payload)

    def _continue(self) -> None:
        """Messages that came while a reply was awaited or the peer was not reading (their
        replies wait, as a handler's write does); the end, once all are answered."""
        inbox = self._inbox
        conn = self._conn
        while inbox and not self.busy and not self.done and conn.paused is None:
            item = inbox.popleft()
            if isinstance(item, RpcError):
                self._fail(item.code, str(item))
                return
            self._handle(item)
        if self.remote_closed and not inbox and not self.busy and not self.done:
            self._conn.finish(self, OK, "")
            self._close_session(False)

    def _failed(self, error: Exception) -> None:
        """The session raised (called in its except block): the call ends with the status
        an RpcError names, or UNKNOWN for anything else (logged)."""
        if isinstance(error, RpcError):
            self._fail(error.code, str(error))
        else:
            log.exception("grpc_handler_failed")
            self._fail(UNKNOWN, "internal error")

    def _fail(self, code: int, message: str) -> None:
        self._conn.finish(self, code, message)
        self._close_session(True)

    def _close_session(self, failed: bool) -> None:
        session, self.session = self.session, None
        if session is not None:
            try:
                session.close(failed)
            except Exception:
                log.exception("grpc_handler_failed")

    def receive(self, data: bytes, limit: int) -> None:
        buffer = self._buffer
        if not buffer and len(data) >= 5:
            compressed, length = _PREFIX.unpack_from(data)
            if len(data) == 5 + length and not compressed and length <= limit:
                self._deliver(data[5:])  # the usual case: one whole message in one frame
                if self._waiter is not None:
                    self._wake()
                return
        buffer += data
        while len(buffer) >= 5:
            compressed, length = _PREFIX.unpack_from(buffer)
            if length > limit:
                raise RpcError(RESOURCE_EXHAUSTED, f"message of {length} bytes over {limit}")
            if compressed:
                raise RpcError(UNIMPLEMENTED, "compressed messages are not accepted")
            if len(buffer) < 5 + length:
                break
            raw = bytes(buffer[5 : 5 + length])
            del buffer[: 5 + length]
            self._deliver(raw)
        self._wake()

    def close_remote(self) -> None:
        self.remote_closed = True
        if self._buffer:
            self._inbox.append(RpcError(INVALID_ARGUMENT, "the stream ended mid-message"))
        if self.session is not None:
            self._continue()
        self._wake()

    def on_reset(self) -> None:
        self.reset = self.done = True
        self._close_session(False)
        self._wake()
        if self._drained is not None and not self._drained.done():
            self._drained.set_exception(asyncio.CancelledError())
        if self.task is not None and not self.task.done():
            self.task.cancel()  # as grpc.aio cancels the handler of a cancelled call

    def flush(self) -> None:
        """Send what the windows now allow; a write waiting for that may go on."""
        if self._pending:
            self._conn.send_data(self, self._pending)
        if not self._pending and self._drained is not None and not self._drained.done():
            self._drained.set_result(None)


class RpcError(Exception):
    """A call fails with this status (raise it in a handler); the connection carries on."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class _CountedTable(HeaderTable):
    """HPACK's dynamic table, counting its changes: a header block that decoded without
    changing the table decodes to the same headers until the table changes."""

    changes = 0

    def add(self, name: bytes, value: bytes) -> None:
        self.changes += 1
        super().add(name, value)

    def _shrink(self) -> None:
        self.changes += 1
        super()._shrink()


# Bytes one read may bring (the socket's read buffer; see Connection.get_buffer).
READ_SIZE = 64 * 1024


class Connection(asyncio.BufferedProtocol):
    def __init__(self, server: Server) -> None:
        self.server = server
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        # Reads land here. For a plain Protocol asyncio allocates 256 KiB per read and
        # shrinks it to what arrived: until glibc's mmap threshold has grown past that,
        # each read costs an mmap, mremap and munmap with a page fault (~8 µs measured,
        # as much as the rest of a small message's round trip). One buffer per
        # connection, reused, costs nothing but the recv_into.
        self.read_buffer = bytearray(READ_SIZE)
        self.read_view = memoryview(self.read_buffer)
        self.buffer = bytearray()  # an incomplete frame
        self.need = 0  # bytes the buffer must hold before a frame completes
        self.preface = False
        self.streams: dict[int, Context] = {}
        self.last_stream = 0
        self.decoder = hpack.Decoder()
        self.decoder.max_header_list_size = 64 * 1024
        self.table = self.decoder.header_table = _CountedTable()
        # Decoded blocks that left the table as it was. A client's calls on one connection
        # usually send the same block each time (Envoy's ext_proc streams do): decoding
        # it once saves ~30 µs per call.
        self.blocks: dict[bytes, tuple[tuple[bytes, bytes], ...]] = {}
        self.max_frame = 16384  # what the peer accepts
        self.initial_window = 65535  # the peer's, for our DATA on new streams
        self.send_window = 65535  # the connection's
        self.received = 0  # DATA bytes since our last connection WINDOW_UPDATE
        self.continuing: tuple[int, int, bytearray] | None = None  # stream, flags, block
        self.going_away = False
        self.closed = False
        # Frames written during one turn of the loop leave in one transport.write (one
        # send call for the replies of every stream that ran in that turn).
        self.outgoing: list[bytes] = []
        self.outgoing_bytes = 0
        # Inside data_received: what its frames' handlers write leaves when it returns.
        self.receiving = False
        # Set while the transport's buffer is above its high-water mark.
        self.paused: asyncio.Future[None] | None = None

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Over TLS this comes once the handshake is done: the peer's certificate is known.
        # A stream transport: asyncio's, or uvloop's (which does not subclass it).
        self.transport = cast(asyncio.Transport, transport)
        # Over TLS this comes once the handshake is done: the peer's certificate is known.
        admit = self.server.admit
        if admit is not None and not admit(transport):
            self.closed = True
            self.transport.abort()  # at once: no TLS shutdown to wait for
            return
        self.server.connections.add(self)
        self.transport.write(
            _frame(SETTINGS, 0, 0, OUR_SETTINGS)
            + _frame(WINDOW_UPDATE, 0, 0, _U32.pack(MAX_WINDOW - 65535))
        )

    def pause_writing(self) -> None:
        if self.paused is None:
            self.paused = self.loop.create_future()

    def resume_writing(self) -> None:
        paused, self.paused = self.paused, None
        if paused is not None and not paused.done():
            paused.set_result(None)
        if paused is not None:
            for context in list(self.streams.values()):
                if context.session is not None:
                    context._continue()

    def connection_lost(self, exc: Exception | None) -> None:
        self.resume_writing()
        self.closed = True
        self.server.connections.discard(self)
        for context in list(self.streams.values()):
            context.on_reset()
        self.streams.clear()
        self.server.changed()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.read_view

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(bytes(self.read_view[:nbytes]))

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self.receiving = True
        try:
            self._received(data)
        finally:
            self.receiving = False
            # Replies of sessions answered at once: sent now, not a loop turn later.
            if self.outgoing:
                self.send_buffered()

    def _received(self, data: bytes) -> None:
        if self.buffer:
            self.buffer += data
            if len(self.buffer) < self.need:
                return  # the frame in progress is still incomplete
            data = bytes(self.buffer)
            self.buffer.clear()
        try:
            if not self.preface:
                if len(data) < len(PREFACE):
                    if not PREFACE.startswith(data):
                        raise ConnectionError_(PROTOCOL_ERROR, "not an HTTP/2 preface")
                    self.buffer += data
                    return
                if not data.startswith(PREFACE):
                    raise ConnectionError_(PROTOCOL_ERROR, "not an HTTP/2 preface")
                data = data[len(PREFACE) :]
                self.preface = True
            offset, size = 0, len(data)
            self.need = 0
            while size - offset >= 9:
                high, low, kind, flags, stream_id = _FRAME.unpack_from(data, offset)
                length = high << 16 | low
                if length > OUR_MAX_FRAME:
                    raise ConnectionError_(FRAME_SIZE_ERROR, "frame over SETTINGS_MAX_FRAME_SIZE")
                end = offset + 9 + length
                if end > size:
                    self.need = end - offset
                    break
                self.frame(kind, flags, stream_id & MAX_WINDOW, data[offset + 9 : end])
                offset = end
                if self.closed:
                    return
            if offset < size:
                self.buffer += data[offset:]
        except ConnectionError_ as error:
            log.warning("h2_connection_error", error=str(error))
            self.abort_connection(error.code)

    def abort_connection(self, code: int) -> None:
        if self.transport is not None and not self.closed:
            self.send_buffered()
            self.transport.write(
                _frame(GOAWAY, 0, 0, _U32.pack(self.last_stream) + _U32.pack(code))
            )
            self.transport.close()
        self.closed = True

    # -- frames ---------------------------------------------------------------------------

    def frame(self, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
        if self.continuing is not None and kind != CONTINUATION:
            raise ConnectionError_(PROTOCOL_ERROR, "expected CONTINUATION")
        if kind == DATA:
            self.on_data(flags, stream_id, payload)
        elif kind == HEADERS:
            self.on_headers(flags, stream_id, payload)
        elif kind == CONTINUATION:
            if self.continuing is None or self.continuing[0] != stream_id:
                raise ConnectionError_(PROTOCOL_ERROR, "unexpected CONTINUATION")
            self.continuing[2].extend(payload)
            if len(self.continuing[2]) > 256 * 1024:
                raise ConnectionError_(ENHANCE_YOUR_CALM, "header block too large")
            if flags & END_HEADERS:
                sid, first_flags, block = self.continuing
                self.continuing = None
                self.header_block(sid, first_flags, bytes(block))
        elif kind == SETTINGS:
            self.on_settings(flags, stream_id, payload)
        elif kind == WINDOW_UPDATE:
            self.on_window_update(stream_id, payload)
        elif kind == PING:
            if len(payload) != 8 or stream_id:
                raise ConnectionError_(FRAME_SIZE_ERROR, "bad PING")
            if not flags & ACK:
                self.write(_frame(PING, ACK, 0, bytes(payload)))
        elif kind == RST_STREAM:
            if len(payload) != 4 or not stream_id:
                raise ConnectionError_(PROTOCOL_ERROR, "bad RST_STREAM")
            context = self.streams.pop(stream_id, None)
            if context is not None:
                context.on_reset()
                self.server.changed()
        elif kind == GOAWAY:
            self.going_away = True
            self.close_if_idle()
        elif kind == PRIORITY:
            if not stream_id or len(payload) != 5:
                raise ConnectionError_(PROTOCOL_ERROR, "bad PRIORITY")
        elif kind == PUSH_PROMISE:
            raise ConnectionError_(PROTOCOL_ERROR, "PUSH_PROMISE from a client")
        # Unknown frame types are ignored (RFC 9113 5.5).

    def on_data(self, flags: int, stream_id: int, payload: bytes) -> None:
        if not stream_id:
            raise ConnectionError_(PROTOCOL_ERROR, "DATA on stream 0")
        self.received += len(payload)
        if self.received > MAX_WINDOW // 2:
            self.write(_frame(WINDOW_UPDATE, 0, 0, _U32.pack(self.received)))
            self.received = 0
        if flags & PADDED:
            if not payload or payload[0] >= len(payload):
                raise ConnectionError_(PROTOCOL_ERROR, "bad padding")
            payload = payload[1 : len(payload) - payload[0]]
        context = self.streams.get(stream_id)
        if context is None or context.remote_closed:
            if stream_id > self.last_stream:
                raise ConnectionError_(PROTOCOL_ERROR, "DATA on an idle stream")
            # A stream we already ended (a reply before the request was complete).
            self.write(_frame(RST_STREAM, 0, stream_id, _U32.pack(STREAM_CLOSED)))
            return
        try:
            if payload:
                context.receive(payload, self.server.max_message)
        except RpcError as error:
            self.fail_stream(context, error.code, str(error))
            return
        if flags & END_STREAM:
            context.close_remote()

    def on_headers(self, flags: int, stream_id: int, payload: bytes) -> None:
        if not stream_id:
            raise ConnectionError_(PROTOCOL_ERROR, "HEADERS on stream 0")
        start, end = 0, len(payload)
        if flags & PADDED:
            if not payload:
                raise ConnectionError_(PROTOCOL_ERROR, "bad padding")
            start, end = 1, end - payload[0]
        if flags & PRIORITY_FLAG:
            start += 5
        if start > end:
            raise ConnectionError_(PROTOCOL_ERROR, "bad HEADERS padding")
        block = payload[start:end]
        if flags & END_HEADERS:
            self.header_block(stream_id, flags, bytes(block))
        else:
            self.continuing = (stream_id, flags, bytearray(block))

    def header_block(self, stream_id: int, flags: int, block: bytes) -> None:
        headers = self.blocks.get(block)
        if headers is None:
            changes = self.table.changes
            try:
                headers = tuple(self.decoder.decode(block, raw=True))
            except Exception as error:  # hpack raises several kinds
                raise ConnectionError_(COMPRESSION_ERROR, f"bad header block: {error}") from None
            if self.table.changes != changes:
                self.blocks.clear()
            elif len(self.blocks) < 64:
                self.blocks[block] = headers
        context = self.streams.get(stream_id)
        if context is not None:  # trailers from the client: the request side is over
            if not flags & END_STREAM:
                raise ConnectionError_(PROTOCOL_ERROR, "trailers without END_STREAM")
            context.close_remote()
            return
        if stream_id <= self.last_stream or not stream_id & 1:
            raise ConnectionError_(PROTOCOL_ERROR, "HEADERS on a used or even stream id")
        self.last_stream = stream_id
        if self.going_away or self.server.stopping:
            self.write(_frame(RST_STREAM, 0, stream_id, _U32.pack(REFUSED_STREAM)))
            return
        path = b""
        metadata = []
        for name, value in headers:
            if name == b":path":
                path = value
            elif not name.startswith(b":"):
                metadata.append((name.decode("latin-1"), value.decode("latin-1")))
        method = self.server.methods.get(path)
        if method is None:
            self.trailers_only(stream_id, UNIMPLEMENTED, f"unknown method {path.decode('latin-1')}")
            return
        context = Context(self, stream_id, method, tuple(metadata), self.initial_window)
        self.streams[stream_id] = context
        if method.session is not None:
            try:
                context.session = method.session(context)
            except Exception:
                log.exception("grpc_handler_failed")
                self.finish(context, UNKNOWN, "internal error")
                return
            if flags & END_STREAM:
                context.close_remote()
            return
        if flags & END_STREAM:
            context.remote_closed = True
        context.task = self.loop.create_task(self.server.run(context, method))

    def on_settings(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id:
            raise ConnectionError_(PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & ACK:
            return
        if len(payload) % 6:
            raise ConnectionError_(FRAME_SIZE_ERROR, "bad SETTINGS length")
        for offset in range(0, len(payload), 6):
            key, value = struct.unpack_from(">HI", payload, offset)
            if key == 0x4:
                if value > MAX_WINDOW:
                    raise ConnectionError_(FLOW_CONTROL_ERROR, "initial window too large")
                delta = value - self.initial_window
                self.initial_window = value
                for context in self.streams.values():
                    context.send_window += delta
            elif key == 0x5:
                if not 16384 <= value <= 16777215:
                    raise ConnectionError_(PROTOCOL_ERROR, "bad SETTINGS_MAX_FRAME_SIZE")
                self.max_frame = value
        self.write(_frame(SETTINGS, ACK, 0))
        self.flush_all()

    def on_window_update(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise ConnectionError_(FRAME_SIZE_ERROR, "bad WINDOW_UPDATE")
        increment = _U32.unpack(payload)[0] & MAX_WINDOW
        if not increment:
            raise ConnectionError_(PROTOCOL_ERROR, "zero WINDOW_UPDATE")
        if not stream_id:
            self.send_window += increment
            if self.send_window > MAX_WINDOW:
                raise ConnectionError_(FLOW_CONTROL_ERROR, "connection window overflow")
            self.flush_all()
            return
        context = self.streams.get(stream_id)
        if context is not None:
            context.send_window += increment
            context.flush()

    # -- sending --------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            if not self.outgoing and not self.receiving:
                self.loop.call_soon(self.send_buffered)
            self.outgoing.append(data)
            self.outgoing_bytes += len(data)
            if self.outgoing_bytes >= _SEND_NOW:
                # Large replies go at once, so the transport can say when it is full.
                self.send_buffered()

    def send_buffered(self) -> None:
        if self.outgoing:
            data = b"".join(self.outgoing)
            self.outgoing.clear()
            self.outgoing_bytes = 0
            if self.transport is not None and not self.closed:
                self.transport.write(data)

    def send_message(self, context: Context, message: bytes) -> None:
        if not context.headers_sent:
            context.headers_sent = True
            self.write(_frame(HEADERS, END_HEADERS, context._id, RESPONSE_HEADERS))
        if context._pending:
            context._pending += message
        else:
            self.send_data(context, message)

    def send_data(self, context: Context, data: bytes | bytearray) -> None:
        """Send as much of data as both windows allow; keep the rest as pending."""
        size = len(data)
        if size <= self.max_frame and size <= self.send_window and size <= context.send_window:
            # The usual case: all of it, in one frame.
            self.send_window -= size
            context.send_window -= size
            self.write(_frame(DATA, 0, context._id, bytes(data)))
            if data is context._pending:
                data.clear()
            return
        allowed = min(size, self.send_window, context.send_window)
        pending = bytearray(data)
        if allowed > 0:
            step = self.max_frame
            self.write(
                b"".join(
                    _frame(DATA, 0, context._id, bytes(pending[sent : min(sent + step, allowed)]))
                    for sent in range(0, allowed, step)
                )
            )
            self.send_window -= allowed
            context.send_window -= allowed
            del pending[:allowed]
        context._pending = pending

    def flush_all(self) -> None:
        for context in list(self.streams.values()):
            if context._pending:
                context.flush()

    def finish(self, context: Context, code: int, message: str) -> None:
        """Send the call's status as trailers (after any pending data)."""
        if context.done:
            return
        context.done = True
        if context._pending:  # the peer stopped reading; the call cannot end cleanly
            self.write(_frame(RST_STREAM, 0, context._id, _U32.pack(CANCEL)))
        else:
            self.write(_status(context._id, code, message, context.headers_sent))
            if not context.remote_closed:
                # The client may still be sending; it has what it needs to stop.
                self.write(_frame(RST_STREAM, 0, context._id, _U32.pack(NO_ERROR)))
        self.streams.pop(context._id, None)
        self.server.changed()
        self.close_if_idle()

    def trailers_only(self, stream_id: int, code: int, message: str) -> None:
        self.write(_status(stream_id, code, message, headers_sent=False))
        self.write(_frame(RST_STREAM, 0, stream_id, _U32.pack(NO_ERROR)))

    def fail_stream(self, context: Context, code: int, message: str) -> None:
        log.warning("grpc_stream_failed", code=code, error=message)
        self.finish(context, code, message)
        context.on_reset()

    def close_if_idle(self) -> None:
        if self.going_away and not self.streams and self.transport is not None:
            self.send_buffered()
            self.transport.close()

    def go_away(self) -> None:
        """No new streams; close once the current ones are done."""
        if not self.going_away:
            self.going_away = True
            self.write(_frame(GOAWAY, 0, 0, _U32.pack(self.last_stream) + _U32.pack(NO_ERROR)))
        self.close_if_idle()


class Server:
    """Serves gRPC methods on TCP or Unix addresses ("host:port", "unix:/path")."""

    # Set by listen: who may speak on a new connection (None: anyone who connects).
    admit: Callable[[asyncio.BaseTransport], bool] | None = None

    def __init__(self, *, max_message: int = 4 * 1024 * 1024) -> None:
        self.methods: dict[bytes, Method] = {}
        self.max_message = max_message
        self.connections: set[Connection] = set()
        self.servers: list[asyncio.Server] = []
        self.stopping = False
        self._idle = asyncio.Event()

    def add(self, path: str, method: Method) -> None:
        self.methods[path.encode()] = method

    async def listen(
        self,
        address: str,
        *,
        ssl: SSLContext | None = None,
        admit: Callable[[asyncio.BaseTransport], bool] | None = None,
        handshake_timeout: float = 10.0,
    ) -> None:
        """ssl: serve TLS, each handshake done within handshake_timeout seconds or the
        connection closed (a peer that stalls holds a socket, never the loop). admit: asked
        about each new connection (after its handshake); False closes it unserved."""
        loop = asyncio.get_running_loop()
        self.admit = admit
        factory = lambda: Connection(self)  # noqa: E731
        tls: dict[str, Any] = (
            {} if ssl is None else {"ssl": ssl, "ssl_handshake_timeout": handshake_timeout}
        )
        if address.startswith("unix:"):
            server = await loop.create_unix_server(factory, address[len("unix:") :], **tls)
        else:
            host, _, port = address.rpartition(":")
            server = await loop.create_server(
                factory, host.strip("[]") or None, int(port), reuse_address=True, **tls
            )
        self.servers.append(server)

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
            for context in list(conn.streams.values()):
                context.on_reset()
            if conn.transport is not None:
                conn.transport.close()
        for server in self.servers:
            await server.wait_closed()


class Health:
    """grpc.health.v1: Check, and Watch for those who follow changes (Kubernetes, Envoy)."""

    def __init__(self) -> None:
        self.statuses: dict[str, int] = {}
        self.changed = asyncio.Event()

    def set(self, service: str, status: int) -> None:
        self.statuses[service] = status
        self._notify()

    def shutting_down(self) -> None:
        for service in self.statuses:
            self.statuses[service] = health_pb2.HealthCheckResponse.NOT_SERVING
        self._notify()

    def _notify(self) -> None:
        """Wake every Watch; the next change gets a fresh event."""
        self.changed.set()
        self.changed = asyncio.Event()

    async def check(self, request: health_pb2.HealthCheckRequest) -> Any:
        status = self.statuses.get(request.service)
        if status is None:
            raise RpcError(NOT_FOUND, f"unknown service {request.service!r}")
        return health_pb2.HealthCheckResponse(status=status)

    async def watch(self, context: Context) -> None:
        request = await context.read()
        service = "" if request is EOF else request.service
        sent = None
        while True:
            status = self.statuses.get(service, health_pb2.HealthCheckResponse.SERVICE_UNKNOWN)
            if status != sent:
                await context.write(health_pb2.HealthCheckResponse(status=status))
                sent = status
            await self.changed.wait()

    def serve_on(self, server: Server) -> None:
        parse = health_pb2.HealthCheckRequest.FromString
        serialise = health_pb2.HealthCheckResponse.SerializeToString
        server.add("/grpc.health.v1.Health/Check", Method(False, self.check, parse, serialise))
        server.add("/grpc.health.v1.Health/Watch", Method(True, self.watch, parse, serialise))
