"""Policy evaluation for one exchange: decisions, placeholders, the request body.

Pure code over parsed bodies. A request body goes through `evaluation` once (the request
steps run it, in slices for a large body); responses go through `outputs.py` (JSON) and the
stream filters (`filters.py`, `responses_stream.py`) with the same `Redactions` and
`Decisions`.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

import orjson

from extproc.apis import ApiError, Kind
from extproc.apis.text import Found, Unread, request_found
from extproc.lru import Lru
from extproc.policy.detectors import Detector, Encoded, Finding, scan
from extproc.policy.rules import SCREEN_CHARS, Action, Applied, Detection, PolicySet
from extproc.slices import Pauses, Sliced, finish
from extproc.tokens import fitting

_DESCRIPTIONS: Final = {
    "email": "an e-mail address",
    "phone": "a phone number",
    "payment_card": "a payment card number",
    "us_ssn": "a US social security number",
    "iban": "an IBAN",
    "ip_address": "an IP address",
    "secret": "a secret (credential or private key)",
}


# A placeholder as the gateway writes them: "[EMAIL_1]". (No "[" inside the class: a scan
# from each "[" stops at the next one, so any prompt is matched in linear time.)
_PLACEHOLDER: Final = re.compile(r"\[([A-Z][A-Z0-9_]*?)_(\d{1,9})\]")


@dataclass(slots=True)
class Decisions:
    """What policies did (or would have done, in shadow mode) during one exchange."""

    # (policy, kind, rule, action, mode, direction) -> times
    counts: dict[tuple[str, str, str, str, str, str], int]

    def __init__(self) -> None:
        self.counts = {}

    def add(
        self,
        policy: str,
        kind: str,
        rule: str,
        action: str,
        shadow: bool,
        direction: str,
        n: int = 1,
    ) -> None:
        key = (policy, kind, rule, action, "shadow" if shadow else "enforce", direction)
        self.counts[key] = self.counts.get(key, 0) + n

    def records(self) -> list[dict[str, object]]:
        return [
            {"policy": p, "kind": k, "rule": r, "action": a, "mode": m, "direction": d, "count": n}
            for (p, k, r, a, m, d), n in self.counts.items()
        ]


@dataclass(slots=True)
class Redactions:
    """Placeholders of one exchange: the same value always gets the same placeholder."""

    by_value: dict[tuple[str, str], str]
    originals: dict[str, str]  # placeholder -> value, to restore
    numbers: dict[str, int]  # label -> the highest number given or written

    def __init__(self) -> None:
        self.by_value = {}
        self.originals = {}
        self.numbers = {}

    def avoid(self, text: str) -> dict[str, int]:
        """Number new placeholders above any the client wrote itself ("[EMAIL_1]" typed in
        a prompt), so restoring never turns the client's own text into a value. Returns
        the highest number the text has per label."""
        written: dict[str, int] = {}
        if "[" not in text:
            return written
        for match in _PLACEHOLDER.finditer(text):
            label, number = match.group(1), int(match.group(2))
            if number > written.get(label, 0):
                written[label] = number
        self.avoid_numbers(written.items())
        return written

    def avoid_numbers(self, written: Iterable[tuple[str, int]]) -> None:
        numbers = self.numbers
        for label, number in written:
            if number > numbers.get(label, 0):
                numbers[label] = number

    def placeholder(self, label: str, value: str, restore: bool) -> str:
        key = (label, value)
        found = self.by_value.get(key)
        if found is None:
            number = self.numbers[label] = self.numbers.get(label, 0) + 1
            found = f"[{label}_{number}]"
            self.by_value[key] = found
        if restore:
            self.originals[found] = value
        return found

    def output_placeholder(self, label: str, value: str) -> str:
        """A placeholder for a value found in model output: numbered after the request's,
        never restored (it must not collide with a placeholder that is)."""
        key = ("out:" + label, value)
        found = self.by_value.get(key)
        if found is None:
            number = self.numbers[label] = self.numbers.get(label, 0) + 1
            found = f"[{label}_{number}]"
            self.by_value[key] = found
        return found

    def restore(self, text: str, json_text: bool = False) -> str:
        """Originals back in place of placeholders; JSON-escaped inside JSON source text
        (tool-call arguments), where a quote in a value would break the document."""
        if not self.originals or "[" not in text:
            return text
        for placeholder, value in self.originals.items():
            if placeholder in text:
                text = text.replace(
                    placeholder, orjson.dumps(value).decode()[1:-1] if json_text else value
                )
        return text


def blocked(rule_name: str) -> ApiError:
    return ApiError(
        400,
        f"The request was blocked by policy rule '{rule_name}'.",
        "content_policy_violation",
    )


def described(detector: Detector) -> str:
    """What a detector finds, for an error message ("an e-mail address")."""
    return _DESCRIPTIONS.get(detector.name, f"data matching '{detector.name}'")


def pii_blocked(detector: Detector, policy: str) -> ApiError:
    return ApiError(
        400,
        f"The request contains {described(detector)}, which policy '{policy}' does not allow.",
        "content_policy_violation",
    )


def rewrite(
    text: str,
    findings: list[Finding],
    detection: Detection,
    redactions: Redactions,
    output: bool = False,
) -> str:
    """The text with redacted and masked findings replaced."""
    parts: list[str] = []
    position = 0
    for finding in findings:
        applied = detection.by_detector[id(finding.detector)]
        value = text[finding.start : finding.end]
        if applied.action is Action.REDACT and output:
            replacement = redactions.output_placeholder(finding.detector.label, value)
        elif applied.action is Action.REDACT:
            replacement = redactions.placeholder(finding.detector.label, value, applied.restore)
        elif applied.action is Action.MASK:
            replacement = finding.detector.mask(value)
        else:
            continue
        parts.append(text[position : finding.start])
        parts.append(replacement)
        position = finding.end
    if not parts:
        return text
    parts.append(text[position:])
    return "".join(parts)


def ruled_out(
    policies: PolicySet,
    direction: str,
    text: str,
    role: str | None = None,
    encoded: Encoded | None = None,
) -> frozenset[int]:
    """The direction's deny rules and detectors (a request's, of a role) that match nowhere
    in a text, screened at once (none for a text under SCREEN_CHARS). `encoded`: the text's
    bytes, when a caller has them."""
    if len(text) < SCREEN_CHARS:
        return _NOTHING
    screen = policies.screen(direction, role)
    if screen is None:
        return _NOTHING
    return screen.ruled_out(text if encoded is None else encoded.data)


def scan_pii(
    text: str,
    detection: Detection,
    decisions: Decisions,
    direction: str,
    out: frozenset[int] = frozenset(),
) -> tuple[list[Finding], Applied | None]:
    """Findings in text, recorded; and the first one whose enforced action is block. `out`:
    detectors ruled out for the text."""
    findings = scan(text, kept(detection.detectors, out))
    return findings, tally(findings, detection, decisions, direction)


def kept(detectors: tuple[Detector, ...], out: frozenset[int]) -> tuple[Detector, ...]:
    """The detectors not ruled out."""
    return tuple(d for d in detectors if id(d) not in out) if out else detectors


def tally(
    findings: list[Finding], detection: Detection, decisions: Decisions, direction: str
) -> Applied | None:
    """Findings recorded; the first one whose enforced action is block."""
    if not findings:
        return None
    per_detector = Counter(id(f.detector) for f in findings)
    block = None
    for detector_id, n in per_detector.items():
        entry = detection.by_detector[detector_id]
        for rule in entry.rules:
            decisions.add(
                rule.policy,
                "pii",
                entry.detector.name,
                rule.action.value,
                rule.shadow,
                direction,
                n,
            )
        if entry.action is Action.BLOCK and block is None:
            block = entry
    return block


_MAX_TOKEN_FIELDS: Final = {
    Kind.CHAT: ("max_completion_tokens", "max_tokens"),
    Kind.COMPLETIONS: ("max_tokens",),
    Kind.MESSAGES: ("max_tokens",),
    Kind.RESPONSES: ("max_output_tokens",),
}


def _limits(
    policies: PolicySet,
    kind: Kind,
    body: dict[str, Any],
    texts: list[str],
    decisions: Decisions,
    scope: str | None,
    slices: bool,
) -> Evaluation:
    changed = False
    # A Responses request's messages are its input items (a string input is one message).
    where = "input" if kind is Kind.RESPONSES else "messages"
    for policy in policies.policies:
        limits = policy.limits
        shadow = policy.shadow
        messages = body.get(where)
        if (
            limits.max_messages
            and isinstance(messages, list)
            and len(messages) > limits.max_messages
        ):
            decisions.add(policy.name, "limit", "max_messages", "block", shadow, "request")
            if not shadow:
                return ApiError(
                    400,
                    f"The request has {len(messages)} messages; "
                    f"policy '{policy.name}' allows {limits.max_messages}.",
                    "too_many_messages",
                    where,
                ), changed
        if limits.max_prompt_tokens:
            fits, exact = yield from fitting(texts, limits.max_prompt_tokens, scope, slices)
            if not fits:
                decisions.add(policy.name, "limit", "max_prompt_tokens", "block", shadow, "request")
                if not shadow:
                    has = "has more than" if exact else "may have more than"
                    return ApiError(
                        400,
                        f"The prompt {has} {limits.max_prompt_tokens} tokens, "
                        f"policy '{policy.name}''s limit.",
                        "prompt_too_long",
                        where,
                    ), changed
        fields = _MAX_TOKEN_FIELDS.get(kind, ())
        present = [
            f for f in fields if isinstance(body.get(f), int) and not isinstance(body.get(f), bool)
        ]
        if limits.max_tokens:
            for name in present:
                if body[name] > limits.max_tokens:
                    decisions.add(policy.name, "limit", "max_tokens", "cap", shadow, "request")
                    if not shadow:
                        body[name] = limits.max_tokens
                        changed = True
        if limits.default_max_tokens and fields and not present and body.get(fields[0]) is None:
            decisions.add(policy.name, "limit", "default_max_tokens", "set", shadow, "request")
            if not shadow:
                body[fields[0]] = limits.default_max_tokens
                changed = True
    return None, changed


def _decorate(policies: PolicySet, kind: Kind, body: dict[str, Any], decisions: Decisions) -> bool:
    changed = False
    for policy in policies.policies:
        if not policy.prepend and not policy.append:
            continue
        if kind not in (Kind.CHAT, Kind.MESSAGES, Kind.RESPONSES):
            continue
        decisions.add(
            policy.name, "system_prompt", "system_prompt", "add", policy.shadow, "request"
        )
        if policy.shadow:
            continue
        changed = True
        if kind is Kind.CHAT:
            messages = body["messages"]
            body["messages"] = (
                [{"role": "system", "content": text} for text in policy.prepend]
                + messages
                + [{"role": "system", "content": text} for text in policy.append]
            )
        elif kind is Kind.RESPONSES:
            # The instructions are the system prompt, a string as Anthropic's may be.
            instructions = body.get("instructions")
            joined = _anthropic_system(
                instructions if isinstance(instructions, str) else None,
                policy.prepend,
                policy.append,
            )
            body["instructions"] = joined
        else:
            body["system"] = _anthropic_system(body.get("system"), policy.prepend, policy.append)
    return changed


def _anthropic_system(existing: Any, prepend: tuple[str, ...], append: tuple[str, ...]) -> Any:
    if isinstance(existing, list):
        blocks = [{"type": "text", "text": t} for t in prepend]
        return blocks + existing + [{"type": "text", "text": t} for t in append]
    parts = [*prepend, *([existing] if isinstance(existing, str) and existing else []), *append]
    return "\n\n".join(parts)


def body_size_error(policies: PolicySet, size: int, decisions: Decisions) -> ApiError | None:
    """A policy's body-size limit, checked before the body is parsed."""
    for policy in policies.policies:
        limit = policy.limits.max_request_bytes
        if limit and size > limit:
            decisions.add(
                policy.name, "limit", "max_request_bytes", "block", policy.shadow, "request"
            )
            if not policy.shadow:
                return ApiError(
                    413,
                    f"The request body exceeds policy '{policy.name}'s limit of {limit} bytes.",
                    "request_too_large",
                )
    return None


