"""PGP/MIME for messages too large to hold in memory.

The same recipes as :mod:`securemail.stream.smime`, for RFC 3156 multipart/encrypted:

* :func:`encrypt` takes a message built as usual plus
  :class:`~securemail.stream.mime.StreamedAttachment` files; :func:`encrypt_stream` a whole
  message from a source. The stack is MIME entity -> :class:`OpenPGPEncryptWriter` (SEIPD
  with MDC, native) -> :class:`ArmorWriter` -> the multipart/encrypted frame -> the sink.
* :func:`decrypt_stream` reads multipart/encrypted from a source; gpg decrypts only the
  session key (the secret key never leaves it), the data is decrypted here, spooled under
  a throwaway key until the MDC verified, and then written out with the protected headers
  restored.

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
import re
from collections.abc import Callable, Iterator, Sequence

from .. import payload, wire
from ..errors import EmbeddedCiphertextError, MalformedMessageError, ToolError
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
    choose_recipients,
    encrypted_content_type,
    encrypted_frame,
    open_engine,
    signature_part,
    signed_content_type,
    signing_key,
    split_blind,
    streamed_signature_result,
)
from ..policy import DEFAULT, Policy
from .base import CHUNK, Data, Sink, Source, Writer, check_7bit
from .ber import Base64Source
from .message import (
    MAX_HEADER_SECTION,
    RestoringSink,
    StreamDecryptResult,
    Streamed,
    read_header_section,
)
from .mime import StreamedAttachment, with_attachments, write_entity, write_whole
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


class _EncryptedPart:
    """The body of the second part of a multipart/encrypted body read from ``source``,
    after checking the first (RFC 3156 4); it ends at the next delimiter, which must close
    the multipart: a third part is refused, since a reader that showed it would show
    unencrypted text as part of an encrypted message."""

    def __init__(self, source: Source, boundary: str) -> None:
        self._source = source
        self._marker = b"\n--" + boundary.encode("ascii")
        self._line = re.compile(rb"\r?\n--" + re.escape(boundary.encode("ascii")) + rb"[ \t]*\r?\n")
        self._buffer = bytearray(b"\r\n")  # so that a delimiter on the first line is found
        self._chunk = bytearray(CHUNK)  # (larger reads make the buffer's reallocations fault)
        self._ended = False
        self.fields = self._prologue()

    def _more(self) -> bool:
        count = self._source.readinto(self._chunk)
        if not count:
            return False
        self._buffer += memoryview(self._chunk)[:count]
        return True

    def _prologue(self) -> wire.Entity:
        """Read up to the body of the encrypted part; its header fields."""
        while True:
            first = self._line.search(self._buffer)
            second = first and self._line.search(self._buffer, first.end() - 2)
            if first and second:
                head_end = self._buffer.find(b"\n\r\n", second.end() - 1)
                bare_end = self._buffer.find(b"\n\n", second.end() - 1)
                ends = [e for e in (head_end, bare_end) if e >= 0]
                if ends:
                    cut = min(ends)
                    cut += 3 if cut == head_end else 2
                    version = bytes(self._buffer[first.end() : second.start()])
                    fields = bytes(self._buffer[second.end() : cut])
                    del self._buffer[:cut]
                    return self._check(version, fields)
            if len(self._buffer) > MAX_HEADER_SECTION:
                raise MalformedMessageError("no encrypted part in the first 1 MiB of the body")
            if not self._more():
                raise MalformedMessageError("multipart/encrypted must have exactly two parts")

    @staticmethod
    def _check(version: bytes, fields: bytes) -> wire.Entity:
        control = wire.entity(wire.canonicalize(version))
        if control.content_type != "application/pgp-encrypted":
            raise MalformedMessageError(
                "the first part of PGP/MIME must be application/pgp-encrypted"
            )
        if not re.search(rb"(?mi)^Version:[ \t]*1[ \t\r]*$", wire.decode_body(control)):
            raise MalformedMessageError("unsupported PGP/MIME version (only 'Version: 1')")
        data = wire.entity(wire.canonicalize(fields))
        if data.content_type != "application/octet-stream":
            raise MalformedMessageError(
                "the second part of PGP/MIME must be application/octet-stream"
            )
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:
        while True:
            found = self._buffer.find(self._marker)
            if found >= 0:
                self._close(found)
            if self._ended:
                count = min(len(buffer), len(self._buffer))
            else:
                # Hold back what could be the start of a delimiter split across reads.
                count = min(len(buffer), len(self._buffer) - len(self._marker))
            if count > 0 or self._ended:
                buffer[:count] = self._buffer[:count]
                del self._buffer[:count]
                return count
            if not self._more():
                self._ended = True  # no close delimiter: tolerated, as every client does

    def _close(self, found: int) -> None:
        """The delimiter at ``found`` ends the part; it must be the close delimiter."""
        after = found + len(self._marker)
        while len(self._buffer) < after + 2 and self._more():
            pass
        if self._buffer[after : after + 2] != b"--":
            raise EmbeddedCiphertextError()  # a third part after the encrypted one
        del self._buffer[found:]
        self._ended = True


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
    restored. Messages in other shapes (inline PGP, mangled by Exchange) are read by
    :func:`securemail.pgp.decrypt` in memory.
    """
    header, body = read_header_section(source, prefix)
    outer = wire.entity(header)
    if outer.content_type != "multipart/encrypted" or (
        outer.params.get("protocol") != "application/pgp-encrypted"
    ):
        raise MalformedMessageError("the message is not PGP/MIME encrypted (multipart/encrypted)")
    boundary = outer.params.get("boundary", "")
    if not boundary or len(boundary) > 70:
        raise MalformedMessageError("multipart boundary is missing or longer than 70 characters")
    part = _EncryptedPart(body, boundary)
    field = part.fields.raw.get("Content-Transfer-Encoding")
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


def _recipient(engine: GnuPG, key_ids: Sequence[str]) -> str:
    """The fingerprint of the secret key here that the message names (hidden recipients
    name none)."""
    for key in engine.list_keys():
        if key.has_secret and any(sub.key_id in key_ids for sub in key.keys):
            return key.fingerprint
    return ""
