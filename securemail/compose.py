"""Composing messages: an immutable builder that refuses bad input when it is given.

:class:`MessageBuilder` follows ``cryptography.x509.CertificateBuilder``: each setter checks its
argument and returns a new builder, so a half-built message can be shared and extended
safely, and an error points at the call that caused it rather than at ``build()``.
``build()`` returns a :class:`Message`, a standard :class:`~email.message.EmailMessage`, so
everything downstream (signing, encryption, transport) works on the standard library's model.

MIME structure produced (the common shape, as Thunderbird sends it)::

    text only             text/plain
    html                  multipart/alternative(text/plain, text/html)
    html, inline images   multipart/alternative(text/plain,
                                                multipart/related(text/html, image/*...))
    any above + files     multipart/mixed(<the body above>, attachments...)
    files only            multipart/mixed(attachments...)  (no empty text part)

Without ``text()``, the text/plain alternative is rendered from the HTML. All parts use 7-bit
transfer encodings (quoted-printable or base64), which survive any relay unchanged and are
what S/MIME signing needs (RFC 8551 section 3.1.2).
"""

from __future__ import annotations

import dataclasses
import email.policy
import html as html_entities
import mimetypes
import os
import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from email.headerregistry import Address, AddressHeader
from email.message import EmailMessage, MIMEPart
from email.utils import make_msgid
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast, runtime_checkable
from urllib.parse import unquote

from securemail.errors import InputError
from securemail.headers import (
    check_address,
    check_header_name,
    check_header_value,
    verify_header_names,
)

__all__ = [
    "Message",
    "MessageBuilder",
    "SourceData",
    "envelope_bcc",
    "envelope_recipients",
    "envelope_sender",
    "register_source",
]

_POLICY = email.policy.default.clone(cte_type="7bit")
"""``email.policy.default`` with 7-bit bodies: set_content picks quoted-printable or base64
for non-ASCII text instead of 8bit."""

# --- the message ---------------------------------------------------------------------------


class Message(EmailMessage):
    """An :class:`~email.message.EmailMessage` that carries its Bcc recipients beside it.

    Bcc is never a header of a built message: a header would reach the To and Cc recipients
    and end up inside signed and encrypted copies. Transports read :attr:`bcc` for the SMTP
    envelope instead (see :func:`envelope_recipients`).
    """

    def __init__(
        self, policy: email.policy.Policy | None = None, *, bcc: Iterable[str] = ()
    ) -> None:
        super().__init__(policy=policy)
        self._bcc = tuple(bcc)

    @property
    def bcc(self) -> tuple[str, ...]:
        """The Bcc recipients' addr-specs (``local@domain``), in the order given."""
        return self._bcc


def _header_addresses(message: EmailMessage, field: str) -> list[Address]:
    return [
        check_address(field, address)
        for header in message.get_all(field, [])
        for address in cast(AddressHeader, header).addresses
    ]


def envelope_recipients(message: EmailMessage) -> tuple[str, ...]:
    """The SMTP envelope recipients: To, Cc, Bcc (header or :attr:`Message.bcc`).

    Deduplicated in first-seen order; domains compare case-insensitively, local parts do not
    (RFC 5321 section 2.4). Each address is validated, so a malformed header fails here
    instead of at the mail server.
    """
    specs = [
        a.addr_spec for field in ("To", "Cc", "Bcc") for a in _header_addresses(message, field)
    ]
    if isinstance(message, Message):
        specs += message.bcc
    unique: dict[str, str] = {}
    for spec in specs:
        local, _, domain = spec.rpartition("@")
        unique.setdefault(f"{local}@{domain.lower()}", spec)
    return tuple(unique.values())


def envelope_bcc(message: EmailMessage) -> tuple[str, ...]:
    """The blind-copy recipients: a Bcc header (of a message built elsewhere) and
    :attr:`Message.bcc`."""
    specs = [a.addr_spec for a in _header_addresses(message, "Bcc")]
    if isinstance(message, Message):
        specs += message.bcc
    return tuple(dict.fromkeys(specs))


def envelope_sender(message: EmailMessage) -> str:
    """The SMTP envelope sender: the Sender address if present, else the single From address."""
    for field in ("Sender", "From"):
        addresses = _header_addresses(message, field)
        if len(addresses) == 1:
            return addresses[0].addr_spec
        if addresses:
            raise InputError(f"{field} holds {len(addresses)} addresses; the sender must be one")
    raise InputError("the message has no From address")


