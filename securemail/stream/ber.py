"""Reading a streamed CMS envelope: base64 off the wire, then BER one element at a time.

The reader never holds more than a chunk of the encrypted content: the small elements
(recipient infos, algorithm identifiers, the tag) are read whole and parsed with
asn1crypto; the encrypted content is handed on segment by segment, whether it is one
definite-length OCTET STRING (DER) or a constructed one of any nesting (BER, what
``openssl cms -stream`` and :class:`securemail.stream.cms.EnvelopeWriter` write).
"""

from __future__ import annotations

import binascii
from collections.abc import Iterator

import pybase64

from ..errors import DecryptionError
from .base import CHUNK, Source

__all__ = ["Base64Source", "BerReader", "Header"]

_MAX_ELEMENT = 16 * 1024 * 1024
"""The largest element read whole (recipient infos with many recipients, certificates)."""

_MAX_DEPTH = 32
"""The deepest nesting accepted; CMS envelopes nest about ten levels."""


class Base64Source:
    """The decoded bytes of base64 text read from ``source`` (line breaks and spaces
    ignored; the text ends at the first character that is not base64)."""

    def __init__(self, source: Source, prefix: bytes = b"") -> None:
        self._source = source
        self._text = bytearray(prefix)
        self._decoded = b""
        self._position = 0
        # Reads of CHUNK: what is decoded from one is allocated anew each time, and below the
        # C allocator's mmap threshold that costs nothing; above it every decoded block
        # would fault in fresh pages (twice the time of decrypting it, on a VM).
        self._raw = bytearray(CHUNK)
        self._ended = False
        self.consumed = 0

    def _fill(self) -> None:
        while self._position == len(self._decoded) and not self._ended:
            count = self._source.readinto(self._raw)
            if count:
                self._text += memoryview(self._raw)[:count]
            else:
                self._ended = True
            if not self._fast():
                self._strict()

    def _fast(self) -> bool:
        """The whole lines read so far in one SIMD pass that skips the line ends, when they
        hold whole groups of four and no padding (all but the last lines of every encoder):
        the decoded length proves that only white space was skipped. False: do it the
        strict way."""
        cut = len(self._text) if self._ended else self._text.rfind(b"\n") + 1
        if cut == 0:
            return False
        lines = bytes(memoryview(self._text)[:cut])
        if b"=" in lines:
            return False
        # The characters in the lines, if they end alike (CRLF or LF) and, when all are as
        # long as the first, without counting; the decoded length checks the assumption.
        line_end = 2 if lines.endswith(b"\r\n") else 1
        stride = lines.find(b"\n") + 1
        if stride and cut % stride == 0 and lines[stride - line_end : stride] in (b"\r\n", b"\n"):
            characters = cut - cut // stride * line_end
        else:
            characters = cut - lines.count(b"\n") * line_end
        if characters % 4:
            return False
        try:
            decoded = pybase64.b64decode(lines)
        except ValueError:
            return False
        if len(decoded) != characters // 4 * 3:
            return False
        self._decoded, self._position = decoded, 0
        del self._text[:cut]
        return True

    def _strict(self) -> None:
        # Every CR goes, not only CRLF pairs: a read may end between the CR and the LF.
        text = bytes(self._text).replace(b"\r", b"").replace(b"\n", b"")
        text = text.replace(b" ", b"").replace(b"\t", b"")
        usable = len(text) - len(text) % 4
        end = text.find(b"=")
        if end >= 0:
            usable = min(usable, end - end % 4 + 4)
            self._ended = self._ended or usable >= end
        try:
            decoded = pybase64.b64decode(text[:usable], validate=True)
        except binascii.Error:
            raise DecryptionError() from None
        self._decoded = self._decoded[self._position :] + decoded
        self._position = 0
        self._text = bytearray(text[usable:])

    def readinto(self, buffer: bytearray | memoryview) -> int:
        self._fill()
        count = min(len(buffer), len(self._decoded) - self._position)
        buffer[:count] = memoryview(self._decoded)[self._position : self._position + count]
        self._position += count
        self.consumed += count
        return count


