"""Input and output for the command line: whole messages in memory, large ones streamed.

A command reads the first :data:`STREAM_THRESHOLD` bytes of its input; if that is all, the
message is handled in memory (every feature, e.g. 7-bit re-encoding before signing); if
more follows, it is streamed, with the bytes already read passed on as a prefix, so that
``compose --attach BIG | encrypt | decrypt`` runs in bounded memory. Output to a file is
written to a temporary name and renamed at the end, so a failure never leaves a truncated
message behind under the name asked for.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Self, cast

from .progress import Progress, ProgressSource
from .stream.base import Data, Source
from .stream.threads import BackgroundSink, read_ahead

__all__ = ["STREAM_THRESHOLD", "Input", "Output", "open_input"]

STREAM_THRESHOLD = 4 * 1024 * 1024
"""Inputs up to this size are handled in memory; larger ones are streamed."""


@dataclasses.dataclass
class Input:
    """The input's first bytes, and (for a large input) a source for the rest."""

    prefix: bytes
    rest: Source | None
    size: int | None
    """The total size when known (a regular file), for the progress line."""

    @property
    def streaming(self) -> bool:
        return self.rest is not None

    def source(self, label: str) -> tuple[Source, Progress]:
        """The rest of the input, read ahead in a worker thread unless it is a regular
        file, and counted for progress (the prefix is counted at once)."""
        assert self.rest is not None
        progress = Progress(label, self.size)
        progress.update(len(self.prefix))
        return ProgressSource(read_ahead(self.rest), progress), progress


def open_input(path: str | None) -> Input:
    stream: BinaryIO = (
        sys.stdin.buffer if path is None or path == "-" else Path(path).open("rb")  # noqa: SIM115
    )
    size = None
    if stream is not sys.stdin.buffer:
        size = os.fstat(stream.fileno()).st_size
    prefix = stream.read(STREAM_THRESHOLD + 1)
    if len(prefix) <= STREAM_THRESHOLD:
        if stream is not sys.stdin.buffer:
            stream.close()
        return Input(prefix, None, len(prefix))
    return Input(prefix, cast(Source, stream), size)  # binary files have readinto


class Output:
    """Where a command writes: stdout, or a file replaced atomically on success.

    ``write`` goes through a worker thread (see :class:`BackgroundSink`), so writing and
    computing overlap on large messages.
    """

    def __init__(self, path: str | None) -> None:
        self._target = None if path is None or path == "-" else Path(path)
        if self._target is None:
            self._file: BinaryIO = sys.stdout.buffer
        else:
            handle, name = tempfile.mkstemp(
                prefix=f".{self._target.name}.", dir=self._target.parent or None
            )
            self._temporary = Path(name)
            self._file = os.fdopen(handle, "wb")
        self._sink = BackgroundSink(self._file)

    def write(self, data: Data) -> int:
        return self._sink.write(data)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            self._sink.close()
            self._file.flush()
        finally:
            if self._target is not None:
                self._file.close()
                if exc_type is None:
                    self._temporary.replace(self._target)
                else:
                    self._temporary.unlink(missing_ok=True)
