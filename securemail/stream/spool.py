"""A spool for plaintext that is not yet trusted.

Streaming decryption learns whether the content is intact only at the end (the GCM tag,
the OpenPGP MDC, the CBC padding). Until then the plaintext waits here: in an anonymous
temporary file (no name on disk, gone when closed, even if the process dies) encrypted
with a key that exists only in this object, so that no plaintext ever reaches the disk.
Once the check has passed, :meth:`Spool.replay` decrypts it into the caller's sink;
:meth:`Spool.discard` (or leaving the ``with`` block on an error) destroys it.

The file is written by a worker thread (:mod:`securemail.stream.threads`): the kernel's
copies, and the waits for writeback when a spool of gigabytes meets the dirty-page limit,
overlap the decryption instead of following it. It is read back directly: a regular file,
which the kernel reads ahead.
"""

from __future__ import annotations

import os
import tempfile
from types import TracebackType
from typing import Self

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from ..errors import SizeLimitExceeded
from .base import CHUNK, Data, Sink
from .threads import BackgroundSink

__all__ = ["Spool"]


class Spool:
    """Write plaintext in, check it, then :meth:`replay` it out (or :meth:`discard`)."""

    def __init__(self, directory: str | os.PathLike[str] | None = None, *, limit: int) -> None:
        self._file = tempfile.TemporaryFile(dir=directory)  # noqa: SIM115 (closed by us)
        key, nonce = os.urandom(32), os.urandom(16)
        self._cipher = Cipher(algorithms.AES(key), modes.CTR(nonce))
        self._encryptor = self._cipher.encryptor()
        self._buffer = bytearray(CHUNK)
        self._writer: BackgroundSink | None = BackgroundSink(self._file)
        self._limit = limit
        self.size = 0

    def write(self, data: Data) -> int:
        self.size += len(data)
        if self.size > self._limit:
            raise SizeLimitExceeded("the decrypted content", self._limit)
        if self._writer is None:
            raise ValueError("the spool is being replayed or was discarded")
        view = memoryview(data)
        for start in range(0, len(view), CHUNK):
            piece = view[start : start + CHUNK]
            count = self._encryptor.update_into(piece, self._buffer)
            self._writer.write(memoryview(self._buffer)[:count])
        return len(data)

    def replay(self, sink: Sink) -> None:
        """Decrypt everything written into ``sink``, then destroy the spool."""
        try:
            self._close_writer()  # every block on disk, or the writer's error raised
            self._file.flush()
            self._file.seek(0)
            decryptor = self._cipher.decryptor()
            data = bytearray(CHUNK)
            clear = bytearray(CHUNK)
            while count := self._file.readinto(data):
                size = decryptor.update_into(memoryview(data)[:count], clear)
                sink.write(memoryview(clear)[:size])
        finally:
            self.discard()

    def _close_writer(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()

    def discard(self) -> None:
        try:
            self._close_writer()
        except OSError:
            pass  # a spool that could not be written is being destroyed anyway
        finally:
            self._file.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.discard()
