"""Compiled policies: what the request and response paths, and MCP tool traffic, evaluate;
built at config load."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache
from typing import Any, Final

import re2

from extproc.policy.detectors import Detector, Encoded


class Action(StrEnum):
    REDACT = "redact"
    MASK = "mask"
    BLOCK = "block"
    ALLOW = "allow"


# When policies disagree about one detector, the strongest enforced action wins.
STRENGTH: Final = {Action.ALLOW: 0, Action.MASK: 1, Action.REDACT: 2, Action.BLOCK: 3}
ROLES: Final = ("system", "user", "assistant", "tool")


@dataclass(frozen=True, slots=True)
class DenyRule:
    name: str
    policy: str
    shadow: bool
    regex: re2._Regexp
    keywords: tuple[str, ...]  # lower-cased unless case-sensitive (for stream hold-back)
    case_sensitive: bool
    roles: frozenset[str]  # model traffic only: tool traffic has no roles
    request: bool
    response: bool
    tool_call: bool
    tool_result: bool
    max_length: int
    has_patterns: bool

    def search(self, text: str, encoded: Encoded | None = None) -> tuple[int, int] | None:
        """The first match in `text` (read as `encoded`, when given: its bytes)."""
        if encoded is not None:
            found = self.regex.search(encoded.data)
            if found is None:
                return None
            start, end = found.span()
            if encoded.boundary(start) and encoded.boundary(end):
                return encoded.chars(start), encoded.chars(end)
            # A match inside a character (\C, or an empty one): read as text.
        match = self.regex.search(text)
        return match.span() if match else None

    def hold(self, tail: str) -> int:
        """Trailing characters of streamed text that could still become a match."""
        held = min(len(tail), self.max_length) if self.has_patterns else 0
        probe = tail if self.case_sensitive else tail.lower()
        for keyword in self.keywords:
            for size in range(min(len(keyword), len(probe)), 0, -1):
                if size > held and keyword.startswith(probe[-size:]):
                    held = size
                    break
        return held


@dataclass(frozen=True, slots=True)
class PiiRule:
    detector: Detector
    action: Action
    policy: str
    shadow: bool
    restore: bool
    roles: frozenset[str]  # model traffic only: tool traffic has no roles
    request: bool
    response: bool
    tool_call: bool
    tool_result: bool


@dataclass(frozen=True, slots=True)
class Limits:
    max_messages: int = 0
    max_prompt_tokens: int = 0
    max_tokens: int = 0
    default_max_tokens: int = 0
    max_request_bytes: int = 0


@dataclass(frozen=True, slots=True)
class Policy:
    name: str
    shadow: bool
    deny: tuple[DenyRule, ...]
    pii: tuple[PiiRule, ...]
    limits: Limits
    prepend: tuple[str, ...]
    append: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Applied:
    """What to do with one detector's findings in text of one role."""

    detector: Detector
    rules: tuple[PiiRule, ...]  # every rule that records the finding
    action: Action | None  # the strongest enforced action, None when all are shadow
    restore: bool
    policy: str  # the policy whose enforced action it is


@dataclass(frozen=True, slots=True)
class Detection:
    """The PII rules for text of one role, grouped per detector (first-listed order)."""

    applied: tuple[Applied, ...]
    detectors: tuple[Detector, ...]
    by_detector: dict[int, Applied]  # id(detector) -> its entry

    @classmethod
    def of(cls, rules: tuple[PiiRule, ...], role: str | None) -> Detection:
        """The rules for text of role; role None: all of them (tool traffic has no roles)."""
        grouped: dict[int, list[PiiRule]] = {}
        for rule in rules:
            if role is None or role in rule.roles:
                grouped.setdefault(id(rule.detector), []).append(rule)
        applied = []
        for group in grouped.values():
            enforced = [r for r in group if not r.shadow]
            strongest = max(enforced, key=lambda r: STRENGTH[r.action]) if enforced else None
            applied.append(
                Applied(
                    detector=group[0].detector,
                    rules=tuple(group),
                    action=strongest.action if strongest else None,
                    restore=any(r.restore for r in enforced if r.action is Action.REDACT),
                    policy=strongest.policy if strongest else group[0].policy,
                )
            )
        return cls(
            applied=tuple(applied),
            detectors=tuple(a.detector for a in applied),
            by_detector={id(a.detector): a for a in applied},
        )


