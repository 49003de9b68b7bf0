"""Checksums and measures that tell a real identifier from a look-alike: Luhn for payment
cards, ISO 13616 mod-97 for IBANs, Shannon entropy for random-looking strings."""

from __future__ import annotations

import math
from collections import Counter
from typing import Final

# Issuer prefix ranges of the major card networks (ISO/IEC 7812 IINs), as (digits, low, high):
# a Luhn-valid number outside them is far more likely an id or a timestamp than a card.
_CARD_RANGES: Final = (
    (1, 4, 4),  # Visa
    (2, 51, 55),  # Mastercard
    (4, 2221, 2720),  # Mastercard 2-series
    (2, 34, 34),  # American Express
    (2, 37, 37),
    (4, 6011, 6011),  # Discover
    (2, 65, 65),
    (3, 644, 649),
    (4, 3528, 3589),  # JCB
    (3, 300, 305),  # Diners Club
    (2, 36, 36),
    (2, 38, 39),
    (2, 62, 62),  # UnionPay
    (2, 50, 50),  # Maestro
    (2, 56, 58),
    (4, 6304, 6304),
    (4, 6759, 6759),
)

# ISO 13616 lengths per country (SWIFT IBAN registry).
IBAN_LENGTHS: Final = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28,
    "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
    "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26,
    "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20,
    "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30,
    "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22,
    "SA": 24, "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}  # fmt: skip


def luhn_ok(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if index % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def is_card_number(digits: str) -> bool:
    """13 to 19 digits, a known issuer prefix, and a valid Luhn check digit."""
    if not 13 <= len(digits) <= 19:
        return False
    known = any(low <= int(digits[:size]) <= high for size, low, high in _CARD_RANGES)
    return known and luhn_ok(digits)


def is_iban(compact: str) -> bool:
    """An IBAN without spaces: the country's length and the mod-97 check (remainder 1)."""
    expected = IBAN_LENGTHS.get(compact[:2])
    if expected is None or len(compact) != expected or not compact[2:4].isdigit():
        return False
    rearranged = compact[4:] + compact[:4]
    number = "".join(str(int(char, 36)) for char in rearranged)
    return int(number) % 97 == 1


def shannon_entropy(text: str) -> float:
    """Bits per character over the characters the text uses."""
    length = len(text)
    return -sum(count / length * math.log2(count / length) for count in Counter(text).values())
