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


# Sliced work as `advance` reads it: None at each pause, then its result.
Stepwise = Generator[Done[T] | None, None, None]


def stepwise(work: Sliced[T]) -> Stepwise[T]:
    """The work's pauses, then its result as a value. Read as the StopIteration a generator
    raises at its end, the result would cost compiled code a traceback entry and an
    exception handler on every request."""
    yield Done((yield from work))


def advance(work: Stepwise[T]) -> Done[T] | None:
    """Run the work's next part: its result when it ended, None when it paused."""
    return next(work)


def finish(work: Sliced[T]) -> T:
    """Run sliced work to its end without pausing."""
    for step in stepwise(work):
        if step is not None:
            return step.value
    raise AssertionError("stepwise() ends with the work's result")


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
