"""Token counts with o200k, offline: bpe-openai's compiled tokenizer carries its own tables.

The tokenizer is the package's extension module, loaded on its own. Importing the package
instead would run its __init__, which parses the rank tables of three encodings into Python
dicts for its tiktoken-like API: ~0.5 s and ~65 MB held for the life of the process, none
of which counting needs. Loaded directly the tokenizer takes ~50 ms and ~35 MB, and its
count() skips the Python list of token ids that encode_ordinary() builds (~25% faster).
tests/unit/test_tokens.py checks it against the package's public API.

The extension file embeds the tables it builds the tokenizer from (~32 MB of read-only
data). Once the tokenizer is built the process no longer reads them, so their pages are
handed back (see _release); counting maps ~0.1-2 MB of them back (a page cache folio
at a time).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib.util
import math
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from extproc.lru import Lru
from extproc.slices import Pauses, Sliced, finish

ENCODING: Final = "o200k_base"
_PACKAGE: Final = "bpe_openai"


@functools.cache
def _tokenizer() -> Any:
    spec = importlib.util.find_spec(_PACKAGE)  # finds the package without importing it
    folders = spec.submodule_search_locations if spec is not None else None
    found = [p for folder in folders or () for p in Path(folder).glob("_bindings.*.so")]
    if len(found) != 1:
        raise RuntimeError(f"{_PACKAGE}'s compiled tokenizer not found (is it installed?)")
    module_spec = importlib.util.spec_from_file_location(f"{_PACKAGE}._bindings", found[0])
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    tokenizer = module.tokenizer_for_encoding(ENCODING)
    tokenizer.count("warm")
    _release(found[0])
    return tokenizer


_MADV_DONTNEED: Final = 4


def _release(library: Path) -> None:
    """Drop the resident pages of `library`'s clean read-only mappings.

    Clean pages of a private file mapping are the file's own bytes: after MADV_DONTNEED
    a later read maps them again from the page cache or the file (unlike pages that were
    written, such as relocated data, which this leaves alone). Linux only; a failure
    just leaves the pages resident.
    """
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError, ValueError):
        madvise = ctypes.CDLL(None, use_errno=True).madvise
        madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        for start, end, _ in _clean_read_only(str(library.resolve())):
            madvise(start, end - start, _MADV_DONTNEED)


def _clean_read_only(path: str) -> list[tuple[int, int, int]]:
    """(start, end, resident bytes) of this process's read-only, non-executable mappings of
    `path` in which no page was written (none dirty, none anonymous)."""
    found: list[tuple[int, int, int]] = []
    mapping: tuple[int, int] | None = None
    fields: dict[str, int] = {}

    def close() -> None:
        if (
            mapping is not None
            and fields.get("Private_Dirty") == 0
            and fields.get("Anonymous") == 0
        ):
            found.append((*mapping, fields.get("Rss", 0) * 1024))

    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            first = line.split(maxsplit=1)[0]
            if first.endswith(":"):  # "Rss:   123 kB", a field of the current mapping
                value = line.split()[1]
                if mapping is not None and value.isdigit():
                    fields[first[:-1]] = int(value)
                continue
            close()  # "start-end perms offset device inode path": the next mapping
            parts = line.split(maxsplit=5)
            mapping, fields = None, {}
            if parts[1] == "r--p" and len(parts) == 6 and parts[5].rstrip("\n") == path:
                start, end = parts[0].split("-")
                mapping = (int(start, 16), int(end, 16))
    close()
    return found


def preload() -> None:
    """Load the tokenizer now: the first estimate on the hot path would otherwise pay for
    it (docs/benchmarks.md)."""
    _tokenizer()


def count(texts: Iterable[str]) -> int:
    tokenizer = _tokenizer()
    return sum(tokenizer.count(text) for text in texts if text)


def _size(text: str) -> int:
    """UTF-8 bytes of a text: its length when ASCII (a flag CPython keeps, no copy)."""
    return len(text) if text.isascii() else len(text.encode())


# What counting a prompt exactly may cost: tokenizing at most this many tokens (the BPE
# work, ~0.1-0.2 µs a token) over at most this many bytes of text (the pre-tokenizing
# regex reads a whole text, ~1.5 ns a byte), in at most this many texts (a call each).
# Past them a text counts its bytes.
EXACT_TOKENS = 1 << 17
EXACT_BYTES = 4 << 20
EXACT_TEXTS = 16_384


@dataclass(frozen=True, slots=True)
class Measure:
    """Texts measured at a bounded cost: `counted` tokens in `counted_bytes` counted
    exactly, and `rest_bytes` of texts left uncounted (the first of them `rest`);
    `overflow` when a text was left because its tokens passed the room left."""

    counted: int
    counted_bytes: int
    rest_bytes: int
    rest: str | None
    overflow: bool

    @property
    def bound(self) -> int:
        """An upper bound of the texts' tokens: a token is at least one byte."""
        return self.counted + self.rest_bytes

    @property
    def exact(self) -> bool:
        return self.rest_bytes == 0


