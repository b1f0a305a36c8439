"""Between a message and its protection: the payload to sign or encrypt, and back again.

Outbound, :func:`prepare` splits a message into the header fields that stay outside and the
MIME entity that gets protected, canonicalized for signing (CRLF, 7-bit). With header
protection (RFC 9788) the entity also carries copies of the header fields and an ``hp``
parameter, and an encrypted message shows only an obscured Subject outside; ``HP-Outer``
fields inside record what was visible.

Inbound, :func:`restore` puts a decrypted or verified entity back under its headers,
preferring the protected copies (RFC 9788, and the older ``protected-headers="v1"`` that
Thunderbird, Enigmail and Autocrypt clients write).

S/MIME and PGP/MIME share this module: only the cryptographic wrapper differs.
"""

from __future__ import annotations

import copy
import dataclasses
from email.headerregistry import Address
from email.message import EmailMessage, Message

from . import wire
from .compose import envelope_bcc, envelope_recipients, envelope_sender
from .errors import MalformedMessageError, SizeLimitExceeded
from .headers import check_header_value, check_message_headers, verify_header_names
from .legacydisplay import add_legacy_display, strip_legacy_display
from .policy import Policy
from .results import ProtectedMessage

__all__ = [
    "Prepared",
    "assemble_header",
    "from_address",
    "is_protected_entity",
    "message_bytes",
    "prepare",
    "prepare_headers",
    "restore",
    "restore_header",
    "strips_legacy_display",
]

# Fields never copied into the protected payload: the envelope and what MTAs add.
_NOT_PROTECTED = frozenset(
    {
        "bcc",
        "resent-bcc",
        "received",
        "return-path",
        "dkim-signature",
        "arc-seal",
        "arc-message-signature",
        "arc-authentication-results",
        "authentication-results",
        "delivered-to",
        "x-original-to",
    }
)
_PROTECTED_TYPES = frozenset(
    {
        "multipart/signed",
        "multipart/encrypted",
        "application/pkcs7-mime",
        "application/x-pkcs7-mime",
    }
)
MessageInput = EmailMessage | Message | bytes | ProtectedMessage
_TRANSPORT_FIELDS = (
    "received",
    "return-path",
    "delivered-to",
    "x-original-to",
    "authentication-results",
    "arc-",
    "dkim-signature",
)


@dataclasses.dataclass(frozen=True)
class Prepared:
    """``outer`` header bytes (folded, CRLF, without Content-* and MIME-Version) and the
    canonical ``entity`` bytes to sign or encrypt, plus the SMTP envelope."""

    outer: bytes
    outer_names: tuple[str, ...]
    entity: bytes
    mail_from: str | None
    recipients: tuple[str, ...]
    bcc: tuple[str, ...] = ()
    """The blind-copy recipients among ``recipients``: no other recipient may learn of them."""


def _is_content_field(name: str) -> bool:
    lowered = name.lower()
    return lowered.startswith("content-") or lowered == "mime-version"


def is_protected_entity(content_type: str) -> bool:
    return content_type.lower() in _PROTECTED_TYPES


def prepare(source: MessageInput, policy: Policy, *, encrypting: bool) -> Prepared:
    """Split ``source`` into outer header fields and the protected entity.

    A message whose body is already signed or encrypted (``sign | encrypt``) is wrapped as
    it is: its entity bytes are taken verbatim, because regenerating them would break the
    inner signature.
    """
    if isinstance(source, ProtectedMessage):
        return _prepare_raw(source.data, source.mail_from, source.recipients, policy, encrypting)
    if isinstance(source, bytes | bytearray):
        # Parsed as received: canonicalizing first would turn a CR inside binary content
        # into CRLF. Text is canonicalized part by part when the entity is prepared.
        parsed = wire.parse(bytes(source))
        if is_protected_entity(parsed.get_content_type()):
            return _prepare_raw(
                bytes(source),
                envelope_sender(parsed),
                envelope_recipients(parsed),
                policy,
                encrypting,
            )
        source = parsed
    check_message_headers(source)
    if not isinstance(source, EmailMessage):
        source = wire.parse(source.as_bytes())
    return _prepare_message(source, policy, encrypting)


def _outer_fields(
    items: list[tuple[str, str]], policy: Policy, encrypting: bool
) -> list[tuple[str, str]]:
    obscure = encrypting and policy.header_protection
    return [
        (name, policy.obscured_subject if obscure and name.lower() == "subject" else value)
        for name, value in items
        if name.lower() not in ("bcc", "resent-bcc")
    ]


