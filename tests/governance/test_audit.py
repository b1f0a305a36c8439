"""The audit log: chain format, what it refuses to hold, tamper detection, torn tails,
concurrent writers, and ``securemail audit verify``.

Tampering is done the way an attacker would: on the file's bytes, re-serializing edited
lines canonically, and forging lines with correctly computed ``prev`` where that is possible.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import multiprocessing
import smtplib
import stat
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import securemail
from securemail.cli import main
from securemail.demo import throwaway_identity
from securemail.errors import (
    AuditEventError,
    AuditLogError,
    AuditTamperedError,
    AuditTornTailError,
    InputError,
    ProtectionRequiredError,
    RecipientError,
)
from securemail.governance.audit import GENESIS_PREV, AuditLog, AuditProblem, verify
from securemail.transport import send
from securemail.transport.local import LocalSMTPServer
from securemail.transport.results import RecipientResult, RecipientStatus, SendResult, TLSInfo
from securemail.transport.smtp import tls_context

MID = "<20260101.1234@example.com>"


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def records(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in lines_of(path)]


def sha(line: bytes) -> str:
    return hashlib.sha256(line).hexdigest()


def canonical(record: Mapping[str, object]) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":")).encode() + b"\n"


def fill(path: Path, events: int = 7) -> None:
    """A log of ``events`` archive events after the genesis line."""
    with AuditLog.open(path) as log:
        for i in range(events):
            log.record_archive(f"<m{i}@example.com>", f"archive-{i}")


# --- format ---------------------------------------------------------------------------------------


def test_a_new_log_is_private_and_starts_with_a_genesis_line(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    with AuditLog.open(path) as log:
        log_id = log.log_id
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    (genesis,) = records(path)
    assert genesis["event"] == "genesis" and genesis["seq"] == 1
    assert genesis["prev"] == GENESIS_PREV == "0" * 64
    assert genesis["log_id"] == log_id and len(log_id) == 32
    result = verify(path)
    assert result.ok and result.events == 1 and result.log_id == log_id


def test_lines_are_canonical_json_chained_by_sha256_of_the_previous_line(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    fill(path, 3)
    raw = lines_of(path)
    for number, line in enumerate(raw, start=1):
        record = json.loads(line)
        assert canonical(record) == line  # sorted keys, compact, ASCII, newline-terminated
        assert record["seq"] == number
        assert str(record["time"]).endswith("Z") and str(record["time"])[10] == "T"
        if number > 1:
            assert record["prev"] == sha(raw[number - 2])


def test_reopening_continues_the_same_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    with AuditLog.open(path) as first:
        entry = first.record_archive(MID, "a1")
    with AuditLog.open(path) as second:
        assert second.log_id == first.log_id
        assert second.head() == entry.hash
        later = second.record_archive(MID, "a2")
    assert later.seq == 3
    assert verify(path).ok and verify(path).head == later.hash == sha(lines_of(path)[-1])


def test_open_refuses_a_file_that_is_not_an_audit_log_and_leaves_it_alone(tmp_path: Path) -> None:
    for content in (b"hello\n", b"no newline at all", b'{"event":"archive"}\n'):
        path = tmp_path / "other.txt"
        path.write_bytes(content)
        with pytest.raises(AuditLogError, match="not a securemail audit log"):
            AuditLog.open(path)
        assert path.read_bytes() == content


def test_a_closed_log_refuses_appends(tmp_path: Path) -> None:
    log = AuditLog.open(tmp_path / "audit.log")
    log.close()
    with pytest.raises(AuditLogError, match="closed"):
        log.record_archive(MID, "a1")


# --- what the log never holds ---------------------------------------------------------------------

SUBJECT = "Operation Quokka merger terms"
BODY = "The Zanzibar figures are final; keep them quiet."
ATTACHMENT = "quokka-zanzibar-terms.pdf"


@dataclasses.dataclass(frozen=True)
class Decision:
    """Stands in for the rules engine's decision (it has its own to_audit)."""

    rules: tuple[str, ...]
    actions: tuple[str, ...]

    def to_audit(self) -> Mapping[str, object]:
        return {"rules": list(self.rules), "actions": list(self.actions)}


