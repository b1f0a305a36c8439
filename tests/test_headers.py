from __future__ import annotations

import unicodedata
from email.headerregistry import Address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from securemail.errors import HeaderInjectionError, InputError
from securemail.headers import (
    check_address,
    check_header_name,
    check_header_value,
    sanitize_filename,
    verify_header_names,
)

SECRET = "s3cr3t-value"


class SneakyAddress(Address):
    """An Address whose display name bypasses the constructor's own CR/LF check."""

    @property
    def display_name(self) -> str:
        return "Eve\r\nBcc: victim@example.com"


# --- header names and values -----------------------------------------------------------------


@pytest.mark.parametrize("name", ["X-Ticket", "Subject", "x", "X_Weird!#~"])
def test_check_header_name_accepts_field_names(name: str) -> None:
    assert check_header_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "X Ticket", "X:Ticket", "X-A\r\nBcc", "X-A\n", "Sübject", "X\x7f", "X\tA"]
)
def test_check_header_name_refuses_non_field_names(name: str) -> None:
    with pytest.raises(HeaderInjectionError) as caught:
        check_header_name(name)
    assert "\r" not in caught.value.field
    assert "\n" not in caught.value.field


@pytest.mark.parametrize("value", ["1234", "", "Quarterly report — Q3", "tab\there"])
def test_check_header_value_accepts_single_line_values(value: str) -> None:
    assert check_header_value("X-Ticket", value) == value


@pytest.mark.parametrize(
    "bad",
    ["\r", "\n", "\r\n", "\0", "\x0b", "\x0c", "\x85", "\u2028", "\u2029"],
    ids=repr,
)
def test_check_header_value_refuses_line_breaks_and_nul(bad: str) -> None:
    with pytest.raises(HeaderInjectionError) as caught:
        check_header_value("X-Ticket", f"{SECRET}{bad}Bcc: victim@example.com")
    assert caught.value.field == "X-Ticket"
    assert SECRET not in str(caught.value)
    assert "victim" not in str(caught.value)


@pytest.mark.parametrize(
    "encoded",
    [
        "=?utf-8?q?x=0D=0ABcc:_victim@example.com?=",
        "=?utf-8?b?eA0KQmNjOiB2aWN0aW1AZXhhbXBsZS5jb20=?=",
        "hello =?utf-8?q?=00?=",
    ],
)
def test_check_header_value_refuses_encoded_line_breaks(encoded: str) -> None:
    # The standard library decodes encoded words in values it is given (CVE-2024-6923).
    with pytest.raises(HeaderInjectionError, match="encodes"):
        check_header_value("Subject", encoded)


# --- addresses -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "display_name", "addr_spec"),
    [
        ("bob@example.com", "", "bob@example.com"),
        ("<bob@example.com>", "", "bob@example.com"),
        ("Alice Example <alice@example.com>", "Alice Example", "alice@example.com"),
        ('"Doe, John" <john@example.com>', "Doe, John", "john@example.com"),
        ("Ĉarli <carl@example.org>", "Ĉarli", "carl@example.org"),
        ("carl@bücher.de", "", "carl@xn--bcher-kva.de"),
        ("alice@example.com (a comment)", "", "alice@example.com"),
        ("a@[192.0.2.1]", "", "a@[192.0.2.1]"),
        (Address("Alice", "alice", "example.com"), "Alice", "alice@example.com"),
        (Address("Zoë", addr_spec="zoe@bücher.de"), "Zoë", "zoe@xn--bcher-kva.de"),
    ],
)
def test_check_address_parses_one_mailbox(
    given: str | Address, display_name: str, addr_spec: str
) -> None:
    address = check_address("To", given)
    assert (address.display_name, address.addr_spec) == (display_name, addr_spec)


@pytest.mark.parametrize(
    "given",
    [
        "",
        "bob",
        "a@",
        "@example.com",
        "<>",
        "Alice <>",
        "a@@example.com",
        "a b@example.com",
        "Alice <alice@example.com> trailing",
        "Alice <alice@example.com",
        "Alice\x01 <alice@example.com>",
        "a@exa\u202emple.com",
    ],
)
def test_check_address_refuses_invalid_addresses(given: str) -> None:
    with pytest.raises(InputError, match=r"^To: ") as caught:
        check_address("To", given)
    assert not isinstance(caught.value, HeaderInjectionError)


