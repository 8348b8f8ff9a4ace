"""Validity checks that turn pattern candidates into findings (no checksum, no report)."""

from __future__ import annotations

import ipaddress

# IBAN length by country (ISO 13616 registry); a candidate of another length is not an IBAN.
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28,
    "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
    "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26,
    "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20,
    "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18,
    "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24,
    "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28, "TL": 23, "TN": 24,
    "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}  # fmt: skip


def digits_of(text: str) -> str:
    return "".join(c for c in text if c.isdigit())


def luhn_valid(number: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(number)):
        digit = ord(char) - 48
        if position % 2:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


# Card networks by issuer identification number (ISO/IEC 7812): leading-digit ranges and
# the lengths each network issues. Maestro's 12-19 digits over 50 and 56-69 are the widest;
# 0604 (Maestro) and 1800/2131 (JCB's 15-digit cards) are older ranges still listed.
_NETWORKS: tuple[tuple[tuple[tuple[str, str], ...], frozenset[int]], ...] = (
    ((("4", "4"),), frozenset((13, 16, 19))),  # Visa
    ((("51", "55"), ("2221", "2720")), frozenset((16,))),  # Mastercard
    ((("34", "34"), ("37", "37")), frozenset((15,))),  # American Express
    ((("6011", "6011"), ("644", "649"), ("65", "65")), frozenset(range(16, 20))),  # Discover
    # JCB 3528-3589, RuPay 353 and 356, LankaPay 357111: 35 as a whole.
    ((("35", "35"),), frozenset(range(16, 20))),
    ((("1800", "1800"), ("2131", "2131")), frozenset((15,))),  # JCB, 15 digits
    ((("300", "305"), ("3095", "3095"), ("36", "36"), ("38", "39")), frozenset(range(14, 20))),
    ((("62", "62"), ("81", "81")), frozenset(range(16, 20))),  # UnionPay
    ((("2200", "2204"),), frozenset(range(16, 20))),  # Mir
    ((("50", "50"), ("56", "69"), ("0604", "0604")), frozenset(range(12, 20))),  # Maestro
)


def _card_network(number: str) -> bool:
    """The number starts like a card network's (IIN ranges) and has one of its lengths."""
    length = len(number)
    for ranges, lengths in _NETWORKS:
        if length not in lengths:
            continue
        for low, high in ranges:
            if low <= number[: len(low)] <= high:
                return True
    return False


def payment_card_valid(candidate: str) -> bool:
    number = digits_of(candidate)
    return (
        12 <= len(number) <= 19
        and _card_network(number)
        and luhn_valid(number)
        and not product_code(candidate)
    )


def gs1_valid(number: str) -> bool:
    """The GS1 check digit of an EAN-8, UPC-A, EAN-13 or GTIN-14: weights 3 and 1 from
    the right."""
    total = 0
    for position, char in enumerate(reversed(number[:-1])):
        total += (ord(char) - 48) * (3 if position % 2 == 0 else 1)
    return (10 - total % 10) % 10 == ord(number[-1]) - 48


def isbn10_valid(number: str) -> bool:
    total = 0
    for position, char in enumerate(number):
        value = 10 if char in "xX" and position == 9 else ord(char) - 48
        total += (10 - position) * value
    return total % 11 == 0


def product_code(candidate: str) -> bool:
    """An ISBN or a barcode, recognised by its own check digit: a bare EAN-8, UPC-A or
    EAN-13, or an ISBN-10/13 in groups ending with the check digit ("978-0-306-40615-7",
    "0-306-40615-2")."""
    if candidate.isdigit():
        return len(candidate) in (8, 12, 13) and gs1_valid(candidate)
    groups = [group for group in candidate.replace(" ", "-").split("-") if group]
    number = "".join(groups)
    if len(groups) < 3 or len(groups[-1]) != 1 or not number[:-1].isdigit():
        return False
    if len(number) == 13 and number[:3] in ("978", "979"):
        return number.isdigit() and gs1_valid(number)
    return len(number) == 10 and isbn10_valid(number)


def iban_valid(candidate: str) -> bool:
    compact = candidate.replace(" ", "").upper()
    if IBAN_LENGTHS.get(compact[:2]) != len(compact):
        return False
    rearranged = compact[4:] + compact[:4]
    numeric = "".join(str(int(c, 36)) for c in rearranged)
    return int(numeric) % 97 == 1


def us_ssn_valid(candidate: str) -> bool:
    number = digits_of(candidate)
    if len(number) != 9:
        return False
    area, group, serial = number[:3], number[3:5], number[5:]
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def email_valid(candidate: str) -> bool:
    """RFC 5321 limits: local part up to 64, domain labels up to 63, a 2-24 letter TLD."""
    local, _, domain = candidate.rpartition("@")
    labels = domain.split(".")
    return (
        0 < len(local) <= 64
        and len(candidate) <= 254
        and all(0 < len(label) <= 63 for label in labels)
        and 2 <= len(labels[-1]) <= 24
    )


def ip_valid(candidate: str) -> bool:
    try:
        address = ipaddress.ip_address(candidate)
    except ValueError:
        return False
    # Version strings such as "1.2.3.4" are valid IPv4; a real-looking address needs
    # no leading zeros (which ipaddress already rejects) and is not the unspecified one.
    return not address.is_unspecified
