"""gRPC over HTTP/2 on the asyncio event loop, for the ext_proc socket and the health port.

grpc.aio hands every message between its C core's threads and the event loop; for
ext_proc's many small messages that hand-off, not the gateway's logic, was most of the
CPU per request. This server parses HTTP/2 frames on the loop itself: a message arrives
in data_received, its stream's handler runs, the reply leaves with transport.write, with
no thread in between.

It implements what gRPC servers need of RFC 9113 and the gRPC wire format: the preface,
SETTINGS, flow control both ways, HEADERS with CONTINUATION (HPACK through the hpack
package), DATA with padding, RST_STREAM, PING, GOAWAY (graceful shutdown),
length-prefixed messages (uncompressed only), trailers with grpc-status, and
trailers-only errors. Handlers are bidirectional streams (a context with
read/write/abort), unary calls, or sessions: a stream whose messages are answered inside
data_received, the replies sent when it returns (the ext_proc stream). Whatever a peer
sends, the damage stays within its connection, and what it can make the server hold is
bounded by Limits.

Modules: limits (the bounds), frames (bytes), headers (HPACK and request checks), stream
and h2 (the HTTP/2 state machine, without I/O), calls (gRPC calls on its streams), budget
(room for large messages), server (the asyncio driver), health (grpc.health.v1).
"""

from extproc.transport.calls import (
    CANCELLED,
    DEADLINE_EXCEEDED,
    EOF,
    INTERNAL,
    INVALID_ARGUMENT,
    NOT_FOUND,
    OK,
    RESOURCE_EXHAUSTED,
    UNIMPLEMENTED,
    UNKNOWN,
    Aborted,
    Context,
    Method,
    RpcError,
    Session,
)
from extproc.transport.health import Health
from extproc.transport.limits import PROBES, Limits
from extproc.transport.server import Server

__all__ = [
    "CANCELLED",
    "DEADLINE_EXCEEDED",
    "EOF",
    "INTERNAL",
    "INVALID_ARGUMENT",
    "NOT_FOUND",
    "OK",
    "PROBES",
    "RESOURCE_EXHAUSTED",
    "UNIMPLEMENTED",
    "UNKNOWN",
    "Aborted",
    "Context",
    "Health",
    "Limits",
    "Method",
    "RpcError",
    "Server",
    "Session",
]