def test_recording_everything_about_a_message_never_writes_its_content(tmp_path: Path) -> None:
    ca = throwaway_identity("CA")
    alice = throwaway_identity("Alice", email="alice@example.com", issuer=ca)
    bob = throwaway_identity("Bob", email="bob@example.org", issuer=ca)
    message = (
        securemail.MessageBuilder()
        .from_addr("Alice Example <alice@example.com>")
        .to("Bob <bob@example.org>")
        .subject(SUBJECT)
        .text(BODY)
        .attach(b"%PDF-1.4 figures", filename=ATTACHMENT)
        .build()
    )
    message_id = str(message["Message-ID"])
    protected = securemail.encrypt(message, [bob], signer=alice)
    path = tmp_path / "audit.log"
    with LocalSMTPServer() as server, AuditLog.open(path) as log:
        log.record_decision(
            message_id,
            "Alice Example <alice@example.com>",
            ["Bob <bob@example.org>"],
            Decision(rules=("external-recipients",), actions=("sign", "encrypt", "archive")),
        )
        log.record_protection(
            message_id,
            "smime",
            ["aes-256-gcm", "rsa-oaep", "sha256"],
            [c.fingerprint(hashes.SHA256()).hex() for c in (alice.certificate, bob.certificate)],
        )
        result = send(protected, server.config())
        log.record_delivery(message_id, result)
        certificate_sha256 = _server_certificate_sha256(server)
        with pytest.raises(ProtectionRequiredError) as refused:
            send(message, server.config(require_protection=True))
        log.record_refusal(message_id, "alice@example.com", ["bob@example.org"], refused.value)
        erin = throwaway_identity(
            "Erin", email="erin@example.org", issuer=ca, key=Ed25519PrivateKey.generate()
        )
        with pytest.raises(RecipientError) as no_key:
            securemail.encrypt(message, [erin])
        log.record_refusal(message_id, "alice@example.com", ["erin@example.org"], no_key.value)
        log.record_archive(message_id, "sha256-" + hashlib.sha256(protected.data).hexdigest())
        assert len(server.messages) == 1 and message["Subject"] == SUBJECT

    text = path.read_bytes()
    for secret in (SUBJECT, BODY, ATTACHMENT, "Quokka", "Zanzibar", "quokka", "zanzibar"):
        assert secret.encode() not in text, secret
    for public in (message_id, "alice@example.com", "bob@example.org", "ProtectionRequiredError"):
        assert public.encode() in text, public  # the grep above could have found something
    assert b"Alice Example" not in text  # display names are dropped
    assert verify(path).events == 7
    delivery = records(path)[3]
    assert delivery["recipients"] == [
        {"address": "bob@example.org", "status": "delivered", "code": 250}
    ]
    tls = delivery["tls"]
    assert isinstance(tls, dict) and tls["version"] in ("TLSv1.2", "TLSv1.3")
    assert tls["certificate_sha256"] == certificate_sha256 and tls["verified"] is True
    assert "reply" not in text.decode()  # server reply texts may quote the message


def _server_certificate_sha256(server: LocalSMTPServer) -> str:
    """The local server's certificate as a separate smtplib handshake sees it."""
    with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as client:
        client.starttls(context=tls_context(server.config()))
        der = client.sock.getpeercert(binary_form=True)  # type: ignore[union-attr]
    assert der
    return hashlib.sha256(der).hexdigest()


