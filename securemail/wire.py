"""The one place that turns messages into bytes and bytes into messages.

Signatures cover bytes, not objects: a header re-folded or a line ending changed after
signing breaks the signature in strict clients (Outlook rejects re-folded headers). So every
protected structure is serialized exactly once, here, to canonical CRLF form with 7-bit-safe
transfer encodings, and the transmitted bytes *are* the signed bytes. Inbound messages are
split on their raw bytes (:func:`split_entity`, :func:`split_multipart`) so that a signed
part is verified over exactly what was received, never over a re-generated copy.
"""

from __future__ import annotations

import base64
import binascii
import copy
import dataclasses
import email.parser
import email.policy
import re
import secrets
from collections.abc import Iterable, Sequence
from email.generator import BytesGenerator
from email.message import EmailMessage, Message
from io import BytesIO
from typing import TypeVar

from .errors import MalformedMessageError, SizeLimitExceeded
from .headers import (
    check_header_name,
    check_header_value,
    check_message_headers,
    verify_header_names,
)

__all__ = [
    "PARSE_POLICY",
    "WIRE_POLICY",
    "Entity",
    "MultipartBody",
    "RawEntity",
    "RawField",
    "base64_body",
    "canonical_plaintext",
    "canonicalize",
    "decode_body",
    "delimiter_lines",
    "entity",
    "fold_field",
    "multipart_body",
    "new_boundary",
    "parse",
    "parse_headers",
    "parts",
    "seven_bit",
    "split_entity",
    "split_multipart",
    "to_bytes",
    "walk",
]

_M = TypeVar("_M", bound=Message)

WIRE_POLICY = email.policy.SMTP.clone(cte_type="7bit", refold_source="none")
"""CRLF line ends, RFC 2047 for non-ASCII headers, source headers never re-folded."""
PARSE_POLICY = email.policy.default

CRLF = b"\r\n"
_BINARY_CTE = re.compile(rb"^content-transfer-encoding:[ \t]*binary", re.IGNORECASE | re.MULTILINE)
MAX_LINE = 998  # RFC 5322 2.1.1, without the CRLF
_CONTENT_FIELDS = ("content-", "mime-version")


def canonicalize(data: bytes) -> bytes:
    """Line endings to CRLF (bare LF and bare CR alike), as RFC 5322 and CMS signing need."""
    return re.sub(rb"\r\n|\r|\n", CRLF, data)


def canonical_plaintext(data: bytes) -> bytes:
    """Decrypted content with CRLF line ends (``openssl cms -binary`` of a Unix file has
    LF), unless a part of it is in binary transfer encoding: there a line end is data, and
    changing one would change the file."""
    if _BINARY_CTE.search(data):
        return data
    return canonicalize(data)


def parse(data: bytes, *, limit: int | None = None) -> EmailMessage:
    """Parse a whole RFC 5322 message (any line endings) into an :class:`EmailMessage`."""
    if limit is not None and len(data) > limit:
        raise SizeLimitExceeded("message", limit)
    if not data.strip():
        raise MalformedMessageError("the message is empty")
    # Parsed for reading with "\n" line ends, so text comes back as Python text has it;
    # to_bytes() writes CRLF again. Binary transfer encoding (rare: it needs BINARYMIME)
    # is the one case where a line ending is content, so such messages are left alone.
    if not _BINARY_CTE.search(data):
        data = data.replace(CRLF, b"\n")
    message = email.parser.BytesParser(policy=PARSE_POLICY).parsebytes(data)
    assert isinstance(message, EmailMessage)
    return message


def parse_headers(data: bytes) -> EmailMessage:
    """Parse only a header block (for reading the parameters of raw fields)."""
    message = email.parser.BytesHeaderParser(policy=PARSE_POLICY).parsebytes(data + CRLF)
    assert isinstance(message, EmailMessage)
    return message


def to_bytes(message: EmailMessage, *, expected_fields: Sequence[str] | None = None) -> bytes:
    """Serialize ``message`` with CRLF line ends, once.

    The top-level header names of the result are re-parsed and compared with the message's
    own (or ``expected_fields``): a value that smuggled a line break into the output would
    show up as an extra field (CVE-2024-6923) and is refused.
    """
    check_message_headers(message)
    out = BytesIO()
    BytesGenerator(out, mangle_from_=False, policy=WIRE_POLICY).flatten(message)
    data = out.getvalue()
    verify_header_names(data, expected_fields if expected_fields is not None else message.keys())
    return data


def fold_field(name: str, value: str) -> bytes:
    """One header field, folded and encoded for the wire, ending in CRLF."""
    check_header_name(name)
    check_header_value(name, value)
    header = WIRE_POLICY.header_factory(name, value)
    return str(header.fold(policy=WIRE_POLICY)).encode("ascii")


# --- 7-bit canonical form for signing ----------------------------------------------------------


def _needs_qp(data: bytes) -> bool:
    if not data.isascii():
        return True
    lines = data.split(CRLF)
    return any(
        len(line) > MAX_LINE
        or line.endswith((b" ", b"\t"))
        or line.startswith(b"From ")
        or b"\r" in line
        or b"\n" in line
        or b"\0" in line
        for line in lines
    )


