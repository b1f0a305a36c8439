"""A tamper-evident audit log: what was decided, protected, delivered, refused and archived
for each message, and never what the message said.

The format is JSON Lines, one event per line, each line canonical JSON (sorted keys, compact
separators, ASCII only) so that anyone can recompute its hash with standard tools. Every line
has ``seq`` (1, 2, 3...), ``time`` (UTC, RFC 3339), ``event`` (its kind) and ``prev``, the
SHA-256 (hex) of the previous line's exact bytes *including its newline*, so
``sed -n 6p audit.log | sha256sum`` gives line 7's ``prev``. The first line is the genesis
record: ``event`` ``"genesis"``, a random ``log_id`` and ``prev`` 64 zeros.

**No message content, by construction.** Each event kind has a fixed set of fields, and each
field a fixed shape: addresses are parsed as addresses (display names dropped), identifiers
and algorithm names are short tokens without spaces, fingerprints are hex, lists and
strings are bounded. There is no field for a subject, a body or an attachment name, and a
decision from the rules engine may not use such keys either. A refused event raises
:class:`~securemail.errors.AuditEventError` without echoing the value. The server's reply
texts are not recorded (a server may quote the message back); reply codes are.

**Threat model.** The chain is not keyed: it detects changes made by someone who edits,
deletes, reorders or inserts lines and does *not* rewrite everything after the change.
Someone with write access who recomputes the whole tail, truncates the last lines or
appends forged ones produces a valid chain. That is caught only by comparing with a head
hash kept elsewhere: record :meth:`AuditLog.head` periodically in another system (a ticket,
a different host, a timestamping service) and pass it to ``verify(path, expected_head=...)``,
which then requires the log to contain that line. File permissions (the log is created
0600) and shipping lines off the host keep writers out in the first place; the chain makes
what slips through visible.

**Concurrency and crashes.** Appends from any number of threads and processes are
serialized by an exclusive ``flock`` on the file; each writes one whole line with a single
``write`` on an ``O_APPEND`` descriptor and ``fsync``s it before returning. A crash in the
middle of a write can leave the last line incomplete (a *torn tail*). :func:`verify`
reports that separately from tampering (``torn-tail``, with every line before it verified),
and the next append repairs it under the lock: it truncates the partial line and records a
``repair`` event with its line number, length and SHA-256, so the repair itself is on the
record. Readers (:func:`verify`, :meth:`AuditLog.head`) take a shared lock and so never see
a line being written.

"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import enum
import fcntl
import hashlib
import json
import os
import re
import secrets
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Self

from ..errors import (
    AuditEventError,
    AuditLogError,
    AuditTamperedError,
    AuditTornTailError,
    InputError,
    SecureMailError,
)
from ._audit_fields import Auditable, validated

if TYPE_CHECKING:  # the transport (pydantic) is not imported to write or verify a log
    from ..transport.results import SendResult

__all__ = [
    "GENESIS_PREV",
    "AuditEntry",
    "AuditLog",
    "AuditProblem",
    "AuditVerification",
    "Auditable",
    "verify",
]

GENESIS_PREV = "0" * 64
"""The ``prev`` of the genesis line, which has no predecessor."""
FORMAT_VERSION = 1
MAX_LINE = 1 << 20
"""No record is longer than this (1 MiB); the bounds on fields keep real ones far below."""

_HEX64 = re.compile(r"[0-9a-f]{64}")
_LOG_ID = re.compile(r"[0-9a-f]{32}")
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z")
_KIND = re.compile(r"[a-z][a-z0-9_-]{0,31}")
_GENESIS_START = b'{"event":"genesis","log_id":"'


# --- results -------------------------------------------------------------------------------------


class AuditProblem(enum.StrEnum):
    """What :func:`verify` found wrong, located at :attr:`AuditVerification.line`."""

    EDITED = "edited"
    """The line does not hash to the next line's ``prev``, or is not a valid record."""
    DELETED = "deleted"
    """``seq`` jumps: events are missing before this line."""
    REORDERED = "reordered"
    """The line chains to a line that comes after it."""
    INSERTED = "inserted"
    """The chain skips this line (and any up to the next chained one): it was added."""
    HEAD_REMOVED = "head-removed"
    """The first line is not a genesis record (or the file is empty)."""
    HEAD_MISMATCH = "head-mismatch"
    """``expected_head`` is the hash of no line: the tail was truncated or rewritten."""
    TORN_TAIL = "torn-tail"
    """The last line is incomplete: an interrupted append, repaired by the next one."""


