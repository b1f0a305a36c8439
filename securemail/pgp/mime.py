"""PGP/MIME messages (RFC 3156): multipart/signed, multipart/encrypted, and reading them.

The same shape as :mod:`securemail.smime.mime`: :mod:`securemail.payload` decides what is
protected (with RFC 9788 header protection), :mod:`securemail.pgp.gpg` does the OpenPGP
work in a private GnuPG home, and :mod:`securemail.wire` makes and splits the bytes.

Keys come from ``keys=`` (armored or binary key data, or files) imported into a fresh
temporary GnuPG home for the one operation, or from a caller's :class:`GnuPG` engine (for
example over an existing home). A key is trusted because the caller supplied it: there is
no web of trust here, and "verified" means signed by one of the given keys whose user ID
carries the From address.
"""

from __future__ import annotations

import binascii
import contextlib
import dataclasses
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

from .. import payload, wire
from ..errors import (
    EmbeddedCiphertextError,
    MalformedMessageError,
    NotSignedError,
    PartialSignatureError,
    RecipientError,
    SecureMailError,
    SignatureInvalidError,
    SignerMismatch,
    SigningKeyError,
)
from ..policy import DEFAULT, Policy
from ..results import (
    DecryptResult,
    ProtectedMessage,
    ReadResult,
    SignatureStatus,
    VerifyResult,
)
from .gpg import GnuPG, KeyInfo, Passphrase, Verdict, Verification

__all__ = ["KeySource", "decrypt", "encrypt", "read", "sign", "verify"]

KeySource = bytes | str | Path
"""Key material: armored or binary OpenPGP key data (bytes), or the path of a key file."""
MessageInput = payload.MessageInput
Selector = str | KeyInfo
"""A key: a full fingerprint, an email address, or a :class:`KeyInfo`."""

_CRLF = wire.CRLF
SIGNED_PREAMBLE = b"This is an OpenPGP/MIME signed message (RFC 4880 and 3156)\r\n"
_ENCRYPTED_PREAMBLE = b"This is an OpenPGP/MIME encrypted message (RFC 4880 and 3156)\r\n"
_VERSION_PART = (
    b"Content-Type: application/pgp-encrypted\r\n"
    b"Content-Description: PGP/MIME version identification\r\n\r\nVersion: 1\r\n"
)
_ENCRYPTED_PART_FIELDS = (
    b'Content-Type: application/octet-stream; name="encrypted.asc"\r\n'
    b"Content-Description: OpenPGP encrypted message\r\n"
    b'Content-Disposition: inline; filename="encrypted.asc"\r\n\r\n'
)
_ARMORED_MESSAGE = re.compile(
    rb"-----BEGIN PGP MESSAGE-----\r?\n.*?-----END PGP MESSAGE-----[ \t]*(?:\r?\n|$)", re.S
)
_CLEARSIGNED = re.compile(
    rb"-----BEGIN PGP SIGNED MESSAGE-----\r?\n.*?-----END PGP SIGNATURE-----[ \t]*(?:\r?\n|$)",
    re.S,
)


# --- engines and keys ---------------------------------------------------------------------------


@contextlib.contextmanager
def open_engine(
    gnupg: GnuPG | None, keys: Sequence[KeySource], policy: Policy
) -> Iterator[tuple[GnuPG, tuple[KeyInfo, ...]]]:
    """The caller's engine, or a private one for this operation; ``keys`` imported into it."""
    if gnupg is not None:
        yield gnupg, tuple(k for source in keys for k in gnupg.import_keys(source))
        return
    with GnuPG(max_output=policy.max_message_size) as engine:
        yield engine, tuple(k for source in keys for k in engine.import_keys(source))


def _unique(keys: Sequence[KeyInfo]) -> list[KeyInfo]:
    seen: dict[str, KeyInfo] = {}
    for key in keys:
        seen.setdefault(key.fingerprint, key)
    return list(seen.values())