# Counts of long texts, the most recently used kept: an agent sends its whole conversation
# again every turn, so all but its newest texts were counted before. A text is looked up by
# its length and its hash (SipHash, keyed per process: no one outside can make two texts
# collide), within a scope: a tenant, so that how fast its requests are counted cannot
# tell it what another tenant sent. Values: (tokens, UTF-8 bytes).
Memo = Lru[tuple[str, int, int], tuple[int, int]]


# Shorter texts cost less to count than to look up.
MEMO_CHARS: Final = 1024
MEMO = Memo(16_384)


# Counting in slices (`measuring(..., slices=True)`) pauses once it has tokenized this many
# characters since its last pause: the tokenizer holds the GIL, so a slice of its work is
# as long as the loop is held; about as long as a slice of the policies' reading.
SLICE_CHARS: Final = 32 * 1024
# Where a long text is cut to be counted in slices: before a space that follows a character
# other than white space. No piece of o200k's pre-tokenizer reaches over such a space (runs
# of letters, of digits and of punctuation stop at white space, and white space starts a
# piece of its own or the next word's), its pattern looks at nothing before where a piece
# starts, and BPE works within pieces: the slices' counts add up to the text's. A run with
# no such place (CJK without spaces, base64) is counted in one piece.
_CUT: Final = re.compile(r"\S ")


def _cut(text: str, first: int) -> Iterator[str]:
    """`text` in slices, the first of about `first` characters and the others of about
    SLICE_CHARS, each ending where a piece does: at the first place to cut past that
    length, so a run with none is one slice, and the rest whole when none is left."""
    start, size = 0, first
    while len(text) - start > size:
        # Past a run with no place to cut, the next place (the run is one slice).
        found = _CUT.search(text, start + size)
        if found is None:
            break
        end = found.start() + 1
        yield text[start:end]
        start, size = end, SLICE_CHARS
    yield text[start:] if start else text


def measure(
    texts: Sequence[str],
    tokens: int | None = None,
    calls: int | None = None,
    size: int | None = None,
    scope: str | None = None,
    read: int | None = None,
) -> Measure:
    """Count texts in order while their tokens fit in `tokens` (EXACT_TOKENS by default),
    their bytes in EXACT_BYTES and their number in `calls` (EXACT_TEXTS); a text past any
    of them counts its bytes. Bounded work whatever the size or the number of texts.
    `size`, when the caller knows it, is the texts' UTF-8 bytes (saves encoding them);
    `read`, bytes of text to tokenize at most instead of EXACT_BYTES.
    With a `scope`, long texts it counted before are not counted again (MEMO): they take
    none of the bytes or calls, only their tokens' room."""
    return finish(measuring(texts, tokens, calls, size, scope, read))


