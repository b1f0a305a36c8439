"""The SMTP DATA stream: canonical line ends, dot-stuffing and the final dot, chunk by chunk.

A message can reach the transport as a file or from the streaming writers, in pieces of any
size cut anywhere: between the CR and LF of a line end, or just before a line's leading dot.
:class:`DataWriter` keeps the two bits of state that matter across such cuts (was the last
byte a CR, is the next byte at the start of a line), so the server sees exactly what a
whole-message transformation would give, in bounded memory.

Every CR and LF that is not part of a CRLF pair becomes CRLF: a bare CR or LF on the wire is
forbidden (RFC 5321 section 2.3.8), and servers disagree about it, which is what SMTP
smuggling exploits. A line starting with ``.`` gets a second dot (section 4.5.2), so no
content line can end the message early; only :meth:`DataWriter.finalize` writes the
``CRLF.CRLF`` terminator.
"""

from __future__ import annotations

import re

from ..errors import InputError
from ..stream.base import CHUNK, Data, Sink, Writer

__all__ = ["DataWriter", "canonical_size"]

_LINE_END = re.compile(rb"\r\n|\r|\n")
_CRLF = b"\r\n"


def canonical_size(data: Data) -> int:
    """The size of ``data`` once every line end is CRLF, without making the copy: what the
    SIZE parameter of MAIL FROM announces (RFC 1870: before dot-stuffing)."""
    view = bytes(data) if not isinstance(data, bytes) else data
    pairs = view.count(_CRLF)
    return len(view) + view.count(b"\n") + view.count(b"\r") - 2 * pairs


class DataWriter(Writer):
    """Turns message bytes into the DATA stream and writes it to ``inner`` (a socket sink).

    Output reaches ``inner`` in blocks of about ``chunk`` bytes: small writes are gathered,
    large ones are cut, so neither the system calls nor the memory held grow with the
    message. ``finalize()`` ends the last line if it is open and writes the final dot.
    """

    def __init__(self, inner: Sink, *, chunk: int = CHUNK) -> None:
        if chunk < 1:
            raise InputError("chunk must be at least 1 byte")
        super().__init__(inner)
        self._chunk = chunk
        self._after_cr = False
        """The last input byte was a CR, already sent as CRLF: an LF next completes it."""
        self._line_start = True
        """The next output byte starts a line (a dot there must be doubled)."""
        self._out = bytearray()
        self.bytes_in = 0
        self.bytes_out = 0

    def _write(self, data: Data) -> None:
        with memoryview(data) as view, view.cast("B") as octets:
            for start in range(0, len(octets), self._chunk):
                self._block(bytes(octets[start : start + self._chunk]))

    def _block(self, block: bytes) -> None:
        self.bytes_in += len(block)
        if self._after_cr and block.startswith(b"\n"):
            block = block[1:]
        self._after_cr = False
        if not block:
            return
        pairs = block.count(_CRLF)
        if block.count(b"\r") != pairs or block.count(b"\n") != pairs:
            self._after_cr = block.endswith(b"\r")
            block = _LINE_END.sub(_CRLF, block)
        if self._line_start and block.startswith(b"."):
            block = b"." + block
        block = block.replace(b"\r\n.", b"\r\n..")
        self._line_start = block.endswith(_CRLF)
        self._emit(block)

    def _emit(self, data: bytes) -> None:
        if not self._out and len(data) >= self._chunk:
            self._send(data)
            return
        self._out += data
        if len(self._out) >= self._chunk:
            self._flush()

    def _flush(self) -> None:
        if self._out:
            self._send(self._out)
            self._out = bytearray()

    def _send(self, data: bytes | bytearray) -> None:
        self.bytes_out += len(data)
        self._inner.write(data)

    def _finish(self) -> None:
        self._emit((b"" if self._line_start else _CRLF) + b".\r\n")
        self._flush()