@pytest.mark.parametrize(
    ("kind", "fields", "field"),
    [
        ("decision", {"subject": SUBJECT}, "subject"),
        ("archive", {"message_id": MID, "archive_id": "a", "body": BODY}, "body"),
        ("protection", {"message_id": MID, "attachment_names": [ATTACHMENT]}, "attachment_names"),
        ("decision", {"message_id": MID, "sender": SUBJECT}, "sender"),
        ("refusal", {"message_id": MID, "recipients": [SUBJECT]}, "recipients"),
        ("archive", {"message_id": SUBJECT, "archive_id": "a"}, "message_id"),
        ("archive", {"message_id": MID, "archive_id": BODY}, "archive_id"),
        ("protection", {"message_id": MID, "format": SUBJECT}, "format"),
        ("protection", {"message_id": MID, "format": "smime", "algorithms": [BODY]}, "algorithms"),
        (
            "protection",
            {"message_id": MID, "format": "smime", "algorithms": ["a"], "key_fingerprints": [BODY]},
            "key_fingerprints",
        ),
        ("archive", {"message_id": MID}, "archive_id"),
        ("gossip", {"message_id": MID}, "event"),
    ],
)
def test_fields_outside_an_events_shape_are_refused_without_echoing_them(
    tmp_path: Path, kind: str, fields: dict[str, object], field: str
) -> None:
    path = tmp_path / "audit.log"
    with AuditLog.open(path) as log:
        before = path.read_bytes()
        with pytest.raises(AuditEventError) as refused:
            log.append(kind, **fields)
    assert refused.value.kind == kind and refused.value.field == field
    assert isinstance(refused.value, InputError)
    for secret in ("Quokka", "Zanzibar", "quokka"):
        assert secret not in str(refused.value)
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    "decision",
    [
        {"rules": ["r1"], "subject": SUBJECT},
        {"matched": [{"rule": "r1", "attachment_name": ATTACHMENT}]},
        {"rules": "x", "Body": BODY},  # keys are lower-case identifiers
        {"why": BODY + "\n" + BODY},  # one line of text at most
        {"why": "x" * 257},
        {"deep": [[[[[["too deep"]]]]]]},
        {"n": float("nan")},
        "encrypt",
    ],
)
def test_a_decision_may_not_carry_content(tmp_path: Path, decision: object) -> None:
    with AuditLog.open(tmp_path / "audit.log") as log, pytest.raises(AuditEventError) as refused:
        log.record_decision(MID, "alice@example.com", ["bob@example.org"], decision)  # type: ignore[arg-type]
    assert refused.value.field == "decision"
    assert "Zanzibar" not in str(refused.value) and "quokka" not in str(refused.value)


