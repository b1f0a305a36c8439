"""PGP/MIME for messages too large to hold in memory.

The same recipes as :mod:`securemail.stream.smime`, for RFC 3156 multipart/encrypted:

* :func:`encrypt` takes a message built as usual plus
  :class:`~securemail.stream.mime.StreamedAttachment` files; :func:`encrypt_stream` a whole
  message from a source. The stack is MIME entity -> :class:`OpenPGPEncryptWriter` (SEIPD
  with MDC, native) -> :class:`ArmorWriter` -> the multipart/encrypted frame -> the sink.
* :func:`decrypt_stream` reads multipart/encrypted from a source (or the multipart/mixed
  that Exchange and some gateways make of it, :mod:`.multipart` reading the parts); gpg
  decrypts only the session key (the secret key never leaves it), the data is decrypted
  here, spooled under a throwaway key until the MDC verified, and then written out with
  the protected headers restored.

gpg stays the engine for keys: recipients are chosen and checked by
:func:`securemail.pgp.encrypt`'s rules (fail-closed, naming the recipient) and exported
from the engine, so gpg's judgment of a key's validity is what the native writer uses.

Signing streams too (:func:`sign`, :func:`sign_stream`, and ``signer=`` for the encrypting
recipes: a multipart/signed inside the encryption, RFC 3156 6.1, as
:func:`securemail.pgp.encrypt` writes it). The secret key stays in gpg, so gpg makes the
signature: the signed part is fed to ``gpg --detach-sign`` while it is written
(:class:`SignatureWriter`), and the signature part follows it. The key and passphrase are
tried before the first byte is written. An OpenPGP signature made *with* the encryption
(``gpg --sign --encrypt``'s combined form) is checked by gpg as :func:`decrypt_stream`
releases the plaintext, and its verdict returned.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable, Iterator, Sequence

from .. import payload, wire
from ..errors import (
    EmbeddedCiphertextError,
    MalformedMessageError,
    SizeLimitExceeded,
    ToolError,
)
from ..pgp.gpg import (
    GnuPG,
    KeyInfo,
    Passphrase,
    SignatureStream,
    VerificationStream,
    check_passphrase,
)
from ..pgp.mime import (
    SIGNED_PREAMBLE,
    KeySource,
    Selector,
    check_data_part,
    check_version_part,
    choose_recipients,
    empty_text,
    encrypted_content_type,
    encrypted_frame,
    is_encrypted,
    open_engine,
    signature_part,
    signed_content_type,
    signing_key,
    split_blind,
    streamed_signature_result,
)
from ..pgp.mime import decrypt as decrypt_in_memory
from ..policy import DEFAULT, Policy
from .base import Data, Sink, Source, Writer, check_7bit, read_at_most
from .ber import Base64Source
from .message import (
    RestoringSink,
    StreamDecryptResult,
    Streamed,
    read_header_section,
)
from .mime import StreamedAttachment, with_attachments, write_entity, write_whole
from .multipart import MultipartReader, Part
from .openpgp import ArmorWriter, OpenPGPEncryptWriter
from .openpgp_decrypt import decrypt_stream as decrypt_openpgp
from .openpgp_keys import RecipientKey, recipient_keys

__all__ = [
    "SignatureWriter",
    "decrypt_stream",
    "encrypt",
    "encrypt_stream",
    "sign",
    "sign_stream",
]


# --- writing ------------------------------------------------------------------------------------


class _Frame(Writer):
    """Passes the armored message through and writes the multipart close after it."""

    def __init__(self, inner: Sink, tail: bytes) -> None:
        super().__init__(inner)
        self._tail = tail

    def _write(self, data: Data) -> None:
        self._inner.write(data)

    def _finish(self) -> None:
        self._inner.write(self._tail)


class SignatureWriter(Writer):
    """A PGP/MIME multipart/signed entity written as a stream (RFC 3156 5): what is written
    is the signed part, passed on unchanged and fed to gpg on the way; :meth:`finalize`
    has gpg finish the signature and writes the signature part. ``fields_before`` (outer
    header fields, for a signed message rather than a signed part) precede the Content-Type
    field.

    The signed part must already be canonical (CRLF, 7-bit): bytes that are not ASCII are
    refused, since a relay could change them and break the signature.
    """

    def __init__(
        self, inner: Sink, signature: SignatureStream, *, fields_before: bytes = b""
    ) -> None:
        super().__init__(inner)
        self._signature = signature
        self.boundary = wire.new_boundary()
        self._delimiter = b"\r\n--" + self.boundary.encode("ascii")
        content_type = signed_content_type(signature.micalg, self.boundary)
        inner.write(
            fields_before
            + wire.fold_field("Content-Type", content_type)
            + wire.CRLF
            + SIGNED_PREAMBLE
            + self._delimiter
            + wire.CRLF
        )

    def _write(self, data: Data) -> None:
        check_7bit(data)
        self._signature.write(data)
        self._inner.write(data)

    def _finish(self) -> None:
        made = self._signature.finish()
        if made.micalg != self._signature.micalg:
            raise ToolError(f"gpg signed with {made.hash_algorithm}, not the announced hash")
        self._inner.write(
            self._delimiter
            + wire.CRLF
            + signature_part(made.data)
            + self._delimiter
            + b"--"
            + wire.CRLF
        )

    def _abandon(self) -> None:
        self._signature.abort()


@contextlib.contextmanager
def _signing(
    engine: GnuPG, key: KeyInfo, passphrase: Passphrase, policy: Policy
) -> Iterator[SignatureStream]:
    """gpg signing what is written, stopped if the writing fails."""
    stream = engine.sign_detached_stream(key, passphrase=passphrase, digest=policy.digest)
    try:
        yield stream
    finally:
        stream.abort()  # (nothing to stop once finished)


def _native_keys(
    engine: GnuPG, chosen: Sequence[KeyInfo], prepared: payload.Prepared
) -> list[RecipientKey]:
    """The checked recipients as keys for the native writer; Bcc recipients hidden."""
    unique = list({key.fingerprint: key for key in chosen}.values())
    visible, hidden = split_blind(unique, prepared)
    found: list[RecipientKey] = []
    for key in [*visible, *hidden]:
        for native in recipient_keys(engine.export_public(key)):
            found.append(dataclasses.replace(native, hidden=key in hidden))
    return found


@dataclasses.dataclass(frozen=True)
class _Signing:
    """Who signs a message being encrypted (``signer``, or with ``sign`` the default)."""

    signer: Selector | None = None
    sign: bool = False
    passphrase: Passphrase = None

    def __post_init__(self) -> None:
        check_passphrase(self.passphrase)  # before any gpg process starts

    @property
    def wanted(self) -> bool:
        return self.signer is not None or self.sign


def _encrypt_prepared(
    sink: Sink,
    prepared: payload.Prepared,
    write: Callable[[Writer], None],
    recipients: Sequence[Selector],
    keys: Sequence[KeySource],
    gnupg: GnuPG | None,
    policy: Policy,
    signing: _Signing,
) -> Streamed:
    with open_engine(gnupg, keys, policy) as (engine, imported):
        chosen = choose_recipients(engine, imported, recipients, prepared)
        own = None
        if signing.wanted:
            own = signing_key(engine, imported, signing.signer, prepared.mail_from)
            if policy.encrypt_to_self and own.problem_for_encryption() is None:
                chosen.append(own)
        native = _native_keys(engine, chosen, prepared)
        with contextlib.ExitStack() as stack:
            # gpg signs while the data streams; the engine serves nothing else meanwhile,
            # so everything it had to give (recipients, keys) was asked for above.
            signature = None
            if own is not None:
                signature = stack.enter_context(_signing(engine, own, signing.passphrase, policy))
            boundary = wire.new_boundary()
            head, tail = encrypted_frame(boundary)
            fields = [encrypted_content_type(boundary)]
            sink.write(payload.assemble_header(prepared, fields) + head)
            armor = ArmorWriter(_Frame(sink, tail))
            top: Writer = OpenPGPEncryptWriter.for_recipients(armor, native)
            if signature is not None:
                top = SignatureWriter(top, signature)
            write(top)
    return Streamed(prepared.mail_from, prepared.recipients)


def encrypt(
    sink: Sink,
    message: payload.MessageInput,
    recipients: Sequence[Selector] = (),
    *,
    keys: Sequence[KeySource] = (),
    attachments: Sequence[StreamedAttachment] = (),
    signer: Selector | None = None,
    sign: bool = False,
    passphrase: Passphrase = None,
    gnupg: GnuPG | None = None,
    policy: Policy = DEFAULT,
) -> Streamed:
    """Write ``message`` with ``attachments`` (read in chunks) PGP/MIME-encrypted to
    ``sink``. Recipients are chosen as :func:`securemail.pgp.encrypt` chooses them and all
    are checked before anything is written (fail-closed). With ``signer`` (or ``sign``)
    the message is signed first, as there: a multipart/signed inside (RFC 3156 6.1)."""
    message, boundary = with_attachments(message, attachments)
    prepared = payload.prepare(message, policy, encrypting=True)
    signing = _Signing(signer, sign, passphrase)
    return _encrypt_prepared(
        sink,
        prepared,
        lambda top: write_entity(
            top,
            prepared.entity,
            boundary,
            attachments,
            binary=policy.binary_attachments and not signing.wanted,
        ),
        recipients,
        keys,
        gnupg,
        policy,
        signing,
    )


def encrypt_stream(
    source: Source,
    sink: Sink,
    recipients: Sequence[Selector] = (),
    *,
    keys: Sequence[KeySource] = (),
    signer: Selector | None = None,
    sign: bool = False,
    passphrase: Passphrase = None,
    gnupg: GnuPG | None = None,
    policy: Policy = DEFAULT,
    prefix: bytes = b"",
) -> Streamed:
    """Encrypt the whole message read from ``source`` (``prefix`` = bytes already read
    from it) to ``sink``: its header section protected as usual, its body passed through
    (with a ``signer``, line ends are made CRLF; it must be 7-bit, as ``securemail
    compose`` writes it)."""
    header, body = read_header_section(source, prefix)
    prepared = payload.prepare_headers(header, policy, encrypting=True)
    signing = _Signing(signer, sign, passphrase)

    return _encrypt_prepared(
        sink,
        prepared,
        lambda top: write_whole(top, prepared.entity, body, canonical=signing.wanted),
        recipients,
        keys,
        gnupg,
        policy,
        signing,
    )


def _sign_prepared(
    sink: Sink,
    prepared: payload.Prepared,
    write: Callable[[Writer], None],
    signer: Selector | None,
    keys: Sequence[KeySource],
    passphrase: Passphrase,
    gnupg: GnuPG | None,
    policy: Policy,
) -> Streamed:
    with open_engine(gnupg, keys, policy) as (engine, imported):
        own = signing_key(engine, imported, signer, prepared.mail_from)
        with _signing(engine, own, passphrase, policy) as signature:
            fields_before = payload.assemble_header(prepared, [])[: -len(wire.CRLF)]
            write(SignatureWriter(sink, signature, fields_before=fields_before))
    return Streamed(prepared.mail_from, prepared.recipients)


def sign(
    sink: Sink,
    message: payload.MessageInput,
    signer: Selector | None = None,
    *,
    keys: Sequence[KeySource] = (),
    attachments: Sequence[StreamedAttachment] = (),
    passphrase: Passphrase = None,
    gnupg: GnuPG | None = None,
    policy: Policy = DEFAULT,
) -> Streamed:
    """Write ``message`` with ``attachments`` (read in chunks) to ``sink`` as PGP/MIME
    multipart/signed, gpg signing while it is written. The signer is chosen as
    :func:`securemail.pgp.sign` chooses it; its key and ``passphrase`` are tried before
    anything is written."""
    check_passphrase(passphrase)  # before any gpg process starts
    message, boundary = with_attachments(message, attachments)
    prepared = payload.prepare(message, policy, encrypting=False)
    return _sign_prepared(
        sink,
        prepared,
        lambda top: write_entity(top, prepared.entity, boundary, attachments),
        signer,
        keys,
        passphrase,
        gnupg,
        policy,
    )


def sign_stream(
    source: Source,
    sink: Sink,
    signer: Selector | None = None,
    *,
    keys: Sequence[KeySource] = (),
    passphrase: Passphrase = None,
    gnupg: GnuPG | None = None,
    policy: Policy = DEFAULT,
    prefix: bytes = b"",
) -> Streamed:
    """Sign the message read from ``source`` (7-bit; bare LF line ends are made CRLF) as
    PGP/MIME multipart/signed to ``sink``."""
    check_passphrase(passphrase)  # before any gpg process starts
    header, body = read_header_section(source, prefix)
    prepared = payload.prepare_headers(header, policy, encrypting=False)

    return _sign_prepared(
        sink,
        prepared,
        lambda top: write_whole(top, prepared.entity, body, canonical=True),
        signer,
        keys,
        passphrase,
        gnupg,
        policy,
    )


# --- reading ------------------------------------------------------------------------------------


_SMALL_PART = 64 * 1024
"""The largest version part, and empty text part around the encrypted data, read."""


class _Then:
    """``source``, and at its end a check of what follows it. The check runs before the
    end is reported, and the OpenPGP reader releases nothing before it has read its source
    to the end: a refusal there leaves no plaintext behind."""

    def __init__(self, source: Source, check: Callable[[], None]) -> None:
        self._source = source
        self._check: Callable[[], None] | None = check

    def readinto(self, buffer: bytearray | memoryview) -> int:
        count = self._source.readinto(buffer) or 0
        if not count and self._check is not None:
            check, self._check = self._check, None
            check()
        return count


def _small(part: Part) -> bytes | None:
    """A part's header and body, canonical, if the body is small; None if it is not."""
    body = part.read_all(_SMALL_PART)
    return None if body is None else wire.canonicalize(part.header + body)


