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
    "BccHeaderError",
    "CertificateError",
    "CertificateExpiredError",
    "CertificateNotYetValidError",
    "CertificateRevokedError",
    "CertificateUsageError",
    "DNSLookupError",
    "DecryptionError",
    "DeliveryError",
    "EightBitUnsupportedError",
    "EmbeddedCiphertextError",
    "EncryptionError",
    "HeaderInjectionError",
    "InputError",
    "IntegrityError",
    "KeyLoadError",
    "MalformedASN1Error",
    "MalformedMessageError",
    "MessageTooLargeError",
    "MissingHeaderError",
    "NoSecretKeyError",
    "NotARecipientError",
    "NotSignedError",
    "OutboxError",
    "PartialSignatureError",
    "PolicyError",
    "ProtectionRequiredError",
    "RecipientError",
    "SMTPAuthError",
    "SMTPConnectionError",
    "SMTPTimeoutError",
    "SecureMailError",
    "SignatureError",
    "SignatureInvalidError",
    "SignerMismatch",
    "SigningKeyError",
    "SizeLimitExceeded",
    "TLSError",
    "TLSRequiredError",
    "ToolError",
    "ToolNotFoundError",
    "TransportConfigError",
    "TransportError",
    "UnauthenticatedContentError",
    "UnknownMessageError",
    "UnsupportedAlgorithmError",
    "UntrustedCertificateError",
    "WeakKeyError",
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


# --- DKIM and DNS (securemail.transport) -----------------------------------------------------


class WeakKeyError(KeyLoadError):
    """A key is too short for its use (RSA-1024 for DKIM, RFC 8301). ``bits`` is its size,
    ``minimum`` the smallest size accepted."""

    def __init__(self, source: str, bits: int, minimum: int, use: str) -> None:
        self.bits = bits
        self.minimum = minimum
        self.use = use
        super().__init__(
            source,
            f"a {bits}-bit RSA key is too short for {use}; generate one of at least {minimum} bits",
        )


class MissingHeaderError(MalformedMessageError):
    """A header field the operation needs is absent. ``field`` names it."""

    def __init__(self, field: str, purpose: str) -> None:
        self.field = field
        self.purpose = purpose
        super().__init__(f"the message has no {field} header field, which {purpose} needs")


class DNSLookupError(SecureMailError):
    """A DNS query failed (timeout, SERVFAIL, no reachable server). A name that has no
    record is an answer, not this error. ``name`` is the queried name."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason
        super().__init__(f"DNS lookup of {name} failed: {reason}")


# --- sending (securemail.transport.smtp) -----------------------------------------------------


class TransportConfigError(InputError):
    """An SMTP configuration was refused. ``problems`` lists one line per wrong setting,
    each starting with the setting's name; values are never echoed (one may be a password)."""

    def __init__(self, problems: tuple[str, ...]) -> None:
        self.problems = problems
        super().__init__("invalid SMTP configuration: " + "; ".join(problems))


class BccHeaderError(InputError):
    """The message to send still carries a Bcc (or Resent-Bcc) header field, which every
    recipient would see. Put blind-copy recipients in the envelope instead
    (``MessageBuilder.bcc()`` or ``recipients=``). ``field`` is the header's name."""

    def __init__(self, field: str) -> None:
        self.field = field
        super().__init__(
            f"refusing to send a message with a {field} header field: every recipient would "
            "see it; give blind-copy recipients through MessageBuilder.bcc() or recipients="
        )


class ProtectionRequiredError(PolicyError):
    """The transport requires encrypted messages (``require_protection``) and this one is not
    S/MIME or PGP/MIME encrypted. ``content_type`` is the message's top-level type."""

    def __init__(self, content_type: str, reason: str) -> None:
        self.content_type = content_type
        self.reason = reason
        super().__init__(f"refusing to send a {content_type} message unencrypted: {reason}")


class TransportError(SecureMailError):
    """The message could not be handed to the mail server.

    ``host`` is the server; ``temporary`` is true when trying again later may succeed (a
    network failure, a 4xx reply, a timeout), false when something must change first.
    """

    def __init__(self, host: str, reason: str, *, temporary: bool) -> None:
        self.host = host
        self.reason = reason
        self.temporary = temporary
        super().__init__(f"{host}: {reason}")


class SMTPConnectionError(TransportError):
    """No SMTP session could be set up: the connection failed or was lost before a mail
    transaction began, or the server refused the session. ``code`` and ``reply`` are the
    server's answer when it gave one (``None`` and ``""`` otherwise)."""

    def __init__(
        self,
        host: str,
        reason: str,
        *,
        code: int | None = None,
        reply: str = "",
        temporary: bool = True,
    ) -> None:
        self.code = code
        self.reply = reply
        super().__init__(host, reason, temporary=temporary)