def _default_signer(imported: Sequence[KeyInfo], sender: str | None) -> Selector:
    """The only secret key given, or else the one for the From address."""
    secret = [k for k in _unique(imported) if k.has_secret]
    if len(secret) == 1:
        return secret[0]
    if sender is not None:
        return sender
    raise SigningKeyError("(no signer)", "name the signing key: the message has no single From")


# --- signing and encrypting ------------------------------------------------------------------


def signing_key(
    engine: GnuPG, imported: Sequence[KeyInfo], signer: Selector | None, sender: str | None
) -> KeyInfo:
    """The key that signs: ``signer``, else the only secret key imported, else the key for
    the From address; checked by the engine."""
    return engine.signing_key(signer or _default_signer(imported, sender))


def signature_part(armored: bytes) -> bytes:
    """The application/pgp-signature part holding ``armored`` (RFC 3156 5)."""
    return (
        b'Content-Type: application/pgp-signature; name="signature.asc"\r\n'
        b"Content-Description: OpenPGP digital signature\r\n"
        b'Content-Disposition: attachment; filename="signature.asc"\r\n\r\n'
        + wire.canonicalize(armored)
    )


def signed_content_type(micalg: str, boundary: str) -> str:
    return (
        f'multipart/signed; micalg={micalg}; protocol="application/pgp-signature"; '
        f'boundary="{boundary}"'
    )


def _sign_entity(
    engine: GnuPG,
    entity: bytes,
    signer: Selector,
    passphrase: Passphrase,
    policy: Policy,
) -> tuple[list[tuple[str, str]], bytes]:
    """Content fields and body of the multipart/signed entity around ``entity`` (RFC 3156 5)."""
    signature = engine.sign_detached(entity, signer, passphrase=passphrase, digest=policy.digest)
    parts = [entity, signature_part(signature.data)]
    boundary, body = wire.multipart_body(SIGNED_PREAMBLE, parts)
    return [("Content-Type", signed_content_type(signature.micalg, boundary))], body


def sign(
    message: MessageInput,
    signer: Selector | None = None,
    *,
    keys: Sequence[KeySource] = (),
    passphrase: Passphrase = None,
    gnupg: GnuPG | None = None,
    policy: Policy = DEFAULT,
) -> ProtectedMessage:
    """Sign ``message`` as PGP/MIME multipart/signed.

    ``signer`` defaults to the one secret key in ``keys``, or else the key for the From
    address. The signed part is canonical (CRLF, 7-bit; quoted-printable protects trailing
    whitespace and "From " lines, as RFC 3156 3 asks) and emitted byte for byte as signed.
    """
    prepared = payload.prepare(message, policy, encrypting=False)
    with open_engine(gnupg, keys, policy) as (engine, imported):
        chosen = signer or _default_signer(imported, prepared.mail_from)
        fields, body = _sign_entity(engine, prepared.entity, chosen, passphrase, policy)
    data = payload.assemble(prepared, fields, body)
    return ProtectedMessage(data, prepared.mail_from, prepared.recipients)


def encrypt(
    message: MessageInput,
    recipients: Sequence[Selector] = (),
    *,
    keys: Sequence[KeySource] = (),
    signer: Selector | None = None,
    sign: bool = False,
    passphrase: Passphrase = None,
    gnupg: GnuPG | None = None,
    policy: Policy = DEFAULT,
) -> ProtectedMessage:
    """Encrypt ``message`` as PGP/MIME multipart/encrypted, signing it first (a
    multipart/signed inside, RFC 3156 6.1) when ``signer`` is given, or with ``sign=True``
    (the signer is then chosen as :func:`sign` chooses it).

    Recipients are ``recipients`` if given, else every public key in ``keys``, else the
    message's own recipients (To, Cc, Bcc) looked up in the engine's keys. Fail-closed: a
    recipient without a usable key (unknown, expired, revoked, no encryption subkey) stops
    the whole message with a :class:`RecipientError` naming it. With
    ``policy.encrypt_to_self`` the signer's key is added when it can encrypt.
    """
    prepared = payload.prepare(message, policy, encrypting=True)
    with open_engine(gnupg, keys, policy) as (engine, imported):
        chosen = choose_recipients(engine, imported, recipients, prepared)
        entity = prepared.entity
        if signer is not None or sign:
            own = signing_key(engine, imported, signer, prepared.mail_from)
            if policy.encrypt_to_self and own.problem_for_encryption() is None:
                chosen.append(own)
            fields, body = _sign_entity(engine, entity, own, passphrase, policy)
            entity = b"".join(wire.fold_field(n, v) for n, v in fields) + _CRLF + body
        visible, hidden = split_blind(_unique(chosen), prepared)
        encrypted = engine.encrypt(entity, visible, hidden=hidden)
    armored = wire.canonicalize(encrypted.data)
    boundary = wire.new_boundary(armored)
    head, tail = encrypted_frame(boundary)
    data = payload.assemble(prepared, [encrypted_content_type(boundary)], head + armored + tail)
    return ProtectedMessage(data, prepared.mail_from, prepared.recipients)


