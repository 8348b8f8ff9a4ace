"""Work done in slices: a generator that yields between its parts, so that a caller on the
event loop can serve other streams before it goes on, and returns its result."""

from __future__ import annotations

from collections.abc import Generator
from typing import Generic, TypeVar

T = TypeVar("T")

# Each `yield` is a pause the caller may take; the generator's return value is the result.
Sliced = Generator[None, None, T]


class Done(Generic[T]):
    """Sliced work's result, once it ended. (A plain class: a generic dataclass with slots
    cannot be compiled.)"""

    __slots__ = ("value",)

    def __init__(self, value: T) -> None:
        self.value = value


def advance(work: Sliced[T]) -> Done[T] | None:
    """Run the work's next part: its result when it ended, None when it paused."""
    try:
        next(work)
    except StopIteration as done:
        return Done(done.value)
    return None


def finish(work: Sliced[T]) -> T:
    """Run sliced work to its end without pausing."""
    while (ended := advance(work)) is None:
        pass
    return ended.value


class Pauses:
    """When sliced work pauses: once it has done `size` (characters read, say) since its
    last pause. Off, it never does."""

    __slots__ = ("done", "on", "size")

    def __init__(self, size: int, on: bool) -> None:
        self.size, self.on, self.done = size, on, 0

    @property
    def room(self) -> int:
        """What is left before the next pause."""
        return self.size - self.done

    def after(self, amount: int) -> bool:
        """Whether to pause now that `amount` more was done."""
        if not self.on:
            return False
        self.done += amount
        if self.done < self.size:
            return False
        self.done = 0
        return True
