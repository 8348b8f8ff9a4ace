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
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ENCODING = "o200k_base"
_PACKAGE = "bpe_openai"


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


_MADV_DONTNEED = 4


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


def at_most(texts: list[str], limit: int) -> tuple[bool, int]:
    """Whether the texts fit in `limit` tokens, and the count when it had to be taken.

    Every token is at least one byte, so text of at most `limit` UTF-8 bytes fits without
    tokenizing (~35 µs per KB); only longer prompts are counted.
    """
    size = sum(len(text.encode()) for text in texts)
    if size <= limit:
        return True, -1
    tokens = count(texts)
    return tokens <= limit, tokens
