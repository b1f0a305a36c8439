"""The header section of a streamed message: read off a source before its body, and
restored (RFC 9788 header protection) in front of a decrypted body on the way out."""

from __future__ import annotations

import dataclasses

from .. import payload, wire
from ..errors import MalformedMessageError
from .base import Sink, Source
from .encoding import CrlfWriter

__all__ = [
    "MAX_HEADER_SECTION",
    "PrefixedSource",
    "RestoringSink",
    "StreamDecryptResult",
    "Streamed",
    "read_header_section",
]

MAX_HEADER_SECTION = 1024 * 1024
"""The largest header section read before the body (a generous bound, not a limit of RFC
5322, which has none: it keeps a malicious source from growing memory without end)."""


@dataclasses.dataclass(frozen=True)
class Streamed:
    """What was written: the SMTP envelope of the message (Bcc included)."""

    mail_from: str | None
    recipients: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class StreamDecryptResult:
    """A message decrypted by :func:`decrypt_stream`; the message itself went to the sink."""

    authenticated: bool
    content_cipher: str
    recipient: str
    protected_headers: tuple[str, ...]
    size: int
    """Plaintext bytes of the decrypted entity."""
    unchecked_signature: bool = False
    """The encrypted data also carried an OpenPGP signature (signed and encrypted in one
    message, as ``gpg --sign --encrypt`` writes): streaming decryption does not check it,
    so it counts for nothing; :func:`securemail.pgp.decrypt` checks it in memory."""


class PrefixedSource:
    """``prefix`` first, then the rest of ``source`` (bytes read ahead are not lost)."""

    def __init__(self, prefix: bytes | memoryview, source: Source) -> None:
        self._prefix = memoryview(prefix)
        self._source = source

    def readinto(self, buffer: bytearray | memoryview) -> int:
        if self._prefix:
            count = min(len(buffer), len(self._prefix))
            buffer[:count] = self._prefix[:count]
            self._prefix = self._prefix[count:]
            return count
        return self._source.readinto(buffer) or 0


def read_header_section(source: Source, prefix: bytes = b"") -> tuple[bytes, Source]:
    """The header section of the message in ``source`` (CRLF, ending with the empty line)
    and a source for its body, without reading more than the header needs."""
    data = prefix
    chunk = bytearray(8192)
    while True:
        window = memoryview(data)[: MAX_HEADER_SECTION + 4]
        for marker in (b"\r\n\r\n", b"\n\n"):
            end = bytes(window).find(marker) if len(window) < len(data) else data.find(marker)
            if end >= 0:
                header = wire.canonicalize(bytes(window[: end + len(marker)]))
                return header, PrefixedSource(memoryview(data)[end + len(marker) :], source)
        if len(data) > MAX_HEADER_SECTION:
            raise MalformedMessageError("the header section is larger than 1 MiB")
        count = source.readinto(chunk)
        if not count:
            raise MalformedMessageError("the message ends inside its header section")
        data = data + bytes(chunk[:count])


class RestoringSink:
    """Receives the verified plaintext: reads the entity's header section, writes the
    restored message header, then passes the body through. An entity written with bare
    LF line ends (``openssl cms -binary`` of a Unix file) is made canonical, as the
    in-memory reader does, unless its transfer encoding is binary."""

    def __init__(self, sink: Sink, outer: wire.RawEntity) -> None:
        self._sink = sink
        self._body: Sink = sink
        self._outer = outer
        self._head = bytearray()
        self.protected: tuple[str, ...] = ()
        self.done = False

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self.done:
            self._body.write(data)
            return len(data)
        self._head += data
        found = self._header_end()
        if found is None:
            if len(self._head) > MAX_HEADER_SECTION:
                self._emit(b"", bytes(self._head), lf=False)  # no header section: all body
            return len(data)
        cut, lf = found
        self._emit(bytes(self._head[:cut]), bytes(self._head[cut:]), lf=lf)
        return len(data)

    def _header_end(self) -> tuple[int, bool] | None:
        """Where the header section ends, and whether its lines end in bare LF."""
        for empty in (b"\r\n", b"\n"):
            if self._head.startswith(empty):
                return len(empty), empty == b"\n"
        ends = [
            (at + len(marker), marker == b"\n\n")
            for marker in (b"\r\n\r\n", b"\n\n")
            if (at := self._head.find(marker)) >= 0
        ]
        return min(ends) if ends else None

    def _emit(self, header: bytes, rest: bytes, *, lf: bool) -> None:
        if lf:
            header = wire.canonicalize(header)
        inner = wire.split_entity(header) if header else wire.RawEntity(fields=(), body=b"")
        if lf:
            field = inner.get("Content-Transfer-Encoding")
            if field is None or field.value.strip().lower() != "binary":
                self._body = CrlfWriter(self._sink)
        restored = payload.restore(self._outer, inner)
        self.protected = restored.protected_headers
        self._sink.write(restored.data)
        self._body.write(rest)
        self._head.clear()
        self.done = True

    def close(self) -> None:
        if not self.done:
            self._emit(b"", bytes(self._head), lf=False)
        if isinstance(self._body, CrlfWriter):
            self._body.finalize()
