"""The worker-thread layers (securemail.stream.threads): order, errors, stopping.

Every write, copied or produced in a claimed block, reaches the sink once and in order; a
sink's error reaches the caller; an abandoned writer stops its worker; a finished one
refuses more. Threads are looked up by name, so a leaked worker fails the test.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from securemail.errors import AlreadyFinalized
from securemail.stream.base import Data, Writer
from securemail.stream.threads import (
    BackgroundSink,
    BackgroundSource,
    DirectBlocks,
    ThreadedWriter,
    blocks,
    read_ahead,
)
from stream.helpers import workers


class Recording:
    """A sink that keeps every write (as bytes) and can be told to fail."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.writes: list[bytes] = []
        self._fail_after = fail_after

    def write(self, data: Data) -> int:
        if self._fail_after is not None and len(self.writes) >= self._fail_after:
            raise OSError("the disk is full")
        self.writes.append(bytes(data))
        return len(data)

    @property
    def data(self) -> bytes:
        return b"".join(self.writes)


class Finalizing(Writer):
    """A Writer that records whether it was finalized."""

    def __init__(self) -> None:
        super().__init__(Recording())

    def _write(self, data: Data) -> None:
        self._inner.write(data)


def test_copied_and_claimed_writes_arrive_in_order() -> None:
    sink = Recording()
    with BackgroundSink(sink, block=1000) as background:
        background.write(b"a" * 1500)  # one full block and a half
        block = background.claim()  # hands the half block over first
        block[:3] = b"bcd"
        background.submit(block, 1, 3)  # only "cd"
        background.write(b"e")
        empty = background.claim()
        background.submit(empty, 0, 0)  # given back, nothing written
        background.write(memoryview(b"fgh")[1:])
    assert sink.data == b"a" * 1500 + b"cd" + b"e" + b"gh"
    assert b"" not in sink.writes
    assert not workers()


def test_large_bytes_are_handed_over_in_order_without_copy() -> None:
    """A bytes object of half a block or more goes to the worker as it is (it cannot
    change), between the writes around it, still at most a ring's worth in flight."""

    class Identity:
        def __init__(self) -> None:
            self.seen: list[object] = []

        def write(self, data: Data) -> int:
            view = memoryview(data)
            self.seen.append(view.obj)
            return len(view)

    sink = Identity()
    big = [bytes([i]) * 600 for i in range(10)]
    with BackgroundSink(sink, block=1000) as background:
        background.write(b"small")
        for piece in big:
            background.write(piece)
            background.write(bytearray(b"tail"))  # copied into a block
    objects = [o for o in sink.seen if isinstance(o, bytes)]
    assert objects == big, "the same objects, in order"
    recorded = Recording()
    with BackgroundSink(recorded, block=1000) as background:
        background.write(b"small")
        for piece in big:
            background.write(piece)
            background.write(bytearray(b"tail"))
    assert recorded.data == b"small" + b"".join(p + b"tail" for p in big)


def test_claimed_blocks_are_reused_not_allocated() -> None:
    sink = Recording()
    seen = set()
    with BackgroundSink(sink, block=64) as background:
        for index in range(50):
            block = background.claim()
            seen.add(id(block))
            block[:2] = index.to_bytes(2, "big")
            background.submit(block, 0, 2)
    assert len(seen) <= 3, "a ring of three blocks"
    assert sink.data == b"".join(i.to_bytes(2, "big") for i in range(50))


def test_a_sink_error_reaches_the_caller_and_the_worker_stops() -> None:
    background = BackgroundSink(Recording(fail_after=2), block=16)
    with pytest.raises(OSError, match="disk is full"):
        for _ in range(100):
            background.write(b"x" * 16)
        background.close()
    with pytest.raises(OSError, match="disk is full"):
        background.close()  # still the same error, and the worker has ended
    assert not workers()


def test_write_and_claim_after_close_are_refused() -> None:
    background = BackgroundSink(Recording())
    background.close()
    with pytest.raises(ValueError, match="closed"):
        background.write(b"late")
    with pytest.raises(ValueError, match="closed"):
        background.claim()
    with pytest.raises(ValueError, match="closed"):
        background.submit(bytearray(4), 0, 4)


def test_abandon_drops_the_rest_and_stops_the_worker() -> None:
    sink = Recording()
    background = BackgroundSink(sink, block=8)
    background.write(b"12345678")  # a full block, handed over
    background.write(b"9")  # held, never written
    background.abandon()
    assert sink.data == b"12345678", "what was handed over is written, the rest dropped"
    assert not workers()


def test_threaded_writer_finalizes_below_and_refuses_more() -> None:
    below = Finalizing()
    with ThreadedWriter(below) as threaded:
        threaded.write(b"data")
    assert below.finalized
    with pytest.raises(AlreadyFinalized):
        threaded.write(b"more")
    with pytest.raises(AlreadyFinalized):
        threaded.claim()
    assert not workers()


def test_threaded_writer_on_an_error_stops_without_finalizing() -> None:
    below = Finalizing()
    with pytest.raises(RuntimeError, match="upstream"), ThreadedWriter(below) as threaded:
        threaded.write(b"data")
        raise RuntimeError("upstream")
    assert not below.finalized, "no tail after a failure"
    assert not workers()


def test_blocks_are_a_threaded_writers_own_or_direct() -> None:
    threaded = ThreadedWriter(Recording())
    assert blocks(threaded, 100) is threaded
    threaded.finalize()
    sink = Recording()
    direct = blocks(sink, 100)
    assert isinstance(direct, DirectBlocks)
    block = direct.claim()
    assert len(block) == 100
    block[:5] = b"hello"
    direct.submit(block, 1, 5)
    assert sink.writes == [b"ello"], "written at once, in the caller's thread"


def test_read_ahead_threads_only_for_reads_that_may_block(tmp_path: Path) -> None:
    path = tmp_path / "data.bin"
    content = os.urandom(700_000)
    path.write_bytes(content)
    with path.open("rb", buffering=0) as regular:
        assert read_ahead(regular) is regular
    ahead = read_ahead(io.BytesIO(content))
    assert isinstance(ahead, BackgroundSource)
    got = bytearray()
    buffer = bytearray(65_536)
    while count := ahead.readinto(buffer):
        got += buffer[:count]
    assert bytes(got) == content
    assert ahead.readinto(buffer) == 0


def test_a_read_error_reaches_the_reader() -> None:
    class Broken:
        def readinto(self, buffer: bytearray | memoryview) -> int:
            raise OSError("the network went away")

    ahead = BackgroundSource(Broken())
    with pytest.raises(OSError, match="went away"):
        ahead.readinto(bytearray(10))
    assert ahead.readinto(bytearray(10)) == 0
