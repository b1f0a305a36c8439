"""Reading OpenPGP messages natively, as a stream: :func:`decrypt_stream`.

Part of :mod:`securemail.stream.openpgp` (which re-exports what is public here). The armor
is decoded (:mod:`.openpgp_armor`) and the packets split (:mod:`.openpgp_packets`) as the
bytes arrive; the session-key packets go to a callback that returns the session key (gpg,
through :meth:`GnuPG.session_key <securemail.pgp.gpg.GnuPG.session_key>`), and the
encrypted packet (SEIPD v1) is decrypted here: OpenPGP CFB, the SHA-1 MDC over everything,
the literal data packet inside, optionally compressed (ZIP, ZLIB, BZip2; decompressed in
bounded steps) and signed (the signature packets are handed back, not verified).

Nothing is decided before the end. A malformed packet inside the encrypted data only marks
the content as failed; decryption and hashing go on to the MDC, and every failure then
gives the same :class:`IntegrityError`, so that the reader is no oracle for how a modified
ciphertext decrypts (the quick check of the repeated prefix octets is folded into that one
verdict too). The plaintext waits in a :class:`~securemail.stream.spool.Spool`, encrypted
under a throwaway key, and reaches the sink only after the verdict.
"""

from __future__ import annotations

import bz2
import dataclasses
import hashlib
import hmac
import os
import queue
import threading
import zlib
from collections.abc import Callable
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.decrepit.ciphers import algorithms as decrepit
from cryptography.hazmat.primitives.ciphers import BlockCipherAlgorithm, Cipher, algorithms

try:  # cryptography 47 moved CFB and Camellia to "decrepit"
    from cryptography.hazmat.decrepit.ciphers.algorithms import Camellia
    from cryptography.hazmat.decrepit.ciphers.modes import CFB
except ImportError:  # pragma: no cover
    from cryptography.hazmat.primitives.ciphers.algorithms import Camellia
    from cryptography.hazmat.primitives.ciphers.modes import CFB

from ..errors import (
    DecryptionError,
    InputError,
    IntegrityError,
    SizeLimitExceeded,
    UnsupportedAlgorithmError,
)
from ..policy import DEFAULT
from .base import CHUNK, Data, Sink, Source
from .openpgp_armor import ArmorError, ArmorReader
from .openpgp_packets import (
    TAG_AEAD,
    TAG_COMPRESSED,
    TAG_LITERAL,
    TAG_MARKER,
    TAG_ONE_PASS_SIGNATURE,
    TAG_PADDING,
    TAG_PKESK,
    TAG_SED,
    TAG_SEIPD,
    TAG_SIGNATURE,
    TAG_SKESK,
    MalformedPacket,
    PacketReader,
    packet,
)
from .spool import Spool

__all__ = ["OpenPGPDecryptResult", "SessionKeyProvider", "decrypt_stream"]

_SEIPD_V1 = 1
_MDC_HEAD = b"\xd3\x14"  # new-format tag 19, length 20
_MDC_SIZE = 22
_BLOCK = 1 << 16
_STEP = 1 << 20
"""Octets of ciphertext per step of the reader: large, because each step is a turn of the
GIL for the CFB worker (64 KiB steps made decryption a tenth slower)."""
_DEPTH = 3
"""Steps in flight in the reader (ciphertext and plaintext buffers)."""

SessionKeyProvider = Callable[[bytes], tuple[int, bytes]]
"""Given the session-key packets (PKESK and SKESK, concatenated), return the symmetric
algorithm ID and the session key, or raise the typed error that says why not."""


@dataclasses.dataclass(frozen=True)
class OpenPGPDecryptResult:
    """What :func:`decrypt_stream` found; the plaintext itself went to the sink."""

    size: int
    """Plaintext bytes written to the sink."""
    cipher: str
    """The symmetric cipher of the message, e.g. ``aes256``."""
    recipients: tuple[str, ...]
    """Key IDs of the public-key session-key packets (``0000000000000000`` for a hidden
    recipient), in message order."""
    compression: str | None
    """``zip``, ``zlib``, ``bzip2`` (or ``none`` for a stored compressed packet), or None."""
    literal_format: str
    """The literal data packet's format octet: ``b`` binary, ``t``/``u`` text, ``m`` MIME.
    The data is passed on as it is in every case: text keeps its canonical CRLF line ends
    (``gpg --decrypt`` turns them into LF on Unix)."""
    filename: bytes
    signature_packets: bytes
    """The signature packets found next to the literal data (one-pass signature packets
    left out); empty when the message is not signed. **Not verified here**: they form a
    detached signature over the plaintext, which ``gpg --verify SIGNATURE DATA`` (or
    :meth:`GnuPG.verify_detached <securemail.pgp.gpg.GnuPG.verify_detached>`) checks."""

    @property
    def signed(self) -> bool:
        return bool(self.signature_packets)