def test_a_refusal_reason_is_one_bounded_line(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    with AuditLog.open(path) as log:
        log.record_refusal(MID, "alice@example.com", ["bob@example.org"], "policy:no-key")
        long = InputError("x" * 300 + "\nsecond line")
        log.record_refusal(MID, "alice@example.com", ["bob@example.org"], long)
    first, second = records(path)[1:]
    assert first["reason"] == "policy:no-key" and first["error"] is None
    assert second["error"] == "InputError" and len(str(second["reason"])) == 256
    assert "\n" not in str(second["reason"])


def test_delivery_records_every_recipient_and_null_for_plaintext(tmp_path: Path) -> None:
    result = SendResult(
        host="mx.example.org",
        mail_from="",
        recipients=(
            RecipientResult("bob@example.org", RecipientStatus.DELIVERED, 250, "ok"),
            RecipientResult("carol@example.org", RecipientStatus.DEFERRED, 451, "later"),
            RecipientResult("dave@example.org", RecipientStatus.FAILED, 550, "no such user"),
            RecipientResult("erin@example.org", RecipientStatus.DEFERRED, None, "lost"),
        ),
        code=250,
        reply="2.0.0 Ok: queued as 4AbC123",
    )
    path = tmp_path / "audit.log"
    session = TLSInfo("TLSv1.3", "TLS_AES_128_GCM_SHA256", None, verified=False)
    with AuditLog.open(path) as log:
        log.record_delivery(MID, result)
        log.record_delivery(MID, dataclasses.replace(result, tls=session))
    plain, secured = records(path)[1:]
    assert plain["tls"] is None and plain["mail_from"] == "" and plain["queue_id"] == "4AbC123"
    assert [(r["status"], r["code"]) for r in plain["recipients"]] == [  # type: ignore[attr-defined]
        ("delivered", 250),
        ("deferred", 451),
        ("failed", 550),
        ("deferred", None),
    ]
    assert secured["tls"] == {
        "version": "TLSv1.3",
        "cipher": "TLS_AES_128_GCM_SHA256",
        "certificate_sha256": None,
        "verified": False,
    }
    assert b"no such user" not in path.read_bytes()


# --- tampering ------------------------------------------------------------------------------------


def _edit(
    number: int, change: Callable[[dict[str, object]], None]
) -> Callable[[list[bytes]], None]:
    def mutate(raw: list[bytes]) -> None:
        record = json.loads(raw[number - 1])
        change(record)
        raw[number - 1] = canonical(record)

    return mutate


def _forged(raw: list[bytes], after: int, prev: str | None = None) -> bytes:
    """A well-formed line that chains correctly to line ``after`` (as a forger would)."""
    seq = json.loads(raw[after - 1])["seq"] + 1
    return canonical(
        {
            "archive_id": "forged",
            "event": "archive",
            "message_id": "<forged@example.com>",
            "prev": prev or sha(raw[after - 1]),
            "seq": seq,
            "time": "2026-01-01T00:00:00.000000Z",
        }
    )


def _other_log(tmp_path: Path) -> list[bytes]:
    path = tmp_path / "other.log"
    fill(path, 2)
    return lines_of(path)


TAMPERING: dict[str, tuple[Callable[[list[bytes]], None], AuditProblem, int]] = {
    "edit a field": (
        _edit(4, lambda r: r.update(archive_id="innocent")),
        AuditProblem.EDITED,
        4,
    ),
    "edit the prev": (_edit(4, lambda r: r.update(prev="ab" * 32)), AuditProblem.EDITED, 4),
    "edit the seq": (_edit(4, lambda r: r.update(seq=40)), AuditProblem.EDITED, 4),
    "edit the log id": (_edit(1, lambda r: r.update(log_id="f" * 32)), AuditProblem.EDITED, 1),
    "edit whitespace": (
        lambda raw: raw.__setitem__(3, raw[3].replace(b",", b", ", 1)),
        AuditProblem.EDITED,
        4,
    ),
    "edit the last line non-canonically": (
        lambda raw: raw.__setitem__(-1, raw[-1].replace(b"{", b"{ ", 1)),
        AuditProblem.EDITED,
        8,
    ),
    "delete a line": (lambda raw: raw.__delitem__(3), AuditProblem.DELETED, 4),
    "delete two lines": (lambda raw: raw.__delitem__(slice(3, 5)), AuditProblem.DELETED, 4),
    "swap two lines": (
        lambda raw: raw.__setitem__(slice(3, 5), [raw[4], raw[3]]),
        AuditProblem.REORDERED,
        4,
    ),
    "move the last line up": (lambda raw: raw.insert(2, raw.pop()), AuditProblem.REORDERED, 3),
    "insert a forged line": (
        lambda raw: raw.insert(3, _forged(raw, 3)),
        AuditProblem.INSERTED,
        4,
    ),
    "insert a line with a made-up prev": (
        lambda raw: raw.insert(3, _forged(raw, 3, prev="cd" * 32)),
        AuditProblem.INSERTED,
        4,
    ),
    "insert garbage": (lambda raw: raw.insert(3, b"not json\n"), AuditProblem.INSERTED, 4),
    "remove the head": (lambda raw: raw.__delitem__(0), AuditProblem.HEAD_REMOVED, 1),
    "remove the first three lines": (
        lambda raw: raw.__delitem__(slice(0, 3)),
        AuditProblem.HEAD_REMOVED,
        1,
    ),
}


@pytest.mark.parametrize("name", TAMPERING)
def test_every_kind_of_tampering_is_detected_and_located(tmp_path: Path, name: str) -> None:
    path = tmp_path / "audit.log"
    fill(path)
    raw = lines_of(path)
    assert len(raw) == 8
    mutate, problem, line = TAMPERING[name]
    mutate(raw)
    path.write_bytes(b"".join(raw))
    result = verify(path)
    assert (result.ok, result.problem, result.line) == (False, problem, line), result
    assert result.tampered
    assert result.events == line - 1  # the intact part above the first bad line
    assert result.head == (sha(raw[line - 2]) if line > 1 else GENESIS_PREV)
    with pytest.raises(AuditTamperedError) as raised:
        result.raise_for_status()
    assert (raised.value.line, raised.value.kind) == (line, problem.value)
    assert f"line {line}: {problem.value}" in str(raised.value)


def test_the_seam_where_two_logs_are_joined_is_found(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    fill(path, 3)
    mine, theirs = lines_of(path), _other_log(tmp_path)
    path.write_bytes(b"".join(theirs + mine))
    assert (verify(path).problem, verify(path).line) == (AuditProblem.INSERTED, 4)
    assert verify(path).detail == "a second genesis record"
    path.write_bytes(b"".join([b"junk\n", *mine]))
    assert (verify(path).problem, verify(path).line) == (AuditProblem.INSERTED, 1)
    path.write_bytes(b"".join(mine + theirs))
    assert (verify(path).problem, verify(path).line) == (AuditProblem.INSERTED, 5)


def test_an_empty_file_has_no_head(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    path.write_bytes(b"")
    result = verify(path)
    assert (result.ok, result.problem, result.line, result.events) == (
        False,
        AuditProblem.HEAD_REMOVED,
        1,
        0,
    )


def test_a_rewritten_tail_is_caught_only_by_the_anchored_head(tmp_path: Path) -> None:
    """The documented limit: recomputing the chain after an edit gives a valid chain."""
    path = tmp_path / "audit.log"
    fill(path)
    with AuditLog.open(path) as log:
        anchored = log.head()
    raw = lines_of(path)
    record = json.loads(raw[3])
    record["archive_id"] = "innocent"
    raw[3] = canonical(record)
    for i in range(4, len(raw)):  # the attacker rewrites everything after the edit
        record = json.loads(raw[i])
        record["prev"] = sha(raw[i - 1])
        raw[i] = canonical(record)
    path.write_bytes(b"".join(raw))
    assert verify(path).ok
    result = verify(path, expected_head=anchored)
    assert (result.ok, result.problem, result.line) == (False, AuditProblem.HEAD_MISMATCH, None)
    with pytest.raises(AuditTamperedError, match="head-mismatch") as raised:
        result.raise_for_status()
    assert raised.value.line is None


def test_an_anchored_head_stays_valid_as_the_log_grows_and_catches_truncation(
    tmp_path: Path,
) -> None:
    path = tmp_path / "audit.log"
    fill(path, 3)
    with AuditLog.open(path) as log:
        anchored = log.head()
        last = log.record_archive(MID, "later")
    assert verify(path, expected_head=anchored.upper()).ok  # the log grew: fine
    path.write_bytes(b"".join(lines_of(path)[:-2]))  # drop the last two lines
    assert verify(path).ok  # a truncation alone leaves a valid chain
    assert verify(path, expected_head=anchored).problem is AuditProblem.HEAD_MISMATCH
    assert verify(path, expected_head=last.hash).problem is AuditProblem.HEAD_MISMATCH


def test_expected_head_must_be_a_sha256(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    fill(path, 1)
    with pytest.raises(InputError, match="64 hex digits"):
        verify(path, expected_head="abc")


def test_a_missing_log_is_an_audit_log_error(tmp_path: Path) -> None:
    with pytest.raises(AuditLogError, match="cannot read") as raised:
        verify(tmp_path / "missing.log")
    assert raised.value.path == str(tmp_path / "missing.log")


# --- torn tails -----------------------------------------------------------------------------------


def test_a_torn_tail_is_reported_apart_from_tampering_and_repaired_by_the_next_append(
    tmp_path: Path,
) -> None:
    path = tmp_path / "audit.log"
    fill(path, 3)
    intact_head = sha(lines_of(path)[-1])
    torn = b'{"archive_id":"a9","event":"archive","message_id":"<m9@exa'
    with path.open("ab") as file:  # what a crash in the middle of the write leaves
        file.write(torn)
    result = verify(path)
    assert (result.ok, result.tampered, result.problem) == (False, False, AuditProblem.TORN_TAIL)
    assert (result.line, result.events, result.head) == (5, 4, intact_head)
    with pytest.raises(AuditTornTailError) as raised:
        result.raise_for_status()
    assert raised.value.line == 5 and "torn-tail" in str(raised.value)
    with AuditLog.open(path) as log:
        assert log.head() == intact_head  # reading does not repair
        entry = log.record_archive(MID, "after-the-crash")
    repair, after = records(path)[4:]
    assert repair == {
        "event": "repair",
        "prev": intact_head,
        "seq": 5,
        "time": repair["time"],
        "torn_bytes": len(torn),
        "torn_line": 5,
        "torn_sha256": sha(torn),
    }
    assert after["archive_id"] == "after-the-crash" and entry.seq == 6
    assert verify(path).ok and verify(path).events == 6


def test_a_torn_genesis_line_is_repaired_when_the_log_is_opened(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    path.write_bytes(b'{"event":"genesis","log_id":"12ab')
    with AuditLog.open(path) as log:
        log.record_archive(MID, "a1")
    genesis, repair, archive = records(path)
    assert genesis["event"] == "genesis" and genesis["log_id"] == log.log_id
    assert (repair["event"], repair["torn_line"], repair["torn_bytes"]) == ("repair", 1, 33)
    assert archive["seq"] == 3 and verify(path).ok


# --- concurrency ----------------------------------------------------------------------------------


def _append_many(path: str, worker: int, count: int) -> None:
    with AuditLog.open(path) as log:
        for i in range(count):
            log.record_archive(f"<w{worker}-{i}@example.com>", f"w{worker}-{i}")


def test_concurrent_appends_from_several_processes_keep_one_valid_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    workers, count = 4, 40
    context = multiprocessing.get_context("fork")
    processes = [
        context.Process(target=_append_many, args=(str(path), w, count)) for w in range(workers)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
        assert process.exitcode == 0
    result = verify(path)
    assert result.ok and result.events == 1 + workers * count
    genesis = [r for r in records(path) if r["event"] == "genesis"]
    assert len(genesis) == 1  # the processes raced to create the log; one genesis line
    archived = {r["archive_id"] for r in records(path)[1:]}
    assert archived == {f"w{w}-{i}" for w in range(workers) for i in range(count)}


def test_concurrent_appends_from_threads_sharing_a_log_and_not(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    shared = AuditLog.open(path)

    def shared_writer(worker: int) -> None:
        for i in range(30):
            shared.record_archive(f"<s{worker}-{i}@example.com>", f"s{worker}-{i}")

    threads = [threading.Thread(target=shared_writer, args=(w,)) for w in range(4)]
    threads += [threading.Thread(target=_append_many, args=(str(path), w, 30)) for w in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    shared.close()
    result = verify(path)
    assert result.ok and result.events == 1 + 6 * 30


# --- the command line -----------------------------------------------------------------------------


def test_cli_reports_an_intact_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "audit.log"
    fill(path, 2)
    head = verify(path).head
    assert main(["audit", "verify", str(path)]) == 0
    assert capsys.readouterr().out == f"{path}: intact, 3 events, head {head}\n"
    assert main(["audit", "verify", str(path), "--head", head]) == 0
    assert capsys.readouterr().out == f"{path}: intact, 3 events, head {head}\n"


@pytest.mark.parametrize(
    ("damage", "says"),
    [
        (lambda raw: raw.__delitem__(2), "line 3: deleted: "),
        (lambda raw: raw.append(b'{"event":"arch'), "line 5: torn-tail: "),
        (lambda raw: raw.__delitem__(0), "line 1: head-removed: "),
    ],
)
def test_cli_names_the_first_bad_line_and_the_kind(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    damage: Callable[[list[bytes]], None],
    says: str,
) -> None:
    path = tmp_path / "audit.log"
    fill(path, 3)
    raw = lines_of(path)
    damage(raw)
    path.write_bytes(b"".join(raw))
    assert main(["audit", "verify", str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"securemail: error: audit log {path}: {says}")
    assert len(captured.err.splitlines()) == 1


def test_cli_checks_the_anchored_head(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "audit.log"
    fill(path, 2)
    head = verify(path).head
    path.write_bytes(b"".join(lines_of(path)[:-1]))
    assert main(["audit", "verify", str(path), "--head", head]) == 1
    assert "head-mismatch" in capsys.readouterr().err
    assert main(["audit", "verify", str(path), "--head", "nothex"]) == 1
    assert "64 hex digits" in capsys.readouterr().err
    assert main(["audit", "verify", str(tmp_path / "missing.log")]) == 1
    assert "cannot read" in capsys.readouterr().err


def test_cli_as_its_own_process(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    fill(path, 1)
    raw = lines_of(path)
    run = [sys.executable, "-m", "securemail", "audit", "verify", "audit.log"]
    done = subprocess.run(run, cwd=tmp_path, capture_output=True, text=True, check=False)
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == f"audit.log: intact, 2 events, head {sha(raw[-1])}\n"
    path.write_bytes(raw[0].replace(b'"seq":1', b'"seq":1 ') + raw[1])
    done = subprocess.run(run, cwd=tmp_path, capture_output=True, text=True, check=False)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr.startswith("securemail: error: audit log audit.log: line 1: edited: ")
    assert len(done.stderr.splitlines()) == 1 and "Traceback" not in done.stderr
