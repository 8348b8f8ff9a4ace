"""Token counts with an offline BPE tokenizer (bpe-openai ships its tables: no download)."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

ENCODING = "o200k_base"


@functools.cache
def _encoding() -> Any:
    import bpe_openai

    return bpe_openai.get_encoding(ENCODING)


def preload() -> None:
    """Load the tables now (~0.6 s, ~136 MB here): the first estimate on the hot path
    would otherwise stall the event loop for that long."""
    _encoding().encode_ordinary("warm")


def count(texts: Iterable[str]) -> int:
    encoding = _encoding()
    return sum(len(encoding.encode_ordinary(text)) for text in texts if text)


def at_most(texts: list[str], limit: int) -> tuple[bool, int]:
    """Whether the texts fit in `limit` tokens, and the count when it had to be taken.

    Every token is at least one byte, so text of at most `limit` UTF-8 bytes fits without
    tokenizing (~80 µs per KB); only longer prompts are counted.
    """
    size = sum(len(text.encode()) for text in texts)
    if size <= limit:
        return True, -1
    tokens = count(texts)
    return tokens <= limit, tokens
