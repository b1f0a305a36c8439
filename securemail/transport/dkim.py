"""DKIM signatures (RFC 6376) over the final wire bytes: rsa-sha256 and ed25519-sha256 (RFC 8463).

DKIM is the last step before transport, so it signs exactly the bytes that will be sent:
the ``DKIM-Signature`` field is prepended to them and nothing after it is re-encoded. The
input must therefore already be wire bytes, every line ending in CRLF; a message with bare
LF or CR is refused rather than converted, because converting it would change bytes that an
S/MIME or OpenPGP signature inside may cover.

The canonicalization and the signature are computed here, with ``cryptography``, rather
than by dkimpy: dkimpy's RSA is pure Python (slow, and not constant-time on the private
key), its Ed25519 needs PyNaCl, and owning the canonicalization lets the body hash be
computed while a large message streams past (:meth:`DKIMSigner.signing_context`). The tests
verify every signature with dkimpy and compare body hashes with its canonicalization.

No ``l=`` (body length) tag is ever written: it lets anyone append content under a valid
signature. From is always signed one more time than it occurs ("oversigned"), so a From
field added in transit breaks the signature instead of being shown as signed.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import enum
import hashlib
import re
import time
from collections import Counter
from collections.abc import Iterable
from types import TracebackType
from typing import Self, overload

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa, utils

from ..errors import (
    AlreadyFinalized,
    HeaderInjectionError,
    InputError,
    KeyLoadError,
    MalformedMessageError,
    MissingHeaderError,
    SizeLimitExceeded,
    WeakKeyError,
)
from ..keys import Password, Source, _Named, load_private_key, read_source
from ..results import ProtectedMessage
from ..wire import RawField

__all__ = [
    "DEFAULT_OVERSIGNED",
    "DEFAULT_SIGNED",
    "MIN_RSA_BITS",
    "Canonicalization",
    "DKIMPrivateKey",
    "DKIMPublicKey",
    "DKIMSigner",
    "DKIMSigningContext",
    "check_dns_name",
    "dns_record",
    "txt_strings",
]

DKIMPrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
DKIMPublicKey = rsa.RSAPublicKey | ed25519.Ed25519PublicKey
Data = bytes | bytearray | memoryview

MIN_RSA_BITS = 2048
"""RFC 8301 lets verifiers accept 1024 bits, but such keys have been factored for spoofing
(2012); 2048 is what current guidance (M3AAWG, RFC 8301's SHOULD) asks signers for."""

DEFAULT_SIGNED = (
    "from",
    "to",
    "cc",
    "subject",
    "date",
    "message-id",
    "reply-to",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "in-reply-to",
    "references",
)
"""Header fields signed when present: what the recipient sees and what decides how the
body is read. Trace and envelope fields (Received, Return-Path) change in transit."""

DEFAULT_OVERSIGNED = (
    "from",
    "to",
    "cc",
    "subject",
    "reply-to",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
)
"""Header fields listed once more than they occur, so that adding one breaks the signature.

These are the fields whose duplicates mislead a reader (a second From, Subject or To shown
instead of the signed one; a Reply-To added to divert answers) or change how the body is
parsed (a second Content-Type). Date and Message-ID are signed but not oversigned: a
submission server adds them when they are missing, and a duplicate misleads nobody."""

_NEVER_SIGNED = frozenset({"dkim-signature", "return-path", "received", "bcc", "resent-bcc"})
"""Fields that are added, removed or rewritten in transit: signing them breaks the
signature at the next hop (RFC 6376 5.4.1)."""

MAX_HEADER_SECTION = 1 << 20
"""The header section is held in memory until the body starts; 1 MiB is far beyond any
real message and bounds what a malformed stream can make us buffer."""

_CHUNK = 1 << 16
"""Bytes hashed per step when signing in memory, so that no step copies the whole message."""

_LINE_FLUSH = 1 << 16
"""A body line longer than this is hashed in pieces instead of being buffered whole."""

CRLF = b"\r\n"
_FIELD_NAME = re.compile(rb"([\x21-\x39\x3b-\x7e]+)([ \t]*):")
_WSP_RUN = re.compile(rb"[ \t]+")
# Only runs that change: two or more characters, or a lone tab (a lone space stays).
_WSP_TO_SQUEEZE = re.compile(rb" [ \t]+|\t[ \t]*")
_TRAILING_WSP = re.compile(rb"[ \t]+\r\n")
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_LINE_WIDTH = 78


class Canonicalization(enum.StrEnum):
    """How header fields and body are normalized before hashing (RFC 6376 3.4).

    ``relaxed`` survives the re-folding and whitespace changes some relays make; ``simple``
    fails on any change, which is stricter but breaks more legitimate mail.
    """

    RELAXED = "relaxed"
    SIMPLE = "simple"


def check_dns_name(value: str, what: str) -> str:
    """Return ``value`` if it is a host name in letters, digits and hyphens (RFC 6376 3.5
    uses this syntax for ``d=`` and ``s=``). Anything else could add tags to the signature
    field or query a name other than the one intended. ``what`` labels the error."""
    if not isinstance(value, str):
        raise InputError(f"the {what} must be a string")
    if any(c in value for c in "\r\n\0"):
        raise HeaderInjectionError("DKIM-Signature", f"the {what} contains a line break or NUL")
    if not value.isascii():
        raise InputError(
            f"the {what} must be ASCII: give an internationalized name as its A-label (xn--...)"
        )
    if len(value) > 253 or not all(_LABEL.fullmatch(label) for label in value.split(".")):
        raise InputError(
            f"the {what} {value[:100]!r} is not a domain name "
            "(dot-separated labels of letters, digits and inner hyphens)"
        )
    return value


def _check_key(key: object, source: str) -> DKIMPrivateKey:
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:
            raise WeakKeyError(source, key.key_size, MIN_RSA_BITS, "DKIM signing")
        return key
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    raise KeyLoadError(
        source,
        f"DKIM signs with RSA (rsa-sha256) or Ed25519 (ed25519-sha256) keys, "
        f"not {type(key).__name__.removeprefix('_')}",
    )


def _name_tuple(names: Iterable[str], what: str) -> tuple[str, ...]:
    if isinstance(names, str | bytes):
        raise InputError(f"{what} must be a sequence of header names, not one string")
    return tuple(names)


def _header_names(names: Iterable[str], what: str) -> tuple[str, ...]:
    names = _name_tuple(names, what)
    result: list[str] = []
    for name in names:
        if not isinstance(name, str) or not re.fullmatch(r"[!-9;-~]+", name):
            raise HeaderInjectionError(
                ascii(name)[:100], f"not a header field name (in DKIM {what})"
            )
        lowered = name.lower()
        if lowered in _NEVER_SIGNED:
            raise InputError(
                f"{name} must not be DKIM-signed: it changes in transit (RFC 6376 5.4.1)"
            )
        if lowered not in result:
            result.append(lowered)
    return tuple(result)


@dataclasses.dataclass(frozen=True, repr=False, eq=False)
class DKIMSigner:
    """Signs final wire bytes for one selector of one domain.

    Build it with :meth:`load` (a key file) or :meth:`from_key`; change settings with
    :meth:`clone`. Every setting is checked when the signer is made, so a signer that
    exists can sign. The repr shows the selector and domain, never key material.
    """

    private_key: DKIMPrivateKey
    selector: str
    domain: str
    header_canonicalization: Canonicalization = Canonicalization.RELAXED
    body_canonicalization: Canonicalization = Canonicalization.RELAXED
    headers: tuple[str, ...] = DEFAULT_SIGNED
    """Fields signed when present (every occurrence)."""
    oversign: tuple[str, ...] = DEFAULT_OVERSIGNED
    """Fields signed once more than they occur (also when absent); From always is."""
    expiration: dt.timedelta | None = None
    """Written as ``x=``: verifiers treat the signature as invalid after this long."""

    def __post_init__(self) -> None:
        _check_key(self.private_key, "<key>")
        check_dns_name(self.selector, "DKIM selector")
        check_dns_name(self.domain, "DKIM domain")
        if len(self.dns_name) > 253:
            raise InputError(f"{self.dns_name[:100]}... is longer than a DNS name may be")
        for attr in ("header_canonicalization", "body_canonicalization"):
            try:
                value = Canonicalization(getattr(self, attr))
            except ValueError:
                raise InputError(f"{attr} must be 'relaxed' or 'simple'") from None
            object.__setattr__(self, attr, value)
        oversign = _header_names(self.oversign, "oversign")
        if "from" not in oversign:
            oversign = ("from", *oversign)
        headers = _header_names(self.headers, "headers")
        if "from" not in headers:
            headers = ("from", *headers)
        object.__setattr__(self, "headers", headers)
        object.__setattr__(self, "oversign", oversign)
        if self.expiration is not None and self.expiration.total_seconds() < 1:
            raise InputError("the DKIM expiration must be at least one second")

    @classmethod
    def load(
        cls,
        key: Source,
        *,
        selector: str,
        domain: str,
        password: Password = None,
        header_canonicalization: Canonicalization = Canonicalization.RELAXED,
        body_canonicalization: Canonicalization = Canonicalization.RELAXED,
        headers: Iterable[str] = DEFAULT_SIGNED,
        oversign: Iterable[str] = DEFAULT_OVERSIGNED,
        expiration: dt.timedelta | None = None,
    ) -> DKIMSigner:
        """A signer from a PEM or DER private key file (or its bytes), RSA or Ed25519."""
        data, name = read_source(key)
        private_key = _check_key(load_private_key(_Named(data, name), password), name)
        return cls(
            private_key=private_key,
            selector=selector,
            domain=domain,
            header_canonicalization=header_canonicalization,
            body_canonicalization=body_canonicalization,
            headers=_name_tuple(headers, "headers"),
            oversign=_name_tuple(oversign, "oversign"),
            expiration=expiration,
        )

    @classmethod
    def from_key(
        cls,
        private_key: DKIMPrivateKey,
        *,
        selector: str,
        domain: str,
        header_canonicalization: Canonicalization = Canonicalization.RELAXED,
        body_canonicalization: Canonicalization = Canonicalization.RELAXED,
        headers: Iterable[str] = DEFAULT_SIGNED,
        oversign: Iterable[str] = DEFAULT_OVERSIGNED,
        expiration: dt.timedelta | None = None,
    ) -> DKIMSigner:
        """A signer from a ``cryptography`` private key object."""
        return cls(
            private_key=private_key,
            selector=selector,
            domain=domain,
            header_canonicalization=header_canonicalization,
            body_canonicalization=body_canonicalization,
            headers=_name_tuple(headers, "headers"),
            oversign=_name_tuple(oversign, "oversign"),
            expiration=expiration,
        )

    def clone(self, **changes: object) -> DKIMSigner:
        """A copy with some settings changed, checked like a new signer."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    # --- what to publish ----------------------------------------------------------------

    @property
    def algorithm(self) -> str:
        """The ``a=`` tag value."""
        if isinstance(self.private_key, rsa.RSAPrivateKey):
            return "rsa-sha256"
        return "ed25519-sha256"

    @property
    def public_key(self) -> DKIMPublicKey:
        return self.private_key.public_key()

    @property
    def dns_name(self) -> str:
        """Where verifiers look the key up: ``selector._domainkey.domain``."""
        return f"{self.selector}._domainkey.{self.domain}"

    @property
    def dns_record(self) -> str:
        """The TXT record value to publish at :attr:`dns_name` (see :func:`txt_strings`)."""
        return dns_record(self.public_key)

    # --- signing ------------------------------------------------------------------------

    @overload
    def sign(self, message: ProtectedMessage, *, timestamp: int | None = None) -> ProtectedMessage:
        pass

    @overload
    def sign(self, message: bytes, *, timestamp: int | None = None) -> bytes:
        pass

    def sign(
        self, message: ProtectedMessage | bytes, *, timestamp: int | None = None
    ) -> ProtectedMessage | bytes:
        """The message with a ``DKIM-Signature`` field prepended to its unchanged bytes.

        A :class:`~securemail.results.ProtectedMessage` comes back as one, with the same
        SMTP envelope. ``timestamp`` (seconds since the epoch) sets ``t=``; it defaults to
        now.
        """
        data = message.data if isinstance(message, ProtectedMessage) else message
        if not isinstance(data, bytes | bytearray | memoryview):
            raise InputError("DKIM signs the wire bytes of a message (bytes or ProtectedMessage)")
        data = bytes(data)
        context = self.signing_context(timestamp=timestamp)
        view = memoryview(data)
        for start in range(0, len(data), _CHUNK):
            context.update(view[start : start + _CHUNK])
        signed = context.finalize() + data
        if isinstance(message, ProtectedMessage):
            return dataclasses.replace(message, data=signed)
        return signed

    def sign_stream(self, chunks: Iterable[Data], *, timestamp: int | None = None) -> bytes:
        """The ``DKIM-Signature`` field (ending in CRLF) for a message given in pieces.

        Send the field, then the same pieces: the message itself is never held in memory.
        """
        context = self.signing_context(timestamp=timestamp)
        for chunk in chunks:
            context.update(chunk)
        return context.finalize()

    def signing_context(self, *, timestamp: int | None = None) -> DKIMSigningContext:
        """An incremental signer: feed the wire bytes with ``update``, get the field from
        ``finalize``. Only the header section (at most 1 MiB) is kept in memory."""
        if timestamp is None:
            timestamp = int(time.time())
        if isinstance(timestamp, bool) or not isinstance(timestamp, int) or timestamp < 0:
            raise InputError("the DKIM timestamp must be a non-negative number of seconds")
        return DKIMSigningContext(self, timestamp)

    def _signed_names(self, fields: list[RawField]) -> list[str]:
        counts = Counter(field.name.lower() for field in fields)
        if counts["from"] == 0:
            raise MissingHeaderError("From", "DKIM signing")
        if counts["from"] > 1:
            raise MalformedMessageError(
                f"the message has {counts['from']} From header fields; "
                "DKIM and DMARC need exactly one"
            )
        names: list[str] = []
        for name in dict.fromkeys((*self.headers, *self.oversign)):
            names.extend([name] * (counts[name] + (name in self.oversign)))
        return names

    def _field(self, fields: list[RawField], body_hash: bytes, timestamp: int) -> bytes:
        names = self._signed_names(fields)
        tags = [
            ("v", "1"),
            ("a", self.algorithm),
            ("c", f"{self.header_canonicalization}/{self.body_canonicalization}"),
            ("d", self.domain),
            ("s", self.selector),
            ("t", str(timestamp)),
        ]
        if self.expiration is not None:
            tags.append(("x", str(timestamp + int(self.expiration.total_seconds()))))
        tags += [("h", ":".join(names)), ("bh", base64.b64encode(body_hash).decode("ascii"))]
        # b= starts a line of its own, so the value added after hashing cannot move the
        # folding of the tags before it.
        unsigned = _fold(tags) + ";\r\n b="
        digest = hashlib.sha256()
        for field in _select(fields, names):
            digest.update(_canonical_field(field, self.header_canonicalization))
        own = RawField("DKIM-Signature", unsigned.encode("ascii") + CRLF)
        digest.update(_canonical_field(own, self.header_canonicalization)[:-2])
        signature = base64.b64encode(self._sign_digest(digest.digest())).decode("ascii")
        return (unsigned + _fold_base64(signature) + "\r\n").encode("ascii")

    def _sign_digest(self, digest: bytes) -> bytes:
        """Both algorithms sign the SHA-256 digest of the canonical header data: RSA as
        PKCS#1 v1.5 over the prehashed value, Ed25519 over the digest bytes themselves
        (RFC 8463 3), which is what lets a token or agent stand in for either."""
        key = self.private_key
        if isinstance(key, rsa.RSAPrivateKey):
            return key.sign(digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
        return key.sign(digest)

    def __repr__(self) -> str:
        return f"DKIMSigner({self.algorithm}, selector={self.selector!r}, domain={self.domain!r})"


class DKIMSigningContext:
    """The state of one signature: ``update`` with the wire bytes, then ``finalize``.

    Like ``cryptography``'s hash contexts, it refuses use after ``finalize``
    (:class:`~securemail.errors.AlreadyFinalized`). ``write`` makes it a sink for the
    stream writers, so it can sit beside the spool file a large message is written to.
    """

    def __init__(self, signer: DKIMSigner, timestamp: int) -> None:
        self._signer = signer
        self._timestamp = timestamp
        self._carry = b""
        self._head = bytearray()
        self._header_section: bytes | None = None
        self._body = _BodyHash(signer.body_canonicalization)
        self._finalized = False

    def update(self, data: Data) -> None:
        if self._finalized:
            raise AlreadyFinalized("DKIM signing context")
        if not data:
            return
        chunk = self._carry + bytes(data)
        # A CR at the end of a chunk is judged with the byte that follows it.
        if chunk.endswith(b"\r"):
            chunk, self._carry = chunk[:-1], b"\r"
        else:
            self._carry = b""
        _check_line_endings(chunk)
        if self._header_section is None:
            self._update_head(chunk)
        else:
            self._body.update(chunk)

    def write(self, data: Data) -> int:
        self.update(data)
        return len(data)

    def _update_head(self, chunk: bytes) -> None:
        start = max(0, len(self._head) - 3)
        self._head += chunk
        if self._head.startswith(CRLF):
            end, body_start = 0, 2
        else:
            end = self._head.find(b"\r\n\r\n", start)
            if end < 0:
                if len(self._head) > MAX_HEADER_SECTION:
                    raise SizeLimitExceeded("the message's header section", MAX_HEADER_SECTION)
                return
            end, body_start = end + 2, end + 4
        self._header_section = bytes(self._head[:end])
        rest = bytes(self._head[body_start:])
        self._head = bytearray()
        self._body.update(rest)

    def finalize(self) -> bytes:
        """The ``DKIM-Signature`` field, ending in CRLF, to send before the message."""
        if self._finalized:
            raise AlreadyFinalized("DKIM signing context")
        self._finalized = True
        if self._carry:
            _check_line_endings(self._carry)
        section = self._header_section
        if section is None:  # no empty line: the message is all header section
            section = bytes(self._head)
            if section and not section.endswith(CRLF):
                section += CRLF  # the CRLF that SMTP adds at the end of the data
        fields = _split_fields(section)
        return self._signer._field(fields, self._body.digest(), self._timestamp)

    @property
    def finalized(self) -> bool:
        return self._finalized

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Nothing to release; leaving the block does not finalize (the field is the
        result, and only ``finalize`` can hand it over)."""


# --- canonicalization -------------------------------------------------------------------------


def _check_line_endings(data: bytes) -> None:
    pairs = data.count(CRLF)
    if data.count(b"\r") != pairs or data.count(b"\n") != pairs:
        raise MalformedMessageError(
            "the message has a bare LF or CR: DKIM signs wire bytes, whose lines all end in "
            "CRLF (serialize with securemail.wire.to_bytes, or convert the message with "
            "securemail.wire.canonicalize before anything signs it)"
        )


def _split_fields(section: bytes) -> list[RawField]:
    """The header fields of a CRLF header section, folding kept; any other line is refused,
    since verifiers would not agree on where the header section ends."""
    fields: list[RawField] = []
    for number, line in enumerate(section.split(CRLF)[:-1], start=1):
        if line[:1] in (b" ", b"\t"):
            if not fields:
                raise MalformedMessageError("the header section starts with a folded line")
            last = fields[-1]
            fields[-1] = RawField(last.name, last.raw + line + CRLF)
        elif (match := _FIELD_NAME.match(line)) is not None:
            if match.group(2):
                raise MalformedMessageError(
                    f"line {number} of the header section has whitespace before its colon, "
                    "obsolete syntax that verifiers do not agree on"
                )
            fields.append(RawField(match.group(1).decode("ascii"), line + CRLF))
        else:
            raise MalformedMessageError(f"line {number} of the header section is not a field")
    return fields


def _select(fields: list[RawField], names: list[str]) -> list[RawField]:
    """RFC 6376 5.4.2: each listed name takes the last occurrence not taken yet; names
    beyond the occurrences (oversigning) take nothing."""
    remaining: dict[str, list[RawField]] = {}
    for field in fields:
        remaining.setdefault(field.name.lower(), []).append(field)
    return [remaining[name].pop() for name in names if remaining.get(name)]


def _canonical_field(field: RawField, mode: Canonicalization) -> bytes:
    """RFC 6376 3.4.1 (simple: as is) and 3.4.2 (relaxed: name lowercased, value unfolded,
    whitespace runs made one space and stripped at both ends)."""
    if mode is Canonicalization.SIMPLE:
        return field.raw
    name, _, value = field.raw.partition(b":")
    value = _WSP_RUN.sub(b" ", value.replace(CRLF, b"")).strip(b" \t")
    return name.rstrip(b" \t").lower() + b":" + value + CRLF


class _BodyHash:
    """The body hash of RFC 6376 3.4.3/3.4.4, computed incrementally.

    Whole lines are canonicalized with two regular-expression passes per chunk. Empty lines
    are counted, not hashed, until a line with content follows: trailing ones are dropped.
    A final line without CRLF is hashed as if it had one, because SMTP adds it.
    """

    def __init__(self, mode: Canonicalization) -> None:
        self._relaxed = mode is Canonicalization.RELAXED
        self._hash = hashlib.sha256()
        self._partial = b""  # the current line's tail, not hashed yet (no CR or LF in it)
        self._open = False  # the start of the current line is already hashed
        self._empty_lines = 0
        self._hashed_any = False

    def update(self, data: bytes) -> None:
        """``data`` holds only CRLF line breaks and does not end in a lone CR."""
        end = data.rfind(CRLF)
        if end < 0:
            self._partial += data
        else:
            block = self._partial + data[: end + 2]
            self._partial = data[end + 2 :]
            if self._open:
                first = block.find(CRLF) + 2
                self._hash.update(self._relax(block[:first]))
                self._open = False
                block = block[first:]
            if block:
                self._lines(block)
        if len(self._partial) > _LINE_FLUSH:
            self._flush_partial()

    def _relax(self, lines: bytes) -> bytes:
        """Relaxed lines; the substring tests skip the slower regular expressions for the
        common chunk that has nothing to change (base64, or text with single spaces)."""
        if not self._relaxed:
            return lines
        if b" \r\n" in lines or b"\t\r\n" in lines:
            lines = _TRAILING_WSP.sub(CRLF, lines)
        if b"  " in lines or b"\t" in lines:
            lines = _WSP_TO_SQUEEZE.sub(b" ", lines)
        return lines

    def _lines(self, block: bytes) -> None:
        block = self._relax(block)
        end = len(block)
        while end and block.endswith(CRLF, 0, end):
            end -= 2
        if end == 0:
            self._empty_lines += len(block) // 2
            return
        self._hash.update(CRLF * self._empty_lines)
        self._hash.update(memoryview(block)[: end + 2])
        self._empty_lines = (len(block) - end) // 2 - 1
        self._hashed_any = True

    def _flush_partial(self) -> None:
        """Hash most of an overlong line now; keep only what the next bytes could change
        (in relaxed mode, the trailing whitespace run, shortened to one character)."""
        content, tail = self._partial, b""
        if self._relaxed:
            stripped = content.rstrip(b" \t")
            content, tail = _WSP_RUN.sub(b" ", stripped), content[len(stripped) : len(stripped) + 1]
            if not content:
                self._partial = tail
                return
        if not self._open:
            self._hash.update(CRLF * self._empty_lines)
            self._empty_lines = 0
            self._open = True
            self._hashed_any = True
        self._hash.update(content)
        self._partial = tail

    def digest(self) -> bytes:
        if self._partial or self._open:
            self.update(CRLF)
        if not self._relaxed and not self._hashed_any:
            self._hash.update(CRLF)  # simple: an empty body is one CRLF (RFC 6376 3.4.3)
        return self._hash.digest()


# --- header field layout ----------------------------------------------------------------------


def _fold(tags: list[tuple[str, str]]) -> str:
    """``DKIM-Signature: tag=value; ...`` folded before lines pass 78 characters, breaking
    only where RFC 6376 allows whitespace: between tags, and after a colon in ``h=``."""
    lines: list[str] = []
    line = "DKIM-Signature:"
    for index, (tag, value) in enumerate(tags):
        end = ";" if index < len(tags) - 1 else ""
        if tag == "h":
            names = value.split(":")
            pieces = [f"{name}:" for name in names[:-1]] + [names[-1] + end]
            pieces[0] = "h=" + pieces[0]
        else:
            pieces = [f"{tag}={value}{end}"]
        for position, piece in enumerate(pieces):
            separator = " " if position == 0 else ""
            if len(line) + len(separator) + len(piece) > _LINE_WIDTH and line.strip():
                lines.append(line)
                line = " " + piece
            else:
                line += separator + piece
    lines.append(line)
    return "\r\n".join(lines)


def _fold_base64(value: str) -> str:
    first, rest = value[:74], value[74:]
    return first + "".join("\r\n " + rest[i : i + 76] for i in range(0, len(rest), 76))


# --- DNS record -------------------------------------------------------------------------------


def dns_record(public_key: DKIMPublicKey) -> str:
    """The TXT record value that publishes ``public_key`` (RFC 6376 3.6.1, RFC 8463 4.2).

    RSA keys are published as SubjectPublicKeyInfo, as ``openssl`` and opendkim write
    them; Ed25519 keys as their 32 raw bytes, as RFC 8463 requires.
    """
    if isinstance(public_key, rsa.RSAPublicKey):
        kind = "rsa"
        raw = public_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    elif isinstance(public_key, ed25519.Ed25519PublicKey):
        kind = "ed25519"
        raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    else:
        raise InputError("DKIM publishes RSA or Ed25519 public keys")
    return f"v=DKIM1; k={kind}; p={base64.b64encode(raw).decode('ascii')}"


def txt_strings(value: str) -> tuple[str, ...]:
    """``value`` cut into the 255-byte character-strings one TXT record is made of.

    An RSA-2048 record is longer than one string may be; DNS servers and zone files need
    it split (verifiers join the strings again)."""
    data = value.encode("ascii")
    return tuple(data[i : i + 255].decode("ascii") for i in range(0, len(data), 255)) or ("",)
