"""What each kind of audit event may hold: the fields, and the shape of each value.

This is where "no message content in the audit log" is made true by construction: an event
is a fixed set of fields, each value is checked to be what its field holds (an address, a
token without spaces, hex, a bounded line or list), and nothing else gets through.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol, runtime_checkable

from ..errors import AuditEventError, InputError
from ..headers import check_address

__all__ = ["MAX_ITEMS", "SCHEMA", "Auditable", "validated"]

MAX_ITEMS = 1000
"""Most items in a list field (recipients, fingerprints, rules...)."""


@runtime_checkable
class Auditable(Protocol):
    """Something that says what of itself goes into the audit log (a rules decision)."""

    def to_audit(self) -> Mapping[str, object]: ...


class _Refused(Exception):
    """A field value does not have its field's shape (becomes an AuditEventError)."""


_Check = Callable[[object], object]

_TOKEN = re.compile(r"[\x21-\x7e]{1,255}")  # printable ASCII, no space
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/+-]{0,63}")
_FINGERPRINT = re.compile(r"[0-9a-f]{16,128}")
_KEY = re.compile(r"[a-z][a-z0-9_]{0,63}")
_CONTENT_KEYS = frozenset(
    {
        "subject", "body", "text", "html", "content", "payload", "message", "filename",
        "filenames", "attachment", "attachments", "attachment_name", "attachment_names",
    }
)  # fmt: skip
_STATUSES = frozenset({"delivered", "deferred", "failed"})


def _matching(pattern: re.Pattern[str], what: str) -> _Check:
    def check(value: object) -> str:
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise _Refused(f"must be {what}")
        return value

    return check


_message_id = _matching(_TOKEN, "a message identifier (1-255 printable ASCII, no spaces)")
_token = _message_id
_name = _matching(_NAME, "a name of 1-64 letters, digits or ._:/+- (no spaces)")


def _fingerprint(value: object) -> str:
    text = value.replace(":", "").lower() if isinstance(value, str) else value
    return str(_matching(_FINGERPRINT, "a fingerprint of 16-128 hex digits")(text))


def _address(value: object) -> str:
    if not isinstance(value, str) or len(value) > 512:
        raise _Refused("must be an email address")
    try:
        return check_address("audit", value).addr_spec
    except InputError:
        raise _Refused("must be an email address") from None


def _reverse_path(value: object) -> str:
    """An address, or "" for the null reverse path of a bounce."""
    return "" if value == "" else _address(value)


def _list(check: _Check, *, empty: bool = False) -> _Check:
    def checked(value: object) -> list[object]:
        if isinstance(value, str | bytes | Mapping) or not isinstance(value, Iterable):
            raise _Refused("must be a list")
        items = [check(item) for item in value]
        if len(items) > MAX_ITEMS or (not items and not empty):
            raise _Refused(f"must hold 1 to {MAX_ITEMS} items")
        return items

    return checked


def _optional(check: _Check) -> _Check:
    return lambda value: None if value is None else check(value)


def _reply_code(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 100 <= value <= 599:
        raise _Refused("must be an SMTP reply code (100-599)")
    return value


def _flag(value: object) -> bool:
    if not isinstance(value, bool):
        raise _Refused("must be true or false")
    return value


def _label(value: object) -> str:
    """A short single line of text: a reason, as securemail's error messages give it."""
    if not isinstance(value, str) or not 0 < len(value) <= 256 or not value.isprintable():
        raise _Refused("must be one line of 1-256 printable characters")
    return value


def _fields(shape: Mapping[str, _Check]) -> _Check:
    """A mapping with exactly these keys (missing ones are None)."""

    def checked(value: object) -> dict[str, object]:
        if not isinstance(value, Mapping) or not set(value) <= set(shape):
            raise _Refused(f"must be a mapping with the keys {', '.join(sorted(shape))}")
        return {key: check(value.get(key)) for key, check in shape.items()}

    return checked


_delivery = _fields(
    {"address": _address, "status": _matching(re.compile("|".join(_STATUSES)), "a status"),
     "code": _optional(_reply_code)}
)  # fmt: skip
_tls = _fields(
    {
        "version": _name,
        "cipher": _name,
        "certificate_sha256": _optional(_fingerprint),
        "verified": _optional(_flag),
    }
)


def _structure(value: object, depth: int = 0) -> object:
    """A decision: bounded nesting of mappings, lists and scalars, keys that are identifiers
    and not the name of a piece of message content."""
    if depth > 4:
        raise _Refused("is nested too deeply (at most 4 levels)")
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _Refused("holds a number that is not finite")
        return value
    if isinstance(value, str):
        return _label(value) if value else value
    if isinstance(value, Mapping):
        if len(value) > 64:
            raise _Refused("holds a mapping of more than 64 keys")
        result: dict[str, object] = {}
        for key, item in value.items():
            if not isinstance(key, str) or not _KEY.fullmatch(key):
                raise _Refused("has a key that is not a lower-case identifier")
            if key in _CONTENT_KEYS:
                raise _Refused(f"has a key {key!r}, which names message content")
            result[key] = _structure(item, depth + 1)
        return result
    return _list(lambda item: _structure(item, depth + 1), empty=True)(value)


def _decision(value: object) -> object:
    if isinstance(value, Auditable):
        value = value.to_audit()
    if not isinstance(value, Mapping):
        raise _Refused("must be a mapping or have a to_audit() method")
    return _structure(value)


_COMMON: dict[str, _Check] = {"message_id": _message_id}
_PARTIES: dict[str, _Check] = {"sender": _address, "recipients": _list(_address)}
SCHEMA: Mapping[str, Mapping[str, _Check]] = {
    "decision": {**_COMMON, **_PARTIES, "decision": _decision},
    "protection": {
        **_COMMON,
        "format": _name,
        "algorithms": _list(_name),
        "key_fingerprints": _list(_fingerprint, empty=True),
    },
    "delivery": {
        **_COMMON,
        "host": _token,
        "mail_from": _reverse_path,
        "code": _optional(_reply_code),
        "queue_id": _optional(_token),
        "recipients": _list(_delivery),
        "tls": _optional(_tls),
    },
    "refusal": {**_COMMON, **_PARTIES, "reason": _label, "error": _optional(_name)},
    "archive": {**_COMMON, "archive_id": _token},
}
"""Every event kind and the fields it holds; a field missing from ``append`` is recorded
as ``null`` if it may be (``queue_id``, ``tls``, ...), else refused."""


def validated(kind: str, fields: Mapping[str, object]) -> dict[str, object]:
    shape = SCHEMA.get(kind)
    if shape is None:
        raise AuditEventError(kind, "event", f"is not a kind of event ({', '.join(SCHEMA)})")
    for field in fields:
        if field not in shape:
            raise AuditEventError(kind, field, f"is not allowed (allowed: {', '.join(shape)})")
    record: dict[str, object] = {}
    given = [field for field in shape if field in fields]  # a wrong value before a missing one
    for field in given + [field for field in shape if field not in fields]:
        try:
            record[field] = shape[field](fields.get(field))
        except _Refused as exc:
            reason = str(exc) if field in fields else "is required"
            raise AuditEventError(kind, field, reason) from None
    return record
