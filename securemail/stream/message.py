"""The header section of a streamed message: read off a source before its body, and
restored (RFC 9788 header protection) in front of a decrypted body on the way out."""

from __future__ import annotations

import dataclasses
import re

from .. import payload, wire
from ..errors import MalformedMessageError
from ..legacydisplay import first_part_holds_all, strip_first_part
from ..results import VerifyResult
from .base import Sink, Source
from .encoding import CrlfWriter

__all__ = [
    "LEGACY_DISPLAY_LIMIT",
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

LEGACY_DISPLAY_LIMIT = 1024 * 1024
"""The most of a decrypted body held in memory to remove legacy display elements from it
(see :class:`RestoringSink`)."""


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
    signature: VerifyResult | None = None
    """The check of an OpenPGP signature made with the encryption (signed and encrypted in
    one message, as ``gpg --sign --encrypt`` writes it), as :func:`securemail.pgp.decrypt`
    reports it; its ``data`` is None (the message went to the sink). A multipart/signed
    inside is not checked here: it comes out as it is, for ``verify``."""


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
    in-memory reader does, unless its transfer encoding is binary.

    Under protected headers the body may carry legacy display elements, which
    :func:`securemail.payload.restore` removes; so that a streamed message reads as the
    same message decrypted in memory, its body is held back. A body of up to ``limit``
    bytes is restored whole, at :meth:`close`. Of a larger one only the start is changed:
    what comes up to the end of the first part of a multipart, where all the elements are
    (:func:`securemail.legacydisplay.first_part_holds_all`), if that end comes within
    ``limit``; otherwise (a huge text, a multipart/alternative) the body passes unchanged,
    as memory stays bounded only so."""

    def __init__(
        self, sink: Sink, outer: wire.RawEntity, *, limit: int = LEGACY_DISPLAY_LIMIT
    ) -> None:
        self._sink = sink
        self._body: Sink = sink
        self._outer = outer
        self._head = bytearray()
        self._limit = limit
        self._inner: wire.RawEntity | None = None
        self._hold: _Hold | None = None
        self.protected: tuple[str, ...] = ()
        self.header = b""
        """The header section written over the body (after restoration)."""
        self.done = False

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self.done:
            self._body.write(data)
        else:
            self._head += data
            found = self._header_end()
            if found is not None:
                cut, lf = found
                self._emit(bytes(self._head[:cut]), bytes(self._head[cut:]), lf=lf)
            elif len(self._head) > MAX_HEADER_SECTION:
                self._emit(b"", bytes(self._head), lf=False)  # no header section: all body
        if self._hold is not None and len(self._hold.held) > self._limit:
            self._release_start()
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
        if payload.strips_legacy_display(inner):
            self._inner = inner
            self._hold = _Hold(self._sink)
            self._body = self._hold
        if lf:
            field = inner.get("Content-Transfer-Encoding")
            if field is None or field.value.strip().lower() != "binary":
                self._body = CrlfWriter(self._body)
        restored = payload.restore_header(self._outer, inner)
        self.protected = restored.protected_headers
        self.header = restored.data
        if self._hold is None:
            self._sink.write(restored.data)
        self._body.write(rest)
        self._head.clear()
        self.done = True

    def _release_start(self) -> None:
        """Past ``limit``: write the header and the start of the body, changed as
        :func:`securemail.payload.restore` changes them, and the rest of the body as it is."""
        assert self._hold is not None and self._inner is not None
        body = bytes(self._hold.held)
        start = _stripped_start(self._inner, body, self._limit)  # may refuse: nothing written
        self._hold.release()
        self._hold = None
        self._sink.write(payload.restore_header(self._outer, self._inner).data)
        if start is None:
            self._sink.write(body)
        else:
            replaced, end = start
            self._sink.write(replaced)
            self._sink.write(memoryview(body)[end:])

    def close(self) -> None:
        if not self.done:
            self._emit(b"", bytes(self._head), lf=False)
        if isinstance(self._body, CrlfWriter):
            self._body.finalize()
        if self._hold is not None:
            assert self._inner is not None
            whole = wire.RawEntity(fields=self._inner.fields, body=bytes(self._hold.held))
            self._hold.release()
            self._hold = None
            self._sink.write(payload.restore(self._outer, whole).data)


class _Hold:
    """The body while it may still change: kept until released, then passed to ``sink``."""

    def __init__(self, sink: Sink) -> None:
        self._sink = sink
        self.held = bytearray()
        self._released = False

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self._released:
            self._sink.write(data)
        else:
            self.held += data
        return len(data)

    def release(self) -> None:
        """From now on pass writes through; what was held is the caller's to write."""
        self._released = True
        self.held = bytearray()


_DELIMITER_ROOM = 1024
"""Bytes after a delimiter line's start within which it surely ends (70 for the boundary,
the rest for transport padding): a first part ending this far before ``limit`` is found in
any held body longer than ``limit``, however the writes were cut."""


def _stripped_start(inner: wire.RawEntity, body: bytes, limit: int) -> tuple[bytes, int] | None:
    """The start of ``body`` (a prefix of ``inner``'s body) with its legacy display
    elements removed, and where in ``body`` the unchanged rest begins; None if the first
    part of the multipart does not end within ``limit`` or nothing changes."""
    container = wire.parse_headers(inner.header_bytes())
    boundary = container.get_boundary()
    if not first_part_holds_all(container) or not boundary or not boundary.isascii():
        return None
    try:
        delimiters = wire.delimiter_lines(boundary).finditer(body)
    except MalformedMessageError:
        return None  # not a boundary a multipart can have
    opening = next(delimiters, None)
    if opening is None or opening.group(1):
        return None
    ending = next(delimiters, None)
    # The delimiter line must be whole: the held body may end in the middle of one.
    if ending is None or ending.start() > limit - _DELIMITER_ROOM:
        return None
    part = body[opening.end() : ending.start()]
    if not ending.group().endswith(wire.CRLF) or not part.strip():
        return None
    first = wire.parse(part)
    changed = strip_first_part(container, first, followed=not ending.group(1))
    if changed is None:  # dropped: the delimiter line before it now opens the next part
        return body[: opening.end()], ending.end()
    if not changed:
        return None
    return body[: opening.end()] + wire.to_bytes(first), ending.start()
