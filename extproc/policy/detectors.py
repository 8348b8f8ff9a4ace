"""PII and secret detectors: a linear-time pattern, a validity check, a mask, stream bounds.

Patterns run on RE2 (google-re2), so no configured or built-in pattern can take more
than linear time on a hostile prompt. A candidate that fails its check (Luhn, IBAN
mod 97, SSN ranges, address parsing) is not reported.
"""

from __future__ import annotations

import importlib
import re
import string
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Final

import re2

from extproc.policy import checksums, phones

# RE2's \C matches one byte even inside a character: a match's offsets would fall between
# a character's bytes, where no text offset is (an odd number of backslashes before the C).
_ANY_BYTE: Final = re.compile(r"(?<!\\)(?:\\\\)*\\C")


def compile_pattern(pattern: str, *, case_sensitive: bool = True) -> re2._Regexp:
    """Compile with RE2; raises re2.error with RE2's message for unsupported syntax."""
    if _ANY_BYTE.search(pattern):
        raise re2.error("\\C (any byte) is not supported: it can match part of a character")
    options = re2.Options()
    options.log_errors = False  # a bad config pattern is reported by the loader, not logged
    options.case_sensitive = case_sensitive
    return re2.compile(pattern, options)


WORD: Final = frozenset(string.ascii_letters + string.digits + "_")
_DIGITS: Final = frozenset(string.digits)
_ALNUM: Final = frozenset(string.ascii_letters + string.digits)


@dataclass(frozen=True, slots=True)
class Finding:
    start: int
    end: int
    detector: Detector


class Encoded:
    """A long text's UTF-8 bytes, encoded once for every pattern that reads the whole of
    it: the binding encodes a str again on every call, which costs several times what RE2
    does on the bytes. Offsets found in the bytes are turned back into the text's."""

    __slots__ = ("_byte", "_char", "data")

    def __init__(self, text: str) -> None:
        self.data = text.encode()
        self._byte = self._char = 0

    def chars(self, offset: int) -> int:
        """The character offset of byte `offset` (a character's first byte): counted on
        from the last one asked for, so a pass over the matches in order decodes the text
        once."""
        if offset < self._byte:
            self._byte = self._char = 0
        self._char += len(self.data[self._byte : offset].decode())
        self._byte = offset
        return self._char

    def boundary(self, offset: int) -> bool:
        """Whether byte `offset` starts a character, or ends the text."""
        return offset == len(self.data) or (self.data[offset] & 0xC0) != 0x80


def _spans(regex: re2._Regexp, encoded: Encoded) -> Iterator[tuple[int, int]]:
    """A pattern's non-empty matches in a text's bytes, as the text's offsets, in order.
    After an empty match the binding's finditer steps on by a byte, into a character, and
    on a `str` its offsets are then wrong (past the text's end); this goes on from the next
    character instead. Matches start and end where characters do (a pattern with \\C, one
    byte, is refused): a match that did not would be widened to the whole characters."""
    data = encoded.data
    size = len(data)
    position = 0
    while position <= size:
        match = regex.search(data, position)
        if match is None:
            return
        start, end = match.span()
        if end > start:
            while not encoded.boundary(start):
                start -= 1
            while not encoded.boundary(end):
                end += 1
            yield encoded.chars(start), encoded.chars(end)
            position = end
        else:
            position = start + 1
            while position < size and not encoded.boundary(position):
                position += 1


