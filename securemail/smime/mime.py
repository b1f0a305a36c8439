"""S/MIME messages (RFC 8551): multipart/signed, application/pkcs7-mime, and reading them.

This module joins the pieces: :mod:`securemail.payload` decides what is protected, the CMS
modules do the cryptography, :mod:`securemail.wire` makes and splits the bytes, and
:mod:`securemail.smime.validation` decides whom to trust.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa, x25519

from .. import payload, wire
from ..errors import (
    CertificateError,
    DecryptionError,
    EmbeddedCiphertextError,
    InputError,
    MalformedMessageError,
    NotARecipientError,
    NotSignedError,
    PartialSignatureError,
    RecipientError,
    SecureMailError,
    SignatureInvalidError,
    SignerMismatch,
    UnsupportedAlgorithmError,
)
from ..keys import Identity, Recipient
from ..policy import DEFAULT, ContentCipher, KeyTransport, Policy, SignatureMode
from ..results import (
    DecryptResult,
    ProtectedMessage,
    ReadResult,
    SignatureStatus,
    VerifyResult,
)
from . import enveloped, signed
from .capabilities import ANNOUNCED
from .password import PasswordRecipient
from .validation import KeyPurpose, email_addresses, matches_email, validate_path

__all__ = ["choose_algorithms", "decrypt", "encrypt", "read", "sign", "verify"]

MessageInput = payload.MessageInput
_PKCS7_MIME = ("application/pkcs7-mime", "application/x-pkcs7-mime")
_PKCS7_SIGNATURE = ("application/pkcs7-signature", "application/x-pkcs7-signature")
_CRLF = wire.CRLF


# --- signing ----------------------------------------------------------------------------------


def _sign_entity(
    entity: bytes, signer: signed.Signer, policy: Policy, signing_time: dt.datetime | None
) -> tuple[list[tuple[str, str]], bytes]:
    """Content fields and body of the signed entity that wraps ``entity``."""
    options = {
        "digest": policy.digest,
        "rsa_padding": policy.rsa_padding,
        "include_chain": policy.include_chain,
        "capabilities": ANNOUNCED,
        "signing_time": signing_time,
    }
    if policy.signature_mode is SignatureMode.OPAQUE:
        der = signed.sign_content(entity, signer, detached=False, **options)  # type: ignore[arg-type]
        return _pkcs7_mime_fields("signed-data"), wire.base64_body(der)
    der = signed.sign_content(entity, signer, detached=True, **options)  # type: ignore[arg-type]
    micalg = signed.signing_digest(signer.certificate, policy.digest).micalg
    signature_part = (
        b'Content-Type: application/pkcs7-signature; name="smime.p7s"\r\n'
        b"Content-Transfer-Encoding: base64\r\n"
        b'Content-Disposition: attachment; filename="smime.p7s"\r\n'
        b"Content-Description: S/MIME Cryptographic Signature\r\n\r\n" + wire.base64_body(der)
    )
    boundary, body = wire.multipart_body(
        b"This is a cryptographically signed message in MIME format.\r\n",
        [entity, signature_part],
    )
    content_type = (
        f'multipart/signed; protocol="application/pkcs7-signature"; micalg={micalg}; '
        f'boundary="{boundary}"'
    )
    return [("Content-Type", content_type)], body


def _pkcs7_mime_fields(smime_type: str) -> list[tuple[str, str]]:
    return [
        ("Content-Type", f'application/pkcs7-mime; smime-type={smime_type}; name="smime.p7m"'),
        ("Content-Transfer-Encoding", "base64"),
        ("Content-Disposition", 'attachment; filename="smime.p7m"'),
    ]


def sign(
    message: MessageInput,
    signer: signed.Signer,
    *,
    policy: Policy = DEFAULT,
    signing_time: dt.datetime | None = None,
) -> ProtectedMessage:
    """Sign ``message``: multipart/signed by default, opaque signed-data on request.

    The signed part is canonicalized (CRLF, 7-bit transfer encodings) and then emitted
    byte for byte as it was signed.
    """
    prepared = payload.prepare(message, policy, encrypting=False)
    fields, body = _sign_entity(prepared.entity, signer, policy, signing_time)
    data = payload.assemble(prepared, fields, body)
    return ProtectedMessage(data, prepared.mail_from, prepared.recipients)


# --- encryption -------------------------------------------------------------------------------


def _can_receive(certificate: x509.Certificate) -> bool:
    receiving = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | x25519.X25519PublicKey
    if not isinstance(certificate.public_key(), receiving):
        return False
    try:
        usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return True
    return bool(usage.key_encipherment or usage.key_agreement)


def _check_recipient(
    recipient: Recipient,
    trust: Sequence[x509.Certificate] | None,
    intermediates: Sequence[x509.Certificate],
    at: dt.datetime,
) -> None:
    certificate = recipient.certificate
    if trust is not None:
        try:
            validate_path(
                certificate,
                trust_anchors=trust,
                intermediates=intermediates,
                at=at,
                purpose=KeyPurpose.ENCRYPT,
            )
        except CertificateError as exc:
            raise RecipientError(recipient.name, exc.reason) from None
        return
    if at > certificate.not_valid_after_utc:
        raise RecipientError(recipient.name, "its certificate has expired")
    if at < certificate.not_valid_before_utc:
        raise RecipientError(recipient.name, "its certificate is not valid yet")
    try:
        usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return
    if not (usage.key_encipherment or usage.key_agreement):
        raise RecipientError(
            recipient.name, "its certificate's key usage does not allow encryption"
        )


def choose_algorithms(
    recipients: Sequence[Recipient], policy: Policy
) -> tuple[ContentCipher, list[enveloped.EnvelopeRecipient]]:
    """The default profile: AES-256-GCM only if every recipient is known to read
    AuthEnvelopedData, else AES-256-CBC; RSA-OAEP per recipient known to read it."""
    cipher = policy.content_cipher
    if cipher is None:
        modern = all(
            r.capabilities is not None and r.capabilities.reads_authenveloped for r in recipients
        )
        cipher = ContentCipher.AES_256_GCM if modern else ContentCipher.AES_256_CBC
    chosen = []
    for r in recipients:
        transport = policy.key_transport
        if transport is None:
            oaep = r.capabilities is not None and r.capabilities.reads_oaep
            transport = KeyTransport.RSA_OAEP if oaep else KeyTransport.RSA_PKCS1V15
        chosen.append(enveloped.EnvelopeRecipient(r.certificate, transport))
    return cipher, chosen


AnyRecipient = Recipient | Identity | x509.Certificate | PasswordRecipient
"""What :func:`encrypt` accepts as a recipient: a certificate (in one of its forms) or a
password."""


def _as_recipient(value: Recipient | Identity | x509.Certificate) -> Recipient:
    if isinstance(value, Recipient):
        return value
    if isinstance(value, Identity):
        return Recipient.from_certificate(value.certificate)
    if isinstance(value, x509.Certificate):
        return Recipient.from_certificate(value)
    raise InputError(
        "a recipient must be a Recipient, a certificate or a PasswordRecipient, "
        f"not {type(value).__name__}"
    )


def _check_password(recipient: PasswordRecipient, policy: Policy) -> None:
    """Refuse an iteration count the policy would refuse when reading: the message could
    be opened by nobody using the same policy, or too cheaply guessed."""
    low, high = policy.min_pbkdf2_iterations, policy.max_pbkdf2_iterations
    if not low <= recipient.iterations <= high:
        raise RecipientError(
            recipient.name,
            f"{recipient.iterations} PBKDF2 iterations are outside the policy's "
            f"{low} to {high} (Policy.min_pbkdf2_iterations / max_pbkdf2_iterations)",
        )


def plan_recipients(
    recipients: Sequence[AnyRecipient],
    *,
    signer: Identity | None,
    policy: Policy,
    trust: Sequence[x509.Certificate] | None,
    certificates: Sequence[x509.Certificate],
) -> tuple[ContentCipher, list[enveloped.EnvelopeRecipient | PasswordRecipient]]:
    """Check every recipient (fail-closed, naming the one that fails) and choose the
    cipher and each key transport: what :func:`encrypt` and the streaming encryptor share.

    Password recipients, like certificates whose owner announced nothing, are not known to
    read AES-GCM: with one among the recipients the default profile chooses AES-256-CBC
    (OpenSSL 1.1.1 reads password recipients but not AuthEnvelopedData)."""
    passwords = [r for r in recipients if isinstance(r, PasswordRecipient)]
    for secret in passwords:
        _check_password(secret, policy)
    wanted = [_as_recipient(r) for r in recipients if not isinstance(r, PasswordRecipient)]
    if not wanted and not passwords:
        raise RecipientError("(none)", "at least one recipient is required")
    if signer is not None and policy.encrypt_to_self and _can_receive(signer.certificate):
        # A signing-only certificate (Ed25519, or key usage without encipherment) cannot
        # receive; the sender then keeps no readable copy, rather than failing to send.
        wanted.append(Recipient(signer.certificate, capabilities=ANNOUNCED))
    unique: dict[bytes, Recipient] = {}
    for r in wanted:
        unique.setdefault(r.certificate.fingerprint(hashes.SHA256()), r)
    now = dt.datetime.now(dt.UTC)
    for r in unique.values():
        _check_recipient(r, trust, certificates, now)
    cipher, chosen = choose_algorithms(list(unique.values()), policy)
    if passwords and policy.content_cipher is None:
        cipher = ContentCipher.AES_256_CBC
    return cipher, [*chosen, *passwords]


def pkcs7_mime_fields(cipher: ContentCipher) -> list[tuple[str, str]]:
    """The Content-* fields of an encrypted S/MIME message."""
    return _pkcs7_mime_fields("authEnveloped-data" if cipher.authenticated else "enveloped-data")


def encrypt(
    message: MessageInput,
    recipients: Sequence[AnyRecipient],
    *,
    signer: Identity | None = None,
    policy: Policy = DEFAULT,
    trust: Sequence[x509.Certificate] | None = None,
    certificates: Sequence[x509.Certificate] = (),
) -> ProtectedMessage:
    """Encrypt ``message`` to every recipient (and to the signer, if any), signing first
    when a signer is given.

    Fail-closed: if any recipient cannot be encrypted to (expired certificate, wrong key
    usage, untrusted when ``trust`` is given, unsupported key), nothing is produced and the
    :class:`RecipientError` names that recipient.

    A :class:`~securemail.smime.password.PasswordRecipient` among ``recipients`` lets the
    message be opened with that password as well (RFC 3211); it may be the only recipient.
    """
    cipher, envelope_recipients = plan_recipients(
        recipients, signer=signer, policy=policy, trust=trust, certificates=certificates
    )
    prepared = payload.prepare(message, policy, encrypting=True)
    entity = prepared.entity
    if signer is not None:
        fields, body = _sign_entity(entity, signer, policy, None)
        entity = b"".join(wire.fold_field(n, v) for n, v in fields) + _CRLF + body
    der = enveloped.encrypt_envelope(entity, envelope_recipients, cipher)
    data = payload.assemble(prepared, pkcs7_mime_fields(cipher), wire.base64_body(der))
    return ProtectedMessage(data, prepared.mail_from, prepared.recipients)


# --- reading ------------------------------------------------------------------------------------


def _is_enveloped(entity: wire.Entity) -> bool:
    if entity.content_type not in _PKCS7_MIME:
        return False
    return entity.params.get("smime-type", "enveloped-data") in (
        "enveloped-data",
        "authenveloped-data",
    )


def decrypt(
    message: MessageInput,
    identity: Identity | None = None,
    *,
    password: str | bytes | None = None,
    policy: Policy = DEFAULT,
) -> DecryptResult:
    """Decrypt an S/MIME message whose whole body is EnvelopedData or AuthEnvelopedData.

    Protected headers inside are restored. An encrypted part embedded among other parts is
    refused (EFAIL). CBC content is returned flagged ``authenticated=False`` unless the
    policy requires authenticated encryption, in which case it is refused.

    Give an ``identity``, a ``password`` (for a message encrypted to a password, RFC 3211),
    or both: the identity's certificate is used when the message is encrypted to it, the
    password otherwise. A wrong password raises
    :class:`~securemail.errors.WrongMessagePasswordError`.
    """
    if identity is None and password is None:
        raise InputError("decrypt needs an identity, a password, or both")
    data = payload.message_bytes(message, policy)
    outer = wire.entity(data)
    if not _is_enveloped(outer):
        if any(_is_enveloped(e) for e in wire.walk(outer)):
            raise EmbeddedCiphertextError()
        if outer.content_type in _PKCS7_MIME:
            raise MalformedMessageError(
                f"the message is S/MIME {outer.params.get('smime-type')}, not encrypted"
            )
        raise MalformedMessageError("the message is not S/MIME encrypted")
    der = wire.decode_body(outer)
    opened = _open_envelope(der, identity, password, policy)
    # Content that is not a MIME entity is read as text (RFC 4134 5.3 does this), so no
    # error here can tell an attacker anything about malleated CBC plaintext.
    inner = wire.entity(wire.canonical_plaintext(opened.content))
    restored = payload.restore(outer.raw, inner.raw)
    name = PasswordRecipient.name
    if identity is not None and opened.recipient_certificate is not None:
        name = identity.name
    return DecryptResult(
        data=restored.data,
        authenticated=opened.authenticated,
        content_cipher=opened.content_cipher,
        recipient=name,
        protected_headers=restored.protected_headers,
        signed=_is_signed(inner),
    )


def _open_envelope(
    der: bytes, identity: Identity | None, password: str | bytes | None, policy: Policy
) -> enveloped.OpenedEnvelope:
    """With the identity's certificate if the message names it, else with the password."""
    strict = policy.require_authenticated_encryption
    if identity is not None:
        try:
            return enveloped.decrypt_envelope(
                der,
                identity.private_key,
                identity.certificate,
                require_authenticated=strict,
                max_size=policy.max_message_size,
            )
        except NotARecipientError:
            if password is None:
                raise
    assert password is not None
    return enveloped.decrypt_envelope_with_password(
        der,
        password,
        require_authenticated=strict,
        max_size=policy.max_message_size,
        min_iterations=policy.min_pbkdf2_iterations,
        max_iterations=policy.max_pbkdf2_iterations,
    )


