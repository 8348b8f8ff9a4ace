"""The o200k token counts the estimates rest on."""

from __future__ import annotations

import random
import subprocess
import sys

import pytest

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


class Recorder:
    """The tokenizer, recording how many bytes of text it was given to read."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.read = 0
        self.calls = 0

    def count(self, text: str) -> int:
        self.read += len(text.encode())
        self.calls += 1
        return self.inner.count(text)  # type: ignore[attr-defined, no-any-return]

    def count_till_limit(self, text: str, limit: int) -> int | None:
        self.read += len(text.encode())
        self.calls += 1
        return self.inner.count_till_limit(text, limit)  # type: ignore[attr-defined, no-any-return]


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    recording = Recorder(tokens._tokenizer())
    monkeypatch.setattr(tokens, "_tokenizer", lambda: recording)
    return recording


def english(size: int) -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return (text * (size // len(text) + 1))[:size]


def test_bound_is_the_count_within_its_bounds_and_never_below_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = random.Random(3)
    texts = [*SAMPLES, *(english(rng.randrange(1, 5000)) for _ in range(20))]
    assert tokens.bound(texts) == tokens.count(texts) == tokens.estimate(texts)
    # Bounds small enough for these texts to pass them, every way round.
    for room, budget, calls in ((50, 1 << 20, 99), (1 << 20, 2000, 99), (0, 0, 0), (700, 9000, 3)):
        monkeypatch.setattr(tokens, "EXACT_TOKENS", room)
        monkeypatch.setattr(tokens, "EXACT_BYTES", budget)
        monkeypatch.setattr(tokens, "EXACT_TEXTS", calls)
        for _ in range(20):
            chosen = rng.sample(texts, rng.randrange(1, len(texts)))
            found = tokens.measure(chosen)
            assert found.bound >= tokens.count(chosen)
            assert found.exact == (found.bound == found.counted)
            assert found.counted + found.rest_bytes == tokens.bound(chosen)


def test_a_prompt_of_any_size_is_bounded_reading_a_bounded_amount(recorder: Recorder) -> None:
    huge = english(24 << 20)
    assert tokens.bound([huge]) >= tokens.EXACT_BYTES  # its bytes: never tokenized
    assert recorder.read == 0
    many = [english(100_000)] * 200  # 20 MB in 100 KB texts: counted up to the bounds
    assert tokens.bound(many) > tokens.EXACT_TOKENS
    assert recorder.read <= tokens.EXACT_BYTES
    tiny = ["a", "é", "", "b"] * 300_000  # many texts: as many calls as EXACT_TEXTS
    exact = tokens.count(tiny)
    recorder.calls = 0
    assert exact == 900_000 < tokens.bound(tiny) < 1_200_000  # é: 2 bytes, 1 token
    assert recorder.calls <= tokens.EXACT_TEXTS


def test_the_estimate_past_the_bounds_follows_the_text_counted(recorder: Recorder) -> None:
    text = english(3 << 20)
    exact = tokens.count([text])
    read = recorder.read
    estimate = tokens.estimate([text])
    assert abs(estimate - exact) < exact * 0.05, (estimate, exact)
    assert recorder.read - read <= tokens.EXACT_BYTES


def test_at_most_decides_from_bytes_or_counts_to_the_limit(recorder: Recorder) -> None:
    assert tokens.at_most(["hello world"], 11) == (True, True)  # 11 bytes: not counted
    assert recorder.read == 0
    assert tokens.at_most(["hello world"], 2) == (True, True)
    assert tokens.at_most(["hello world"], 1) == (False, True)
    assert tokens.at_most(["hello", " world", "!"], 2) == (False, True)
    # A long conversation is counted to its end (each text holds a token: no more texts
    # than the limit's tokens need counting).
    turns = ["hello world"] * (tokens.EXACT_TEXTS + 5000)
    assert tokens.at_most(turns, 2 * len(turns)) == (True, True)
    assert tokens.at_most(turns, 2 * len(turns) - 1) == (False, True)
    # Counting stops once the limit is passed.
    recorder.read = 0
    assert tokens.at_most([english(1000)] * 50, 300) == (False, True)
    assert recorder.read <= 2000


def test_at_most_past_the_bounds_never_says_a_longer_prompt_fits(
    recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Text past EXACT_BYTES counts its bytes: the answer is safe, and says it is not exact."""
    monkeypatch.setattr(tokens, "EXACT_BYTES", 10_000)
    prompt = [english(9_000), "x" * 2_000]  # the second text is past the bytes read
    counted = tokens.count(prompt[:1])
    assert counted + 2_000 <= 5_000 < 11_000
    assert tokens.at_most(prompt, 5_000) == (True, False)
    assert tokens.at_most(prompt, counted + 1_000) == (False, False)
    assert recorder.read <= 10_000 * 3


def test_a_text_cut_where_counting_slices_it_counts_the_same() -> None:
    """Counting in slices cuts a long text before a space that follows other than white
    space; at every such place the two parts' counts add up to the whole's, whatever the
    characters around it."""
    rng = random.Random(11)
    alphabet = [
        *"abcXYZ  \n\r\t'\"sé中文123!?.,/(){}_-#$\u02bc\u2019😀٣\u0301\u00a0\u2003\u3000\u0085\u2028\x1c",
        "'s", "'ll", " 's", "\r\n", "\uff11\uff12", "  ",
    ]  # fmt: skip
    texts = [*SAMPLES, english(20_000)]
    texts += [
        "".join(rng.choice(alphabet) for _ in range(rng.randrange(2, 80))) for _ in range(4000)
    ]
    places = 0
    for text in texts:
        whole = tokens.count([text])
        for found in tokens._CUT.finditer(text):
            cut = found.start() + 1
            assert tokens.count([text[:cut]]) + tokens.count([text[cut:]]) == whole, text
            places += 1
    assert places > 10_000


