"""Request header blocks: HPACK decoding with its work bounded, the checks RFC 9113 puts
on a request's fields, and a cache of blocks that decode the same while the table holds.

The decoder is the hpack package's (pure Python, ~1.5 s per MiB at worst): the block's
size is bounded before it is decoded (Limits.max_header_block), the decoded list while
it is (max_header_list_size), and a block may open with at most two table size updates
(RFC 7541 4.2), so no block holds the loop for more than a few milliseconds."""

from __future__ import annotations

import re
from typing import Final, NamedTuple

import hpack
from hpack.exceptions import OversizedHeaderListError
from hpack.table import HeaderTable

from extproc.transport.frames import COMPRESSION_ERROR, ENHANCE_YOUR_CALM
from extproc.transport.limits import Limits


class H2Error(Exception):
    """The peer broke the protocol: the connection ends with GOAWAY(code)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


class Request(NamedTuple):
    path: bytes
    metadata: tuple[tuple[str, str], ...]


# RFC 9113 8.2.1: no controls, space, uppercase, DEL or non-ASCII in a name; a colon only
# as a pseudo-header's first character.
_BAD_NAME: Final = re.compile(rb"[^!-9;-@\[-~]")
# RFC 9113 8.2.1: no NUL, CR or LF in a value, no whitespace at either end.
_BAD_VALUE: Final = re.compile(rb"[\0\r\n]|^[ \t]|[ \t]$")
# RFC 9113 8.2.2: connection-specific fields have no place in HTTP/2.
_CONNECTION_SPECIFIC: Final = frozenset(
    (b"connection", b"proxy-connection", b"keep-alive", b"transfer-encoding", b"upgrade")
)
_REQUEST_PSEUDO: Final = frozenset((b":method", b":scheme", b":authority", b":path"))
_REQUIRED_PSEUDO: Final = frozenset((b":method", b":scheme", b":path"))


def _regular_field_ok(name: bytes, value: bytes) -> bool:
    return (
        bool(name)
        and _BAD_NAME.search(name) is None
        and _BAD_VALUE.search(value) is None
        and name not in _CONNECTION_SPECIFIC
        and (name != b"te" or value == b"trailers")
    )


def request_of(fields: list[tuple[bytes, bytes]]) -> Request | None:
    """The call a request's fields name, or None when they are malformed (RFC 9113 8.3.1:
    pseudo-headers known, once each, before the others; :method, :scheme, :path)."""
    path = b""
    pseudo: set[bytes] = set()
    metadata: list[tuple[str, str]] = []
    for name, value in fields:
        if name[:1] == b":":
            if metadata or name not in _REQUEST_PSEUDO or name in pseudo:
                return None
            if _BAD_VALUE.search(value) is not None:
                return None
            pseudo.add(name)
            if name == b":path":
                path = value
        elif _regular_field_ok(name, value):
            metadata.append((name.decode("latin-1"), value.decode("latin-1")))
        else:
            return None
    if not path or not pseudo >= _REQUIRED_PSEUDO:
        return None
    return Request(path, tuple(metadata))


def trailers_ok(fields: list[tuple[bytes, bytes]]) -> bool:
    """Trailers carry no pseudo-header (RFC 9113 8.1) and well-formed fields."""
    return all(_regular_field_ok(name, value) for name, value in fields)


class _Table(HeaderTable):
    """HPACK's dynamic table, counting every change (an entry added or evicted, the size
    changed, emptied by a size of 0): a cached block is good until the count moves."""

    generation = 0

    def add(self, name: bytes, value: bytes) -> None:
        self.generation += 1
        super().add(name, value)

    @property
    def maxsize(self) -> int:
        return self._maxsize

    @maxsize.setter
    def maxsize(self, newmax: int) -> None:
        self.generation += 1
        HeaderTable.maxsize.fset(self, newmax)  # type: ignore[attr-defined]


def _size_updates(block: bytes) -> int:
    """How many dynamic table size updates open the block (stops counting past 2)."""
    count, at, end = 0, 0, len(block)
    while at < end and block[at] & 0xE0 == 0x20 and count <= 2:
        count += 1
        if block[at] & 0x1F == 0x1F:  # a multi-byte integer
            at += 1
            while at < end and block[at] & 0x80:
                at += 1
        at += 1
    return count


class HeaderDecoder:
    """One connection's HPACK decoding context and cache of decoded blocks."""

    def __init__(self, limits: Limits) -> None:
        self.decoder = hpack.Decoder(max_header_list_size=limits.max_header_list_size)
        self.table = self.decoder.header_table = _Table()
        # Blocks that decoded without changing the table, with what they named: Envoy sends
        # one block for every stream, so most streams skip the decoder (docs/benchmarks.md).
        self.cache: dict[bytes, Request | None] = {}
        self.cache_entries = limits.header_cache_entries
        self.cache_block = limits.header_cache_block
        self.decoded = 0  # bytes through the decoder since the driver last cleared it

    def decode(self, block: bytes) -> list[tuple[bytes, bytes]]:
        """The block's fields; any failure is a connection error (the table is lost)."""
        if _size_updates(block) > 2:
            raise H2Error(COMPRESSION_ERROR, "more than two table size updates")
        self.decoded += len(block)
        try:
            return self.decoder.decode(block, raw=True)  # type: ignore[return-value]
        except OversizedHeaderListError:
            raise H2Error(ENHANCE_YOUR_CALM, "header list over its limit") from None
        except Exception as error:  # hpack raises several kinds
            raise H2Error(COMPRESSION_ERROR, f"bad header block: {error}") from None

    def request(self, block: bytes) -> Request | None:
        """The call a new stream's block names (None: malformed)."""
        if block in self.cache:
            return self.cache[block]
        generation = self.table.generation
        request = request_of(self.decode(block))
        if self.table.generation != generation:
            self.cache.clear()  # what the cached blocks named may have changed
        elif len(block) <= self.cache_block and len(self.cache) < self.cache_entries:
            self.cache[block] = request
        return request

    def trailers(self, block: bytes) -> bool:
        """Decode a block that opens no stream (trailers, or on a closed stream: the table
        must follow it all the same); whether it is well-formed trailers."""
        generation = self.table.generation
        fields = self.decode(block)
        if self.table.generation != generation:
            self.cache.clear()
        return trailers_ok(fields)