def _quoted_printable(data: bytes) -> str:
    encoded = binascii.b2a_qp(data, quotetabs=False, istext=True, header=False)
    # "From " at a line start is rewritten to ">From " by some mail stores, which breaks
    # signatures; encoding the space keeps the bytes and defuses it.
    encoded = re.sub(rb"(^|\n)From ", rb"\1From=20", encoded)
    return encoded.decode("ascii").replace("\r\n", "\n")


def _base64_text(data: bytes) -> str:
    return base64_body(data).decode("ascii").replace("\r\n", "\n")


def _encode_leaf(part: Message) -> None:
    cte = str(part.get("Content-Transfer-Encoding", "7bit")).strip().lower()
    if cte == "base64":
        return  # already 7-bit safe, and the bytes inside are kept exactly
    raw = part.get_payload(decode=True)
    if not isinstance(raw, bytes):
        raise MalformedMessageError("a non-multipart part has no decodable payload")
    if part.get_content_maintype() == "text":
        raw = canonicalize(raw)
        if not _needs_qp(raw):
            new_cte, payload = "7bit", raw.decode("ascii").replace("\r\n", "\n")
        else:
            new_cte, payload = "quoted-printable", _quoted_printable(raw)
    else:
        new_cte, payload = "base64", _base64_text(raw)
    part.set_payload(payload)
    del part["Content-Transfer-Encoding"]
    part["Content-Transfer-Encoding"] = new_cte


def seven_bit(message: _M) -> _M:
    """A copy of ``message`` whose every part has a 7-bit transfer encoding (RFC 8551 3.1.3).

    Text stays readable (7bit or quoted-printable), other content becomes base64, embedded
    messages are converted recursively, and multiparts lose any 8bit/binary label.
    """
    result = copy.deepcopy(message)
    _seven_bit_in_place(result)
    return result


def _seven_bit_in_place(part: Message) -> None:
    if part.is_multipart():
        for child in part.get_payload():
            assert isinstance(child, Message)
            _seven_bit_in_place(child)
        if "Content-Transfer-Encoding" in part:
            del part["Content-Transfer-Encoding"]
        for attr in ("preamble", "epilogue"):
            text = getattr(part, attr)
            if text is not None and not text.isascii():
                setattr(part, attr, None)
        return
    _encode_leaf(part)


# --- raw splitting of inbound bytes -------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RawField:
    """One header field as received: its name and its exact bytes (folding and CRLF kept)."""

    name: str
    raw: bytes

    @property
    def value(self) -> str:
        """The unfolded value, undecoded (RFC 2047 words stay as they are)."""
        text = self.raw.decode("ascii", "surrogateescape")
        value = text.split(":", 1)[1]
        return re.sub(r"\r\n(?=[ \t])", "", value).strip()


@dataclasses.dataclass(frozen=True)
class RawEntity:
    """A MIME entity split into its header fields and body, bytes untouched."""

    fields: tuple[RawField, ...]
    body: bytes

    def get(self, name: str) -> RawField | None:
        lowered = name.lower()
        return next((f for f in self.fields if f.name.lower() == lowered), None)

    @property
    def content_fields(self) -> tuple[RawField, ...]:
        return tuple(f for f in self.fields if f.name.lower().startswith(_CONTENT_FIELDS))

    @property
    def other_fields(self) -> tuple[RawField, ...]:
        return tuple(f for f in self.fields if not f.name.lower().startswith(_CONTENT_FIELDS))

    @property
    def content_type(self) -> tuple[str, dict[str, str]]:
        """The media type (lowercase) and its parameters (names lowercase, values as sent)."""
        field = self.get("Content-Type")
        if field is None:
            return "text/plain", {}
        parsed = parse_headers(field.raw)
        params = {k.lower(): v for k, v in (parsed.get_params() or [])[1:]}
        return parsed.get_content_type(), params

    def header_bytes(self, fields: Iterable[RawField] | None = None) -> bytes:
        return b"".join(f.raw for f in (self.fields if fields is None else fields))

    def to_bytes(self) -> bytes:
        return self.header_bytes() + CRLF + self.body


_FIELD_NAME = re.compile(rb"^([\x21-\x39\x3b-\x7e]+)[ \t]*:")


def split_entity(data: bytes) -> RawEntity:
    """Split canonical (CRLF) entity bytes into raw header fields and the body.

    Like the standard library's parser, a line that is not a header field ends the header
    section (an entity without headers is all body, and its type is text/plain).
    """
    fields: list[RawField] = []
    pos = 0
    while pos < len(data):
        eol = data.find(CRLF, pos)
        end = len(data) if eol < 0 else eol + 2
        line = data[pos : eol if eol >= 0 else len(data)]
        if not line:
            return RawEntity(fields=tuple(fields), body=data[end:])
        if line[:1] in (b" ", b"\t") and fields:
            last = fields[-1]
            fields[-1] = RawField(last.name, last.raw + line + CRLF)
        elif (match := _FIELD_NAME.match(line)) is not None:
            fields.append(RawField(match.group(1).decode("ascii"), line + CRLF))
        else:
            break
        pos = end
    return RawEntity(fields=tuple(fields), body=data[pos:])


