"""OpenPGP ASCII armor (RFC 9580 6.2), written and read as a stream.

Writing is :class:`~securemail.stream.encoding.Base64Writer` between an armor header line
and a tail line: the same SIMD base64 in 76-column CRLF lines (RFC 9580 6.2 allows up to
76; gpg writes 64, which would need a Python-level join per line, several times slower).
The CRC-24 checksum line is written only for small data (up to :data:`CHECKSUM_LIMIT`):
RFC 9580 6.2.2 says it should not be written at all (the MDC and AEAD detect damage), the
standard library has no CRC-24, and computing it byte by byte in Python would be slower
than everything else put together. But gpg 2.2 reads armor without the checksum only if
the base64 ends in ``=`` padding (it takes the tail line for base64 otherwise): for small
data the checksum is cheap and settles that; for large data the OpenPGP writer keeps the
length indivisible by 3 (see :mod:`.openpgp`), so that there is padding.

Reading (:class:`ArmorReader`) finds the ``-----BEGIN PGP ...-----`` line, skips the armor
headers, and decodes the base64 body block by block: whole lines at a time through
pybase64, which skips the line ends; the body ends at the first ``=`` (padding, or the
checksum line, which is ignored) or ``-`` (the tail line), and the tail line must follow.
"""

from __future__ import annotations

from collections.abc import Callable

import pybase64

from .base import Data, Sink
from .encoding import Base64Writer

__all__ = ["CHECKSUM_LIMIT", "ArmorError", "ArmorReader", "ArmorWriter", "crc24", "dearmor"]

_CRLF = b"\r\n"
_WHITESPACE = b" \t\r\n\x0b\x0c"
MAX_LINE = 64 * 1024
"""Longest line accepted outside the base64 body (before the armor, headers, tail)."""
CHECKSUM_LIMIT = 16 * 1024
"""Data up to this size gets the CRC-24 checksum line (computing it takes about 2 ms)."""
_STEP = 8192 * 57
"""Bytes encoded per call: 466,944 in, 632,832 out. The OpenPGP writer hands the armor
1 MiB of ciphertext at a time; in steps this large each is three calls, not 33 (fewer turns
of the GIL, which the CFB worker waits for), and each result is at least half a
:class:`~securemail.stream.threads.BackgroundSink` block, so the writer thread takes it
without a copy. Measured on 256 MiB of PGP/MIME encryption with a binary attachment, in
alternating runs: 1.28 s of CPU against 1.33 s with the 32 KiB steps of
:class:`~securemail.stream.encoding.Base64Writer`, and as many page faults; 1 MiB steps
took 1.37 s."""


def _crc24_table() -> tuple[int, ...]:
    table = []
    for index in range(256):
        crc = index << 16
        for _ in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= 0x1864CFB  # RFC 9580 6.1.1, the CRC-24 generator
        table.append(crc & 0xFFFFFF)
    return tuple(table)


_CRC24_TABLE = _crc24_table()
_CRC24_INIT = 0xB704CE


def crc24(data: Data, crc: int = _CRC24_INIT) -> int:
    """The OpenPGP CRC-24 of ``data`` (continuing from ``crc``), byte by byte."""
    table = _CRC24_TABLE
    for byte in memoryview(data).cast("B"):
        crc = ((crc << 8) & 0xFFFFFF) ^ table[(crc >> 16) ^ byte]
    return crc


class ArmorError(ValueError):
    """The armor is malformed. Internal: each user maps it to its typed error."""


class ArmorWriter(Base64Writer):
    """ASCII armor around everything written: the header line (``kind`` is ``MESSAGE``,
    ``PUBLIC KEY BLOCK``, ...), an empty line, the base64 body in 76-column CRLF lines,
    the checksum line for data up to ``checksum_limit`` octets, and the tail line. Stack
    it under :class:`~securemail.stream.openpgp.OpenPGPEncryptWriter`."""

    def __init__(
        self, inner: Sink, kind: str = "MESSAGE", *, checksum_limit: int = CHECKSUM_LIMIT
    ) -> None:
        if not kind or not all(c.isupper() or c in " ,0123456789/" for c in kind):
            raise ValueError(f"bad armor kind {kind!r}")
        super().__init__(inner, step=_STEP)
        self._kind = kind.encode("ascii")
        self._checksum_limit = checksum_limit
        self._crc = _CRC24_INIT
        self._size = 0
        inner.write(b"-----BEGIN PGP " + self._kind + b"-----" + _CRLF + _CRLF)

    def checksums(self, more: int) -> bool:
        """Whether the armor gets its checksum line if ``more`` octets are still to come."""
        return self._size + more <= self._checksum_limit

    def _write(self, data: Data) -> None:
        if self._size <= self._checksum_limit:
            if self.checksums(len(data)):
                self._crc = crc24(data, self._crc)
            self._size += len(data)
        super()._write(data)

    def _finish(self) -> None:
        super()._finish()
        tail = b"-----END PGP " + self._kind + b"-----" + _CRLF
        if self._size <= self._checksum_limit:
            tail = b"=" + pybase64.b64encode(self._crc.to_bytes(3, "big")) + _CRLF + tail
        self._inner.write(tail)


_BEFORE, _HEADERS, _BODY, _TAIL, _DONE = range(5)