@dataclass(frozen=True, slots=True)
class Detector:
    name: str  # as written in the config: "email", or a custom detector's name
    label: str  # placeholder type: [EMAIL_1]
    regex: re2._Regexp
    validate: Callable[[str], bool] | None
    mask: Callable[[str], str]
    # A match may not touch these characters on either side.
    edge: frozenset[str]
    # Streaming: whether a character can occur in a match (None: any) and the longest match.
    charset: Callable[[str], bool] | None
    max_length: int
    # Cheap prefilter: skip the regex when none of these characters occurs.
    needs: frozenset[str] | None = None
    # Streaming: a marker that opens a long region (a private-key block), held until closed.
    region: tuple[str, str] | None = field(default=None)
    # Streaming: a word that may precede a match after one space ("Bearer <token>").
    lead: str = ""
    # A character every match contains, and how far a match reaches before and after it:
    # the pattern then runs only on windows around each occurrence (fast on long text).
    anchor: str = ""
    reach: tuple[int, int] = (0, 0)
    # A second pass over the candidates that reads the text around them and may narrow
    # or drop them (phone numbers: libphonenumber's matcher over the regions' plans).
    refine: Callable[[str, Iterable[tuple[int, int]]], Iterator[tuple[int, int]]] | None = None
    # Streaming: characters the checks read on each side of a candidate, held back too.
    context: int = 0

    def _matches(self, text: str, encoded: Encoded | None) -> Iterator[tuple[int, int]]:
        if not self.anchor:
            if encoded is None and text.isascii():
                # A byte is a character: the binding's own iteration is right.
                for match in self.regex.finditer(text):
                    yield match.span()
                return
            yield from _spans(self.regex, encoded or Encoded(text))
            return
        before, after = self.reach
        position, done = text.find(self.anchor), 0
        while position >= 0:
            # A slice, not pos/endpos: the binding converts the whole string on every call.
            low = max(done, position - before)
            for match in self.regex.finditer(text[low : position + after]):
                start, end = match.start() + low, match.end() + low
                if start <= position < end:
                    yield start, end
                    done = end
                    break
            position = text.find(self.anchor, max(position + 1, done))

    def find(self, text: str, encoded: Encoded | None = None) -> Iterator[Finding]:
        """Its matches in `text` (read as `encoded`, when given: the same text's bytes)."""
        # Loop over the few needed characters: each `in` is a C-speed search of the text.
        if self.needs is not None and not any(c in text for c in self.needs):
            return
        spans = self._matches(text, encoded)
        if self.refine is not None:
            spans = self.refine(text, spans)
        for start, end in spans:
            if start == end:
                continue
            if start > 0 and text[start - 1] in self.edge:
                continue
            if end < len(text) and text[end] in self.edge:
                continue
            if self.validate is not None and not self.validate(text[start:end]):
                continue
            yield Finding(start, end, self)

    def hold(self, tail: str) -> int:
        """How many trailing characters of streamed text could still become a match."""
        held = 0
        if self.region is not None:
            opening, closing = self.region
            position = tail.rfind(opening)
            if position >= 0 and tail.find(closing, position) < 0:
                held = len(tail) - position
            else:
                for size in range(min(len(opening) - 1, len(tail)), 0, -1):
                    if opening.startswith(tail[-size:]):
                        held = size
                        break
        if self.charset is None:
            return max(held, min(len(tail), self.max_length))
        if self.context:
            return max(held, self._quiet_cut(tail, self.charset))
        run = 0
        for char in reversed(tail):
            if run >= self.max_length or not self.charset(char):
                break
            run += 1
        if self.lead:
            before = tail[: len(tail) - run].lower()
            if before.endswith(self.lead + " "):
                run += len(self.lead) + 1
        return max(held, run)

    def spanning(self, tail: str, cut: int) -> int:
        """How much to hold back so that a cut at `cut` does not split a run of characters
        a match of this detector could contain (0: the cut splits none)."""
        charset = self.charset
        if charset is None or not 0 < cut < len(tail):
            return 0
        if not (charset(tail[cut - 1]) and charset(tail[cut])):
            return 0
        start = cut - 1
        while start > 0 and cut - start < self.max_length and charset(tail[start - 1]):
            start -= 1
        return len(tail) - start

    def _quiet_cut(self, tail: str, charset: Callable[[str], bool]) -> int:
        """Hold back from the last point with `context` characters that no match can
        contain on each side: every candidate's checks then read the same characters in
        released text as in the whole stream. A longer run is cut at its longest match."""
        width = self.context
        bound = self.max_length + 2 * width
        position = len(tail) - width
        while position >= width and len(tail) - position <= bound:
            if not any(charset(c) for c in tail[position - width : position + width]):
                return len(tail) - position
            position -= 1
        return min(len(tail), bound)


# -- masks ------------------------------------------------------------------------------


def _keep_last(count: int) -> Callable[[str], str]:
    def mask(value: str) -> str:
        seen = 0
        out = []
        for char in reversed(value):
            if char.isalnum():
                seen += 1
                out.append(char if seen <= count else "*")
            else:
                out.append(char)
        return "".join(reversed(out))

    return mask


def _mask_email(value: str) -> str:
    local, _, domain = value.partition("@")
    return f"{local[:1]}***@{domain}"


def _mask_iban(value: str) -> str:
    compact = value.replace(" ", "")
    return f"{compact[:2]}{'*' * (len(compact) - 6)}{compact[-4:]}"


