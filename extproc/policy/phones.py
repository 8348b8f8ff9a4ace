"""Phone numbers by libphonenumber (`phonenumbers`): the regions whose national formats are
read, how strict a number must be, and the cheap checks that keep the library off text
that cannot hold one.

RE2 finds runs of digits and phone punctuation. A run reaches the library's matcher only
when it has a phone number's count of digits, is not glued to a longer identifier, is not
an ISBN, a barcode, a date or an amount, and the numbering plan of a configured region
could hold its digits (one RE2 set for all regions); the matcher is then asked for those
regions only. It costs far more than the checks before it (docs/benchmarks.md), so its
verdict on a run's text is cached (a conversation's history comes again with every turn)
and a text gets a number of matcher runs in proportion to its length: past them, the
plans decide alone.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache

import phonenumbers
import re2
from phonenumbers import Leniency, PhoneNumberMatcher

from extproc.policy import checksums

LENIENCIES = {
    "possible": Leniency.POSSIBLE,
    "valid": Leniency.VALID,
    "strict_grouping": Leniency.STRICT_GROUPING,
    "exact_grouping": Leniency.EXACT_GROUPING,
}
DEFAULT_REGIONS = ("US", "GB", "DE", "FR", "ES", "IT", "NL", "BR", "JP", "IN", "PL", "SE")
DEFAULT_LENIENCY = "valid"
DEFAULT_INTERNATIONAL_LENIENCY = "possible"

# A run of digits and the punctuation numbers are written with ("+49 (0) 30 1234-5678",
# "06.12.34.56.78", "030/1234567"); at most three punctuation characters between digits,
# at least eight digits (MIN_DIGITS; each match costs the binding a call).
PATTERN = r"[+(]{0,2}[0-9](?:[ ()./-]{0,3}[0-9]){7,}"
CHARSET = frozenset(string.digits + " ()./-+")
# E.164 numbers have at most 15 digits, an international prefix ("00", "011") adds up to
# three; fewer than 8 are local numbers without their area code, extensions, years and
# counts. Written nationally, a number has at most 14 (Germany's longest with its trunk
# 0): longer runs are card numbers and ids.
MIN_DIGITS, MAX_DIGITS, MAX_NATIONAL_DIGITS = 8, 18, 14
# Characters the checks read on each side of a run: the stream hold-back keeps them.
CONTEXT = 2
# Longest run the matcher is given: 18 digits with their punctuation.
MAX_LENGTH = 40

_WORD = frozenset(string.ascii_letters + string.digits + "_")
_ALNUM = frozenset(string.ascii_letters + string.digits)
# Punctuation that joins a run to the identifier it is part of: "INV-2024-000123",
# "v1.4155550132", "/item/4155550132".
_JOINERS = frozenset("-./")
_EXTENSION = frozenset("xX")
_DIGITS = frozenset(string.digits)


# Shapes of other numbers: a US social security number, an amount with its decimals.
_OTHER_SHAPES = re.compile(
    r"[0-9]{3}([- ])[0-9]{2}\1[0-9]{4}|[0-9]{1,3}(?:[ .][0-9]{3})+[.,][0-9]{2}"
)


def _date_like(candidate: str) -> bool:
    """Day, month and a four-digit year in any order, one separator: "2024-01-15",
    "15.01.2024", "01/15/2024"."""
    for separator in "-./ ":
        parts = candidate.split(separator)
        if len(parts) == 3 and all(part.isdigit() for part in parts):
            years = [p for p in parts if len(p) == 4 and p[:2] in ("19", "20")]
            small = [p for p in parts if len(p) <= 2 and 0 < int(p) <= 31]
            return len(years) == 1 and len(small) == 2
    return False


def _other_number(run: str) -> bool:
    """An ISBN, a barcode, a date, an SSN or an amount: none is a phone number."""
    return (
        checksums.product_code(run) or _date_like(run) or _OTHER_SHAPES.fullmatch(run) is not None
    )


_ONLY_DIGITS = str.maketrans("", "", "".join(sorted(CHARSET - _DIGITS)))


def _digit_count(run: str) -> int:
    return len(run.translate(_ONLY_DIGITS))


def _glued(text: str, start: int, end: int) -> bool:
    """The run is part of a longer word or identifier."""
    if start > 0:
        before = text[start - 1]
        if before in _WORD:
            return True
        if start > 1:
            joined = text[start - 2]
            if (before in _JOINERS and joined in _ALNUM) or (before in ":," and joined in _DIGITS):
                return True  # "INV-2024-000123", a time's "08:39:08.182062", "3,1415926"
    if end < len(text):
        after = text[end]
        following = text[end + 1] if end + 1 < len(text) else ""
        if after in _EXTENSION:
            return following not in _DIGITS  # "x123" is an extension
        if after in _WORD:
            return True
        if (after in _JOINERS and following in _ALNUM) or (after == "," and following in _DIGITS):
            return True  # "4155550132.txt", "1.234.567,89"
    return False


# The number types whose patterns make a number valid (libphonenumber's metadata).
_TYPES = (
    "fixed_line", "mobile", "toll_free", "premium_rate", "shared_cost",
    "personal_number", "voip", "pager", "uan", "voicemail",
)  # fmt: skip


def _metadata(region: str) -> phonenumbers.PhoneMetadata:
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
    if metadata is None:
        raise ValueError(f"no numbering plan for region {region}")
    return metadata


def _plan(region: str, leniency: str) -> str:
    """The digits of a number the region's plan could hold, after an optional national
    prefix (trunk "0", carrier codes) or the country code: a superset of what the
    library accepts."""
    metadata = _metadata(region)
    leads = (
        metadata.national_prefix_for_parsing,
        metadata.national_prefix,
        str(metadata.country_code),
    )
    lead = "|".join(f"(?:{p})" for p in leads if p)
    if leniency == "possible":
        lengths = metadata.general_desc.possible_length if metadata.general_desc else ()
        body = "|".join(f"[0-9]{{{n}}}" for n in lengths)
    else:
        descs = (getattr(metadata, name) for name in _TYPES)
        body = "|".join(f"(?:{d.national_number_pattern})" for d in descs if d is not None)
    return f"(?:{lead})?(?:{body})"


def _plans(regions: tuple[str, ...], leniency: str) -> re2.Set:
    """Every region's plan in one RE2 set: which regions could hold a run's digits, in
    one pass over them."""
    options = re2.Options()
    options.log_errors = False
    plans = re2.Set.FullMatchSet(options)
    for region in regions:
        plans.Add(_plan(region, leniency))
    plans.Compile()
    return plans


@dataclass(frozen=True, slots=True)
class PhoneRules:
    """How numbers are recognised: the regions whose national formats count, and how
    strict the check is for a number written nationally and for one written with its
    country code ("+49 30 ...", or after an international prefix: "0049 30 ...")."""

    regions: tuple[str, ...]
    leniency: str
    international_leniency: str
    # Matcher runs per text: this many, and one more per `budget_bytes` of it; past them
    # a run is judged by the regions' plans alone, so a text of numbers costs time in
    # proportion to its length, as any other text (docs/benchmarks.md).
    budget: int = 2
    budget_bytes: int = 1024
    _verdict: Callable[[str], tuple[int, int] | None] = field(init=False, repr=False)
    # One region per international prefix ("00", "011", ...): a run starting with it
    # names its country, and every region with that prefix reads it alike.
    _dialling: tuple[tuple[re.Pattern[str], str], ...] = field(init=False, repr=False)
    _plans: re2.Set = field(init=False, repr=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "_verdict", lru_cache(maxsize=4096)(self._match))
        prefixes: dict[str, str] = {}
        for region in self.regions:
            prefix = _metadata(region).international_prefix
            if prefix:
                prefixes.setdefault(prefix, region)
        set_(self, "_dialling", tuple((re.compile(p), r) for p, r in prefixes.items()))
        set_(self, "_plans", _plans(self.regions, self.leniency))

    def _first(self, run: str, region: str, leniency: str) -> tuple[int, int] | None:
        for match in PhoneNumberMatcher(run, region, LENIENCIES[leniency]):
            return match.start, match.end
        return None

    def _attempts(self, run: str) -> list[tuple[str, str]]:
        """The (region, leniency) pairs the matcher is asked, in order."""
        if run.startswith("+"):
            return [(self.regions[0], self.international_leniency)]
        digits = run.translate(_ONLY_DIGITS)
        attempts = [(r, self.international_leniency) for p, r in self._dialling if p.match(digits)]
        if len(digits) <= MAX_NATIONAL_DIGITS:
            held = sorted(self._plans.Match(digits) or ())
            attempts += [(self.regions[index], self.leniency) for index in held]
        return attempts

    def _match(self, run: str) -> tuple[int, int] | None:
        """Where the matcher finds a number in the run. A region reading the whole run
        wins over one that reads a part of it."""
        part = None
        for region, leniency in self._attempts(run):
            found = self._first(run, region, leniency)
            if found == (0, len(run)):
                return found
            digits = 0 if found is None else _digit_count(run[found[0] : found[1]])
            if part is None and digits >= MIN_DIGITS:
                part = found
        return part

    def refine(self, text: str, runs: Iterable[tuple[int, int]]) -> Iterator[tuple[int, int]]:
        """The phone numbers among the runs RE2 found in text."""
        checks, budget = 0, self.budget + len(text) // self.budget_bytes
        for start, end in runs:
            if text[start] == "(" and text.count("(", start, end) > text.count(")", start, end):
                start += 1  # a bracket opened before the number, closed after it
            if end - start > MAX_LENGTH or _glued(text, start, end):
                continue
            run = text[start:end]
            if not MIN_DIGITS <= _digit_count(run) <= MAX_DIGITS or _other_number(run):
                continue
            if checks >= budget:
                if self._attempts(run):
                    yield start, end
                continue
            checks += 1
            found = self._verdict(run)
            if found is None:
                continue
            low, high = start + found[0], start + found[1]
            if (low, high) == (start, end) or not _glued(text, low, high):
                yield low, high


def supported(region: str) -> bool:
    return region in phonenumbers.SUPPORTED_REGIONS


@lru_cache(maxsize=64)
def rules(regions: tuple[str, ...], leniency: str, international_leniency: str) -> PhoneRules:
    """One PhoneRules per configuration, shared by every policy that names it."""
    return PhoneRules(regions, leniency, international_leniency)
