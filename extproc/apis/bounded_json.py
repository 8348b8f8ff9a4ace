"""JSON parsed with a bound on its nesting, checked without a walk over the tree.

orjson's reader stops at its own depth (1024) and its writer at 254, neither at a
caller's. A document is parsed, then written again inside 254 - max_depth arrays, so the
writer's limit falls where the caller's is, unless it is short and has no more brackets
than max_depth (it cannot nest deeper: two byte counts tell, cheaper there than the
arrays). A long document is instead parsed inside 1024 - max_depth arrays, whose fixed
cost is then less than writing it again. What each way costs: the benchmarks page.
"""

from __future__ import annotations

import threading
from enum import StrEnum
from typing import Any

import orjson

# orjson refuses to read a document nested deeper than this, and to write one deeper than
# that (documented; a test pins both).
READER_MAX_DEPTH = 1024
WRITER_MAX_DEPTH = 254
# Up to this length a document is written again to measure its depth; past it, parsing it
# padded costs less.
_WRITTEN_CHARS = 128 * 1024
# Up to this length, counting brackets costs less than writing the document again.
_COUNTED_CHARS = 2048
_UNREAD = object()


class Why(StrEnum):
    NOT_UTF8 = "not UTF-8"
    EMPTY = "empty"
    NOT_JSON = "not valid JSON"
    TOO_DEEP = "nested too deep"


class NotLoaded(ValueError):
    def __init__(self, why: Why) -> None:
        super().__init__(why.value)
        self.why = why


def loads(data: bytes | str, max_depth: int) -> Any:
    """The JSON value `data` holds; NotLoaded says why there is none."""
    if max_depth < WRITER_MAX_DEPTH and len(data) <= _WRITTEN_CHARS:
        value = _plain(data)
        if (len(data) <= _COUNTED_CHARS and _brackets(data) <= max_depth) or _within(
            value, max_depth
        ):
            return value
        raise NotLoaded(Why.TOO_DEEP)
    if max_depth >= READER_MAX_DEPTH:
        return _plain(data)
    return _padded(data, READER_MAX_DEPTH - max_depth)


def _plain(data: bytes | str) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        raise NotLoaded(_why(data)) from None


def _brackets(data: bytes | str) -> int:
    if isinstance(data, bytes):
        return data.count(b"[") + data.count(b"{")
    return data.count("[") + data.count("{")


class _Wrappers(threading.local):
    """Per thread, for each depth, nested arrays with room for a value at the bottom."""

    def __init__(self) -> None:
        self.by_depth: dict[int, tuple[list[Any], list[Any]]] = {}


_wrappers = _Wrappers()


def _within(value: Any, max_depth: int) -> bool:
    wrapper = _wrappers.by_depth.get(max_depth)
    if wrapper is None:
        bottom: list[Any] = [None]
        top = bottom
        for _ in range(WRITER_MAX_DEPTH - max_depth - 1):
            top = [top]
        wrapper = _wrappers.by_depth[max_depth] = (top, bottom)
    top, bottom = wrapper
    bottom[0] = value
    try:
        orjson.dumps(top)
    except orjson.JSONEncodeError:  # what orjson parsed fails to encode only by its depth
        return False
    finally:
        bottom[0] = None
    return True


def _padded(data: bytes | str, pad: int) -> Any:
    try:
        if isinstance(data, bytes):
            value = orjson.loads(b"".join((b"[" * pad, data, b"]" * pad)))
        else:
            value = orjson.loads("".join(("[" * pad, data, "]" * pad)))
    except orjson.JSONDecodeError:
        value = _UNREAD
    else:
        # The arrays are ours only when each holds one element: `1],[2` between them makes
        # two, an empty body none. One element at each level means `data` is one JSON value.
        for _ in range(pad):
            if type(value) is not list or len(value) != 1:
                value = _UNREAD
                break
            value = value[0]
    if value is not _UNREAD:
        return value
    _plain(data)  # raises unless `data` is JSON that nests too deep
    raise NotLoaded(Why.TOO_DEEP)


def _why(data: bytes | str) -> Why:
    """Taken apart only once the parse failed, so valid text pays nothing for it."""
    if isinstance(data, bytes):
        try:
            data.decode()
        except UnicodeDecodeError:
            return Why.NOT_UTF8
    return Why.EMPTY if not data.strip() else Why.NOT_JSON
