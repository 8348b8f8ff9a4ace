from __future__ import annotations

from collections import defaultdict

import pytest
import yaml

from extproc.policy import checksums
from extproc.policy.detectors import BUILTIN, Encoded, custom_detector, scan
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


# -- payment cards: every length the networks issue, barcodes apart --------------------


@pytest.mark.parametrize(
    "number",
    [
        "675929022274",  # Maestro, 12 digits
        "6759 6498 2643 8453",  # Maestro UK, 16
        "4111111111111111110",  # Visa, 19
        "2200 0000 0000 0004",  # Mir
        "3528 0000 0000 0007",  # JCB
        "3001 234567 8907",  # Diners Club, 14 in groups
    ],
)
def test_cards_of_every_network_length_are_found(number: str) -> None:
    assert checksums.luhn_valid(checksums.digits_of(number)), number
    text = f"paid with {number} yesterday"
    assert [text[f.start : f.end] for f in BUILTIN["payment_card"].find(text)] == [number]


@pytest.mark.parametrize(
    "code",
    [
        "5901234123457",  # GS1's own EAN-13 example: passes Luhn, reads as a Maestro
        "4006381333924",  # an EAN-13 that passes Luhn and reads as a 13-digit Visa
        "978-3-16-148410-0",  # ISBN-13
        "0-306-40615-2",  # ISBN-10
    ],
)
def test_barcodes_and_isbns_are_neither_cards_nor_phones(code: str) -> None:
    text = f"item {code} in stock"
    assert checksums.product_code(code)
    assert scan(text, DETECTORS) == []
    if code.isdigit():  # the same digits in a card's groups are a card
        grouped = " ".join(code[i : i + 4] for i in range(0, len(code), 4))
        assert [f.detector.name for f in scan(f"card {grouped}", DETECTORS)] == ["payment_card"]


# -- phone numbers by libphonenumber ---------------------------------------------------


def phones_in(text: str, detector: object = None) -> list[str]:
    found = (detector or BUILTIN["phone"]).find(text)  # type: ignore[attr-defined]
    return [text[f.start : f.end] for f in found]


def test_phone_regions_read_national_formats_and_any_international_number() -> None:
    from extproc.policy.detectors import phone_detector

    german = phone_detector(("DE",), "valid", "possible")
    text = "Berlin 030 1234 5678, US (415) 555-0199 or +1 415 555 0199"
    assert phones_in(text, german) == ["030 1234 5678", "+1 415 555 0199"]
    american = phone_detector(("US",), "valid", "possible")
    assert phones_in(text, american) == ["(415) 555-0199", "+1 415 555 0199"]
    # After an international prefix the country code is written out too.
    assert phones_in("from abroad 0049 30 1234 5678 or 011 44 20 7946 0958") == [
        "0049 30 1234 5678",
        "011 44 20 7946 0958",
    ]


def test_phone_leniency_decides_how_strict_the_plan_check_is() -> None:
    from extproc.policy.detectors import phone_detector

    # 665 is no US area code: a possible number, not a valid one.
    text = "call 665-748-4489 now"
    assert phones_in(text, phone_detector(("US",), "valid", "possible")) == []
    assert phones_in(text, phone_detector(("US",), "possible", "possible")) == ["665-748-4489"]
    # With its country code it is reported at the default international leniency.
    assert phones_in("call +1-665-748-4489 now") == ["+1-665-748-4489"]
    exact = phone_detector(("US",), "exact_grouping", "exact_grouping")
    assert phones_in("call 202-555-0143 or 20 25 55 01 43", exact) == ["202-555-0143"]


@pytest.mark.parametrize(
    "text",
    [
        "invoice INV-2024-4155550132 paid",
        "see https://example.com/orders/4155550132/items",
        "user_4155550132 logged in",
        "AB4155550132 and 4155550132xy",
        "at 08:39:08.4155550132",
        "total 1.234.567,89 EUR and 4 155 550,13",
        "on 15.01.2024 and 2024-01-15",
        "SSN-shaped 219-09-9999 is no phone",
        "card 4111 1111 1111 1111 1111 is too long for a phone",
    ],
)
def test_digit_runs_in_identifiers_dates_and_amounts_are_not_phones(text: str) -> None:
    assert phones_in(text) == []


def test_phone_extension_stays_after_the_number() -> None:
    assert phones_in("call (202) 555-0143x123 or 202-555-0143 ext. 9") == [
        "(202) 555-0143",
        "202-555-0143",
    ]


def test_phone_checks_past_the_budget_still_report_numbers() -> None:
    """Past the matcher's budget per text, a run is judged by the regions' plans."""
    numbers = [f"(202) 555-{n:04d}" for n in range(100, 300)]
    text = ", ".join(numbers)
    assert phones_in(text) == numbers


