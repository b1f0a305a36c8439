"""OpenPGP messages written and read natively, as streams, in bounded memory.

gpg is the reference and stays the engine for everything that touches a secret key, but
``gpg -z 0 --armor --encrypt`` and ``gpg --decrypt`` run at about 100 MiB/s here, while the
bulk of a large message is plain symmetric cryptography. So the data packets are written
and read here, with ``cryptography``:

* :class:`OpenPGPEncryptWriter` writes the session-key packets (PKESK v3 to RSA and ECDH
  keys read from an export, :mod:`.openpgp_keys`) and then one Symmetrically Encrypted
  Integrity Protected Data packet, version 1 (RFC 9580 5.13.1): AES-256 in OpenPGP CFB
  mode with a zero IV over 16 random octets, their last two repeated, a Literal Data packet
  (binary, no name, date zero) and the Modification Detection Code packet (SHA-1 over all
  of it). Both the literal and the encrypted packet use partial body lengths of 1 MiB
  (RFC 9580 4.2.1.4), so nothing needs the total length. Stack it on :class:`ArmorWriter`
  for ASCII armor.
* :func:`decrypt_stream` (:mod:`.openpgp_decrypt`) reads such a message, or gpg's, armored
  or binary: the session-key packets go to a callback (:meth:`GnuPG.session_key
  <securemail.pgp.gpg.GnuPG.session_key>` has gpg decrypt one with its secret key), the
  rest is decrypted here, and the plaintext reaches the sink only after the MDC verified.

CFB encryption cannot be parallelized, and is the slowest step (about 560 MiB/s here); the
writer runs it in a worker thread (``cryptography`` releases the GIL while it encrypts)
while the caller's thread copies and hashes the next block and base64-encodes and writes
the previous ones. At most three blocks of 1 MiB are in flight. Blocks are large because
each one is a turn of the GIL for the worker, and a turn costs a wake-up of the other
core: with 64 KiB blocks the worker spent a fifth of its time on them (PGP/MIME encryption
of a binary attachment, 1 GiB: 3.48x gpg with 64 KiB blocks, 3.91x with 1 MiB).

gpg 2.2 finds the end of armored data that has no CRC-24 line only at ``=`` padding (it
reads the tail line as base64 otherwise), and :class:`ArmorWriter` writes that line only
for small data (:mod:`.openpgp_armor` explains why). So the writer keeps the length of the
binary message indivisible by 3: the length octets of the encrypted packet come in forms
of different sizes that are all valid. Only a message under 513 octets may have no such
form; armored, the checksum line covers it, otherwise it starts with a Marker packet
(RFC 9580 5.8).
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
import weakref
from collections.abc import Sequence
from typing import Any

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

try:  # cryptography 47 moved CFB to "decrepit"
    from cryptography.hazmat.decrepit.ciphers.modes import CFB
except ImportError:  # pragma: no cover
    from cryptography.hazmat.primitives.ciphers.modes import CFB

from .base import Data, Sink, Writer
from .openpgp_armor import ArmorWriter
from .openpgp_decrypt import OpenPGPDecryptResult, SessionKeyProvider, decrypt_stream
from .openpgp_keys import AES256, RecipientKey, recipient_keys, session_key_packets
from .openpgp_packets import TAG_LITERAL, TAG_SEIPD, body_length, partial_length

__all__ = [
    "ArmorWriter",
    "OpenPGPDecryptResult",
    "OpenPGPEncryptWriter",
    "RecipientKey",
    "SessionKeyProvider",
    "decrypt_stream",
    "recipient_keys",
]

BLOCK = 1 << 20
"""Partial body length of both the literal and the encrypted packet, and the size of one
step of the writer (RFC 9580 allows parts of up to 1 GiB)."""
_DEPTH = 3
"""Blocks in flight in the writer (plaintext and ciphertext buffers of BLOCK each)."""
_HEAD = 8
"""Room in front of each ciphertext block for the packet header and length octets."""
_LITERAL_HEAD = b"b\x00\x00\x00\x00\x00"
"""Literal data header (RFC 9580 5.9): binary, empty file name, date zero."""
_MDC_HEAD = b"\xd3\x14"  # new-format tag 19, length 20
_MARKER = b"\xca\x03PGP"  # RFC 9580 5.8
_SEIPD_V1 = 1

# --- writing --------------------------------------------------------------------------------------


def _length(part: int, *, last: bool) -> bytes:
    """Length octets of a part of ``abs(part)`` octets: a partial length unless ``last``;
    a definite one in five octets if ``part`` is negative."""
    if not last:
        return partial_length(part)
    if part < 0:
        return b"\xff" + (-part).to_bytes(4, "big")
    return body_length(part)


def _length_octets(framing: list[int]) -> int:
    return sum(len(_length(p, last=i == len(framing) - 1)) for i, p in enumerate(framing))


class _Slot:
    """One step of the writer: a block of the plaintext stream and its ciphertext."""

    __slots__ = ("cipher", "final", "first", "plain", "size")

    def __init__(self) -> None:
        self.plain = bytearray(BLOCK)
        self.cipher = bytearray(_HEAD + BLOCK + 16)
        self.size = 0
        self.first = False
        self.final = False


def _encrypt_blocks(
    encryptor: Any, jobs: queue.SimpleQueue[_Slot | None], done: queue.SimpleQueue[Any]
) -> None:
    """The worker: encrypts the slots in order (holding no reference to the writer)."""
    try:
        while (slot := jobs.get()) is not None:
            encryptor.update_into(
                memoryview(slot.plain)[: slot.size], memoryview(slot.cipher)[_HEAD:]
            )
            done.put(slot)
    except BaseException as exc:  # handed to the writer's thread
        done.put(exc)


class OpenPGPEncryptWriter(Writer):
    """Encrypts what is written into an OpenPGP message (binary packets; stack it on an
    :class:`ArmorWriter` for the armored form PGP/MIME carries).

    Build it with :meth:`for_recipients`; write the data (for PGP/MIME, the MIME entity);
    finalize. ``threaded=False`` keeps all the work in the caller's thread.
    """

    def __init__(
        self, inner: Sink, session_key: bytes, key_packets: bytes, *, threaded: bool = True
    ) -> None:
        if len(session_key) != 32:
            raise ValueError("an AES-256 session key has 32 octets")
        if not key_packets:
            raise ValueError("at least one session-key packet is needed")
        super().__init__(inner)
        self._encryptor = Cipher(algorithms.AES(session_key), CFB(bytes(16))).encryptor()
        self._threaded = threaded
        self._sha1 = hashlib.sha1()  # noqa: S324 (the MDC is SHA-1 by definition)
        self._hashing = True
        self._free = [_Slot() for _ in range(_DEPTH)]
        self._slot = self._free.pop()
        self._fill = 0
        self._capacity = BLOCK - 1  # the first block shares its length with the version octet
        self._first = True
        self._literal = bytearray(BLOCK)
        self._literal[: len(_LITERAL_HEAD)] = _LITERAL_HEAD
        self._literal_fill = len(_LITERAL_HEAD)
        self._literal_started = False
        self._jobs: queue.SimpleQueue[_Slot | None] | None = None
        self._done: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._in_flight = 0
        self._worker: threading.Thread | None = None
        self._stop_worker: weakref.finalize[Any, Any] | None = None
        self._key_packets = key_packets  # written with the first block (see _output)
        self._written = 0
        prefix = os.urandom(16)
        self._emit(prefix + prefix[-2:])

    @classmethod
    def for_recipients(
        cls, inner: Sink, keys: Sequence[RecipientKey], *, threaded: bool = True
    ) -> OpenPGPEncryptWriter:
        """A writer whose message each of ``keys`` (from :func:`recipient_keys`) opens."""
        session_key, packets = session_key_packets(list(keys), AES256)
        return cls(inner, session_key, packets, threaded=threaded)

    # -- the literal data packet --

    def _write(self, data: Data) -> None:
        # A part's length octets come before it, and only the last part has a definite
        # length: what may be the last part waits in _literal. Once a whole part is at hand
        # it goes straight from ``data`` into the plaintext stream, so each octet is copied
        # once (only the remainder of a write, under a part, is copied twice).
        view = memoryview(data).cast("B")
        while view:
            fill = self._literal_fill
            take = BLOCK - fill
            if len(view) < take:
                self._literal[fill : fill + len(view)] = view
                self._literal_fill += len(view)
                return
            self._emit(self._partial_head())
            if fill:
                self._emit(memoryview(self._literal)[:fill])
            self._emit(view[:take])
            self._literal_fill = 0
            view = view[take:]

    def _partial_head(self) -> bytes:
        head = partial_length(BLOCK)
        if not self._literal_started:
            self._literal_started = True
            head = bytes([0xC0 | TAG_LITERAL]) + head
        return head

    # -- the plaintext stream of the encrypted packet, in blocks --

    def _emit(self, data: Data) -> None:
        view = memoryview(data)
        while view:
            if self._fill == self._capacity:
                # Flushed only when more follows, so the last block is never empty.
                self._flush(final=False)
            take = min(len(view), self._capacity - self._fill)
            self._slot.plain[self._fill : self._fill + take] = view[:take]
            self._fill += take
            view = view[take:]

    def _flush(self, *, final: bool) -> None:
        slot = self._slot
        if self._hashing:
            self._sha1.update(memoryview(slot.plain)[: self._fill])
        slot.size, slot.first, slot.final = self._fill, self._first, final
        self._first = False
        self._capacity = BLOCK
        self._fill = 0
        if self._jobs is None and self._threaded and not final:
            self._start_worker()
        if self._jobs is None:
            self._encryptor.update_into(
                memoryview(slot.plain)[: slot.size], memoryview(slot.cipher)[_HEAD:]
            )
            self._output(slot)
            return
        self._jobs.put(slot)
        self._in_flight += 1
        if final:
            return
        if not self._free:
            self._free.append(self._collect())
        self._slot = self._free.pop()

    def _start_worker(self) -> None:
        jobs: queue.SimpleQueue[_Slot | None] = queue.SimpleQueue()
        self._jobs = jobs
        self._worker = threading.Thread(
            target=_encrypt_blocks,
            args=(self._encryptor, jobs, self._done),
            name="securemail-openpgp-cfb",
            daemon=True,
        )
        self._worker.start()
        # An abandoned writer (an error upstream, never finalized) stops its worker.
        self._stop_worker = weakref.finalize(self, jobs.put, None)

    def _collect(self) -> _Slot:
        """Wait for the oldest block in flight and write it out."""
        result = self._done.get()
        self._in_flight -= 1
        if isinstance(result, BaseException):
            raise result
        self._output(result)
        return result  # type: ignore[no-any-return]

    def _output(self, slot: _Slot) -> None:
        """Write one block of ciphertext with its share of the packet framing (and, with
        the first block, the session-key packets)."""
        size = slot.size
        cipher = memoryview(slot.cipher)
        if slot.first and slot.final:
            self._output_single(cipher[_HEAD : _HEAD + size])
            return
        if not slot.first:
            if slot.final:
                self._output_last(cipher[_HEAD : _HEAD + size])
                return
            head = partial_length(BLOCK)
        else:
            self._send(self._key_packets)
            head = bytes([0xC0 | TAG_SEIPD, *partial_length(BLOCK), _SEIPD_V1])
        start = _HEAD - len(head)
        slot.cipher[start:_HEAD] = head
        self._send(cipher[start : _HEAD + size])

    # gpg 2.2 finds the end of armored data without a checksum line only at "=" padding,
    # so the message length must not be a multiple of 3 (openpgp_armor explains why there
    # is a checksum only for small data). The framing of the encrypted packet sees to it:
    # its length octets come in several valid forms of different sizes.

    def _output_last(self, ciphertext: memoryview) -> None:
        """The last part of a partial-length encrypted packet: a definite length in one of
        several forms (minimal or five octets, after a one-octet partial part or not), the
        first that leaves the length of the output indivisible by 3. The five-octet forms
        alone add 5 or 6 octets: one of them always does. (The last block is never empty.)"""
        size = len(ciphertext)
        for ones in range(min(size, 1) + 1):
            for wide in (False, True):
                rest = size - ones
                length = b"\xff" + rest.to_bytes(4, "big") if wide else body_length(rest)
                if (self._written + ones + len(length) + size) % 3:
                    if ones:
                        self._send(partial_length(1) + bytes(ciphertext[:1]))
                    self._send(length)
                    self._send(ciphertext[ones:])
                    return
        raise AssertionError("no framing leaves the length indivisible by 3")  # pragma: no cover

    def _output_single(self, ciphertext: memoryview) -> None:
        """A message of one block: the session-key packets and the whole encrypted packet,
        its length in the first form that leaves the output's length indivisible by 3: a
        definite length (minimal or five octets), or a first part of 512 octets (and one of
        one octet) before it. Only a body under 513 octets may have none that does; then
        the armor's checksum settles it, or (another sink) a Marker packet first (RFC 9580
        5.8, to be ignored; the start is where the RFC places it)."""
        body = bytes([_SEIPD_V1]) + bytes(ciphertext)
        size = len(body)
        framings = [[size], [-size]]  # a definite length, minimal or five octets
        if size == 512:
            framings.append([512, 0])
        elif size > 512:
            framings += [[512, size - 512], [512, 1, size - 513]]
        head = len(self._key_packets) + 1  # and the packet tag
        for framing in framings:
            if (head + _length_octets(framing) + size) % 3:
                break
        else:
            framing = [size]
            sink = self._inner
            total = head + _length_octets(framing) + size
            if not (isinstance(sink, ArmorWriter) and sink.checksums(total)):
                self._send(_MARKER)  # 5 octets: the total becomes 2 modulo 3
        self._send(self._key_packets + bytes([0xC0 | TAG_SEIPD]))
        offset = 0
        for index, part in enumerate(framing):
            count = abs(part)
            length = _length(part, last=index == len(framing) - 1)
            self._send(length + body[offset : offset + count])
            offset += count

    def _send(self, data: Data) -> None:
        self._inner.write(data)
        self._written += len(data)

    def _finish(self) -> None:
        last = bytes([0xC0 | TAG_LITERAL]) if not self._literal_started else b""
        self._emit(last + body_length(self._literal_fill))
        self._emit(memoryview(self._literal)[: self._literal_fill])
        self._emit(_MDC_HEAD)
        self._sha1.update(memoryview(self._slot.plain)[: self._fill])
        self._hashing = False
        self._emit(self._sha1.digest())
        self._flush(final=True)
        while self._in_flight:
            self._collect()
        self._shutdown()
        self._encryptor.finalize()

    def _shutdown(self) -> None:
        if self._stop_worker is not None:
            self._stop_worker()
        if self._worker is not None:
            self._worker.join()
            self._worker = None

    def _abandon(self) -> None:
        self._shutdown()