def _pgp_mime(reader: MultipartReader, then: Callable[[], None]) -> tuple[Source, wire.Entity]:
    """The encrypted part's body and header fields from the multipart/encrypted body in
    ``reader``, after checking the version part (RFC 3156 4). The encrypted part must end
    the multipart: a third part is refused, since a reader that showed it would show
    unencrypted text as part of an encrypted message. ``then`` checks what follows."""

    def closed() -> None:
        if reader.next_part() is not None:
            raise EmbeddedCiphertextError()
        then()

    return _pgp_mime_parts(reader.next_part(), reader, closed)


def _pgp_mime_parts(
    version: Part | None, reader: MultipartReader, then: Callable[[], None]
) -> tuple[Source, wire.Entity]:
    """The two parts of PGP/MIME, the first given, the second next in ``reader``."""
    control = _small(version) if version is not None else None
    if version is None or control is None:
        raise MalformedMessageError("multipart/encrypted must have exactly two parts")
    check_version_part(wire.entity(control))
    data = reader.next_part()
    if data is None:
        raise MalformedMessageError("multipart/encrypted must have exactly two parts")
    fields = wire.entity(data.header)
    check_data_part(fields)
    return _Then(data, then), fields


def _empty_text(part: Part, fields: wire.Entity) -> bool:
    """:func:`~securemail.pgp.mime.empty_text` for a part read from a stream: a body too
    large to read whole is not empty."""
    if fields.content_type != "text/plain":
        return False
    whole = _small(part)
    return whole is not None and empty_text(wire.entity(whole))