def _protected_entity(
    message: EmailMessage, policy: Policy, encrypting: bool
) -> tuple[list[tuple[str, str]], EmailMessage]:
    """The outer fields, and a copy of ``message`` whose header section is the protected
    one: copies of the header fields (with ``HP-Outer`` and ``hp`` when header protection
    is on) and the original Content-* fields."""
    headers = [(name, str(value)) for name, value in message.items() if not _is_content_field(name)]
    for name, value in headers:
        check_header_value(name, value)
    outer = _outer_fields(headers, policy, encrypting)
    entity = copy.deepcopy(message)
    if encrypting and policy.header_protection and policy.legacy_display:
        add_legacy_display(entity, [(n, v) for n, v in headers if n.lower() == "subject"])
    content_items = [(n, v) for n, v in entity.items() if _is_content_field(n)]
    for name in set(entity.keys()):
        del entity[name]
    if policy.header_protection:
        for name, value in headers:
            if name.lower() not in _NOT_PROTECTED:
                entity[name] = value
        if encrypting:
            for name, value in outer:
                entity["HP-Outer"] = f"{name}: {value}"
    for name, value in content_items:
        if name.lower() != "mime-version":
            entity[name] = value
    if policy.header_protection:
        entity.set_param("hp", "cipher" if encrypting else "clear")
    return outer, entity


def _prepare_message(message: EmailMessage, policy: Policy, encrypting: bool) -> Prepared:
    outer, entity = _protected_entity(message, policy, encrypting)
    entity_bytes = wire.to_bytes(wire.seven_bit(entity))
    return Prepared(
        outer=b"".join(wire.fold_field(n, v) for n, v in outer),
        outer_names=tuple(n for n, _ in outer),
        entity=entity_bytes,
        mail_from=envelope_sender(message),
        recipients=envelope_recipients(message),
        bcc=envelope_bcc(message),
    )


def prepare_headers(header_block: bytes, policy: Policy, *, encrypting: bool) -> Prepared:
    """Like :func:`prepare` for a message whose body will be streamed: ``header_block`` is
    the message's header section, and the returned ``entity`` is only the protected
    entity's header section (ending with the empty line); the body follows it unchanged.

    The body is not re-encoded, so it must already be fit for the operation (7-bit and CRLF
    for signing, as ``securemail compose`` writes it). Legacy display elements, which
    change the body, are not added to streamed messages.
    """
    message = wire.parse_headers(header_block)
    check_message_headers(message)
    outer, entity = _protected_entity(message, policy.clone(legacy_display=False), encrypting)
    names = [n for n, _ in entity.items()]
    fields = b"".join(wire.fold_field(n, str(v)) for n, v in entity.items())
    verify_header_names(fields + wire.CRLF, names)
    return Prepared(
        outer=b"".join(wire.fold_field(n, v) for n, v in outer),
        outer_names=tuple(n for n, _ in outer),
        entity=fields + wire.CRLF,
        mail_from=envelope_sender(message),
        recipients=envelope_recipients(message),
        bcc=envelope_bcc(message),
    )


def _prepare_raw(
    data: bytes,
    mail_from: str | None,
    recipients: tuple[str, ...],
    policy: Policy,
    encrypting: bool,
) -> Prepared:
    raw = wire.split_entity(wire.canonicalize(data))
    content = [f for f in raw.content_fields if f.name.lower() != "mime-version"]
    if not content:
        raise MalformedMessageError("the message has no Content-Type")
    outer_raw = []
    names = []
    for field in raw.other_fields:
        lowered = field.name.lower()
        if lowered in ("bcc", "resent-bcc"):
            continue
        if encrypting and policy.header_protection and lowered == "subject":
            outer_raw.append(wire.fold_field(field.name, policy.obscured_subject))
        else:
            outer_raw.append(field.raw)
        names.append(field.name)
    return Prepared(
        outer=b"".join(outer_raw),
        outer_names=tuple(names),
        entity=raw.header_bytes(content) + wire.CRLF + raw.body,
        mail_from=mail_from,
        recipients=recipients,
    )


def assemble(prepared: Prepared, content_fields: list[tuple[str, str]], body: bytes) -> bytes:
    """The outgoing message: outer fields, MIME-Version, new Content-* fields, body."""
    return assemble_header(prepared, content_fields) + body


def assemble_header(prepared: Prepared, content_fields: list[tuple[str, str]]) -> bytes:
    """The outgoing header section (ending with the empty line): outer fields,
    MIME-Version, new Content-* fields. It is re-parsed and its field names compared with
    the ones meant (:func:`securemail.headers.verify_header_names`)."""
    fields = [("MIME-Version", "1.0"), *content_fields]
    header = prepared.outer + b"".join(wire.fold_field(n, v) for n, v in fields) + wire.CRLF
    verify_header_names(header, [*prepared.outer_names, *(n for n, _ in fields)])
    return header


