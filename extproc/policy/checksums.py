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


def _card_network(number: str) -> bool:
    """The number starts like a real card network's (IIN ranges) and has its length."""
    length = len(number)
    two, four = int(number[:2]), int(number[:4])
    if number[0] == "4":
        return length in (13, 16, 19)  # Visa
    if 51 <= two <= 55 or 2221 <= four <= 2720:
        return length == 16  # Mastercard
    if two in (34, 37):
        return length == 15  # American Express
    if number.startswith("6011") or two == 65 or 644 <= int(number[:3]) <= 649:
        return 16 <= length <= 19  # Discover
    if 3528 <= four <= 3589:
        return 16 <= length <= 19  # JCB
    if 300 <= int(number[:3]) <= 305 or two in (36, 38, 39):
        return 14 <= length <= 19  # Diners Club
    if two == 62:
        return 16 <= length <= 19  # UnionPay
    return False


def payment_card_valid(candidate: str) -> bool:
    number = digits_of(candidate)
    return 13 <= len(number) <= 19 and _card_network(number) and luhn_valid(number)


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


def phone_valid(candidate: str) -> bool:
    number = digits_of(candidate)
    # E.164 allows at most 15 digits; fewer than 8 are extensions, years, counts.
    if not 8 <= len(number) <= 15:
        return False
    return len(set(number)) > 2  # "0000000000" is filler, not a number


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
