"""The HTTP/2 state machine without I/O: bytes in, what it writes and opens out."""

from __future__ import annotations

import hpack
import pytest
from hpack.hpack import encode_integer
from hypothesis import given, settings
from hypothesis import strategies as st

from extproc.transport import frames as h2
from extproc.transport.budget import Budget
from extproc.transport.frames import frame, header_frames
from extproc.transport.h2 import H2Connection
from extproc.transport.headers import H2Error, HeaderDecoder, Request
from extproc.transport.limits import Limits
from extproc.transport.received import PREFIX, SMALL, Received
from extproc.transport.stream import Stream
from tests.service.h2peer import OPEN, frames, hpack_request, path_added, path_literal


class Sink(Stream):
    """A stream whose consumer takes every byte as it comes, or none."""

    def __init__(self, conn: Recorder, stream_id: int) -> None:
        super().__init__(stream_id, conn.limits.initial_window_size, conn.initial_window)
        self.conn = conn
        self.received = b""

    def receive(self, data: bytes) -> None:
        self.received += data
        if self.conn.consuming:
            self.conn.consumed(self, len(data))


class Recorder(H2Connection):
    def __init__(self, limits: Limits | None = None, consuming: bool = True) -> None:
        super().__init__(limits or Limits())
        self.out = b""
        self.opened: list[tuple[int, Request]] = []
        self.consuming = consuming
        self.over = False

    def write(self, data: bytes) -> None:
        self.out += data

    def open_call(self, stream_id: int, request: Request, end_stream: bool) -> Stream | None:
        self.opened.append((stream_id, request))
        return Sink(self, stream_id)

    def ended(self) -> None:
        self.over = True

    def sent(self) -> list[tuple[int, int, int, bytes]]:
        found, self.out = frames(self.out), b""
        return [tuple(f) for f in found]  # type: ignore[misc]


BLOCK = hpack_request(path_literal(b"/a.B/C"))


@pytest.mark.sources
def test_the_preamble_advertises_the_limits() -> None:
    conn = Recorder()
    [settings, window] = frames(conn.preamble())
    advertised = {
        int.from_bytes(settings.payload[i : i + 2]): int.from_bytes(settings.payload[i + 2 : i + 6])
        for i in range(0, len(settings.payload), 6)
    }
    assert advertised == {
        h2.ENABLE_PUSH: 0,
        h2.MAX_CONCURRENT_STREAMS: 100,
        h2.INITIAL_WINDOW_SIZE: 65535,
        h2.MAX_FRAME_SIZE: 16384,
        h2.MAX_HEADER_LIST_SIZE: 16384,
    }
    # The connection window covers every stream's window at once.
    assert int.from_bytes(window.payload) + 65535 == 100 * 65535


@pytest.mark.sources
def test_a_stream_window_comes_back_as_it_is_consumed() -> None:
    conn = Recorder()
    conn.receive(OPEN + frame(h2.HEADERS, h2.END_HEADERS, 1, BLOCK))
    conn.sent()
    conn.receive(frame(h2.DATA, 0, 1, bytes(16384)))
    assert conn.sent() == []  # under half the window: nothing yet
    conn.receive(frame(h2.DATA, 0, 1, bytes(16384)))
    assert conn.sent() == [(h2.WINDOW_UPDATE, 0, 1, (32768).to_bytes(4))]


@pytest.mark.sources
def test_the_reserved_bit_of_a_stream_id_is_ignored() -> None:
    conn = Recorder()
    conn.receive(OPEN + frame(h2.HEADERS, h2.END_HEADERS, 1, BLOCK))
    header = bytearray(frame(h2.DATA, 0, 1, b"payload"))
    header[5] |= 0x80  # RFC 9113 4.1: set by a peer, ignored by the receiver
    conn.receive(bytes(header))
    assert conn.streams[1].received == b"payload"  # type: ignore[attr-defined]
    assert not conn.over


@pytest.mark.sources
def test_unconsumed_data_stops_at_the_window() -> None:
    conn = Recorder(consuming=False)
    conn.receive(OPEN + frame(h2.HEADERS, h2.END_HEADERS, 1, BLOCK))
    conn.sent()
    conn.receive(b"".join(frame(h2.DATA, 0, 1, bytes(16383)) for _ in range(4)))
    assert conn.sent() == []
    conn.receive(frame(h2.DATA, 0, 1, bytes(4)))  # 65,536 bytes: one past the window
    assert conn.sent() == [(h2.RST_STREAM, 0, 1, h2.FLOW_CONTROL_ERROR.to_bytes(4))]
    assert not conn.streams


@pytest.mark.sources
def test_a_turn_decodes_about_one_header_block() -> None:
    """Header blocks that must be decoded (not cached) stop a turn once it has decoded a
    block's worth of bytes; the rest waits for the next turn (receive again)."""
    conn = Recorder()
    value = b"a" * 8000
    block = BLOCK + b"\x00\x01x" + bytes(encode_integer(len(value), 7)) + value
    data = b"".join(frame(h2.HEADERS, h2.END_HEADERS, s, block) for s in range(1, 21, 2))
    conn.receive(OPEN + data)
    assert len(conn.opened) == 2 and conn.suspended
    turns = 1
    while conn.suspended:
        conn.receive(b"")
        turns += 1
    assert len(conn.opened) == 10 and turns == 5


def test_the_header_cache_holds_a_few_small_blocks() -> None:
    decoder = HeaderDecoder(Limits())
    for index in range(100):
        decoder.request(hpack_request(path_literal(b"/a.B/%d" % index)))
    large = hpack_request(path_literal(b"/a.B/" + b"x" * 2000))
    decoder.request(large)
    assert len(decoder.cache) == 8 and large not in decoder.cache


