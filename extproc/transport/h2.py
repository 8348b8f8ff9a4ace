"""The server side of one HTTP/2 connection, without I/O: bytes in, stream events and
bytes out (RFC 9113).

H2Connection parses frames, keeps the stream table and both directions' flow control, and
enforces Limits. What it writes goes through write(); what a stream receives goes to its
Stream object (calls.Context, the gRPC call); new streams are opened by open_call(). The
asyncio driver (server.Connection) supplies those three and the clock.

Receiving: a stream's window is given back as its messages are consumed (Stream.receive
and its consumer call consumed()), so a stream holds at most its window unread, plus room
its message was admitted for (budget.Budget). The connection's window covers every
stream's at once and is given back as DATA arrives, so it never binds before they do.
Sending: DATA waits for both windows; a stream with DATA waiting is in `blocked`, which a
connection WINDOW_UPDATE walks (not every stream).
"""

from __future__ import annotations

from extproc.transport import frames
from extproc.transport.frames import (
    CONTINUATION,
    DATA,
    END_HEADERS,
    END_STREAM,
    FRAME_LENGTH,
    HEADERS,
    MAX_WINDOW,
    PADDED,
    PREFACE,
    U32,
    frame,
    rst_stream,
    window_update,
)
from extproc.transport.headers import H2Error, HeaderDecoder, Request
from extproc.transport.limits import Limits
from extproc.transport.stream import Stream