def unreadable(
    policies: PolicySet, kind: Kind, part: Unread, decisions: Decisions
) -> ApiError | None:
    """A part whose text the gateway cannot read (a type it does not know) may carry text
    for the model: where an enforced policy reads that role's text, it is refused rather
    than let past the policy unread. Shadow policies record what they would have done."""
    enforced = None
    for policy, shadow in policies.request_readers.get(part.role, ()):
        decisions.add(policy, "content", "unread_part", "block", shadow, "request")
        if not shadow and enforced is None:
            enforced = policy
    if enforced is None:
        return None
    if kind is Kind.MESSAGES:
        where = ".".join(str(step) for step in part.path)
    else:
        where = "".join(f"[{s}]" if type(s) is int else f".{s}" for s in part.path)[1:]
    return ApiError(
        400,
        f"'{where}' is of type '{part.kind}', whose text policy '{enforced}' cannot read; "
        "the gateway reads text parts and blocks.",
        "unsupported_value",
        f"{where}.type",
    )


@dataclass(frozen=True, slots=True)
class Reading:
    """A long text as a policy set read it: no deny rule matched; its PII findings (none:
    clean) and the placeholders the client wrote in it, the highest number per label."""

    findings: tuple[Finding, ...]
    written: tuple[tuple[str, int], ...] = ()