def choose_recipients(
    engine: GnuPG,
    imported: Sequence[KeyInfo],
    recipients: Sequence[Selector],
    prepared: payload.Prepared,
) -> list[KeyInfo]:
    """The keys to encrypt to: ``recipients`` if given, else every public key imported,
    else the message's own recipients; each checked (fail-closed, naming the recipient)."""
    # Keys given with their secret part are the sender's own, not recipients.
    public = [k for k in _unique(imported) if not k.has_secret] or _unique(imported)
    wanted: list[Selector] = list(recipients) or list(public)
    if not wanted:
        wanted = list(prepared.recipients)
    if not wanted:
        raise RecipientError("(none)", "at least one recipient is required")
    return [engine.recipient_key(r) for r in wanted]


def encrypted_content_type(boundary: str) -> tuple[str, str]:
    return (
        "Content-Type",
        f'multipart/encrypted; protocol="application/pgp-encrypted"; boundary="{boundary}"',
    )


def encrypted_frame(boundary: str) -> tuple[bytes, bytes]:
    """The bytes of a multipart/encrypted body (RFC 3156 4) before and after the armored
    OpenPGP message, which ends in CRLF: shared by the in-memory and streaming writers so
    they write the same message."""
    delimiter = b"--" + boundary.encode("ascii")
    head = (
        _ENCRYPTED_PREAMBLE + _CRLF + delimiter + _CRLF + _VERSION_PART + _CRLF
        + delimiter + _CRLF + _ENCRYPTED_PART_FIELDS
    )  # fmt: skip
    return head, _CRLF + delimiter + b"--" + _CRLF


def split_blind(
    keys: Sequence[KeyInfo], prepared: payload.Prepared
) -> tuple[list[KeyInfo], list[KeyInfo]]:
    """(recipients named in the message, Bcc recipients). A Bcc recipient's key ID would
    tell the others who else can read the message, so it goes in as a hidden recipient;
    a key that is also an open recipient's stays open."""
    blind = {a.casefold() for a in prepared.bcc}
    seen = {a.casefold() for a in prepared.recipients} - blind
    hidden = [
        k for k in keys
        if any(e.casefold() in blind for e in k.emails)
        and not any(e.casefold() in seen for e in k.emails)
    ]  # fmt: skip
    return [k for k in keys if k not in hidden], hidden


# --- reading -------------------------------------------------------------------------------------


def is_encrypted(entity: wire.Entity) -> bool:
    """Is ``entity`` PGP/MIME multipart/encrypted (RFC 3156 4)?"""
    return entity.content_type == "multipart/encrypted" and (
        entity.params.get("protocol") == "application/pgp-encrypted"
    )


def _is_signed(entity: wire.Entity) -> bool:
    return entity.content_type == "multipart/signed" and (
        entity.params.get("protocol") == "application/pgp-signature"
    )


