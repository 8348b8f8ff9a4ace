"""The screen of a long request text: one RE2 pass that rules out the deny rules and
detectors matching nowhere in it, which then need no pass of their own."""

from __future__ import annotations

import copy
import random
from typing import Any

import pytest

from extproc.apis import Kind
from extproc.policy.engine import Decisions, Redactions, evaluate_request
from extproc.policy.outputs import check_output
from extproc.policy.rules import ROLES, SCREEN_CHARS, PolicySet, Screen, _screen
from extproc.policy.tools import scan_arguments, scan_result
from tests.helpers import runtime

CONFIG = """
backends: [{name: b, url: "http://127.0.0.1:9/v1"}]
models: [{name: m, routes: [{backend: b}]}]
policies:
  - name: guard
    deny:
      - name: injection
        keywords: ["ignore previous instructions", "kill switch"]
        roles: [user, tool]
        apply_to: [request, tool_result]
      - {name: codename, keywords: ["Nightingale"], case_sensitive: true, apply_to: [request, response, tool_call]}
      - {name: weapons, patterns: ["how to make .{0,20}explosives", "\\\\bdetonat\\\\w+"]}
    pii:
      - {detector: email, apply_to: [request, response, tool_call, tool_result]}
      - {detector: payment_card, action: mask, roles: [user, assistant], apply_to: [request, response, tool_call]}
      - {detector: phone, action: mask, apply_to: [request, tool_result]}
      - {detector: secret, apply_to: [request, response, tool_call, tool_result]}
      - {detector: ip_address, apply_to: [request, tool_result]}
      - {detector: iban}
      - {detector: us_ssn, apply_to: [request, response]}
      - {name: employee-id, pattern: "EMP-[0-9]{6}", apply_to: [request, tool_call, tool_result]}
  - name: watch
    mode: shadow
    deny: [{name: competitor, keywords: [acme]}]
tenants: [{name: t, policies: [guard, watch]}]
"""

# Pieces that some pattern matches, and some that nearly do. RE2's case folding takes the
# long s for s (and the Kelvin sign for k, which \b reads as no word character): a screen
# must fold as each rule does.
PIECES = [
    "ignore previous instructions",
    "IGNORE Previous INSTRUCTIONS",
    "\u212aill \u017fwitch",
    "ignore previous instruction",
    "Nightingale",
    "nightingale",
    "how to make cheap explosives",
    "detonator",
    "predetonated",
    "Acme",
    "ana.lopez@example.com",
    "jo@@x",
    "4111 1111 1111 1111",
    "4111-1111-1111-1112",
    "+1 415 555 0100",
    "(415) 555-0100",
    "sk-abcdefghijklmnopqrstuvwxyz012345",
    "192.168.10.1",
    "fe80::1",
    "GB82 WEST 1234 5698 7654 32",
    "078-05-1120",
    "EMP-123456",
    "EMP-12345",
    "caf\u00e9",
    "\u65e5\u672c\u8a9e",
    "2026-12-07",
]
FILLER = "The gateway reads every request before a provider does. "


