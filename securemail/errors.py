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
    "ArchiveEntryError",
    "ArchiveError",
    "AuditEventError",
    "AuditLogError",
    "AuditTamperedError",
    "AuditTornTailError",
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
    "EncryptionRequiredError",
    "HeaderInjectionError",
    "IndexKeyError",
    "InputError",
    "IntegrityError",
    "KeyDirectoryError",
    "KeyLoadError",
    "MalformedASN1Error",
    "MalformedMessageError",
    "MessageTooLargeError",
    "MissingHeaderError",
    "NoPasswordRecipientError",
    "NoSecretKeyError",
    "NotARecipientError",
    "NotSignedError",
    "OutboxError",
    "PartialSignatureError",
    "PasswordIterationsError",
    "PolicyError",
    "PolicyFileError",
    "PolicyRequirementError",
    "ProtectionRequiredError",
    "RecipientError",
    "RecipientUnreachableError",
    "RuleBlockedError",
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
    "WKDError",
    "WeakKeyError",
    "WrongMessagePasswordError",
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


# --- the archive (securemail.governance.archive) ---------------------------------------------


class ArchiveError(SecureMailError):
    """The archive cannot be used: its database cannot be created, opened, read or written, it
    is not an archive (or one of another format), or it encrypts to another certificate than
    the one expected. ``path`` is the database; ``reason`` says what went wrong (never message
    content, addresses or key material)."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"archive {path}: {reason}")


class ArchiveEntryError(ArchiveError, LookupError):
    """``key`` (an archive id or a Message-ID) names no archived message (``count`` 0: never
    stored, deleted or purged), or several (``count`` > 1: the same Message-ID was archived
    more than once; use an archive id from ``find()``)."""

    def __init__(self, path: str, key: str, count: int) -> None:
        self.key = key
        self.count = count
        if count == 0:
            reason = f"no archived message {key!r}"
        else:
            reason = f"{count} archived messages carry {key!r}; name one by its archive id"
        super().__init__(path, reason)


class IndexKeyError(ArchiveError):
    """The archive's address index needs its index key and none was given, or the key given
    is not this archive's. Open the archive with ``index_key=`` (writers) or ``identity=``
    (holders of the archive key)."""


# --- the key directory (securemail.governance.directory) -------------------------------------


class KeyDirectoryError(SecureMailError):
    """The key directory's storage cannot be used: it cannot be opened, read or written, it is
    not a key directory, or one written by another securemail version. ``path`` is the
    database; ``reason`` says what went wrong."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"key directory {path}: {reason}")


class RecipientUnreachableError(RecipientError):
    """The key directory holds no usable key for ``recipient`` (in ``format``, ``"smime"`` or
    ``"pgp"``, when one was asked for). ``reasons`` are the rejected candidates
    (:class:`~securemail.governance.directory.Rejection`: which key, and why it is refused);
    empty when there is no candidate at all."""

    def __init__(
        self, recipient: str, reasons: tuple[object, ...], format: str | None = None
    ) -> None:
        self.reasons = reasons
        self.format = format
        kind = {"smime": "S/MIME certificate", "pgp": "OpenPGP key"}.get(format or "", "key")
        if reasons:
            why = f"no usable {kind} in the key directory: " + "; ".join(map(str, reasons))
        else:
            why = (
                f"the key directory holds no {kind} for this address; import one "
                "(securemail keys import) or harvest it from a verified signed message"
            )
        super().__init__(recipient, why)


class WKDError(SecureMailError):
    """An OpenPGP Web Key Directory lookup failed (a missing key is an answer, not this
    error). ``kind`` is ``"certificate"`` (the server's TLS certificate failed verification),
    ``"network"``, ``"http"`` (a status other than 200 or 404) or ``"too-large"``; ``url`` is
    what was asked; ``detail`` the reason given."""

    def __init__(self, address: str, url: str, kind: str, detail: str) -> None:
        self.address = address
        self.url = url
        self.kind = kind
        self.detail = detail
        super().__init__(f"WKD lookup of {address} at {url} failed ({kind}): {detail}")


# --- password recipients (securemail.smime.enveloped, RFC 3211) ------------------------------


class WrongMessagePasswordError(DecryptionError):
    """The password opens none of the message's password recipient infos: RFC 3211's check
    bytes did not match. Unlike other decryption failures this is told apart from damaged
    content, because the format makes it so (a damaged encrypted key looks the same). The
    password is never part of the message."""

    def __init__(self) -> None:
        super().__init__(
            "wrong password: it opens none of the message's password recipients "
            "(or their encrypted key was damaged)"
        )


class NoPasswordRecipientError(NotARecipientError):
    """A password was given but the message has no password recipient info: it can only be
    opened with a certificate's private key."""

    def __init__(self) -> None:
        self.certificate = "(password)"
        DecryptionError.__init__(
            self,
            "the message is not encrypted to a password (it has no password recipient); "
            "decrypt it with the private key of a recipient certificate",
        )


class PasswordIterationsError(DecryptionError):
    """The message's PBKDF2 iteration count (``iterations``; for several password
    recipients, their sum) is outside what the policy accepts: below ``minimum`` the
    password is too cheap to guess, above ``maximum`` deriving the key would be a denial of
    service. Change ``Policy.min_pbkdf2_iterations`` / ``max_pbkdf2_iterations`` to accept
    it."""

    def __init__(self, iterations: int, minimum: int, maximum: int) -> None:
        self.iterations = iterations
        self.minimum = minimum
        self.maximum = maximum
        if iterations < minimum:
            why = f"fewer than the policy's minimum of {minimum} (Policy.min_pbkdf2_iterations)"
        else:
            why = f"more than the policy's maximum of {maximum} (Policy.max_pbkdf2_iterations)"
        super().__init__(
            f"refusing a password recipient with {iterations} PBKDF2 iterations: {why}"
        )