def _mangled(reader: MultipartReader) -> tuple[Source, wire.Entity]:
    """The encrypted part of PGP/MIME that a server wrapped in multipart/mixed: Exchange
    (an empty text part, then the two PGP/MIME parts) or a footer-adding gateway (the
    multipart/encrypted, then an empty footer). As in memory (:mod:`securemail.pgp.mime`),
    only empty text may surround the ciphertext (EFAIL): the parts after it are read and
    checked before any plaintext is released."""

    def rest_empty() -> None:
        while (part := reader.next_part()) is not None:
            if not _empty_text(part, wire.entity(part.header)):
                raise EmbeddedCiphertextError()

    while (part := reader.next_part()) is not None:
        fields = wire.entity(part.header)
        if fields.content_type == "application/pgp-encrypted":
            return _pgp_mime_parts(part, reader, rest_empty)
        if is_encrypted(fields):
            return _pgp_mime(MultipartReader(part, fields.params.get("boundary", "")), rest_empty)
        if not _empty_text(part, fields):
            break
    # Not PGP/MIME: refused as in memory, as embedded ciphertext if a PGP part follows.
    while (part := reader.next_part()) is not None:
        fields = wire.entity(part.header)
        if fields.content_type == "application/pgp-encrypted" or is_encrypted(fields):
            raise EmbeddedCiphertextError()
    raise MalformedMessageError(_NOT_PGP_MIME)


