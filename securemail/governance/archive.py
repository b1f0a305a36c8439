"""An archive of sent mail: each message encrypted to an archive (escrow) certificate, found
again by date, Message-ID, or a blind index of its addresses.

::

    archive = Archive.create("sent.sqlite", recipient=escrow, retention=timedelta(days=3650))
    index_key = archive.index_key          # give this to the processes that archive
    ...
    with Archive.open("sent.sqlite", index_key=index_key) as archive:
        archive.store(protected.as_bytes(), envelope_recipients=bcc)
    ...
    with Archive.open("sent.sqlite", identity=escrow_identity) as archive:
        for entry in archive.find(to="Bob@Example.org"):
            original = archive.get(entry.id, escrow_identity)

**What is encrypted.** The whole message as sent (headers, subject, addresses, body) is one
CMS AuthEnvelopedData, AES-256-GCM, its key wrapped for the archive certificate (RSA-OAEP or
ECDH), built by :func:`securemail.smime.enveloped.encrypt_envelope`. ``openssl cms -decrypt``
opens it with the archive key. The plaintext never reaches the database. Encryption fails
closed: if the archive certificate cannot be encrypted to (expired, wrong key usage, a
signing-only key), :meth:`Archive.store` raises the :class:`~securemail.errors.RecipientError`
and stores nothing. The envelope proves nothing about who archived a message (anyone with
the certificate can make one): sign the mail if that matters.

**What is in clear.** Per entry: a random archive id, the Message-ID (which usually names the
sender's domain), the date sent (UTC) and the size. And the blind index: for the sender (From)
and each recipient (To, Cc, a Bcc field if present, and ``envelope_recipients``, since Bcc
recipients are normally in no header), ``HMAC-SHA256(index_key, normalized address)``. An
address is normalized by taking its addr-spec and lowercasing all of it: the domain is
case-insensitive by definition, and the local part is lowercased too because in practice
mailboxes are, so ``find(to="Bob@Example.ORG")`` finds mail to ``bob@example.org``. (Two
mailboxes differing only in the case of their local part would be indexed as one; ``get``
returns the real headers.) The index shows how many addresses each message has, and that two
messages share a correspondent, without saying who.

**The index key.** A random 256-bit key per archive (or one the caller gives to
:meth:`Archive.create`). The database holds it only encrypted to the archive certificate,
plus a check value that tells a wrong key from a right one. Writers must add index entries
without the archive's private key, so they are *given* the index key
(``Archive.open(path, index_key=...)``); holders of the archive key unwrap it instead
(``Archive.open(path, identity=...)``). Whoever holds the index key can test guesses ("was
anything sent to alice@example.com?") against the index, offline and fast, and addresses are
easy to guess: keep the index key as secret as a password, not as a public setting. It does
not decrypt any message.

**Deletion.** :meth:`Archive.delete` and :meth:`Archive.purge_expired` run with SQLite's
``secure_delete``: the freed pages (ciphertext, Message-ID, index tags) are overwritten with
zeros in the database file. The rollback journal (``journal_mode=DELETE``, not WAL, whose
old frames would linger in the ``-wal`` file) holds those pages only while the deleting
transaction runs. What the file system or the disk keep of overwritten blocks is beyond
SQLite.

Storage sits behind :class:`ArchiveStorage`; :class:`SQLiteStorage` is the one provided.
Logging goes to ``securemail.governance.archive``: archive ids and sizes, never content,
addresses or Message-IDs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import email.utils
import hashlib
import hmac
import logging
import os
import re
import secrets
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from email.message import EmailMessage
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from .. import wire
from ..errors import (
    ArchiveEntryError,
    ArchiveError,
    IndexKeyError,
    InputError,
    IntegrityError,
    MalformedMessageError,
)
from ..keys import Identity, Recipient
from ..policy import DEFAULT, ContentCipher, KeyTransport
from ..smime import enveloped
from ..smime.mime import plan_recipients

__all__ = [
    "INDEX_KEY_SIZE",
    "Archive",
    "ArchiveEntry",
    "ArchiveStorage",
    "SQLiteStorage",
    "StoredEntry",
    "normalize_address",
]

_log = logging.getLogger("securemail.governance.archive")

INDEX_KEY_SIZE = 32
"""Bytes of an index key (HMAC-SHA256 key)."""

FORMAT = b"securemail-archive-1"
_SEAL_POLICY = DEFAULT.clone(
    content_cipher=ContentCipher.AES_256_GCM, key_transport=KeyTransport.RSA_OAEP
)
"""AES-256-GCM and RSA-OAEP whatever the certificate announces: the archive is read by
securemail or OpenSSL 3, never by an old mail client."""
_CHECK_LABEL = b"securemail archive: index key check"
_ADDRESS_LABEL = b"securemail archive: address\x00"
_ARCHIVE_ID = re.compile(r"[0-9a-f]{32}")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


# --- values -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ArchiveEntry:
    """One archived message, as the index knows it (nothing here was encrypted)."""

    id: str
    """The archive's own name for the entry: 32 random hex digits, unique."""
    message_id: str | None
    """The Message-ID field as sent (with its angle brackets), None if the message had none.
    Not unique: a message sent twice is archived twice."""
    date: dt.datetime
    """When it was sent (UTC): ``sent_at``, else its Date field, else when it was stored."""
    size: int
    """Bytes of the message as sent (the plaintext, not the ciphertext)."""


