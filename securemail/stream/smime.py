"""S/MIME for messages too large to hold in memory.

The recipes here write a protected message straight to a sink (a file, a socket, an SMTP
DATA writer) and read one from a source, in bounded memory:

* :func:`encrypt` / :func:`sign` take a message built as usual plus
  :class:`~securemail.stream.mime.StreamedAttachment` files, read in chunks;
* :func:`encrypt_stream` / :func:`sign_stream` take a whole message from a source (what
  ``securemail compose`` writes) and pass its body through unchanged;
* :func:`decrypt_stream` spools the plaintext, encrypted under a throwaway key, until the
  GCM tag (or the CBC padding) has been checked, and only then writes it out.

The output is the same S/MIME as the in-memory recipes write, with BER indefinite-length
framing for the CMS content, which every S/MIME reader (OpenSSL, NSS, gpgsm) accepts.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from asn1crypto import algos, cms
from cryptography import x509

from .. import payload, wire
from ..errors import (
    DecryptionError,
    EmbeddedCiphertextError,
    InputError,
    MalformedMessageError,
    NotARecipientError,
    SecureMailError,
    UnsupportedAlgorithmError,
)
from ..keys import Identity
from ..policy import DEFAULT, Policy
from ..smime import enveloped
from ..smime.mime import AnyRecipient, pkcs7_mime_fields, plan_recipients
from ..smime.password import PasswordRecipient
from .base import Sink, Source, Writer
from .ber import Base64Source, BerReader
from .cms import DetachedSignatureWriter, EnvelopeWriter
from .encoding import threaded_base64
from .message import RestoringSink, StreamDecryptResult, Streamed, read_header_section
from .mime import StreamedAttachment, with_attachments, write_entity, write_whole
from .spool import Spool
from .threads import WORKER_BLOCK, ThreadedWriter

__all__ = [
    "StreamDecryptResult",
    "Streamed",
    "decrypt_stream",
    "encrypt",
    "encrypt_stream",
    "read_header_section",
    "sign",
    "sign_stream",
]


# --- writing ------------------------------------------------------------------------------------


def _encrypt_prepared(
    sink: Sink,
    prepared: payload.Prepared,
    write: Callable[[Writer], None],
    recipients: Sequence[AnyRecipient],
    signer: Identity | None,
    policy: Policy,
    trust: Sequence[x509.Certificate] | None,
    certificates: Sequence[x509.Certificate],
) -> Streamed:
    cipher, planned = plan_recipients(
        recipients, signer=signer, policy=policy, trust=trust, certificates=certificates
    )
    sink.write(payload.assemble_header(prepared, pkcs7_mime_fields(cipher)))
    top: Writer = EnvelopeWriter.for_recipients(threaded_base64(sink), planned, cipher)
    if signer is not None:
        top = DetachedSignatureWriter(top, signer, policy=policy)
    write(top)
    return Streamed(prepared.mail_from, prepared.recipients)


def encrypt(
    sink: Sink,
    message: payload.MessageInput,
    recipients: Sequence[AnyRecipient],
    *,
    attachments: Sequence[StreamedAttachment] = (),
    signer: Identity | None = None,
    policy: Policy = DEFAULT,
    trust: Sequence[x509.Certificate] | None = None,
    certificates: Sequence[x509.Certificate] = (),
) -> Streamed:
    """Write ``message`` with ``attachments`` (read in chunks) S/MIME-encrypted to
    ``sink``, signed first when ``signer`` is given. The rules of
    :func:`securemail.smime.encrypt` apply: recipients are checked before anything is
    written, and the first one that cannot be encrypted to stops it (fail-closed)."""
    message, boundary = with_attachments(message, attachments)
    prepared = payload.prepare(message, policy, encrypting=True)
    return _encrypt_prepared(
        sink,
        prepared,
        lambda top: write_entity(
            top,
            prepared.entity,
            boundary,
            attachments,
            binary=policy.binary_attachments and signer is None,
        ),
        recipients,
        signer,
        policy,
        trust,
        certificates,
    )


def encrypt_stream(
    source: Source,
    sink: Sink,
    recipients: Sequence[AnyRecipient],
    *,
    signer: Identity | None = None,
    policy: Policy = DEFAULT,
    trust: Sequence[x509.Certificate] | None = None,
    certificates: Sequence[x509.Certificate] = (),
    prefix: bytes = b"",
) -> Streamed:
    """Encrypt the whole message read from ``source`` (``prefix`` = bytes already read
    from it) to ``sink``. Its header section is protected as usual; its body passes
    through unchanged (with a ``signer``, line ends are made CRLF; it must be 7-bit, as
    ``securemail compose`` writes it)."""
    header, body = read_header_section(source, prefix)
    prepared = payload.prepare_headers(header, policy, encrypting=True)

    return _encrypt_prepared(
        sink,
        prepared,
        lambda top: write_whole(top, prepared.entity, body, canonical=signer is not None),
        recipients,
        signer,
        policy,
        trust,
        certificates,
    )


def _sign_prepared(
    sink: Sink, prepared: payload.Prepared, signer: Identity, policy: Policy
) -> DetachedSignatureWriter:
    fields_before = payload.assemble_header(prepared, [])[: -len(wire.CRLF)]
    return DetachedSignatureWriter(sink, signer, policy=policy, fields_before=fields_before)


def sign(
    sink: Sink,
    message: payload.MessageInput,
    signer: Identity,
    *,
    attachments: Sequence[StreamedAttachment] = (),
    policy: Policy = DEFAULT,
) -> Streamed:
    """Write ``message`` with ``attachments`` to ``sink`` as multipart/signed, hashing
    while writing (detached signatures only: an opaque signature would need the content's
    length first)."""
    message, boundary = with_attachments(message, attachments)
    prepared = payload.prepare(message, policy, encrypting=False)
    top = ThreadedWriter(_sign_prepared(sink, prepared, signer, policy), block=WORKER_BLOCK)
    write_entity(top, prepared.entity, boundary, attachments)
    return Streamed(prepared.mail_from, prepared.recipients)


def sign_stream(
    source: Source,
    sink: Sink,
    signer: Identity,
    *,
    policy: Policy = DEFAULT,
    prefix: bytes = b"",
) -> Streamed:
    """Sign the message read from ``source`` (7-bit; bare LF line ends are made CRLF) as
    multipart/signed to ``sink``."""
    header, body = read_header_section(source, prefix)
    prepared = payload.prepare_headers(header, policy, encrypting=False)
    top = _sign_prepared(sink, prepared, signer, policy)
    write_whole(top, prepared.entity, body, canonical=True)
    return Streamed(prepared.mail_from, prepared.recipients)


# --- reading ------------------------------------------------------------------------------------


def decrypt_stream(
    source: Source,
    sink: Sink,
    identity: Identity | None = None,
    *,
    password: str | bytes | None = None,
    policy: Policy = DEFAULT,
    spool_dir: str | os.PathLike[str] | None = None,
    prefix: bytes = b"",
) -> StreamDecryptResult:
    """Decrypt the S/MIME message read from ``source`` into ``sink``.

    Nothing is written to ``sink`` until the content's integrity is established (the GCM
    tag verified; for CBC, the padding checked: such content is still unauthenticated and
    flagged so). Until then the plaintext waits in an encrypted, anonymous spool file in
    ``spool_dir``; on any failure it is destroyed and the typed error raised.

    ``identity`` and ``password`` work as for :func:`securemail.smime.decrypt`.
    """
    if identity is None and password is None:
        raise InputError("decrypt_stream needs an identity, a password, or both")
    header, body = read_header_section(source, prefix)
    outer = wire.entity(header)
    smime_type = outer.params.get("smime-type", "enveloped-data")
    if outer.content_type not in ("application/pkcs7-mime", "application/x-pkcs7-mime") or (
        smime_type not in ("enveloped-data", "authenveloped-data")
    ):
        if outer.content_type.startswith("multipart/"):
            raise EmbeddedCiphertextError()
        raise MalformedMessageError("the message is not S/MIME encrypted")
    field = outer.raw.get("Content-Transfer-Encoding")
    encoding = field.value.lower() if field is not None else "7bit"
    reader = BerReader(Base64Source(body) if encoding == "base64" else body)
    with Spool(spool_dir, limit=policy.max_stream_size) as spool:
        try:
            opened, tag, by_certificate = _read_envelope(reader, identity, password, policy, spool)
            spool.write(opened.finalize(tag))
        except SecureMailError:
            raise
        except (ValueError, TypeError, KeyError, IndexError, OverflowError):
            # asn1crypto's own errors on a damaged structure: one answer for all of them
            raise DecryptionError() from None
        restorer = RestoringSink(sink, outer.raw)
        spool.replay(restorer)
        restorer.close()
        size = spool.size
    return StreamDecryptResult(
        authenticated=opened.authenticated,
        content_cipher=opened.name,
        recipient=identity.name if by_certificate and identity else PasswordRecipient.name,
        protected_headers=restorer.protected,
        size=size,
    )


def _read_envelope(
    reader: BerReader,
    identity: Identity | None,
    password: str | bytes | None,
    policy: Policy,
    spool: Spool,
) -> tuple[enveloped.ContentDecryptor, bytes | None, bool]:
    """Walk ContentInfo -> (Auth)EnvelopedData, decrypting the content into ``spool``;
    returns the decryptor (to finalize), the GCM tag, and whether the identity's
    certificate (rather than the password) opened it."""
    content_info = reader.expect(0x30)
    content_type = cms.ContentType.load(reader.element()).native
    if content_type not in ("enveloped_data", "authenticated_enveloped_data"):
        raise MalformedMessageError("the message is not S/MIME encrypted (no EnvelopedData)")
    authenticated = content_type == "authenticated_enveloped_data"
    explicit = reader.expect(0xA0)
    envelope = reader.expect(0x30)
    reader.element()  # version
    if reader.peek_tag() == 0xA0:
        reader.element()  # originatorInfo
    infos = cms.RecipientInfos.load(reader.element())
    content = reader.expect(0x30)
    reader.element()  # content type (id-data)
    algorithm = algos.EncryptionAlgorithm.load(reader.element())
    opened, by_certificate = _open_stream(
        infos, algorithm, identity, password, policy, authenticated
    )
    if reader.peek_tag() in (0x80, 0xA0):
        for piece in reader.octets(reader.header()):
            spool.write(opened.update(piece))
    reader.skip_end(content)
    tag = None
    if authenticated:
        if reader.peek_tag() == 0xA1:
            raise UnsupportedAlgorithmError(
                "AuthEnvelopedData with authenticated attributes", "streaming decryption"
            )
        tag = cms.OctetString.load(reader.element()).native
    # What follows the tag can only close the outer elements: nothing there is trusted or
    # used, so it is not read.
    del envelope, explicit, content_info
    return opened, tag, by_certificate


def _open_stream(
    infos: cms.RecipientInfos,
    algorithm: algos.EncryptionAlgorithm,
    identity: Identity | None,
    password: str | bytes | None,
    policy: Policy,
    authenticated: bool,
) -> tuple[enveloped.ContentDecryptor, bool]:
    """With the identity's certificate if the message names it, else with the password;
    true when the certificate opened it."""
    strict = policy.require_authenticated_encryption
    if identity is not None:
        try:
            opened = enveloped.open_stream(
                infos,
                algorithm,
                identity.private_key,
                identity.certificate,
                authenticated_container=authenticated,
                require_authenticated=strict,
            )
            return opened, True
        except NotARecipientError:
            if password is None:
                raise
    assert password is not None
    opened = enveloped.open_stream_with_password(
        infos,
        algorithm,
        password,
        authenticated_container=authenticated,
        require_authenticated=strict,
        min_iterations=policy.min_pbkdf2_iterations,
        max_iterations=policy.max_pbkdf2_iterations,
    )
    return opened, False
