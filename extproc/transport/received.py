"""A call's received bytes, not yet consumed: the DATA payloads as they came, and each
message cut out of them in one copy.

A bytearray that every payload is appended to copies a large message again each time it
outgrows its allocation, and once more when the message is cut out of it. Here a payload
is kept as it came, and a message is joined from the payloads that hold it. Small payloads
are gathered into one bytearray, so that the objects kept stay few: at most two for every
SMALL bytes held, whatever the frames' sizes.
"""

from __future__ import annotations

import struct
from typing import Final

PREFIX: Final = struct.Struct(">BI")  # gRPC message: compressed flag, length
# A payload shorter than this is copied into a bytearray the next small ones join.
SMALL: Final = 4096


class Received:
    """Bytes in order: added at the end, cut from the front."""

    __slots__ = ("_parts", "_start", "size")

    def __init__(self) -> None:
        self._parts: list[bytes | bytearray] = []
        self._start = 0  # bytes of the first part already cut
        self.size = 0  # bytes held

    def add(self, data: bytes) -> None:
        size = len(data)
        if not size:
            return
        self.size += size
        parts = self._parts
        if size >= SMALL:
            parts.append(data)
            return
        if parts:
            last = parts[-1]
            if isinstance(last, bytearray) and len(last) < SMALL:
                last += data
                return
        parts.append(bytearray(data))

    def prefix(self) -> tuple[int, int] | None:
        """The head message's compressed flag and length, once its five bytes are in."""
        if self.size < 5:
            return None
        first = self._parts[0]
        start = self._start
        if len(first) - start >= 5:
            flag, length = PREFIX.unpack_from(first, start)
        else:
            flag, length = PREFIX.unpack(self._peek(5))
        return flag, length

    def whole(self) -> int:
        """The head message's size with its prefix once all of it is in, else 0."""
        head = self.prefix()
        if head is None or self.size < 5 + head[1]:
            return 0
        return 5 + head[1]

    def _peek(self, size: int) -> bytes:
        """The first `size` bytes held (a few, across parts)."""
        out = bytearray()
        start = self._start
        for part in self._parts:
            out += part[start : start + size - len(out)]
            start = 0
            if len(out) == size:
                break
        return bytes(out)

    def cut(self, size: int) -> bytes:
        """The head message's payload, its `size` bytes with the prefix taken off: one copy
        of the bytes, however many parts hold them."""
        parts = self._parts
        start = self._start + 5
        end = self._start + size
        self.size -= size
        first = parts[0]
        if end <= len(first):
            with memoryview(first) as view:
                payload = bytes(view[start:end])
            self._forget(0, end)
            return payload
        pieces: list[bytes | bytearray | memoryview] = []
        index = 0
        for part in parts:
            length = len(part)
            if start < length:
                piece = part if start == 0 and end >= length else memoryview(part)[start:end]
                pieces.append(piece)
            if end <= length:
                break
            start = max(start - length, 0)
            end -= length
            index += 1
        payload = b"".join(pieces)
        for piece in pieces:
            if isinstance(piece, memoryview):
                piece.release()
        self._forget(index, end)
        return payload

    def _forget(self, index: int, end: int) -> None:
        """Drop the parts before `index`, and the first `end` bytes of the one at it."""
        parts = self._parts
        if end == len(parts[index]):
            del parts[: index + 1]
            self._start = 0
        else:
            del parts[:index]
            self._start = end

    def clear(self) -> None:
        self._parts.clear()
        self._start = self.size = 0