@pytest.mark.parametrize(
    ("given", "reason"),
    [
        ("a@example.com, b@example.com", "more than one address"),
        ("Team: a@example.com;", "group syntax"),
        ("undisclosed-recipients:;", "group syntax"),
        ("jörg@example.com", "SMTPUTF8"),
        (Address("", "jörg", "example.com"), "SMTPUTF8"),
    ],
)
def test_check_address_explains_refusals(given: str | Address, reason: str) -> None:
    with pytest.raises(InputError, match=reason):
        check_address("Cc", given)


@pytest.mark.parametrize(
    "given",
    [
        "bob@example.com\r\nBcc: victim@example.com",
        "Bob\n <bob@example.com>",
        "bob@example.com\0",
        "=?utf-8?q?Eve=0D=0ABcc:_victim@example.com?= <eve@example.com>",
        '"=?utf-8?q?Eve=0D=0A?=" <eve@example.com>',
        Address("Eve\0", "eve", "example.com"),
        SneakyAddress("", "eve", "example.com"),
    ],
)
def test_check_address_refuses_injection(given: str | Address) -> None:
    with pytest.raises(HeaderInjectionError) as caught:
        check_address("Reply-To", given)
    assert caught.value.field == "Reply-To"
    assert "victim" not in str(caught.value)


# --- verify_header_names ---------------------------------------------------------------------

GOOD = (
    b"From: alice@example.com\r\n"
    b"To: bob@example.com,\r\n"
    b" carl@example.org\r\n"
    b"Subject: a folded\r\n"
    b"\tsubject line\r\n"
    b"X-Ticket: 1\r\n"
    b"X-Ticket: 2\r\n"
    b"\r\n"
    b"Body: not a header\r\n"
)
GOOD_NAMES = ["From", "To", "Subject", "X-Ticket", "X-Ticket"]


def test_verify_header_names_accepts_the_intended_names() -> None:
    verify_header_names(GOOD, GOOD_NAMES)
    verify_header_names(GOOD.replace(b"\r\n", b"\n"), [n.upper() for n in GOOD_NAMES])
    verify_header_names(b"From: a@b\r\nTo: c@d\r\n", ["from", "to"])  # no body at all


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (GOOD.replace(b"X-Ticket: 1\r\n", b"X-Ticket: 1\r\nBcc: victim@example.com\r\n"), "bcc"),
        (GOOD.replace(b"Subject: a folded", b"Subject: a\rBcc: victim"), "bcc"),
        (GOOD.replace(b"X-Ticket: 2\r\n", b"X-Ticket: 2\r\nX-Ticket: 3\r\n"), "x-ticket"),
    ],
)
def test_verify_header_names_detects_an_extra_header(data: bytes, field: str) -> None:
    with pytest.raises(HeaderInjectionError, match="not intended") as caught:
        verify_header_names(data, GOOD_NAMES)
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (GOOD.replace(b"From: alice@example.com\r\n", b""), "from"),
        (GOOD.replace(b"X-Ticket: 2\r\n", b""), "x-ticket"),
        (GOOD.replace(b"Subject: a folded\r\n", b"\r\nSubject: a folded\r\n"), "subject"),
    ],
)
def test_verify_header_names_detects_a_missing_header(data: bytes, field: str) -> None:
    with pytest.raises(HeaderInjectionError, match="missing") as caught:
        verify_header_names(data, GOOD_NAMES)
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (b"From: a@b\r\nno colon on this line\r\n\r\n", "line 2"),
        (b"From: a@b\r\nBad Name: x\r\n\r\n", "line 2"),
        (b" continuation first\r\nFrom: a@b\r\n\r\n", "line 1"),
    ],
)
def test_verify_header_names_refuses_lines_that_are_not_fields(data: bytes, field: str) -> None:
    with pytest.raises(HeaderInjectionError) as caught:
        verify_header_names(data, ["From"])
    assert caught.value.field == field