def test_counting_in_slices_pauses_and_counts_what_measure_does(recorder: Recorder) -> None:
    from extproc.slices import finish

    long = english(200_000)
    texts = [long, "hello world", english(50_000)[9:], "x" * (3 * tokens.SLICE_CHARS)]
    counting = tokens.measuring(texts, slices=True)
    reads, pauses = [], 0
    while True:
        before = recorder.read
        try:
            next(counting)
        except StopIteration as done:
            sliced = done.value
            break
        pauses += 1
        reads.append(recorder.read - before)
    assert sliced == tokens.measure(texts) and sliced.counted == tokens.count(texts)
    # A slice's work between pauses is about SLICE_CHARS characters of text (the README's
    # few non-ASCII characters take more bytes), but for a text with no place to cut (the
    # run of x's), read in one piece.
    assert pauses == len(reads) == 8, reads
    assert max(reads[:-1]) < tokens.SLICE_CHARS * 1.02 < 3 * tokens.SLICE_CHARS <= reads[-1]
    # A run with no place to cut is one slice; the text after it is sliced again.
    mixed = english(50_000) + "A" * 70_000 + english(200_000)
    pieces = [len(piece) for piece in tokens._cut(mixed, tokens.SLICE_CHARS)]
    assert sum(pieces) == len(mixed) and max(pieces) < 70_000 + 2 * tokens.SLICE_CHARS
    assert len(pieces) >= 200_000 // tokens.SLICE_CHARS + 2
    # Within its room: past it, the same overflow as measure's, found in slices.
    assert finish(tokens.measuring([long], 1_000, slices=True)) == tokens.measure([long], 1_000)
    assert finish(tokens.fitting([long], 1_000, slices=True)) == tokens.at_most([long], 1_000)
    assert finish(tokens.fitting([long], 100_000, slices=True)) == (True, True)


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


@pytest.fixture
def memo(monkeypatch: pytest.MonkeyPatch) -> tokens.Memo:
    fresh = tokens.Memo(64)
    monkeypatch.setattr(tokens, "MEMO", fresh)
    return fresh


def test_a_scope_counts_a_long_text_once(recorder: Recorder, memo: tokens.Memo) -> None:
    """An agent resends its conversation every turn: only the new texts are tokenized."""
    conversation = [english(6_000), "ok", english(3_000)[1:]]
    exact = tokens.count(conversation)
    recorder.read = 0
    assert tokens.bound(conversation, "team") == exact
    first = recorder.read
    assert first >= 9_000
    turn = [*conversation, english(2_000)[7:]]
    assert tokens.bound(turn, "team") == tokens.count(turn)
    counted = tokens.count(turn)
    recorder.read = 0
    assert tokens.bound(turn, "team") == tokens.estimate(turn, "team") == counted
    assert recorder.read == 2 * len("ok")  # short texts are counted every time
    assert len(memo) == 3
    # Another tenant's requests are counted for it: its timing cannot tell what was sent.
    recorder.read = 0
    assert tokens.bound(conversation, "other") == exact
    assert recorder.read == first
    # Without a scope nothing is kept.
    assert tokens.bound([english(5_000)[3:]]) > 0
    assert len(memo) == 5


def test_a_remembered_count_still_decides_the_limit(recorder: Recorder, memo: tokens.Memo) -> None:
    text = english(8_000)
    count = tokens.count([text])
    assert tokens.at_most([text], count, "team") == (True, True)
    recorder.read = 0
    assert tokens.at_most([text], count - 1, "team") == (False, True)
    assert tokens.at_most([text, text], 2 * count, "team") == (True, True)
    assert tokens.at_most([text, text], 2 * count - 1, "team") == (False, True)
    assert recorder.read == 0
    # Past EXACT_TOKENS a remembered text counts its bytes like any other.
    found = tokens.measure([text, text], tokens=count + 10, scope="team")
    assert found.overflow and found.counted == count and found.bound >= 2 * count


def test_the_memo_keeps_the_most_recently_used_within_its_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    memo = tokens.Memo(4)
    monkeypatch.setattr(tokens, "MEMO", memo)
    texts = [f"{i} " + english(1_500) for i in range(6)]
    for text in texts[:4]:
        tokens.bound([text], "team")
    tokens.bound([texts[0]], "team")  # used again: kept over texts 1 and 2
    for text in texts[4:]:
        tokens.bound([text], "team")
    kept = {key[2] for key in memo}
    assert len(memo) == 4
    assert kept == {hash(texts[i]) for i in (0, 3, 4, 5)}


def test_a_memo_entry_is_small() -> None:
    import tracemalloc

    memo = tokens.Memo(10_000)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(10_000):
        memo.put(("team", 4_000 + i, hash(str(i))), (1_000 + i, 4_000 + i))
    per_entry = (tracemalloc.get_traced_memory()[0] - before) / 10_000
    tracemalloc.stop()
    assert per_entry < 400, per_entry  # ~320 B: the default 16,384 entries take ~5 MB