def text(rng: random.Random, pieces: int) -> str:
    parts = [FILLER * rng.randint(1, 4)]
    for _ in range(pieces):
        parts.append(rng.choice(PIECES))
        parts.append(rng.choice([" ", "", ", ", "\n", "x", "é "]))
    parts.append(FILLER * (SCREEN_CHARS // len(FILLER) + 1))
    rng.shuffle(parts)
    return "".join(parts)


def screened_patterns(policies: PolicySet, role: str) -> dict[int, Any]:
    deny = {id(r): r.regex for r in policies.request_deny if role in r.roles}
    detectors = {id(d): d.regex for d in policies.request_detection[role].detectors}
    return deny | detectors


def test_the_screen_rules_out_exactly_the_patterns_that_match_nowhere() -> None:
    rt = runtime(CONFIG)
    policies = rt.policy_set(rt.tenants["t"], rt.models[0])
    rng = random.Random(7)
    for role in ROLES:
        screen = policies.screen("request", role)
        assert screen is not None
        patterns = screened_patterns(policies, role)
        # The e-mail detector reads windows around each "@", not the whole text.
        assert set(screen.keys) < set(patterns)
        for _ in range(60):
            sample = text(rng, rng.randint(0, 3))
            for data in (sample, sample.encode()):
                nowhere = {k for k in screen.keys if patterns[k].search(data) is None}
                assert screen.ruled_out(data) == nowhere


def test_a_clean_text_rules_out_every_screened_pattern() -> None:
    rt = runtime(CONFIG)
    policies = rt.policy_set(rt.tenants["t"], rt.models[0])
    screen = policies.screen("request", "user")
    assert screen is not None
    clean = FILLER * 100
    assert screen.ruled_out(clean) == set(screen.keys)
    detectors = policies.request_detection["user"].detectors
    employee = next(d for d in detectors if d.name == "employee-id")
    assert screen.ruled_out(clean + " EMP-123456") == set(screen.keys) - {id(employee)}
    injection = next(r for r in policies.request_deny if r.name == "injection")
    folded = clean + " IGNORE previous in\u017ftructions."
    assert screen.ruled_out(folded) == set(screen.keys) - {id(injection)}


def run(
    policies: PolicySet, body: dict[str, Any]
) -> tuple[object, dict[str, Any], Redactions, Decisions]:
    body = copy.deepcopy(body)
    redactions, decisions = Redactions(), Decisions()
    error, _ = evaluate_request(policies, Kind.CHAT, body, redactions, decisions)
    return error, body, redactions, decisions


def test_screened_requests_are_decided_as_unscreened_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    # Two runtimes: the policies' memo of long texts is per policy set, and each run must
    # read its texts itself.
    screened_rt, plain_rt = runtime(CONFIG), runtime(CONFIG)
    screened = screened_rt.policy_set(screened_rt.tenants["t"], screened_rt.models[0])
    plain = plain_rt.policy_set(plain_rt.tenants["t"], plain_rt.models[0])
    rng = random.Random(11)
    outcomes = set()
    for _ in range(80):
        messages = [
            {"role": rng.choice(["system", "user", "assistant"]), "content": text(rng, 2)}
            for _ in range(rng.randint(1, 3))
        ]
        body = {"model": "m", "messages": messages}
        got = run(screened, body)
        with monkeypatch.context() as patch:
            patch.setattr(PolicySet, "screen", lambda self, direction, role=None: None)
            want = run(plain, body)
        assert got[0] == want[0]
        assert got[1] == want[1]
        assert got[2].originals == want[2].originals
        assert got[3].counts == want[3].counts
        outcomes.add("blocked" if got[0] is not None else "changed" if got[1] != body else "same")
    # The generated requests reach every outcome: refused, rewritten and let through.
    assert outcomes == {"blocked", "changed", "same"}


def test_no_screen_for_one_pattern_or_when_re2_cannot_build_it() -> None:
    rt = runtime(
        """
backends: [{name: b, url: "http://127.0.0.1:9/v1"}]
models: [{name: m, routes: [{backend: b}]}]
policies:
  - name: one
    pii: [{detector: payment_card}]
  - name: huge
    pii:
      - {name: long-word, pattern: "\\\\p{L}{200}"}
      - {name: long-name, pattern: "\\\\p{Lu}\\\\p{L}{199}"}
tenants: [{name: one, policies: [one]}, {name: huge, policies: [huge]}]
"""
    )
    assert rt.policy_set(rt.tenants["one"], rt.models[0]).screen("request", "user") is None
    huge = rt.policy_set(rt.tenants["huge"], rt.models[0])
    # Each pattern compiles alone, and their set is past RE2's memory limit.
    assert Screen.of([], huge.request_detection["user"].detectors) is None
    assert huge.screen("request", "user") is None
    word = "W" + "o" * 199
    message = {"role": "user", "content": FILLER * 80 + word}
    error, body, _, decisions = run(huge, {"model": "m", "messages": [message]})
    assert error is None
    assert word not in body["messages"][0]["content"]
    assert decisions.counts


@pytest.mark.parametrize("direction", ["response", "tool_call", "tool_result"])
def test_screened_output_and_tool_texts_are_decided_as_unscreened_ones(
    monkeypatch: pytest.MonkeyPatch, direction: str
) -> None:
    rt = runtime(CONFIG)
    policies = rt.policy_set(rt.tenants["t"], rt.models[0])
    assert policies.screen(direction) is not None

    def check(sample: list[str]) -> tuple[object, Redactions, Decisions]:
        redactions, decisions = Redactions(), Decisions()
        if direction == "response":
            return check_output(policies, sample[0], decisions, redactions), redactions, decisions
        if direction == "tool_call":
            arguments = {"path": sample[0], "lines": sample[1:]}
            scanned = scan_arguments(policies, arguments, redactions, decisions, max_depth=8)
            return scanned, redactions, decisions
        result = {"content": [{"type": "text", "text": text} for text in sample]}
        return (
            scan_result(policies, result, redactions, decisions, max_depth=8),
            redactions,
            decisions,
        )

    rng = random.Random(13)
    outcomes = set()
    for _ in range(60):
        sample = [text(rng, 2) for _ in range(rng.randint(1, 3))]
        got = check(sample)
        with monkeypatch.context() as patch:
            patch.setattr(PolicySet, "screen", lambda self, direction, role=None: None)
            want = check(sample)
        assert got[0] == want[0]
        assert got[1].by_value == want[1].by_value
        assert got[2].counts == want[2].counts
        outcomes.add(repr(got[0]) == repr(check_unchanged(direction, sample)))
    # Some samples were rewritten or refused, and some passed as they came.
    assert outcomes == {True, False}


def check_unchanged(direction: str, sample: list[str]) -> object:
    """What a check returns for a sample no rule touches."""
    if direction == "response":
        return (sample[0], False)
    if direction == "tool_call":
        return {"path": sample[0], "lines": sample[1:]}
    return {"content": [{"type": "text", "text": text} for text in sample]}


def test_a_set_that_fails_on_a_text_rules_out_nothing() -> None:
    # Tens of thousands of patterns matching at one place: the set compiles, and its DFA
    # runs out of memory on the text that reaches that place, which RE2's binding reports
    # as no match at all.
    patterns = _screen(tuple(("x", True) for _ in range(40_000)))
    assert patterns is not None
    screen = Screen(patterns, tuple(range(40_000)))
    assert screen.ruled_out("a" * 5_000) == set(range(40_000))
    assert screen.ruled_out("a" * 5_000 + "x") == set()