# --- attachment sources --------------------------------------------------------------------

SourceData = tuple[bytes, str | None]
"""What a source handler returns: the content, and a default filename or ``None``."""

_T = TypeVar("_T")
_SOURCES: dict[type[Any], Callable[[Any], SourceData]] = {}


def register_source(type_: type[_T], handler: Callable[[_T], SourceData]) -> None:
    """Let :meth:`MessageBuilder.attach` and :meth:`~MessageBuilder.inline_image` take ``type_``.

    Sources are matched with ``isinstance`` against the registered types, newest registration
    first, so a later registration overrides an earlier one for the values both match, and
    registering a type again replaces its handler. A handler should raise
    :class:`~securemail.errors.InputError` for a source it cannot read.
    """
    _SOURCES.pop(type_, None)
    _SOURCES[type_] = handler


def _read_source(source: object) -> SourceData:
    for type_, handler in reversed(_SOURCES.items()):
        if isinstance(source, type_):
            return handler(source)
    raise InputError(
        f"cannot attach a {type(source).__qualname__}: give a pathlib.Path, bytes or a binary "
        "file object, or register_source() a handler for it"
    )


def _read_buffer(source: bytes | bytearray | memoryview) -> SourceData:
    return bytes(source), None


def _read_path(source: os.PathLike[str] | os.PathLike[bytes]) -> SourceData:
    path = Path(os.fsdecode(source))
    try:
        return path.read_bytes(), path.name
    except OSError as exc:
        raise InputError(f"cannot read attachment {str(path)!r}: {exc.strerror or exc}") from exc


@runtime_checkable
class _BinaryReadable(Protocol):
    def read(self, size: int, /) -> bytes: ...


_CHUNK_SIZE = 1024 * 1024


def _read_file(source: _BinaryReadable) -> SourceData:
    chunks = []
    while chunk := source.read(_CHUNK_SIZE):
        if not isinstance(chunk, bytes | bytearray):
            raise InputError("the file object returned text: open the file in binary mode ('rb')")
        chunks.append(chunk)
    name = getattr(source, "name", None)
    return b"".join(chunks), Path(name).name if isinstance(name, str) else None


_SOURCES.update(
    {
        bytes: _read_buffer,
        bytearray: _read_buffer,
        memoryview: _read_buffer,
        os.PathLike: _read_path,
        _BinaryReadable: _read_file,
    }
)


# --- parts -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Part:
    """An attachment or inline image, read and checked when it was added."""

    data: bytes = dataclasses.field(repr=False)
    maintype: str
    subtype: str
    params: tuple[tuple[str, str], ...] = ()
    filename: str | None = None
    cid: str | None = None

    def mime(self, disposition: str) -> MIMEPart:
        part = MIMEPart(policy=_POLICY)
        cid = None if self.cid is None else f"<{self.cid}>"
        part.set_content(
            self.data,
            self.maintype,
            self.subtype,
            disposition=disposition,
            filename=self.filename,
            cid=cid,
        )
        for key, value in self.params:
            part.set_param(key, value, replace=True)  # in place: keep Content-Type first
        return part


# Bodies must stay opaque bytes; these need a structure (and message/* may not be base64).
_NOT_OPAQUE = ("multipart", "message")


def _content_type(
    content_type: str | None, filename: str | None
) -> tuple[str, str, dict[str, str]]:
    if content_type is not None:
        check_header_value("Content-Type", content_type)
        header = _POLICY.header_factory("Content-Type", content_type)
        if header.defects or header.maintype in _NOT_OPAQUE:
            raise InputError(f"content type {content_type!r} cannot be used for an attachment")
        params: dict[str, str] = dict(header.params)
        for value in params.values():  # RFC 2231 decoding may have produced a line break
            check_header_value("Content-Type", value)
        return header.maintype, header.subtype, params
    guessed, encoding = mimetypes.guess_type(filename or "")
    # "x.tar.gz" guesses application/x-tar *compressed*: the bytes are gzip, not tar.
    if guessed is None or encoding is not None or guessed.split("/")[0] in _NOT_OPAQUE:
        return "application", "octet-stream", {}
    maintype, subtype = guessed.split("/")
    return maintype, subtype, {}