def _is_signed(entity: wire.Entity) -> bool:
    if entity.content_type == "multipart/signed":
        return entity.params.get("protocol", "") in _PKCS7_SIGNATURE
    return entity.content_type in _PKCS7_MIME and entity.params.get("smime-type") == "signed-data"


def _signed_layer(entity: wire.Entity) -> tuple[bytes | None, bytes]:
    """(detached content or None, SignedData DER) of a signed entity."""
    if entity.content_type == "multipart/signed":
        boundary = entity.params.get("boundary")
        if not boundary:
            raise MalformedMessageError("multipart/signed without a boundary")
        parts = wire.split_multipart(entity.raw.body, boundary)
        if len(parts.parts) != 2:
            raise MalformedMessageError("multipart/signed must have exactly two parts")
        signature = wire.entity(parts.parts[1])
        if signature.content_type not in _PKCS7_SIGNATURE:
            raise MalformedMessageError("the second part of multipart/signed is not a signature")
        return parts.parts[0], wire.decode_body(signature)
    return None, wire.decode_body(entity)


def verify(
    message: MessageInput,
    *,
    trust: Sequence[x509.Certificate],
    policy: Policy = DEFAULT,
    at: dt.datetime | None = None,
    certificates: Sequence[x509.Certificate] = (),
    crls: Sequence[x509.CertificateRevocationList] = (),
) -> VerifyResult:
    """Verify an S/MIME signed message against the caller's trust anchors.

    VERIFIED needs all of: every signature value correct, a chain from the signer to one of
    ``trust`` valid at ``at`` (default now) for email signing, the signer's certificate
    carrying the From address, and the signature covering the whole message. A valid
    signature on one part of a larger message is PARTIAL, never VERIFIED. Malformed
    structures raise; everything else is reported in the result (``raise_for_status()``
    turns it into the typed error).
    """
    data = payload.message_bytes(message, policy)
    outer = wire.entity(data)
    context = _VerifyContext(trust, certificates, crls, at, policy)
    if _is_signed(outer):
        return _verify_entity(outer, outer, context, whole=True)
    if outer.content_type == "multipart/signed":
        # Another signature protocol (PGP/MIME): not checked here, but the signed content
        # is handed back so that the layers below it can still be read.
        error = NotSignedError(
            f"signed with {outer.params.get('protocol') or 'an unknown protocol'}, not S/MIME"
        )
        boundary = outer.params.get("boundary")
        parts = wire.split_multipart(outer.raw.body, boundary or "").parts
        if not parts:
            raise MalformedMessageError("multipart/signed without parts")
        content = payload.restore(outer.raw, wire.split_entity(parts[0]))
        return VerifyResult(
            status=SignatureStatus.NOT_CHECKED, reason=str(error), error=error, data=content.data
        )
    for inner in wire.walk(outer):
        if _is_signed(inner):
            return _verify_entity(outer, inner, context, whole=False)
    error = NotSignedError("the message is not S/MIME signed")
    return VerifyResult(status=SignatureStatus.NOT_CHECKED, reason=str(error), error=error)


