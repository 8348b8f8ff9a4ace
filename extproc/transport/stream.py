"""One HTTP/2 stream's state, as the connection (h2.H2Connection) sees it, and what it
tells the stream; calls.Context is the gRPC call built on it."""

from __future__ import annotations


class Stream:
    """One stream as the connection sees it; calls.Context is the gRPC call on it."""

    __slots__ = (
        "headers_sent",
        "id",
        "pending",
        "recv_window",
        "remote_closed",
        "reset",
        "send_window",
        "unacked",
    )

    def __init__(self, stream_id: int, recv_window: int, send_window: int) -> None:
        self.id = stream_id
        self.recv_window = recv_window  # what the peer may still send
        self.unacked = 0  # consumed, not yet given back
        self.send_window = send_window
        self.pending = bytearray()  # DATA waiting for a window
        self.headers_sent = False
        self.remote_closed = False
        self.reset = False

    def receive(self, data: bytes) -> None:
        """DATA for the stream (its window already charged)."""

    def close_remote(self) -> None:
        """The peer's side is done (END_STREAM)."""
        self.remote_closed = True

    def on_reset(self) -> None:
        """The stream ended without a clean finish (reset by either side, or the
        connection went away)."""
        self.reset = True

    def flush(self) -> None:
        """The send window grew: pending DATA may go."""
