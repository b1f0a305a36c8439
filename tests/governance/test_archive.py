"""The archive of sent mail: what goes in comes back byte for byte, only to the archive key;
the database file shows no address, subject or body, and nothing of a deleted entry; OpenSSL
opens what is stored; the ``securemail archive`` commands work as a user runs them."""

from __future__ import annotations

import datetime as dt
import logging
import shlex
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from pki import Issued, issue

from securemail import MessageBuilder, Recipient, wire
from securemail.errors import (
    ArchiveEntryError,
    ArchiveError,
    DecryptionError,
    IndexKeyError,
    InputError,
    IntegrityError,
    NotARecipientError,
    RecipientError,
)
from securemail.governance.archive import Archive, ArchiveEntry, normalize_address
from securemail.keys import Identity

SUBJECT = "Project Nightingale: acquisition terms"
BODY = "The offer is 41 million, conditional on the audit.\n"
ADDRESSES = ("alice@example.com", "bob@example.org", "carol@example.net", "dave@example.net")
OPENSSL_DECRYPT = "cms -decrypt -binary -inform DER -in entry.der -inkey key.pem -recip cert.pem"
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


def _identity(issued: Issued) -> Identity:
    return Identity.create(issued.key, issued.cert)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def escrow() -> Issued:
    return issue(common_name="Archive", email="archive@escrow.test")


@pytest.fixture(scope="module")
def stranger() -> Issued:
    return issue(common_name="Mallory", email="mallory@escrow.test")


def _message(
    *,
    to: str = "Bob Builder <Bob@Example.ORG>",
    subject: str = SUBJECT,
    body: str = BODY,
    date: dt.datetime = NOW,
) -> bytes:
    message = (
        MessageBuilder()
        .from_addr("Alice Liddell <alice@example.com>")
        .to(to)
        .cc("carol@example.net")
        .subject(subject)
        .text(body)
        .build()
    )
    message.replace_header("Date", date.strftime("%a, %d %b %Y %H:%M:%S +0000"))
    return wire.to_bytes(message)


def _create(path: Path, escrow: Issued, retention: dt.timedelta | None = None) -> Archive:
    return Archive.create(path, recipient=Recipient(escrow.cert), retention=retention)


def _sealed(path: Path, entry_id: str) -> bytes:
    with sqlite3.connect(path) as db:
        row = db.execute("SELECT sealed FROM contents WHERE entry_id = ?", (entry_id,)).fetchone()
    return bytes(row[0])


def _tags(path: Path, entry_id: str) -> list[bytes]:
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT tag FROM address_index WHERE entry_id = ?", (entry_id,))
        return [bytes(tag) for (tag,) in rows]


def _assert_gone(path: Path, sealed: bytes, message_id: str, tags: list[bytes]) -> None:
    """No 32-byte window of the ciphertext, nor the Message-ID or a tag of an address no
    other entry has, is in the file."""
    data = path.read_bytes()
    assert not Path(f"{path}-journal").exists()
    assert message_id.encode() not in data
    assert len(tags) == 1
    for tag in tags:
        assert tag not in data
    for start in range(0, len(sealed) - 32, 256):
        assert sealed[start : start + 32] not in data, start


# --- storing, finding, reading --------------------------------------------------------------------


@pytest.mark.parametrize("key_type", ["rsa2048", "p256"])
def test_store_find_get_roundtrip(tmp_path: Path, key_type: str) -> None:
    escrow = issue(common_name="Archive", email="archive@escrow.test", key_type=key_type)  # type: ignore[arg-type]
    data = _message()
    with _create(tmp_path / "a.db", escrow) as archive:
        entry = archive.store(data, envelope_recipients=["Dave <DAVE@example.net>"])
        assert isinstance(entry, ArchiveEntry)
        assert entry.size == len(data)
        assert entry.date == NOW
        assert entry.message_id is not None and entry.message_id.startswith("<")
        assert entry.message_id.encode() in data

        # The index matches addresses however they are written (case, display name).
        assert archive.find(to="bob@example.org") == [entry]
        assert archive.find(to="Bob@EXAMPLE.org") == [entry]
        assert archive.find(to="CAROL@example.net") == [entry]  # Cc
        assert archive.find(to="dave@example.net") == [entry]  # Bcc, from the envelope
        assert archive.find(sender="Alice <ALICE@Example.com>") == [entry]
        assert archive.find(to="bob@example.org", sender="alice@example.com") == [entry]
        assert archive.find(to="alice@example.com") == []  # the sender is not a recipient
        assert archive.find(sender="bob@example.org") == []
        assert archive.find(to="eve@example.org") == []

        me = _identity(escrow)
        assert archive.get(entry.id, me) == data
        assert archive.get(entry.message_id, me) == data
        assert archive.get(entry.message_id.strip("<>"), me) == data


