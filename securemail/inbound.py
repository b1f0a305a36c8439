"""Reading attachments out of received mail, with filenames made safe to use.

A received filename is chosen by the sender, so it is never handed out raw as
:attr:`InboundAttachment.filename`: the :func:`~securemail.headers.sanitize_filename` form is,
and the original stays available for display or logging.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from email.message import Message, MIMEPart
from typing import cast

from securemail.headers import sanitize_filename

__all__ = ["InboundAttachment", "iter_attachments"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class InboundAttachment:
    filename: str
    """Safe to use as a file name: see :func:`~securemail.headers.sanitize_filename`."""
    original_filename: str | None
    """As the sender wrote it (decoded from RFC 2231/2047); for display only."""
    content_type: str
    content_id: str | None
    data: bytes = dataclasses.field(repr=False)
    """Transfer-decoded content; for an attached message, that message serialized."""


def _content(part: MIMEPart) -> bytes:
    payload = part.get_payload(decode=True)
    if isinstance(payload, bytes):
        return payload
    # A message/rfc822 part holds the parsed message rather than bytes.
    return cast(Message, part.get_payload(0)).as_bytes()


def _inbound(part: MIMEPart) -> InboundAttachment:
    original = part.get_filename()
    content_id = part.get("Content-ID")
    return InboundAttachment(
        filename=sanitize_filename(original),
        original_filename=original,
        content_type=part.get_content_type(),
        content_id=None if content_id is None else str(content_id),
        data=_content(part),
    )


def iter_attachments(message: MIMEPart) -> Iterator[InboundAttachment]:
    """The attachments of ``message`` (an :class:`~email.message.EmailMessage` or a part).

    Follows :meth:`~email.message.EmailMessage.iter_attachments`, which looks only at direct
    subparts, and also descends into the multiparts it yields (a multipart/mixed inside
    another, the signed content of multipart/signed); a message whose whole body is an
    attachment yields that body. As in the standard library, images in a multipart/related
    that is part of the body are not attachments.
    """
    if message.get_content_maintype() != "multipart":
        if message.is_attachment():
            yield _inbound(message)
        return
    for part in message.iter_attachments():
        if part.get_content_maintype() == "multipart":
            yield from iter_attachments(part)
        else:
            yield _inbound(part)