# What a policy set found in long request texts: an agent sends its whole conversation
# again every turn, and only the new texts need reading. Keyed by the set (one tenant's: its
# timing cannot tell it what another tenant sent), the text's role, its length and its hash
# (keyed per process, see tokens.Memo).
READ = Lru[tuple[int, str, int, int], Reading](16_384)
READ_CHARS: Final = 1024
# A text with more findings, or more placeholders of its own, is read every time: an entry
# stays small (~1 KB at most).
READ_FINDINGS: Final = 8


_CLEAN: Final = Reading(())
_NOTHING: Final[frozenset[int]] = frozenset()


@dataclass(slots=True)
class _Seen:
    """What the policy set read before in a request's long texts; what it reads in full
    now is remembered."""

    keys: dict[int, tuple[int, str, int, int]]  # by the text's index, long texts only
    known: dict[int, Reading]
    # False once a (shadow) deny rule matched: it stops at its first text, leaving the
    # later ones unread by it.
    keep: bool
    # Long texts' UTF-8 bytes, by index, from the deny rules' pass to the detectors'.
    _bytes: dict[int, Encoded]
    # The patterns that match nowhere in a screened text (ids of rules and detectors), by
    # the text's index.
    _ruled_out: dict[int, frozenset[int]]

    def __init__(
        self, keys: dict[int, tuple[int, str, int, int]], known: dict[int, Reading]
    ) -> None:
        self.keys = keys
        self.known = known
        self.keep = True
        self._bytes = {}
        self._ruled_out = {}

    @classmethod
    def of(cls, policies: PolicySet, roles: list[str], texts: list[str]) -> _Seen:
        keys: dict[int, tuple[int, str, int, int]] = {}
        known: dict[int, Reading] = {}
        for index, text in enumerate(texts):
            if len(text) >= READ_CHARS:
                key = keys[index] = (policies.serial, roles[index], len(text), hash(text))
                reading = READ.get(key)
                if reading is not None:
                    known[index] = reading
        return cls(keys, known)

    def encoded(self, index: int, text: str) -> Encoded | None:
        """The text's bytes for the patterns that read all of it, encoded once for the
        request's deny rules and detectors: for a long text that is not ASCII (an ASCII
        str is handed to RE2 as it is stored)."""
        if len(text) < ENCODE_CHARS or text.isascii():
            return None
        found = self._bytes.get(index)
        if found is None:
            found = self._bytes[index] = Encoded(text)
        return found

    def ruled_out(self, policies: PolicySet, index: int, role: str, text: str) -> frozenset[int]:
        """The role's patterns that match nowhere in a text, screened once for them all
        (none for a text under SCREEN_CHARS)."""
        found = self._ruled_out.get(index)
        if found is None:
            encoded = self.encoded(index, text)
            found = self._ruled_out[index] = ruled_out(policies, "request", text, role, encoded)
        return found

    def read(self, index: int) -> None:
        """The text's last pattern was run: its bytes go."""
        self._bytes.pop(index, None)

    def remember(self, index: int, reading: Reading = _CLEAN) -> None:
        key = self.keys.get(index)
        if (
            self.keep
            and key is not None
            and index not in self.known
            and len(reading.findings) <= READ_FINDINGS
            and len(reading.written) <= READ_FINDINGS
        ):
            READ.put(key, reading)


