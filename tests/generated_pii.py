"""A PII corpus no detector was tuned on: Faker's generators across twelve locales, a
fresh seed each run (PII_SEED=<n> replays one).

Positives are values each built-in detector must report, each alone in a sentence;
look-alikes are numbers that are none of them (ISBNs, barcodes, dates, prices,
versions, identifiers with digit runs inside, card numbers that fail Luhn).
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Callable
from dataclasses import dataclass

from faker import Faker

from extproc.policy.checksums import IBAN_LENGTHS

LOCALES = (
    "en_US", "en_GB", "de_DE", "fr_FR", "es_ES", "it_IT",
    "nl_NL", "pt_BR", "ja_JP", "en_IN", "pl_PL", "sv_SE",
)  # fmt: skip
CARD_TYPES = (
    "maestro", "mastercard", "visa16", "visa13", "visa19",
    "amex", "discover", "diners", "jcb15", "jcb16",
)  # fmt: skip
# Sentences a value is written in: in the middle, in brackets, at a line's start, before
# a full stop.
TEMPLATES = (
    "Please write to {} before Friday.",
    "Contact ({}) if anything changes",
    "{} is what the form says.",
    "Details: {}.",
    "- {}\n- next item",
)
# An extension after a number stays in place: "+1-202-555-0143[x123]" is found without it.
EXTENSION = re.compile(r"(?:x|ext\.? ?)[0-9]+$")


@dataclass(frozen=True, slots=True)
class Sample:
    detector: str  # the detector that must report `value`; "" for a look-alike
    value: str
    text: str
    source: str  # locale and generator, for the report


def seed() -> int:
    """PII_SEED from the environment, or a fresh one."""
    given = os.environ.get("PII_SEED")
    return int(given) if given else random.SystemRandom().randrange(2**32)


def _card(fake: Faker, rng: random.Random, card_type: str) -> str:
    number = fake.credit_card_number(card_type)
    style = rng.choice(("bare", "space", "dash"))
    if style == "bare":
        return number
    joiner = " " if style == "space" else "-"
    if len(number) == 15 and number[:2] in ("34", "37"):
        groups = [number[:4], number[4:10], number[10:]]  # Amex: 4-6-5
    else:
        groups = [number[i : i + 4] for i in range(0, len(number), 4)]
    return joiner.join(groups)


def _positives(rng: random.Random, per_locale: int) -> list[Sample]:
    samples = []

    def add(detector: str, value: str, source: str) -> None:
        text = rng.choice(TEMPLATES).format(value)
        samples.append(Sample(detector, value, text, source))

    for locale in LOCALES:
        fake = Faker(locale)
        fake.seed_instance(rng.randrange(2**32))
        for _ in range(per_locale):
            add("phone", fake.phone_number(), f"{locale} phone_number")
            add("email", rng.choice((fake.email, fake.company_email))(), f"{locale} email")
            iban = fake.iban()
            # Faker's en_IN IBANs are GB numbers two characters short: not IBANs.
            if IBAN_LENGTHS.get(iban[:2]) == len(iban):
                add("iban", rng.choice((iban, " ".join(re.findall(".{1,4}", iban)))), locale)
        for card_type in CARD_TYPES:
            for _ in range(max(1, per_locale // 10)):
                add("payment_card", _card(fake, rng, card_type), f"{locale} {card_type}")
    fake = Faker("en_US")
    fake.seed_instance(rng.randrange(2**32))
    for _ in range(per_locale * 4):
        add("us_ssn", fake.ssn(), "en_US ssn")
        add("ip_address", rng.choice((fake.ipv4, fake.ipv6))(), "ipv4/ipv6")
    return samples


def _date(fake: Faker, rng: random.Random) -> str:
    return fake.date(rng.choice(("%Y-%m-%d", "%d.%m.%Y", "%d/%m/%Y", "%m/%d/%Y")))


def _amount(fake: Faker, rng: random.Random) -> str:
    value = f"{rng.randrange(10**6, 10**9) / 100:,.2f}"
    # As written in the US, in France, in Germany: 1,234,567.89; 1 234 567,89; 1.234.567,89.
    style = rng.choice((",.", " ,", ".,"))
    return value.replace(",", "_").replace(".", style[1]).replace("_", style[0])


def _version(fake: Faker, rng: random.Random) -> str:
    return fake.numerify(rng.choice(("#.#.##", "##.#.###", "v#.##.####")))


LOOKALIKES: dict[str, Callable[[Faker, random.Random], str]] = {
    "isbn10": lambda fake, rng: fake.isbn10(),
    "isbn13": lambda fake, rng: fake.isbn13(),
    "isbn13 bare": lambda fake, rng: fake.isbn13().replace("-", ""),
    "isbn with label": lambda fake, rng: f"ISBN {fake.isbn10()}",
    "ean8": lambda fake, rng: fake.ean8(),
    "ean13": lambda fake, rng: fake.ean13(),
    "localized ean13": lambda fake, rng: fake.localized_ean13(),
    "upc_a": lambda fake, rng: Faker("en_US").upc_a(),
    "date": _date,
    "date and time": lambda fake, rng: fake.date_time().isoformat(),
    "price": lambda fake, rng: fake.pricetag(),
    "amount": _amount,
    "version": _version,
    "uuid": lambda fake, rng: fake.uuid4(),
    "sha1": lambda fake, rng: fake.sha1(),
    "identifier": lambda fake, rng: fake.numerify(
        rng.choice(("INV-####-######", "ORD-##########"))
    ),
    "glued": lambda fake, rng: fake.bothify(rng.choice(("??##########", "##########??"))).upper(),
    "snake": lambda fake, rng: f"{fake.word()}_{fake.numerify('##########')}",
    "url": lambda fake, rng: f"https://example.com/orders/{fake.numerify('###########')}/items",
    "file": lambda fake, rng: f"IMG_{fake.date('%Y%m%d')}_{fake.numerify('######')}.jpg",
    "luhn fails": lambda fake, rng: _luhn_broken(fake.credit_card_number()),
}


def _lookalikes(rng: random.Random, per_locale: int) -> list[Sample]:
    samples = []
    for locale in LOCALES:
        fake = Faker(locale)
        fake.seed_instance(rng.randrange(2**32))
        for name, make in LOOKALIKES.items():
            for _ in range(per_locale):
                value = make(fake, rng)
                text = rng.choice(TEMPLATES).format(value)
                samples.append(Sample("", value, text, f"{locale} {name}"))
    return samples


def _luhn_broken(number: str) -> str:
    last = int(number[-1])
    return number[:-1] + str((last + 1 + int(number[0]) % 9) % 10)


def corpus(seed_value: int, per_locale: int = 20) -> tuple[list[Sample], list[Sample]]:
    """(positives, look-alikes) for one seed."""
    rng = random.Random(seed_value)
    return _positives(rng, per_locale), _lookalikes(rng, per_locale // 4 or 1)


def without_extension(value: str) -> str:
    return EXTENSION.sub("", value)
