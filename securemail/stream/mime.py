"""MIME written as a stream: multipart bodies whose parts are added one at a time.

A streamed attachment is never held in memory: it is read from its file in chunks and
base64-encoded on the way out, or, inside encryption and where the policy allows it,
carried as it is (``Content-Transfer-Encoding: binary``). Boundaries are random and contain
``_``, which base64 text cannot, so a base64 part can never contain its own boundary; a
binary part and parts given as bytes are checked.
"""

from __future__ import annotations

import copy
import mimetypes
import os
import re
from collections.abc import Iterable, Sequence
from email.message import EmailMessage
from pathlib import Path

from .. import payload, wire
from ..errors import AlreadyFinalized, InputError, MalformedMessageError
from ..headers import check_header_value, sanitize_filename
from ..results import ProtectedMessage
from .base import CHUNK, Data, Sink, Source, Writer
from .encoding import CrlfWriter, threaded_base64
from .threads import ThreadedWriter

__all__ = [
    "MultipartWriter",
    "PartSink",
    "StreamedAttachment",
    "copy_into",
    "with_attachments",
    "write_entity",
    "write_message",
    "write_whole",
]


class PartSink:
    """Writes into a multipart body without ever finalizing it (a part ends, the multipart
    goes on)."""

    def __init__(self, inner: Sink) -> None:
        self._inner = inner

    def write(self, data: Data) -> int:
        self._inner.write(data)
        return len(data)


def copy_into(writer: Sink, source: Source, *, chunk: int = 16 * CHUNK) -> int:
    """Copy ``source`` into ``writer`` in chunks through one reused buffer (into the blocks
    of a :class:`ThreadedWriter`, with no copy); bytes copied."""
    if isinstance(writer, ThreadedWriter):
        return _read_into_blocks(writer, source)
    buffer = bytearray(chunk)
    view = memoryview(buffer)
    total = 0
    while True:
        count = source.readinto(buffer)
        if not count:
            return total
        writer.write(buffer if count == chunk else view[:count])  # (a layer may search it)
        total += count


def _read_into_blocks(writer: ThreadedWriter, source: Source) -> int:
    total = 0
    while True:
        block = writer.claim()
        count = source.readinto(block) or 0
        writer.submit(block, 0, count)
        if not count:
            return total
        total += count


class StreamedAttachment:
    """A file sent as an attachment without being read into memory."""

    def __init__(
        self,
        source: str | os.PathLike[str] | Source,
        *,
        filename: str | None = None,
        content_type: str | None = None,
    ) -> None:
        if isinstance(source, str | os.PathLike):
            path = Path(source)
            if not path.is_file():
                raise InputError(f"attachment {path} is not a readable file")
            self._path: Path | None = path
            self._file: Source | None = None
            default_name = path.name
        else:
            self._path, self._file = None, source
            default_name = getattr(source, "name", None) or "attachment"
        self.filename = sanitize_filename(filename or os.path.basename(str(default_name)))
        guessed, _ = mimetypes.guess_type(self.filename)
        self.content_type = _checked_type(content_type or guessed or "application/octet-stream")

    def header_fields(self, *, binary: bool = False) -> list[tuple[str, str]]:
        return [
            ("Content-Type", self.content_type),
            ("Content-Transfer-Encoding", "binary" if binary else "base64"),
            ("Content-Disposition", _disposition(self.filename)),
        ]

    def write_base64(self, sink: Sink) -> int:
        """Base64 of the file into ``sink``; the number of file bytes read."""
        with threaded_base64(PartSink(sink)) as encoder:  # its worker stops on an error
            return self._copy(encoder)

    def write_binary(self, sink: Sink, boundary: str) -> int:
        """The file as it is into ``sink`` (for a part inside encryption); the number of
        bytes read. A file holding the multipart boundary would end its part early when
        read back: that stops the message with :class:`MalformedMessageError`."""
        return self._copy(_DelimiterGuard(sink, boundary))

    def _copy(self, sink: Sink) -> int:
        if self._path is not None:
            with self._path.open("rb") as source:
                return copy_into(sink, source)
        assert self._file is not None
        return copy_into(sink, self._file)


class _DelimiterGuard:
    """Passes a binary part's bytes on, refusing any that hold the boundary. Only
    ``CRLF--boundary`` delimits in RFC 2046, but lenient parsers (the standard library's
    among them) also take a bare LF or CR before it; the boundary anywhere is refused, so
    that no reader can see a part end early."""

    def __init__(self, inner: Sink, boundary: str) -> None:
        self._inner = inner
        self._boundary = boundary.encode("ascii")
        self._tail = b""  # the last len(boundary) - 1 bytes seen

    def write(self, data: Data) -> int:
        view = memoryview(data).cast("B")
        keep = len(self._boundary) - 1
        if isinstance(data, bytes | bytearray):  # searched where it is
            self._check(data[:keep], data)
        else:
            for start in range(0, len(view), CHUNK):
                # Searched in copies of CHUNK bytes: small enough to come from the
                # allocator's free lists, where a copy of the whole write would fault in
                # fresh pages.
                piece = bytes(view[start : start + CHUNK])
                self._check(piece[:keep], piece)
        self._inner.write(view)
        return len(view)

    def _check(self, head: bytes | bytearray, piece: bytes | bytearray) -> None:
        """Refuse ``piece`` if it holds the boundary, or if its ``head`` completes one that
        the bytes before it began."""
        if self._boundary in self._tail + head or self._boundary in piece:
            raise MalformedMessageError(
                "an attachment holds the multipart boundary; send it base64-encoded"
            )
        keep = len(self._boundary) - 1
        self._tail = (self._tail + piece[-keep:])[-keep:]


