"""The order of ext_proc phases on one stream, as Envoy sends them (no protobuf here).

Request headers first; then phases in order, each headers or trailers phase once, a body
phase repeated only until its end_of_stream; nothing after a local answer. A stream that
breaks these rules did not come from Envoy.
"""

from __future__ import annotations

from typing import Final

_ORDER: Final = {
    "request_headers": 0,
    "request_body": 1,
    "request_trailers": 2,
    "response_headers": 3,
    "response_body": 4,
    "response_trailers": 5,
}
_ONCE: Final = frozenset({0, 2, 3, 5})  # headers and trailers
_BODIES: Final = frozenset({1, 4})
_ANSWERED: Final = len(_ORDER)  # after a local answer no phase may follow


class PhaseOrder:
    def __init__(self) -> None:
        self.last = -1  # the order of the last phase admitted
        self.ended = False  # the body of the last phase's direction is complete

    def admit(self, kind: str | None) -> bool:
        """Whether this phase may come now; when it may, it becomes the last one."""
        order = _ORDER.get(kind or "", -1)
        if order < 0 or order < self.last or (self.last < 0 and order != 0):
            return False
        if order == self.last and order in _ONCE:
            return False
        if self.ended and order in _BODIES and self.last in (order - 1, order):
            return False
        if order != self.last:
            self.ended = False
        self.last = order
        return True

    def chunk(self) -> bool:
        """A response body message that is not its direction's last, on a stream now in
        its response phases: admitted and answered in one step (admit, then done(False,
        False), for the message a stream carries most of). False: take the long way."""
        if self.ended or not 3 <= self.last <= 4:
            return False
        self.last = 4
        return True

    def done(self, end_of_stream: bool, answered: bool) -> None:
        """The admitted phase was answered: locally (the stream is over), or with the
        message saying whether the body in its direction ended there."""
        if answered:
            self.last = _ANSWERED
        else:
            self.ended = end_of_stream
