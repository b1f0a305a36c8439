"""OpenPGP packet framing (RFC 9580 4.2, RFC 4880 4.2): headers, lengths, and a push parser.

Only the framing is here: the bytes of a packet header, new-format body lengths including
partial body lengths (4.2.1.4), MPIs (3.2), and :class:`PacketReader`, which splits a stream
fed in pieces of any size into packet starts, body pieces and packet ends without ever
holding a whole packet. What the packets mean is decided by the layers that use it
(:mod:`.openpgp_keys` for keys and session-key packets, :mod:`.openpgp` for the data).

Everything here is hand-written binary framing (STYLE.md, convention 8: allowed in the
streaming layer, where lengths are not known in advance); the tests parse every output back
with gpg.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from .base import Data

__all__ = [
    "TAG_COMPRESSED",
    "TAG_LITERAL",
    "TAG_MARKER",
    "TAG_MDC",
    "TAG_ONE_PASS_SIGNATURE",
    "TAG_PADDING",
    "TAG_PKESK",
    "TAG_PUBLIC_KEY",
    "TAG_PUBLIC_SUBKEY",
    "TAG_SED",
    "TAG_SEIPD",
    "TAG_SIGNATURE",
    "TAG_SKESK",
    "TAG_USER_ATTRIBUTE",
    "TAG_USER_ID",
    "MalformedPacket",
    "PacketHandler",
    "PacketReader",
    "body_length",
    "mpi",
    "packet",
    "packet_header",
    "partial_length",
    "read_mpi",
    "split_packets",
]

# Packet tags, RFC 9580 5 (table 3).
TAG_PKESK = 1
TAG_SIGNATURE = 2
TAG_SKESK = 3
TAG_ONE_PASS_SIGNATURE = 4
TAG_PUBLIC_KEY = 6
TAG_COMPRESSED = 8
TAG_SED = 9
TAG_MARKER = 10
TAG_LITERAL = 11
TAG_USER_ID = 13
TAG_PUBLIC_SUBKEY = 14
TAG_USER_ATTRIBUTE = 17
TAG_SEIPD = 18
TAG_MDC = 19
TAG_AEAD = 20  # LibrePGP "OCB encrypted data" (gpg 2.3+); not RFC 9580
TAG_PADDING = 21

_PARTIAL_TAGS = frozenset({TAG_COMPRESSED, TAG_SED, TAG_LITERAL, TAG_SEIPD, TAG_AEAD})
"""RFC 9580 4.2.1.4: only data packets may use partial body lengths."""


class MalformedPacket(ValueError):
    """The packet framing is broken. Internal: each layer maps it to its typed error."""


# --- writing -------------------------------------------------------------------------------------


def body_length(size: int) -> bytes:
    """A new-format definite body length (RFC 9580 4.2.1.1-4.2.1.3)."""
    if size < 0:
        raise ValueError("negative length")
    if size < 192:
        return bytes([size])
    if size < 8384:
        size -= 192
        return bytes([(size >> 8) + 192, size & 0xFF])
    if size < 1 << 32:
        return b"\xff" + size.to_bytes(4, "big")
    raise ValueError("packet body too long for one length")


def partial_length(size: int) -> bytes:
    """The one-octet partial body length for ``size``, a power of two from 1 to 2**30."""
    exponent = size.bit_length() - 1
    if size <= 0 or size != 1 << exponent or exponent > 30:
        raise ValueError("a partial body length is a power of two up to 2**30")
    return bytes([0xE0 | exponent])


def packet_header(tag: int, size: int | None = None) -> bytes:
    """A new-format packet header (RFC 9580 4.2.1): the tag octet and, unless ``size`` is
    None (the caller writes a partial length next), the definite body length."""
    head = bytes([0xC0 | tag])
    return head if size is None else head + body_length(size)


def packet(tag: int, body: Data) -> bytes:
    """A whole packet with a new-format header and definite length."""
    return packet_header(tag, len(body)) + bytes(body)


def mpi(value: int | bytes) -> bytes:
    """A multiprecision integer (RFC 9580 3.2): bit count, then the big-endian octets
    without leading zero octets. ``bytes`` are taken as big-endian (EC points, which keep
    their prefix octet)."""
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big") if isinstance(value, int) else value
    raw = raw.lstrip(b"\x00")
    bits = (len(raw) - 1) * 8 + raw[0].bit_length() if raw else 0
    return bits.to_bytes(2, "big") + raw


def read_mpi(data: bytes, offset: int) -> tuple[bytes, int]:
    """The octets of the MPI at ``offset`` and the offset after it."""
    if offset + 2 > len(data):
        raise MalformedPacket("truncated MPI")
    bits = int.from_bytes(data[offset : offset + 2], "big")
    end = offset + 2 + (bits + 7) // 8
    if end > len(data):
        raise MalformedPacket("truncated MPI")
    return data[offset + 2 : end], end


# --- reading -------------------------------------------------------------------------------------


class PacketHandler(Protocol):
    """What :class:`PacketReader` reports, in stream order."""

    def start(self, tag: int, header: bytes) -> None:
        """A packet begins; ``header`` is its header as read (tag and first length)."""

    def body(self, data: memoryview) -> None:
        """The next piece of the current packet's body (never empty). The view is valid
        only during the call."""

    def end(self) -> None:
        """The current packet is complete."""


_HEADER, _LENGTH, _BODY, _TO_THE_END = range(4)


class PacketReader:
    """Splits OpenPGP packets out of a stream fed in pieces of any size.

    Old-format headers (including the indeterminate length, which runs to the end of the
    stream) and new-format headers with partial body lengths are accepted. Only header and
    length octets are looked at byte by byte; body pieces are passed on as views of what was
    fed. ``max_packet`` bounds the body of every packet that is not a data packet
    (:data:`_PARTIAL_TAGS`), so that nobody can make the reader's user buffer a huge key or
    signature packet. Raises :class:`MalformedPacket`.
    """

    def __init__(self, handler: PacketHandler, *, max_packet: int = 1 << 20) -> None:
        self._handler = handler
        self._max_packet = max_packet
        self._state = _HEADER
        self._head = bytearray()
        self._tag = 0
        self._remaining = 0
        self._partial = False
        self._packet_size = 0

    @property
    def between_packets(self) -> bool:
        """True when no packet has begun, or the last one is complete."""
        return self._state == _HEADER and not self._head

    def feed(self, data: Data) -> None:
        view = memoryview(data).cast("B")
        position = 0
        size = len(view)
        handler = self._handler
        while position < size:
            state = self._state
            if state == _BODY:
                take = min(self._remaining, size - position)
                handler.body(view[position : position + take])
                position += take
                self._remaining -= take
                if self._remaining == 0:
                    self._segment_done()
            elif state == _TO_THE_END:
                handler.body(view[position:])
                position = size
            else:
                self._head.append(view[position])
                position += 1
                if state == _HEADER:
                    self._parse_header()
                else:
                    self._parse_length()

    def close(self) -> None:
        """The stream ended: a packet still open (except one of indeterminate length) is
        an error."""
        if self._state == _TO_THE_END:
            self._state = _HEADER
            self._handler.end()
            return
        if not self.between_packets:
            raise MalformedPacket("the stream ends inside a packet")

    # -- header and length octets --

    def _parse_header(self) -> None:
        head = self._head
        first = head[0]
        if not first & 0x80:
            raise MalformedPacket("not an OpenPGP packet header")
        if first & 0x40:  # new format
            if len(head) == 1:
                return
            self._tag = first & 0x3F
            length = self._new_length(head, 1)
            if length is None:
                return
        else:  # old format: tag in bits 5-2, length type in bits 1-0
            self._tag = (first >> 2) & 0x0F
            kind = first & 0x03
            if kind == 3:
                if self._tag not in _PARTIAL_TAGS:
                    raise MalformedPacket("indeterminate length on a non-data packet")
                self._begin(bytes(head))
                self._state = _TO_THE_END
                return
            octets = 1 << kind
            if len(head) < 1 + octets:
                return
            length = (int.from_bytes(head[1 : 1 + octets], "big"), False)
        self._begin(bytes(head))
        self._body(*length)

    def _parse_length(self) -> None:
        length = self._new_length(self._head, 0)
        if length is not None:
            self._head.clear()
            self._body(*length)

    @staticmethod
    def _new_length(head: bytearray, start: int) -> tuple[int, bool] | None:
        """(length, partial) of the new-format length at ``head[start:]``, or None until
        all its octets are there."""
        first = head[start]
        if first < 192:
            return first, False
        if first < 224:
            if len(head) < start + 2:
                return None
            return ((first - 192) << 8) + head[start + 1] + 192, False
        if first < 255:
            return 1 << (first & 0x1F), True
        if len(head) < start + 5:
            return None
        return int.from_bytes(head[start + 1 : start + 5], "big"), False

    def _begin(self, header: bytes) -> None:
        self._head.clear()
        self._packet_size = 0
        self._handler.start(self._tag, header)

    def _body(self, length: int, partial: bool) -> None:
        if partial and self._tag not in _PARTIAL_TAGS:
            raise MalformedPacket(f"partial body length on a packet of type {self._tag}")
        self._packet_size += length
        if self._tag not in _PARTIAL_TAGS and self._packet_size > self._max_packet:
            raise MalformedPacket(f"a packet of type {self._tag} is implausibly long")
        self._partial = partial
        self._remaining = length
        self._state = _BODY
        if length == 0:
            self._segment_done()

    def _segment_done(self) -> None:
        if self._partial:
            self._state = _LENGTH
        else:
            self._state = _HEADER
            self._handler.end()


class _Collector:
    def __init__(self) -> None:
        self.packets: list[tuple[int, bytes, bytes]] = []
        self._parts: list[bytes] = []
        self._tag = 0
        self._header = b""

    def start(self, tag: int, header: bytes) -> None:
        self._tag, self._header, self._parts = tag, header, []

    def body(self, data: memoryview) -> None:
        self._parts.append(bytes(data))

    def end(self) -> None:
        self.packets.append((self._tag, self._header, b"".join(self._parts)))


def split_packets(data: bytes, *, max_packet: int = 1 << 20) -> Iterator[tuple[int, bytes]]:
    """(tag, body) of every packet in ``data``, a complete packet sequence held in memory
    (keys, session-key packets). Raises :class:`MalformedPacket`."""
    collector = _Collector()
    reader = PacketReader(collector, max_packet=max_packet)
    reader.feed(data)
    reader.close()
    for tag, _, body in collector.packets:
        yield tag, body
