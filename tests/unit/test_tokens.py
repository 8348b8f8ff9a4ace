"""The o200k token counts the estimates rest on."""

from __future__ import annotations

import random
import subprocess
import sys

from extproc import tokens
from tests.helpers import ROOT

SAMPLES = [
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.\n\n  def f(x):\n\treturn x ** 2",
    "日本語のテキストと emoji 🎉🎉, Ünïcödé, العربية, 中文字符, ﷽",
    "   leading and trailing spaces   \r\n\r\n",
    "1234567890 3.14159 -42 1e10 0x1F",
    '{"role": "user", "content": "say \\"hi\\""}',
]


def test_known_counts() -> None:
    # o200k_base: "Hello" "," " world" "!" and "hello" " world".
    assert tokens.count(["Hello, world!"]) == 4
    assert tokens.count(["hello world"]) == 2
    assert tokens.count(["hello world", "", "Hello, world!"]) == 6
    assert tokens.count([]) == 0


def test_counts_match_the_packages_public_api() -> None:
    import bpe_openai

    encoding = bpe_openai.get_encoding(tokens.ENCODING)
    rng = random.Random(7)
    texts = [*SAMPLES, "".join(chr(rng.randrange(32, 0x3000)) for _ in range(3000))]
    pieces = [*texts]
    for _ in range(300):
        text = rng.choice(texts)
        start = rng.randrange(len(text))
        pieces.append(text[start : start + rng.randrange(1, 400)])
    for piece in pieces:
        assert tokens.count([piece]) == len(encoding.encode_ordinary(piece)), piece


def test_at_most_counts_only_beyond_the_byte_bound() -> None:
    assert tokens.at_most(["hello world"], 11) == (True, -1)  # 11 bytes: not counted
    assert tokens.at_most(["hello world"], 2) == (True, 2)
    assert tokens.at_most(["hello world"], 1) == (False, 2)


LOAD = """
import importlib.util, pathlib, sys
from extproc import tokens
tokens.preload()
folder = importlib.util.find_spec("bpe_openai").submodule_search_locations[0]
library = str(next(pathlib.Path(folder).glob("_bindings.*.so")).resolve())
print("bpe_openai" in sys.modules, tokens.count([pathlib.Path("README.md").read_text()]) > 1000)
print(sum(resident for _, _, resident in tokens._clean_read_only(library)) // 1024)
"""


def test_loading_skips_the_packages_init_and_hands_back_the_tables() -> None:
    """The package's __init__ would parse three encodings' rank tables into Python dicts
    (~65 MB); the extension's embedded tables (~32 MB) are not read once it is built."""
    out = subprocess.run(
        [sys.executable, "-c", LOAD], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    assert out[:2] == ["False", "True"]
    # KB of the tables resident again after counting a long text: pages are mapped back a
    # folio at a time (64 KB to 2 MB, by the kernel and file system), never the ~32 MB.
    assert int(out[2]) <= 4096
