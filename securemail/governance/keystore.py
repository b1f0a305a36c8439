"""Where the key directory keeps its material: a small :class:`KeyStore` protocol and the
embedded SQLite store behind it.

The store is deliberately dumb: it keeps records and finds them by address, and every
judgement (validity, revocation, usage, trust) is made by
:class:`~securemail.governance.directory.Directory` at lookup time. So another storage (a
shared database, an LDAP mirror) can stand in by implementing five methods, and a record
never goes stale because it was judged at import.

Only public material is ever stored: certificates, OpenPGP public keys and CRLs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import enum
import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol

from ..errors import KeyDirectoryError

__all__ = ["SCHEMA_VERSION", "KeyKind", "KeyStore", "SQLiteKeyStore", "StoredKey", "lookup_key"]

SCHEMA_VERSION = 1


class KeyKind(enum.StrEnum):
    SMIME = "smime"
    """An end-entity X.509 certificate (DER): a possible S/MIME recipient."""
    PGP = "pgp"
    """An OpenPGP certificate (ASCII-armored public key): a possible PGP/MIME recipient."""
    ISSUER = "issuer"
    """A CA certificate (DER): builds chains and checks CRL signatures; never a recipient."""
    CRL = "crl"
    """A certificate revocation list (DER)."""


@dataclasses.dataclass(frozen=True)
class StoredKey:
    """One stored record. ``fingerprint`` is the SHA-256 of the DER (certificates, CRLs) or
    the OpenPGP fingerprint; with ``kind`` it identifies the record."""

    kind: KeyKind
    fingerprint: str
    data: bytes
    addresses: tuple[str, ...] = ()
    """Normalized (local part as written, domain lowercased)."""
    source: str = ""
    """Where it came from: a file path, ``"message"`` (harvested), a WKD URL."""
    added: dt.datetime = dataclasses.field(default_factory=lambda: dt.datetime.now(dt.UTC))
    capabilities: tuple[str, ...] | None = None
    """SMIMECapabilities the owner announced (algorithm OIDs), when harvested."""
    announced: dt.datetime | None = None
    """When that announcement was made (the message's signing time)."""
    details: str = ""
    """What the directory derived from ``data`` when storing it (JSON; OpenPGP key listing),
    so that a lookup need not run gpg."""


def lookup_key(address: str) -> str:
    """The index key an address is found under: casefolded whole, so that near misses (an
    address differing only in the case of its local part) are found and can be reported."""
    return address.strip().casefold()


class KeyStore(Protocol):
    """Storage for the key directory."""

    def put(self, key: StoredKey) -> None:
        """Insert ``key``, or replace the record with the same kind and fingerprint."""

    def get(self, kind: KeyKind, fingerprint: str) -> StoredKey | None: ...

    def by_address(self, address: str) -> Sequence[StoredKey]:
        """Records with an address whose :func:`lookup_key` equals ``address``'s."""

    def iterate(self, kind: KeyKind | None = None) -> Iterator[StoredKey]:
        """Every record (of ``kind``), oldest first."""

    def delete(self, kind: KeyKind, fingerprint: str) -> bool:
        """Remove a record; False when there was none."""


_SCHEMA = """
CREATE TABLE keys (
    kind TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    data BLOB NOT NULL,
    source TEXT NOT NULL,
    added TEXT NOT NULL,
    capabilities TEXT,
    announced TEXT,
    details TEXT NOT NULL,
    PRIMARY KEY (kind, fingerprint)
);
CREATE TABLE addresses (
    lookup TEXT NOT NULL,
    address TEXT NOT NULL,
    kind TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    FOREIGN KEY (kind, fingerprint) REFERENCES keys (kind, fingerprint) ON DELETE CASCADE
);
CREATE INDEX addresses_by_lookup ON addresses (lookup);
"""


class SQLiteKeyStore:
    """The default store: one SQLite file (or ``":memory:"``).

    The schema version is kept in SQLite's ``user_version``; a file written by another
    version, or that is not a key directory, is refused rather than changed.
    """

    def __init__(self, path: str | Path = ":memory:") -> None:
        self._name = str(path)
        self._lock = threading.Lock()
        try:
            db = sqlite3.connect(self._name, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise KeyDirectoryError(self._name, f"cannot open: {exc}") from None
        self._db = db
        try:
            db.execute("PRAGMA foreign_keys = ON")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                if db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                    raise KeyDirectoryError(self._name, "the database is not a key directory")
                db.executescript(
                    f"BEGIN; {_SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
                )
            elif version != SCHEMA_VERSION:
                raise KeyDirectoryError(
                    self._name,
                    f"schema version {version} is not {SCHEMA_VERSION} (written by another "
                    "securemail version)",
                )
        except sqlite3.Error as exc:
            db.close()
            raise KeyDirectoryError(self._name, f"not a usable database ({exc})") from None
        except KeyDirectoryError:
            db.close()
            raise

    @property
    def name(self) -> str:
        return self._name

    def close(self) -> None:
        self._db.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise KeyDirectoryError(self._name, f"database error: {exc}") from None

    def _query(self, sql: str, parameters: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        with self._lock:
            try:
                return self._db.execute(sql, parameters).fetchall()
            except sqlite3.Error as exc:
                raise KeyDirectoryError(self._name, f"database error: {exc}") from None

    def put(self, key: StoredKey) -> None:
        with self._transaction() as db:
            db.execute(
                "DELETE FROM keys WHERE kind = ? AND fingerprint = ?", (key.kind, key.fingerprint)
            )
            db.execute(
                "INSERT INTO keys (kind, fingerprint, data, source, added, capabilities, "
                "announced, details) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    str(key.kind),
                    key.fingerprint,
                    key.data,
                    key.source,
                    key.added.isoformat(),
                    None if key.capabilities is None else json.dumps(list(key.capabilities)),
                    None if key.announced is None else key.announced.isoformat(),
                    key.details,
                ),
            )
            db.executemany(
                "INSERT INTO addresses (lookup, address, kind, fingerprint) VALUES (?, ?, ?, ?)",
                [(lookup_key(a), a, str(key.kind), key.fingerprint) for a in key.addresses],
            )

    def get(self, kind: KeyKind, fingerprint: str) -> StoredKey | None:
        rows = self._query(
            "SELECT kind, fingerprint, data, source, added, capabilities, announced, details "
            "FROM keys "
            "WHERE kind = ? AND fingerprint = ?",
            (str(kind), fingerprint),
        )
        return self._load(rows[0]) if rows else None

    def by_address(self, address: str) -> Sequence[StoredKey]:
        rows = self._query(
            "SELECT k.kind, k.fingerprint, k.data, k.source, k.added, k.capabilities, k.announced, "
            "k.details FROM keys k "
            "WHERE EXISTS (SELECT 1 FROM addresses a WHERE a.lookup = ? AND a.kind = k.kind "
            "AND a.fingerprint = k.fingerprint) ORDER BY k.added, k.fingerprint",
            (lookup_key(address),),
        )
        return [self._load(row) for row in rows]

    def iterate(self, kind: KeyKind | None = None) -> Iterator[StoredKey]:
        if kind is None:
            rows = self._query(
                "SELECT kind, fingerprint, data, source, added, capabilities, announced, details "
                "FROM keys "
                "ORDER BY added, fingerprint"
            )
        else:
            rows = self._query(
                "SELECT kind, fingerprint, data, source, added, capabilities, announced, details "
                "FROM keys "
                "WHERE kind = ? ORDER BY added, fingerprint",
                (str(kind),),
            )
        for row in rows:
            yield self._load(row)

    def delete(self, kind: KeyKind, fingerprint: str) -> bool:
        with self._transaction() as db:
            cursor = db.execute(
                "DELETE FROM keys WHERE kind = ? AND fingerprint = ?", (str(kind), fingerprint)
            )
            return cursor.rowcount > 0

    def _load(self, row: tuple[object, ...]) -> StoredKey:
        kind, fingerprint, data, source, added, capabilities, announced, details = row
        addresses = self._query(
            "SELECT address FROM addresses WHERE kind = ? AND fingerprint = ? ORDER BY rowid",
            (kind, fingerprint),
        )
        return StoredKey(
            kind=KeyKind(str(kind)),
            fingerprint=str(fingerprint),
            data=bytes(data),  # type: ignore[call-overload]
            addresses=tuple(str(a[0]) for a in addresses),
            source=str(source),
            added=dt.datetime.fromisoformat(str(added)),
            capabilities=None if capabilities is None else tuple(json.loads(str(capabilities))),
            announced=None if announced is None else dt.datetime.fromisoformat(str(announced)),
            details=str(details),
        )
