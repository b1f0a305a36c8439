"""Overlapping I/O with computation: a sink and a source served by worker threads.

Writing 1 GiB of base64 to a file or a pipe costs about as much time as encrypting it. The
kernel copies and cryptography's cipher calls release the GIL, so with the writes (and
reads) done in another thread, both cores work at once. Queues are short, so memory stays
bounded: a few blocks in flight, whatever the size of the message.
"""

from __future__ import annotations

import os
import queue
import stat
import threading
import weakref
from types import TracebackType
from typing import Self

from ..errors import AlreadyFinalized
from .base import Data, Sink, Source, Writer

__all__ = [
    "WORKER_BLOCK",
    "BackgroundSink",
    "BackgroundSource",
    "DirectBlocks",
    "ThreadedWriter",
    "blocks",
    "read_ahead",
]

BLOCK = 1 << 20
"""Bytes gathered before a write is handed to the worker: fewer, larger system calls, and
fewer wake-ups of the worker (each one costs the other core a turn; 1 MiB blocks in place
of 256 KiB made PGP/MIME encryption and decryption 2-4% faster)."""
WORKER_BLOCK = 1 << 20
"""Block size for a :class:`ThreadedWriter` whose worker does heavy work on each block
(encrypts it, base64-encodes it): every block is a turn of the GIL for each thread, and on a
virtual machine a turn costs a wake-up of the other core, so blocks are few and large."""
DEPTH = 3
"""Blocks per queue: at most ``DEPTH * BLOCK`` bytes held by one sink or source."""


class _Ring:
    """``DEPTH`` buffers of ``block`` bytes, allocated once and passed between two threads.

    Nothing is allocated per block: above the C allocator's mmap threshold (128 KiB) every
    fresh buffer would come from the kernel as new pages, and on a virtual machine faulting
    them in costs more than the copy into a reused one.
    """

    def __init__(self, block: int = BLOCK) -> None:
        self.free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        for _ in range(DEPTH):
            self.free.put(bytearray(block))
        # (the block to give back, what to write from: the block or a bytes object, start,
        # end), an error (from a reader), or None (the end)
        self.full: queue.SimpleQueue[
            tuple[bytearray, bytes | bytearray, int, int] | BaseException | None
        ] = queue.SimpleQueue()


class BackgroundSink:
    """Gathers writes into blocks and writes them to ``sink`` from a worker thread.

    Use as a context manager, or call :meth:`close`: it drains the queue and re-raises an
    error the worker met (a full disk, a closed pipe) in the caller's thread.
    """

    def __init__(self, sink: Sink, *, block: int = BLOCK) -> None:
        self._ring = _Ring(block)
        self._size = block
        self._block: bytearray | None = None
        self._fill = 0
        self._errors: list[BaseException] = []
        self._closed = False
        self._thread = threading.Thread(
            target=_drain, args=(self._ring, sink, self._errors), name="securemail-writer"
        )
        self._thread.daemon = True
        self._thread.start()
        # Abandoned unclosed (an error upstream), it stops its worker when collected.
        weakref.finalize(self, self._ring.full.put, None)

    def write(self, data: Data) -> int:
        self._check()
        if isinstance(data, bytes) and len(data) >= self._size // 2:
            # Immutable and large: handed over as it is, in place of a block (no copy).
            if self._fill:
                self._hand_over()
            token = self._block if self._block is not None else self._ring.free.get()
            self._block = None
            self._ring.full.put((token, data, 0, len(data)))
            return len(data)
        view = memoryview(data).cast("B")
        while view:
            if self._block is None:
                self._block = self._ring.free.get()  # waits while the worker is behind
            take = min(len(view), self._size - self._fill)
            self._block[self._fill : self._fill + take] = view[:take]
            self._fill += take
            view = view[take:]
            if self._fill == self._size:
                self._hand_over()
        return len(data)

    def _check(self) -> None:
        if self._errors:
            raise self._errors[0]
        if self._closed:
            raise ValueError("write to a closed BackgroundSink")

    def _hand_over(self) -> None:
        assert self._block is not None
        self._ring.full.put((self._block, self._block, 0, self._fill))
        self._block = None
        self._fill = 0

    def claim(self) -> bytearray:
        """An empty block to fill in place, for a producer that would otherwise fill a
        buffer of its own and have :meth:`write` copy it; hand it back with :meth:`submit`.
        What was written before is handed over first, so the order is kept."""
        self._check()
        if self._fill:
            self._hand_over()
        block = self._block if self._block is not None else self._ring.free.get()
        self._block = None
        return block

    def submit(self, block: bytearray, start: int, end: int) -> None:
        """Write ``block[start:end]`` (a block from :meth:`claim`) and give the block back
        (an empty range only gives it back)."""
        if self._closed:
            raise ValueError("submit to a closed BackgroundSink")
        if start == end:
            self._ring.free.put(block)
        else:
            self._ring.full.put((block, block, start, end))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._fill:
            self._hand_over()
        self._ring.full.put(None)
        self._thread.join()
        if self._errors:
            raise self._errors[0]

    def abandon(self) -> None:
        """Stop the worker after what it has (on an error upstream: the rest is not
        written, and the worker's own error, if any, is dropped)."""
        if not self._closed:
            self._closed = True
            self._ring.full.put(None)
            self._thread.join()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class BackgroundSource:
    """Reads ``source`` ahead in blocks from a worker thread."""

    def __init__(self, source: Source) -> None:
        self._ring = _Ring()
        self._current: tuple[bytearray, int] | None = None
        self._offset = 0
        self._done = False
        thread = threading.Thread(target=_fill, args=(self._ring, source), name="securemail-reader")
        thread.daemon = True
        thread.start()
        # Abandoned before the end, it stops its worker when collected (an empty buffer
        # reads as the end of the source).
        weakref.finalize(self, self._ring.free.put, bytearray())

    def readinto(self, buffer: bytearray | memoryview) -> int:
        while self._current is None:
            if self._done:
                return 0
            item = self._ring.full.get()
            if isinstance(item, BaseException):
                self._done = True
                raise item
            if item is None:
                self._done = True
                return 0
            block, _, self._offset, count = item
            self._current = block, count
        block, count = self._current
        take = min(len(buffer), count - self._offset)
        buffer[:take] = memoryview(block)[self._offset : self._offset + take]
        self._offset += take
        if self._offset == count:
            self._ring.free.put(block)
            self._current = None
        return take