def _make_part(
    source: object, filename: str | None, content_type: str | None, cid: str | None = None
) -> _Part:
    data, default_name = _read_source(source)
    name = default_name if filename is None else filename
    if name is not None:
        check_header_value("Content-Disposition", name)
    maintype, subtype, params = _content_type(content_type, name)
    return _Part(
        data=data,
        maintype=maintype,
        subtype=subtype,
        params=tuple(params.items()),
        filename=name,
        cid=cid,
    )


# --- HTML to text ----------------------------------------------------------------------------

_SKIPPED = frozenset({"script", "style", "title", "template"})
_PARAGRAPHS = frozenset(
    {"p", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre", "table", "ul", "ol", "dl", "hr"}
)
_LINES = frozenset(
    {"div", "tr", "li", "dt", "dd", "section", "article", "header", "footer", "address", "form"}
)
_WHITESPACE = re.compile(r"\s+")


class _TextRenderer(HTMLParser):
    """What a reader sees of an HTML body, as plain text for the text/plain alternative."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self._chunks: list[str] = []
        self._newlines = 0  # trailing newlines written so far
        self._last = "\n"  # last character written; "\n" counts as the start of a line
        self._skip = 0
        self._pre = 0
        self._link: tuple[str, int] | None = None  # href, index of the link's first chunk

    def _write(self, text: str) -> None:
        if not text:
            return
        self._chunks.append(text)
        content = text.rstrip("\n")
        self._newlines = len(text) - len(content) + (0 if content else self._newlines)
        self._last = text[-1]

    def _break(self, newlines: int) -> None:
        if self._chunks:
            self._write("\n" * (newlines - self._newlines))

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        if not self._pre:
            data = _WHITESPACE.sub(" ", data)
            if self._last in " \n":
                data = data.lstrip(" ")
        self._write(data)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag in _SKIPPED:
            self._skip += 1
        elif self._skip:
            return
        elif tag == "br":
            self._write("\n")
        elif tag in _PARAGRAPHS or tag in _LINES:
            if tag == "pre":
                self._pre += 1
            self._break(2 if tag in _PARAGRAPHS else 1)
            if tag == "li":
                self._write("- ")
        elif tag in ("td", "th"):
            self.handle_data(" ")
        elif tag == "img" and (alt := attributes.get("alt")):
            self.handle_data(f" [{alt}] ")
        elif tag == "a" and (href := attributes.get("href")):
            self._link = (href, len(self._chunks))

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED:
            self._skip = max(self._skip - 1, 0)
        elif self._skip:
            return
        elif tag in _PARAGRAPHS or tag in _LINES:
            if tag == "pre":
                self._pre = max(self._pre - 1, 0)
            self._break(2 if tag in _PARAGRAPHS else 1)
        elif tag == "a" and self._link is not None:
            href, start = self._link
            self._link = None
            label = "".join(self._chunks[start:]).strip()
            if not href.startswith("#") and href not in (label, f"mailto:{label}"):
                self.handle_data(f" <{href}>")

    def text(self) -> str:
        lines = "".join(self._chunks).split("\n")
        text = re.sub(r"\n{3,}", "\n\n", "\n".join(line.rstrip() for line in lines)).strip("\n")
        return f"{text}\n" if text else ""


def _html_to_text(html: str) -> str:
    renderer = _TextRenderer()
    renderer.feed(html)
    renderer.close()
    return renderer.text()


_CID_REFERENCE = re.compile(r"cid:([^\s\"'()<>]+)", re.IGNORECASE)


def _cid_references(html: str) -> set[str]:
    """The Content-IDs an HTML body points at (RFC 2392 ``cid:`` URLs, percent-decoded)."""
    return {unquote(html_entities.unescape(ref)) for ref in _CID_REFERENCE.findall(html)}


# --- the builder -----------------------------------------------------------------------------

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_DOT_ATOM = rf"{_ATEXT}+(?:\.{_ATEXT}+)*"
_MESSAGE_ID = re.compile(rf"<{_DOT_ATOM}@(?:{_DOT_ATOM}|\[[!-Z^-~]*\])>")  # RFC 5322 3.6.4
_CID = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.@-]+")
# Set by dedicated methods or by MIME itself; Content-* is matched by prefix.
_OWNED_HEADERS = frozenset(
    {"from", "to", "cc", "bcc", "reply-to", "subject", "date", "message-id", "mime-version"}
)


def _addresses(field: str, addresses: Iterable[str | Address]) -> tuple[Address, ...]:
    return tuple(check_address(field, address) for address in addresses)


def _check_body(kind: str, content: str) -> str:
    try:
        content.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InputError(f"the {kind} body is not valid Unicode (lone surrogates)") from exc
    return content


@dataclasses.dataclass(frozen=True, kw_only=True)
class MessageBuilder:
    """Builds a :class:`Message`; start from ``MessageBuilder()`` and chain setters.

    Every setter returns a new builder and leaves this one unchanged. Address setters
    (:meth:`to`, :meth:`cc`, :meth:`bcc`, :meth:`reply_to`) and :meth:`header`, :meth:`attach`
    and :meth:`inline_image` add to what is there; the others replace. The fields are private:
    construct with no arguments.
    """

    _from: Address | None = None
    _to: tuple[Address, ...] = ()
    _cc: tuple[Address, ...] = ()
    _bcc: tuple[Address, ...] = ()
    _reply_to: tuple[Address, ...] = ()
    _subject: str | None = None
    _date: datetime | None = None
    _message_id: str | None = None
    _headers: tuple[tuple[str, str], ...] = ()
    _text: str | None = None
    _html: str | None = None
    _inline_images: tuple[_Part, ...] = ()
    _attachments: tuple[_Part, ...] = ()

    def from_addr(self, address: str | Address) -> MessageBuilder:
        """The author: ``"Name <local@domain>"``, ``"local@domain"`` or an ``Address``."""
        return dataclasses.replace(self, _from=check_address("From", address))

    def to(self, *addresses: str | Address) -> MessageBuilder:
        return dataclasses.replace(self, _to=self._to + _addresses("To", addresses))

    def cc(self, *addresses: str | Address) -> MessageBuilder:
        return dataclasses.replace(self, _cc=self._cc + _addresses("Cc", addresses))

    def bcc(self, *addresses: str | Address) -> MessageBuilder:
        """Recipients kept out of the headers; see :attr:`Message.bcc`."""
        return dataclasses.replace(self, _bcc=self._bcc + _addresses("Bcc", addresses))

    def reply_to(self, *addresses: str | Address) -> MessageBuilder:
        return dataclasses.replace(
            self, _reply_to=self._reply_to + _addresses("Reply-To", addresses)
        )

    def subject(self, subject: str) -> MessageBuilder:
        return dataclasses.replace(self, _subject=check_header_value("Subject", subject))

    def date(self, when: datetime) -> MessageBuilder:
        """Defaults to the time of :meth:`build`, in UTC so as not to reveal the sender's zone."""
        if when.utcoffset() is None:
            raise InputError("Date: a naive datetime is ambiguous; give one with a tzinfo")
        return dataclasses.replace(self, _date=when)

    def message_id(self, message_id: str) -> MessageBuilder:
        """Defaults to a fresh ``make_msgid()`` in the From domain (no local host name)."""
        check_header_value("Message-ID", message_id)
        if not _MESSAGE_ID.fullmatch(message_id):
            raise InputError(f"Message-ID: {message_id!r} is not of the form <left@right>")
        return dataclasses.replace(self, _message_id=message_id)

    def header(self, name: str, value: str) -> MessageBuilder:
        """Add a header not covered by a dedicated method (``X-*``, ``Sender``, ...)."""
        check_header_value(check_header_name(name), value)
        key = name.lower()
        if key in _OWNED_HEADERS or key.startswith("content-"):
            raise InputError(f"header {name!r} is set by its own method or by MIME")
        limit = _POLICY.header_max_count(name)
        if limit is not None and sum(n.lower() == key for n, _ in self._headers) >= limit:
            raise InputError(f"header {name!r} may appear at most {limit} time(s)")
        if _POLICY.header_factory(name, value).defects:
            raise InputError(f"header {name!r}: the value is malformed for this header")
        return dataclasses.replace(self, _headers=(*self._headers, (name, value)))

    def text(self, text: str) -> MessageBuilder:
        """The text/plain body (UTF-8)."""
        return dataclasses.replace(self, _text=_check_body("text", text))

    def html(self, html: str) -> MessageBuilder:
        """The text/html body (UTF-8); sent with a text/plain alternative rendered from it
        unless :meth:`text` is given too."""
        return dataclasses.replace(self, _html=_check_body("HTML", html))

    def inline_image(
        self,
        source: object,
        *,
        cid: str,
        filename: str | None = None,
        content_type: str | None = None,
    ) -> MessageBuilder:
        """An image the HTML shows as ``<img src="cid:...">``; ``cid`` without angle brackets.

        :meth:`build` refuses an image the HTML does not reference, because clients show an
        unreferenced one as a stray attachment, or not at all.
        """
        check_header_value("Content-ID", cid)
        if not _CID.fullmatch(cid):
            raise InputError(f"cid {cid!r}: use letters, digits and !#$%&'*+/=?^_`{{|}}~.@-")
        if any(image.cid == cid for image in self._inline_images):
            raise InputError(f"cid {cid!r} is already used by another inline image")
        part = _make_part(source, filename, content_type, cid)
        if part.maintype != "image":
            raise InputError(f"inline image {cid!r} is {part.maintype}/{part.subtype}, not image/*")
        return dataclasses.replace(self, _inline_images=(*self._inline_images, part))

    def attach(
        self, source: object, *, filename: str | None = None, content_type: str | None = None
    ) -> MessageBuilder:
        """Attach a file: a path, bytes, a binary file object, or a registered source type.

        ``filename`` defaults to the path's (or file object's) name, ``content_type`` to a
        guess from the filename (``application/octet-stream`` if none). The content is sent
        as it is, base64-encoded, even for text types.
        """
        part = _make_part(source, filename, content_type)
        return dataclasses.replace(self, _attachments=(*self._attachments, part))

    def _body(self) -> MIMEPart:
        body = MIMEPart(policy=_POLICY)
        if self._html is not None:
            body.set_content(self._text if self._text is not None else _html_to_text(self._html))
            html = MIMEPart(policy=_POLICY)
            html.set_content(self._html, subtype="html")
            if self._inline_images:
                html.make_related()
                html.set_param("type", "text/html")  # required by RFC 2387
                for image in self._inline_images:
                    html.attach(image.mime("inline"))
            body.make_alternative()
            body.attach(html)
        elif self._text is not None:
            body.set_content(self._text)
        if self._attachments:
            body.make_mixed()
            for attachment in self._attachments:
                body.attach(attachment.mime("attachment"))
        return body

    def build(self) -> Message:
        """Check completeness and produce the message.

        The generated bytes are parsed back to check that their header names are exactly the
        intended ones (:func:`~securemail.headers.verify_header_names`).
        """
        if self._from is None:
            raise InputError("a message needs a From address: call from_addr()")
        if not (self._to or self._cc or self._bcc):
            raise InputError("a message needs a recipient: call to(), cc() or bcc()")
        if self._text is None and self._html is None and not self._attachments:
            raise InputError(
                "a message needs a body or an attachment: call text(), html() or attach()"
            )
        referenced = _cid_references(self._html or "")
        for image in self._inline_images:
            if image.cid not in referenced:
                raise InputError(f"inline image cid {image.cid!r} is not referenced by the HTML")

        headers: list[tuple[str, Any]] = [("From", self._from)]
        headers += [
            (name, value)
            for name, value in (("To", self._to), ("Cc", self._cc), ("Reply-To", self._reply_to))
            if value
        ]
        if self._subject is not None:
            headers.append(("Subject", self._subject))
        headers += [
            ("Date", self._date or datetime.now(UTC)),
            ("Message-ID", self._message_id or make_msgid(domain=self._from.domain)),
            *self._headers,
            ("MIME-Version", "1.0"),
        ]
        body = self._body()
        message = Message(policy=_POLICY, bcc=[address.addr_spec for address in self._bcc])
        for name, value in [*headers, *body.items()]:
            message[name] = value
        message.set_payload(body.get_payload())
        verify_header_names(
            message.as_bytes(policy=email.policy.SMTP),
            [name for name, _ in headers] + body.keys(),
        )
        return message