_CIPHERS: dict[int, tuple[str, int, Callable[[bytes], BlockCipherAlgorithm]]] = {
    # RFC 9580 9.3: ID -> (name, key size, algorithm)
    1: ("idea", 16, decrepit.IDEA),
    2: ("3des", 24, decrepit.TripleDES),
    3: ("cast5", 16, decrepit.CAST5),
    4: ("blowfish", 16, decrepit.Blowfish),
    7: ("aes128", 16, algorithms.AES),
    8: ("aes192", 24, algorithms.AES),
    9: ("aes256", 32, algorithms.AES),
    11: ("camellia128", 16, Camellia),
    12: ("camellia192", 24, Camellia),
    13: ("camellia256", 32, Camellia),
}
_COMPRESSION = {0: "none", 1: "zip", 2: "zlib", 3: "bzip2"}
_MAX_SIGNATURES = 1 << 20
"""Bytes of one-pass signature and signature packets kept (a message has one or two)."""


def _cipher_for(algorithm: int, key: bytes) -> tuple[str, BlockCipherAlgorithm]:
    known = _CIPHERS.get(algorithm)
    if known is None:
        raise UnsupportedAlgorithmError(f"symmetric algorithm {algorithm}", "OpenPGP decryption")
    name, size, make = known
    if len(key) != size:
        raise DecryptionError()
    try:
        return name, make(key)
    except UnsupportedAlgorithm:
        raise UnsupportedAlgorithmError(name, "OpenPGP decryption (not in this OpenSSL)") from None


class _Inflater:
    """A compressed data packet's decompressor (RFC 9580 5.6), bounded per call.

    ``emit`` receives the output in pieces of at most CHUNK bytes and returns False to
    stop (past the output limit): a few bytes of BZip2 can expand to gigabytes, which are
    then never produced. Octets after the end of the compressed stream are ignored, as gpg,
    Sequoia and the in-memory reader ignore them (the MDC covers them all the same).
    Errors of the decompressor become :class:`MalformedPacket`;
    errors of ``emit`` (a full disk under the spool) pass through as they are."""

    def __init__(self, algorithm: int) -> None:
        self._zlib: Any = None
        self._bz2: bz2.BZ2Decompressor | None = None
        if algorithm == 1:
            self._zlib = zlib.decompressobj(-15)
        elif algorithm == 2:
            self._zlib = zlib.decompressobj()
        elif algorithm == 3:
            self._bz2 = bz2.BZ2Decompressor()
        elif algorithm != 0:
            raise MalformedPacket(f"unknown compression algorithm {algorithm}")

    def feed(self, data: Data, emit: Callable[[bytes], bool]) -> None:
        if self._zlib is not None:
            if self._zlib.eof:
                return  # octets after the deflate stream (RNP writes some): ignored, as by gpg
            more = emit(_inflate(self._zlib.decompress, data))
            while more and self._zlib.unconsumed_tail:
                more = emit(_inflate(self._zlib.decompress, self._zlib.unconsumed_tail))
        elif self._bz2 is not None:
            if self._bz2.eof:
                return
            more = emit(_inflate(self._bz2.decompress, data))
            while more and not self._bz2.needs_input and not self._bz2.eof:
                more = emit(_inflate(self._bz2.decompress, b""))
        else:
            emit(bytes(data))

    def finish(self, emit: Callable[[bytes], bool]) -> None:
        if self._zlib is not None:
            while (out := _inflate(self._zlib.decompress, b"")) and emit(out):
                pass
            if not self._zlib.eof:
                raise MalformedPacket("the compressed stream is incomplete")
        elif self._bz2 is not None and not self._bz2.eof:
            raise MalformedPacket("the compressed stream is incomplete")


def _inflate(decompress: Callable[[Data, int], bytes], data: Data) -> bytes:
    try:
        return decompress(data, CHUNK)
    except (zlib.error, OSError, EOFError, ValueError) as exc:
        raise MalformedPacket(f"bad compressed data: {exc}") from None