def test_find_by_date(tmp_path: Path, escrow: Issued) -> None:
    with _create(tmp_path / "a.db", escrow) as archive:
        old = archive.store(_message(), sent_at=NOW - dt.timedelta(days=3))
        new = archive.store(_message(date=NOW - dt.timedelta(days=1)))
        assert new.date == NOW - dt.timedelta(days=1)  # from the Date field
        assert archive.find() == [old, new]
        assert archive.find(since=NOW - dt.timedelta(days=2)) == [new]
        assert archive.find(until=NOW - dt.timedelta(days=2)) == [old]
        assert archive.find(to="bob@example.org", until=NOW) == [old, new]
        with pytest.raises(InputError):
            archive.find(since=dt.datetime(2025, 1, 1))  # naive: which zone?


def test_database_file_holds_no_plaintext(tmp_path: Path, escrow: Issued) -> None:
    path = tmp_path / "a.db"
    data = _message()
    with _create(path, escrow) as archive:
        archive.store(data, envelope_recipients=["dave@example.net"])
    raw = path.read_bytes()
    secrets = [
        *ADDRESSES,
        "Bob@Example.ORG",
        "Alice Liddell",
        "Bob Builder",
        "Nightingale",
        "41 million",
        "example.org",  # the recipients' domains: only the sender's is in the Message-ID
        "example.net",
    ]
    for secret in secrets:
        assert secret.encode() not in raw, secret
        assert secret.lower().encode() not in raw.lower(), secret
        assert secret.encode("utf-16-le") not in raw, secret
    assert data[:64] not in raw


def test_deleted_entry_leaves_no_bytes(tmp_path: Path, escrow: Issued) -> None:
    path = tmp_path / "a.db"
    archive = _create(path, escrow)
    doomed = archive.store(_message(body=BODY * 200))  # ciphertext in overflow pages too
    kept_data = _message(to="erin@example.org")
    kept = archive.store(kept_data)
    assert doomed.message_id is not None
    sealed = _sealed(path, doomed.id)
    tags = [t for t in _tags(path, doomed.id) if t not in _tags(path, kept.id)]  # bob's
    assert sealed[100:132] in path.read_bytes()  # present before: the check below can fail

    assert archive.delete(doomed.message_id) == 1
    _assert_gone(path, sealed, doomed.message_id, tags)
    assert archive.find() == [kept]
    assert archive.find(to="bob@example.org") == []
    with pytest.raises(ArchiveEntryError) as raised:
        archive.get(doomed.id, _identity(escrow))
    assert raised.value.count == 0
    with pytest.raises(ArchiveEntryError):
        archive.delete(doomed.id)  # a second delete names nothing
    assert archive.get(kept.id, _identity(escrow)) == kept_data
    archive.close()


def test_delete_by_archive_id_and_duplicate_message_ids(tmp_path: Path, escrow: Issued) -> None:
    data = _message()
    with _create(tmp_path / "a.db", escrow) as archive:
        first = archive.store(data)
        second = archive.store(data)  # sent twice (a retry): archived twice
        assert first.message_id == second.message_id and first.id != second.id
        assert first.message_id is not None
        with pytest.raises(ArchiveEntryError) as raised:
            archive.get(first.message_id, _identity(escrow))
        assert raised.value.count == 2 and isinstance(raised.value, LookupError)
        assert archive.get(second.id, _identity(escrow)) == data
        assert archive.delete(first.id) == 1
        assert archive.get(first.message_id, _identity(escrow)) == data  # now unambiguous
        third = archive.store(data)
        assert archive.delete(first.message_id) == 2
        assert archive.find() == []
        assert third.id != second.id