# A text this long is screened before its patterns run (`Screen`); shorter ones cost less
# to read pattern by pattern than a screen's call does.
SCREEN_CHARS: Final = 256


@dataclass(frozen=True, slots=True)
class Screen:
    """The patterns that read text of one role or direction, in one RE2 pass over a text:
    those that match nowhere in it are ruled out, and need no pass of their own. RE2's Set runs
    one DFA for all of them, as fast as one pattern's search on most text, where each
    pattern's own search is a pass of its own. What is ruled out could not have matched:
    the set says whether each pattern matches anywhere, as its search would."""

    patterns: Any  # the binding's RE2::Set (see `_screen`)
    keys: tuple[int, ...]  # id() of each rule or detector, by its index in the set, less 1

    @classmethod
    def of(cls, deny: Sequence[DenyRule], detectors: Sequence[Detector]) -> Screen | None:
        """The screen of these rules and detectors; None when it would save no pass, or
        RE2 cannot build it within its memory limit (every pattern then runs)."""
        # A detector with an anchor runs on windows of the text: a window's match need not
        # be the whole text's (at its edges, \b and the like read other characters).
        entries = [(id(r), r.regex.pattern, r.case_sensitive) for r in deny]
        entries += [(id(d), d.regex.pattern, True) for d in detectors if not d.anchor]
        if len(entries) < 2:
            return None
        patterns = _screen(tuple((pattern, sensitive) for _, pattern, sensitive in entries))
        if patterns is None:
            return None
        return cls(patterns, tuple(key for key, _, _ in entries))

    def ruled_out(self, data: bytes | str) -> frozenset[int]:
        """The keys of the patterns that match nowhere in `data`."""
        matched = self.patterns.Match(data if isinstance(data, bytes) else data.encode())
        if _READ_TO_THE_END not in matched:
            # The set failed (its DFA out of memory mid-text), which the binding reports as
            # no match at all: nothing is ruled out.
            return frozenset()
        keys = self.keys
        return frozenset(keys).difference(keys[index - 1] for index in matched if index)


# What a set and its DFA may hold: its states are built as texts need them, and a hostile
# text fills any budget; a set reads as fast with this one as with RE2's default.
SCREEN_MEMORY: Final = 1 << 20


_READ_TO_THE_END: Final = 0


@lru_cache(maxsize=64)
def _screen(entries: tuple[tuple[str, bool], ...]) -> Any:
    """One set per list of patterns, shared by the policy sets that read it: the binding's
    RE2::Set under re2.Set (private), whose Match takes the UTF-8 bytes. re2.Set.Match is
    interpreted Python that encodes a str and calls it: two interpreted calls per read."""
    options = re2.Options()
    options.log_errors = False
    options.max_mem = SCREEN_MEMORY
    patterns = re2.Set.SearchSet(options)
    try:
        # Index 0 matches at the end of every text: a set that read the text reports it.
        patterns.Add(r"\z")
        for pattern, case_sensitive in entries:
            # The rule's own case folding, as a flag: the set has one set of options.
            patterns.Add(pattern if case_sensitive else f"(?i:{pattern})")
        # Compiling fails when RE2 sees that the DFA could not run in its memory. A set
        # that compiled can still run out on a text (a set cannot fall back on another
        # engine), with many patterns matching at one place: index 0 shows it.
        patterns.Compile()
    except re2.error:
        return None
    return patterns._set


_SERIALS: Final = itertools.count()


