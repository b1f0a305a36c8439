"""Transfer encodings as writers: base64 in CRLF lines, and CRLF line ends.

Base64 is where a naive streaming encoder spends its time: 1 GiB of attachment is 14
million lines. Whole blocks of 57-byte multiples go through pybase64's SIMD encoder with
76-character lines, then one ``bytes.replace`` turns LF into CRLF; only the remainder of a
write (under 57 bytes) is held back until the next write or ``finalize``.
"""

from __future__ import annotations

import pybase64

from .base import Data, Sink, Writer
from .threads import WORKER_BLOCK, ThreadedWriter

__all__ = ["WORKER_STEP", "Base64Writer", "CrlfWriter", "encode_lines", "threaded_base64"]

_LINE = 57  # input bytes per 76-character base64 line
_STEP = 574 * _LINE
"""Bytes encoded per call in the main thread: 32,718 in, 44,156 out. Each call allocates
its result twice (the LF lines, then the CRLF ones); at this size both come from the C
allocator's free memory and go back there. At twice the size, freeing them leaves more
than its trim threshold (128 KiB) free at the top of the main heap, glibc returns it to the
kernel, and the next call faults the pages back in: a third of the encoder's time."""
WORKER_STEP = 18396 * _LINE
"""Bytes encoded per call in a worker thread: 1,048,572 in. glibc gives each thread a
heap of its own, which it shrinks without returning the pages, so large results cost no
faults there (measured: 1 MiB steps encode at 1,480 MiB/s in a thread, 466 in the main
thread); and each call is a turn of the GIL, which the other threads wait for."""


def encode_lines(data: Data) -> bytes:
    """Base64 of ``data`` in 76-character lines, each ending in CRLF."""
    return pybase64.encodebytes(data).replace(b"\n", b"\r\n")


class Base64Writer(Writer):
    """Base64-encodes everything written, in 76-character CRLF lines (RFC 2045 6.8)."""

    def __init__(self, inner: Sink, *, step: int = _STEP) -> None:
        super().__init__(inner)
        self._step = max(_LINE, step - step % _LINE)
        self._pending = bytearray()

    def _write(self, data: Data) -> None:
        view = memoryview(data)
        if self._pending:
            need = _LINE - len(self._pending)
            self._pending += view[:need]
            view = view[need:]
            if len(self._pending) < _LINE:
                return
            self._inner.write(encode_lines(self._pending))
            self._pending.clear()
        whole = len(view) - len(view) % _LINE
        for start in range(0, whole, self._step):
            self._inner.write(encode_lines(view[start : min(start + self._step, whole)]))
        self._pending += view[whole:]

    def _finish(self) -> None:
        if self._pending:
            self._inner.write(encode_lines(self._pending))
            self._pending.clear()


def threaded_base64(inner: Sink) -> ThreadedWriter:
    """A :class:`Base64Writer` run in a worker thread, in large steps: a base64 layer under
    another expensive one (a cipher, a file's reads) gets a core of its own."""
    return ThreadedWriter(Base64Writer(inner, step=WORKER_STEP), block=WORKER_BLOCK)


class CrlfWriter(Writer):
    """Turns bare LF and bare CR into CRLF, so text read from files is canonical (RFC 5322)."""

    def __init__(self, inner: Sink) -> None:
        super().__init__(inner)
        self._cr_pending = False

    def _write(self, data: Data) -> None:
        chunk = bytes(data)
        if self._cr_pending:
            chunk = b"\r" + chunk
            self._cr_pending = False
        if chunk.endswith(b"\r"):
            # A CR at the end may be the first half of a CRLF split across writes.
            chunk = chunk[:-1]
            self._cr_pending = True
        pairs = chunk.count(b"\r\n")
        if chunk.count(b"\n") == pairs and chunk.count(b"\r") == pairs:
            self._inner.write(chunk)  # already canonical: the common case, no rewriting
            return
        if b"\r" in chunk:
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        self._inner.write(chunk.replace(b"\n", b"\r\n"))

    def _finish(self) -> None:
        if self._cr_pending:
            self._inner.write(b"\r\n")
            self._cr_pending = False
