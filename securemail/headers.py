"""Header and filename safety: the checks every header value and inbound filename passes.

CPython 3.11's email generator still writes a header value containing a line break as two
header lines (CVE-2024-6923), so securemail refuses CR, LF and NUL itself before a value
reaches the standard library, and re-parses each generated message to check that its header
names are exactly the intended ones. Error messages name the header, never the value, which
may be secret or chosen by an attacker.
"""

from __future__ import annotations

import email.errors
import email.policy
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from email.headerregistry import Address, AddressHeader
from email.message import Message
from typing import cast

from securemail.errors import HeaderInjectionError, InputError

__all__ = [
    "check_address",
    "check_header_name",
    "check_header_value",
    "check_message_headers",
    "sanitize_filename",
    "verify_header_names",
]

_FIELD_NAME = re.compile(r"[!-9;-~]+")  # RFC 5322 section 3.6.8: printable ASCII except ':'
# NUL, and every character str.splitlines() breaks at (the standard library refuses them all).
_FORBIDDEN = frozenset("\0\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")


def _printable(name: str) -> str:
    """A bounded, escaped rendering of a rejected header name, safe to log."""
    return ascii(name[:100])[1:-1]


def check_header_name(name: str) -> str:
    """Return ``name`` if it is a valid RFC 5322 field name."""
    if not _FIELD_NAME.fullmatch(name):
        raise HeaderInjectionError(
            _printable(name), "not a header field name (printable ASCII without ':')"
        )
    return name


def check_header_value(name: str, value: str) -> str:
    """Return ``value`` if neither it nor its RFC 2047 decoding holds a line break or NUL.

    The decoding matters because the standard library decodes encoded words in the values it
    is given: ``=?utf-8?q?=0D=0ABcc:_x?=`` would become a real ``Bcc`` line on output.
    ``name`` only labels the error.
    """
    if not _FORBIDDEN.isdisjoint(value):
        raise HeaderInjectionError(name, "contains a line break or NUL")
    if not _FORBIDDEN.isdisjoint(str(email.policy.default.header_factory("Subject", value))):
        raise HeaderInjectionError(name, "encodes a line break or NUL (RFC 2047)")
    return value


# A stored value may legitimately be folded (a line break followed by a space or tab);
# any other line break, a lone CR, or NUL would start a new header line or the body.
_UNFOLDED_BREAK = re.compile(r"\r\n(?![ \t])|\r(?!\n)|(?<!\r)\n(?![ \t])|\0")


def check_message_headers(message: Message) -> None:
    """Check the raw stored header values of ``message`` and all its parts.

    ``EmailMessage.items()`` hands out parsed values with line breaks already removed, so a
    value stored with a line break (by code that appended to the header list, or by a
    compat32 ``Message``) would slip past :func:`check_header_value` and reach the
    generator; the raw values are what it writes.
    """
    for part in message.walk():
        for name, value in part.raw_items():
            check_header_name(name)
            if _UNFOLDED_BREAK.search(str(value)):
                raise HeaderInjectionError(name, "contains a line break or NUL")


def check_address(field: str, address: str | Address) -> Address:
    """Parse one mailbox (``"Name <a@b>"``, ``"a@b"`` or an :class:`Address`) for header ``field``.

    Strings and :class:`Address` objects take the same path (an address is checked through its
    string form), so a display name cannot smuggle a line break past the check. A non-ASCII
    domain becomes IDNA (the standard library's IDNA 2003 codec); a non-ASCII local part would
    need SMTPUTF8, which securemail does not support yet.
    """
    text = check_header_value(field, str(address))
    try:
        header = email.policy.default.header_factory("To", text)
    except (email.errors.HeaderParseError, IndexError, ValueError) as exc:
        # The 3.11 parser raises IndexError on some malformed input (e.g. "a@"), and
        # ValueError if a decoded part holds a line break that the check above missed.
        raise InputError(f"{field}: {text!r} is not a valid address") from exc
    groups = cast(AddressHeader, header).groups
    if not groups:
        raise InputError(f"{field}: empty address")
    if len(groups) > 1 or len(groups[0].addresses) > 1:
        raise InputError(f"{field}: {text!r} holds more than one address; pass one per argument")
    if groups[0].display_name is not None:
        raise InputError(f"{field}: group syntax is not accepted in {text!r}")
    (parsed,) = groups[0].addresses
    if not parsed.username.isascii():
        raise InputError(
            f"{field}: {text!r} has a non-ASCII local part, which needs SMTPUTF8 "
            "(not supported yet)"
        )
    if header.defects or not (parsed.username and parsed.domain):
        raise InputError(f"{field}: {text!r} is not a valid address")
    domain = parsed.domain
    if not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise InputError(f"{field}: the domain of {text!r} is not a valid IDN") from exc
    return Address(display_name=parsed.display_name, username=parsed.username, domain=domain)