def _mask_ip(value: str) -> str:
    if ":" in value:
        return value.split(":", 1)[0] + ":****"
    return value.split(".", 1)[0] + ".*.*.*"


def _mask_secret(value: str) -> str:
    return value[:4] + "*" * 8


def mask_all(value: str) -> str:
    return "".join("*" if c.isalnum() else c for c in value)


# -- built-ins --------------------------------------------------------------------------

_EMAIL_CHARS: Final = frozenset(string.ascii_letters + string.digits + "._%+-@")


def _email_char(char: str) -> bool:
    return char.isalnum() or char in "._%+-@"


_TOKEN_CHARS: Final = frozenset(string.ascii_letters + string.digits + "_-.~+/=")
_SECRET_PATTERN: Final = "|".join(
    [
        r"(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}",  # AWS access key id
        r"sk-ant-[A-Za-z0-9_-]{20,200}",  # Anthropic
        r"sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,200}",  # OpenAI
        r"gh[pousr]_[A-Za-z0-9]{36,255}",  # GitHub
        r"github_pat_[A-Za-z0-9_]{22,255}",
        r"AIza[0-9A-Za-z_-]{35}",  # Google API key
        r"xox[baprs]-[A-Za-z0-9-]{10,200}",  # Slack
        r"(?:sk|rk)_live_[0-9A-Za-z]{24,99}",  # Stripe
        r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",  # JWT
        r"[Bb]earer [A-Za-z0-9._~+/-]{20,}=*",  # bearer token
        # A private-key block, armour to armour.
        r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----(?s:.*?)"
        r"-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----",
    ]
)


def _ip_dots(text: str, spans: Iterable[tuple[int, int]]) -> Iterator[tuple[int, int]]:
    """No dot before an address, and none after but a sentence's full stop: "1.2.3.4.5"
    is a version."""
    for start, end in spans:
        if start > 0 and text[start - 1] == ".":
            continue
        if end + 1 < len(text) and text[end] == "." and text[end + 1] in _ALNUM:
            continue
        yield start, end


@lru_cache(maxsize=64)
def phone_detector(
    regions: tuple[str, ...], leniency: str, international_leniency: str
) -> Detector:
    """The phone detector for one configuration: policies that configure the same share
    it (findings are grouped per detector)."""
    rules = phones.rules(regions, leniency, international_leniency)
    return Detector(
        name="phone",
        label="PHONE",
        regex=compile_pattern(phones.PATTERN),
        validate=None,
        mask=_keep_last(2),
        edge=frozenset(),
        charset=phones.CHARSET.__contains__,
        max_length=phones.MAX_LENGTH,
        needs=_DIGITS,
        refine=rules.refine,
        context=phones.CONTEXT,
    )


BUILTIN: Final[dict[str, Detector]] = {
    detector.name: detector
    for detector in (
        Detector(
            name="secret",
            label="SECRET",
            regex=compile_pattern(_SECRET_PATTERN),
            validate=None,
            mask=_mask_secret,
            edge=frozenset(string.ascii_letters + string.digits + "_"),
            charset=_TOKEN_CHARS.__contains__,
            max_length=255,
            region=("-----BEGIN", "PRIVATE KEY-----\n"),
            lead="bearer",
        ),
        Detector(
            name="payment_card",
            label="CARD",
            regex=compile_pattern(r"[0-9](?:[ -]?[0-9]){11,18}"),
            validate=checksums.payment_card_valid,
            mask=_keep_last(4),
            edge=_ALNUM,
            charset=(_DIGITS | {" ", "-"}).__contains__,
            max_length=23,
            needs=_DIGITS,
            context=1,
        ),
        Detector(
            name="iban",
            label="IBAN",
            regex=compile_pattern(r"[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11,30}"),
            validate=checksums.iban_valid,
            mask=_mask_iban,
            edge=_ALNUM,
            charset=frozenset(string.ascii_uppercase + string.digits + " ").__contains__,
            max_length=42,
            needs=_DIGITS,
        ),
        Detector(
            name="us_ssn",
            label="SSN",
            regex=compile_pattern(r"[0-9]{3}[- ][0-9]{2}[- ][0-9]{4}"),
            validate=checksums.us_ssn_valid,
            mask=_keep_last(4),
            edge=_ALNUM | {"-"},
            charset=(_DIGITS | {" ", "-"}).__contains__,
            max_length=11,
            needs=_DIGITS,
        ),
        Detector(
            name="email",
            label="EMAIL",
            # Letters and digits of any script: "ana.lópez@correo.es", "info@münchen.de".
            # Plain repetition: counted repetition of Unicode classes makes RE2 slow; the
            # RFC length limits are checked by the validator instead.
            regex=compile_pattern(
                r"[\p{L}\p{N}._%+-]+@[\p{L}\p{N}-]+(?:\.[\p{L}\p{N}-]+)*\.\p{L}+"
            ),
            validate=checksums.email_valid,
            mask=_mask_email,
            edge=_EMAIL_CHARS - {"."},
            charset=_email_char,
            max_length=254,
            # Unicode classes make RE2 slow on long text: search only around each "@"
            # instead (docs/benchmarks.md).
            anchor="@",
            reach=(65, 256),
        ),
        Detector(
            name="ip_address",
            label="IP",
            regex=compile_pattern(
                r"(?:[0-9]{1,3}\.){3}[0-9]{1,3}|(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}"
            ),
            validate=checksums.ip_valid,
            mask=_mask_ip,
            edge=_ALNUM | {":"},
            charset=frozenset(string.hexdigits + ".:").__contains__,
            max_length=45,
            needs=frozenset(".:"),
            refine=_ip_dots,
        ),
        phone_detector(
            phones.DEFAULT_REGIONS,
            phones.DEFAULT_LENIENCY,
            phones.DEFAULT_INTERNATIONAL_LENIENCY,
        ),
    )
}