def _inline_block(
    entity: wire.Entity, pattern: re.Pattern[bytes], types: tuple[str, ...] = ("text/plain",)
) -> tuple[bytes, bool] | None:
    """(the armored block, whether other text surrounds it) of a text body."""
    if entity.content_type not in types:
        return None
    text = wire.decode_body(entity)
    found = pattern.search(text)
    if found is None:
        return None
    outside = (text[: found.start()] + text[found.end() :]).strip()
    return _clean_armor(found.group(0)), bool(outside)


_SIGNED_PACKETS = frozenset({2, 4, 8, 11})  # signature, one-pass signature, compressed, literal


def _signed_only(block: bytes) -> bool:
    """Is an armored ``PGP MESSAGE`` signed (or just wrapped) rather than encrypted? Read
    from the first packet's tag: encrypted messages start with a session key packet."""
    lines = block.split(b"\n")[1:]
    while lines and lines[0].strip():  # armor headers
        lines = lines[1:]
    data = b"".join(line.strip() for line in lines[1:4] if not line.startswith(b"="))
    try:
        first = binascii.a2b_base64(data[:4])[0]
    except (binascii.Error, IndexError):
        return False
    tag = first & 0x3F if first & 0x40 else (first >> 2) & 0x0F
    return tag in _SIGNED_PACKETS


_BLANKISH_LINE = re.compile(rb"(?m)^(?:[ \t]|\xc2\xa0|\xa0)+(?=\r?$)")


def _clean_armor(block: bytes) -> bytes:
    """Armor as gpg reads it: HTML-to-text conversions leave the blank line after the
    armor headers as a no-break space (Thunderbird normalizes it the same way). Binary
    OpenPGP data (an encrypted part in base64) is left alone: its bytes are not lines, and
    "removing blank lines" from them would damage the ciphertext."""
    if block.lstrip()[:1] and block.lstrip()[0] & 0x80:
        return block
    return _BLANKISH_LINE.sub(b"", block)


def _armored_anywhere(entity: wire.Entity) -> bool:
    """OpenPGP ciphertext in ``entity`` itself: an armored message in a text part (in HTML
    the armor lines may be wrapped in tags), or a PGP/MIME version part out of place."""
    if entity.content_type == "application/pgp-encrypted":
        return True
    if entity.content_type not in ("text/plain", "text/html"):
        return False
    return b"-----BEGIN PGP MESSAGE-----" in wire.decode_body(entity)


def _mangled_payload(entity: wire.Entity) -> bytes | None:
    """The OpenPGP data of PGP/MIME that a server wrapped in multipart/mixed: Exchange
    (an empty text part, then the two PGP/MIME parts) or a footer-adding gateway (an empty
    footer, then multipart/encrypted). Only empty text (blank lines, a ``--`` signature
    separator) is tolerated around the ciphertext, so nothing an attacker placed next to
    it can be shown with its plaintext (EFAIL); anything more is refused."""
    if entity.content_type != "multipart/mixed":
        return None
    children = [c for c in wire.parts(entity) if not empty_text(c)]
    types = [c.content_type for c in children]
    if types == ["application/pgp-encrypted", "application/octet-stream"]:
        return _payload_of(*children)
    if len(children) == 1 and is_encrypted(children[0]):
        return _encrypted_payload(children[0])
    return None


def empty_text(entity: wire.Entity) -> bool:
    """A text part with nothing to show (blank lines, a ``--`` signature separator): what
    is tolerated around PGP/MIME that a server rewrapped."""
    if entity.content_type != "text/plain":
        return False
    return not re.sub(rb"[\s-]", b"", wire.decode_body(entity))


def _encrypted_payload(entity: wire.Entity) -> bytes:
    """The OpenPGP data of a multipart/encrypted message (RFC 3156 4)."""
    children = wire.parts(entity)
    if len(children) != 2:
        raise MalformedMessageError("multipart/encrypted must have exactly two parts")
    return _payload_of(*children)


def _payload_of(version: wire.Entity, data: wire.Entity) -> bytes:
    check_version_part(version)
    check_data_part(data)
    return _clean_armor(wire.decode_body(data))