def read_ahead(source: Source) -> Source:
    """``source`` behind a :class:`BackgroundSource` if its reads may block (a pipe, a
    socket, a terminal); a regular file as it is. The kernel reads ahead in files already,
    and a reader thread would only add its copies and its turns at the GIL (measured: 5%
    slower decryption of a file on a RAM disk)."""
    try:
        fileno = source.fileno()  # type: ignore[attr-defined]
        regular = stat.S_ISREG(os.fstat(fileno).st_mode)
    except (AttributeError, OSError, ValueError):
        regular = False  # no descriptor (a file object in memory, a socket file): ahead
    return source if regular else BackgroundSource(source)


def _drain(ring: _Ring, sink: Sink, errors: list[BaseException]) -> None:
    """The writer's worker: after an error it only returns the blocks, so the caller
    never waits for ever, and finds the error at its next write or at close."""
    while (item := ring.full.get()) is not None:
        assert not isinstance(item, BaseException)
        block, payload, start, end = item
        if not errors:
            try:
                sink.write(memoryview(payload)[start:end])
            except BaseException as exc:  # handed to the caller's thread
                errors.append(exc)
        ring.free.put(block)


def _fill(ring: _Ring, source: Source) -> None:
    """The reader's worker: a block at a time, until the end, an error or a stop."""
    try:
        while True:
            block = ring.free.get()
            count = source.readinto(block)
            if not count:
                ring.full.put(None)
                return
            ring.full.put((block, block, 0, count))
    except BaseException as exc:  # handed to the caller's thread
        ring.full.put(exc)


class ThreadedWriter(Writer):
    """Runs the layers below it in a worker thread: put it between two expensive layers
    (the cipher and the base64 encoder under it) and both cores work. What is written is
    copied into blocks and handed over, or (:meth:`claim`, :meth:`submit`) produced in the
    blocks themselves; :meth:`finalize` waits for the worker, then finalizes the layer
    below in the caller's thread."""

    def __init__(self, inner: Sink, *, block: int = BLOCK) -> None:
        super().__init__(inner)
        self._background = BackgroundSink(inner, block=block)

    def _write(self, data: Data) -> None:
        self._background.write(data)

    def claim(self) -> bytearray:
        if self.finalized:
            raise AlreadyFinalized(type(self).__name__)
        return self._background.claim()

    def submit(self, block: bytearray, start: int, end: int) -> None:
        self._background.submit(block, start, end)

    def _finish(self) -> None:
        self._background.close()

    def _abandon(self) -> None:
        self._background.abandon()


class DirectBlocks:
    """:meth:`ThreadedWriter.claim` and :meth:`~ThreadedWriter.submit` for any sink: one
    reused block, written out at once in the caller's thread."""

    def __init__(self, sink: Sink, block: int = BLOCK) -> None:
        self._sink = sink
        self._block = bytearray(block)

    def claim(self) -> bytearray:
        return self._block

    def submit(self, block: bytearray, start: int, end: int) -> None:
        self._sink.write(memoryview(block)[start:end])


def blocks(sink: Sink, size: int) -> ThreadedWriter | DirectBlocks:
    """Blocks of ``size`` bytes to produce output in for ``sink``: its own if it is a
    :class:`ThreadedWriter`, else a :class:`DirectBlocks` around it."""
    return sink if isinstance(sink, ThreadedWriter) else DirectBlocks(sink, size)