def test_retention_purge(tmp_path: Path, escrow: Issued) -> None:
    path = tmp_path / "a.db"
    with _create(path, escrow, retention=dt.timedelta(days=30)) as archive:
        expired = archive.store(_message(to="zed@example.org"), sent_at=NOW - dt.timedelta(31))
        recent = archive.store(_message(), sent_at=NOW - dt.timedelta(days=10))
        assert expired.message_id is not None
        sealed = _sealed(path, expired.id)
        tags = [t for t in _tags(path, expired.id) if t not in _tags(path, recent.id)]  # zed's
        assert archive.purge_expired() == 1
        _assert_gone(path, sealed, expired.message_id, tags)
        assert archive.find() == [recent]
        assert archive.find(to="bob@example.org") == [recent]
        assert archive.purge_expired() == 0
        assert archive.purge_expired(now=NOW + dt.timedelta(days=21)) == 1
        assert archive.find() == []
    with Archive.open(path) as reopened:
        assert reopened.retention == dt.timedelta(days=30)


def test_no_retention_keeps_everything(tmp_path: Path, escrow: Issued) -> None:
    with _create(tmp_path / "a.db", escrow) as archive:
        entry = archive.store(_message(), sent_at=NOW - dt.timedelta(days=36500))
        assert archive.purge_expired(now=NOW + dt.timedelta(days=36500)) == 0
        assert archive.find() == [entry]
    with pytest.raises(InputError):
        _create(tmp_path / "b.db", escrow, retention=dt.timedelta(0))


# --- keys -----------------------------------------------------------------------------------------


def test_another_key_cannot_decrypt(tmp_path: Path, escrow: Issued, stranger: Issued) -> None:
    path = tmp_path / "a.db"
    with _create(path, escrow) as archive:
        entry = archive.store(_message())
        with pytest.raises(NotARecipientError):
            archive.get(entry.id, _identity(stranger))
    with pytest.raises(DecryptionError):
        Archive.open(path, identity=_identity(stranger))  # nor unwrap the index key


def test_stranger_with_same_certificate_name_cannot_decrypt(tmp_path: Path, escrow: Issued) -> None:
    """A key that claims the archive certificate but is not its key: the one DecryptionError."""
    impostor = issue(common_name="Archive", email="archive@escrow.test")
    forged = Identity(private_key=impostor.key, certificate=escrow.cert)  # type: ignore[arg-type]
    with _create(tmp_path / "a.db", escrow) as archive:
        entry = archive.store(_message())
        with pytest.raises(DecryptionError) as raised:
            archive.get(entry.id, forged)
        assert BODY not in str(raised.value)


def test_writers_need_only_the_index_key(tmp_path: Path, escrow: Issued) -> None:
    path = tmp_path / "a.db"
    with _create(path, escrow) as archive:
        index_key = archive.index_key
        assert len(index_key) == 32
    assert index_key not in path.read_bytes()  # stored only encrypted

    data = _message()
    with Archive.open(path, index_key=index_key) as writer:  # no private key
        entry = writer.store(data)
        assert writer.find(to="bob@example.org") == [entry]
        with pytest.raises(NotARecipientError):
            writer.get(entry.id, _identity(issue(common_name="Writer")))

    with Archive.open(path, identity=_identity(escrow)) as auditor:  # unwraps the index key
        assert auditor.index_key == index_key
        assert auditor.find(to="BOB@example.org") == [entry]

    with Archive.open(path) as keyless:
        assert keyless.find() == [entry]  # dates, sizes and ids need no key
        assert keyless.get(entry.id, _identity(escrow)) == data
        with pytest.raises(IndexKeyError):
            keyless.find(to="bob@example.org")
        with pytest.raises(IndexKeyError):
            keyless.store(_message())
        assert keyless.find() == [entry]

    with pytest.raises(IndexKeyError):
        Archive.open(path, index_key=bytes(32))
    with pytest.raises(IndexKeyError):
        Archive.open(path, index_key=bytes(32), identity=_identity(escrow))
    with pytest.raises(InputError):
        Archive.open(path, index_key=b"short")


def test_index_key_given_by_the_caller(tmp_path: Path, escrow: Issued) -> None:
    key = bytes(range(32))
    with Archive.create(
        tmp_path / "a.db", recipient=Recipient(escrow.cert), retention=None, index_key=key
    ) as archive:
        entry = archive.store(_message())
    with Archive.open(tmp_path / "a.db", identity=_identity(escrow)) as archive:
        assert archive.index_key == key
        assert archive.find(to="bob@example.org") == [entry]


