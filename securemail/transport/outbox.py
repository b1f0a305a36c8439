"""A durable outbox: protected mail is written to disk before the first attempt and retried
until it is delivered, refused for good, or too old.

::

    with Outbox("outbox.sqlite") as outbox:
        outbox.enqueue(securemail.encrypt(message, [bob], signer=alice))
        with SMTPTransport(config) as transport:
            for report in outbox.deliver_due(transport):
                ...  # report.status: per recipient sent / deferred / failed

Call :meth:`Outbox.deliver_due` from a scheduler (every minute, say); it sends what is due
and returns at once when nothing is.

**Storage.** An SQLite database (the standard library's :mod:`sqlite3`) in WAL mode with
``synchronous=FULL``: a committed change survives a crash of the process and a power loss.
A message up to ``inline_limit`` bytes is stored in the database; a larger one is streamed
into a file in the spool directory next to it (``<database>.spool/``), fsynced together with
the directory before the database row that names it is committed, and streamed from there
to the server, so memory stays bounded whatever the message size. The database needs a local
file system (WAL does not work over network file systems).

**What is stored.** Only protected bytes: :meth:`Outbox.enqueue` refuses a message that is
not S/MIME or PGP/MIME encrypted (:class:`~securemail.errors.ProtectionRequiredError`, the
same check as ``SMTPConfig.require_protection``) unless the outbox was opened with
``allow_unprotected=True``, and a message with a Bcc header like the transport does. Besides
the bytes, the envelope (sender and recipient addresses) and each recipient's last SMTP reply
are stored. Once every recipient is final (sent or failed), the bytes are deleted (the spool
file is unlinked, the stored copy dropped), unless ``keep_sent=True``; :meth:`Outbox.purge`
later removes the finished records themselves.

**States.** Each recipient moves ``queued -> sending -> sent | deferred | failed``, and
``deferred -> sending`` again when its retry time comes. A deferral (4xx, a lost connection,
a timeout, a server that cannot be reached) schedules the next attempt after an exponential
backoff with jitter (:class:`RetryPolicy`); once the message is older than the policy's
``lifetime`` (5 days by default, after RFC 5321 section 4.5.4.1), the next deferral fails the
recipient instead (``expired``), keeping the last reply as the reason. A 5xx fails it at once.
A recipient that was delivered is never sent the message again, except after a crash (below).

**At least once.** Before talking to the server, :meth:`Outbox.deliver_due` *claims* the
message's due recipients in one ``BEGIN IMMEDIATE`` transaction: they become ``sending``
with a claim token and a lease, and that is committed before the first byte goes out. The
outcome is written only after the server has answered. A process that dies in between
(possibly after the server's 250) leaves the recipients ``sending``; when the lease runs out,
the next claim by any process turns them back to ``deferred`` ("interrupted") and sends them
again. The server may then get the message twice, but never zero times. A live claim is never
taken over: the lease is at least the sum of the transport's deadlines for one message
(``lease=`` overrides it), and it is renewed while a spooled message is being streamed. A
process whose lease was taken over anyway stops streaming before the final dot, so the
server discards its copy, and its late results are not recorded over the new owner's. Several
processes (or threads, each with its own :class:`Outbox`) may share one outbox this way.

**Errors while sending.** A failure to set up the session (connection refused, TLS,
authentication; :class:`~securemail.errors.TransportError` raised by the transport) says
nothing about the message: the recipients are deferred with the error as the reason, and the
run stops (the next message would meet the same server). This includes the errors that are
not ``temporary`` (a certificate that fails verification, refused credentials): like an MTA,
the outbox keeps such mail deferred until the configuration is fixed or the lifetime ends,
and :attr:`DeliveryReport.error` carries the exception so that the caller can alert someone.
A message the server can never take (larger than its SIZE, 8-bit data without 8BITMIME)
fails at once, and the run goes on.

Logging goes to ``securemail.transport.outbox``: message ids and counts, never content.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import logging
import math
import os
import random as _random
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from io import BufferedReader
from pathlib import Path
from types import TracebackType
from typing import NewType, Self

from ..errors import (
    EightBitUnsupportedError,
    InputError,
    MessageTooLargeError,
    OutboxError,
    PolicyError,
    SecureMailError,
    TransportError,
    UnknownMessageError,
)
from ..stream.base import CHUNK
from .config import Deadlines, SMTPConfig
from .results import RecipientStatus, SendResult
from .smtp import Sendable, SMTPTransport, _Outgoing, _prepare

__all__ = [
    "DeliveryReport",
    "MessageId",
    "MessageStatus",
    "Outbox",
    "OutboxStatus",
    "RecipientState",
    "RetryPolicy",
]

_log = logging.getLogger("securemail.transport.outbox")

MessageId = NewType("MessageId", str)
"""The outbox's name for an enqueued message (random, 32 hex digits)."""

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE schema_version (version INTEGER NOT NULL);
CREATE TABLE messages (
    id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    mail_from TEXT NOT NULL,
    size INTEGER NOT NULL,
    data BLOB,
    spool TEXT,
    finished REAL
);
CREATE TABLE recipients (
    message_id TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    address TEXT NOT NULL,
    status TEXT NOT NULL
        CHECK (status IN ('queued', 'sending', 'sent', 'deferred', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL,
    lease_until REAL,
    claim TEXT,
    last_code INTEGER,
    last_reply TEXT NOT NULL DEFAULT '',
    expired INTEGER NOT NULL DEFAULT 0,
    updated REAL NOT NULL,
    PRIMARY KEY (message_id, position)
);
CREATE INDEX recipients_due ON recipients (status, next_attempt_at);
CREATE INDEX recipients_lease ON recipients (status, lease_until);
CREATE INDEX messages_finished ON messages (finished);
"""
"""Version 1. ``messages.data`` holds the bytes of a small message, ``messages.spool`` names
the spool file of a large one; both are NULL once the bytes are deleted. ``finished`` is set
when the last recipient became final. ``recipients.next_attempt_at`` is when a queued or
deferred recipient is due; ``claim`` and ``lease_until`` belong to the process sending it."""

_INTERRUPTED = (
    "delivery was interrupted (the sending process stopped before recording the outcome); "
    "the message may or may not have been delivered, so it is sent again"
)
_MIN_DELAY = 1.0
"""No retry comes sooner than this, whatever the jitter draws."""
_ORPHAN_GRACE = 3600.0
"""A spool file no database row names is removed by purge() once it is this old (real time):
a crash between writing the file and committing its row leaves one behind, and a younger one
may belong to an enqueue still in progress in another process."""
_PERMANENT = (MessageTooLargeError, EightBitUnsupportedError, InputError, PolicyError)
"""Raised by the transport, these concern the message itself: retrying cannot help."""

# The checks enqueue() shares with SMTPTransport.send (envelope, Bcc, protection); only
# require_protection is read from the configuration.
_CHECK_PROTECTED = SMTPConfig(host="outbox.invalid", require_protection=True)
_CHECK_ANY = SMTPConfig(host="outbox.invalid")


# --- values --------------------------------------------------------------------------------------


class OutboxStatus(enum.StrEnum):
    """Where a recipient of an enqueued message stands."""

    QUEUED = "queued"
    """Not tried yet."""
    SENDING = "sending"
    """Claimed by a process that is sending it now (or died doing so: see ``lease_until``)."""
    SENT = "sent"
    """The server accepted the message for this recipient (final)."""
    DEFERRED = "deferred"
    """Not delivered yet; tried again at ``next_attempt_at``."""
    FAILED = "failed"
    """Refused for good, or still deferred when the lifetime ran out (final)."""

    @property
    def final(self) -> bool:
        return self in (OutboxStatus.SENT, OutboxStatus.FAILED)


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """When deferred mail is tried again, and for how long.

    The n-th retry waits ``min(cap, base * factor ** (n - 1))`` seconds shortened by a random
    fraction of up to ``jitter`` of it: ``jitter=1`` is "full jitter" (anywhere between
    nothing and the full delay), ``0`` none. No retry comes sooner than one second. A message
    whose recipients are still deferred ``lifetime`` seconds after it was enqueued fails
    (RFC 5321 section 4.5.4.1 suggests 4 to 5 days); its last attempt is made at that moment.
    """

    base: float = 60.0
    factor: float = 2.0
    cap: float = 3600.0
    lifetime: float = 5 * 24 * 3600.0
    jitter: float = 1.0

    def __post_init__(self) -> None:
        problems = []
        if not self.base > 0:
            problems.append("base must be positive")
        if not self.factor >= 1:
            problems.append("factor must be at least 1")
        if not self.cap >= self.base:
            problems.append("cap must be at least base")
        if not self.lifetime > 0:
            problems.append("lifetime must be positive")
        if not 0 <= self.jitter <= 1:
            problems.append("jitter must be between 0 and 1")
        if problems:
            raise InputError("invalid RetryPolicy: " + "; ".join(problems))

    def ceiling(self, attempt: int) -> float:
        """The longest wait after the ``attempt``-th attempt (1 for the first)."""
        try:
            return min(self.cap, self.base * self.factor ** max(attempt - 1, 0))
        except OverflowError:
            return self.cap

    def delay(self, attempt: int, draw: float) -> float:
        """The wait after the ``attempt``-th attempt, for a random ``draw`` in [0, 1)."""
        return max(_MIN_DELAY, self.ceiling(attempt) * (1 - self.jitter * draw))


@dataclasses.dataclass(frozen=True)
class RecipientState:
    address: str
    status: OutboxStatus
    attempts: int
    """How many times the message was handed to a server for this recipient (claims)."""
    next_attempt_at: float | None
    """When a queued or deferred recipient is due (seconds since the epoch); else None."""
    lease_until: float | None
    """While sending: when the claim expires and another process may take it over."""
    last_code: int | None
    """The SMTP reply code of the last attempt (None: no reply, or not tried yet)."""
    last_reply: str
    """The server's last reply text, or why there was none."""
    expired: bool
    """Failed because it was still deferred when the lifetime ran out."""
    updated: float


@dataclasses.dataclass(frozen=True)
class MessageStatus:
    """An enqueued message and where each of its recipients stands."""

    message_id: MessageId
    created: float
    mail_from: str
    size: int
    """Bytes stored (as enqueued, before line ends are made CRLF for the wire)."""
    stored: bool
    """The bytes are still kept (until every recipient is final, or until purge with
    ``keep_sent``)."""
    finished: float | None
    """When the last recipient became final (sent or failed); None while any is pending."""
    recipients: tuple[RecipientState, ...]

    def _addresses(self, status: OutboxStatus) -> tuple[str, ...]:
        return tuple(r.address for r in self.recipients if r.status is status)

    @property
    def done(self) -> bool:
        return self.finished is not None

    @property
    def queued(self) -> tuple[str, ...]:
        return self._addresses(OutboxStatus.QUEUED)

    @property
    def sending(self) -> tuple[str, ...]:
        return self._addresses(OutboxStatus.SENDING)

    @property
    def sent(self) -> tuple[str, ...]:
        return self._addresses(OutboxStatus.SENT)

    @property
    def deferred(self) -> tuple[str, ...]:
        return self._addresses(OutboxStatus.DEFERRED)

    @property
    def failed(self) -> tuple[str, ...]:
        return self._addresses(OutboxStatus.FAILED)

    @property
    def next_attempt_at(self) -> float | None:
        """When the earliest pending recipient is due (None when none is waiting)."""
        times = [r.next_attempt_at for r in self.recipients if r.next_attempt_at is not None]
        return min(times, default=None)

    def recipient(self, address: str) -> RecipientState:
        for state in self.recipients:
            if state.address == address:
                return state
        raise KeyError(address)


@dataclasses.dataclass(frozen=True)
class DeliveryReport:
    """One attempt at one message made by :meth:`Outbox.deliver_due`."""

    message_id: MessageId
    recipients: tuple[str, ...]
    """The recipients that were due and attempted (the others were final or not due)."""
    result: SendResult | None
    """The transport's per-recipient result; None when it raised instead."""
    error: SecureMailError | None
    """What was raised instead of a result: a :class:`~securemail.errors.TransportError`
    (session set-up failed: the recipients were deferred; or the message cannot be sent:
    they failed), or an :class:`~securemail.errors.OutboxError` (the stored copy is missing,
    or the claim expired mid-delivery and another process took the message over)."""
    status: MessageStatus
    """The message as recorded after this attempt."""


# --- internals -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Claim:
    message_id: MessageId
    token: str
    created: float
    mail_from: str
    size: int
    data: bytes | None
    spool: str | None
    recipients: tuple[str, ...]
    attempts: dict[str, int]
    lease: float


@dataclasses.dataclass(frozen=True)
class _Outcome:
    address: str
    status: OutboxStatus
    code: int | None
    reply: str


class _LeaseLost(Exception):
    """Raised from inside the transport's read of a spooled message: stop before the dot."""


class _LeasedFile:
    """A spooled message as the transport reads it: renews the claim's lease as it goes, and
    aborts the transfer (before the final dot) if the claim was taken over."""

    def __init__(self, file: BufferedReader, renew: Callable[[], None]) -> None:
        self._file = file
        self._renew = renew

    def readinto(self, buffer: bytearray | memoryview, /) -> int | None:
        self._renew()
        return self._file.readinto(buffer)

    def fileno(self) -> int:  # with tell(): lets the transport announce SIZE=
        return self._file.fileno()

    def tell(self) -> int:
        return self._file.tell()


def _default_lease(deadlines: Deadlines, recipients: int, size: int, spooled: bool) -> float:
    """Every deadline the transport may spend on one message, so that a live claim never runs
    out before the transport gives up: reconnecting (greeting, EHLO, STARTTLS, EHLO, AUTH,
    RSET), MAIL, each RCPT, DATA, the data blocks, the final reply and QUIT.

    A spooled message renews its lease whenever it is read past half-time, so its lease need
    not grow with its size: it only has to leave, at any read, time for what may follow the
    last one (a few blocks, the final reply, QUIT).
    """
    setup = (
        deadlines.greeting
        + 5 * deadlines.command
        + deadlines.mail
        + recipients * deadlines.rcpt
        + deadlines.data_init
    )
    if spooled:
        tail = 4 * deadlines.data_block + deadlines.data_done + deadlines.quit
        return setup + 2 * tail
    blocks = 2 * math.ceil(size / CHUNK) + 1  # CRLF and dot-stuffing at most double the data
    return setup + blocks * deadlines.data_block + deadlines.data_done + deadlines.quit


def _fsync_directory(directory: Path) -> None:
    if os.name != "posix":  # pragma: no cover - directories cannot be opened elsewhere
        return
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


# --- the outbox ----------------------------------------------------------------------------------


class Outbox:
    """A durable queue of protected messages in the SQLite database at ``path`` (created,
    with owner-only permissions, if it does not exist).

    ``retry`` sets the backoff and lifetime; ``lease`` the seconds a claim lasts (default:
    the transport's deadlines for the message); ``allow_unprotected`` lets messages that are
    not encrypted in; ``keep_sent`` keeps a finished message's bytes until :meth:`purge`;
    messages up to ``inline_limit`` bytes are stored in the database, larger ones in the spool
    directory; ``busy_timeout`` is how long to wait for another process's write. ``clock``
    (seconds since the epoch) and ``random`` (a float in [0, 1)) are for tests.

    One object per thread; several objects, in any number of processes, may share a file.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        retry: RetryPolicy | None = None,
        lease: float | None = None,
        allow_unprotected: bool = False,
        keep_sent: bool = False,
        inline_limit: int = 1024 * 1024,
        busy_timeout: float = 30.0,
        clock: Callable[[], float] = time.time,
        random: Callable[[], float] = _random.random,
    ) -> None:
        if lease is not None and not lease > 0:
            raise InputError("lease must be a positive number of seconds")
        if inline_limit < 0:
            raise InputError("inline_limit must not be negative")
        self._path = Path(path)
        self._spool = self._path.with_name(self._path.name + ".spool")
        self._retry = retry if retry is not None else RetryPolicy()
        self._lease = lease
        self._checks = _CHECK_ANY if allow_unprotected else _CHECK_PROTECTED
        self._keep_sent = keep_sent
        self._inline_limit = inline_limit
        self._clock = clock
        self._random = random
        self._db = self._connect(busy_timeout)
        try:
            with self._errors():
                self._migrate()
                with self._write():
                    self._recover(self._clock())
        except BaseException:
            self._db.close()
            raise

    # opening

    def _connect(self, busy_timeout: float) -> sqlite3.Connection:
        with self._errors():
            try:
                descriptor = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
                os.close(descriptor)
                self._spool.mkdir(mode=0o700, exist_ok=True)
            except OSError as exc:
                raise OutboxError(str(self._path), f"cannot create: {exc.strerror}") from None
            db = sqlite3.connect(self._path, timeout=busy_timeout, isolation_level=None)
            try:
                mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise OutboxError(str(self._path), f"WAL journal unavailable ({mode})")
                # FULL: each commit reaches the disk before it returns (NORMAL in WAL mode
                # may lose the last commits on power loss).
                db.execute("PRAGMA synchronous=FULL")
                db.execute("PRAGMA foreign_keys=ON")
            except BaseException:
                db.close()
                raise
        return db

    def _migrate(self) -> None:
        with self._write() as db:
            exists = db.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
            ).fetchone()
            if exists is None:
                if db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                    raise OutboxError(str(self._path), "the database is not an outbox")
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
                return
            row = db.execute("SELECT max(version) FROM schema_version").fetchone()
            if row is None or row[0] != SCHEMA_VERSION:
                raise OutboxError(
                    str(self._path),
                    f"schema version {row[0] if row else None} is not {SCHEMA_VERSION} "
                    "(made by another securemail version)",
                )

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise OutboxError(str(self._path), f"database error: {exc}") from None

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken at once (``BEGIN IMMEDIATE``): claims cannot race."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """One consistent snapshot for several queries."""
        self._db.execute("BEGIN")
        try:
            yield self._db
        finally:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("COMMIT")

    # the object

    @property
    def path(self) -> Path:
        return self._path

    @property
    def spool_directory(self) -> Path:
        return self._spool

    @property
    def retry(self) -> RetryPolicy:
        return self._retry

    def __repr__(self) -> str:
        return f"Outbox({str(self._path)!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    # enqueueing

    def enqueue(
        self,
        message: Sendable,
        *,
        mail_from: str | None = None,
        recipients: Iterable[str] | None = None,
    ) -> MessageId:
        """Store ``message`` for delivery and return its id once it is on disk.

        Takes what :meth:`SMTPTransport.send <securemail.transport.SMTPTransport.send>`
        takes (a :class:`~securemail.results.ProtectedMessage`, bytes, a binary file or a
        path; files are streamed) and runs the same checks before anything is stored: the
        envelope (``mail_from``/``recipients``, else the message's own), no Bcc header, and
        encryption unless the outbox allows unprotected mail.
        """
        with contextlib.ExitStack() as stack:
            outgoing = _prepare(message, mail_from, recipients, self._checks, stack)
            message_id = MessageId(secrets.token_hex(16))
            data, spool, size = self._store(outgoing, message_id)
        try:
            with self._errors(), self._write() as db:
                now = self._clock()
                db.execute(
                    "INSERT INTO messages (id, created, mail_from, size, data, spool) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (message_id, now, outgoing.mail_from, size, data, spool),
                )
                db.executemany(
                    "INSERT INTO recipients (message_id, position, address, status, "
                    "next_attempt_at, updated) VALUES (?, ?, ?, 'queued', ?, ?)",
                    [
                        (message_id, position, address, now, now)
                        for position, address in enumerate(outgoing.recipients)
                    ],
                )
        except BaseException:
            if spool is not None:
                with contextlib.suppress(OSError):
                    (self._spool / spool).unlink()
            raise
        _log.info(
            "outbox: enqueued %s (%d bytes, %d recipients%s)",
            message_id,
            size,
            len(outgoing.recipients),
            ", spooled" if spool else "",
        )
        return message_id

    def _store(
        self, outgoing: _Outgoing, message_id: MessageId
    ) -> tuple[bytes | None, str | None, int]:
        """The message's bytes for the database, or the name of the spool file they were
        written to (fsynced, and its directory too), and their size. Memory holds at most
        ``inline_limit`` bytes and one chunk."""
        buffer = bytearray()
        size = 0
        name = f"{message_id}.msg"
        partial = self._spool / f"{name}.tmp"
        spooled = None
        try:
            for chunk in outgoing.chunks():  # the caller's read errors pass unchanged
                size += len(chunk)
                with self._spool_errors():
                    if spooled is not None:
                        spooled.write(chunk)
                        continue
                    buffer += chunk
                    if len(buffer) > self._inline_limit:
                        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
                        spooled = os.fdopen(os.open(partial, flags, 0o600), "wb")
                        spooled.write(buffer)
                        buffer = bytearray()
            if spooled is None:
                return bytes(buffer), None, size
            with self._spool_errors():
                spooled.flush()
                os.fsync(spooled.fileno())
                spooled.close()
                os.replace(partial, self._spool / name)
                _fsync_directory(self._spool)
        finally:
            if spooled is not None and not spooled.closed:
                spooled.close()
            with contextlib.suppress(OSError):
                partial.unlink(missing_ok=True)
        return None, name, size

    @contextlib.contextmanager
    def _spool_errors(self) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            raise OutboxError(
                str(self._path), f"cannot write to the spool directory: {exc.strerror}"
            ) from None

    # delivering

    def deliver_due(
        self, transport: SMTPTransport, *, limit: int | None = None
    ) -> list[DeliveryReport]:
        """Send every message that has recipients due, one message at a time through
        ``transport``, and record each recipient's outcome; at most ``limit`` messages.

        Only the due recipients of a message are sent it (one that was delivered before is
        not sent it again). The run stops early when the session cannot be set up (see the
        module documentation). Raises :class:`~securemail.errors.OutboxError` if the
        database or a spool file cannot be read or written.
        """
        reports: list[DeliveryReport] = []
        started = self._clock()
        while limit is None or len(reports) < limit:
            with self._errors():
                claim = self._claim(transport, started)
            if claim is None:
                break
            report = self._deliver(transport, claim)
            reports.append(report)
            if isinstance(report.error, TransportError) and not isinstance(
                report.error, _PERMANENT
            ):
                _log.info("outbox: stopping this run: %s", report.error)
                break
        return reports

    def _recover(self, now: float) -> None:
        """Claims whose lease ran out belong to a process that died (or stalled): their
        recipients become due again. Runs inside a write transaction."""
        changed = self._db.execute(
            "UPDATE recipients SET status = 'deferred', next_attempt_at = lease_until, "
            "claim = NULL, lease_until = NULL, last_code = NULL, last_reply = ?, updated = ? "
            "WHERE status = 'sending' AND lease_until <= ?",
            (_INTERRUPTED, now, now),
        ).rowcount
        if changed:
            _log.warning("outbox: %d interrupted recipient(s) will be sent again", changed)

    def _claim(self, transport: SMTPTransport, started: float) -> _Claim | None:
        """Take the next due message: its due recipients become ``sending`` under a new
        claim token and lease, committed before anything is sent."""
        with self._write() as db:
            now = self._clock()
            self._recover(now)
            row = db.execute(
                "SELECT message_id FROM recipients "
                "WHERE status IN ('queued', 'deferred') AND next_attempt_at <= ? "
                "ORDER BY next_attempt_at, rowid LIMIT 1",
                (started,),
            ).fetchone()
            if row is None:
                return None
            message_id = MessageId(row[0])
            created, mail_from, size, data, spool = db.execute(
                "SELECT created, mail_from, size, data, spool FROM messages WHERE id = ?",
                (message_id,),
            ).fetchone()
            due = db.execute(
                "SELECT address, attempts FROM recipients WHERE message_id = ? "
                "AND status IN ('queued', 'deferred') AND next_attempt_at <= ? "
                "ORDER BY position",
                (message_id, started),
            ).fetchall()
            recipients = tuple(address for address, _ in due)
            lease = self._lease or _default_lease(
                transport.config.deadlines, len(recipients), size, spooled=spool is not None
            )
            token = secrets.token_hex(8)
            db.execute(
                "UPDATE recipients SET status = 'sending', claim = ?, lease_until = ?, "
                "attempts = attempts + 1, next_attempt_at = NULL, updated = ? "
                "WHERE message_id = ? AND status IN ('queued', 'deferred') "
                "AND next_attempt_at <= ?",
                (token, now + lease, now, message_id, started),
            )
        _log.info("outbox: sending %s to %d recipient(s)", message_id, len(recipients))
        return _Claim(
            message_id=message_id,
            token=token,
            created=created,
            mail_from=mail_from,
            size=size,
            data=data,
            spool=spool,
            recipients=recipients,
            attempts={address: attempts + 1 for address, attempts in due},
            lease=lease,
        )

    def _renewer(self, claim: _Claim) -> Callable[[], None]:
        renew_at = self._clock() + claim.lease / 2

        def renew() -> None:
            nonlocal renew_at
            now = self._clock()
            if now < renew_at:
                return
            with self._errors(), self._write() as db:
                held = db.execute(
                    "UPDATE recipients SET lease_until = ? "
                    "WHERE message_id = ? AND claim = ? AND status = 'sending'",
                    (now + claim.lease, claim.message_id, claim.token),
                ).rowcount
            if not held:
                raise _LeaseLost
            renew_at = now + claim.lease / 2

        return renew

    def _deliver(self, transport: SMTPTransport, claim: _Claim) -> DeliveryReport:
        def all_of(status: OutboxStatus, code: int | None, reply: str) -> list[_Outcome]:
            return [_Outcome(address, status, code, reply) for address in claim.recipients]

        with contextlib.ExitStack() as stack:
            message: Sendable | None = claim.data
            if claim.spool is not None:
                try:
                    file = stack.enter_context((self._spool / claim.spool).open("rb"))
                except FileNotFoundError:
                    message = None
                except OSError as exc:
                    reason = f"cannot read the stored message: {exc.strerror}"
                    self._record(claim, all_of(OutboxStatus.DEFERRED, None, reason))
                    raise OutboxError(
                        str(self._path), f"message {claim.message_id}: {reason}"
                    ) from None
                else:
                    message = _LeasedFile(file, self._renewer(claim))
            if message is None:
                # A stored copy that is gone cannot come back: tell the sender.
                reason = "the stored copy of the message is missing"
                self._record(claim, all_of(OutboxStatus.FAILED, None, reason))
                error = OutboxError(str(self._path), f"message {claim.message_id}: {reason}")
                return self._report(claim, None, error)
            try:
                result = transport.send(
                    message, mail_from=claim.mail_from, recipients=claim.recipients
                )
            except _LeaseLost:
                error = OutboxError(
                    str(self._path),
                    f"message {claim.message_id}: the claim expired during delivery and "
                    "another process took the message over; stopped before the end of data",
                )
                _log.warning("outbox: %s", error)
                return self._report(claim, None, error)
            except _PERMANENT as exc:
                code = getattr(exc, "code", None)
                self._record(claim, all_of(OutboxStatus.FAILED, code, str(exc)))
                return self._report(claim, None, exc)
            except TransportError as exc:
                code = getattr(exc, "code", None)
                self._record(claim, all_of(OutboxStatus.DEFERRED, code, str(exc)))
                return self._report(claim, None, exc)
            except Exception as exc:
                # Our side failed (reading the spool file, the database): the transport
                # dropped the connection before the final dot, so nothing was delivered.
                reason = f"local error while sending: {type(exc).__name__}"
                with contextlib.suppress(Exception):
                    self._record(claim, all_of(OutboxStatus.DEFERRED, None, reason))
                raise OutboxError(str(self._path), f"message {claim.message_id}: {reason}") from exc
            except BaseException:
                # Interrupted (KeyboardInterrupt): the outcome is unknown, so the recipients
                # are due again at once, as after a crash (best effort: else the lease
                # runs out).
                with contextlib.suppress(Exception):
                    interrupted = all_of(OutboxStatus.DEFERRED, None, _INTERRUPTED)
                    self._record(claim, interrupted, due_at=self._clock())
                raise
        self._record(claim, [self._outcome(result, address) for address in claim.recipients])
        return self._report(claim, result, None)

    @staticmethod
    def _outcome(result: SendResult, address: str) -> _Outcome:
        try:
            recipient = result.recipient(address)
        except KeyError:  # pragma: no cover - the transport reports every envelope recipient
            return _Outcome(address, OutboxStatus.DEFERRED, None, "no result for this recipient")
        status = {
            RecipientStatus.DELIVERED: OutboxStatus.SENT,
            RecipientStatus.DEFERRED: OutboxStatus.DEFERRED,
            RecipientStatus.FAILED: OutboxStatus.FAILED,
        }[recipient.status]
        return _Outcome(address, status, recipient.code, recipient.reply)

    def _record(
        self, claim: _Claim, outcomes: list[_Outcome], *, due_at: float | None = None
    ) -> None:
        """Write the outcomes of a claim (unless another process has taken it over), and
        drop the message's bytes once every recipient is final. ``due_at`` replaces the
        backoff for deferred recipients (an interrupted delivery is due at once)."""
        at = self._clock()
        expiry = claim.created + self._retry.lifetime
        draw = self._random()  # one per attempt: recipients deferred together retry together
        dropped_spool = None
        with self._errors():
            with self._write() as db:
                for outcome in outcomes:
                    status, next_attempt, expired = outcome.status, None, False
                    if status is OutboxStatus.DEFERRED:
                        if due_at is not None:
                            next_attempt = due_at
                        elif at >= expiry:
                            status, expired = OutboxStatus.FAILED, True
                        else:
                            attempts = claim.attempts[outcome.address]
                            delay = self._retry.delay(attempts, draw)
                            next_attempt = min(at + delay, expiry)
                    db.execute(
                        "UPDATE recipients SET status = ?, next_attempt_at = ?, claim = NULL, "
                        "lease_until = NULL, last_code = ?, last_reply = ?, expired = ?, "
                        "updated = ? WHERE message_id = ? AND address = ? AND claim = ? "
                        "AND status = 'sending'",
                        (
                            status.value,
                            next_attempt,
                            outcome.code,
                            outcome.reply,
                            int(expired),
                            at,
                            claim.message_id,
                            outcome.address,
                            claim.token,
                        ),
                    )
                pending = db.execute(
                    "SELECT count(*) FROM recipients WHERE message_id = ? "
                    "AND status NOT IN ('sent', 'failed')",
                    (claim.message_id,),
                ).fetchone()[0]
                if not pending:
                    dropped_spool = self._finish(claim.message_id, at)
            if dropped_spool is not None:
                self._unlink(dropped_spool)

    def _finish(self, message_id: MessageId, at: float) -> str | None:
        """Mark the message finished; unless ``keep_sent``, drop its bytes and return the
        spool file to unlink once this is committed."""
        if self._keep_sent:
            self._db.execute(
                "UPDATE messages SET finished = ? WHERE id = ? AND finished IS NULL",
                (at, message_id),
            )
            return None
        spool = self._db.execute(
            "SELECT spool FROM messages WHERE id = ?", (message_id,)
        ).fetchone()[0]
        self._db.execute(
            "UPDATE messages SET finished = coalesce(finished, ?), data = NULL, spool = NULL "
            "WHERE id = ?",
            (at, message_id),
        )
        return str(spool) if spool is not None else None

    def _unlink(self, name: str) -> None:
        try:
            (self._spool / name).unlink(missing_ok=True)
        except OSError as exc:  # left as an orphan for purge()
            _log.warning("outbox: cannot remove spool file %s: %s", name, exc.strerror)

    def _report(
        self, claim: _Claim, result: SendResult | None, error: SecureMailError | None
    ) -> DeliveryReport:
        status = self.status(claim.message_id)
        _log.info(
            "outbox: %s: %d sent, %d deferred, %d failed",
            claim.message_id,
            len(status.sent),
            len(status.deferred),
            len(status.failed),
        )
        return DeliveryReport(claim.message_id, claim.recipients, result, error, status)

    # reading

    def status(self, message_id: str) -> MessageStatus:
        """The message and each recipient's state; raises
        :class:`~securemail.errors.UnknownMessageError` for an id not (or no longer) here."""
        with self._errors(), self._read() as db:
            statuses = self._statuses(db, "WHERE id = ?", (message_id,))
        if not statuses:
            raise UnknownMessageError(str(self._path), message_id)
        return statuses[0]

    def pending(self) -> tuple[MessageStatus, ...]:
        """Every message with a recipient not yet final, oldest first."""
        with self._errors(), self._read() as db:
            return self._statuses(db, "WHERE finished IS NULL", ())

    def _statuses(
        self, db: sqlite3.Connection, where: str, parameters: tuple[object, ...]
    ) -> tuple[MessageStatus, ...]:
        # ``where`` is one of two constant clauses; the values are bound as parameters.
        messages = db.execute(
            "SELECT id, created, mail_from, size, data IS NOT NULL OR spool IS NOT NULL, "  # noqa: S608
            f"finished FROM messages {where} ORDER BY created, id",
            parameters,
        ).fetchall()
        recipients: dict[str, list[RecipientState]] = {row[0]: [] for row in messages}
        rows = db.execute(
            "SELECT message_id, address, status, attempts, next_attempt_at, lease_until, "  # noqa: S608
            "last_code, last_reply, expired, updated FROM recipients WHERE message_id IN "
            f"(SELECT id FROM messages {where}) ORDER BY message_id, position",
            parameters,
        )
        for row in rows:
            recipients[row[0]].append(
                RecipientState(
                    address=row[1],
                    status=OutboxStatus(row[2]),
                    attempts=row[3],
                    next_attempt_at=row[4],
                    lease_until=row[5],
                    last_code=row[6],
                    last_reply=row[7],
                    expired=bool(row[8]),
                    updated=row[9],
                )
            )
        return tuple(
            MessageStatus(
                message_id=MessageId(row[0]),
                created=row[1],
                mail_from=row[2],
                size=row[3],
                stored=bool(row[4]),
                finished=row[5],
                recipients=tuple(recipients[row[0]]),
            )
            for row in messages
        )

    # cleaning up

    def purge(self, *, older_than: float = 0.0) -> int:
        """Remove finished messages (every recipient sent or failed) that finished at least
        ``older_than`` seconds ago, with any bytes still kept; returns how many. Also
        removes spool files that no message names (left by a crash during enqueue) once
        they are an hour old."""
        cutoff = self._clock() - older_than
        with self._errors():
            with self._write() as db:
                spools = [
                    name
                    for (name,) in db.execute(
                        "SELECT spool FROM messages WHERE finished IS NOT NULL "
                        "AND finished <= ? AND spool IS NOT NULL",
                        (cutoff,),
                    )
                ]
                removed = db.execute(
                    "DELETE FROM messages WHERE finished IS NOT NULL AND finished <= ?",
                    (cutoff,),
                ).rowcount
            for name in spools:
                self._unlink(name)
            with self._read() as db:
                named = {name for (name,) in db.execute("SELECT spool FROM messages")}
        self._sweep(named)
        if removed:
            _log.info("outbox: purged %d finished message(s)", removed)
        return int(removed)

    def _sweep(self, named: set[str | None]) -> None:
        threshold = time.time() - _ORPHAN_GRACE
        try:
            entries = list(os.scandir(self._spool))
        except OSError:
            return
        for entry in entries:
            if entry.name in named or not entry.is_file(follow_symlinks=False):
                continue
            with contextlib.suppress(OSError):
                if entry.stat(follow_symlinks=False).st_mtime < threshold:
                    os.unlink(entry.path)
                    _log.info("outbox: removed orphaned spool file %s", entry.name)