@dataclasses.dataclass(frozen=True, repr=False)
class StoredEntry:
    """What a storage keeps of one message: the entry, the sealed message (DER CMS) and the
    index tags of its sender and recipient addresses."""

    entry: ArchiveEntry
    sealed: bytes
    senders: frozenset[bytes]
    recipients: frozenset[bytes]


def normalize_address(address: str) -> str:
    """The form an address is indexed under: the addr-spec of ``"Name <addr>"`` (or of a bare
    address), lowercased entirely, an internationalized domain in its ASCII (IDNA) form.

    Raises :class:`~securemail.errors.InputError` for something that is not an address; the
    message does not repeat it.
    """
    _, addr = email.utils.parseaddr(address.strip())
    local, at, domain = addr.rpartition("@")
    if not at or not local or not domain or any(c.isspace() for c in addr):
        raise InputError("not an email address (expected local@domain)")
    # Not valid IDNA: indexed as written (lowercased), as the mail system saw it.
    with contextlib.suppress(UnicodeError):
        domain = domain.encode("idna").decode("ascii")
    return f"{local}@{domain}".lower()


def _tag(index_key: bytes, address: str) -> bytes:
    normalized = normalize_address(address).encode("utf-8")
    return hmac.new(index_key, _ADDRESS_LABEL + normalized, hashlib.sha256).digest()


def _check_value(index_key: bytes) -> bytes:
    return hmac.new(index_key, _CHECK_LABEL, hashlib.sha256).digest()


def _micros(moment: dt.datetime) -> int:
    return (moment - _EPOCH) // dt.timedelta(microseconds=1)


