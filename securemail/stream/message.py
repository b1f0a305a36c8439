"""The header section of a streamed message: read off a source before its body, and
restored (RFC 9788 header protection) in front of a decrypted body on the way out."""

from __future__ import annotations

import dataclasses
import re

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


_EMPTY_LINE = re.compile(rb"(?:\A|\n)\r?\n")  # the end of a header section


def read_header_section(source: Source, prefix: bytes = b"") -> tuple[bytes, Source]:
    """The header section of the message in ``source`` (CRLF, ending with the empty line)
    and a source for its body, without reading more than the header needs.

    A message saved from a mail store may start with an mbox ``From `` line (RFC 4155),
    which is dropped as the in-memory readers drop it. The section ends at the first empty
    line, whatever the line ends: a header saved with LF may precede CRLF armor."""
    data = prefix
    chunk = bytearray(8192)
    mbox_checked = False
    while True:
        if not mbox_checked and (len(data) >= 5 or b"\n" in data):
            mbox_checked = True
            if data.startswith(b"From "):
                line_end = data.find(b"\n")
                while line_end < 0 and len(data) <= MAX_HEADER_SECTION:
                    count = source.readinto(chunk)
                    if not count:
                        raise MalformedMessageError("the message ends inside its header section")
                    data = data + bytes(chunk[:count])
                    line_end = data.find(b"\n")
                if line_end < 0:
                    raise MalformedMessageError("the header section is larger than 1 MiB")
                data = data[line_end + 1 :]
        window = bytes(memoryview(data)[: MAX_HEADER_SECTION + 4])
        if (found := _EMPTY_LINE.search(window)) is not None:
            header = wire.canonicalize(window[: found.end()])
            return header, PrefixedSource(memoryview(data)[found.end() :], source)
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
        found = _EMPTY_LINE.search(self._head)
        if found is None:
            return None
        return found.end(), b"\r" not in found.group()

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
