"""What the streaming tests share: sinks that record or count, sources made as they are
read (or that fail halfway), the peak of memory while a block runs, and the pipe through
which a large message is decrypted as it is encrypted."""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import re
import threading
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol, TypeVar

from securemail.errors import SecureMailError
from securemail.stream.base import Data, Sink, Source

MiB = 1024 * 1024
T = TypeVar("T")


class RecordingSink:
    """Keeps a copy of every write, so a test can tell whether anything was released."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: Data) -> int:
        self.writes.append(bytes(data))
        return len(data)

    @property
    def data(self) -> bytes:
        return b"".join(self.writes)


class DiscardingSink:
    """Counts what is written and keeps none of it."""

    def __init__(self) -> None:
        self.size = 0

    def write(self, data: Data) -> int:
        self.size += len(data)
        return len(data)


def noise(size: int, seed: int) -> bytes:
    """``size`` reproducible pseudo-random bytes (test data, not keys)."""
    return random.Random(seed).randbytes(size)  # noqa: S311


class TrickleSource:
    """``data`` handed out 1 to ``most`` bytes per read (sizes drawn from ``seed``), as a
    slow socket does: every boundary of every parser gets crossed."""

    def __init__(self, data: bytes, most: int = 7, seed: int = 3156) -> None:
        self._data = memoryview(data)
        self._random = random.Random(seed)  # noqa: S311 (read sizes, not secrets)
        self._most = most

    def readinto(self, buffer: bytearray | memoryview) -> int:
        count = min(len(buffer), len(self._data), self._random.randint(1, self._most))
        buffer[:count] = self._data[:count]
        self._data = self._data[count:]
        return count


class PatternSource:
    """``size`` pseudo-random bytes, generated as they are read: one 1 MiB block (plus an
    odd remainder, so that reads never line up with it) repeated, never the whole."""

    def __init__(self, size: int, *, seed: int = 4) -> None:
        self._block = memoryview(noise(MiB + 4093, seed))
        self._position = 0
        self.remaining = size

    def readinto(self, buffer: bytearray | memoryview) -> int:
        count = min(len(buffer), self.remaining)
        done = 0
        while done < count:
            take = min(count - done, len(self._block) - self._position)
            buffer[done : done + take] = self._block[self._position : self._position + take]
            done += take
            self._position = (self._position + take) % len(self._block)
        self.remaining -= count
        return count


class FailingSource:
    """``good`` bytes, then an OSError (a disk going away halfway through a file)."""

    def __init__(self, good: int) -> None:
        self._pattern = PatternSource(good)

    def readinto(self, buffer: bytearray | memoryview) -> int:
        count = self._pattern.readinto(buffer)
        if not count:
            raise OSError("the attachment's disk went away")
        return count


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def workers(prefix: str = "securemail-") -> list[threading.Thread]:
    """securemail's worker threads still running (writers, readers, ciphers, gpg feeds)."""
    return [t for t in threading.enumerate() if t.name.startswith(prefix)]


@contextlib.contextmanager
def traced_peak() -> Iterator[Callable[[], int]]:
    """The peak of memory allocated through Python while the block runs."""
    tracemalloc.start()
    try:
        yield lambda: tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def decrypted_from_pipe(produce: Callable[[Sink], object], decrypt: Callable[[Source], T]) -> T:
    """``decrypt`` reading what ``produce`` writes, through a pipe, ``produce`` in a thread
    of its own: no message file on disk, and a memory peak taken around this covers both."""
    read_end, write_end = os.pipe()
    with contextlib.suppress(OSError):  # a larger pipe only makes it faster
        fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, MiB)
    failures: list[BaseException] = []

    def producer() -> None:
        try:
            with open(write_end, "wb", buffering=0) as pipe:
                produce(pipe)
        except BaseException as exc:  # reported in the test's thread
            failures.append(exc)

    with open(read_end, "rb", buffering=0) as source:
        thread = threading.Thread(target=producer)
        thread.start()
        try:
            return decrypt(source)
        finally:
            source.close()
            thread.join()
            if failures:
                raise AssertionError("the encrypting thread failed") from failures[0]


class _Read(Protocol):
    @property
    def data(self) -> bytes: ...


R = TypeVar("R", bound=_Read)
S = TypeVar("S")


def canonical(data: bytes) -> bytes:
    """Line ends as CRLF (the in-memory readers make the whole entity CRLF)."""
    return re.sub(rb"\r?\n", b"\r\n", data)


def as_in_memory(
    in_memory: Callable[[], R], streamed: Callable[[Sink], S], spool: Path
) -> tuple[R, S] | None:
    """Read one message with an in-memory reader and with its streaming counterpart: both
    read it, to the same message (line ends aside), or both refuse it, the streaming one
    with a typed error, writing nothing and leaving nothing in ``spool``. The two results
    when both read it; None when both refused."""
    try:
        whole: R | None = in_memory()
    except SecureMailError:
        whole = None
    sink = RecordingSink()
    try:
        result = streamed(sink)
    except SecureMailError as exc:
        assert sink.writes == []
        assert whole is None, f"the streaming reader refused what the in-memory one reads: {exc}"
        return None
    finally:
        assert list(spool.iterdir()) == []
    assert whole is not None, "the streaming reader released what the in-memory one refuses"
    assert canonical(sink.data) == canonical(whole.data)
    return whole, result
