"""`python bench/large_messages.py`: the transport alone with large messages, in
process: a message of each SIZE sent to one connection in 64 KiB reads (as its socket
gives them: frames cut anywhere), and echoed back, CPU per message and the Python memory
the connection holds at its peak, as a multiple of the message.

The transport writes what it sends to a stand-in that keeps it as given, as a socket's
transport writes at once: a copy made for the writes counts in the peak. CPU is the best
of ROUNDS messages (process time, the heap already grown by the first); figures are
printed, not asserted.
"""

from __future__ import annotations

import asyncio
import os
import struct
import sys
import time
import tracemalloc
from pathlib import Path

import hpack

ROOT = Path(__file__).resolve().parent.parent
sys.path[0:0] = [str(ROOT), str(ROOT / "bench")]

from bench.run import machine  # noqa: E402
from bench.transport import (  # noqa: E402
    END_HEADERS,
    FIELDS,
    HEADERS,
    OPENING,
    PATH,
    _Dropped,
    data_frames,
    frame,
    in_reads,
)
from extproc import transport  # noqa: E402
from extproc.transport.server import Connection  # noqa: E402

SIZES = [int(n) for n in os.environ.get("LARGE_MESSAGE_SIZES", "409600 5242880").split()]
ROUNDS = int(os.environ.get("LARGE_MESSAGE_ROUNDS", "20"))


class _Echo:
    """A session that answers each message with itself."""

    def message(self, message: bytes) -> bytes:
        return message

    def close(self, failed: bool) -> None:
        pass


class _Held(_Dropped):
    """A transport that keeps what it is given without copying it, and counts it."""

    def __init__(self) -> None:
        self.kept: list[bytes | memoryview] = []
        self.written = 0

    def write(self, data: bytes | memoryview) -> None:
        self.kept.append(data)
        self.written += len(data)


def reads_of(size: int) -> list[bytes]:
    """One stream's frames for a message of `size` bytes, in the reads a socket gives."""
    body = bytes(range(256)) * (size // 256 + 1)
    whole = struct.pack(">BI", 0, size) + body[:size]
    opening = OPENING + frame(HEADERS, END_HEADERS, 1, hpack.Encoder().encode(FIELDS))
    return in_reads(opening + data_frames(1, whole, True))


async def echo(server: transport.Server, sent: list[bytes], size: int) -> float:
    """CPU seconds for one message and its echo, on a new connection."""
    conn = Connection(server)
    out = _Held()
    conn.connection_made(out)  # type: ignore[arg-type]
    started = time.process_time()
    for data in sent:
        conn.data_received(data)
    spent = time.process_time() - started
    if out.written < size:
        raise RuntimeError("the message was not echoed")
    conn.connection_lost(None)
    return spent


async def main() -> None:
    print(machine())
    server = transport.Server(max_message=64 * 1024 * 1024)
    server.add(PATH, transport.Method.of_session(lambda _: _Echo(), bytes, bytes))
    print(f"a message in 64 KiB reads and its echo, CPU best of {ROUNDS}:")
    for size in SIZES:
        sent = reads_of(size)
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        await echo(server, sent, size)
        peak = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.stop()
        best = min([await echo(server, sent, size) for _ in range(ROUNDS)])
        print(
            f"  {size:>9,} bytes: {best * 1e3:6.2f} ms CPU, peak {peak / size:.2f}x the message",
            flush=True,
        )


if __name__ == "__main__":
    asyncio.run(main())
