"""Traffic capture: sampled exchanges and MCP requests as JSON lines, in a size-bounded
rotating file.

A record holds what the provider or MCP server saw and said — the request body as sent
(after policy redaction and translation) and the response body or stream events as
received — with timing, usage and policy decisions. Headers are never captured, so neither
the client's key nor the provider's can be.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from extproc.glob import Glob
from extproc.sse import Parser


@dataclass(frozen=True, slots=True)
class Rate:
    """A rule naming models is for LLM exchanges, one naming MCP servers for MCP requests;
    one naming neither (or both) for both."""

    models: tuple[Glob, ...]
    tenants: frozenset[str]
    rate: float
    mcp_servers: tuple[Glob, ...] = ()

    def applies(self, model: str, tenant: str) -> bool:
        """To an LLM exchange of `model`."""
        if self.models:
            if not any(g.match(model) for g in self.models):
                return False
        elif self.mcp_servers:
            return False
        return not self.tenants or tenant in self.tenants

    def applies_to_server(self, server: str, tenant: str) -> bool:
        """To an MCP request to `server` ("": one the virtual server answers itself)."""
        if self.mcp_servers:
            if not any(g.match(server) for g in self.mcp_servers):
                return False
        elif self.models:
            return False
        return not self.tenants or tenant in self.tenants


class Sampler:
    """The capture rate of a (model, tenant) or an (MCP server, tenant): the first matching
    rule's, else the default. Sampling is deterministic per rate (every 1/rate-th), and
    counted apart for exchanges and MCP requests, so a rate of 0.1 captures exactly one
    exchange in ten and one MCP request in ten."""

    def __init__(self, default: float, rules: Sequence[Rate]) -> None:
        self.default = default
        self.rules = tuple(rules)
        self._credit: dict[tuple[bool, float], float] = {}

    def rate(self, model: str, tenant: str) -> float:
        for rule in self.rules:
            if rule.applies(model, tenant):
                return rule.rate
        return self.default

    def sample(self, model: str, tenant: str) -> bool:
        return self._take(False, self.rate(model, tenant))

    def sample_mcp(self, server: str, tenant: str) -> bool:
        rate = self.default
        for rule in self.rules:
            if rule.applies_to_server(server, tenant):
                rate = rule.rate
                break
        return self._take(True, rate)

    def _take(self, mcp: bool, rate: float) -> bool:
        if rate <= 0:
            return False
        key = (mcp, rate)
        credit = self._credit.get(key, 1.0 - rate) + rate
        taken = credit >= 1.0
        self._credit[key] = credit - 1.0 if taken else credit
        return taken


def worker_path(path: str, worker: int) -> str:
    """Worker 0 writes the configured capture file; worker N (service.workers) writes
    <stem>-worker<N><ext>."""
    if not worker:
        return path
    original = Path(path)
    return str(original.with_name(f"{original.stem}-worker{worker}{original.suffix}"))


class Sink:
    """Appends lines to `path`; past `max_bytes` the file is rotated to path.1 (path.1 to
    path.2, ...), keeping `max_files` rotated files. Disk use is bounded by
    (max_files + 1) x max_bytes.

    A line that cannot be written (disk full, a file size limit, a rotation that fails)
    is dropped whole: the file is cut back to where the line began and the current file
    stays open, so the next line tries again and never lands past the bound."""

    def __init__(self, path: str | Path, max_bytes: int, max_files: int) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.max_files = max_files
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self._open()
        self._size = self._file.tell()
        self._moved = False  # the file was rotated away; its successor is not open yet

    def _open(self) -> io.FileIO:
        # Unbuffered: a failed write leaves no bytes behind to be flushed later.
        return io.FileIO(self.path, "ab")

    def write(self, record: dict[str, Any]) -> str | None:
        """Append one record; the cause (an errno name, or "unencodable") when it could
        not be."""
        try:
            line = orjson.dumps(record, default=str) + b"\n"
        except orjson.JSONEncodeError:
            # Nested deeper than orjson writes (254 levels), as an MCP message may be
            # (`mcp.max_depth` goes to 512).
            return "unencodable"
        try:
            if self._size and self._size + len(line) > self.max_bytes:
                self._rotate()
            self._append(line)
        except OSError as error:
            return errno.errorcode.get(error.errno or 0, type(error).__name__)
        return None

    def _append(self, line: bytes) -> None:
        view = memoryview(line)
        try:
            while view:
                written = self._file.write(view)
                if not written:
                    # A file that takes no bytes (None: it would block; 0) would take none
                    # the next time either: the line fails like any write that cannot be.
                    raise OSError(errno.EIO, f"the capture file took no bytes ({written!r})")
                view = view[written:]
        except OSError:
            with contextlib.suppress(OSError):
                self._file.truncate(self._size)  # no partial line stays behind
            raise
        self._size += len(line)

    def _rotate(self) -> None:
        # The renames come first, with the current file still open: when one fails, the
        # next line tries again from there, and nothing is written past the bound.
        if not self._moved:
            for number in range(self.max_files, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{number}")
                if number == self.max_files:
                    older.unlink(missing_ok=True)
                    continue
                if older.exists():
                    os.replace(older, self.path.with_name(f"{self.path.name}.{number + 1}"))
            if self.max_files:
                os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
            else:
                self.path.unlink(missing_ok=True)
            self._moved = True
        fresh = self._open()
        self._file.close()
        self._file = fresh
        self._size = 0
        self._moved = False

    def close(self) -> None:
        self._file.close()


class Kept:
    """The bytes of a sampled MCP request its capture record is made of, kept until it
    ends: the client's message, the message sent in its place, whether the request went to
    a server, and the answer as the client got it (up to `limit` bytes; past that, only
    how many there were)."""

    __slots__ = ("answer", "forwarded", "limit", "received", "sent", "size", "streamed")

    def __init__(self, limit: int, received: bytes, sent: bytes | None, forwarded: bool) -> None:
        self.limit = limit
        self.received = received
        self.sent = sent  # None: the client's message went as it came (or went nowhere)
        self.forwarded = forwarded
        self.answer: list[bytes] | None = []  # None past the limit
        self.size = 0
        self.streamed = False

    def add(self, data: bytes, streamed: bool = False) -> None:
        """Bytes of the answer, as the client got them."""
        self.size += len(data)
        self.streamed = streamed
        if self.answer is None:
            return
        if self.size > self.limit:
            self.answer = None
        else:
            self.answer.append(data)

    def request(self) -> Any:
        """The message as the server got it (see `truncated`)."""
        return truncated(self.received if self.sent is None else self.sent, self.limit)

    def response(self) -> Any:
        """The answer's message, a stream's event payloads ({"events": [...]}, events
        without data left out), its size alone past the limit; None when there was none."""
        if self.answer is None:
            return {"truncated": True, "bytes": self.size}
        if not self.size:
            return None
        raw = b"".join(self.answer)
        return events_of(raw) if self.streamed else truncated(raw, self.limit)


def events_of(raw: bytes) -> dict[str, list[Any]]:
    """A stream as a record holds it: its events' payloads, JSON where they parse, events
    without data left out."""
    parser = Parser()
    events: list[Any] = []
    for event in parser.feed(raw) + parser.close():
        if event.data:
            try:
                events.append(orjson.loads(event.data))
            except orjson.JSONDecodeError:
                events.append(event.data)
    return {"events": events}


def truncated(body: bytes, limit: int) -> Any:
    """A body for the record: its JSON when it parses and fits, else a marked excerpt."""
    if len(body) > limit:
        return {"truncated": True, "bytes": len(body)}
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return {"text": body.decode("utf-8", errors="replace")}
