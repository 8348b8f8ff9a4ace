"""Name patterns with "*" wildcards, matched in linear time."""

from __future__ import annotations


class Glob:
    """A name pattern where "*" matches any run of characters; matching is linear time."""

    __slots__ = ("_parts", "pattern")

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self._parts = pattern.split("*")

    def match(self, name: str) -> bool:
        parts = self._parts
        if len(parts) == 1:
            return name == parts[0]
        first, last = parts[0], parts[-1]
        if len(name) < len(first) + len(last):
            return False
        if not name.startswith(first) or not name.endswith(last):
            return False
        position, end = len(first), len(name) - len(last)
        for middle in parts[1:-1]:
            found = name.find(middle, position, end)
            if found < 0:
                return False
            position = found + len(middle)
        return True