_CATEGORIES: Final = {
    "CATEGORY_DIGIT": frozenset(string.digits),
    "CATEGORY_WORD": WORD,
    "CATEGORY_SPACE": frozenset(" \t\n\r\f\v"),
}


def pattern_bounds(pattern: str) -> tuple[frozenset[str] | None, int | None]:
    """The characters a simple pattern can match and its longest match, from Python's
    regex parser (it reads simple patterns as RE2 does). (None, None) when the pattern
    has "any character", negations, Unicode classes or unbounded repeats."""
    try:
        # The standard library's own regex parser (typeshed has no stub for it).
        sre_parse = importlib.import_module("re._parser")
        parsed = sre_parse.parse(pattern)
    except Exception:
        return None, None
    chars: set[str] = set()

    def walk(items: Any) -> bool:
        for op, arg in items:
            name = str(op)
            if name == "LITERAL":
                chars.add(chr(arg))
            elif name == "RANGE":
                chars.update(chr(c) for c in range(arg[0], arg[1] + 1))
            elif name == "CATEGORY":
                if str(arg) not in _CATEGORIES:
                    return False
                chars.update(_CATEGORIES[str(arg)])
            elif name == "IN":
                if not walk(arg):
                    return False
            elif name in ("MAX_REPEAT", "MIN_REPEAT"):
                if not walk(arg[2]):
                    return False
            elif name == "SUBPATTERN":
                if not walk(arg[3]):
                    return False
            elif name == "BRANCH":
                if not all(walk(branch) for branch in arg[1]):
                    return False
            elif name != "AT":
                return False  # ANY, NOT_LITERAL, NEGATE, GROUPREF, ...
        return True

    if not walk(parsed.data):
        return None, None
    longest = parsed.getwidth()[1]
    return frozenset(chars), (longest if longest < 10_000 else None)


def custom_detector(name: str, pattern: str, label: str, max_length: int) -> Detector:
    """A detector from the config; raises re2.error when RE2 cannot compile the pattern."""
    regex = compile_pattern(pattern)
    charset, longest = pattern_bounds(pattern)
    return Detector(
        name=name,
        label=label,
        regex=regex,
        validate=None,
        mask=mask_all,
        edge=frozenset(),
        charset=charset.__contains__ if charset is not None else None,
        max_length=longest if longest is not None else max_length,
    )


def scan(
    text: str, detectors: tuple[Detector, ...], encoded: Encoded | None = None
) -> list[Finding]:
    """Findings of all detectors, without overlaps: earlier first, then longer, then the
    detector listed first. `encoded`: the text's bytes, when a caller has them."""
    findings: list[Finding] = []
    for detector in detectors:
        findings.extend(detector.find(text, encoded))
    if len(findings) < 2:
        return findings
    order = {id(d): i for i, d in enumerate(detectors)}
    findings.sort(key=lambda f: (f.start, -(f.end - f.start), order[id(f.detector)]))
    kept: list[Finding] = []
    for finding in findings:
        if kept and finding.start < kept[-1].end:
            continue
        kept.append(finding)
    return kept
