"""The checksum detectors: published test numbers, each broken by one digit, separators, numbers
embedded in text, and near misses that a pattern alone would take."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from securemail.errors import InputError
from securemail.governance import detectors
from securemail.governance.detectors import (
    iban_valid,
    ibans,
    keyword_pattern,
    luhn_valid,
    payment_card_valid,
    payment_cards,
    ssn_valid,
    us_ssns,
)


def found(detector: detectors.Detector, text: str) -> list[str]:
    return [text[start:end] for start, end in detector(text)]


# --- payment cards ---------------------------------------------------------------------------

VALID_PANS = ["4111111111111111", "5500000000000004", "378282246310005"]
BROKEN_PANS = ["4111111111111121", "5500000000000005", "378282246310006"]  # one digit changed


@pytest.mark.parametrize("pan", VALID_PANS)
def test_valid_test_pans_are_found_alone_and_in_text(pan: str) -> None:
    assert luhn_valid(pan)
    assert payment_card_valid(pan)
    assert found(payment_cards, pan) == [pan]
    assert found(payment_cards, f"Card: {pan}, exp 12/29.") == [pan]


@pytest.mark.parametrize("pan", BROKEN_PANS)
def test_one_changed_digit_fails_luhn(pan: str) -> None:
    assert not luhn_valid(pan)
    assert found(payment_cards, f"Card: {pan}") == []


@pytest.mark.parametrize(
    "text",
    [
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "5500 0000 0000 0004",
        "3782 822463 10005",  # American Express 4-6-5
        "3782-822463-10005",
    ],
)
def test_separators_as_cards_print_them(text: str) -> None:
    assert found(payment_cards, f"pay with {text} today") == [text]


@pytest.mark.parametrize(
    "text",
    [
        "4111 1111-1111 1111",  # mixed separators
        "4111  1111 1111 1111",  # a double space breaks the number
        "41 111 111 111 111 11",  # grouping no card uses
        "411111 1111 111111",
        "x4111111111111111",  # run into letters
        "4111111111111111x",
        "94111111111111111",  # 17 digits: not a Visa length, and no card inside a longer number
        "0000000000000000",  # passes Luhn, repeated digit
        "5555555555555555",  # repeated digit
        "1234567812345670",  # Luhn-valid, but no network starts with 1
        "4111111111111",  # 13 digits, Luhn-invalid
        "5500 0000 0000 004",  # a digit short
    ],
)
def test_near_misses_are_not_cards(text: str) -> None:
    assert found(payment_cards, f"ref {text} end") == []


def test_all_same_digit_is_refused_even_if_luhn_valid() -> None:
    assert luhn_valid("0000000000000")
    assert not payment_card_valid("0000000000000")


def test_network_lengths() -> None:
    assert payment_card_valid("4222222222222")  # 13-digit Visa
    assert not payment_card_valid("55000000000000004")  # Mastercard must have 16 digits
    assert not payment_card_valid("37828224631000")  # Amex must have 15 digits
    assert payment_card_valid("6011111111111117")  # Discover
    assert payment_card_valid("3530111333300000")  # JCB
    assert payment_card_valid("2223000048400011")  # Mastercard 2-series


def test_several_cards_in_one_line_and_lists() -> None:
    text = "4111111111111111,5500000000000004;378282246310005 and 4111 1111 1111 1111"
    assert found(payment_cards, text) == [*VALID_PANS, "4111 1111 1111 1111"]


def test_card_after_other_groups_of_digits() -> None:
    text = "order 12 4111 1111 1111 1111 7 done"
    assert found(payment_cards, text) == ["4111 1111 1111 1111"]


def luhn_complete(body: str) -> str:
    for check in "0123456789":
        if luhn_valid(body + check):
            return body + check
    raise AssertionError(body)


@given(st.text(alphabet="0123456789", min_size=14, max_size=14))
def test_every_generated_visa_is_found_and_a_changed_digit_is_not(middle: str) -> None:
    pan = luhn_complete("4" + middle)
    if len(set(pan)) == 1:
        return
    assert found(payment_cards, f"x {pan} y") == [pan]
    position = 1 + int(middle[0])  # some digit after the prefix
    changed = pan[:position] + str((int(pan[position]) + 1) % 10) + pan[position + 1 :]
    assert not luhn_valid(changed)
    assert found(payment_cards, f"x {changed} y") == []


# --- IBAN ------------------------------------------------------------------------------------

VALID_IBANS = ["GB82WEST12345698765432", "DE89370400440532013000", "FR1420041010050500013M02606"]
BROKEN_IBANS = [
    "GB82WEST12345698765431",
    "DE89370400440532013001",
    "FR1420041010050500013M02607",
    "GB83WEST12345698765432",  # check digits changed
]


@pytest.mark.parametrize("iban", VALID_IBANS)
def test_valid_ibans_compact_grouped_and_lower_case(iban: str) -> None:
    grouped = " ".join(iban[i : i + 4] for i in range(0, len(iban), 4))
    assert iban_valid(iban)
    assert found(ibans, f"IBAN: {iban}.") == [iban]
    assert found(ibans, f"IBAN: {grouped}, BIC follows") == [grouped]
    assert found(ibans, f"iban {iban.lower()}") == [iban.lower()]


@pytest.mark.parametrize("iban", BROKEN_IBANS)
def test_one_changed_character_fails_mod_97(iban: str) -> None:
    assert not iban_valid(iban)
    assert found(ibans, f"IBAN: {iban}") == []


@pytest.mark.parametrize(
    "text",
    [
        "DE8937040044053201300",  # a character short for DE
        "DE893704004405320130000",  # a character long
        "XX89370400440532013000",  # unknown country
        "DE89 3704 0044 0532 013 000",  # wrong grouping
        "DE89  3704 0044 0532 0130 00",  # double space
        "ADE89370400440532013000",  # run into a letter
    ],
)
def test_iban_near_misses(text: str) -> None:
    assert found(ibans, f"pay to {text} now") == []


def mod97(iban: str) -> int:
    return int("".join(str(int(char, 36)) for char in iban[4:] + iban[:4])) % 97


def test_check_digits_00_01_99_are_refused() -> None:
    # Check digits c and c + 97 leave the same remainder, so 99 passes the bare mod-97 test
    # wherever 02 is right (and 00, 01 wherever 97, 98 are).
    for account in range(10**9, 10**9 + 500):
        body = f"37040044{account:010d}"
        check = 98 - mod97(f"DE00{body}")
        if check in (2, 97, 98):
            wrong = {2: "99", 97: "00", 98: "01"}[check]
            assert iban_valid(f"DE{check:02d}{body}")
            assert mod97(f"DE{wrong}{body}") == 1
            assert not iban_valid(f"DE{wrong}{body}")
            return
    raise AssertionError("no account number with check digits 02, 97 or 98 in range")


def test_grouped_iban_followed_by_a_word_of_four_letters() -> None:
    text = "BE68 5390 0754 7034 This is the account"
    assert found(ibans, text) == ["BE68 5390 0754 7034"]


def test_iban_length_table_covers_sepa() -> None:
    sepa = "AT BE BG CH CY CZ DE DK EE ES FI FR GB GI GR HR HU IE IS IT LI LT LU LV MC MT NL NO PL "
    sepa += "PT RO SE SI SK SM VA AD"
    assert set(sepa.split()) <= set(detectors.IBAN_LENGTHS)


# --- US SSN ----------------------------------------------------------------------------------


def test_hyphenated_ssn_is_found_without_context() -> None:
    assert found(us_ssns, "employee 536-22-1234 joined") == ["536-22-1234"]


@pytest.mark.parametrize("text", ["536221234", "536 22 1234"])
def test_unbroken_ssn_needs_a_context_word(text: str) -> None:
    assert found(us_ssns, f"order number {text}") == []
    assert found(us_ssns, f"SSN: {text}") == [text]
    assert found(us_ssns, f"her social security number is {text}") == [text]


@pytest.mark.parametrize(
    "ssn",
    ["000-12-3456", "666-12-3456", "900-12-3456", "999-12-3456", "536-00-1234", "536-22-0000"],
)
def test_never_issued_ssns_are_refused(ssn: str) -> None:
    assert not ssn_valid(*ssn.split("-"))
    assert found(us_ssns, f"SSN {ssn}") == []


@pytest.mark.parametrize("ssn", ["078-05-1120", "219-09-9999", "123-45-6789"])
def test_published_example_ssns_are_refused(ssn: str) -> None:
    assert found(us_ssns, f"SSN {ssn}") == []


@pytest.mark.parametrize(
    "text", ["1-536-22-1234", "536-22-12345", "a536-22-1234", "536-22-1234-7", "2024-05-1234"]
)
def test_ssn_near_misses(text: str) -> None:
    assert found(us_ssns, f"SSN {text}") == []


def test_context_must_be_near() -> None:
    far = "SSN" + " filler" * 20 + " 536221234"
    assert found(us_ssns, far) == []


# --- keywords and the registry --------------------------------------------------------------


def test_keywords_are_whole_words_in_any_case_across_whitespace() -> None:
    pattern = keyword_pattern(["Project Falcon", "merger"])
    text = "PROJECT\n falcon; the Merger, mergers, premerger, project falconry"
    assert [m.group() for m in pattern.finditer(text)] == ["PROJECT\n falcon", "Merger"]


def test_no_keywords_match_nothing() -> None:
    assert keyword_pattern([" "]).search("anything") is None


def test_registry() -> None:
    assert detectors.detector_names() == ("iban", "payment_card", "us_ssn")
    assert detectors.get_detector("iban") is ibans
    with pytest.raises(KeyError):
        detectors.get_detector("visa")
    with pytest.raises(InputError, match="detector name"):
        detectors.register_detector("Bad Name", ibans)


def test_register_a_custom_detector() -> None:
    def order_numbers(text: str):  # type: ignore[no-untyped-def]
        return (m.span() for m in re.finditer(r"ORD-\d{6}", text))

    detectors.register_detector("test_order", order_numbers)
    try:
        assert found(detectors.get_detector("test_order"), "ORD-123456 ORD-12") == ["ORD-123456"]
    finally:
        detectors._DETECTORS.pop("test_order")