# A text this long that is not ASCII is encoded once for all the patterns run on it.
ENCODE_CHARS = 4 * 1024

# An evaluation in slices (`evaluation(..., slices=True)`) pauses once it has read this many
# characters since its last pause: between texts, as one text is read in one piece.
SLICE_CHARS: Final = 64 * 1024

# A refusal or none, and whether the body was redacted.
Evaluated = tuple[ApiError | None, bool]
Evaluation = Sliced[Evaluated]


def evaluate_request(
    policies: PolicySet,
    kind: Kind,
    body: dict[str, Any],
    redactions: Redactions,
    decisions: Decisions,
    scope: str | None = None,
) -> tuple[ApiError | None, bool]:
    """Apply the policies to a parsed request body in place; (error, body changed).
    `scope` (the tenant) keeps the counts of long texts for its later requests."""
    return finish(evaluation(policies, kind, body, redactions, decisions, scope))


def evaluation(
    policies: PolicySet,
    kind: Kind,
    body: dict[str, Any],
    redactions: Redactions,
    decisions: Decisions,
    scope: str | None = None,
    slices: bool = False,
) -> Evaluation:
    """evaluate_request as a generator: with `slices`, it yields (a pause for the caller)
    at its start, after every SLICE_CHARS characters read, in the prompt's token count
    (tokens.measuring's slices), and before it returns, so that a large body is read in
    parts. What it decides is the same."""
    pause = Pauses(SLICE_CHARS, slices)
    if slices:
        yield
    unread: list[Unread] = []
    found = request_found(kind, body, unread)
    for part in unread:
        refusal = unreadable(policies, kind, part, decisions)
        if refusal is not None:
            return refusal, False
    texts, roles = found.texts, found.roles
    error, changed = yield from _limits(policies, kind, body, texts, decisions, scope, slices)
    if error is not None:
        return error, changed
    seen = _Seen.of(policies, roles, texts)
    for rule in policies.request_deny:
        for index, (role, text) in enumerate(zip(roles, texts, strict=True)):
            if role in rule.roles and index not in seen.known:
                out = seen.ruled_out(policies, index, role, text)
                match = id(rule) not in out and rule.search(text, seen.encoded(index, text))
                if match:
                    decisions.add(rule.policy, "deny", rule.name, "block", rule.shadow, "request")
                    if not rule.shadow:
                        return blocked(rule.name), changed
                    seen.keep = False
                    break
                if pause.after(len(text)):
                    yield
    if policies.request_pii:
        result = yield from _redact(
            policies, found, seen, redactions, decisions, changed, kind, body, pause
        )
    else:
        for index in seen.keys:
            seen.remember(index)
        result = None, _decorate(policies, kind, body, decisions) or changed
    if slices and result[0] is None:
        yield
    return result