def test_the_header_cache_forgets_what_an_emptied_table_named() -> None:
    decoder = HeaderDecoder(Limits())
    assert decoder.request(hpack_request(path_added(b"/a.B/C"))) is not None
    indexed = hpack_request(b"\xbe")
    assert decoder.request(indexed) == Request(b"/a.B/C", (("content-type", "application/grpc"),))
    assert indexed in decoder.cache
    # A size update to 0 empties the table, and back to 4096: the entry is gone.
    decoder.request(hpack_request(path_literal(b"/a.B/C"), table_updates=b"\x20\x3f\xe1\x1f"))
    with pytest.raises(H2Error) as caught:
        decoder.request(indexed)
    assert caught.value.code == h2.COMPRESSION_ERROR


def test_a_header_list_over_its_limit_ends_the_connection() -> None:
    decoder = HeaderDecoder(Limits(max_header_list_size=4096))
    encoder = hpack.Encoder()
    with pytest.raises(H2Error) as caught:
        decoder.request(BLOCK + encoder.encode([(b"x-big", b"a" * 5000)], huffman=True))
    assert caught.value.code == h2.ENHANCE_YOUR_CALM


def test_a_header_block_past_the_peers_frame_size_continues() -> None:
    block = bytes(range(256)) * 160  # 40,960 bytes
    found = frames(header_frames(5, block, True, 16384))
    assert [(f.kind, f.flags, len(f.payload)) for f in found] == [
        (h2.HEADERS, h2.END_STREAM, 16384),
        (h2.CONTINUATION, 0, 16384),
        (h2.CONTINUATION, h2.END_HEADERS, 8192),
    ]
    assert b"".join(f.payload for f in found) == block


class Waiter:
    def __init__(self) -> None:
        self.admitted = 0

    def _admitted(self, amount: int) -> None:
        self.admitted = amount


def test_the_budget_admits_in_order_as_room_comes_back() -> None:
    budget = Budget(100)
    first, second, third = Waiter(), Waiter(), Waiter()
    assert budget.ask(first, 70, 0.0)  # type: ignore[arg-type]
    assert not budget.ask(second, 50, 0.0)  # type: ignore[arg-type]
    assert not budget.ask(third, 10, 0.0)  # type: ignore[arg-type]  # waits its turn
    budget.drop(first, 1.0)  # type: ignore[arg-type]
    assert (second.admitted, third.admitted, budget.free) == (50, 10, 40)
    assert budget.overdue(0.5) == [] and set(budget.overdue(2.0)) == {second, third}


@pytest.mark.sources
@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.integers(0, 16_384), min_size=1, max_size=6),
    st.lists(st.integers(1, 70_000), min_size=1, max_size=40),
    st.integers(0, 4),
)
def test_reads_cut_anywhere_deliver_the_same_frames(
    sizes: list[int], cuts: list[int], large_blocks: int
) -> None:
    """A connection's bytes in reads of any sizes (a frame's header or payload cut
    anywhere) give its streams what one read gives, and write the same, also when header
    blocks that must be decoded stop a turn: what a read leaves is an incomplete frame, or
    a turn to come."""
    payloads = [bytes([n % 251]) * n for n in sizes]
    value = b"a" * 8000  # two of these are more than a turn decodes
    large = BLOCK + b"\x00\x01x" + bytes(encode_integer(len(value), 7)) + value
    data = OPEN + frame(h2.HEADERS, h2.END_HEADERS, 1, BLOCK)
    data += b"".join(
        frame(h2.HEADERS, h2.END_HEADERS, 3 + 2 * s, large) for s in range(large_blocks)
    )
    data += b"".join(frame(h2.DATA, 0, 1, p) for p in payloads) + frame(h2.PING, 0, 0, bytes(8))
    conns = (Recorder(), Recorder())
    for conn, reads in zip(conns, ([data], _pieces(data, cuts)), strict=True):
        for read in reads:
            conn.receive(read)
            while conn.suspended:
                conn.receive(b"")
            assert not conn.buffer or conn.partial or not conn.preface
    whole, apart = conns
    got = [conn.streams[1].received for conn in conns]  # type: ignore[attr-defined]
    assert got == [b"".join(payloads)] * 2 and len(apart.opened) == 1 + large_blocks
    assert apart.out == whole.out and not apart.over and not apart.buffer


def _pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    """data cut into pieces of the sizes in cuts, over and over."""
    pieces: list[bytes] = []
    at = 0
    while at < len(data):
        for cut in cuts:
            pieces.append(data[at : at + cut])
            at += cut
    return [piece for piece in pieces if piece]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.integers(0, 20_000), min_size=1, max_size=8),
    st.lists(st.integers(1, 30_000), min_size=1, max_size=30),
)
def test_received_bytes_give_each_message_whole(sizes: list[int], cuts: list[int]) -> None:
    """gRPC messages added in pieces of any sizes come out whole and in order, each as
    soon as it is in, and the parts kept stay few for the bytes held."""
    messages = [bytes([n % 251, 7]) * (n // 2) for n in sizes]
    data = b"".join(PREFIX.pack(0, len(m)) + m for m in messages)
    received = Received()
    out: list[bytes] = []
    at = 0
    for piece in _pieces(data, cuts):
        received.add(piece)
        at += len(piece)
        while (head := received.prefix()) is not None and received.size >= 5 + head[1]:
            assert head == (0, len(messages[len(out)]))
            out.append(received.cut(5 + head[1]))
        assert received.size == at - sum(5 + len(m) for m in out)
        assert len(received._parts) <= 2 * received.size // SMALL + 2
    assert out == messages and received.size == 0