def check_version_part(version: wire.Entity) -> None:
    """The first part of PGP/MIME: application/pgp-encrypted, ``Version: 1`` (RFC 3156 4)."""
    if version.content_type != "application/pgp-encrypted":
        raise MalformedMessageError("the first part of PGP/MIME must be application/pgp-encrypted")
    if not re.search(rb"(?mi)^Version:[ \t]*1[ \t\r]*$", wire.decode_body(version)):
        raise MalformedMessageError("unsupported PGP/MIME version (only 'Version: 1')")


def check_data_part(data: wire.Entity) -> None:
    """The second part of PGP/MIME: application/octet-stream (RFC 3156 4)."""
    if data.content_type != "application/octet-stream":
        raise MalformedMessageError("the second part of PGP/MIME must be application/octet-stream")


def _encrypted_parts(entity: wire.Entity) -> bool:
    """Does an encrypted PGP part, or an armored message, sit in ``entity`` or below it?"""
    return _armored_anywhere(entity) or any(
        is_encrypted(e) or _armored_anywhere(e) for e in wire.walk(entity)
    )


def decrypt(
    message: MessageInput,
    *,
    keys: Sequence[KeySource] = (),
    passphrase: Passphrase = None,
    gnupg: GnuPG | None = None,
    policy: Policy = DEFAULT,
) -> DecryptResult:
    """Decrypt a PGP/MIME message (or an inline-PGP one whose whole body is the armored
    message) with a secret key from ``keys`` or the engine.

    No plaintext is released unless gpg reported decryption *and* integrity (MDC or AEAD);
    see :meth:`GnuPG.decrypt`. An encrypted part embedded among other parts, or an armored
    block with other text around it, is refused (EFAIL). Protected headers are restored.
    """
    data = payload.message_bytes(message, policy)
    outer = wire.entity(data)
    inline = _inline_block(outer, _ARMORED_MESSAGE)
    mangled = _mangled_payload(outer)
    if is_encrypted(outer):
        ciphertext = _encrypted_payload(outer)
    elif mangled is not None:
        ciphertext = mangled
    elif inline is not None and _signed_only(inline[0]):
        raise MalformedMessageError("the message is OpenPGP signed, not encrypted: verify it")
    elif inline is not None and not inline[1]:
        ciphertext = inline[0]
    elif inline is not None or _encrypted_parts(outer):
        raise EmbeddedCiphertextError()
    else:
        raise MalformedMessageError("the message is not PGP/MIME or inline-PGP encrypted")
    with open_engine(gnupg, keys, policy) as (engine, _):
        opened = engine.decrypt(
            ciphertext,
            passphrase=passphrase,
            max_output=policy.max_message_size,
            allow_weak_digest=policy.allow_weak_algorithms,
        )
    if inline is not None:
        inner = _inline_plaintext(outer, opened.data)
    else:
        inner = wire.split_entity(wire.canonical_plaintext(opened.data))
    restored = payload.restore(outer.raw, inner)
    signature = None
    if opened.signature is not None:
        signature = _result(opened.signature, restored.data, policy, restored.protected_headers)
    inner_entity = wire.entity(restored.data)
    return DecryptResult(
        data=restored.data,
        authenticated=True,  # the MDC or AEAD tag verified, or gpg would have failed
        content_cipher=f"openpgp-{opened.cipher}-{opened.integrity}",
        recipient=opened.primary or opened.key or "",
        protected_headers=restored.protected_headers,
        signed=inner_entity.content_type == "multipart/signed",
        signature=signature,
    )


def _inline_plaintext(outer: wire.Entity, text: bytes) -> wire.RawEntity:
    """An inline-PGP plaintext as a text/plain entity with the original's Content-Type."""
    field = outer.raw.get("Content-Type")
    content_type = field.raw if field is not None else b"Content-Type: text/plain\r\n"
    body = wire.base64_body(wire.canonicalize(text))
    return wire.split_entity(content_type + b"Content-Transfer-Encoding: base64\r\n" + _CRLF + body)