_MEDIA_TYPE = re.compile(r"[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+")


def _checked_type(content_type: str) -> str:
    """A Content-Type value checked now, so a bad one stops the message before any byte
    of it is written."""
    check_header_value("Content-Type", content_type)
    if not _MEDIA_TYPE.fullmatch(content_type.split(";", 1)[0].strip()):
        raise InputError("an attachment content type must have the form type/subtype")
    return content_type


def _disposition(filename: str) -> str:
    """``attachment; filename=...`` with RFC 2231 encoding where the name needs it."""
    message = EmailMessage(policy=wire.PARSE_POLICY)
    message["Content-Disposition"] = "attachment"
    message.set_param("filename", filename, header="Content-Disposition")
    return str(message["Content-Disposition"])


class MultipartWriter(Writer):
    """The body of a multipart entity, part by part; :meth:`finalize` writes the close
    delimiter (and finalizes the layer below)."""

    def __init__(self, inner: Sink, boundary: str) -> None:
        super().__init__(inner)
        self.boundary = boundary
        self._delimiter = b"\r\n--" + boundary.encode("ascii")

    def add_entity(self, entity: bytes) -> None:
        """A complete part, headers and body, as bytes (checked not to hold the boundary)."""
        if self._delimiter[2:] in entity:
            raise MalformedMessageError("a part contains the multipart boundary")
        self._begin()
        self._inner.write(entity)

    def add_attachment(self, attachment: StreamedAttachment, *, binary: bool = False) -> int:
        """A streamed attachment part, base64 or (``binary``, only where a transport
        never sees it: inside encryption) as it is; the number of file bytes it held."""
        self._begin(attachment.header_fields(binary=binary))
        if binary:
            return attachment.write_binary(self._inner, self.boundary)
        return attachment.write_base64(self._inner)

    def _begin(self, fields: Iterable[tuple[str, str]] | None = None) -> None:
        if self.finalized:
            raise AlreadyFinalized(type(self).__name__)
        self._inner.write(self._delimiter + b"\r\n")
        if fields is not None:
            self._inner.write(b"".join(wire.fold_field(n, v) for n, v in fields) + b"\r\n")

    def _write(self, data: Data) -> None:
        raise InputError("write parts with add_entity() or add_attachment()")

    def _finish(self) -> None:
        self._inner.write(self._delimiter + b"--\r\n")


def with_attachments(
    message: payload.MessageInput, attachments: Sequence[StreamedAttachment]
) -> tuple[payload.MessageInput, str | None]:
    """``message`` turned into multipart/mixed with a known boundary when files are to be
    streamed after its own parts (None when there are none)."""
    if not attachments:
        return message, None
    if isinstance(message, ProtectedMessage):
        message = wire.parse(message.data)
    elif not isinstance(message, EmailMessage):
        message = wire.parse(
            bytes(message) if isinstance(message, bytes | bytearray) else message.as_bytes()
        )
    mixed = copy.deepcopy(message)
    if mixed.get_content_type() != "multipart/mixed":
        mixed.make_mixed()
    boundary = wire.new_boundary()
    mixed.set_boundary(boundary)
    return mixed, boundary


def write_entity(
    top: Writer,
    entity: bytes,
    boundary: str | None,
    attachments: Sequence[StreamedAttachment],
    *,
    binary: bool = False,
) -> None:
    """The prepared entity, then (for multipart/mixed) each streamed attachment, binary if
    ``binary``; finalizes."""
    if boundary is None:
        top.write(entity)
        top.finalize()
        return
    close = b"\r\n--" + boundary.encode("ascii") + b"--"
    cut = entity.rfind(close)
    if cut < 0:
        raise MalformedMessageError("the message's multipart body has no close delimiter")
    top.write(entity[:cut])
    parts = MultipartWriter(top, boundary)
    for attachment in attachments:
        parts.add_attachment(attachment, binary=binary)
    parts.finalize()


def write_whole(top: Writer, entity: bytes, body: Source, *, canonical: bool) -> None:
    """The prepared entity's header, then the body read from ``body`` as it is; finalizes.
    With ``canonical``, bare LF and CR become CRLF first (what is signed must be canonical:
    RFC 8551 3.1.1, RFC 3156 5)."""
    if canonical:
        top = CrlfWriter(top)
    top.write(entity)
    copy_into(top, body)
    top.finalize()


def write_message(
    sink: Sink, message: EmailMessage, attachments: Sequence[StreamedAttachment]
) -> None:
    """``message`` with ``attachments`` streamed after its own parts, unprotected (what
    ``securemail compose`` writes for large files)."""
    mixed, boundary = with_attachments(message, attachments)
    assert isinstance(mixed, EmailMessage)
    write_entity(_Unfinalized(sink), wire.to_bytes(mixed), boundary, attachments)


class _Unfinalized(Writer):
    """The raw sink as the bottom layer of a stack: writes pass through, finalize stops."""

    def _write(self, data: Data) -> None:
        self._inner.write(data)