def test_ip_address_before_a_full_stop_is_found() -> None:
    text = "My address is 75.84.168.212. Version 1.2.3.4.5 is not one."
    assert [text[f.start : f.end] for f in BUILTIN["ip_address"].find(text)] == ["75.84.168.212"]


def test_a_text_read_as_its_bytes_finds_what_it_finds_as_text() -> None:
    """Long texts that are not ASCII are encoded once for every pattern run on them (the
    binding encodes a str on every call); the findings, at the text's own offsets, are
    the same for every built-in detector, and so are the deny rules' matches."""
    import random

    from extproc.policy.detectors import Encoded
    from tests.helpers import runtime

    rng = random.Random(4)
    pieces = [s["text"] for s in CORPUS] + ["é", "日本語", "🎉", "Ünïcödé ", "\u0301", " "]
    for _ in range(200):
        text = "".join(rng.choice(pieces) for _ in range(rng.randrange(1, 40)))
        expected = [(f.start, f.end, f.detector.name) for f in scan(text, DETECTORS)]
        found = scan(text, DETECTORS, Encoded(text))
        assert [(f.start, f.end, f.detector.name) for f in found] == expected, text
    # Patterns that match the empty string (\C, one byte inside a character, is refused at
    # config load).
    from extproc.policy.detectors import custom_detector

    odd = tuple(
        custom_detector(f"odd{n}", pattern, "ODD", 32)
        for n, pattern in enumerate(("x*", "(?:foo)?", "é?", r"\\C", "[^a]"))
    )
    for text in ("日本 foo é xx 🎉" * 400, "aé" * 3000, "é" * 5000 + "foo"):
        for detector in odd:
            expected = [(f.start, f.end) for f in detector.find(text)]
            assert [(f.start, f.end) for f in detector.find(text, Encoded(text))] == expected
    rt = runtime(
        "backends: [{name: b, url: 'http://127.0.0.1:9/v1'}]\n"
        "models: [{name: m, routes: [{backend: b}]}]\n"
        "policies:\n  - name: p\n    deny: [{name: r, keywords: ['über alles', card], "
        "patterns: ['\\d{3}-\\d{4}']}]\n"
        "tenants: [{name: t, policies: [p]}]\nauth: {anonymous_tenant: t}\n"
    )
    (rule,) = rt.policy_set(rt.tenants["t"], rt.models[0]).request_deny
    texts = ["x" * 50 + "ÜBER ALLES", "日本" * 30 + " 555-1234 é", "🎉 card", "nothing here é"]
    found = [rule.search(text, Encoded(text)) for text in texts]
    assert found == [rule.search(text) for text in texts]
    assert found == [(50, 60), (61, 69), (2, 6), None]
    # A rule whose first match falls inside a character (an empty one between two bytes of
    # "é" after a word character) answers as it does on the text.
    boundary = runtime(
        "backends: [{name: b, url: 'http://127.0.0.1:9/v1'}]\n"
        "models: [{name: m, routes: [{backend: b}]}]\n"
        "policies:\n  - name: p\n    deny: [{name: r, patterns: ['\\B']}]\n"
        "tenants: [{name: t, policies: [p]}]\nauth: {anonymous_tenant: t}\n"
    )
    (odd_rule,) = boundary.policy_set(boundary.tenants["t"], boundary.models[0]).request_deny
    for text in ("aé" * 10, "日本語", "é"):
        assert odd_rule.search(text, Encoded(text)) == odd_rule.search(text)


def test_encoded_offsets_come_back_as_the_texts_own() -> None:
    from extproc.policy.detectors import Encoded

    text = "aé日🎉b" * 3
    encoded = Encoded(text)
    starts = [len(text[:i].encode()) for i in range(len(text) + 1)]
    assert [encoded.chars(b) for b in starts] == list(range(len(text) + 1))
    assert encoded.chars(starts[4]) == 4  # asked out of order: counted again from the start


@pytest.mark.parametrize(
    "text", ["a\u00e9b c", "na\u00efve test", "\u65e5\u672c ab cd", "\u00fc x \u00fc y"]
)
def test_a_pattern_that_can_match_empty_finds_the_texts_own_characters(text: str) -> None:
    # After an empty match RE2's binding steps on by a byte, into a character, and its
    # offsets on a str are then off by the bytes it stepped over: a custom detector found
    # the characters beside the ones it matched, and offsets past the text's end.
    detector = custom_detector("letter", r"[a-z]|\B", "LETTER", 1)
    letters = [(i, i + 1) for i, char in enumerate(text) if "a" <= char <= "z"]
    assert [(f.start, f.end) for f in detector.find(text)] == letters
    assert [(f.start, f.end) for f in detector.find(text, Encoded(text))] == letters