# --- failing closed -------------------------------------------------------------------------------


def test_unusable_archive_certificate_creates_nothing(tmp_path: Path) -> None:
    signing_only = issue(common_name="Signer", key_type="ed25519", purpose="sign")
    expired = issue(
        common_name="Old",
        not_before=NOW - dt.timedelta(days=400),
        not_after=NOW - dt.timedelta(days=1),
    )
    for n, issued in enumerate([signing_only, expired]):
        path = tmp_path / f"{n}.db"
        with pytest.raises(RecipientError):
            _create(path, issued)
        assert not path.exists()


def test_store_fails_closed_when_the_certificate_cannot_be_used(
    tmp_path: Path, escrow: Issued
) -> None:
    path = tmp_path / "a.db"
    with _create(path, escrow) as archive:
        index_key = archive.index_key
        archive.store(_message())
    # The certificate in the file expires (here: is replaced by an expired one).
    expired = issue(
        common_name="Archive",
        not_before=NOW - dt.timedelta(days=400),
        not_after=NOW - dt.timedelta(days=1),
    )
    with sqlite3.connect(path) as db:
        db.execute(
            "UPDATE meta SET value = ? WHERE name = 'certificate'",
            (expired.cert.public_bytes(serialization.Encoding.DER),),
        )
    with Archive.open(path, index_key=index_key) as archive:
        with pytest.raises(RecipientError):
            archive.store(_message(subject="second"))
        assert len(archive.find()) == 1
    # A writer that pins the certificate it expects notices the swap before anything else.
    with pytest.raises(ArchiveError):
        Archive.open(path, index_key=index_key, recipient=Recipient(escrow.cert))


def test_swapped_ciphertext_is_refused(tmp_path: Path, escrow: Issued) -> None:
    path = tmp_path / "a.db"
    with _create(path, escrow) as archive:
        one = archive.store(_message(subject="one"))
        two = archive.store(_message(subject="two, a little longer"))
    with sqlite3.connect(path) as db:
        db.execute(
            "UPDATE contents SET sealed = ? WHERE entry_id = ?", (_sealed(path, two.id), one.id)
        )
    with Archive.open(path) as archive, pytest.raises(IntegrityError):
        archive.get(one.id, _identity(escrow))


def test_refuses_what_is_not_an_archive(tmp_path: Path, escrow: Issued) -> None:
    with pytest.raises(ArchiveError):
        Archive.open(tmp_path / "missing.db")
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE t (x)")
    with pytest.raises(ArchiveError):
        Archive.open(other)
    _create(tmp_path / "a.db", escrow).close()
    with pytest.raises(ArchiveError):
        _create(tmp_path / "a.db", escrow)  # never overwritten


def test_bad_input(tmp_path: Path, escrow: Issued) -> None:
    with _create(tmp_path / "a.db", escrow) as archive:
        with pytest.raises(InputError):
            archive.store(b"  \r\n")
        with pytest.raises(InputError) as raised:
            archive.store(_message(), envelope_recipients=["not an address"])
        assert "not an address" not in str(raised.value)
        with pytest.raises(InputError):
            archive.store(_message(), sent_at=dt.datetime(2025, 1, 1))
        assert archive.find() == []


def test_normalize_address() -> None:
    assert normalize_address("Bob <Bob@Example.ORG>") == "bob@example.org"
    assert normalize_address(" BOB@example.org ") == "bob@example.org"
    assert normalize_address("x@Bücher.example") == "x@xn--bcher-kva.example"
    for bad in ("", "bob", "@example.org", "bob@"):
        with pytest.raises(InputError):
            normalize_address(bad)


def test_logs_hold_no_content(
    tmp_path: Path, escrow: Issued, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="securemail")
    with _create(tmp_path / "a.db", escrow, retention=dt.timedelta(days=1)) as archive:
        entry = archive.store(_message(), envelope_recipients=["dave@example.net"])
        archive.get(entry.id, _identity(escrow))
        archive.store(_message(), sent_at=NOW - dt.timedelta(days=2))
        archive.purge_expired()
        assert entry.message_id is not None
        archive.delete(entry.message_id)
    assert entry.id in caplog.text  # it does log
    for secret in (*ADDRESSES, "Nightingale", "41 million", entry.message_id):
        assert secret not in caplog.text


