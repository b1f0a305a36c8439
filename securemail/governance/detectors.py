"""Detectors for sensitive numbers in text, each confirmed by the number's own checksum.

A pattern alone flags every order number and phone list; a checksum (Luhn, ISO 7064 mod 97)
plus the issuer's structure (card network prefixes, IBAN country lengths, SSA's never-issued
ranges) keeps false positives rare enough that a rule may block on a match.

Each detector takes text and yields the ``(start, end)`` spans of what it found, never the
text itself: callers count matches or point at them, and nothing here copies sensitive
content. Detectors are looked up by name from the registry (:func:`register_detector`), which
is how the rules in :mod:`securemail.governance.rules` name them (``detectors = ["iban"]``).

What counts as a match:

``payment_card``
    13 to 19 digits, either unbroken or grouped with one kind of separator (all spaces or all
    hyphens) as cards print them: groups of four with a shorter last group (``4111 1111 1111
    1111``), or 4-6-5 / 4-6-4 (American Express, Diners Club). The number must pass the Luhn
    check, start with the issuer prefix of a major network (Visa, Mastercard, American
    Express, Discover, JCB, Diners Club, UnionPay, Maestro, Mir) with a length that network
    issues, and not be one digit repeated. Numbers run into letters or other digits are not
    cards.
``iban``
    ISO 13616: two letters of a country in the length table, two check digits (not 00, 01
    or 99), and exactly that country's length in letters and digits, unbroken or in groups
    of four separated by single spaces (``GB82 WEST 1234 5698 7654 32``); the whole must
    satisfy mod 97 = 1. Letters may be upper or lower case.
``us_ssn``
    ``AAA-GG-SSSS`` with hyphens anywhere. Unbroken (``AAAGGSSSS``) or space-separated
    numbers count only after a context word (SSN, social security, soc. sec.) within the 60
    characters before them, because nine digits alone are too often something else. Never
    issued numbers are rejected: area 000, 666 or 900-999, group 00, serial 0000, and the
    publicly used examples 078-05-1120, 219-09-9999 and 123-45-6789.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator

from ..errors import InputError

__all__ = [
    "IBAN_LENGTHS",
    "Detector",
    "detector_names",
    "get_detector",
    "iban_valid",
    "ibans",
    "keyword_pattern",
    "luhn_valid",
    "payment_card_valid",
    "payment_cards",
    "register_detector",
    "ssn_valid",
    "us_ssns",
]

Span = tuple[int, int]
Detector = Callable[[str], Iterator[Span]]
"""Takes text, yields the ``(start, end)`` span of each match, in order, not overlapping."""


# --- payment cards ---------------------------------------------------------------------------


def luhn_valid(digits: str) -> bool:
    """The Luhn (mod 10) check over a string of ASCII digits."""
    if not digits.isascii() or not digits.isdigit():
        return False
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


# (first prefix, last prefix, lengths): the prefixes have the same number of digits.
_NETWORKS: tuple[tuple[str, str, frozenset[int]], ...] = (
    ("4", "4", frozenset({13, 16, 19})),  # Visa
    ("51", "55", frozenset({16})),  # Mastercard
    ("2221", "2720", frozenset({16})),  # Mastercard 2-series
    ("34", "34", frozenset({15})),  # American Express
    ("37", "37", frozenset({15})),
    ("6011", "6011", frozenset(range(16, 20))),  # Discover
    ("644", "649", frozenset(range(16, 20))),
    ("65", "65", frozenset(range(16, 20))),
    ("3528", "3589", frozenset(range(16, 20))),  # JCB
    ("300", "305", frozenset(range(14, 20))),  # Diners Club
    ("36", "36", frozenset(range(14, 20))),
    ("38", "39", frozenset(range(16, 20))),
    ("62", "62", frozenset(range(16, 20))),  # UnionPay (and Discover's 622126-622925)
    ("2200", "2204", frozenset(range(16, 20))),  # Mir
    *(  # Maestro
        (prefix, prefix, frozenset(range(13, 20)))
        for prefix in ("5018", "5020", "5038", "5893", "6304", "6759", "6761", "6762", "6763")
    ),
)


def payment_card_valid(digits: str) -> bool:
    """Whether ``digits`` (no separators) could be a card number: length, network prefix,
    Luhn check, and not one digit repeated."""
    if not 13 <= len(digits) <= 19 or not luhn_valid(digits) or len(set(digits)) == 1:
        return False
    return any(
        low <= digits[: len(low)] <= high and len(digits) in lengths
        for low, high, lengths in _NETWORKS
    )


_DIGIT_RUN = re.compile(r"(?<!\w)[0-9]+(?:[ -][0-9]+)*(?!\w)")
_GROUP = re.compile(r"[0-9]+|[ -]")


def _grouping_allowed(sizes: list[int]) -> bool:
    if len(sizes) == 1:
        return True
    if sizes in ([4, 6, 5], [4, 6, 4]):
        return True
    return all(size == 4 for size in sizes[:-1]) and 1 <= sizes[-1] <= 4


def payment_cards(text: str) -> Iterator[Span]:
    """Spans of the payment card numbers in ``text`` (see the module docstring)."""
    for run in _DIGIT_RUN.finditer(text):
        tokens = [(m.group(), m.start()) for m in _GROUP.finditer(run.group())]
        groups = tokens[::2]  # digits, separator, digits, ...
        separators = [token for token, _ in tokens[1::2]]
        first = 0
        while first < len(groups):
            found = None
            for last in range(len(groups) - 1, first - 1, -1):
                if len(set(separators[first:last])) > 1:
                    continue
                window = [digits for digits, _ in groups[first : last + 1]]
                if _grouping_allowed([len(d) for d in window]) and payment_card_valid(
                    "".join(window)
                ):
                    found = last
                    break
            if found is None:
                first += 1
                continue
            end_digits, end_offset = groups[found]
            yield (
                run.start() + groups[first][1],
                run.start() + end_offset + len(end_digits),
            )
            first = found + 1


# --- IBAN ------------------------------------------------------------------------------------

IBAN_LENGTHS: dict[str, int] = {
    # SEPA
    "AD": 24, "AT": 20, "BE": 16, "BG": 22, "CH": 21, "CY": 28, "CZ": 24, "DE": 22, "DK": 18,
    "EE": 20, "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GI": 23, "GL": 18, "GR": 27,
    "HR": 21, "HU": 28, "IE": 22, "IS": 26, "IT": 27, "LI": 21, "LT": 20, "LU": 20, "LV": 21,
    "MC": 27, "MT": 31, "NL": 18, "NO": 15, "PL": 28, "PT": 25, "RO": 24, "SE": 24, "SI": 19,
    "SK": 24, "SM": 27, "VA": 22,
    # outside SEPA
    "AE": 23, "AL": 28, "AZ": 28, "BA": 20, "BH": 22, "BR": 29, "BY": 28, "CR": 22, "DO": 28,
    "EG": 29, "GE": 22, "GT": 28, "IL": 23, "IQ": 23, "JO": 30, "KW": 30, "KZ": 20, "LB": 28,
    "LC": 32, "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MU": 30, "PK": 24, "PS": 29, "QA": 29,
    "RS": 22, "SA": 24, "SC": 31, "ST": 25, "SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29,
    "VG": 24, "XK": 20,
}  # fmt: skip
"""Length of the IBAN of each country, from the SWIFT IBAN registry."""


def iban_valid(iban: str) -> bool:
    """ISO 13616 check of an IBAN without spaces: known country, its length, check digits
    02-98, letters and digits only, and mod 97 = 1."""
    iban = iban.upper()
    if not iban.isascii() or not iban.isalnum() or len(iban) < 5:
        return False
    if IBAN_LENGTHS.get(iban[:2]) != len(iban) or not iban[2:4].isdigit():
        return False
    if iban[2:4] in ("00", "01", "99"):
        return False
    rearranged = iban[4:] + iban[:4]
    number = "".join(str(int(char, 36)) for char in rearranged)
    return int(number) % 97 == 1


_IBAN_START = re.compile(r"(?<![A-Za-z0-9])[A-Za-z]{2}[0-9]{2}")


def _alnum(char: str) -> bool:
    return char.isascii() and char.isalnum()


def _iban_end(text: str, start: int, length: int) -> int | None:
    """End of an IBAN of ``length`` characters starting at ``start``, unbroken or in groups of
    four, or ``None`` when the characters there do not have that shape."""
    pos = start + 4
    remaining = length - 4
    grouped = text.startswith(" ", pos)
    while remaining:
        if grouped:
            if not text.startswith(" ", pos):
                return None
            pos += 1
        take = min(4, remaining) if grouped else remaining
        chunk = text[pos : pos + take]
        if len(chunk) != take or not all(_alnum(char) for char in chunk):
            return None
        pos += take
        remaining -= take
    if pos < len(text) and _alnum(text[pos]):
        return None
    return pos


def ibans(text: str) -> Iterator[Span]:
    """Spans of the IBANs in ``text`` (see the module docstring)."""
    pos = 0
    while match := _IBAN_START.search(text, pos):
        length = IBAN_LENGTHS.get(match.group()[:2].upper())
        end = None if length is None else _iban_end(text, match.start(), length)
        if end is not None and iban_valid(text[match.start() : end].replace(" ", "")):
            yield match.start(), end
            pos = end
        else:
            pos = match.start() + 1


# --- US social security numbers -------------------------------------------------------------

_SSN_EXAMPLES = frozenset({"078051120", "219099999", "123456789"})
_SSN_HYPHENATED = re.compile(r"(?<![\w-])([0-9]{3})-([0-9]{2})-([0-9]{4})(?![\w-])")
_SSN_PLAIN = re.compile(r"(?<![\w-])([0-9]{3}) ?([0-9]{2}) ?([0-9]{4})(?![\w-])")
_SSN_CONTEXT = re.compile(r"(?<![a-z])(?:ssns?|ss#|social\s+security|soc\.?\s*sec)(?![a-z])", re.I)
_SSN_CONTEXT_WINDOW = 60


def ssn_valid(area: str, group: str, serial: str) -> bool:
    """Whether AAA-GG-SSSS could have been issued by the SSA."""
    if (len(area), len(group), len(serial)) != (3, 2, 4):
        return False
    if not (area + group + serial).isdigit() or not (area + group + serial).isascii():
        return False
    if area in ("000", "666") or area >= "900" or group == "00" or serial == "0000":
        return False
    return area + group + serial not in _SSN_EXAMPLES


def us_ssns(text: str) -> Iterator[Span]:
    """Spans of the US social security numbers in ``text`` (see the module docstring)."""
    found: list[Span] = [m.span() for m in _SSN_HYPHENATED.finditer(text) if ssn_valid(*m.groups())]
    for match in _SSN_PLAIN.finditer(text):
        window = text[max(0, match.start() - _SSN_CONTEXT_WINDOW) : match.start()]
        if ssn_valid(*match.groups()) and _SSN_CONTEXT.search(window):
            found.append(match.span())
    yield from sorted(found)


# --- keywords --------------------------------------------------------------------------------


def keyword_pattern(keywords: Iterable[str]) -> re.Pattern[str]:
    """One pattern matching any of ``keywords`` as whole words, case-insensitively; the words
    of a keyword may be separated by any whitespace (``"project  falcon"`` across a line
    break matches ``"project falcon"``). Longer keywords are preferred where two overlap."""
    alternatives = sorted(
        {r"\s+".join(map(re.escape, keyword.split())) for keyword in keywords if keyword.strip()},
        key=lambda alternative: (-len(alternative), alternative),
    )
    if not alternatives:
        return re.compile(r"(?!)")
    return re.compile(rf"(?<!\w)(?:{'|'.join(alternatives)})(?!\w)", re.IGNORECASE)


# --- the registry ----------------------------------------------------------------------------

_DETECTORS: dict[str, Detector] = {
    "payment_card": payment_cards,
    "iban": ibans,
    "us_ssn": us_ssns,
}
_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")


def register_detector(name: str, detector: Detector) -> None:
    """Make ``detector`` available to rules as ``name`` (lower case letters, digits and
    underscores), replacing any detector registered under that name. Register before loading
    the rules that name it: rule files are checked against the registry when they are loaded.
    A detector must yield spans, never raise on any text, and take time linear in the text."""
    if not _NAME.fullmatch(name):
        raise InputError(f"detector name {name!r}: use lower case letters, digits and _")
    _DETECTORS[name] = detector


def get_detector(name: str) -> Detector:
    """The detector registered as ``name`` (``KeyError`` if none is)."""
    return _DETECTORS[name]


def detector_names() -> tuple[str, ...]:
    """The registered detector names, sorted."""
    return tuple(sorted(_DETECTORS))