@dataclasses.dataclass(frozen=True)
class _VerifyContext:
    """What the caller trusts and knows: anchors, extra certificates and CRLs, the time."""

    trust: Sequence[x509.Certificate]
    certificates: Sequence[x509.Certificate]
    crls: Sequence[x509.CertificateRevocationList]
    at: dt.datetime | None
    policy: Policy


def _verify_entity(
    outer: wire.Entity, entity: wire.Entity, context: _VerifyContext, *, whole: bool
) -> VerifyResult:
    policy = context.policy
    detached, der = _signed_layer(entity)
    parsed = signed.load_signed_data(der)
    try:
        content, checked = signed.check_signed_data(
            parsed,
            detached_content=detached,
            extra_certificates=context.certificates,
            allow_weak=policy.allow_weak_algorithms,
        )
    except SignatureInvalidError as exc:
        return VerifyResult(status=SignatureStatus.FAILED, reason=str(exc), error=exc)
    good = [c for c in checked if c.error is None]
    first = good[0] if good else checked[0]
    restored = payload.restore(outer.raw, wire.split_entity(wire.canonical_plaintext(content)))
    result = VerifyResult(
        status=SignatureStatus.FAILED,
        reason="",
        certificate=first.certificate,
        signer=_signer_name(first.certificate),
        signing_time=first.signing_time,
        digest_algorithm=first.digest_algorithm,
        signature_algorithm=first.signature_algorithm,
        capabilities=first.capabilities,
        data=restored.data,
        protected_headers=restored.protected_headers,
    )

    def outcome(status: SignatureStatus, error: SecureMailError | None) -> VerifyResult:
        reason = str(error) if error is not None else "signature verified"
        return dataclasses.replace(result, status=status, reason=reason, error=error)

    bad = [c.error for c in checked if isinstance(c.error, SignatureInvalidError)]
    if bad or not good:
        error = bad[0] if bad else checked[0].error
        assert error is not None
        unsupported = isinstance(error, UnsupportedAlgorithmError)
        return outcome(
            SignatureStatus.NOT_CHECKED if unsupported else SignatureStatus.FAILED, error
        )
    assert first.certificate is not None
    try:
        path = validate_path(
            first.certificate,
            trust_anchors=context.trust,
            intermediates=[*parsed.certificates, *context.certificates],
            at=context.at,
            purpose=KeyPurpose.SIGN,
            allow_weak=policy.allow_weak_algorithms,
            crls=[*parsed.crls, *context.crls],
            revocation=policy.revocation,
        )
    except CertificateError as exc:
        return outcome(SignatureStatus.FAILED, exc)
    result = dataclasses.replace(result, chain=path.certificates)
    sender = payload.from_address(restored.data)
    if policy.require_signer_matches_from and (
        sender is None or not matches_email(first.certificate, sender)
    ):
        return outcome(
            SignatureStatus.FAILED,
            SignerMismatch(result.signer or "?", sender or "(no single From address)"),
        )
    if not whole:
        return outcome(
            SignatureStatus.PARTIAL,
            PartialSignatureError(
                "a valid signature covers only one part of the message; the rest is unsigned"
            ),
        )
    return outcome(SignatureStatus.VERIFIED, None)