def _redact(
    policies: PolicySet,
    found: Found,
    seen: _Seen,
    redactions: Redactions,
    decisions: Decisions,
    changed: bool,
    kind: Kind,
    body: dict[str, Any],
    pause: Pauses,
) -> Evaluation:
    known = seen.known
    written: dict[int, dict[str, int]] = {}
    for index, text in enumerate(found.texts):
        reading = known.get(index)
        if reading is None:
            written[index] = redactions.avoid(text)
        elif reading.written:
            redactions.avoid_numbers(reading.written)
    for index, (role, text) in enumerate(zip(found.roles, found.texts, strict=True)):
        detection = policies.request_detection[role]
        reading = known.get(index)
        if reading is not None:
            findings = list(reading.findings)
        elif detection.applied:
            out = seen.ruled_out(policies, index, role, text)
            findings = scan(text, kept(detection.detectors, out), seen.encoded(index, text))
            if pause.after(len(text)):
                yield
        else:
            findings = []
        seen.read(index)  # its patterns have all run
        # Recorded every time: the decisions are the request's own.
        block = tally(findings, detection, decisions, "request")
        if block is not None:
            return pii_blocked(block.detector, block.policy), changed
        if reading is None and index in seen.keys:
            mine = written[index]
            seen.remember(
                index, Reading(tuple(findings), tuple(mine.items())) if findings or mine else _CLEAN
            )
        if findings:
            new = rewrite(text, findings, detection, redactions)
            if new != text:
                found.write(index, new)
                changed = True
    return None, _decorate(policies, kind, body, decisions) or changed


def response_needs(policies: PolicySet, redactions: Redactions) -> bool:
    """Whether the response body must be read: to put values back or to check output."""
    return bool(redactions.originals) or policies.inspects_responses
