"""What a call's context needs of the connection it runs on: the one view the contexts
(calls.py) hold of the asyncio driver (server.py), so that neither imports the other."""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from extproc.transport.budget import Budget
from extproc.transport.limits import Limits


class Room(Protocol):
    """The server's share of a connection: the room for large messages, the loop's time."""

    @property
    def budget(self) -> Budget[Any]: ...

    @property
    def now(self) -> float: ...


class Peer(Protocol):
    """A connection as its calls' contexts use it (the context passed is the caller)."""

    @property
    def limits(self) -> Limits: ...

    @property
    def initial_window(self) -> int: ...

    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...

    @property
    def paused(self) -> asyncio.Future[None] | None: ...

    @property
    def server(self) -> Room: ...

    def send_message(self, context: Any, payload: bytes) -> None: ...

    def send_data(self, context: Any, data: bytes | bytearray, head: bytes = b"") -> None: ...

    def finish(self, context: Any, code: int, message: str) -> None: ...

    def consumed(self, context: Any, size: int) -> None: ...

    def give_back(self, context: Any, extra: int = 0) -> None: ...
