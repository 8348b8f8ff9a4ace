"""Room for messages larger than their stream's window, for a whole server.

A stream's window bounds what it holds unread; a message larger than that window needs
room beyond it to arrive at all. The budget gives that room (Limits.budget, twice the
largest message by default) to one message after another: a message that does not fit
waits its turn, its stream holding no more than its window meanwhile, and room held past
Limits.message_timeout is taken back (the server's timer ends that call).
"""

from __future__ import annotations

from collections import deque
from typing import Generic, Protocol, TypeVar


class Waiter(Protocol):
    """What waits for room: told when its turn has come."""

    def _admitted(self, amount: int) -> None: ...


W = TypeVar("W", bound=Waiter)


class Budget(Generic[W]):
    """Room for messages beyond their streams' windows, for a whole server; a message that
    does not fit waits its turn (its stream holds no more than its window meanwhile)."""

    def __init__(self, size: int) -> None:
        self.free = size
        self.held: dict[W, tuple[int, float]] = {}  # amount, since
        self.waiting: deque[tuple[W, int]] = deque()

    def ask(self, context: W, amount: int, now: float) -> bool:
        if not self.waiting and amount <= self.free:
            self.free -= amount
            self.held[context] = (amount, now)
            return True
        self.waiting.append((context, amount))
        return False

    def drop(self, context: W, now: float) -> None:
        """The context's room is no longer needed (its message arrived, or it ended)."""
        held = self.held.pop(context, None)
        if held is not None:
            self.free += held[0]
        else:
            self.waiting = deque(entry for entry in self.waiting if entry[0] is not context)
        while self.waiting and self.waiting[0][1] <= self.free:
            waiting, amount = self.waiting.popleft()
            self.free -= amount
            self.held[waiting] = (amount, now)
            waiting._admitted(amount)

    def overdue(self, before: float) -> list[W]:
        return [context for context, (_, since) in self.held.items() if since < before]