# --- sanitize_filename -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("report.pdf", "report.pdf"),
        ("données été.csv", "données été.csv"),
        ("../../etc/passwd", "passwd"),
        ("/etc/passwd", "passwd"),
        ("C:\\evil\\x.exe", "x.exe"),
        ("C:evil.exe", "C_evil.exe"),
        ("dir/", "attachment"),
        ("..", "attachment"),
        (".", "attachment"),
        ("...", "attachment"),
        ("", "attachment"),
        ("   ", "attachment"),
        (None, "attachment"),
        ("\u202e\u200b", "attachment"),
        ("invoice\u202efdp.exe", "invoicefdp.exe"),
        ("a\u2066b\u2069c\u200ed\u200fe\u061cf\u200bg\ufeffh.txt", "abcdefgh.txt"),
        ("tab\there\r\nnul\0.txt", "tabherenul.txt"),
        ("line\u2028break.txt", "linebreak.txt"),
        ("lone\udcffsurrogate.txt", "lonesurrogate.txt"),
        ("e\u0301te\u0301.txt", "été.txt"),
        ("e\u200b\u0301.txt", "é.txt"),
        (".bashrc", "bashrc"),
        ("  report.pdf. . ", "report.pdf"),
        ('a:b*c?d"e<f>g|h.txt', "a_b_c_d_e_f_g_h.txt"),
        ("CON", "_CON"),
        ("con.txt", "_con.txt"),
        ("CON.txt", "_CON.txt"),
        ("Nul.tar.gz", "_Nul.tar.gz"),
        ("aux .txt", "_aux .txt"),
        ("COM1", "_COM1"),
        ("lpt9.log", "_lpt9.log"),
        ("COM\u00b9.txt", "_COM\u00b9.txt"),
        ("CONOUT$", "_CONOUT$"),
        ("CONSOLE.txt", "CONSOLE.txt"),
        ("COM10.txt", "COM10.txt"),
        ("x/CON.txt", "_CON.txt"),
    ],
)
def test_sanitize_filename(name: str | None, expected: str) -> None:
    assert sanitize_filename(name) == expected


def test_sanitize_filename_default() -> None:
    assert sanitize_filename("../", default="file.bin") == "file.bin"
    assert sanitize_filename(None, default="file.bin") == "file.bin"


@pytest.mark.parametrize(
    ("name", "start", "end"),
    [
        ("a" * 300 + ".pdf", "aaa", "a.pdf"),
        ("é" * 300 + ".pdf", "ééé", "é.pdf"),
        ("a" * 300, "aaa", "aaa"),
        ("a." + "b" * 300, "a.bbb", "bbb"),  # an "extension" this long is not kept apart
        ("CON." + "x" * 300, "_CON.xxx", "xxx"),
    ],
)
def test_sanitize_filename_caps_at_255_utf8_bytes(name: str, start: str, end: str) -> None:
    result = sanitize_filename(name)
    assert len(result.encode()) <= 255
    assert len(result.encode()) >= 250
    assert result.startswith(start)
    assert result.endswith(end)


def test_sanitize_filename_truncation_does_not_split_characters() -> None:
    result = sanitize_filename("€" * 100)  # 3 bytes each: 255 is exactly 85 of them
    assert result == "€" * 85


_TRICKY = st.sampled_from(
    [
        *'/\\.:*?"<>| \t\r\n\0\u202a\u202e\u2066\u2069\u200b\u200e\u061c\ufeff\u0301e',
        *("CON", "nul", "LPT1", "COM\u00b9", "..", "x" * 100, "é" * 60),
    ]
)


@given(st.lists(st.one_of(st.characters(), _TRICKY)).map("".join))
def test_sanitize_filename_properties(name: str) -> None:
    result = sanitize_filename(name)
    assert result not in ("", ".", "..")
    assert "/" not in result
    assert "\\" not in result
    assert not any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp") for c in result)
    assert not any(c in result for c in ':*?"<>|')
    assert len(result.encode()) <= 255
    assert result == result.strip()
    assert not result.startswith(".")
    assert unicodedata.is_normalized("NFC", result)
    assert sanitize_filename(result) == result