def _matches_from(emails: Sequence[str], sender: str | None) -> bool:
    return sender is not None and sender.casefold() in (e.casefold() for e in emails)


def streamed_signature_result(
    verification: Verification, header: bytes, policy: Policy, protected: tuple[str, ...]
) -> VerifyResult:
    """:func:`_result` for a message that was streamed to its reader: the signer is
    checked against the From of ``header`` (the restored header section), and the result
    holds no data."""
    return dataclasses.replace(_result(verification, header, policy, protected), data=None)


def _result(
    verification: Verification,
    data: bytes,
    policy: Policy,
    protected: tuple[str, ...] = (),
    *,
    whole: bool = True,
) -> VerifyResult:
    """The :class:`VerifyResult` for gpg's verdict over the message ``data`` it covers."""
    sender = payload.from_address(data)
    signer = next(
        (e for e in verification.emails if _matches_from([e], sender)),
        verification.emails[0] if verification.emails else verification.fingerprint,
    )
    result = VerifyResult(
        status=SignatureStatus.FAILED,
        reason="",
        signer=signer,
        fingerprint=verification.fingerprint,
        signing_time=verification.created,
        digest_algorithm=verification.hash_algorithm,
        signature_algorithm=verification.signer.primary.algorithm if verification.signer else None,
        data=data,
        protected_headers=protected,
    )

    def outcome(status: SignatureStatus, error: SecureMailError | None) -> VerifyResult:
        reason = str(error) if error is not None else "signature verified"
        return dataclasses.replace(result, status=status, reason=reason, error=error)

    if verification.verdict is not Verdict.GOOD:
        status = (
            SignatureStatus.NOT_CHECKED
            if verification.verdict is Verdict.NOT_CHECKED
            else SignatureStatus.FAILED
        )
        return outcome(status, verification.error or NotSignedError(verification.reason))
    if policy.require_signer_matches_from and not _matches_from(verification.emails, sender):
        return outcome(
            SignatureStatus.FAILED,
            SignerMismatch(signer or "?", sender or "(no single From address)"),
        )
    if not whole:
        return outcome(
            SignatureStatus.PARTIAL,
            PartialSignatureError("a valid signature covers only part of the message"),
        )
    return outcome(SignatureStatus.VERIFIED, None)


def verify(
    message: MessageInput,
    *,
    keys: Sequence[KeySource] = (),
    gnupg: GnuPG | None = None,
    policy: Policy = DEFAULT,
) -> VerifyResult:
    """Verify a PGP/MIME signed message (or an inline clearsigned one) against the public
    keys in ``keys`` or the engine.

    VERIFIED needs exactly one good signature by a key that is neither expired nor
    revoked, whose user IDs include the From address, over the whole message. A signed part
    inside a larger message, or a clearsigned block with other text around it, is PARTIAL;
    the result's data is then only what was signed.
    """
    data = payload.message_bytes(message, policy)
    outer = wire.entity(data)
    if outer.content_type == "multipart/signed" and not _is_signed(outer):
        return _foreign_signature(outer)
    with open_engine(gnupg, keys, policy) as (engine, _):
        if _is_signed(outer):
            return _verify_multipart(engine, outer, outer, policy, whole=True)
        clearsigned = _inline_block(outer, _CLEARSIGNED)
        armored = _inline_block(outer, _ARMORED_MESSAGE)
        if clearsigned is None and armored is not None and _signed_only(armored[0]):
            clearsigned = armored  # an inline-signed (one-pass) message: verified the same way
        if clearsigned is not None:
            checked = engine.verify_inline(
                clearsigned[0],
                max_output=policy.max_message_size,
                allow_weak_digest=policy.allow_weak_algorithms,
            )
            content = _inline_plaintext(outer, checked.data or b"")
            restored = payload.restore(outer.raw, content)
            return _result(checked, restored.data, policy, whole=not clearsigned[1])
        for inner in wire.walk(outer):
            if _is_signed(inner):
                return _verify_multipart(engine, outer, inner, policy, whole=False)
    error = NotSignedError("the message is not PGP/MIME signed")
    return VerifyResult(status=SignatureStatus.NOT_CHECKED, reason=str(error), error=error)