@dataclasses.dataclass(frozen=True)
class AuditVerification:
    """The outcome of :func:`verify`.

    ``events`` counts the lines verified intact from the top (the genesis record included)
    and ``head`` is the hash of the last of them, so on failure they describe the part of the
    log that can still be trusted. ``line`` (1-based) and ``problem`` locate the first
    failure; ``detail`` adds what was seen there.
    """

    path: str
    ok: bool
    events: int
    head: str
    log_id: str | None = None
    problem: AuditProblem | None = None
    line: int | None = None
    detail: str = ""

    @property
    def tampered(self) -> bool:
        """The chain is broken (a torn tail alone is a crash, not tampering)."""
        return self.problem is not None and self.problem is not AuditProblem.TORN_TAIL

    def raise_for_status(self) -> AuditVerification:
        """Return ``self`` if the log verified, else raise
        :class:`~securemail.errors.AuditTamperedError` or, for an interrupted append,
        :class:`~securemail.errors.AuditTornTailError`."""
        if self.ok:
            return self
        assert self.problem is not None
        if self.problem is AuditProblem.TORN_TAIL:
            assert self.line is not None
            raise AuditTornTailError(self.path, self.line)
        raise AuditTamperedError(self.path, self.line, self.problem.value, self.detail)


@dataclasses.dataclass(frozen=True)
class AuditEntry:
    """A line just appended: its ``seq``, ``time``, ``event`` and ``hash`` (the new head)."""

    seq: int
    time: str
    event: str
    hash: str


# --- lines ---------------------------------------------------------------------------------------


def _canonical(record: Mapping[str, object]) -> bytes:
    text = json.dumps(
        record, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    )
    return text.encode("ascii") + b"\n"


def _hash(line: bytes) -> str:
    return hashlib.sha256(line).hexdigest()


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclasses.dataclass(frozen=True)
class _Record:
    seq: int
    prev: str
    event: str
    log_id: str | None

    @property
    def genesis(self) -> bool:
        return (
            self.event == "genesis"
            and self.seq == 1
            and self.prev == GENESIS_PREV
            and self.log_id is not None
        )


def _parse(line: bytes) -> _Record | None:
    """The chain fields of a whole line, or None if it is not a canonical record."""
    try:
        record = json.loads(line)
        if not isinstance(record, dict) or _canonical(record) != line:
            return None
    except ValueError:
        return None
    seq, prev, event, time = (record.get(k) for k in ("seq", "prev", "event", "time"))
    log_id = record.get("log_id")
    if (
        isinstance(seq, bool)
        or not isinstance(seq, int)
        or seq < 1
        or not isinstance(prev, str)
        or not _HEX64.fullmatch(prev)
        or not isinstance(event, str)
        or not _KIND.fullmatch(event)
        or not isinstance(time, str)
        or not _TIME.fullmatch(time)
        or not (log_id is None or (isinstance(log_id, str) and _LOG_ID.fullmatch(log_id)))
    ):
        return None
    return _Record(seq, prev, event, log_id)


# --- writing -------------------------------------------------------------------------------------


