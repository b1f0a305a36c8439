"""Frozen value objects returned by protect, decrypt and verify operations.

Results carry bytes, not live message objects: ``.message`` parses a fresh
:class:`~email.message.EmailMessage` on each access, so nobody can mutate a result that
another part of the program relies on, and ``.data`` is what was protected or checked.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from email.message import EmailMessage
from typing import TYPE_CHECKING

from cryptography import x509

from . import wire
from .errors import NotSignedError, SecureMailError

if TYPE_CHECKING:
    from .smime.capabilities import Capabilities

__all__ = ["DecryptResult", "ProtectedMessage", "ReadResult", "SignatureStatus", "VerifyResult"]


@dataclasses.dataclass(frozen=True)
class ProtectedMessage:
    """A signed and/or encrypted message, serialized once: ``data`` is what goes on the wire.

    ``mail_from`` and ``recipients`` are the SMTP envelope (Bcc recipients included, though
    they are in no header).
    """

    data: bytes
    mail_from: str | None = None
    recipients: tuple[str, ...] = ()

    def as_bytes(self) -> bytes:
        return self.data

    @property
    def message(self) -> EmailMessage:
        return wire.parse(self.data)


@dataclasses.dataclass(frozen=True)
class DecryptResult:
    """A decrypted message.

    ``authenticated`` is true only when the content was protected by an AEAD cipher whose
    tag verified. CBC content (most S/MIME mail today) has no integrity check of its own;
    treat it as unauthenticated unless a signature inside it verifies.
    """

    data: bytes
    authenticated: bool
    content_cipher: str
    recipient: str
    protected_headers: tuple[str, ...] = ()
    """Header fields restored from the encrypted part (RFC 9788 / protected-headers v1)."""
    signed: bool = False
    """The decrypted content is itself signed: verify it next."""
    signature: VerifyResult | None = None
    """A signature made together with the encryption (OpenPGP's combined form, RFC 3156
    6.2); signatures in the decrypted content are found by verifying it."""

    @property
    def message(self) -> EmailMessage:
        return wire.parse(self.data)


class SignatureStatus(enum.StrEnum):
    VERIFIED = "verified"
    """Valid, trusted, the signer is the sender, and it covers the whole message."""
    PARTIAL = "partial"
    """A valid signature that covers only part of the message: the rest is unsigned."""
    FAILED = "failed"
    NOT_CHECKED = "not-checked"
    """No signature, or one that could not be checked (unsupported algorithm)."""


@dataclasses.dataclass(frozen=True)
class VerifyResult:
    status: SignatureStatus
    reason: str
    error: SecureMailError | None = None
    signer: str | None = None
    """The signer's email address (or certificate subject / key fingerprint)."""
    certificate: x509.Certificate | None = None
    """The signer's X.509 certificate (S/MIME)."""
    fingerprint: str | None = None
    """The signer's OpenPGP primary key fingerprint (PGP/MIME)."""
    chain: tuple[x509.Certificate, ...] = ()
    signing_time: dt.datetime | None = None
    digest_algorithm: str | None = None
    signature_algorithm: str | None = None
    capabilities: Capabilities | None = None
    """What the signer announced it can decrypt (SMIMECapabilities)."""
    data: bytes | None = None
    """The message with the signature layer removed (headers restored when protected)."""
    protected_headers: tuple[str, ...] = ()

    @property
    def verified(self) -> bool:
        return self.status is SignatureStatus.VERIFIED

    @property
    def message(self) -> EmailMessage | None:
        return wire.parse(self.data) if self.data is not None else None

    def raise_for_status(self) -> VerifyResult:
        """Return ``self`` if verified, else raise the typed error that explains why."""
        if self.verified:
            return self
        if self.error is not None:
            raise self.error
        raise NotSignedError(self.reason)


@dataclasses.dataclass(frozen=True)
class ReadResult:
    """Every protection layer of an inbound message, opened; ``data`` is the innermost
    message with its protected headers restored."""

    data: bytes
    layers: tuple[DecryptResult | VerifyResult, ...] = ()
    """Outermost first, in the order they were opened."""

    @property
    def message(self) -> EmailMessage:
        return wire.parse(self.data)

    @property
    def decryptions(self) -> tuple[DecryptResult, ...]:
        return tuple(layer for layer in self.layers if isinstance(layer, DecryptResult))

    @property
    def signatures(self) -> tuple[VerifyResult, ...]:
        return tuple(layer for layer in self.layers if isinstance(layer, VerifyResult))

    @property
    def encrypted(self) -> bool:
        return bool(self.decryptions)

    @property
    def verified(self) -> bool:
        """There is at least one signature layer, and every one of them verified."""
        return bool(self.signatures) and all(s.verified for s in self.signatures)

    @property
    def authenticated(self) -> bool:
        """The content cannot have been altered unnoticed: every signature verified, or
        every encryption layer was an AEAD whose tag verified."""
        if self.verified:
            return True
        return bool(self.decryptions) and all(d.authenticated for d in self.decryptions)