class ArmorReader:
    """Decodes armored data fed in pieces; ``output`` receives the binary content in
    pieces. ``kinds`` are the acceptable header lines' words (``MESSAGE``, ...); text before
    the header line is skipped, text after the tail line ignored. Raises
    :class:`ArmorError`."""

    def __init__(self, output: Callable[[bytes], object], kinds: tuple[str, ...]) -> None:
        self._output = output
        self._begin = tuple(f"-----BEGIN PGP {k}-----".encode() for k in kinds)
        self._end = b""
        self._state = _BEFORE
        self._line = bytearray()  # an incomplete line
        self._carry = b""  # base64 characters short of a 4-character group
        self._stride = 0  # length of the first body line, with its line end
        self._line_end = 0

    @property
    def done(self) -> bool:
        return self._state == _DONE

    def feed(self, data: Data) -> None:
        block = bytes(data)
        position = 0
        while position < len(block) and self._state != _DONE:
            if self._state == _BODY:
                position = self._body(block, position)
            else:
                position = self._lines(block, position)

    def close(self) -> None:
        if self._state == _TAIL and bytes(self._line).strip(_WHITESPACE) == self._end:
            self._state = _DONE  # the tail line without a line end
        if self._state == _BEFORE:
            raise ArmorError("no armor header line")
        if self._state != _DONE:
            raise ArmorError("the armor ends before its tail line")

    # -- line by line: before the body and after it --

    def _lines(self, block: bytes, position: int) -> int:
        room = MAX_LINE - len(self._line)
        end = block.find(b"\n", position, position + room + 1)
        if end < 0:
            if len(block) - position > room:
                raise ArmorError("line too long")
            self._line += block[position:]
            return len(block)
        self._line += block[position : end + 1]
        line = bytes(self._line).strip(_WHITESPACE)
        self._line.clear()
        if self._state == _BEFORE:
            if line in self._begin:
                self._end = line.replace(b"BEGIN", b"END", 1)
                self._state = _HEADERS
        elif self._state == _HEADERS:
            if not line:
                self._state = _BODY
            elif line == self._end:
                self._state = _DONE
            elif b":" not in line:
                # No empty line after the header line (seen in the wild): the body began.
                self._state = _BODY
                self._body(line + b"\n", 0)
        elif line == self._end:
            self._state = _DONE
        elif line and not line.startswith(b"="):
            raise ArmorError("unexpected text after the armored data")
        return end + 1

    # -- the base64 body, block by block --

    def _body(self, block: bytes, position: int) -> int:
        """Decode the body in ``block`` from ``position``; return where the body ended
        (the stop character) or the block's end."""
        stop = _first(block, position, b"=", b"-")
        end = stop if stop >= 0 else len(block)
        if self._line:
            text = bytes(self._line) + block[position:end]
            self._line.clear()
        else:
            text = block if position == 0 and end == len(block) else block[position:end]
        if stop >= 0:
            # The body ends here: padding, the checksum line, or the tail line. The rest of
            # the line holding the stop character belongs to the tail.
            chars = self._carry + text.translate(None, _WHITESPACE)
            self._carry = b""
            if len(chars) % 4 == 1:
                raise ArmorError("truncated base64")
            self._decode(chars + b"=" * (-len(chars) % 4))
            self._state = _TAIL
            return stop
        # Complete lines now, the last partial line with the next block.
        cut = text.rfind(b"\n") + 1
        if len(text) - cut > MAX_LINE:
            raise ArmorError("line too long")
        self._line += memoryview(text)[cut:]
        lines = memoryview(text)[:cut]
        count = self._characters(text, cut)
        if not self._carry and count % 4 == 0:
            # Whole groups of four characters in these lines (what every encoder writes):
            # one SIMD pass, which skips the line ends. It would skip any other character
            # too; a result of the expected length shows the lines were as assumed (and if
            # a stray character made up for an odd line, it was skipped, as gpg does).
            try:
                decoded = pybase64.b64decode(lines)
            except ValueError:
                decoded = b""
            if len(decoded) == count // 4 * 3:
                self._output(decoded)
                return end
        # Odd line lengths, other white space, or stray characters: the strict way.
        chars = self._carry + bytes(lines).translate(None, _WHITESPACE)
        usable = len(chars) - len(chars) % 4
        self._carry = chars[usable:]
        self._decode(chars[:usable])
        return end

    def _characters(self, text: bytes, cut: int) -> int:
        """How many base64 characters the lines in ``text[:cut]`` hold, if they are like
        the first body line (the decoded length checks it); counted otherwise."""
        if not self._stride:
            end = text.find(b"\n", 0, cut)
            self._stride = end + 1
            self._line_end = 2 if end > 0 and text[end - 1] == 0x0D else 1
        if self._stride > self._line_end and cut % self._stride == 0:
            return cut - cut // self._stride * self._line_end
        return cut - text.count(b"\n", 0, cut) - text.count(b"\r", 0, cut)

    def _decode(self, chars: bytes) -> None:
        if chars:
            try:
                decoded = pybase64.b64decode(chars, validate=True)
            except ValueError:
                raise ArmorError("invalid base64 in the armor") from None
            self._output(decoded)  # outside the try: what the reader raises is its own


def _first(block: bytes, position: int, *needles: bytes) -> int:
    found = [i for i in (block.find(n, position) for n in needles) if i >= 0]
    return min(found) if found else -1


def dearmor(data: bytes, kinds: tuple[str, ...] = ("PUBLIC KEY BLOCK", "MESSAGE")) -> bytes:
    """The binary content of the first armored block in ``data`` (held in memory)."""
    parts: list[bytes] = []
    reader = ArmorReader(parts.append, kinds)
    reader.feed(data)
    reader.close()
    return b"".join(parts)