class SMTPTimeoutError(TransportError):
    """``stage`` (``"greeting"``, ``"EHLO"``, ``"RCPT"``, ``"DATA block"``, ``"end of
    DATA"``...) did not complete within its deadline of ``seconds``."""

    def __init__(self, host: str, stage: str, seconds: float) -> None:
        self.stage = stage
        self.seconds = seconds
        super().__init__(host, f"deadline of {seconds:g} s passed during {stage}", temporary=True)


class TLSError(TransportError):
    """TLS could not be set up, or the session showed signs of tampering.

    ``kind`` says which step failed: ``"starttls-not-offered"``, ``"starttls-refused"``,
    ``"certificate"``, ``"handshake"``, ``"data-after-starttls"`` (bytes pipelined after the
    server's go-ahead: the STARTTLS command-injection pattern), or ``"auth-without-tls"``.
    ``detail`` is the server's reply or the TLS library's reason. Nothing of the message, and
    no credentials, have been sent when this is raised.
    """

    def __init__(self, host: str, kind: str, detail: str = "") -> None:
        self.kind = kind
        self.detail = detail
        explanation = _TLS_KINDS.get(kind, kind)
        suffix = f" ({detail})" if detail else ""
        super().__init__(host, f"{explanation}{suffix}", temporary=True)


_TLS_KINDS = {
    "starttls-not-offered": "the server does not offer STARTTLS",
    "starttls-refused": "the server refused STARTTLS",
    "certificate": "the server's certificate failed verification",
    "handshake": "the TLS handshake failed",
    "data-after-starttls": "the server sent data after its STARTTLS go-ahead (possible "
    "command injection); session aborted",
    "auth-without-tls": "refusing to send credentials over an unencrypted connection "
    "(set allow_auth_without_tls=True to permit it)",
}


class TLSRequiredError(TLSError):
    """The configuration requires TLS (``tls`` is ``"required"``, ``"required-verify"`` or
    ``"implicit"``, or credentials are to be sent) and it could not be established. The
    session was closed before MAIL FROM and before AUTH."""


class SMTPAuthError(TransportError):
    """The server refused the credentials, or offers no mechanism securemail can use.
    ``code`` and ``reply`` are the server's answer (``None`` and ``""`` if it never got to
    answer). The password is never part of the message."""

    def __init__(self, host: str, reason: str, *, code: int | None = None, reply: str = "") -> None:
        self.code = code
        self.reply = reply
        temporary = code is not None and 400 <= code < 500
        super().__init__(host, reason, temporary=temporary)


class MessageTooLargeError(TransportError):
    """The message (``size`` bytes) is larger than the server accepts (``limit`` bytes, from
    its SIZE extension). Refused before MAIL FROM."""

    def __init__(self, host: str, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(
            host,
            f"the message has {size} bytes and the server accepts at most {limit}",
            temporary=False,
        )


class EightBitUnsupportedError(TransportError):
    """The message holds 8-bit data and the server does not offer 8BITMIME. Sending it
    anyway would let relays corrupt it (and break its signature): re-encode it with 7-bit
    transfer encodings (``securemail.wire.seven_bit``) instead."""

    def __init__(self, host: str) -> None:
        super().__init__(
            host,
            "the message contains 8-bit data and the server does not offer 8BITMIME; "
            "re-encode it with 7-bit transfer encodings",
            temporary=False,
        )


class DeliveryError(TransportError):
    """Raised by ``SendResult.raise_for_status()``: not every recipient was delivered.
    ``result`` is the full :class:`~securemail.transport.SendResult`."""

    def __init__(self, host: str, result: object, summary: str, *, temporary: bool) -> None:
        self.result = result
        super().__init__(host, summary, temporary=temporary)


# --- the outbox (securemail.transport.outbox) ------------------------------------------------


class OutboxError(SecureMailError):
    """The outbox cannot be used: its database or spool directory cannot be created, opened,
    read or written, it is not an outbox (or one from another securemail version), or a stored
    message is missing. ``path`` is the database file; ``reason`` says what went wrong (never
    message content)."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"outbox {path}: {reason}")


class UnknownMessageError(OutboxError, LookupError):
    """No message with this id is in the outbox: never enqueued, or purged since.
    ``message_id`` is the id asked for."""

    def __init__(self, path: str, message_id: str) -> None:
        self.message_id = message_id
        super().__init__(path, f"no message {message_id!r}")
