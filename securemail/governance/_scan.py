"""What policy rules look at in a message: recipients, header fields, attachments and text.

Rules are evaluated on outgoing mail that may have been built anywhere, including by hostile
input (a forwarded message, a file a user attached), so nothing here may raise on odd
content: broken MIME, unknown or lying charsets and undecodable bytes are read as well as
they can be and otherwise skipped. The standard :mod:`email` package raises assorted
exception types on hostile input (parsing of header values happens lazily, on access), so
each part is read inside one guard (:func:`_guarded`) rather than trusting any accessor.

Text is read bounded: at most ``max_part_bytes`` decoded bytes of each part (decoding only a
prefix of the transfer-encoded payload, so a huge attachment is never decoded whole) and at
most ``max_parts`` leaf parts. Attachment sizes are computed from the encoded length, not by
decoding.
"""

from __future__ import annotations

import binascii
import dataclasses
import email.parser
import email.policy
import email.utils
import quopri
import re
from collections.abc import Callable, Iterable
from email.header import decode_header, make_header
from email.message import Message
from typing import Any, TypeVar

from ..compose import _html_to_text

__all__ = ["Attachment", "Text", "attachments", "header_values", "parse", "recipients", "text"]

_T = TypeVar("_T")


def _guarded(read: Callable[[], _T], fallback: _T) -> _T:
    try:
        return read()
    except Exception:  # the email package's accessors raise many types on hostile input
        return fallback


def parse(message: Message | bytes) -> Message:
    """``message`` itself, or raw bytes parsed leniently (defects are recorded, not raised)."""
    if isinstance(message, Message):
        return message
    return email.parser.BytesParser(policy=email.policy.default).parsebytes(bytes(message))


# --- header fields ---------------------------------------------------------------------------

_FOLD = re.compile(r"\r?\n[ \t]")


def _decoded(value: object) -> str:
    text = _FOLD.sub(" ", str(value))
    if "=?" in text:
        return _guarded(lambda: str(make_header(decode_header(text))), text)
    return text


def header_values(message: Message, name: str) -> list[str]:
    """The values of every ``name`` field, unfolded and RFC 2047-decoded. Read from the raw
    fields, so that a value the header registry would choke on is still seen."""
    key = name.lower()
    empty: list[tuple[str, Any]] = []
    items = _guarded(lambda: list(message.raw_items()), empty)
    return [_decoded(value) for field, value in items if field.lower() == key]


def _normalized(address: str) -> str:
    local, _, domain = address.strip().rpartition("@")
    return f"{local}@{domain.lower().rstrip('.')}"


def recipients(message: Message, given: Iterable[str] | None = None) -> tuple[str, ...]:
    """The envelope recipients: ``given`` if not ``None``, else To, Cc, Bcc and the
    :attr:`~securemail.compose.Message.bcc` of a built message. Deduplicated, domains in lower
    case; anything without an ``@`` (a group name, "undisclosed-recipients") is left out."""
    if given is not None:
        found = [address for address in given if "@" in address]
    else:
        raw = [value for field in ("To", "Cc", "Bcc") for value in header_values(message, field)]
        none: list[tuple[str, str]] = []
        pairs = _guarded(lambda: email.utils.getaddresses(raw), none)
        found = [address for _, address in pairs if "@" in address]
        found += [address for address in getattr(message, "bcc", ()) if isinstance(address, str)]
    return tuple(dict.fromkeys(_normalized(address) for address in found))


# --- attachments -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Attachment:
    content_type: str
    filename: str | None = dataclasses.field(repr=False)  # may itself be sensitive
    size: int


def _cte(part: Message) -> str:
    return str(part.get("Content-Transfer-Encoding", "")).strip().lower()


def _raw_payload(part: Message) -> object:
    """The body as stored, without copying it. ``Message.get_payload()`` is no use here: it
    encodes the whole body once just to look for undecodable bytes, and then re-decodes a
    body that has some with the declared charset, which a 1 GiB attachment would pay for
    in full and which would lose the original bytes."""
    return getattr(part, "_payload", None)