def _foreign_signature(outer: wire.Entity) -> VerifyResult:
    """Another signature protocol (S/MIME): not checked here, but the signed content is
    handed back so that the layers below it can be read."""
    error = NotSignedError(
        f"signed with {outer.params.get('protocol') or 'an unknown protocol'}, not OpenPGP"
    )
    children = wire.parts(outer)
    if not children:
        raise MalformedMessageError("multipart/signed without parts")
    content = payload.restore(outer.raw, children[0].raw)
    return VerifyResult(
        status=SignatureStatus.NOT_CHECKED, reason=str(error), error=error, data=content.data
    )


def _verify_multipart(
    engine: GnuPG, outer: wire.Entity, entity: wire.Entity, policy: Policy, *, whole: bool
) -> VerifyResult:
    boundary = entity.params.get("boundary") or ""
    split = wire.split_multipart(entity.raw.body, boundary)
    if len(split.parts) != 2:
        raise MalformedMessageError("multipart/signed must have exactly two parts")
    signature = wire.entity(split.parts[1])
    if signature.content_type != "application/pgp-signature":
        raise MalformedMessageError("the second part of multipart/signed is not a PGP signature")
    checked = engine.verify_detached(
        split.parts[0],
        wire.decode_body(signature),
        allow_weak_digest=policy.allow_weak_algorithms,
    )
    if checked.verdict is Verdict.NOT_CHECKED and isinstance(checked.error, NotSignedError):
        # The message says it is signed but its signature part holds none that gpg can
        # read (damaged armor, wrong data): that is a bad signature, not an unsigned one.
        damaged = SignatureInvalidError("the signature part holds no readable OpenPGP signature")
        checked = dataclasses.replace(
            checked, verdict=Verdict.FAILED, reason=str(damaged), error=damaged
        )
    restored = payload.restore(outer.raw, wire.split_entity(split.parts[0]))
    return _result(checked, restored.data, policy, restored.protected_headers, whole=whole)


MAX_LAYERS = 8


def read(
    message: MessageInput,
    *,
    keys: Sequence[KeySource] = (),
    passphrase: Passphrase = None,
    gnupg: GnuPG | None = None,
    policy: Policy = DEFAULT,
) -> ReadResult:
    """Open every PGP/MIME layer of an inbound message, outermost first (encrypted,
    signed, both in either order, the combined form, inline PGP)."""
    data = payload.message_bytes(message, policy)
    layers: list[DecryptResult | VerifyResult] = []
    with open_engine(gnupg, keys, policy) as (engine, _):
        for _ in range(MAX_LAYERS):
            entity = wire.entity(data)
            armored = _inline_block(entity, _ARMORED_MESSAGE)
            if (
                is_encrypted(entity)
                or _mangled_payload(entity) is not None
                or (armored is not None and not _signed_only(armored[0]))
            ):
                opened = decrypt(data, passphrase=passphrase, gnupg=engine, policy=policy)
                layers.append(opened)
                if opened.signature is not None:
                    layers.append(opened.signature)
                data = opened.data
            elif (
                entity.content_type == "multipart/signed"
                or _inline_block(entity, _CLEARSIGNED)
                or armored is not None
            ):
                checked = verify(data, gnupg=engine, policy=policy)
                layers.append(checked)
                if checked.data is None or checked.status is SignatureStatus.PARTIAL:
                    break
                data = checked.data
            else:
                if _encrypted_parts(entity):
                    raise EmbeddedCiphertextError()
                checked = verify(data, gnupg=engine, policy=policy)
                signed_inside = any(_is_signed(e) for e in wire.walk(entity))
                if checked.status is not SignatureStatus.NOT_CHECKED or signed_inside:
                    layers.append(checked)
                break
        else:
            raise MalformedMessageError(f"more than {MAX_LAYERS} nested PGP/MIME layers")
    return ReadResult(data=data, layers=tuple(layers))