class _Content:
    """What the encrypted packet holds, gathered as it is decrypted: the literal data
    (into the spool, up to the limit), signature packets, and what was found."""

    def __init__(self, spool: Spool, limit: int) -> None:
        self.spool = spool
        self.limit = limit
        self.size = 0
        self.expanded = 0
        self.exceeded = False
        self.literals = 0
        self.literal_format = ""
        self.filename = b""
        self.compression: str | None = None
        self.unsupported: str | None = None
        self.signatures = bytearray()

    def literal(self, data: memoryview) -> None:
        if self.exceeded:
            return
        self.size += len(data)
        if self.size > self.limit:
            self.exceeded = True
            return
        self.spool.write(data)


_OTHER, _LITERAL_HEADER, _LITERAL_DATA, _COMPRESSED, _SIGNATURE, _SKIP = range(6)


class _Inner:
    """Handles the packets inside the encrypted packet (and inside one compressed packet
    there): RFC 9580 10.3, an optionally compressed, optionally signed literal message."""

    def __init__(self, content: _Content, *, nested: bool) -> None:
        self._content = content
        self._nested = nested
        self._mode = _OTHER
        self._head = bytearray()
        self._packet = bytearray()
        self._tag = 0
        self._inflater: _Inflater | None = None
        self._reader: PacketReader | None = None

    def start(self, tag: int, header: bytes) -> None:
        content = self._content
        self._tag = tag
        if tag == TAG_LITERAL:
            content.literals += 1
            if content.literals > 1:
                raise MalformedPacket("more than one literal data packet")
            self._mode = _LITERAL_HEADER
            self._head.clear()
        elif tag == TAG_COMPRESSED and not self._nested and content.compression is None:
            if content.literals or content.signatures:
                raise MalformedPacket("a compressed packet after other packets")
            self._mode = _COMPRESSED
            self._inflater = None
            self._reader = PacketReader(_Inner(content, nested=True))
        elif tag == TAG_SIGNATURE:
            self._mode = _SIGNATURE
            self._packet.clear()
        elif tag in (TAG_ONE_PASS_SIGNATURE, TAG_MARKER, TAG_PADDING):
            self._mode = _SKIP
        else:
            raise MalformedPacket(f"unexpected packet of type {tag} in the encrypted data")

    def body(self, data: memoryview) -> None:
        mode = self._mode
        if mode == _LITERAL_DATA:
            self._content.literal(data)
        elif mode == _LITERAL_HEADER:
            self._literal_header(data)
        elif mode == _COMPRESSED:
            self._compressed(data)
        elif mode == _SIGNATURE:
            self._packet += data
            if len(self._content.signatures) + len(self._packet) > _MAX_SIGNATURES:
                raise MalformedPacket("too many signature packets")

    def end(self) -> None:
        mode, self._mode = self._mode, _OTHER
        if mode == _LITERAL_HEADER:
            raise MalformedPacket("truncated literal data header")
        if mode == _SIGNATURE:
            self._content.signatures += packet(self._tag, self._packet)
        elif mode == _COMPRESSED and not self._content.exceeded:
            if self._inflater is None or self._reader is None:
                raise MalformedPacket("empty compressed packet")
            self._inflater.finish(self._expanded)
            self._reader.close()

    def _literal_header(self, data: memoryview) -> None:
        """Format octet, file name (length-prefixed) and date; then the data begins."""
        head = self._head
        while data:
            need = 2 if len(head) < 2 else 2 + head[1] + 4
            take = min(len(data), need - len(head))
            head += data[:take]
            data = data[take:]
            if len(head) > 2 and len(head) == 2 + head[1] + 4:
                self._content.literal_format = chr(head[0])
                self._content.filename = bytes(head[2 : 2 + head[1]])
                self._mode = _LITERAL_DATA
                if data:
                    self._content.literal(data)
                return

    def _compressed(self, data: memoryview) -> None:
        if self._inflater is None:
            if data[0] not in _COMPRESSION:
                self._content.unsupported = f"compression algorithm {data[0]}"
            self._inflater = _Inflater(data[0])
            self._content.compression = _COMPRESSION[data[0]]
            data = data[1:]
        if data and not self._content.exceeded:
            self._inflater.feed(data, self._expanded)

    def _expanded(self, data: bytes) -> bool:
        """Decompressed data, to the packets inside; False once past the limit (the
        literal data, and room for the packets around it)."""
        content = self._content
        content.expanded += len(data)
        if content.expanded > content.limit + _MAX_SIGNATURES + _BLOCK:
            content.exceeded = True
        if content.exceeded:
            return False
        if data:
            assert self._reader is not None
            self._reader.feed(data)
        return True