_NOT_PGP_MIME = (
    "the message is not PGP/MIME encrypted (multipart/encrypted, or one that a server "
    "wrapped in multipart/mixed)"
)


def decrypt_stream(
    source: Source,
    sink: Sink,
    *,
    keys: Sequence[KeySource] = (),
    passphrase: Passphrase = None,
    gnupg: GnuPG | None = None,
    policy: Policy = DEFAULT,
    spool_dir: str | os.PathLike[str] | None = None,
    prefix: bytes = b"",
) -> StreamDecryptResult:
    """Decrypt the PGP/MIME message read from ``source`` into ``sink``, with a secret key
    from ``keys`` or the engine.

    Nothing is written to ``sink`` before the MDC verified: until then the plaintext waits
    in an encrypted, anonymous spool file in ``spool_dir``; on any failure it is destroyed
    and the typed error raised (see
    :func:`securemail.stream.openpgp_decrypt.decrypt_stream`). Protected headers are
    restored. PGP/MIME that a server rewrapped in multipart/mixed (Exchange, a gateway's
    footer) is read with the in-memory reader's rule: only empty text around the
    ciphertext. Inline PGP (a text/plain body) is read in memory, up to the policy's
    ``max_message_size``, by :func:`securemail.pgp.decrypt` (``size`` is then that of the
    restored message).
    """
    header, body = read_header_section(source, prefix)
    outer = wire.entity(header)
    if outer.content_type == "text/plain":
        return _inline(header, body, sink, keys, passphrase, gnupg, policy)
    boundary = outer.params.get("boundary", "")
    if is_encrypted(outer):
        part, fields = _pgp_mime(MultipartReader(body, boundary), lambda: None)
    elif outer.content_type == "multipart/mixed":
        part, fields = _mangled(MultipartReader(body, boundary))
    else:
        raise MalformedMessageError(_NOT_PGP_MIME)
    field = fields.raw.get("Content-Transfer-Encoding")
    encoding = field.value.strip().lower() if field is not None else "7bit"
    if encoding not in ("7bit", "8bit", "binary", "base64"):
        raise MalformedMessageError(
            f"an encrypted part in {encoding} transfer encoding cannot be streamed"
        )
    data: Source = Base64Source(part) if encoding == "base64" else part
    restorer = RestoringSink(sink, outer.raw)
    verifiers: list[VerificationStream] = []
    with open_engine(gnupg, keys, policy) as (engine, _):

        def verifier(signature: bytes) -> VerificationStream | None:
            """gpg checking the signature made with the encryption, if there is one: it
            reads the literal data as the sink does (after the MDC verified)."""
            if not signature:
                return None
            allow_weak = policy.allow_weak_algorithms
            stream = engine.verify_detached_stream(signature, allow_weak_digest=allow_weak)
            verifiers.append(stream)
            return stream

        try:
            opened = decrypt_openpgp(
                data,
                restorer,
                session_key=lambda packets: engine.session_key(packets, passphrase),
                spool_dir=spool_dir,
                max_output=policy.max_stream_size,
                also=verifier,
            )
            restorer.close()
            verification = verifiers[0].finish() if verifiers else None
        finally:
            for started in verifiers:
                started.abort()  # (nothing to stop once finished)
        recipient = _recipient(engine, opened.recipients)
    signature = None
    if verification is not None:
        signature = streamed_signature_result(
            verification, restorer.header, policy, restorer.protected
        )
    return StreamDecryptResult(
        authenticated=True,  # the MDC verified, or nothing was written
        content_cipher=f"openpgp-{opened.cipher}-mdc",
        recipient=recipient,
        protected_headers=restorer.protected,
        size=opened.size,
        signature=signature,
    )


