"""Work done in slices: a generator that yields between its parts, so that a caller on the
event loop can serve other streams before it goes on, and returns its result."""

from __future__ import annotations

from collections.abc import Generator
from typing import TypeVar

T = TypeVar("T")

# Each `yield` is a pause the caller may take; the generator's return value is the result.
Sliced = Generator[None, None, T]


def finish(work: Sliced[T]) -> T:
    """Run sliced work to its end without pausing."""
    while True:
        try:
            next(work)
        except StopIteration as done:
            result: T = done.value
            return result