# --- the audit log (securemail.governance.audit) ---------------------------------------------


class AuditEventError(InputError):
    """An audit event was refused before anything was written: ``field`` is not allowed for
    events of ``kind``, is missing, or its value is not what the field holds (an address, a
    fingerprint, a short code). ``reason`` says which; the value itself is never echoed, as
    it may be exactly the message content the log must not hold."""

    def __init__(self, kind: str, field: str, reason: str) -> None:
        self.kind = kind
        self.field = field
        self.reason = reason
        super().__init__(f"audit event {kind!r}: field {field!r} {reason}")


class AuditLogError(SecureMailError):
    """The audit log cannot be used: it cannot be opened, read or written, or it is not a
    securemail audit log. ``path`` is the log file; ``reason`` says what went wrong."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"audit log {path}: {reason}")


class AuditTamperedError(AuditLogError):
    """Verification found the hash chain broken. ``line`` is the first bad line (1-based;
    ``None`` for ``"head-mismatch"``, which no single line shows); ``kind`` is ``"edited"``,
    ``"deleted"``, ``"reordered"``, ``"inserted"``, ``"head-removed"`` or ``"head-mismatch"``
    (the anchored head hash is in no line: the tail was truncated or rewritten)."""

    def __init__(self, path: str, line: int | None, kind: str, detail: str = "") -> None:
        self.line = line
        self.kind = kind
        self.detail = detail
        where = f"line {line}: " if line is not None else ""
        explanation = _AUDIT_KINDS.get(kind, kind)
        suffix = f" ({detail})" if detail else ""
        super().__init__(path, f"{where}{kind}: {explanation}{suffix}")


_AUDIT_KINDS = {
    "edited": "the line was changed after it was written (or is not a valid record)",
    "deleted": "events are missing before this line",
    "reordered": "the line is out of order",
    "inserted": "the line was not written by the log (the chain skips it)",
    "head-removed": "the first line is not the log's genesis record",
    "head-mismatch": "the expected head hash is in no line: the log was truncated or "
    "rewritten after that head was recorded",
}


class AuditTornTailError(AuditLogError):
    """The last line (``line``, 1-based) is incomplete: an append was interrupted by a crash.
    Everything before it verified; this is not by itself evidence of tampering, and the next
    append repairs it (and records that it did)."""

    def __init__(self, path: str, line: int) -> None:
        self.line = line
        super().__init__(
            path,
            f"line {line}: torn-tail: the last line is incomplete (an append was interrupted); "
            "the lines before it are intact and the next append repairs it",
        )


# --- policy rules (securemail.governance.rules) ----------------------------------------------


class PolicyFileError(InputError):
    """A policy file (TOML rules) is malformed: a TOML syntax error, an unknown or misspelt
    key, a value of the wrong type, a regular expression that does not compile, an unknown
    detector. ``path`` names the file (or the ``source`` given for a string), ``line`` the
    line of the offending key (``None`` when it cannot be told), ``field`` its path such as
    ``rules[2].match.domains`` (empty for a syntax error on no key), ``reason`` what is
    wrong. Values are not echoed."""

    def __init__(self, path: str, line: int | None, field: str, reason: str) -> None:
        self.path = path
        self.line = line
        self.field = field
        self.reason = reason
        where = f"policy {path}" + (f", line {line}" if line is not None else "")
        what = f"{field}: " if field else ""
        super().__init__(f"{where}: {what}{reason}")


class RuleBlockedError(PolicyError):
    """A policy rule blocks this message (``Decision.raise_if_blocked()``). ``rule`` is the
    rule's name and ``reason`` the reason its author wrote; nothing of the message is
    quoted."""

    def __init__(self, rule: str, reason: str) -> None:
        self.rule = rule
        self.reason = reason
        super().__init__(f"blocked by policy rule {rule!r}: {reason}")


# --- the governed send (securemail.governance.gateway) ---------------------------------------


class EncryptionRequiredError(PolicyError):
    """The rules require encryption and some recipients cannot be reached: nothing was sent
    (``on_unreachable = "refuse"``, or nobody was reachable). ``unreachable`` holds one
    :class:`RecipientUnreachableError` per recipient, each naming the address and why;
    ``rules`` are the rules that matched."""

    def __init__(self, unreachable: tuple[RecipientUnreachableError, ...], rules: tuple[str, ...]):
        self.unreachable = unreachable
        self.rules = rules
        self.recipients = tuple(e.recipient for e in unreachable)
        by = f" (rule {', '.join(repr(r) for r in rules)})" if rules else ""
        super().__init__(
            f"the rules require encryption{by}; not sent, as "
            + "; ".join(str(e) for e in unreachable)
        )


class PolicyRequirementError(PolicyError):
    """The rules require something the call did not provide: a TLS level the transport is
    not configured for, a signature without a signer, password encryption without a password
    callback. ``requirement`` is ``"min_tls"``, ``"sign"`` or ``"password"``."""

    def __init__(self, requirement: str, reason: str) -> None:
        self.requirement = requirement
        self.reason = reason
        super().__init__(f"not sent: {reason}")