def _inline(
    header: bytes,
    body: Source,
    sink: Sink,
    keys: Sequence[KeySource],
    passphrase: Passphrase,
    gnupg: GnuPG | None,
    policy: Policy,
) -> StreamDecryptResult:
    """Inline PGP: a text body that is one armored message. Text bodies are small, so it
    is read in memory (up to the policy's ``max_message_size``) and decrypted by
    :func:`securemail.pgp.decrypt`, under its rules: no text around the armor (EFAIL), no
    plaintext without a verified MDC."""
    text = read_at_most(body, max(0, policy.max_message_size - len(header)))
    if text is None:
        raise SizeLimitExceeded("message", policy.max_message_size)
    opened = decrypt_in_memory(
        header + text, keys=keys, passphrase=passphrase, gnupg=gnupg, policy=policy
    )
    sink.write(opened.data)
    signature = opened.signature
    return StreamDecryptResult(
        authenticated=opened.authenticated,
        content_cipher=opened.content_cipher,
        recipient=opened.recipient,
        protected_headers=opened.protected_headers,
        size=len(opened.data),
        signature=dataclasses.replace(signature, data=None) if signature is not None else None,
    )


def _recipient(engine: GnuPG, key_ids: Sequence[str]) -> str:
    """The fingerprint of the secret key here that the message names (hidden recipients
    name none)."""
    for key in engine.list_keys():
        if key.has_secret and any(sub.key_id in key_ids for sub in key.keys):
            return key.fingerprint
    return ""