class _Block:
    """One step of decryption: up to _STEP octets of ciphertext and their plaintext."""

    __slots__ = ("ciphertext", "plaintext", "size")

    def __init__(self, block_size: int) -> None:
        self.ciphertext = bytearray(_STEP)
        self.plaintext = bytearray(_STEP + block_size)
        self.size = 0


def _decrypt_blocks(
    decryptor: Any, jobs: queue.SimpleQueue[_Block | None], done: queue.SimpleQueue[Any]
) -> None:
    """The worker: decrypts the blocks in order (holding no reference to the reader)."""
    try:
        while (block := jobs.get()) is not None:
            decryptor.update_into(memoryview(block.ciphertext)[: block.size], block.plaintext)
            done.put(block)
    except BaseException as exc:  # handed to the reader's thread
        done.put(exc)


class _Decrypted:
    """The encrypted packet's plaintext stream (RFC 9580 5.13.1): the random prefix, the
    packets (to :class:`_Inner`), the MDC packet held back until the end. Nothing is
    decided before the end: a malformed inner packet only marks the content as failed,
    decryption and hashing go on, and the verdict is the same for every failure.

    With ``threaded``, CFB decryption (the slowest step; ``cryptography`` releases the GIL
    during it) runs in a worker thread, a few blocks ahead of the hashing, parsing and
    spooling done in the caller's thread. :meth:`close` stops the worker."""

    def __init__(
        self, algorithm: BlockCipherAlgorithm, content: _Content, *, threaded: bool
    ) -> None:
        block_size = algorithm.block_size // 8
        self._decryptor = Cipher(algorithm, CFB(bytes(block_size))).decryptor()
        self._sha1 = hashlib.sha1()  # noqa: S324 (the MDC is SHA-1 by definition)
        self._free = [_Block(block_size) for _ in range(_DEPTH if threaded else 1)]
        self._block = self._free.pop()
        self._threaded = threaded
        self._jobs: queue.SimpleQueue[_Block | None] | None = None
        self._done: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._worker: threading.Thread | None = None
        self._in_flight = 0
        self._tail = b""  # the last 22 octets so far: the MDC packet at the end
        self._prefix = bytearray()
        self._prefix_size = block_size + 2
        self._reader: PacketReader | None = PacketReader(_Inner(content, nested=False))
        self.failed = False

    def feed(self, data: memoryview) -> None:
        block = self._block
        while data:
            take = min(len(data), _STEP - block.size)
            block.ciphertext[block.size : block.size + take] = data[:take]
            block.size += take
            data = data[take:]
            if block.size == _STEP:
                self._submit()
                block = self._block

    def _submit(self) -> None:
        block = self._block
        if not self._threaded:
            self._decryptor.update_into(memoryview(block.ciphertext)[: block.size], block.plaintext)
            self._release(block)
            return
        if self._jobs is None:
            self._jobs = queue.SimpleQueue()
            self._worker = threading.Thread(
                target=_decrypt_blocks,
                args=(self._decryptor, self._jobs, self._done),
                name="securemail-openpgp-cfb",
                daemon=True,
            )
            self._worker.start()
        self._jobs.put(block)
        self._in_flight += 1
        if not self._free:
            self._collect()
        self._block = self._free.pop()

    def _collect(self) -> None:
        """Wait for the oldest block in flight and take its plaintext."""
        result = self._done.get()
        self._in_flight -= 1
        if isinstance(result, BaseException):
            raise result
        self._release(result)
        self._free.append(result)

    def _release(self, block: _Block) -> None:
        """Plaintext in stream order: all but the last 22 octets go on."""
        plain = memoryview(block.plaintext)[: block.size]
        block.size = 0
        if len(plain) >= _MDC_SIZE:
            if self._tail:
                self._deliver(memoryview(self._tail))
            self._deliver(plain[:-_MDC_SIZE])
            self._tail = bytes(plain[-_MDC_SIZE:])
        else:
            joined = self._tail + bytes(plain)
            keep = max(0, len(joined) - _MDC_SIZE)
            self._deliver(memoryview(joined)[:keep])
            self._tail = joined[keep:]

    def _deliver(self, plain: memoryview) -> None:
        if not plain:
            return
        self._sha1.update(plain)
        if len(self._prefix) < self._prefix_size:
            take = min(len(plain), self._prefix_size - len(self._prefix))
            self._prefix += plain[:take]
            plain = plain[take:]
        if plain and self._reader is not None:
            try:
                self._reader.feed(plain)
            except MalformedPacket:
                self._reader = None
                self.failed = True

    def verdict(self) -> tuple[bool, bool]:
        """Whether the MDC matches, and whether the content was well formed (both
        computed in full whatever the outcome)."""
        if self._block.size:
            self._submit()
        while self._in_flight:
            self._collect()
        self.close()
        self._decryptor.finalize()
        tail = self._tail
        self._sha1.update(tail[:2])
        digest = self._sha1.digest()
        block = self._prefix_size - 2
        good = (
            len(tail) == _MDC_SIZE
            and len(self._prefix) == self._prefix_size
            and hmac.compare_digest(tail[:2] + digest, _MDC_HEAD + tail[2:].ljust(20, b"\x00"))
            and self._prefix[block - 2 : block] == self._prefix[block:]
        )
        if self._reader is not None:
            try:
                self._reader.close()
            except MalformedPacket:
                self.failed = True
        return good, not self.failed

    def close(self) -> None:
        """Stop the worker (at the end, or when reading failed)."""
        if self._jobs is not None and self._worker is not None:
            self._jobs.put(None)
            self._worker.join()
            self._worker = None