class AuditLog:
    """An audit log open for appending; a context manager. Use :meth:`open`.

    One instance may be shared by threads; any number of instances, in any number of
    processes, may append to the same file.
    """

    def __init__(self, path: str, fd: int, log_id: str) -> None:
        self._path = path
        self._fd: int | None = fd
        self._log_id = log_id
        self._lock = threading.Lock()  # flock does not exclude threads sharing a descriptor

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> AuditLog:
        """Open the log at ``path``, creating it (mode 0600, with its genesis line) if it does
        not exist or is empty. Refuses a file that is not a securemail audit log."""
        name = os.fspath(path)
        try:
            fd = os.open(name, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise AuditLogError(name, f"cannot open: {exc.strerror}") from None
        try:
            with _locked(fd, fcntl.LOCK_EX):
                log_id = _start(name, fd)
        except BaseException:
            os.close(fd)
            raise
        return cls(name, fd, log_id)

    @property
    def path(self) -> str:
        return self._path

    @property
    def log_id(self) -> str:
        """The random identifier in the genesis line."""
        return self._log_id

    def head(self) -> str:
        """The hash of the last whole line. Keep it somewhere else, and later pass it to
        :func:`verify` as ``expected_head``: that is what detects a rewritten tail."""
        with self._lock, _locked(self._descriptor(), fcntl.LOCK_SH):
            fd = self._descriptor()
            _, last = _tail(self._path, fd, os.fstat(fd).st_size)
            if last is None:
                raise AuditLogError(self._path, "the log has no complete line")
            return _hash(last)

    def append(self, kind: str, **fields: object) -> AuditEntry:
        """Record an event of ``kind`` with ``fields`` (the fields of each kind are in
        ``securemail.governance._audit_fields.SCHEMA`` and docs/audit.md); the typed
        ``record_*`` methods are the usual way in. Returns the line written, once it is on
        disk."""
        record = validated(kind, fields)
        with self._lock, _locked(self._descriptor(), fcntl.LOCK_EX):
            return self._append_locked(kind, record)

    def record_decision(
        self,
        message_id: str,
        sender: str,
        recipients: Iterable[str],
        decision: Auditable | Mapping[str, object],
    ) -> AuditEntry:
        """What the rules decided for a message: ``decision.to_audit()`` (rules matched,
        actions taken) or a mapping of the same."""
        return self.append(
            "decision",
            message_id=message_id,
            sender=sender,
            recipients=list(recipients),
            decision=decision,
        )

    def record_protection(
        self,
        message_id: str,
        format: str,
        algorithms: Iterable[str],
        key_fingerprints: Iterable[str],
    ) -> AuditEntry:
        """How a message was protected: ``format`` (``"smime"``, ``"pgp"``...), the
        algorithms used and the fingerprints of the keys involved (hex, colons allowed)."""
        return self.append(
            "protection",
            message_id=message_id,
            format=format,
            algorithms=list(algorithms),
            key_fingerprints=list(key_fingerprints),
        )

    def record_delivery(self, message_id: str, result: SendResult) -> AuditEntry:
        """A mail transaction's outcome: the server, the envelope sender, the final reply
        code and queue id, each recipient's status and reply code, and the TLS session
        (version, cipher suite, SHA-256 of the server's certificate, whether it was
        verified; ``null`` when the transaction ran in plaintext). Reply *texts* are not
        recorded: a server may quote the message in them."""
        session = result.tls
        return self.append(
            "delivery",
            message_id=message_id,
            host=result.host,
            mail_from=result.mail_from,
            code=result.code,
            queue_id=result.queue_id,
            recipients=[
                {"address": r.address, "status": r.status.value, "code": r.code}
                for r in result.recipients
            ],
            tls=None
            if session is None
            else {
                "version": session.version,
                "cipher": session.cipher,
                "certificate_sha256": session.certificate_sha256,
                "verified": session.verified,
            },
        )

    def record_refusal(
        self,
        message_id: str,
        sender: str,
        recipients: Iterable[str],
        reason: str | SecureMailError,
    ) -> AuditEntry:
        """A message that was not sent, and why: a short reason, or the error that stopped
        it (its class and message: securemail's messages never hold message content)."""
        error = type(reason).__name__ if isinstance(reason, SecureMailError) else None
        text = " ".join(str(reason).split())
        return self.append(
            "refusal",
            message_id=message_id,
            sender=sender,
            recipients=list(recipients),
            reason=text if len(text) <= 256 else text[:255] + "\u2026",
            error=error,
        )

    def record_archive(self, message_id: str, archive_id: str) -> AuditEntry:
        """Where a message was archived (the archive's identifier for it)."""
        return self.append("archive", message_id=message_id, archive_id=archive_id)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _descriptor(self) -> int:
        if self._fd is None:
            raise AuditLogError(self._path, "the log is closed")
        return self._fd

    def _append_locked(self, kind: str, fields: Mapping[str, object]) -> AuditEntry:
        fd = self._descriptor()
        size = os.fstat(fd).st_size
        end, last = _tail(self._path, fd, size)
        if last is None:
            raise AuditLogError(self._path, "the log has no complete line (emptied after opening)")
        previous = _parse(last)
        if previous is None:
            raise AuditLogError(
                self._path, "the last line is not an audit record; run `securemail audit verify`"
            )
        prev, seq = _hash(last), previous.seq
        if end < size:
            prev, seq = _repair(self._path, fd, end, size, prev, seq)
        return _write(self._path, fd, {**fields, "event": kind}, prev, seq + 1)


@contextlib.contextmanager
def _locked(fd: int, operation: int) -> Iterator[None]:
    fcntl.flock(fd, operation)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


def _start(path: str, fd: int) -> str:
    """Under the exclusive lock: the log's id, after writing the genesis line of a new log
    (or of one whose genesis line was itself torn by a crash)."""
    size = os.fstat(fd).st_size
    first = os.pread(fd, min(size, MAX_LINE), 0)
    newline = first.find(b"\n")
    if newline < 0 and (_GENESIS_START.startswith(first) or first.startswith(_GENESIS_START)):
        # A new log, or a crash while its genesis line was being written.
        os.ftruncate(fd, 0)
        log_id = secrets.token_hex(16)
        genesis = {"event": "genesis", "log_id": log_id, "version": FORMAT_VERSION}
        written = _write(path, fd, genesis, GENESIS_PREV, 1)
        if first:
            _record_repair(path, fd, first, 1, written.hash, 2)
        _sync_directory(path)
        return log_id
    record = _parse(first[: newline + 1]) if newline >= 0 else None
    if record is None or not record.genesis:
        raise AuditLogError(
            path, "not a securemail audit log (its first line is no genesis record)"
        )
    assert record.log_id is not None
    return record.log_id


def _tail(path: str, fd: int, size: int) -> tuple[int, bytes | None]:
    """Where the whole lines end, and the last whole line (None if there is none), read
    backwards from the end in blocks: the log is never read whole to append to it."""
    data, start = b"", size
    while True:
        step = min(8192, start)
        start -= step
        data = os.pread(fd, step, start) + data
        end = data.rfind(b"\n")
        if end >= 0:
            begin = data.rfind(b"\n", 0, end) + 1
            if begin > 0 or start == 0:
                return start + end + 1, data[begin : end + 1]
        elif start == 0:
            return 0, None
        if len(data) > 2 * MAX_LINE + 2:
            raise AuditLogError(path, "the last line is longer than any record; not an audit log")


def _repair(path: str, fd: int, end: int, size: int, prev: str, seq: int) -> tuple[str, int]:
    """Truncate a torn last line and record that it was there."""
    torn = os.pread(fd, size - end, end)
    os.ftruncate(fd, end)
    entry = _record_repair(path, fd, torn, seq + 1, prev, seq + 1)
    return entry.hash, entry.seq


def _record_repair(path: str, fd: int, torn: bytes, line: int, prev: str, seq: int) -> AuditEntry:
    fields = {"event": "repair", "torn_line": line, "torn_bytes": len(torn)}
    return _write(path, fd, {**fields, "torn_sha256": _hash(torn)}, prev, seq)


def _write(path: str, fd: int, fields: Mapping[str, object], prev: str, seq: int) -> AuditEntry:
    """Append one line with one write, then fsync; on failure, take the partial line back."""
    time = _now()
    line = _canonical({**fields, "seq": seq, "time": time, "prev": prev})
    if len(line) > MAX_LINE:
        raise AuditEventError(str(fields["event"]), "event", "would be longer than 1 MiB")
    before = os.fstat(fd).st_size
    try:
        written = os.write(fd, line)
        if written != len(line):
            raise OSError(0, f"short write ({written} of {len(line)} bytes)")
        os.fsync(fd)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, before)
        raise AuditLogError(path, f"cannot write: {exc.strerror or exc}") from None
    return AuditEntry(seq, time, str(fields["event"]), _hash(line))