@dataclasses.dataclass(frozen=True)
class MultipartBody:
    preamble: bytes
    parts: tuple[bytes, ...]
    epilogue: bytes
    closed: bool


def delimiter_lines(boundary: str) -> re.Pattern[bytes]:
    """The delimiter lines of a multipart body with ``boundary``, each with the CRLF before
    it (RFC 2046 5.1.1); group 1 is set on the close delimiter."""
    if not boundary or len(boundary) > 70:
        raise MalformedMessageError("multipart boundary is missing or longer than 70 characters")
    return re.compile(
        rb"(?:^|\r\n)--" + re.escape(boundary.encode("ascii")) + rb"(--)?[ \t]*(?:\r\n|$)"
    )


def split_multipart(body: bytes, boundary: str) -> MultipartBody:
    """Split a multipart body into the exact bytes of each part (RFC 2046 5.1.1).

    The CRLF before a delimiter line belongs to the delimiter, so a part's bytes end before
    it: for multipart/signed these are precisely the bytes the signature covers. A missing
    close delimiter is tolerated, as every mail client does (``closed`` records it): the
    last part then runs to the end of the body.
    """
    matches = list(delimiter_lines(boundary).finditer(body))
    if not matches or matches[0].group(1):
        raise MalformedMessageError("multipart body has no opening boundary")
    parts: list[bytes] = []
    closed = False
    for this, following in zip(matches, [*matches[1:], None], strict=True):
        if this.group(1):
            closed = True
            break
        part = body[this.end() : following.start() if following else len(body)]
        if following is None and not part.strip():
            break  # an unclosed body ending in a bare delimiter: nothing follows it
        parts.append(part)
    return MultipartBody(
        preamble=body[: matches[0].start()],
        parts=tuple(parts),
        epilogue=body[matches[len(parts)].end() :] if closed else b"",
        closed=closed,
    )


@dataclasses.dataclass(frozen=True)
class Entity:
    """A raw entity with its media type and parameters read (values lowercased, except
    the boundary, whose case matters)."""

    raw: RawEntity
    content_type: str
    params: dict[str, str]


def entity(data: bytes) -> Entity:
    raw = split_entity(data)
    content_type, params = raw.content_type
    lowered = {k: v if k == "boundary" else v.lower() for k, v in params.items()}
    return Entity(raw, content_type, lowered)


def decode_body(part: Entity) -> bytes:
    """The body with its transfer encoding undone (strict base64; quoted-printable)."""
    field = part.raw.get("Content-Transfer-Encoding")
    cte = field.value.lower() if field is not None else "7bit"
    if cte == "base64":
        try:
            return binascii.a2b_base64(b"".join(part.raw.body.split()), strict_mode=True)
        except binascii.Error:
            raise MalformedMessageError("a part's base64 content is not valid") from None
    if cte == "quoted-printable":
        return binascii.a2b_qp(part.raw.body)
    if cte in ("7bit", "8bit", "binary"):
        return part.raw.body
    raise MalformedMessageError(f"unknown transfer encoding {cte!r}")


def parts(part: Entity) -> list[Entity]:
    """The children of a multipart entity, raw bytes kept."""
    boundary = part.params.get("boundary")
    if not boundary:
        raise MalformedMessageError(f"a {part.content_type} part has no boundary")
    return [entity(child) for child in split_multipart(part.raw.body, boundary).parts]


def walk(part: Entity, depth: int = 0) -> list[Entity]:
    """Every entity below a multipart, depth-first (nesting is capped at 20 levels)."""
    if not part.content_type.startswith("multipart/") or depth > 20:
        return []
    found = []
    for child in parts(part):
        found.append(child)
        found.extend(walk(child, depth + 1))
    return found


def multipart_body(preamble: bytes, children: Sequence[bytes]) -> tuple[str, bytes]:
    """(boundary, body) of a multipart whose parts are ``children`` byte for byte."""
    boundary = new_boundary(*children)
    delimiter = b"--" + boundary.encode("ascii")
    body = preamble + CRLF
    for child in children:
        body += delimiter + CRLF + child + CRLF
    return boundary, body + delimiter + b"--" + CRLF


# --- small building blocks ------------------------------------------------------------------------


def base64_body(data: bytes) -> bytes:
    """Base64 in 76-character lines, each ending in CRLF (RFC 2045 6.8)."""
    encoded = base64.b64encode(data)
    return b"".join(encoded[i : i + 76] + CRLF for i in range(0, len(encoded), 76))


def new_boundary(*contents: bytes) -> str:
    """A random boundary that occurs in none of ``contents``."""
    while True:
        boundary = f"----=_securemail_{secrets.token_hex(16)}"
        token = boundary.encode("ascii")
        if not any(token in content for content in contents):
            return boundary