def _decoded_size(part: Message) -> int:
    payload = _raw_payload(part)
    if isinstance(payload, bytes):
        return len(payload)
    if not isinstance(payload, str):
        return 0
    cte = _cte(part)
    if cte == "base64":
        characters = len(payload) - sum(payload.count(char) for char in "\r\n \t")
        padding = payload[-80:].rstrip()[-2:].count("=")  # never copy the whole body
        return max(0, characters * 3 // 4 - padding)
    if cte == "quoted-printable":  # an upper bound: each escape (=XX) is one byte
        return len(payload) - 2 * payload.count("=")
    return len(payload)  # as parsed, one character per byte (undecodable ones escaped)


def _is_attachment(part: Message) -> bool:
    disposition = part.get_content_disposition()
    return disposition == "attachment" or (disposition is None and part.get_filename() is not None)


def attachments(message: Message) -> tuple[Attachment, ...]:
    """The attachments: leaf parts with ``Content-Disposition: attachment``, or with a
    filename and no disposition (inline images are not attachments)."""
    found: list[Attachment] = []
    parts: list[Message] = []
    for part in _guarded(lambda: list(message.walk()), parts):

        def read(part: Message = part) -> Attachment | None:
            if part.is_multipart() or not _is_attachment(part):
                return None
            return Attachment(part.get_content_type(), part.get_filename(), _decoded_size(part))

        if (attachment := _guarded(read, None)) is not None:
            found.append(attachment)
    return tuple(found)


# --- text ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Text:
    """Text read from a message, shaped like its MIME tree. Matches in ``pieces`` add up,
    except in a ``multipart/alternative`` (``alternative``), whose pieces say the same thing
    twice: there the best-matching alternative counts, so that a card number in the text and
    the HTML body is one match, not two."""

    pieces: tuple[str | Text, ...]
    alternative: bool = False

    def count(self, counter: Callable[[str], int]) -> int:
        counts = [
            counter(piece) if isinstance(piece, str) else piece.count(counter)
            for piece in self.pieces
        ]
        return max(counts, default=0) if self.alternative else sum(counts)


_TEXT_APPLICATION = frozenset(
    {"json", "xml", "csv", "yaml", "x-yaml", "javascript", "x-sh", "rtf", "x-ndjson", "sql"}
)
_TEXT_EXTENSIONS = frozenset(
    {"txt", "csv", "tsv", "json", "xml", "log", "md", "yaml", "yml", "ini", "html", "htm", "sql"}
)


def _text_like(part: Message, content_type: str) -> bool:
    maintype, _, subtype = content_type.partition("/")
    if maintype == "text" or subtype.endswith(("+json", "+xml")):
        return True
    if maintype == "application" and subtype in _TEXT_APPLICATION:
        return True
    if content_type == "application/octet-stream":
        filename = part.get_filename() or ""
        return filename.rpartition(".")[2].lower() in _TEXT_EXTENSIONS
    return False


def _payload_prefix(part: Message, limit: int) -> bytes:
    """The first ``limit`` bytes of the decoded body, decoding only as much as that needs."""
    payload = _raw_payload(part)
    if isinstance(payload, bytes):
        return payload[:limit]
    if not isinstance(payload, str):
        return b""
    cte = _cte(part)
    if cte == "base64":
        # Lines of 76 characters plus CRLF carry 57 bytes; take a little more than needed.
        chunk = payload[: (limit // 57 + 2) * 78]
        compact = re.sub(r"[^A-Za-z0-9+/=]", "", chunk)
        if len(chunk) < len(payload):
            compact = compact[: len(compact) // 4 * 4]
        else:  # the whole body: tolerate missing padding
            compact += "=" * (-len(compact) % 4)
        return _guarded(lambda: binascii.a2b_base64(compact), b"")[:limit]
    if cte == "quoted-printable":
        chunk = payload[: limit * 3 + 2]
        if len(chunk) < len(payload) and (newline := chunk.rfind("\n")) > 0:
            chunk = chunk[: newline + 1]  # never cut an escape in two
        raw = chunk.encode("utf-8", "surrogateescape")
        return _guarded(lambda: quopri.decodestring(raw), raw)[:limit]
    return payload[:limit].encode("utf-8", "surrogateescape")[:limit]


def _as_text(data: bytes, charset: str | None) -> str:
    try:
        return data.decode(charset or "utf-8", errors="replace")
    except (LookupError, ValueError, TypeError):  # unknown, or not a text codec ("base64")
        return data.decode("utf-8", errors="replace")


_TAG = re.compile(r"<[^>]*>")


def _html_text(html: str) -> str:
    return _guarded(lambda: _html_to_text(html), _TAG.sub(" ", html))


@dataclasses.dataclass
class _Budget:
    parts: int
    part_bytes: int


def _read(part: Message, budget: _Budget) -> str | Text | None:
    if part.is_multipart():
        payload = part.get_payload()
        children = payload if isinstance(payload, list) else []
        pieces = [piece for child in children if (piece := _read_guarded(child, budget))]
        return Text(tuple(pieces), alternative=part.get_content_type() == "multipart/alternative")
    if budget.parts <= 0:
        return None
    budget.parts -= 1
    content_type = part.get_content_type()
    if not _text_like(part, content_type):
        return None
    body = _as_text(_payload_prefix(part, budget.part_bytes), part.get_content_charset())
    return _html_text(body) if content_type == "text/html" else body


def _read_guarded(part: object, budget: _Budget) -> str | Text | None:
    if not isinstance(part, Message):
        return None
    return _guarded(lambda: _read(part, budget), None)


def text(message: Message, *, max_part_bytes: int, max_parts: int) -> Text:
    """The Subject, the text and HTML bodies (HTML reduced to what a reader sees) and the
    text-like attachments (text/*, JSON, XML, CSV..., or octet-stream named like text)."""
    subject = " ".join(header_values(message, "Subject"))
    body = _read_guarded(message, _Budget(max_parts, max_part_bytes))
    return Text((subject, *([body] if body else [])))
