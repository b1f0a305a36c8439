"""Every error securemail raises, under one root.

Callers catch :class:`SecureMailError` to handle anything the library refuses, or a subclass to
act on one reason. Each class carries the structured facts a program needs (which recipient,
which header, which file) as attributes, so nobody has to parse messages.

Messages never contain secrets, key material or message content: they name the *thing* that
failed (a recipient address, a header name, a certificate subject, a file path) and what the
user can do about it. Decryption failures deliberately share one message (see
:class:`DecryptionError`).
"""

from __future__ import annotations

__all__ = [
    "AlreadyFinalized",
    "CertificateError",
    "CertificateExpiredError",
    "CertificateNotYetValidError",
    "CertificateRevokedError",
    "CertificateUsageError",
    "DecryptionError",
    "EmbeddedCiphertextError",
    "EncryptionError",
    "HeaderInjectionError",
    "InputError",
    "IntegrityError",
    "KeyLoadError",
    "MalformedASN1Error",
    "MalformedMessageError",
    "NoSecretKeyError",
    "NotARecipientError",
    "NotSignedError",
    "PartialSignatureError",
    "PolicyError",
    "RecipientError",
    "SecureMailError",
    "SignatureError",
    "SignatureInvalidError",
    "SignerMismatch",
    "SigningKeyError",
    "SizeLimitExceeded",
    "ToolError",
    "ToolNotFoundError",
    "UnauthenticatedContentError",
    "UnsupportedAlgorithmError",
    "UntrustedCertificateError",
    "WrongPasswordError",
]


class SecureMailError(Exception):
    """Root of every error raised by securemail."""


# --- bad input -------------------------------------------------------------------------------


class InputError(SecureMailError, ValueError):
    """The caller gave something securemail cannot use as it is."""


class MalformedMessageError(InputError):
    """A MIME message (or part) is structurally broken or is not the kind expected."""


class MalformedASN1Error(InputError):
    """DER/BER data (CMS, certificate, key) could not be parsed.

    ``what`` names the structure that was expected, e.g. ``"CMS ContentInfo"``.
    """

    def __init__(self, what: str, detail: str = "") -> None:
        self.what = what
        self.detail = detail
        suffix = f": {detail}" if detail else ""
        super().__init__(f"malformed {what}{suffix}")


class HeaderInjectionError(InputError):
    """A header name or value contains CR, LF or NUL, or the generated headers differ from
    the intended ones. ``field`` is the header name (never its value)."""

    def __init__(self, field: str, reason: str = "contains CR, LF or NUL") -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"header {field!r} refused: {reason}")


class KeyLoadError(InputError):
    """Key or certificate material could not be loaded. ``source`` names the file or
    ``"<bytes>"``; ``reason`` says what was wrong with it."""

    def __init__(self, source: str, reason: str) -> None:
        self.source = source
        self.reason = reason
        super().__init__(f"cannot load key material from {source}: {reason}")


class WrongPasswordError(KeyLoadError):
    """The password for an encrypted key or PKCS#12 file is wrong (or missing)."""

    def __init__(self, source: str) -> None:
        super().__init__(source, "wrong or missing password")


class UnsupportedAlgorithmError(SecureMailError):
    """An algorithm securemail does not implement (or refuses as too weak)."""

    def __init__(self, algorithm: str, context: str = "") -> None:
        self.algorithm = algorithm
        self.context = context
        where = f" for {context}" if context else ""
        super().__init__(f"unsupported algorithm {algorithm}{where}")


class AlreadyFinalized(SecureMailError):
    """A streaming writer was used after ``finalize()`` (or finalized twice)."""

    def __init__(self, what: str) -> None:
        self.what = what
        super().__init__(f"{what} is already finalized")


class SizeLimitExceeded(SecureMailError):
    """Input or output grew past the configured limit (``limit`` bytes)."""

    def __init__(self, what: str, limit: int) -> None:
        self.what = what
        self.limit = limit
        super().__init__(f"{what} exceeds the configured limit of {limit} bytes")


# --- certificates ----------------------------------------------------------------------------


class CertificateError(SecureMailError):
    """A certificate cannot be used. ``subject`` is its subject (RFC 4514 string)."""

    def __init__(self, subject: str, reason: str) -> None:
        self.subject = subject
        self.reason = reason
        super().__init__(f"certificate {subject!r}: {reason}")


class CertificateExpiredError(CertificateError):
    """The certificate (or one in its chain) expired before the validation time."""


class CertificateNotYetValidError(CertificateError):
    """The certificate (or one in its chain) is not valid yet at the validation time."""


class CertificateRevokedError(CertificateError):
    """The certificate (or one in its chain) is listed on a CRL from its issuer.

    ``revocation_reason`` is the CRL entry's reason code as RFC 5280 spells it
    (``"keyCompromise"``, ``"certificateHold"``, ...; ``"unspecified"`` when the entry gives none).
    """

    def __init__(self, subject: str, reason: str, revocation_reason: str = "unspecified") -> None:
        self.revocation_reason = revocation_reason
        super().__init__(subject, reason)


