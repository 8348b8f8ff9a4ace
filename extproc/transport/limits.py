"""Every resource a peer can make the server hold, named with its bound.

One frozen value per Server (as h2's H2Configuration and grpcio's channel options): the
HTTP/2 state machine and the gRPC calls enforce these, the tests drive each with raw
frames. Not in the YAML config: the defaults fit Envoy, the only peer of the ext_proc
port, and kubelet on the health port (docs/h2grpc.md).
"""

from __future__ import annotations

from dataclasses import dataclass

KIB = 1024
MIB = 1024 * KIB


@dataclass(frozen=True)
class Limits:
    # -- connections ---------------------------------------------------------------------
    # Envoy's default circuit breaker for a cluster's connections (max_connections).
    max_connections: int = 1024
    # The preface and the first SETTINGS must arrive within this (grpcio: 120 s; a real
    # client sends both in its first packet).
    handshake_timeout: float = 10.0
    # A connection with no stream for this long is closed with GOAWAY (grpcio:
    # max_connection_idle, unset by default; Envoy's own upstream idle_timeout is 1 h and
    # the rendered ext_proc cluster's is shorter than this, so Envoy closes first).
    idle_timeout: float = 600.0

    # -- streams -------------------------------------------------------------------------
    # SETTINGS_MAX_CONCURRENT_STREAMS: RFC 9113 6.5.2 recommends no fewer than 100;
    # nghttp2's default and Envoy's edge best practice. Envoy opens another connection
    # past it (the rendered cluster says the same, so none is refused).
    max_concurrent_streams: int = 100
    # Streams the peer resets before any reply (rapid reset, CVE-2023-44487): a token
    # bucket, nghttp2's figures: a burst of 1000, then 33 a second. Past it: GOAWAY
    # ENHANCE_YOUR_CALM.
    reset_burst: int = 1000
    reset_rate: float = 33.0

    # -- flow control and messages --------------------------------------------------------
    # SETTINGS_INITIAL_WINDOW_SIZE: a stream's receive window, given back as its messages
    # are consumed: what a stream holds unread. RFC 9113's default (65,535), which a peer
    # may assume before it sees our SETTINGS.
    initial_window_size: int = 65535
    # The largest gRPC message received (grpcio's default max_receive_message_length).
    # The ext_proc server passes the config's request body limit plus protobuf overhead.
    max_message: int = 4 * MIB
    # Message bytes beyond the stream windows, for all streams of the server together: a
    # message larger than its window waits for room here (0: twice max_message, so the
    # largest message always fits).
    message_budget: int = 0
    # A message that needed room beyond its window must arrive within this.
    message_timeout: float = 30.0

    # -- frames and headers ----------------------------------------------------------------
    # SETTINGS_MAX_FRAME_SIZE: RFC 9113's minimum and default, grpcio's.
    max_frame_size: int = 16 * KIB
    # SETTINGS_MAX_HEADER_LIST_SIZE (decoded, RFC 9113 6.5.2 counting): grpcio's hard
    # metadata limit (GRPC_ARG_ABSOLUTE_MAX_METADATA_SIZE).
    max_header_list_size: int = 16 * KIB
    # A header block as sent (HEADERS + CONTINUATION), before HPACK decoding: the
    # pure-Python decoder's worst case for this size is a few milliseconds (docs/h2grpc.md).
    max_header_block: int = 8 * KIB
    # Decoded header blocks kept per connection (Envoy sends the same block on every
    # stream), each at most this many bytes as sent.
    header_cache_entries: int = 8
    header_cache_block: int = 1 * KIB

    # -- writing ---------------------------------------------------------------------------
    # Past this many bytes unsent in the transport, the connection stops reading until
    # the peer reads (asyncio's default high-water mark).
    write_buffer: int = 64 * KIB

    def __post_init__(self) -> None:
        if self.max_frame_size < 16 * KIB or self.max_frame_size > 16 * MIB - 1:
            raise ValueError("max_frame_size outside RFC 9113's range")
        if not 0 < self.initial_window_size < 2**31:
            raise ValueError("initial_window_size outside RFC 9113's range")
        if self.message_budget and self.message_budget < self.max_message:
            raise ValueError("message_budget must hold the largest message")

    @property
    def budget(self) -> int:
        """Message bytes beyond the stream windows, server-wide."""
        return self.message_budget or 2 * (self.max_message + 5)

    @property
    def connection_window(self) -> int:
        """The connection's receive window: every stream's at once, so it never binds
        before theirs do (it is given back as DATA arrives, within those windows)."""
        return min(self.max_concurrent_streams * self.initial_window_size, 2**31 - 1)


# The health port: kubelet's probes (a Check now and then, a Watch at most) and nothing
# else. Small messages, few streams and connections, a short idle time.
PROBES = Limits(
    max_connections=64,
    idle_timeout=60.0,
    max_concurrent_streams=16,
    max_message=4 * KIB,
    header_cache_entries=2,
)
