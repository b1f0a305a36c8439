"""A progress line for long operations on a terminal: bytes, rate and time left.

Shown only when stderr is a terminal, so pipes and logs get nothing but the one-line
results; redrawn at most a few times a second, so it costs nothing measurable.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from .stream.base import Source

__all__ = ["Progress", "ProgressSource"]

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def _size(count: float) -> str:
    for unit in _UNITS:
        if count < 1024 or unit == _UNITS[-1]:
            return f"{count:.1f} {unit}" if unit != "B" else f"{int(count)} B"
        count /= 1024
    raise AssertionError  # pragma: no cover


class Progress:
    """Counts bytes and redraws one status line on ``stream`` (stderr by default)."""

    def __init__(self, label: str, total: int | None = None, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stderr
        self.enabled = self._stream.isatty()
        self._label = label
        self._total = total
        self._start = time.monotonic()
        self._shown = 0.0
        self.count = 0

    def update(self, count: int) -> None:
        self.count += count
        now = time.monotonic()
        if self.enabled and now - self._shown >= 0.2:
            self._shown = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        elapsed = max(now - self._start, 1e-6)
        rate = self.count / elapsed
        text = f"{self._label} {_size(self.count)}"
        if self._total:
            text += f" / {_size(self._total)} ({100 * self.count // self._total}%)"
        text += f"  {_size(rate)}/s"
        if self._total and rate > 0:
            left = max(self._total - self.count, 0) / rate
            text += f"  ETA {int(left) // 60}:{int(left) % 60:02d}"
        self._stream.write(f"\r{text}\x1b[K")
        self._stream.flush()

    def close(self) -> None:
        if self.enabled:
            self._draw(time.monotonic())
            self._stream.write("\n")
            self._stream.flush()


class ProgressSource:
    """A source that reports what is read from it to a :class:`Progress`."""

    def __init__(self, source: Source, progress: Progress) -> None:
        self._source = source
        self._progress = progress

    def readinto(self, buffer: bytearray | memoryview) -> int:
        count = self._source.readinto(buffer) or 0
        self._progress.update(count)
        return count