_KEYS, _ENCRYPTED, _AFTER = range(3)


class _Message:
    """The outer packets: session-key packets, then one encrypted packet (SEIPD v1)."""

    def __init__(
        self, session_key: SessionKeyProvider, content: _Content, *, threaded: bool
    ) -> None:
        self._session_key = session_key
        self._content = content
        self._threaded = threaded
        self._state = _KEYS
        self._tag = 0
        self._packet = bytearray()
        self.key_packets = bytearray()
        self.recipients: list[str] = []
        self.cipher = ""
        self.decrypted: _Decrypted | None = None
        self._versioned = False

    def start(self, tag: int, header: bytes) -> None:
        self._tag = tag
        self._packet.clear()
        if self._state == _AFTER:
            raise DecryptionError("unexpected data after the encrypted packet")
        if tag in (TAG_PKESK, TAG_SKESK, TAG_MARKER, TAG_PADDING):
            return
        if tag == TAG_SEIPD:
            if not self.key_packets:
                raise DecryptionError("the message has no session-key packet")
            self._state = _ENCRYPTED
            return
        if tag == TAG_SED:
            raise IntegrityError(
                "the message is not integrity-protected (no MDC); refused, no plaintext released"
            )
        if tag == TAG_AEAD:
            raise UnsupportedAlgorithmError("OCB encrypted data (LibrePGP)", "OpenPGP decryption")
        raise DecryptionError("not an encrypted OpenPGP message")

    def body(self, data: memoryview) -> None:
        if self._state != _ENCRYPTED:
            if self._tag in (TAG_PKESK, TAG_SKESK):
                self._packet += data
            return
        if not self._versioned:
            self._versioned = True
            self._begin(data[0])
            data = data[1:]
        if data and self.decrypted is not None:
            self.decrypted.feed(data)

    def end(self) -> None:
        if self._state == _ENCRYPTED:
            if not self._versioned:
                raise IntegrityError("the encrypted packet is empty")
            self._state = _AFTER
        elif self._tag in (TAG_PKESK, TAG_SKESK):
            body = bytes(self._packet)
            self.key_packets += packet(self._tag, body)
            if self._tag == TAG_PKESK and len(body) >= 9 and body[0] == 3:
                self.recipients.append(body[1:9].hex().upper())

    def _begin(self, version: int) -> None:
        if version != _SEIPD_V1:
            what = "SEIPD v2 (AEAD)" if version == 2 else f"SEIPD version {version}"
            raise UnsupportedAlgorithmError(what, "OpenPGP decryption")
        algorithm, key = self._session_key(bytes(self.key_packets))
        self.cipher, cipher = _cipher_for(algorithm, key)
        self.decrypted = _Decrypted(cipher, self._content, threaded=self._threaded)

    @property
    def complete(self) -> bool:
        return self._state == _AFTER