class H2Connection:
    """One connection's frames and streams. Protocol errors raise H2Error inside and end
    the connection with GOAWAY; a stream's error ends that stream with RST_STREAM."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.headers = HeaderDecoder(limits)
        self.streams: dict[int, Stream] = {}
        self.last_stream = 0
        self.buffer = bytearray()  # an incomplete frame (or frames left for later)
        self.partial = False  # the buffer holds one incomplete frame
        self.preface = False
        self.settled = False  # the peer's first SETTINGS has arrived
        self.continuing: tuple[int, int, bytearray] | None = None  # stream, flags, block
        self.max_frame = 16384  # what the peer accepts
        self.initial_window = frames.DEFAULT_WINDOW  # the peer's, for our DATA on new streams
        self.send_window = frames.DEFAULT_WINDOW
        self.recv_window = limits.connection_window
        self.recv_unacked = 0
        self.stream_threshold = limits.initial_window_size // 2
        self.connection_threshold = limits.connection_window // 2
        self.blocked: dict[Stream, None] = {}  # streams with pending DATA, in order
        self.resets = float(limits.reset_burst)  # tokens of the rapid-reset bucket
        self.suspended = False  # receive() stopped early; call it again later
        self.going_away = False
        self.closed = False

    # -- supplied by the driver ---------------------------------------------------------------

    def write(self, data: bytes | memoryview) -> None:
        raise NotImplementedError

    def open_call(self, stream_id: int, request: Request, end_stream: bool) -> Stream | None:
        """A new stream: its Stream, or None once it has been answered already."""
        raise NotImplementedError

    def stream_ended(self, stream: Stream) -> None:
        """A stream left the table."""

    def ended(self) -> None:
        """The connection is over (after an error or GOAWAY): close the transport."""

    # -- the preamble and the input ------------------------------------------------------------

    def preamble(self) -> bytes:
        """Our SETTINGS (RFC 9113 3.4) and the connection window's opening."""
        limits = self.limits
        ours = frames.settings(
            {
                frames.ENABLE_PUSH: 0,
                frames.MAX_CONCURRENT_STREAMS: limits.max_concurrent_streams,
                frames.INITIAL_WINDOW_SIZE: limits.initial_window_size,
                frames.MAX_FRAME_SIZE: limits.max_frame_size,
                frames.MAX_HEADER_LIST_SIZE: limits.max_header_list_size,
            }
        )
        opening = limits.connection_window - frames.DEFAULT_WINDOW
        return ours + (window_update(0, opening) if opening > 0 else b"")

    def receive(self, data: bytes) -> None:
        """Frames in. Stops early (suspended) once a turn has decoded a header block's
        worth of bytes, so one connection's headers cannot hold the loop."""
        self.suspended = False
        self.headers.decoded = 0
        try:
            offset = 0
            buffer = self.buffer
            if buffer and self.partial:
                # A frame in progress: completed from the head of data, so that only that
                # frame is copied, not all that came with it.
                offset = self._complete(data)
                if offset < 0:
                    return
                head = bytes(buffer)
                buffer.clear()
                self.partial = False
                if not self._frames(head, 0):
                    if not self.closed and offset < len(data):
                        self.buffer += data[offset:]
                        self.suspended = True
                    return
            elif buffer:
                # Frames left by a suspended turn (or the start of the preface).
                buffer += data
                data = bytes(buffer)
                buffer.clear()
            if not self.preface:
                if len(data) < len(PREFACE):
                    if not PREFACE.startswith(data):
                        raise H2Error(frames.PROTOCOL_ERROR, "not an HTTP/2 preface")
                    self.buffer += data
                    return
                if not data.startswith(PREFACE):
                    raise H2Error(frames.PROTOCOL_ERROR, "not an HTTP/2 preface")
                offset = len(PREFACE)
                self.preface = True
            self._frames(data, offset)
        except H2Error as error:
            self.abort(error.code, str(error))

    def _complete(self, data: bytes) -> int:
        """Add the frame in progress its missing bytes from data: where data's own frames
        start, or -1 when the frame is still incomplete (all of data taken)."""
        buffer = self.buffer
        offset = 0
        if len(buffer) < 9:
            offset = min(9 - len(buffer), len(data))
            buffer += data[:offset]
            if len(buffer) < 9:
                return -1
        high, low = FRAME_LENGTH.unpack_from(buffer)
        take = 9 + self._length(high, low) - len(buffer)
        if len(data) - offset < take:
            buffer += data[offset:]
            return -1
        buffer += data[offset : offset + take]
        return offset + take

    def _frames(self, data: bytes, offset: int) -> bool:
        """The whole frames of data from offset; the rest kept for the next read. False
        when the turn stopped: the connection closed, or suspended."""
        size = len(data)
        while size - offset >= 9:
            # The header's fields read byte by byte: compiled, each is a C read, where
            # FRAME.unpack_from is a method call that boxes five ints in a tuple.
            length = self._length(data[offset], data[offset + 1] << 8 | data[offset + 2])
            end = offset + 9 + length
            if end > size:
                break
            stream_id = (
                (data[offset + 5] & 0x7F) << 24
                | data[offset + 6] << 16
                | data[offset + 7] << 8
                | data[offset + 8]
            )  # less the reserved bit
            self.frame(data[offset + 3], data[offset + 4], stream_id, data[offset + 9 : end])
            offset = end
            if self.closed:
                return False
            if self.headers.decoded > self.limits.max_header_block:
                self.suspended = offset < size
                if self.suspended:
                    self.buffer += data[offset:]
                return False
        if offset < size:
            self.buffer += data[offset:]
            self.partial = True
        return True

    def _length(self, high: int, low: int) -> int:
        """A frame's payload length from its header's first three bytes, within ours."""
        length = high << 16 | low
        if length > self.limits.max_frame_size:
            raise H2Error(frames.FRAME_SIZE_ERROR, "frame over SETTINGS_MAX_FRAME_SIZE")
        return length

    def abort(self, code: int, reason: str) -> None:
        """End the connection: GOAWAY with the code, then close."""
        if not self.closed:
            self.write(frames.goaway(self.last_stream, code, reason.encode()[:128]))
            self.closed = True
            self.ended()

    # -- frames ---------------------------------------------------------------------------------

    def frame(self, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
        if self.continuing is not None and kind != CONTINUATION:
            raise H2Error(frames.PROTOCOL_ERROR, "expected CONTINUATION")
        if kind == DATA:
            self.on_data(flags, stream_id, payload)
        elif kind == HEADERS:
            self.on_headers(flags, stream_id, payload)
        elif not self.settled and kind != frames.SETTINGS:
            raise H2Error(frames.PROTOCOL_ERROR, "the preface must be followed by frames.SETTINGS")
        elif kind == CONTINUATION:
            self.on_continuation(flags, stream_id, payload)
        elif kind == frames.SETTINGS:
            self.on_settings(flags, stream_id, payload)
        elif kind == frames.WINDOW_UPDATE:
            self.on_window_update(stream_id, payload)
        elif kind == frames.PING:
            if stream_id:
                raise H2Error(frames.PROTOCOL_ERROR, "frames.PING on a stream")
            if len(payload) != 8:
                raise H2Error(frames.FRAME_SIZE_ERROR, "frames.PING of the wrong length")
            if not flags & frames.ACK:
                self.write(frame(frames.PING, frames.ACK, 0, payload))
        elif kind == frames.RST_STREAM:
            self.on_rst_stream(stream_id, payload)
        elif kind == frames.GOAWAY:
            if stream_id:
                raise H2Error(frames.PROTOCOL_ERROR, "frames.GOAWAY on a stream")
            if len(payload) < 8:
                raise H2Error(frames.FRAME_SIZE_ERROR, "frames.GOAWAY too short")
            self.going_away = True
            self.close_if_idle()
        elif kind == frames.PRIORITY:
            self.on_priority(stream_id, payload)
        elif kind == frames.PUSH_PROMISE:
            raise H2Error(frames.PROTOCOL_ERROR, "frames.PUSH_PROMISE from a client")
        # Unknown frame types are ignored (RFC 9113 5.5).

    def on_data(self, flags: int, stream_id: int, payload: bytes) -> None:
        if not self.settled:
            raise H2Error(frames.PROTOCOL_ERROR, "the preface must be followed by frames.SETTINGS")
        if not stream_id:
            raise H2Error(frames.PROTOCOL_ERROR, "DATA on stream 0")
        size = len(payload)
        if size > self.recv_window:
            raise H2Error(frames.FLOW_CONTROL_ERROR, "DATA beyond the connection window")
        unacked = self.recv_unacked + size
        if unacked >= self.connection_threshold:
            self.write(window_update(0, unacked))
            self.recv_window += unacked - size
            self.recv_unacked = 0
        else:
            self.recv_window -= size
            self.recv_unacked = unacked
        stream = self.streams.get(stream_id)
        if stream is None:
            if stream_id > self.last_stream:
                raise H2Error(frames.PROTOCOL_ERROR, "DATA on an idle stream")
            return  # a closed stream's: ignored (RFC 9113 5.1), its window given back
        if stream.remote_closed:
            self.reset_stream(stream, frames.STREAM_CLOSED)
            return
        if size > stream.recv_window:
            self.reset_stream(stream, frames.FLOW_CONTROL_ERROR)
            return
        stream.recv_window -= size
        if flags & PADDED:
            if not payload or payload[0] >= size:
                raise H2Error(frames.PROTOCOL_ERROR, "bad padding")
            padding = payload[0] + 1
            payload = payload[1 : size - payload[0]]
            self.consumed(stream, padding)
        if payload:
            stream.receive(payload)
        if flags & END_STREAM and stream.id in self.streams:
            stream.close_remote()

    def consumed(self, stream: Stream, size: int) -> None:
        """Bytes of the stream read by its consumer: its window is given back (in steps of
        half a window, or at once by give_back when a message needs it)."""
        unacked = stream.unacked + size
        if unacked >= self.stream_threshold and not stream.remote_closed:
            self.write(window_update(stream.id, unacked))
            stream.recv_window += unacked
            stream.unacked = 0
        else:
            stream.unacked = unacked

    def give_back(self, stream: Stream, extra: int = 0) -> None:
        """Return the stream's consumed bytes now, and `extra` beyond its window."""
        increment = stream.unacked + extra
        if increment and not stream.remote_closed:
            self.write(window_update(stream.id, increment))
            stream.recv_window += increment
            stream.unacked = 0

    def on_headers(self, flags: int, stream_id: int, payload: bytes) -> None:
        if not self.settled:
            raise H2Error(frames.PROTOCOL_ERROR, "the preface must be followed by frames.SETTINGS")
        if not stream_id:
            raise H2Error(frames.PROTOCOL_ERROR, "HEADERS on stream 0")
        start, end = 0, len(payload)
        if flags & PADDED:
            if not payload:
                raise H2Error(frames.PROTOCOL_ERROR, "bad padding")
            start, end = 1, end - payload[0]
        if flags & frames.PRIORITY_FLAG:
            start += 5
        if start > end:
            raise H2Error(frames.PROTOCOL_ERROR, "bad HEADERS padding")
        if end - start > self.limits.max_header_block:
            raise H2Error(frames.ENHANCE_YOUR_CALM, "header block over its limit")
        if flags & END_HEADERS:
            self.header_block(stream_id, flags, payload[start:end])
        else:
            self.continuing = (stream_id, flags, bytearray(payload[start:end]))

    def on_continuation(self, flags: int, stream_id: int, payload: bytes) -> None:
        continuing = self.continuing
        if continuing is None or continuing[0] != stream_id:
            raise H2Error(frames.PROTOCOL_ERROR, "unexpected CONTINUATION")
        block = continuing[2]
        block += payload
        if len(block) > self.limits.max_header_block:
            raise H2Error(frames.ENHANCE_YOUR_CALM, "header block over its limit")
        if flags & END_HEADERS:
            self.continuing = None
            self.header_block(stream_id, continuing[1], bytes(block))

    def header_block(self, stream_id: int, flags: int, block: bytes) -> None:
        stream = self.streams.get(stream_id)
        if stream is not None or stream_id <= self.last_stream:
            # Trailers, or a closed stream's block: decoded all the same, for HPACK's table.
            well_formed = self.headers.trailers(block)
            if stream is None:
                return  # a stream we reset or finished: ignored (RFC 9113 5.1)
            if stream.remote_closed:
                self.reset_stream(stream, frames.STREAM_CLOSED)
            elif not flags & END_STREAM or not well_formed:
                self.reset_stream(stream, frames.PROTOCOL_ERROR)  # malformed (RFC 9113 8.1.1)
            else:
                stream.close_remote()
            return
        if not stream_id & 1:
            raise H2Error(frames.PROTOCOL_ERROR, "HEADERS on an even stream id")
        request = self.headers.request(block)
        self.last_stream = stream_id
        if request is None:
            self.write(rst_stream(stream_id, frames.PROTOCOL_ERROR))
        elif self.going_away or len(self.streams) >= self.limits.max_concurrent_streams:
            self.write(rst_stream(stream_id, frames.REFUSED_STREAM))
        else:
            stream = self.open_call(stream_id, request, bool(flags & END_STREAM))
            if stream is not None:
                self.streams[stream_id] = stream
                if flags & END_STREAM:
                    stream.close_remote()

    def on_settings(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id:
            raise H2Error(frames.PROTOCOL_ERROR, "frames.SETTINGS on a stream")
        if flags & frames.ACK:
            if payload:
                raise H2Error(frames.FRAME_SIZE_ERROR, "frames.SETTINGS frames.ACK with a payload")
            return
        if len(payload) % 6:
            raise H2Error(frames.FRAME_SIZE_ERROR, "bad frames.SETTINGS length")
        grown = False
        for offset in range(0, len(payload), 6):
            key = payload[offset] << 8 | payload[offset + 1]
            value = U32.unpack_from(payload, offset + 2)[0]
            if key == frames.ENABLE_PUSH and value > 1:
                raise H2Error(frames.PROTOCOL_ERROR, "bad SETTINGS_ENABLE_PUSH")
            if key == frames.INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    raise H2Error(frames.FLOW_CONTROL_ERROR, "initial window too large")
                delta = value - self.initial_window
                self.initial_window = value
                grown = grown or delta > 0
                for stream in self.streams.values():  # at most max_concurrent_streams
                    stream.send_window += delta
                    if stream.send_window > MAX_WINDOW:
                        raise H2Error(frames.FLOW_CONTROL_ERROR, "a stream window past 2^31-1")
            elif key == frames.MAX_FRAME_SIZE:
                if not 16384 <= value <= 16777215:
                    raise H2Error(frames.PROTOCOL_ERROR, "bad SETTINGS_MAX_FRAME_SIZE")
                self.max_frame = value
        self.settled = True
        self.write(frame(frames.SETTINGS, frames.ACK, 0))
        if grown:
            self.flush_blocked()

    def on_window_update(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise H2Error(frames.FRAME_SIZE_ERROR, "bad frames.WINDOW_UPDATE length")
        increment = U32.unpack(payload)[0] & MAX_WINDOW
        if not stream_id:
            if not increment:
                raise H2Error(frames.PROTOCOL_ERROR, "zero frames.WINDOW_UPDATE")
            self.send_window += increment
            if self.send_window > MAX_WINDOW:
                raise H2Error(frames.FLOW_CONTROL_ERROR, "connection window past 2^31-1")
            self.flush_blocked()
            return
        if stream_id > self.last_stream:
            raise H2Error(frames.PROTOCOL_ERROR, "frames.WINDOW_UPDATE on an idle stream")
        stream = self.streams.get(stream_id)
        if stream is None:
            return  # closed
        if not increment:
            self.reset_stream(stream, frames.PROTOCOL_ERROR)
            return
        stream.send_window += increment
        if stream.send_window > MAX_WINDOW:
            self.reset_stream(stream, frames.FLOW_CONTROL_ERROR)
        elif stream.pending:
            stream.flush()

    def on_rst_stream(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise H2Error(frames.FRAME_SIZE_ERROR, "frames.RST_STREAM of the wrong length")
        if not stream_id:
            raise H2Error(frames.PROTOCOL_ERROR, "frames.RST_STREAM on stream 0")
        if stream_id > self.last_stream:
            raise H2Error(frames.PROTOCOL_ERROR, "frames.RST_STREAM on an idle stream")
        stream = self.streams.pop(stream_id, None)
        if stream is None:
            return
        self.blocked.pop(stream, None)
        stream.on_reset()
        self.stream_ended(stream)
        if not stream.headers_sent:  # reset before any reply: counted
            self.resets -= 1
            if self.resets < 0:
                raise H2Error(frames.ENHANCE_YOUR_CALM, "too many streams reset")

    def on_priority(self, stream_id: int, payload: bytes) -> None:
        if not stream_id:
            raise H2Error(frames.PROTOCOL_ERROR, "frames.PRIORITY on stream 0")
        if len(payload) != 5:
            stream = self.streams.get(stream_id)
            if stream is None:  # no stream to reset: the connection's error, then
                raise H2Error(frames.FRAME_SIZE_ERROR, "frames.PRIORITY of the wrong length")
            self.reset_stream(stream, frames.FRAME_SIZE_ERROR)

    # -- sending ------------------------------------------------------------------------------

    def send_data(self, stream: Stream, data: bytes | bytearray, head: bytes = b"") -> None:
        """Send as much of `head` and `data` (a gRPC message's prefix, its payload) as both
        windows allow; keep the rest as pending. Each part is written as it is: the loop
        turn's writes are joined once (or, when large, written as they are)."""
        size = len(head) + len(data)
        if size <= self.max_frame and size <= self.send_window and size <= stream.send_window:
            # The usual case: all of it, in one frame.
            self.send_window -= size
            stream.send_window -= size
            self.write(frames.header(DATA, 0, stream.id, size))
            if head:
                self.write(head)
            if isinstance(data, bytes):
                self.write(data)
            else:
                self.write(bytes(data))
                if data is stream.pending:
                    data.clear()
            return
        if head and (size > self.send_window or size > stream.send_window):
            # Short windows (a peer not reading): rare enough to copy once and go on.
            data, head = head + data, b""
            size = len(data)
        allowed = min(size, self.send_window, stream.send_window)
        if allowed > 0:
            if isinstance(data, bytes):
                view = memoryview(data)
            else:  # a stream's pending data: what goes is copied out, the rest stays
                with memoryview(data) as whole:
                    view = memoryview(bytes(whole[:allowed]))
            # Each frame as its header and views: the head goes first, in the first frame
            # (a frame holds at least 16 KiB).
            skip = len(head)
            step = self.max_frame
            for sent in range(0, allowed, step):
                end = min(sent + step, allowed)
                self.write(frames.header(DATA, 0, stream.id, end - sent))
                if head and not sent:
                    self.write(head)
                self.write(view[max(sent - skip, 0) : end - skip])
            self.send_window -= allowed
            stream.send_window -= allowed
        if isinstance(data, bytearray):
            del data[:allowed]  # a stream's pending data, sent in part
            pending = data
        else:
            pending = bytearray(memoryview(data)[allowed - len(head) :])
        stream.pending = pending
        if pending:
            self.blocked[stream] = None
        else:
            self.blocked.pop(stream, None)

    def flush_blocked(self) -> None:
        for stream in list(self.blocked):
            if self.send_window <= 0:
                break
            stream.flush()

    def reset_stream(self, stream: Stream, code: int) -> None:
        """A stream error (RFC 9113 5.4.2): RST_STREAM, and the stream is over."""
        self.write(rst_stream(stream.id, code))
        self.remove(stream)
        stream.on_reset()

    def remove(self, stream: Stream) -> None:
        if self.streams.pop(stream.id, None) is not None:
            self.blocked.pop(stream, None)
            self.stream_ended(stream)

    def close_if_idle(self) -> None:
        if self.going_away and not self.streams and not self.closed:
            self.closed = True
            self.ended()

    def go_away(self) -> None:
        """No new streams; close once the current ones are done."""
        if not self.going_away:
            self.going_away = True
            self.write(frames.goaway(self.last_stream, frames.NO_ERROR))
        self.close_if_idle()
