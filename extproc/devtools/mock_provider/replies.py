"""How the mock answers: JSON with an extra field on request, SSE events, streams that
misbehave on request, connections cut without an answer."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterator
from typing import Any

from aiohttp import web

from extproc.devtools.mock_provider.reading import echo_headers
from extproc.digits import strict_int

# Counts an answer served in full: (request, prompt tokens, completion tokens).
Served = Callable[[web.Request, int, int], None]
_WORD = re.compile(r"\S+\s*")


def with_extra_field(request: web.Request, payload: dict[str, Any]) -> dict[str, Any]:
    """x-mock-extra-field: NAME adds a field to a JSON answer (a provider's API change)."""
    name = request.headers.get("x-mock-extra-field")
    return {**payload, name: {"added": True}} if name else payload


def pieces(text: str) -> Iterator[str]:
    """The reply split into stream deltas: one word (with its trailing space) each."""
    yield from _WORD.findall(text) or [""]


def sse(data: bytes, event: str | None = None) -> bytes:
    prefix = f"event: {event}\n".encode() if event else b""
    return prefix + b"data: " + data + b"\n\n"


async def cut(request: web.Request) -> web.StreamResponse:
    if request.transport is not None:
        request.transport.close()
    # The connection is gone; aiohttp needs a response object all the same.
    return web.Response(status=500)


async def stream(
    request: web.Request,
    events: list[bytes],
    cut_after: int | None,
    prompt: str,
    served: Callable[[], None] | None = None,
) -> web.StreamResponse:
    """Events as a stream, with the knobs that make it misbehave (pauses, a cut, an early
    end, no final event); `served` is called once all of it was sent."""
    response = web.StreamResponse(
        headers={
            "content-type": "text/event-stream",
            "cache-control": "no-cache",
            **echo_headers(request, prompt),
        }
    )
    await response.prepare(request)
    pause_s = (strict_int(request.headers.get("x-mock-chunk-delay-ms", "")) or 0) / 1000
    # Ends the response after this many events, cleanly, without the final event.
    end_after = strict_int(request.headers.get("x-mock-end-after", ""))
    if request.headers.get("x-mock-omit-final") == "1":
        events = events[:-1]  # every stream's last event is its [DONE] or message_stop
    for number, event in enumerate(events):
        if pause_s and number:
            await asyncio.sleep(pause_s)
        if cut_after is not None and number >= cut_after:
            # A pause lets the events before the cut reach the client; close() flushes
            # them and ends the connection mid-stream, without the final event.
            await asyncio.sleep(0.2)
            if request.transport is not None:
                request.transport.close()
            return response
        if end_after is not None and number >= end_after:
            await response.write_eof()
            return response
        try:
            await response.write(event)
        except ConnectionError:
            return response  # the client left: nothing more to send, nothing served in full
    await response.write_eof()
    if served is not None:
        served()
    return response
