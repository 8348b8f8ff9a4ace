"""Numbers written in text a peer sent (header values, config fields), parsed strictly.

str.isdigit() is true for "²" and "١٢" (Arabic-Indic digits): int() then raises for the
first and accepts the second; int() also accepts "+5", " 5", "5_0" and takes time
quadratic in the length of a long run of digits. A header's number is 1 to 18 ASCII
digits or it is no number: 18 digits stay below 2**63, so every value fits wherever it
goes next (a 64-bit field, a Redis counter, Envoy's own parsers)."""

from __future__ import annotations

from typing import Final

_MAX_DIGITS: Final = 18


def strict_int(text: str, maximum: int = 10**_MAX_DIGITS - 1) -> int | None:
    """The value of `text` when it is 1 to 18 ASCII digits (no sign, no space, no
    underscore) and at most `maximum`; None otherwise."""
    # Among ASCII characters only 0-9 are digits.
    if not 0 < len(text) <= _MAX_DIGITS or not text.isascii() or not text.isdigit():
        return None
    value = int(text)
    return value if value <= maximum else None
