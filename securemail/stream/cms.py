"""CMS envelopes written as a stream: BER with indefinite lengths, content in chunks.

The length of a streamed message is not known when its first byte goes out, so the outer
structures use BER indefinite length (what ``openssl cms -stream`` writes) and the
encrypted content is a constructed OCTET STRING of definite-length segments, one per
chunk. Only this framing is written by hand (STYLE.md, convention 8); the recipient infos
and algorithm identifiers are the DER that :mod:`securemail.smime.enveloped` declares, and
the tests parse every output back with asn1crypto and OpenSSL.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from asn1crypto import cms, core
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .. import wire
from ..policy import ContentCipher, Policy
from ..smime.enveloped import GCM_TAG_SIZE, EnvelopePlan, EnvelopeRecipient, plan_envelope
from ..smime.password import PasswordRecipient
from ..smime.signed import Signer, sign_digest, signing_digest
from .base import CHUNK, Data, Sink, Writer, check_7bit
from .encoding import encode_lines
from .threads import WORKER_BLOCK, blocks

__all__ = ["DetachedSignatureWriter", "EnvelopeWriter", "ber_length", "octet_string_header"]

_INDEFINITE_SEQUENCE = b"\x30\x80"
_INDEFINITE_EXPLICIT_0 = b"\xa0\x80"
_END = b"\x00\x00"  # end-of-contents
_ROOM = 6  # in front of a segment in its block: room for its header
_MIN_TAKE = 4096  # a block with less room than this is handed over


def ber_length(size: int) -> bytes:
    """The DER length octets for ``size`` (short form below 128, else long form)."""
    if size < 0x80:
        return bytes([size])
    octets = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(octets)]) + octets


def octet_string_header(size: int) -> bytes:
    return b"\x04" + ber_length(size)


def _envelope_head(plan: EnvelopePlan) -> bytes:
    """ContentInfo and (Auth)EnvelopedData up to the first encrypted-content segment."""
    content_type = cms.ContentType(plan.content_type).dump()
    version = cms.CMSVersion(plan.version).dump()
    infos = cms.RecipientInfos(list(plan.recipient_infos)).dump()
    algorithm = plan.content_algorithm().dump()
    data_type = cms.ContentType("data").dump()
    head: bytes = (
        _INDEFINITE_SEQUENCE  # ContentInfo
        + content_type
        + _INDEFINITE_EXPLICIT_0  # [0] EXPLICIT content
        + _INDEFINITE_SEQUENCE  # (Auth)EnvelopedData
        + version
        + infos
        + _INDEFINITE_SEQUENCE  # (Auth)EncryptedContentInfo
        + data_type
        + algorithm
        + b"\xa0\x80"  # encryptedContent [0] IMPLICIT OCTET STRING, constructed
    )
    return head


class EnvelopeWriter(Writer):
    """Encrypts what is written into a BER ContentInfo: AuthEnvelopedData (AES-GCM, the tag
    written by :meth:`finalize` as ``mac``) or EnvelopedData (AES-CBC, padded at the end).

    Build it with :meth:`for_recipients`; write the MIME entity to protect; finalize.
    """

    def __init__(self, inner: Sink, plan: EnvelopePlan) -> None:
        super().__init__(inner)
        self._plan = plan
        self._padder = None if plan.cipher.authenticated else padding.PKCS7(128).padder()
        mode = modes.GCM(plan.iv) if plan.cipher.authenticated else modes.CBC(plan.iv)
        self._cipher = Cipher(algorithms.AES(plan.key), mode).encryptor()
        inner.write(_envelope_head(plan))
        # The ciphertext is made in the blocks the layer below writes out (no copy), one
        # OCTET STRING segment per block.
        self._blocks = blocks(inner, WORKER_BLOCK)
        self._block: bytearray | None = None
        self._fill = _ROOM

    @classmethod
    def for_recipients(
        cls,
        inner: Sink,
        recipients: Sequence[EnvelopeRecipient | PasswordRecipient],
        cipher: ContentCipher,
    ) -> EnvelopeWriter:
        return cls(inner, plan_envelope(recipients, cipher))

    def _write(self, data: Data) -> None:
        if self._padder is None:
            self._encrypt(memoryview(data))
            return
        view = memoryview(data)
        for start in range(0, len(view), CHUNK):  # the padder copies what it is given
            self._encrypt(memoryview(self._padder.update(view[start : start + CHUNK])))

    def _encrypt(self, view: memoryview) -> None:
        """Encrypt ``view`` into as few blocks as hold it: each cipher call is one turn of
        the GIL, so calls are few and large."""
        while view:
            if self._block is None:
                self._block = self._blocks.claim()
            room = len(self._block) - self._fill - 15  # update_into's margin: a cipher block
            if room < _MIN_TAKE:
                self._segment()
                continue
            take = min(room, len(view))
            output = memoryview(self._block)[self._fill :]
            self._fill += self._cipher.update_into(view[:take], output)
            view = view[take:]

    def _segment(self) -> None:
        """Hand the block over as one definite-length OCTET STRING segment."""
        assert self._block is not None
        if self._fill == _ROOM:
            self._blocks.submit(self._block, 0, 0)  # nothing in it: given back
            self._block = None
            return
        header = octet_string_header(self._fill - _ROOM)
        start = _ROOM - len(header)
        self._block[start:_ROOM] = header
        self._blocks.submit(self._block, start, self._fill)
        self._block, self._fill = None, _ROOM

    def _finish(self) -> None:
        if self._block is not None:
            self._segment()
        if self._padder is not None:
            last = self._cipher.update(self._padder.finalize())
            self._inner.write(octet_string_header(len(last)) + last)
        if final := self._cipher.finalize():
            self._inner.write(octet_string_header(len(final)) + final)
        tail = _END + _END  # encryptedContent, EncryptedContentInfo
        if self._plan.cipher.authenticated:
            tag = getattr(self._cipher, "tag")  # noqa: B009 (GCM contexts only)
            assert len(tag) == GCM_TAG_SIZE
            tail += core.OctetString(tag).dump()  # mac
        self._inner.write(tail + _END + _END + _END)  # (Auth)EnvelopedData, [0], ContentInfo


class DetachedSignatureWriter(Writer):
    """A multipart/signed entity written as a stream: what is written is the signed part,
    sent on unchanged and hashed on the way; :meth:`finalize` signs the digest and writes
    the signature part (RFC 8551 3.5.3). ``fields_before`` (outer header fields, for a
    signed message rather than a signed part) precede the Content-Type field.

    The signed part must already be canonical (CRLF, 7-bit): bytes that are not ASCII
    are refused, since a relay could change them and break the signature.
    """

    def __init__(
        self,
        inner: Sink,
        signer: Signer,
        *,
        policy: Policy,
        fields_before: bytes = b"",
    ) -> None:
        super().__init__(inner)
        self._signer = signer
        self._policy = policy
        self.digest = signing_digest(signer.certificate, policy.digest)
        self._hash = hashlib.new(self.digest.value)
        self.boundary = wire.new_boundary()
        self.content_type = (
            f'multipart/signed; protocol="application/pkcs7-signature"; '
            f'micalg={self.digest.micalg}; boundary="{self.boundary}"'
        )
        inner.write(
            fields_before
            + wire.fold_field("Content-Type", self.content_type)
            + b"\r\nThis is a cryptographically signed message in MIME format.\r\n\r\n--"
            + self.boundary.encode("ascii")
            + b"\r\n"
        )

    def _write(self, data: Data) -> None:
        check_7bit(data)
        self._hash.update(data)
        self._inner.write(data)

    def _finish(self) -> None:
        der = sign_digest(
            self._hash.digest(),
            self._signer,
            digest=self.digest,
            rsa_padding=self._policy.rsa_padding,
            include_chain=self._policy.include_chain,
        )
        delimiter = b"\r\n--" + self.boundary.encode("ascii")
        self._inner.write(
            delimiter + b'\r\nContent-Type: application/pkcs7-signature; name="smime.p7s"\r\n'
            b"Content-Transfer-Encoding: base64\r\n"
            b'Content-Disposition: attachment; filename="smime.p7s"\r\n'
            b"Content-Description: S/MIME Cryptographic Signature\r\n\r\n"
            + encode_lines(der)
            + delimiter
            + b"--\r\n"
        )