@dataclass(frozen=True, slots=True)
class PolicySet:
    """The policies of one tenant and model, in order, flattened for the hot path (built
    once per tenant and model pair)."""

    policies: tuple[Policy, ...]
    request_deny: tuple[DenyRule, ...] = field(init=False)
    request_pii: tuple[PiiRule, ...] = field(init=False)
    # Request text of each role, and model output (role assistant).
    request_detection: dict[str, Detection] = field(init=False)
    # The screens of the deny rules and detectors of each direction (a request's by role),
    # built on first use.
    _screens: dict[tuple[str, str | None], Screen | None] = field(init=False, compare=False)
    output_deny: tuple[DenyRule, ...] = field(init=False)
    output_detection: Detection = field(init=False)
    # Per role, every (policy, shadow) that reads request text of that role: deny rules,
    # PII rules, prompt token limits (all roles). A part of that role whose text the
    # gateway cannot read is refused when one of them is enforced.
    request_readers: dict[str, tuple[tuple[str, bool], ...]] = field(init=False)
    # MCP tool traffic: a tools/call's arguments and its result, whatever the roles.
    tool_call_deny: tuple[DenyRule, ...] = field(init=False)
    tool_call_detection: Detection = field(init=False)
    tool_result_deny: tuple[DenyRule, ...] = field(init=False)
    tool_result_detection: Detection = field(init=False)
    # Unique in the process, never reused: what the engine's memo of long texts is keyed by.
    serial: int = field(init=False, compare=False)

    def __post_init__(self) -> None:
        deny = [rule for policy in self.policies for rule in policy.deny]
        pii = [rule for policy in self.policies for rule in policy.pii]
        request_pii = tuple(r for r in pii if r.request)
        response_pii = tuple(r for r in pii if r.response)
        set_ = object.__setattr__
        set_(self, "request_deny", tuple(r for r in deny if r.request))
        set_(self, "request_pii", request_pii)
        set_(self, "request_detection", {role: Detection.of(request_pii, role) for role in ROLES})
        set_(self, "_screens", {})
        set_(self, "output_deny", tuple(r for r in deny if r.response and "assistant" in r.roles))
        set_(self, "output_detection", Detection.of(response_pii, "assistant"))
        readers: dict[str, list[tuple[str, bool]]] = {role: [] for role in ROLES}
        rules: list[DenyRule | PiiRule] = [*self.request_deny, *request_pii]
        for rule in rules:
            for role in rule.roles:
                readers.setdefault(role, []).append((rule.policy, rule.shadow))
        for policy in self.policies:
            if policy.limits.max_prompt_tokens:
                for found in readers.values():
                    found.append((policy.name, policy.shadow))
        set_(self, "request_readers", {r: tuple(dict.fromkeys(v)) for r, v in readers.items()})
        set_(self, "tool_call_deny", tuple(r for r in deny if r.tool_call))
        set_(self, "tool_call_detection", Detection.of(tuple(r for r in pii if r.tool_call), None))
        set_(self, "tool_result_deny", tuple(r for r in deny if r.tool_result))
        tool_result_pii = tuple(r for r in pii if r.tool_result)
        set_(self, "tool_result_detection", Detection.of(tool_result_pii, None))
        set_(self, "serial", next(_SERIALS))

    @property
    def empty(self) -> bool:
        return not self.policies

    def screen(self, direction: str, role: str | None = None) -> Screen | None:
        """The screen of the deny rules and detectors that read text of a direction
        ("request", of a role; "response", "tool_call", "tool_result"). Built when a text
        of SCREEN_CHARS or more of it is first read: compiling takes milliseconds, once
        per list of patterns."""
        key = (direction, role)
        screens = self._screens
        if key not in screens:
            deny: Sequence[DenyRule]
            if direction == "request":
                deny = [rule for rule in self.request_deny if role in rule.roles]
                detection = self.request_detection[str(role)]
            elif direction == "response":
                deny, detection = self.output_deny, self.output_detection
            elif direction == "tool_call":
                deny, detection = self.tool_call_deny, self.tool_call_detection
            else:
                deny, detection = self.tool_result_deny, self.tool_result_detection
            screens[key] = Screen.of(deny, detection.detectors)
        return screens[key]

    @property
    def inspects_responses(self) -> bool:
        return bool(self.output_deny or self.output_detection.applied)

    @property
    def inspects_tool_calls(self) -> bool:
        return bool(self.tool_call_deny or self.tool_call_detection.applied)

    @property
    def inspects_tool_results(self) -> bool:
        """Whether a rule reads tool results (putting placeholders back may need them read
        too: `tools.result_needs`)."""
        return bool(self.tool_result_deny or self.tool_result_detection.applied)


EMPTY: Final = PolicySet(())
