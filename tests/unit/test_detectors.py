from __future__ import annotations

from collections import defaultdict

import pytest
import yaml

from extproc.policy import checksums
from extproc.policy.detectors import BUILTIN, scan
from tests.helpers import ROOT

CORPUS = yaml.safe_load((ROOT / "tests" / "data" / "pii_corpus.yaml").read_text())
DETECTORS = tuple(BUILTIN.values())
# The floor every built-in detector must keep on the corpus.
MIN_PRECISION = 0.95
MIN_RECALL = 0.9


def test_corpus_precision_and_recall(capsys: pytest.CaptureFixture[str]) -> None:
    counts: dict[str, dict[str, int]] = defaultdict(lambda: {"tp": 0, "fp": 0, "fn": 0})
    misses = []
    for sample in CORPUS:
        found: dict[str, list[str]] = defaultdict(list)
        for finding in scan(sample["text"], DETECTORS):
            found[finding.detector.name].append(sample["text"][finding.start : finding.end])
        expected = {sample["detector"]: list(sample["expect"])}
        for name in BUILTIN:
            want, got = expected.get(name, []), found.get(name, [])
            tp = len([v for v in got if v in want])
            counts[name]["tp"] += tp
            counts[name]["fp"] += len(got) - tp
            counts[name]["fn"] += len([v for v in want if v not in got])
            if got != want and (got or want):
                misses.append(f"{name}: {sample['text']!r} expected {want} got {got}")
    with capsys.disabled():
        print("\ndetector        precision  recall   (tp/fp/fn)")
        for name, c in counts.items():
            precision = c["tp"] / max(c["tp"] + c["fp"], 1)
            recall = c["tp"] / max(c["tp"] + c["fn"], 1)
            print(f"{name:15} {precision:9.3f}  {recall:6.3f}   ({c['tp']}/{c['fp']}/{c['fn']})")
        for miss in misses:
            print("  miss:", miss)
    for name, c in counts.items():
        assert c["tp"] / max(c["tp"] + c["fp"], 1) >= MIN_PRECISION, name
        assert c["tp"] / max(c["tp"] + c["fn"], 1) >= MIN_RECALL, name


def test_checksums() -> None:
    assert checksums.luhn_valid("79927398713") and not checksums.luhn_valid("79927398710")
    assert checksums.iban_valid("GB82 WEST 1234 5698 7654 32")
    assert not checksums.iban_valid("GB82 WEST 1234 5698 7654 33")
    assert checksums.us_ssn_valid("078-05-1120") and not checksums.us_ssn_valid("078-05-0000")


@pytest.mark.parametrize(
    ("name", "value", "masked"),
    [
        ("payment_card", "4111 1111 1111 1111", "**** **** **** 1111"),
        ("email", "john.doe@example.com", "j***@example.com"),
        ("us_ssn", "123-45-6789", "***-**-6789"),
        ("iban", "GB82 WEST 1234 5698 7654 32", "GB****************5432"),
        ("ip_address", "192.168.1.10", "192.*.*.*"),
        ("phone", "+1 415-555-0132", "+* ***-***-**32"),
        ("secret", "AKIAIOSFODNN7EXAMPLE", "AKIA********"),
    ],
)
def test_masks(name: str, value: str, masked: str) -> None:
    assert BUILTIN[name].mask(value) == masked


def test_hostile_input_stays_linear() -> None:
    import time

    hostile = "a" * 200_000 + "@" + "b." * 50_000
    started = time.perf_counter()
    scan(hostile, DETECTORS)
    assert time.perf_counter() - started < 2.0


def test_custom_pattern_bounds_for_stream_hold_back() -> None:
    from extproc.policy.detectors import pattern_bounds

    charset, longest = pattern_bounds(r"EMP-[0-9]{6}")
    assert charset == frozenset("EMP-0123456789") and longest == 10
    assert pattern_bounds(r"\bID[0-9]{3,5}\b")[1] == 7
    assert pattern_bounds(r"[A-Z]{2}[0-9]+")[1] is None  # unbounded: the rule's max_match_length
    assert pattern_bounds(r".{4}") == (None, None)
    assert pattern_bounds(r"[^a]b") == (None, None)


def test_email_windows_around_each_at_sign_find_exact_matches() -> None:
    text = "lorem ipsum dolor " * 1000 + " mail x@y.io and ana.lópez@correo.es, not@ or @all"
    assert [text[f.start : f.end] for f in BUILTIN["email"].find(text)] == [
        "x@y.io",
        "ana.lópez@correo.es",
    ]
    long_local = "a" * 70 + "@example.com"
    assert list(BUILTIN["email"].find(long_local)) == []  # over the RFC's 64 characters
