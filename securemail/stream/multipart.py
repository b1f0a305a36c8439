"""The parts of a multipart body (RFC 2046 5.1), read one after another from a stream.

The in-memory readers split a whole body at once (:func:`securemail.wire.split_multipart`).
A stream of gigabytes cannot be held, so here the parts come in order: the caller looks at
each part's header fields and decides what its body is worth, reading a small one whole
(under a limit) or passing a large one on as a source (the encrypted part of PGP/MIME).

A delimiter is what :func:`securemail.wire.delimiter_lines` matches, with LF line ends
allowed too (a message saved by a Unix tool): a line end, ``--`` and the boundary, ``--``
for the close delimiter, optional white space (transport padding), and the line end or the
end of the data. The line end before it belongs to the delimiter, not to the part. A line
that only starts like a delimiter is part of the body.
"""

from __future__ import annotations

from .. import wire
from ..errors import MalformedMessageError
from .base import CHUNK, Source, read_at_most
from .message import MAX_HEADER_SECTION  # also the longest preamble read

__all__ = ["MAX_HEADER_SECTION", "MultipartReader", "Part"]

_MAX_PADDING = 1024
"""White space accepted after a boundary on its line."""


class Part:
    """One part of a multipart body: its header section (CRLF, ending in the empty line)
    and its body, read as a source until the next delimiter."""

    def __init__(self, reader: MultipartReader, header: bytes) -> None:
        self.header = header
        self._reader = reader
        self.ended = False

    def readinto(self, buffer: bytearray | memoryview) -> int:
        if self.ended:
            return 0
        count = self._reader._body_into(buffer)
        if not count:
            self.ended = True
        return count

    def read_all(self, limit: int) -> bytes | None:
        """The whole body if it is at most ``limit`` bytes; None if it is larger (its rest is
        skipped by the next :meth:`MultipartReader.next_part`)."""
        return read_at_most(self, limit)


class MultipartReader:
    """Reads the parts of the multipart body in ``source`` with ``boundary``.

    :meth:`next_part` returns each part in turn, after the close delimiter None; what the
    caller left of a part's body is skipped first. The epilogue is not read. A body
    without a close delimiter ends its last part at the end of the data, as every mail
    client reads it (:attr:`closed` tells).
    """

    def __init__(self, source: Source, boundary: str) -> None:
        if not boundary or len(boundary) > 70:
            raise MalformedMessageError(
                "multipart boundary is missing or longer than 70 characters"
            )
        self._source = source
        self._marker = b"\n--" + boundary.encode("ascii")
        # A line end first, so that a delimiter on the first line is found.
        self._buffer = bytearray(b"\r\n")
        self._chunk = bytearray(CHUNK)  # (larger reads make the buffer's reallocations fault)
        self._eof = False
        self._started = False
        self._part: Part | None = None
        self._in_body = False
        self._done = False
        self.closed = False
        """Whether the body ended with its close delimiter (so far)."""

    def next_part(self) -> Part | None:
        if self._part is not None and not self._part.ended:
            scratch = bytearray(CHUNK)
            while self._part.readinto(scratch):
                pass
        self._part = None
        if not self._started:
            self._started = True
            self._skip_preamble()
        if self._done:
            return None
        self._part = Part(self, self._header_section())
        self._in_body = True
        return self._part

    # -- reading --

    def _more(self) -> bool:
        if self._eof:
            return False
        count = self._source.readinto(self._chunk)
        if not count:
            self._eof = True
            return False
        self._buffer += memoryview(self._chunk)[:count]
        return True

    def _delimiter(self) -> tuple[int, int, bool] | int | None:
        """The first delimiter in the buffer: (where the part before it ends, where the
        line after it starts, whether it closes); or the position of a possible delimiter
        that more data must decide; or None."""
        buffer, marker = self._buffer, self._marker
        start = 0
        while (found := buffer.find(marker, start)) >= 0:
            end = found - 1 if found and buffer[found - 1] == 0x0D else found
            at = found + len(marker)
            if len(buffer) - at < 2 and not self._eof:
                return end
            close = buffer[at : at + 2] == b"--"
            at += 2 if close else 0
            padding = at
            limit = min(len(buffer), at + _MAX_PADDING)
            while at < limit and buffer[at] in b" \t":
                at += 1
            if at == len(buffer):
                return (end, at, close) if self._eof else end  # the end of the data ends it
            if at - padding < _MAX_PADDING:
                if buffer[at] == 0x0A:
                    return end, at + 1, close
                if buffer[at] == 0x0D and at + 1 == len(buffer):
                    return (end, at + 1, close) if self._eof else end
                if buffer[at] == 0x0D and buffer[at + 1] == 0x0A:
                    return end, at + 2, close
            start = found + 1  # not a delimiter: body content
        return None

    def _skip_preamble(self) -> None:
        skipped = 0
        while True:
            found = self._delimiter()
            if isinstance(found, tuple):
                _, after, close = found
                del self._buffer[:after]
                if close:
                    raise MalformedMessageError("multipart body has no opening boundary")
                return
            keep = len(self._marker) + 1 if found is None else len(self._buffer) - found
            drop = max(0, len(self._buffer) - keep)
            skipped += drop
            del self._buffer[:drop]
            if skipped > MAX_HEADER_SECTION:
                raise MalformedMessageError("no multipart boundary in the first 1 MiB of the body")
            if not self._more():
                raise MalformedMessageError("multipart body has no opening boundary")

    def _header_section(self) -> bytes:
        while True:
            if self._buffer[:2] == b"\r\n" or self._buffer[:1] == b"\n":
                cut = 2 if self._buffer[:1] == b"\r" else 1
                del self._buffer[:cut]
                return b"\r\n"  # no header fields: text/plain (RFC 2046 5.1)
            ends = [
                i + n
                for i, n in ((self._buffer.find(b"\n\r\n"), 3), (self._buffer.find(b"\n\n"), 2))
                if i >= 0
            ]
            if ends and min(ends) <= MAX_HEADER_SECTION:
                cut = min(ends)
                header = wire.canonicalize(bytes(self._buffer[:cut]))
                del self._buffer[:cut]
                return header
            if len(self._buffer) > MAX_HEADER_SECTION:
                raise MalformedMessageError("a part's header section is larger than 1 MiB")
            if not self._more():
                raise MalformedMessageError("the message ends inside a part's header section")

    def _body_into(self, buffer: bytearray | memoryview) -> int:
        """Body bytes of the current part into ``buffer``; 0 at its end (the delimiter after
        it consumed)."""
        if not self._in_body:
            return 0
        while True:
            found = self._delimiter()
            if isinstance(found, tuple):
                end, after, close = found
                if end:
                    count = min(len(buffer), end)
                    buffer[:count] = self._buffer[:count]
                    del self._buffer[:count]
                    return count
                del self._buffer[:after]
                self._end_part(close=close)
                return 0
            # Hold back what may be the start of a delimiter split across reads.
            safe = len(self._buffer) - len(self._marker) - 1 if found is None else found
            if self._eof:
                safe = len(self._buffer)
            if safe > 0:
                count = min(len(buffer), safe)
                buffer[:count] = self._buffer[:count]
                del self._buffer[:count]
                return count
            if self._eof:
                self._end_part(close=False)  # no close delimiter: tolerated
                self._done = True
                return 0
            self._more()

    def _end_part(self, *, close: bool) -> None:
        self._in_body = False
        if close:
            self.closed = True
            self._done = True