class Header:
    """One BER identifier octet and length: ``length`` is None for indefinite length."""

    __slots__ = ("identifier", "length", "raw")

    def __init__(self, identifier: int, length: int | None, raw: bytes) -> None:
        self.identifier, self.length, self.raw = identifier, length, raw

    @property
    def constructed(self) -> bool:
        return bool(self.identifier & 0x20)


class BerReader:
    """Pulls BER elements from a byte source. Any structural problem (truncation, a
    length that does not fit, an unexpected tag) is a :class:`DecryptionError`: this
    reads ciphertext containers, and their failures must all look alike."""

    def __init__(self, source: Source) -> None:
        self._source = source
        self._buffer = bytearray()
        self._chunk = bytearray(CHUNK)
        self._consumed = 0

    def _need(self, count: int) -> None:
        while len(self._buffer) < count:
            got = self._source.readinto(self._chunk)
            if not got:
                raise DecryptionError()
            self._buffer += memoryview(self._chunk)[:got]

    def _take(self, count: int) -> bytes:
        self._need(count)
        with memoryview(self._buffer) as view:
            data = bytes(view[:count])
        del self._buffer[:count]
        self._consumed += count
        return data

    def header(self) -> Header:
        first = self._take(1)[0]
        if first & 0x1F == 0x1F:
            raise DecryptionError()  # high tag numbers do not occur in CMS envelopes
        size = self._take(1)[0]
        raw = bytes([first, size])
        if size == 0x80:
            length = None
        elif size & 0x80:
            octets = self._take(size & 0x7F)
            if not octets or len(octets) > 8:
                raise DecryptionError()
            raw += octets
            length = int.from_bytes(octets, "big")
        else:
            length = size
        return Header(first, length, raw)

    def expect(self, *identifiers: int) -> Header:
        """The next header, which must carry one of ``identifiers`` (whole octets)."""
        found = self.header()
        if found.identifier not in identifiers:
            raise DecryptionError()
        return found

    def is_end(self) -> bool:
        """Is the next element an end-of-contents marker (consumed if so)?"""
        self._need(2)
        if self._buffer[:2] == b"\x00\x00":
            del self._buffer[:2]
            self._consumed += 2
            return True
        return False

    def peek_tag(self) -> int:
        self._need(1)
        return self._buffer[0]

    def element(self) -> bytes:
        """One whole element, header included, as bytes (for asn1crypto to parse)."""
        out = bytearray()
        self._element_into(out, 0)
        return bytes(out)

    def _element_into(self, out: bytearray, depth: int) -> None:
        # Bounded in depth (no stack exhaustion from crafted nesting) and linear in size.
        if depth > _MAX_DEPTH:
            raise DecryptionError()
        found = self.header()
        out += found.raw
        if found.length is not None:
            if len(out) + found.length > _MAX_ELEMENT:
                raise DecryptionError()
            out += self._take(found.length)
            return
        while not self.is_end():
            self._element_into(out, depth + 1)
            if len(out) > _MAX_ELEMENT:
                raise DecryptionError()
        out += b"\x00\x00"

    def octets(self, found: Header, _depth: int = 0) -> Iterator[bytes]:
        """The content of an OCTET STRING (or an IMPLICIT-tagged one) in pieces."""
        if _depth > _MAX_DEPTH:
            raise DecryptionError()
        if not found.constructed:
            remaining = found.length
            if remaining is None:
                raise DecryptionError()
            while remaining:
                piece = self._take(min(remaining, CHUNK))
                remaining -= len(piece)
                yield piece
            return
        if found.length is None:
            while not self.is_end():
                yield from self.octets(self.expect(0x04, 0x24), _depth + 1)
            return
        end = self._consumed + found.length
        while self._consumed < end:
            yield from self.octets(self.expect(0x04, 0x24), _depth + 1)
        if self._consumed != end:
            raise DecryptionError()

    def skip_end(self, found: Header) -> None:
        """After the last child of an indefinite-length element, its end-of-contents."""
        if found.length is None and not self.is_end():
            raise DecryptionError()