def _from_micros(value: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(microseconds=value)


def _utc(moment: dt.datetime, what: str) -> dt.datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise InputError(f"{what} must be a timezone-aware datetime (e.g. with tzinfo=UTC)")
    return moment.astimezone(dt.UTC)


# --- storage ------------------------------------------------------------------------------------


class ArchiveStorage(Protocol):
    """Where an archive keeps its rows. Every method is one transaction: a row and its index
    entries are added or removed together, or not at all."""

    name: str
    """What errors call the storage (a file path)."""

    def read_meta(self) -> Mapping[str, bytes]: ...

    def insert(self, row: StoredEntry) -> None: ...

    def find(
        self,
        *,
        sender: bytes | None,
        recipient: bytes | None,
        since: int | None,
        until: int | None,
    ) -> list[ArchiveEntry]:
        """Entries by index tag and date range (microseconds, ``since <= date < until``),
        oldest first."""
        ...

    def lookup(self, keys: Sequence[str]) -> list[ArchiveEntry]:
        """Entries whose archive id or Message-ID is one of ``keys``, oldest first."""
        ...

    def sealed(self, entry_id: str) -> bytes: ...

    def delete(self, entry_ids: Sequence[str]) -> int: ...

    def delete_before(self, cutoff: int) -> int: ...

    def close(self) -> None: ...


_SCHEMA = """
CREATE TABLE meta (name TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE entries (
    id TEXT PRIMARY KEY,
    message_id TEXT,
    date INTEGER NOT NULL,
    size INTEGER NOT NULL
);
CREATE TABLE contents (
    entry_id TEXT PRIMARY KEY REFERENCES entries (id) ON DELETE CASCADE,
    sealed BLOB NOT NULL
);
CREATE TABLE address_index (
    entry_id TEXT NOT NULL REFERENCES entries (id) ON DELETE CASCADE,
    role TEXT NOT NULL CHECK (role IN ('sender', 'recipient')),
    tag BLOB NOT NULL,
    PRIMARY KEY (entry_id, role, tag)
);
CREATE INDEX entries_date ON entries (date);
CREATE INDEX entries_message_id ON entries (message_id);
CREATE INDEX address_tag ON address_index (tag, role);
"""
"""``entries.date`` is microseconds since 1970 UTC. ``contents.sealed`` is the DER
ContentInfo (AuthEnvelopedData); kept apart so that listing never pages through ciphertext.
``meta`` holds ``format``, ``certificate`` (DER), ``wrapped_index_key`` (CMS),
``index_key_check`` and ``retention`` (seconds, empty for none)."""

_ENTRY_COLUMNS = "id, message_id, date, size"


class SQLiteStorage:
    """An SQLite file (standard library :mod:`sqlite3`): rollback journal, ``synchronous=FULL``,
    ``secure_delete=ON`` and foreign keys on every connection."""

    def __init__(self, connection: sqlite3.Connection, name: str) -> None:
        self._db = connection
        self.name = name

    @classmethod
    def create(cls, path: str | os.PathLike[str], meta: Mapping[str, bytes]) -> SQLiteStorage:
        """A new archive file; refuses to touch one that exists."""
        name = str(path)
        if Path(path).exists():
            raise ArchiveError(name, "already exists; use Archive.open() for an existing archive")
        storage = cls(cls._connect(path, "rwc"), name)
        try:
            with storage._transaction() as db:
                for statement in filter(str.strip, _SCHEMA.split(";")):
                    db.execute(statement)  # not executescript(), which commits first
                db.executemany("INSERT INTO meta (name, value) VALUES (?, ?)", meta.items())
        except BaseException:
            storage.close()
            Path(path).unlink(missing_ok=True)
            raise
        return storage

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> SQLiteStorage:
        name = str(path)
        if not Path(path).is_file():
            raise ArchiveError(name, "no such file; create the archive with Archive.create()")
        return cls(cls._connect(path, "rw"), name)

    @staticmethod
    def _connect(path: str | os.PathLike[str], mode: str) -> sqlite3.Connection:
        uri = f"{Path(path).resolve().as_uri()}?mode={mode}"
        try:
            db = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=30.0)
            db.execute("PRAGMA journal_mode=DELETE")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA secure_delete=ON")
            db.execute("PRAGMA foreign_keys=ON")
        except sqlite3.Error as exc:
            raise ArchiveError(str(path), f"cannot open the database ({exc})") from None
        return db

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db, self.name)

    def read_meta(self) -> Mapping[str, bytes]:
        try:
            rows = self._db.execute("SELECT name, value FROM meta").fetchall()
        except sqlite3.DatabaseError:
            raise ArchiveError(self.name, "not a securemail archive") from None
        return {name: bytes(value) for name, value in rows}

    def insert(self, row: StoredEntry) -> None:
        entry = row.entry
        tags = [("sender", t) for t in sorted(row.senders)]
        tags += [("recipient", t) for t in sorted(row.recipients)]
        with self._transaction() as db:
            db.execute(
                f"INSERT INTO entries ({_ENTRY_COLUMNS}) VALUES (?, ?, ?, ?)",  # noqa: S608
                (entry.id, entry.message_id, _micros(entry.date), entry.size),
            )
            db.execute(
                "INSERT INTO contents (entry_id, sealed) VALUES (?, ?)", (entry.id, row.sealed)
            )
            db.executemany(
                "INSERT INTO address_index (entry_id, role, tag) VALUES (?, ?, ?)",
                [(entry.id, role, tag) for role, tag in tags],
            )

    def find(
        self,
        *,
        sender: bytes | None,
        recipient: bytes | None,
        since: int | None,
        until: int | None,
    ) -> list[ArchiveEntry]:
        clauses: list[str] = []
        params: list[object] = []
        for role, tag in (("sender", sender), ("recipient", recipient)):
            if tag is not None:
                clauses.append(
                    "id IN (SELECT entry_id FROM address_index WHERE tag = ? AND role = ?)"
                )
                params += [tag, role]
        if since is not None:
            clauses.append("date >= ?")
            params.append(since)
        if until is not None:
            clauses.append("date < ?")
            params.append(until)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        return self._entries(
            f"SELECT {_ENTRY_COLUMNS} FROM entries {where} ORDER BY date, id",  # noqa: S608
            params,
        )

    def lookup(self, keys: Sequence[str]) -> list[ArchiveEntry]:
        marks = ", ".join("?" * len(keys))
        return self._entries(
            f"SELECT {_ENTRY_COLUMNS} FROM entries "  # noqa: S608
            f"WHERE id IN ({marks}) OR message_id IN ({marks}) ORDER BY date, id",
            [*keys, *keys],
        )

    def _entries(self, query: str, params: Sequence[object]) -> list[ArchiveEntry]:
        try:
            rows = self._db.execute(query, params).fetchall()
        except sqlite3.Error as exc:
            raise ArchiveError(self.name, f"cannot read the database ({exc})") from None
        return [
            ArchiveEntry(id=i, message_id=m, date=_from_micros(d), size=s) for i, m, d, s in rows
        ]

    def sealed(self, entry_id: str) -> bytes:
        try:
            row = self._db.execute(
                "SELECT sealed FROM contents WHERE entry_id = ?", (entry_id,)
            ).fetchone()
        except sqlite3.Error as exc:
            raise ArchiveError(self.name, f"cannot read the database ({exc})") from None
        if row is None:
            raise ArchiveEntryError(self.name, entry_id, 0)
        return bytes(row[0])

    def delete(self, entry_ids: Sequence[str]) -> int:
        with self._transaction() as db:
            return sum(
                db.execute("DELETE FROM entries WHERE id = ?", (i,)).rowcount for i in entry_ids
            )

    def delete_before(self, cutoff: int) -> int:
        with self._transaction() as db:
            return db.execute("DELETE FROM entries WHERE date < ?", (cutoff,)).rowcount

    def close(self) -> None:
        self._db.close()


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back on any exception; SQLite errors become
    :class:`ArchiveError`."""

    def __init__(self, db: sqlite3.Connection, name: str) -> None:
        self._db = db
        self._name = name

    def __enter__(self) -> sqlite3.Connection:
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise ArchiveError(self._name, f"cannot write to the database ({exc})") from None
        return self._db

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if kind is None:
            try:
                self._db.execute("COMMIT")
                return
            except sqlite3.Error as error:
                exc = error
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")
        if isinstance(exc, sqlite3.Error):
            raise ArchiveError(self._name, f"cannot write to the database ({exc})") from None


# --- the archive --------------------------------------------------------------------------------


class Archive:
    """Sent mail, encrypted to one archive certificate. Make one with :meth:`create`, open it
    with :meth:`open`; use it as a context manager (or call :meth:`close`). One object per
    thread; several processes may share the file."""

    def __init__(
        self,
        storage: ArchiveStorage,
        *,
        certificate: x509.Certificate,
        index_key: bytes | None,
        retention: dt.timedelta | None,
    ) -> None:
        self._storage = storage
        self._certificate = certificate
        self._index_key = index_key
        self._retention = retention

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        *,
        recipient: Recipient,
        retention: dt.timedelta | None,
        index_key: bytes | None = None,
    ) -> Archive:
        """A new, empty archive whose messages are encrypted to ``recipient``.

        ``retention`` is how long after its date an entry is kept by :meth:`purge_expired`
        (None: forever). ``index_key`` defaults to a fresh random key; read it back from
        :attr:`index_key` and hand it to the writers. The certificate must be usable for
        encryption now (:class:`~securemail.errors.RecipientError` otherwise).
        """
        if retention is not None and retention <= dt.timedelta(0):
            raise InputError("retention must be positive (or None to keep entries forever)")
        key = secrets.token_bytes(INDEX_KEY_SIZE) if index_key is None else index_key
        _check_key_size(key)
        certificate = recipient.certificate
        meta = {
            "format": FORMAT,
            "certificate": certificate.public_bytes(serialization.Encoding.DER),
            "wrapped_index_key": _seal(key, certificate),
            "index_key_check": _check_value(key),
            "retention": b"" if retention is None else str(retention.total_seconds()).encode(),
        }
        storage = SQLiteStorage.create(path, meta)
        return cls(storage, certificate=certificate, index_key=key, retention=retention)

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str] | ArchiveStorage,
        *,
        index_key: bytes | None = None,
        identity: Identity | None = None,
        recipient: Recipient | None = None,
    ) -> Archive:
        """An existing archive.

        Writers pass ``index_key``; holders of the archive key pass ``identity`` instead,
        which unwraps the index key stored in the archive (a wrong identity raises the
        :class:`~securemail.errors.DecryptionError` family). Without either, entries can be
        listed by date, read by id and deleted, but not stored or found by address. A key
        that is not this archive's raises :class:`~securemail.errors.IndexKeyError`.
        ``recipient`` pins the archive certificate: if the file names another one (someone
        swapped it to read future mail), :class:`~securemail.errors.ArchiveError`.
        """
        storage = SQLiteStorage.open(path) if isinstance(path, str | os.PathLike) else path
        try:
            return cls._from_storage(storage, index_key, identity, recipient)
        except BaseException:
            storage.close()
            raise

    @classmethod
    def _from_storage(
        cls,
        storage: ArchiveStorage,
        index_key: bytes | None,
        identity: Identity | None,
        recipient: Recipient | None,
    ) -> Archive:
        meta = storage.read_meta()
        if meta.get("format") != FORMAT:
            raise ArchiveError(storage.name, "not a securemail archive (or another format)")
        try:
            certificate = x509.load_der_x509_certificate(meta["certificate"])
            check = meta["index_key_check"]
            wrapped = meta["wrapped_index_key"]
            seconds = meta["retention"].decode("ascii")
            retention = dt.timedelta(seconds=float(seconds)) if seconds else None
        except (KeyError, ValueError):
            raise ArchiveError(storage.name, "the archive's metadata is damaged") from None
        if recipient is not None and _fingerprint(recipient.certificate) != _fingerprint(
            certificate
        ):
            raise ArchiveError(
                storage.name, "encrypts to another certificate than the one expected"
            )
        if identity is not None:
            unwrapped = _unseal(wrapped, identity)
            if index_key is not None and not hmac.compare_digest(unwrapped, index_key):
                raise IndexKeyError(storage.name, "the index key given is not this archive's")
            index_key = unwrapped
        if index_key is not None:
            _check_key_size(index_key)
            if not hmac.compare_digest(_check_value(index_key), check):
                raise IndexKeyError(storage.name, "the index key given is not this archive's")
        return cls(storage, certificate=certificate, index_key=index_key, retention=retention)

    # --- properties ---

    @property
    def certificate(self) -> x509.Certificate:
        """The archive certificate every message is encrypted to."""
        return self._certificate

    @property
    def retention(self) -> dt.timedelta | None:
        return self._retention

    @property
    def index_key(self) -> bytes:
        """The key of the address index. A secret: it lets its holder test address guesses."""
        return self._need_index_key("reading the index key")

    def _need_index_key(self, purpose: str) -> bytes:
        if self._index_key is None:
            raise IndexKeyError(
                self._storage.name,
                f"{purpose} needs the index key: open the archive with index_key= "
                "or with identity= (the archive key)",
            )
        return self._index_key

    # --- writing ---

    def store(
        self,
        message: bytes,
        *,
        envelope_recipients: Iterable[str] = (),
        sent_at: dt.datetime | None = None,
    ) -> ArchiveEntry:
        """Archive ``message`` (the bytes as sent). ``envelope_recipients`` adds addresses the
        headers do not show (Bcc) to the index; ``sent_at`` overrides the Date field.

        Fail-closed: nothing is stored unless the message was encrypted and its row and index
        entries were written together.
        """
        data = bytes(message)
        index_key = self._need_index_key("storing a message")
        fields = wire.parse_headers(_header_block(data))
        when = _utc(sent_at, "sent_at") if sent_at is not None else _date_field(fields)
        senders = frozenset(_tag(index_key, a) for a in _addresses(fields, ("From",)))
        extra = list(envelope_recipients)
        for position, address in enumerate(extra, 1):
            try:
                normalize_address(address)
            except InputError:
                raise InputError(
                    f"envelope recipient #{position} is not an email address"
                ) from None
        recipients = frozenset(
            _tag(index_key, a) for a in [*_addresses(fields, ("To", "Cc", "Bcc")), *extra]
        )
        entry = ArchiveEntry(
            id=secrets.token_hex(16), message_id=_message_id(fields), date=when, size=len(data)
        )
        sealed = _seal(data, self._certificate)
        self._storage.insert(StoredEntry(entry, sealed, senders, recipients))
        _log.info("archived entry %s (%d bytes)", entry.id, entry.size)
        return entry

    def delete(self, message_id: str) -> int:
        """Delete the entry with this archive id, or every entry with this Message-ID; returns
        how many. :class:`~securemail.errors.ArchiveEntryError` if none matches."""
        entries = self._lookup(message_id)
        count = self._storage.delete([e.id for e in entries])
        _log.info("deleted %d archive entries", count)
        return count

    def purge_expired(self, now: dt.datetime | None = None) -> int:
        """Delete every entry older than the retention period (dated before ``now -
        retention``); returns how many. Does nothing when retention is None."""
        if self._retention is None:
            return 0
        moment = _utc(now, "now") if now is not None else dt.datetime.now(dt.UTC)
        count = self._storage.delete_before(_micros(moment - self._retention))
        _log.info("purged %d expired archive entries", count)
        return count

    # --- reading ---

    def find(
        self,
        *,
        to: str | None = None,
        sender: str | None = None,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
    ) -> list[ArchiveEntry]:
        """Entries sent to ``to`` (To, Cc, Bcc or envelope) and/or from ``sender``, dated
        ``since <= date < until``, oldest first; every entry when nothing is given. Matching
        an address needs the index key; dates do not."""
        tags: list[bytes | None] = []
        for address in (sender, to):
            if address is None:
                tags.append(None)
            else:
                tags.append(_tag(self._need_index_key("finding by address"), address))
        return self._storage.find(
            sender=tags[0],
            recipient=tags[1],
            since=_micros(_utc(since, "since")) if since is not None else None,
            until=_micros(_utc(until, "until")) if until is not None else None,
        )

    def get(self, message_id: str, identity: Identity) -> bytes:
        """The message as it was sent, byte for byte, decrypted with the archive key.

        ``message_id`` is an archive id or a Message-ID (with or without angle brackets). A key
        that is not the archive's raises :class:`~securemail.errors.NotARecipientError`; a
        damaged entry, or one whose content is not the message its row describes (rows
        swapped in the file), :class:`~securemail.errors.DecryptionError` or
        :class:`~securemail.errors.IntegrityError`.
        """
        entries = self._lookup(message_id)
        if len(entries) > 1:
            raise ArchiveEntryError(self._storage.name, message_id, len(entries))
        entry = entries[0]
        data = _unseal(self._storage.sealed(entry.id), identity)
        if len(data) != entry.size or _message_id(_parsed_or_none(data)) != entry.message_id:
            raise IntegrityError("the archived content does not match its entry; not returned")
        return data

    def _lookup(self, key: str) -> list[ArchiveEntry]:
        wanted = key.strip()
        candidates = [wanted]
        if not _ARCHIVE_ID.fullmatch(wanted) and not wanted.startswith("<"):
            candidates.append(f"<{wanted}>")
        entries = self._storage.lookup(candidates)
        if not entries:
            raise ArchiveEntryError(self._storage.name, key, 0)
        return entries

    # --- lifetime ---

    def close(self) -> None:
        self._storage.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Archive({self._storage.name!r})"


# --- helpers ------------------------------------------------------------------------------------


def _check_key_size(key: bytes) -> None:
    if not isinstance(key, bytes) or len(key) != INDEX_KEY_SIZE:
        raise InputError(f"an index key is {INDEX_KEY_SIZE} bytes")


def _fingerprint(certificate: x509.Certificate) -> bytes:
    return certificate.fingerprint(hashes.SHA256())


def _seal(data: bytes, certificate: x509.Certificate) -> bytes:
    """AuthEnvelopedData for the archive certificate, checked like any recipient (validity,
    key usage, key type): a RecipientError here means nothing gets stored."""
    cipher, recipients = plan_recipients(
        [Recipient(certificate)], signer=None, policy=_SEAL_POLICY, trust=None, certificates=()
    )
    return enveloped.encrypt_envelope(data, recipients, cipher)


def _unseal(sealed: bytes, identity: Identity) -> bytes:
    opened = enveloped.decrypt_envelope(
        sealed, identity.private_key, identity.certificate, require_authenticated=True
    )
    return opened.content


def _header_block(data: bytes) -> bytes:
    """The header section alone (the body is not needed to index a message)."""
    if not data.strip():
        raise MalformedMessageError("the message is empty")
    ends = [i for i in (data.find(b"\r\n\r\n"), data.find(b"\n\n")) if i >= 0]
    return data[: min(ends)] if ends else data


def _parsed_or_none(data: bytes) -> EmailMessage | None:
    try:
        return wire.parse_headers(_header_block(data))
    except MalformedMessageError:
        return None


def _message_id(fields: EmailMessage | None) -> str | None:
    value = fields.get("Message-ID") if fields is not None else None
    text = str(value).strip() if value is not None else ""
    return text or None


def _date_field(fields: EmailMessage) -> dt.datetime:
    header = fields.get("Date")
    moment = getattr(header, "datetime", None)
    if not isinstance(moment, dt.datetime):
        return dt.datetime.now(dt.UTC)
    if moment.tzinfo is None:  # "-0000": the time is UTC, the zone unknown (RFC 5322 3.3)
        return moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC)


def _addresses(fields: EmailMessage, names: Sequence[str]) -> list[str]:
    """Addr-specs of the named address fields (every occurrence); unparsable ones are
    skipped, since the message was already sent as it is."""
    found = []
    for name in names:
        for header in fields.get_all(name) or ():
            for address in getattr(header, "addresses", ()):
                spec = address.addr_spec
                if "@" in spec:
                    found.append(spec)
    return found
