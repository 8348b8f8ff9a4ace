"""A raw HTTP/2 peer for the transport's tests: frames out as written, frames in as parsed,
no flow control or protocol rules of its own (so a test can break them)."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from typing import NamedTuple

import hpack
from hpack.hpack import encode_integer

from extproc.transport import frames as h2
from extproc.transport.frames import PREFACE, frame

OPEN = PREFACE + frame(h2.SETTINGS, 0, 0)


class Frame(NamedTuple):
    kind: int
    flags: int
    stream: int
    payload: bytes


def frames(data: bytes) -> list[Frame]:
    out, offset = [], 0
    while len(data) - offset >= 9:
        high, low, kind, flags, stream = struct.unpack_from(">BHBBI", data, offset)
        length = high << 16 | low
        out.append(Frame(kind, flags, stream, data[offset + 9 : offset + 9 + length]))
        offset += 9 + length
    return out


def message(payload: bytes) -> bytes:
    """A gRPC message: uncompressed, length-prefixed."""
    return struct.pack(">BI", 0, len(payload)) + payload


def request_block(encoder: hpack.Encoder, path: str = "/test.Echo/Chat") -> bytes:
    """The HEADERS block of a gRPC call to `path`."""
    return encoder.encode(
        [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", path),
            (":authority", "x"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ]
    )


def hpack_request(path_field: bytes, table_updates: bytes = b"") -> bytes:
    """A request block written by hand: the fixed fields from HPACK's static table or as
    literals that leave the dynamic table alone, the path as given."""
    return (
        table_updates
        + b"\x83\x86"  # :method POST, :scheme http
        + path_field
        + b"\x01\x01x"  # :authority x, without indexing
        + b"\x0f\x10\x10application/grpc"  # content-type, without indexing
    )


def path_literal(path: bytes) -> bytes:
    """:path as a literal that leaves the dynamic table alone."""
    return b"\x04" + bytes(encode_integer(len(path), 7)) + path


def path_added(path: bytes) -> bytes:
    """:path as a literal added to the dynamic table (it becomes entry 62)."""
    return b"\x44" + bytes(encode_integer(len(path), 7)) + path


def goaway_code(received: bytes | list[Frame]) -> int | None:
    found = frames(received) if isinstance(received, bytes) else received
    for kind, _, _, payload in found:
        if kind == h2.GOAWAY:
            return int(struct.unpack(">I", payload[4:8])[0])
    return None


def rst_codes(found: list[Frame]) -> dict[int, int]:
    return {
        f.stream: int(struct.unpack(">I", f.payload)[0]) for f in found if f.kind == h2.RST_STREAM
    }


async def raw(port: int, data: bytes, read_for: float = 0.5) -> bytes:
    """Send data on a new connection; what came back within read_for of quiet."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    received = b""
    try:
        while chunk := await asyncio.wait_for(reader.read(65536), read_for):
            received += chunk
    except TimeoutError:
        pass
    writer.close()
    return received


class Peer:
    """One connection, kept open: send bytes, read frames until something arrives."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.buffer = b""
        self.received: list[Frame] = []
        self.closed = False
        self.sending: asyncio.Future[None] | None = None  # a send left to run

    @classmethod
    async def connect(cls, port: int, opening: bytes = OPEN) -> Peer:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        peer = cls(reader, writer)
        if opening:
            await peer.send(opening)
        return peer

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def _read(self, within: float) -> bool:
        """One read; False at the end of the stream."""
        try:
            chunk = await asyncio.wait_for(self.reader.read(1 << 20), within)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.closed = True
            return False
        self.buffer += chunk
        offset = 0
        while len(self.buffer) - offset >= 9:
            high, low = struct.unpack_from(">BH", self.buffer, offset)
            end = offset + 9 + (high << 16 | low)
            if end > len(self.buffer):
                break
            self.received += frames(self.buffer[offset:end])
            offset = end
        self.buffer = self.buffer[offset:]
        return True

    async def until(self, done: Callable[[list[Frame]], bool], within: float = 10) -> list[Frame]:
        """Frames received so far, once done(them) holds (or the connection closed)."""
        deadline = asyncio.get_running_loop().time() + within
        while not done(self.received):
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise TimeoutError(f"not done within {within} s: {self.received[-5:]}")
            if not await self._read(left):
                break
        return self.received

    async def closing(self, within: float = 10) -> list[Frame]:
        """Every frame until the server closes the connection."""
        return await self.until(lambda _: self.closed, within)

    async def quiet(self, seconds: float) -> list[Frame]:
        """Frames that arrive until none has for `seconds`."""
        try:
            while await self._read(seconds):
                pass
        except TimeoutError:
            pass
        return self.received

    def close(self) -> None:
        if self.sending is not None:
            self.sending.cancel()
        self.writer.close()