def _sync_directory(path: str) -> None:
    """Make a new log's directory entry durable too."""
    directory = os.open(Path(path).parent, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


# --- verifying -----------------------------------------------------------------------------------


def verify(path: str | os.PathLike[str], *, expected_head: str | None = None) -> AuditVerification:
    """Check the whole chain of the log at ``path``.

    With ``expected_head`` (a hash from :meth:`AuditLog.head` kept elsewhere), the log must
    also contain the line with that hash; later lines may follow it. Reads under a shared
    lock, so appends wait and a line being written is never mistaken for a torn one.
    """
    name = os.fspath(path)
    anchor = None if expected_head is None else expected_head.strip().lower()
    if anchor is not None and not _HEX64.fullmatch(anchor):
        raise InputError("expected_head must be a SHA-256 hash: 64 hex digits")
    try:
        with open(name, "rb") as file, _locked(file.fileno(), fcntl.LOCK_SH):
            return _verify(name, file, anchor)
    except OSError as exc:
        raise AuditLogError(name, f"cannot read: {exc.strerror}") from None


def _links(line: int, record: _Record | None, prev: str, previous: _Record | None) -> bool:
    """Line ``line`` follows its predecessor (hash ``prev``, record ``previous``)."""
    if record is None:
        return False
    if line == 1:
        return record.genesis
    assert previous is not None
    return record.event != "genesis" and record.prev == prev and record.seq == previous.seq + 1


def _verify(path: str, file: IO[bytes], anchor: str | None) -> AuditVerification:
    count, prev, previous, log_id = 0, GENESIS_PREV, None, None
    anchored = anchor is None
    torn = False
    for raw in file:
        if not raw.endswith(b"\n"):
            torn = True
            break
        count += 1
        record = _parse(raw)
        if not _links(count, record, prev, previous):
            file.seek(0)
            return _failure(path, file, count, log_id)
        prev, previous = _hash(raw), record
        anchored = anchored or prev == anchor
        if count == 1:
            assert record is not None
            log_id = record.log_id
    result = AuditVerification(path, True, count, prev, log_id)
    if count == 0 and not torn:
        return dataclasses.replace(
            result, ok=False, problem=AuditProblem.HEAD_REMOVED, line=1, detail="the file is empty"
        )
    if not anchored:
        return dataclasses.replace(result, ok=False, problem=AuditProblem.HEAD_MISMATCH)
    if torn:
        return dataclasses.replace(result, ok=False, problem=AuditProblem.TORN_TAIL, line=count + 1)
    return result


def _failure(path: str, file: IO[bytes], first: int, log_id: str | None) -> AuditVerification:
    """Read the log again and work out what happened at the first broken link."""
    hashes: list[str] = [GENESIS_PREV]
    records: list[_Record | None] = [None]
    for raw in file:
        if raw.endswith(b"\n"):
            hashes.append(_hash(raw))
            records.append(_parse(raw))
    line, problem, detail = _classify(first, hashes, records)
    return AuditVerification(path, False, line - 1, hashes[line - 1], log_id, problem, line, detail)


def _classify(
    p: int, hashes: list[str], records: list[_Record | None]
) -> tuple[int, AuditProblem, str]:
    """Which line is to blame for the broken link into line ``p``, and how (1-based lists;
    every line before ``p`` chains correctly)."""
    n = len(hashes) - 1
    record = records[p]
    later_chains = any(r is not None and r.prev == hashes[p - 1] for r in records[p + 1 :])
    if p == 1:
        if any(r is not None and r.genesis for r in records[2:]):
            return 1, AuditProblem.INSERTED, "lines precede the genesis record"
        if record is None or record.prev == GENESIS_PREV or record.event == "genesis":
            return 1, AuditProblem.EDITED, "the genesis record is not valid"
        return 1, AuditProblem.HEAD_REMOVED, f"it has seq {record.seq}"
    previous = records[p - 1]
    assert previous is not None
    if record is None:
        kind = AuditProblem.INSERTED if later_chains else AuditProblem.EDITED
        return p, kind, "not a valid record"
    if record.event == "genesis":
        return p, AuditProblem.INSERTED, "a second genesis record"
    if record.prev == hashes[p - 1]:
        return p, AuditProblem.EDITED, f"seq {record.seq} after seq {previous.seq}"
    position = {h: i for i, h in enumerate(hashes) if i > 0}
    target = position.get(record.prev)
    if target is not None and target > p:
        return p, AuditProblem.REORDERED, f"it follows line {target}"
    if later_chains:
        return p, AuditProblem.INSERTED, ""
    if target is not None:
        return target + 1, AuditProblem.INSERTED, f"line {p} follows line {target}"
    if record.seq > previous.seq + 1:
        missing = record.seq - previous.seq - 1
        return p, AuditProblem.DELETED, f"{missing} between seq {previous.seq} and {record.seq}"
    if record.seq == previous.seq + 1:
        following = records[p + 1] if p < n else None
        if p < n and (following is None or following.prev != hashes[p]):
            return p, AuditProblem.EDITED, "its prev was changed"
        return p - 1, AuditProblem.EDITED, f"line {p}'s prev does not match it"
    return p, AuditProblem.EDITED, f"seq {record.seq} after seq {previous.seq}"