# --- inbound ------------------------------------------------------------------------------------


def message_bytes(message: MessageInput, policy: Policy) -> bytes:
    """An inbound message as canonical bytes, within the policy's size limit.

    A leading mbox separator line (``From sender date``, RFC 4155), which mail stores and
    Thunderbird's "save as" leave in front of the header section, is dropped.
    """
    if isinstance(message, ProtectedMessage):
        data = message.data
    elif isinstance(message, bytes | bytearray):
        data = bytes(message)
    else:
        data = message.as_bytes(policy=wire.WIRE_POLICY)
    if len(data) > policy.max_message_size:
        raise SizeLimitExceeded("message", policy.max_message_size)
    if data.startswith(b"From "):
        data = data.split(b"\n", 1)[1] if b"\n" in data else b""
    return wire.canonicalize(data)


def from_address(data: bytes) -> str | None:
    """The addr-spec of the single From mailbox of message ``data`` (None if not one)."""
    headers = wire.parse_headers(wire.split_entity(data).header_bytes())
    addresses: tuple[Address, ...] = getattr(headers.get("From"), "addresses", ())
    return addresses[0].addr_spec if len(addresses) == 1 else None


def strips_legacy_display(inner: wire.RawEntity) -> bool:
    """Whether :func:`restore` removes legacy display elements from ``inner`` (which it
    decides from the header section alone): only under protected headers, whose restored
    copies make the element redundant, and not for a signed-only message (``hp="clear"``),
    whose body is what its signature covers."""
    _, params = inner.content_type
    inner_names = [f.name for f in inner.other_fields if f.name.lower() != "hp-outer"]
    marked = params.get("hp") in ("cipher", "clear") or params.get("protected-headers") == "v1"
    return bool(inner_names) and marked and params.get("hp") != "clear"


@dataclasses.dataclass(frozen=True)
class Restored:
    data: bytes
    protected_headers: tuple[str, ...]
    content_type: str


def restore(outer: wire.RawEntity, inner: wire.RawEntity) -> Restored:
    """The message as its sender wrote it: ``inner``'s entity under the right headers.

    RFC 9788 (``hp``): the protected header section *is* the message's; from outside only
    what transport adds is kept (Received, ...), so an unprotected Reply-To or Cc added on
    the way never looks signed. The older ``protected-headers="v1"`` scheme protects only
    the fields it repeats inside (often just Subject): those win, the others come from
    outside. Without either marker the outer fields are used, plus any other fields the
    inner part carries (Autocrypt-Gossip lives there). Under protected headers, legacy
    display elements are removed from the body (:func:`strips_legacy_display`).
    """
    head = restore_header(outer, inner)
    data = head.data + inner.body
    if strips_legacy_display(inner):
        message = wire.parse(data)
        if strip_legacy_display(message):
            data = wire.to_bytes(message)
    return dataclasses.replace(head, data=data)


def restore_header(outer: wire.RawEntity, inner: wire.RawEntity) -> Restored:
    """The header section (ending with the empty line) that :func:`restore` puts over
    ``inner``'s body, which a streaming reader writes before a body it does not hold."""
    content_type, params = inner.content_type
    inner_other = [f for f in inner.other_fields if f.name.lower() != "hp-outer"]
    inner_names = {f.name.lower() for f in inner_other}
    if params.get("hp") in ("cipher", "clear") and inner_other:
        kept = [f for f in outer.other_fields if f.name.lower().startswith(_TRANSPORT_FIELDS)]
        fields = [*inner_other, *kept]
        protected = tuple(f.name for f in inner_other)
    elif params.get("protected-headers") == "v1" and inner_other:
        kept = [f for f in outer.other_fields if f.name.lower() not in inner_names]
        fields = [*inner_other, *kept]
        protected = tuple(f.name for f in inner_other)
    else:
        outer_names = {f.name.lower() for f in outer.other_fields}
        extra = [f for f in inner_other if f.name.lower() not in outer_names]
        fields = [*outer.other_fields, *extra]
        protected = ()
    content = [f for f in inner.content_fields if f.name.lower() != "mime-version"]
    header = b"".join(f.raw for f in fields) + b"MIME-Version: 1.0\r\n"
    header += b"".join(f.raw for f in content)
    return Restored(
        data=header + wire.CRLF,
        protected_headers=protected,
        content_type=content_type,
    )
