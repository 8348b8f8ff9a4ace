"""Compiled policies: what the request and response paths evaluate, built at config load."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

import re2

from extproc.policy.detectors import Detector


class Action(StrEnum):
    REDACT = "redact"
    MASK = "mask"
    BLOCK = "block"
    ALLOW = "allow"


# When policies disagree about one detector, the strongest enforced action wins.
STRENGTH = {Action.ALLOW: 0, Action.MASK: 1, Action.REDACT: 2, Action.BLOCK: 3}
ROLES = ("system", "user", "assistant", "tool")


@dataclass(frozen=True, slots=True)
class DenyRule:
    name: str
    policy: str
    shadow: bool
    regex: re2._Regexp
    keywords: tuple[str, ...]  # lower-cased unless case-sensitive (for stream hold-back)
    case_sensitive: bool
    roles: frozenset[str]
    request: bool
    response: bool
    max_length: int
    has_patterns: bool

    def search(self, text: str) -> tuple[int, int] | None:
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
    roles: frozenset[str]
    request: bool
    response: bool


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

    @property
    def mode(self) -> str:
        return "shadow" if self.shadow else "enforce"


@dataclass(frozen=True, slots=True)
class PolicySet:
    """The policies of one tenant and model, in order, flattened for the hot path."""

    policies: tuple[Policy, ...]
    request_deny: tuple[DenyRule, ...] = field(init=False)
    response_deny: tuple[DenyRule, ...] = field(init=False)
    request_pii: tuple[PiiRule, ...] = field(init=False)
    response_pii: tuple[PiiRule, ...] = field(init=False)

    def __post_init__(self) -> None:
        deny = [rule for policy in self.policies for rule in policy.deny]
        pii = [rule for policy in self.policies for rule in policy.pii]
        object.__setattr__(self, "request_deny", tuple(r for r in deny if r.request))
        object.__setattr__(self, "response_deny", tuple(r for r in deny if r.response))
        object.__setattr__(self, "request_pii", tuple(r for r in pii if r.request))
        object.__setattr__(self, "response_pii", tuple(r for r in pii if r.response))

    @property
    def empty(self) -> bool:
        return not self.policies

    @property
    def restores(self) -> bool:
        return any(rule.restore for rule in self.request_pii)

    @property
    def inspects_responses(self) -> bool:
        return bool(self.response_deny or self.response_pii)


EMPTY = PolicySet(())