class UntrustedCertificateError(CertificateError):
    """No chain from the certificate to one of the given trust anchors could be built."""


class CertificateUsageError(CertificateError):
    """Key usage, extended key usage or basic constraints forbid this use."""


# --- encryption ------------------------------------------------------------------------------


class EncryptionError(SecureMailError):
    """The message could not be encrypted; nothing was produced."""


class RecipientError(EncryptionError):
    """A recipient cannot be encrypted to. Fail-closed: the whole message is refused.

    ``recipient`` is the recipient's address (or certificate subject when it has none).
    """

    def __init__(self, recipient: str, reason: str) -> None:
        self.recipient = recipient
        self.reason = reason
        super().__init__(f"cannot encrypt to {recipient}: {reason}")


# --- decryption ------------------------------------------------------------------------------

DECRYPTION_FAILED = "decryption failed: wrong key, or the message was damaged or tampered with"


class DecryptionError(SecureMailError):
    """Decryption failed. Wrong key, bad padding, bad tag and malformed ciphertext all give
    this one message, so that the error reveals nothing an attacker could use as an oracle.
    No plaintext is ever returned with it."""

    def __init__(self, message: str = DECRYPTION_FAILED) -> None:
        super().__init__(message)


class NotARecipientError(DecryptionError):
    """The message is not encrypted to the given certificate (decided from the public
    recipient identifiers alone, before any private-key operation)."""

    def __init__(self, certificate: str) -> None:
        self.certificate = certificate
        super().__init__(f"the message is not encrypted to certificate {certificate!r}")


class IntegrityError(DecryptionError):
    """The ciphertext has no integrity protection, or its integrity check failed."""

    def __init__(self, reason: str = "integrity check failed; no plaintext released") -> None:
        self.reason = reason
        super().__init__(reason)


class UnauthenticatedContentError(DecryptionError):
    """The policy requires authenticated encryption (AES-GCM) but the message used a mode
    without integrity protection (CBC)."""

    def __init__(self, cipher: str) -> None:
        self.cipher = cipher
        super().__init__(
            f"the message uses {cipher}, which has no integrity protection, "
            "and the policy requires authenticated encryption"
        )


class EmbeddedCiphertextError(DecryptionError):
    """An encrypted part sits next to other parts instead of being the whole message body.

    Decrypting it would let an attacker exfiltrate plaintext through the surrounding parts
    (EFAIL direct exfiltration), so it is refused."""

    def __init__(self) -> None:
        super().__init__(
            "refusing to decrypt an encrypted part embedded in a larger message "
            "(only a message whose whole body is encrypted is decrypted)"
        )


# --- signatures ------------------------------------------------------------------------------


class SignatureError(SecureMailError):
    """A signature could not be verified."""


class NotSignedError(SignatureError):
    """The message carries no signature of the expected kind."""


class SignatureInvalidError(SignatureError):
    """The signature does not match the signed content or the signer's key."""


class PartialSignatureError(SignatureError):
    """A valid signature covers only part of the message; the rest is unsigned."""


class SignerMismatch(SignatureError):
    """The signer's certificate or key does not carry the message's From address."""

    def __init__(self, signer: str, sender: str) -> None:
        self.signer = signer
        self.sender = sender
        super().__init__(f"the message is from {sender} but was signed by {signer}")


# --- policy and tools ------------------------------------------------------------------------


class PolicyError(SecureMailError):
    """A configured policy forbids the operation."""


class ToolError(SecureMailError):
    """An external tool (gpg, gpgsm) failed."""


class ToolNotFoundError(ToolError):
    """An external tool is not installed or not on PATH."""

    def __init__(self, tool: str, hint: str) -> None:
        self.tool = tool
        self.hint = hint
        super().__init__(f"{tool} not found: {hint}")


# --- OpenPGP keys (securemail.pgp) -----------------------------------------------------------


class SigningKeyError(KeyLoadError):
    """An OpenPGP key cannot sign: unknown, ambiguous, expired, revoked, without a usable
    signing-capable (sub)key, or without its secret part. ``signer`` is the key as the caller
    selected it (email address or fingerprint); ``reason`` says what is wrong with it."""

    def __init__(self, signer: str, reason: str) -> None:
        self.signer = signer
        self.source = signer
        self.reason = reason
        InputError.__init__(self, f"cannot sign with {signer}: {reason}")


class NoSecretKeyError(NotARecipientError):
    """An OpenPGP message is encrypted only to keys whose secret part is not available.

    ``key_ids`` are the recipients' key IDs as the message lists them: public information,
    shown so that the user can tell which key would open it (``0000000000000000`` stands
    for a hidden recipient)."""

    def __init__(self, key_ids: tuple[str, ...]) -> None:
        self.key_ids = key_ids
        self.certificate = ", ".join(key_ids) or "(none listed)"
        DecryptionError.__init__(
            self,
            f"the message is encrypted to key(s) {self.certificate}, "
            "and the secret key of none of them is available",
        )