def measuring(
    texts: Sequence[str],
    tokens: int | None = None,
    calls: int | None = None,
    size: int | None = None,
    scope: str | None = None,
    read: int | None = None,
    slices: bool = False,
    short: bool = True,
) -> Sliced[Measure]:
    """measure() as sliced work: with `slices`, it pauses after every SLICE_CHARS
    characters tokenized, a long text cut where its count does not change. What it counts
    is the same. With `short` False, a text too short for MEMO counts its bytes."""
    tokenizer = _tokenizer()
    room = EXACT_TOKENS if tokens is None else tokens
    budget = EXACT_BYTES if read is None else read
    calls = EXACT_TEXTS if calls is None else calls
    counted = counted_bytes = 0
    uncounted: list[str] = []
    overflow = False
    index = 0
    pause = Pauses(SLICE_CHARS, slices)
    while index < len(texts) and calls and not overflow:
        text = texts[index]
        index += 1
        if not text:
            continue
        if not short and len(text) < MEMO_CHARS:
            uncounted.append(text)
            continue
        key = None
        if scope is not None and len(text) >= MEMO_CHARS:
            key = (scope, len(text), hash(text))
            known = MEMO.get(key)
            if known is not None:
                found, length = known
                if found > room:
                    overflow = True
                    uncounted.append(text)
                else:
                    counted += found
                    counted_bytes += length
                    room -= found
                continue
        # A text of more characters than the budget has bytes is past it: no need to
        # encode it to know.
        length = len(text) if len(text) > budget else _size(text)
        if length > budget:
            uncounted.append(text)
            continue
        budget -= length
        calls -= 1
        total = 0
        for piece in _cut(text, pause.room) if slices else (text,):
            part = tokenizer.count_till_limit(piece, room - total)
            if part is None:
                overflow = True  # the BPE work spent reaching the room: no more
                break
            total += part
            if pause.after(len(piece)):
                yield
        if overflow:
            uncounted.append(text)
        else:
            counted += total
            counted_bytes += length
            room -= total
            if key is not None:
                MEMO.put(key, (total, length))
    uncounted.extend(texts[index:])
    # The rest's bytes at C speed, or from the caller's total.
    rest_bytes = _size("".join(uncounted)) if size is None else size - counted_bytes
    rest = next((text for text in uncounted if text), None)
    return Measure(counted, counted_bytes, rest_bytes, rest, overflow)


def bound(texts: Sequence[str], scope: str | None = None, read: int | None = None) -> int:
    """An upper bound of the texts' tokens, exact up to EXACT_TOKENS tokens and EXACT_BYTES
    (or `read`) bytes of text newly tokenized: what budgets reserve (never less than the
    exact count)."""
    return measure(texts, scope=scope, read=read).bound


_SAMPLE: Final = 1 << 16


def _sample(text: str) -> list[str]:
    """At most 64 KiB of a text, in 16 slices spread over it."""
    chars = _SAMPLE if text.isascii() else _SAMPLE // 4
    if len(text) <= chars:
        return [text]
    step, piece = len(text) // 16, chars // 16
    return [text[start : start + piece] for start in range(0, 16 * step, step)]


def estimate(texts: Sequence[str], scope: str | None = None) -> int:
    """The texts' tokens, counted exactly within measure()'s bounds; the rest estimated at
    the rate of what was counted (or of a sample of what was not): what a usage record
    says when the provider reports no input."""
    return finish(estimating(texts, scope))


def estimating(texts: Sequence[str], scope: str | None = None, slices: bool = False) -> Sliced[int]:
    """estimate() as sliced work (measuring()'s pauses, with `slices`; the sample, at most
    64 KiB, is one part)."""
    found = yield from measuring(texts, scope=scope, slices=slices)
    if found.exact:
        return found.counted
    tokens, size = found.counted, found.counted_bytes
    if size < _SAMPLE and found.rest is not None:
        sample = _sample(found.rest)
        tokens += count(sample)
        size += sum(map(_size, sample))
    return found.counted + math.ceil(found.rest_bytes * tokens / max(size, 1))


def at_most(texts: list[str], limit: int, scope: str | None = None) -> tuple[bool, bool]:
    """Whether the texts fit in `limit` tokens, and whether that was decided exactly.

    Text of at most `limit` UTF-8 bytes fits without tokenizing (a token is at least one
    byte). Longer text is counted until it passes the limit: at most `limit` tokens, in at
    most `limit` + 1 texts (each holds a token), over at most EXACT_BYTES bytes; what could
    not be counted counts its bytes, so a prompt that might exceed the limit is never said
    to fit.
    """
    return finish(fitting(texts, limit, scope))


def fitting(
    texts: list[str], limit: int, scope: str | None = None, slices: bool = False
) -> Sliced[tuple[bool, bool]]:
    """at_most() as sliced work (measuring()'s pauses, with `slices`)."""
    size = _size("".join(texts))
    if size <= limit:
        return True, True
    found = yield from measuring(
        texts, limit, max(EXACT_TEXTS, limit + 1), size, scope, slices=slices
    )
    if found.overflow:
        return False, True
    return found.bound <= limit, found.exact
