"""RFC 9788 legacy display elements: the protected Subject repeated at the top of the body.

A client that does not understand header protection shows the obscured outer Subject
("..."); the legacy display puts ``Subject: <real subject>`` at the start of each main body
part so its reader still sees it. Parts carrying one are marked ``hp-legacy-display="1"``,
and a receiver that does understand header protection removes it again (section 4.5.3.3).
The older Autocrypt form, a separate first part marked ``protected-headers="v1"``, is
removed too.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator, Sequence
from email.message import MIMEPart

__all__ = [
    "add_legacy_display",
    "first_part_holds_all",
    "strip_first_part",
    "strip_legacy_display",
]

PARAMETER = "hp-legacy-display"
HTML_CLASS = "header-protection-legacy-display"
_HTML_ELEMENT = re.compile(
    rf"<div\s+class=[\"']{HTML_CLASS}[\"'][^>]*>.*?</div>\s*", re.IGNORECASE | re.DOTALL
)
_BODY_TAG = re.compile(r"<body\b[^>]*>", re.IGNORECASE)


def _main_body_parts(part: MIMEPart) -> Iterator[MIMEPart]:
    """The parts a reader sees as the message text (not attachments): the body of
    multipart/mixed, each alternative, the root of multipart/related."""
    content_type = part.get_content_type()
    if part.get_content_disposition() == "attachment":
        return
    if content_type in ("text/plain", "text/html"):
        yield part
    elif content_type == "multipart/alternative":
        for child in part.iter_parts():
            assert isinstance(child, MIMEPart)
            yield from _main_body_parts(child)
    elif part.get_content_maintype() == "multipart":
        first = next(part.iter_parts(), None)
        if isinstance(first, MIMEPart):
            yield from _main_body_parts(first)


def add_legacy_display(entity: MIMEPart, fields: Sequence[tuple[str, str]]) -> None:
    """Prefix every main body part of ``entity`` with ``fields`` (name, value) in place."""
    if not fields:
        return
    lines = [f"{name}: {value}" for name, value in fields]
    for part in _main_body_parts(entity):
        text = part.get_content()
        assert isinstance(text, str)
        subtype = part.get_content_subtype()
        if subtype == "plain":
            text = "\n".join(lines) + "\n\n" + text
        else:
            element = (
                f'<div class="{HTML_CLASS}"><pre>'
                + html.escape("\n".join(lines))
                + "</pre></div>\n"
            )
            body = _BODY_TAG.search(text)
            at = body.end() if body else 0
            text = text[:at] + element + text[at:]
        _replace_text(part, text)
        part.set_param(PARAMETER, "1")


def _replace_text(part: MIMEPart, text: str) -> None:
    """New text for ``part``, keeping its Content-Type parameters other than charset."""
    subtype = part.get_content_subtype()
    params = [(k, v) for k, v in (part.get_params() or [])[1:] if k.lower() != "charset"]
    had_version = "MIME-Version" in part
    part.set_content(text, subtype=subtype, charset="utf-8")
    if not had_version:
        del part["MIME-Version"]  # set_content adds one; only the top-level entity has it
    for key, value in params:
        part.set_param(key, value)


def _strip_plain(text: str) -> str:
    # The element is the leading "Name: value" lines up to and including the blank line.
    head, separator, rest = text.replace("\r\n", "\n").partition("\n\n")
    if separator and all(re.match(r"^[\x21-\x39\x3b-\x7e]+: ", line) for line in head.split("\n")):
        return rest
    return text


def strip_legacy_display(message: MIMEPart) -> bool:
    """Remove legacy display elements from ``message`` in place; True if any was found."""
    changed = _strip_parts(_main_body_parts(message))
    parts = list(message.iter_parts())
    if parts and _is_header_part(message, parts[0], followed=len(parts) > 1):
        message.set_payload(list(parts[1:]))
        changed = True
    return changed


def first_part_holds_all(container: MIMEPart) -> bool:
    """Whether whatever :func:`strip_legacy_display` removes from ``container`` lies in its
    first part: so for any multipart but multipart/alternative, each of whose parts is a main
    body part. A streamed message is then changed by :func:`strip_first_part` alone."""
    return (
        container.get_content_maintype() == "multipart"
        and container.get_content_type() != "multipart/alternative"
    )


def strip_first_part(container: MIMEPart, first: MIMEPart, *, followed: bool) -> bool | None:
    """What :func:`strip_legacy_display` does to ``container`` (see
    :func:`first_part_holds_all`), for a message streamed past while only its header and its
    ``first`` part are at hand: the elements are removed from ``first`` in place (True if any
    was found), or None says that the whole part goes (the older Autocrypt form, which is
    dropped only when other parts, ``followed``, remain)."""
    # Of such a container, _main_body_parts yields the main body parts of the first part.
    attached = container.get_content_disposition() == "attachment"
    changed = False if attached else _strip_parts(_main_body_parts(first))
    return None if _is_header_part(container, first, followed=followed) else changed


def _strip_parts(parts: Iterator[MIMEPart]) -> bool:
    changed = False
    for part in parts:
        if part.get_param(PARAMETER) != "1":
            continue
        text = part.get_content()
        assert isinstance(text, str)
        subtype = part.get_content_subtype()
        _replace_text(
            part, _strip_plain(text) if subtype == "plain" else _HTML_ELEMENT.sub("", text, 1)
        )
        part.del_param(PARAMETER, header="Content-Type")
        changed = True
    return changed


def _is_header_part(container: MIMEPart, first: MIMEPart, *, followed: bool) -> bool:
    """The older Autocrypt form: the protected headers as the first part of multipart/mixed,
    marked ``protected-headers="v1"``, before the real content."""
    return (
        followed
        and container.get_content_type() == "multipart/mixed"
        and bool(container.get_param("protected-headers"))
        and first.get_content_type() in ("text/plain", "text/rfc822-headers")
        and first.get_param("protected-headers") == "v1"
    )
