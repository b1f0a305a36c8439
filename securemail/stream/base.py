"""The writer protocol every streaming layer follows.

Layers wrap one another like Sequoia's serializer stack: each is a binary sink with
``write`` and ``finalize``, writing its own output into the next one. ``finalize`` writes
the layer's tail (a base64 remainder, a GCM tag, a closing boundary) and finalizes the
layer below, so finalizing the outermost writer unwinds the whole stack. A finalized writer
refuses further use (:class:`AlreadyFinalized`), like ``cryptography``'s cipher contexts.
"""

from __future__ import annotations

from types import TracebackType
from typing import Protocol, Self

from ..errors import AlreadyFinalized, InputError

__all__ = ["CHUNK", "Data", "Sink", "Source", "Writer", "check_7bit", "read_at_most"]

Data = bytes | bytearray | memoryview

CHUNK = 57 * 1149
"""Bytes per processing step: about 64 KiB, a multiple of 57 (one base64 line of 76
characters) and small enough that every buffer stays below the C allocator's mmap
threshold, so no step pays for fresh pages."""


def check_7bit(data: Data) -> None:
    """Refuse bytes that are not ASCII in a part about to be signed: a relay could change
    them (8-bit to 7-bit conversion) and break the signature."""
    if not (data if isinstance(data, bytes | bytearray) else bytes(data)).isascii():
        raise InputError("a signed part must be 7-bit; encode 8-bit content first")


def read_at_most(source: Source, limit: int) -> bytes | None:
    """All of ``source`` if it holds at most ``limit`` bytes; None as soon as it holds more
    (what is small is held in memory, what is not is never read whole)."""
    data = bytearray()
    chunk = bytearray(min(limit + 1, CHUNK))
    while count := source.readinto(chunk):
        data += memoryview(chunk)[:count]
        if len(data) > limit:
            return None
    return bytes(data)


class Sink(Protocol):
    """Anything bytes can be written to: a file, a socket file, an SMTP DATA writer.

    Writers hand a sink views of buffers they reuse: a sink must consume (copy or send)
    what it is given before ``write`` returns, as files and sockets do."""

    def write(self, data: Data, /) -> object: ...


class Source(Protocol):
    """Anything bytes can be read from into a buffer: a file opened in binary mode."""

    def readinto(self, buffer: bytearray | memoryview, /) -> int | None: ...


class Writer:
    """Base of every layer: state machine, context manager, and unwinding."""

    def __init__(self, inner: Sink) -> None:
        self._inner = inner
        self._finalized = False

    def write(self, data: Data) -> int:
        if self._finalized:
            raise AlreadyFinalized(type(self).__name__)
        if data:
            self._write(data)
        return len(data)

    def _write(self, data: Data) -> None:
        raise NotImplementedError

    def finalize(self) -> None:
        """Write this layer's tail, then finalize the layer below (if it is a Writer)."""
        if self._finalized:
            raise AlreadyFinalized(type(self).__name__)
        self._finalized = True
        self._finish()
        if isinstance(self._inner, Writer):
            self._inner.finalize()

    def _finish(self) -> None:
        """Write the tail of this layer; nothing by default."""

    @property
    def finalized(self) -> bool:
        return self._finalized

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # On an error the stream is abandoned, not completed: a tail (tag, signature)
        # written after a failure would make a truncated message look whole.
        if exc_type is not None:
            self._abandon()
        elif not self._finalized:
            self.finalize()

    def _abandon(self) -> None:
        """Release what this layer holds (a worker thread, a gpg process) when the stream
        is abandoned after an error; nothing by default."""