# --- interoperability -----------------------------------------------------------------------------


@pytest.mark.parametrize("key_type", ["rsa2048", "p256"])
def test_openssl_decrypts_an_archived_message(
    tmp_path: Path, openssl_bin: str, key_type: str
) -> None:
    escrow = issue(common_name="Archive", email="archive@escrow.test", key_type=key_type)  # type: ignore[arg-type]
    data = _message()
    with _create(tmp_path / "a.db", escrow) as archive:
        entry = archive.store(data)
    (tmp_path / "entry.der").write_bytes(_sealed(tmp_path / "a.db", entry.id))
    (tmp_path / "key.pem").write_bytes(escrow.key_pem)
    (tmp_path / "cert.pem").write_bytes(escrow.cert_pem)
    result = subprocess.run(
        [openssl_bin, *shlex.split(OPENSSL_DECRYPT)],
        cwd=tmp_path,
        capture_output=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == data


# --- the command line -----------------------------------------------------------------------------


def _run(cwd: Path, command: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "securemail", *shlex.split(command)],
        cwd=cwd,
        capture_output=True,
        timeout=60,
        check=False,
    )


def _one_line_error(result: subprocess.CompletedProcess[bytes], code: int) -> str:
    assert result.returncode == code, result.stderr.decode()
    assert result.stdout == b""
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1 and "Traceback" not in lines[0], lines
    return lines[0]


def test_cli_list_and_get(tmp_path: Path, escrow: Issued, stranger: Issued) -> None:
    (tmp_path / "archive.pem").write_bytes(escrow.key_pem + escrow.cert_pem)
    (tmp_path / "stranger.pem").write_bytes(stranger.key_pem + stranger.cert_pem)
    data = _message()
    with _create(tmp_path / "sent.db", escrow) as archive:
        entry = archive.store(data)
        other_data = _message(to="erin@example.org")
        other = archive.store(other_data, sent_at=NOW - dt.timedelta(days=5))
        (tmp_path / "index.key").write_text(archive.index_key.hex() + "\n")
    assert entry.message_id is not None

    listed = _run(tmp_path, "archive list --archive sent.db")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.decode().splitlines()
    assert [line.split("\t")[0] for line in lines] == [other.id, entry.id]
    assert lines[1].split("\t")[1:] == [
        NOW.isoformat(timespec="seconds"),
        str(len(data)),
        entry.message_id,
    ]

    for keys in ("--key archive.pem", "--index-key-file index.key"):
        found = _run(tmp_path, f"archive list --archive sent.db --to BOB@example.org {keys}")
        assert found.returncode == 0, found.stderr
        assert [line.split("\t")[0] for line in found.stdout.decode().splitlines()] == [entry.id]
    since = (NOW - dt.timedelta(days=1)).date().isoformat()
    found = _run(
        tmp_path,
        f"archive list --archive sent.db --from ALICE@example.com --since {since} "
        "--key archive.pem",
    )
    assert found.stdout.decode().split("\t")[0] == entry.id

    got = _run(tmp_path, f"archive get '{entry.message_id}' --archive sent.db --key archive.pem")
    assert got.returncode == 0, got.stderr
    assert got.stdout == data
    out = _run(tmp_path, f"archive get {other.id} --archive sent.db --key archive.pem -o out.eml")
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "out.eml").read_bytes() == other_data

    line = _one_line_error(_run(tmp_path, "archive list --archive sent.db --to bob@example.org"), 2)
    assert "--index-key-file" in line
    line = _one_line_error(
        _run(tmp_path, f"archive get {entry.id} --archive sent.db --key stranger.pem"), 1
    )
    assert "not encrypted to" in line
    line = _one_line_error(
        _run(tmp_path, "archive get '<nope@example.com>' --archive sent.db --key archive.pem"), 1
    )
    assert "no archived message" in line
    (tmp_path / "wrong.key").write_text("00" * 32)
    line = _one_line_error(
        _run(
            tmp_path, "archive list --archive sent.db --to x@example.org --index-key-file wrong.key"
        ),
        1,
    )
    assert "index key" in line
    assert not (tmp_path / "sent.db-journal").exists()