def _header_lines(data: bytes) -> list[tuple[int, bytes]]:
    """The header section's field lines with their line numbers, continuation lines skipped.

    ``bytes.splitlines`` breaks at CR, LF and CRLF alike, so a stray CR counts as a line
    break here, as it does for some mail software.
    """
    lines: list[tuple[int, bytes]] = []
    for number, line in enumerate(data.splitlines(), start=1):
        if not line:
            break
        if line[:1] in (b" ", b"\t"):
            if not lines:
                raise HeaderInjectionError(f"line {number}", "continuation before any header")
            continue
        lines.append((number, line))
    return lines


def verify_header_names(data: bytes, expected: Sequence[str]) -> None:
    """Check that the top-level header names of serialized ``data`` are exactly ``expected``.

    Compared as a case-insensitive multiset: a header that appears twice must be expected
    twice. This is the last line of defence against a value that became extra header lines.
    """
    found: Counter[str] = Counter()
    for number, line in _header_lines(data):
        name, colon, _ = line.partition(b":")
        text = name.decode("ascii", "backslashreplace")
        if not colon or not _FIELD_NAME.fullmatch(text):
            raise HeaderInjectionError(f"line {number}", "not a header field")
        found[text.lower()] += 1
    wanted = Counter(name.lower() for name in expected)
    if extra := found - wanted:
        raise HeaderInjectionError(min(extra), "in the generated message but not intended")
    if missing := wanted - found:
        raise HeaderInjectionError(min(missing), "intended but missing from the generated message")


# --- inbound filenames -----------------------------------------------------------------------

# Cc/Cf cover controls, bidi overrides and isolates, LRM/RLM/ALM and zero-width characters;
# Zl/Zp are line and paragraph separators; Cs are lone surrogates (undecodable input).
_INVISIBLE = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_SEPARATORS = re.compile(r"[/\\]")
_WINDOWS_SPECIAL = re.compile(r'[:*?"<>|]')
_EDGES = re.compile(r"^[\s.]+|[\s.]+$")
# Windows reserves these names with any extension; the superscript digits count too.
_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"}
    | {f"{port}{digit}" for port in ("COM", "LPT") for digit in "0123456789\u00b9\u00b2\u00b3"}
)
_MAX_BYTES = 255
_MAX_EXTENSION_BYTES = 32


def _truncate(name: str) -> str:
    """Cut ``name`` to :data:`_MAX_BYTES` UTF-8 bytes, keeping a short extension."""
    if len(name.encode()) <= _MAX_BYTES:
        return name
    stem, dot, extension = name.rpartition(".")
    suffix = dot + extension
    if not stem or len(suffix.encode()) > _MAX_EXTENSION_BYTES:
        stem, suffix = name, ""
    room = _MAX_BYTES - len(suffix.encode())
    return stem.encode()[:room].decode(errors="ignore") + suffix


def sanitize_filename(name: str | None, *, default: str = "attachment") -> str:
    """A filename from inbound mail made safe to show and to save.

    Removes what lets a sender write outside the target folder (path components, ``..``),
    disguise a file's type (bidi overrides such as ``invoice\\u202efdp.exe``, invisible
    characters) or hit Windows special cases (device names, reserved characters, trailing
    dots). The result is NFC, at most 255 UTF-8 bytes, and never empty, ``.`` or ``..``:
    ``default`` stands in for a name with nothing usable left.
    """
    if name is None:
        return default
    visible = "".join(c for c in name if unicodedata.category(c) not in _INVISIBLE)
    last = _SEPARATORS.split(unicodedata.normalize("NFC", visible))[-1]
    cleaned = _EDGES.sub("", _WINDOWS_SPECIAL.sub("_", last))
    if not cleaned:
        return default
    if cleaned.split(".", 1)[0].rstrip().upper() in _RESERVED:
        cleaned = "_" + cleaned
    return _EDGES.sub("", _truncate(cleaned))