MAX_LAYERS = 8


def read(
    message: MessageInput,
    *,
    identity: Identity | None = None,
    password: str | bytes | None = None,
    trust: Sequence[x509.Certificate] = (),
    policy: Policy = DEFAULT,
    at: dt.datetime | None = None,
    certificates: Sequence[x509.Certificate] = (),
    crls: Sequence[x509.CertificateRevocationList] = (),
) -> ReadResult:
    """Open every S/MIME layer of an inbound message, outermost first.

    Signed-then-encrypted, encrypted-then-signed and repeated signatures are all unwrapped:
    each encrypted layer is decrypted with ``identity`` (or ``password``, see
    :func:`decrypt`), each signed layer verified against
    ``trust``. The result keeps every layer's outcome; ``ReadResult.verified`` is true only
    if at least one signature was verified and none failed.
    """
    data = payload.message_bytes(message, policy)
    layers: list[DecryptResult | VerifyResult] = []
    for _ in range(MAX_LAYERS):
        entity = wire.entity(data)
        if _is_enveloped(entity):
            if identity is None and password is None:
                raise DecryptionError(
                    "the message is encrypted; an identity or a password is needed to read it"
                )
            decrypted = decrypt(data, identity, password=password, policy=policy)
            layers.append(decrypted)
            data = decrypted.data
        elif entity.content_type == "multipart/signed" or _is_signed(entity):
            checked = verify(
                data, trust=trust, policy=policy, at=at, certificates=certificates, crls=crls
            )
            layers.append(checked)
            if checked.data is None:
                break
            data = checked.data
        else:
            # Not a whole-message layer: report a signature on one part (PARTIAL) or a
            # signature we cannot check (PGP/MIME), and never decrypt an embedded part.
            if any(_is_enveloped(e) for e in wire.walk(entity)):
                raise EmbeddedCiphertextError()
            checked = verify(
                data, trust=trust, policy=policy, at=at, certificates=certificates, crls=crls
            )
            if checked.status is not SignatureStatus.NOT_CHECKED:
                layers.append(checked)
            break
    else:
        raise MalformedMessageError(f"more than {MAX_LAYERS} nested S/MIME layers")
    return ReadResult(data=data, layers=tuple(layers))


def _signer_name(certificate: x509.Certificate | None) -> str | None:
    if certificate is None:
        return None
    emails = email_addresses(certificate)
    return emails[0] if emails else certificate.subject.rfc4514_string()
