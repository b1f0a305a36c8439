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

Not streamed: signing. A PGP/MIME signature would need gpg to hash the whole entity; use
:func:`securemail.pgp.encrypt` with ``signer=`` for messages that fit in memory, or sign
with S/MIME (:func:`securemail.stream.smime.encrypt` takes a ``signer``). An OpenPGP
signature inside a message being decrypted is reported, not checked.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Sequence

from .. import payload, wire
from ..errors import EmbeddedCiphertextError, MalformedMessageError
from ..pgp.gpg import GnuPG, KeyInfo, Passphrase
from ..pgp.mime import (
    KeySource,
    Selector,
    choose_recipients,
    encrypted_content_type,
    encrypted_frame,
    open_engine,
    split_blind,
)
from ..policy import DEFAULT, Policy
from .base import CHUNK, Data, Sink, Source, Writer
from .ber import Base64Source
from .message import (
    MAX_HEADER_SECTION,
    RestoringSink,
    StreamDecryptResult,
    Streamed,
    read_header_section,
)
from .mime import StreamedAttachment, copy_into, with_attachments, write_entity
from .openpgp import ArmorWriter, OpenPGPEncryptWriter
from .openpgp_decrypt import decrypt_stream as decrypt_openpgp
from .openpgp_keys import RecipientKey, recipient_keys

__all__ = ["decrypt_stream", "encrypt", "encrypt_stream"]


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


def _encrypt_prepared(
    sink: Sink,
    prepared: payload.Prepared,
    write: Callable[[Writer], None],
    recipients: Sequence[Selector],
    keys: Sequence[KeySource],
    gnupg: GnuPG | None,
    policy: Policy,
) -> Streamed:
    with open_engine(gnupg, keys, policy) as (engine, imported):
        chosen = choose_recipients(engine, imported, recipients, prepared)
        native = _native_keys(engine, chosen, prepared)
    boundary = wire.new_boundary()
    head, tail = encrypted_frame(boundary)
    sink.write(payload.assemble_header(prepared, [encrypted_content_type(boundary)]) + head)
    write(OpenPGPEncryptWriter.for_recipients(ArmorWriter(_Frame(sink, tail)), native))
    return Streamed(prepared.mail_from, prepared.recipients)


def encrypt(
    sink: Sink,
    message: payload.MessageInput,
    recipients: Sequence[Selector] = (),
    *,
    keys: Sequence[KeySource] = (),
    attachments: Sequence[StreamedAttachment] = (),
    gnupg: GnuPG | None = None,
    policy: Policy = DEFAULT,
) -> Streamed:
    """Write ``message`` with ``attachments`` (read in chunks) PGP/MIME-encrypted to
    ``sink``. Recipients are chosen as :func:`securemail.pgp.encrypt` chooses them and all
    are checked before anything is written (fail-closed)."""
    message, boundary = with_attachments(message, attachments)
    prepared = payload.prepare(message, policy, encrypting=True)
    return _encrypt_prepared(
        sink,
        prepared,
        lambda top: write_entity(
            top, prepared.entity, boundary, attachments, binary=policy.binary_attachments
        ),
        recipients,
        keys,
        gnupg,
        policy,
    )


def encrypt_stream(
    source: Source,
    sink: Sink,
    recipients: Sequence[Selector] = (),
    *,
    keys: Sequence[KeySource] = (),
    gnupg: GnuPG | None = None,
    policy: Policy = DEFAULT,
    prefix: bytes = b"",
) -> Streamed:
    """Encrypt the whole message read from ``source`` (``prefix`` = bytes already read
    from it) to ``sink``: its header section protected as usual, its body passed through."""
    header, body = read_header_section(source, prefix)
    prepared = payload.prepare_headers(header, policy, encrypting=True)

    def write(top: Writer) -> None:
        top.write(prepared.entity)
        copy_into(top, body)
        top.finalize()

    return _encrypt_prepared(sink, prepared, write, recipients, keys, gnupg, policy)


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
    with open_engine(gnupg, keys, policy) as (engine, _):
        opened = decrypt_openpgp(
            data,
            restorer,
            session_key=lambda packets: engine.session_key(packets, passphrase),
            spool_dir=spool_dir,
            max_output=policy.max_stream_size,
        )
        restorer.close()
        recipient = _recipient(engine, opened.recipients)
    return StreamDecryptResult(
        authenticated=True,  # the MDC verified, or nothing was written
        content_cipher=f"openpgp-{opened.cipher}-mdc",
        recipient=recipient,
        protected_headers=restorer.protected,
        size=opened.size,
        unchecked_signature=opened.signed,
    )


def _recipient(engine: GnuPG, key_ids: Sequence[str]) -> str:
    """The fingerprint of the secret key here that the message names (hidden recipients
    name none)."""
    for key in engine.list_keys():
        if key.has_secret and any(sub.key_id in key_ids for sub in key.keys):
            return key.fingerprint
    return ""