def decrypt_stream(
    source: Source,
    sink: Sink,
    *,
    session_key: SessionKeyProvider,
    spool_dir: str | os.PathLike[str] | None = None,
    max_output: int = DEFAULT.max_stream_size,
    threaded: bool = True,
    also: Callable[[bytes], Sink | None] | None = None,
) -> OpenPGPDecryptResult:
    """Decrypt the OpenPGP message in ``source`` (armored or binary) into ``sink``.

    ``session_key`` receives the message's session-key packets and returns (symmetric
    algorithm ID, session key); :meth:`GnuPG.session_key
    <securemail.pgp.gpg.GnuPG.session_key>` is the usual one. The encrypted packet must be
    SEIPD v1 with an MDC; its content a literal data packet, possibly compressed (ZIP,
    ZLIB, BZip2) and signed (the signature packets are returned, not verified).

    **No plaintext reaches ``sink`` before the MDC has been verified**: it is spooled,
    encrypted under a throwaway key, in an unnamed temporary file in ``spool_dir`` and
    written out afterwards. On any failure the spool is destroyed and one of these is
    raised: :class:`IntegrityError` (modified, truncated, without an MDC, or malformed
    inside: all look alike), :class:`SizeLimitExceeded` (more than ``max_output`` bytes of
    plaintext; decided after the MDC check too), :class:`UnsupportedAlgorithmError`,
    :class:`DecryptionError` (not an encrypted message, damaged framing or armor), or
    what ``session_key`` raised (:class:`~securemail.errors.NoSecretKeyError`,
    :class:`~securemail.errors.WrongPasswordError`, ...).

    ``threaded=False`` keeps the decryption in the caller's thread (by default a worker
    thread decrypts a few blocks ahead). ``also``, given the signature packets once the
    checks have passed, may return a second sink that receives the plaintext too (a
    verifier of the signature: the literal data is what it covers).
    """
    if max_output <= 0:
        raise InputError("max_output must be positive")
    with Spool(spool_dir, limit=max_output) as spool:
        content = _Content(spool, max_output)
        message = _Message(session_key, content, threaded=threaded)
        try:
            _read(source, message)
            if message.decrypted is None:
                raise DecryptionError("no encrypted data in the message")
            authentic, well_formed = message.decrypted.verdict()
        finally:
            if message.decrypted is not None:
                message.decrypted.close()
        if not authentic:
            raise IntegrityError()
        if content.exceeded:  # (the content was not parsed further)
            raise SizeLimitExceeded("the decrypted content", max_output)
        if content.unsupported is not None:
            raise UnsupportedAlgorithmError(content.unsupported, "OpenPGP decryption")
        if not well_formed or content.literals != 1:
            raise IntegrityError()
        if also is not None:
            sink = _Tee(sink, also(bytes(content.signatures)))
        spool.replay(sink)
    return OpenPGPDecryptResult(
        size=content.size,
        cipher=message.cipher,
        recipients=tuple(message.recipients),
        compression=content.compression,
        literal_format=content.literal_format,
        filename=content.filename,
        signature_packets=bytes(content.signatures),
    )


class _Tee:
    """Writes to two sinks (the second may be None: to one)."""

    def __init__(self, first: Sink, second: Sink | None) -> None:
        self._first, self._second = first, second

    def write(self, data: Data) -> int:
        self._first.write(data)
        if self._second is not None:
            self._second.write(data)
        return len(data)


def _read(source: Source, message: _Message) -> None:
    """Feed everything in ``source`` through the armor (if armored) and the packet reader
    to ``message``; raise if the stream ends early or its framing is broken."""
    packets = PacketReader(message, max_packet=1 << 16)
    armor: ArmorReader | None = None
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    kind_known = False
    try:
        while count := source.readinto(buffer):
            data = view[:count]
            if not kind_known:
                if not bytes(data).strip():
                    continue
                kind_known = True
                if not bytes(data).lstrip()[0] & 0x80:
                    armor = ArmorReader(packets.feed, ("MESSAGE",))
            if armor is not None:
                armor.feed(data)
            else:
                packets.feed(data)
        if message.decrypted is not None and not message.complete:
            raise IntegrityError(
                "the encrypted data is incomplete (truncated); no plaintext released"
            )
        if armor is not None:
            armor.close()
        packets.close()
    except MalformedPacket as exc:
        raise DecryptionError(f"malformed OpenPGP data: {exc}") from None
    except ArmorError as exc:
        raise DecryptionError(f"malformed OpenPGP armor: {exc}") from None
