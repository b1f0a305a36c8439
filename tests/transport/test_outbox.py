"""The durable outbox against a real server (aiosmtpd, STARTTLS) and the scripted one: what is
stored, each recipient's path through queued / sending / sent / deferred / failed, retries on
an injected clock, crashes and lost connections (at least once, never zero), two outboxes on
one file, and a 64 MiB message in bounded memory.

The servers' records are the evidence: what they received, how often, and for whom.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import sqlite3
import stat
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import securemail
from securemail import wire
from securemail.compose import MessageBuilder
from securemail.demo import throwaway_identity
from securemail.errors import (
    BccHeaderError,
    InputError,
    MessageTooLargeError,
    OutboxError,
    ProtectionRequiredError,
    SecureMailError,
    SMTPAuthError,
    TLSRequiredError,
    UnknownMessageError,
)
from securemail.transport import SMTPConfig, SMTPTransport
from securemail.transport.outbox import (
    DeliveryReport,
    Outbox,
    OutboxStatus,
    RetryPolicy,
)

from .conftest import PASSWORD, PKI, USER, Conn, FakeSMTP, config_for
from .test_data import _SINK_SERVER
from .test_faults import DropAfterDot, DropMidData

ALICE, BOB, CAROL, DAVE = (
    "alice@example.org",
    "bob@example.org",
    "carol@example.org",
    "dave@example.org",
)
T0 = 1_750_000_000.0
HOUR = 3600.0
DAY = 24 * HOUR
MARKER = b"SECRET-CONTENT-MARKER"

_HEAD = (
    "From: {sender}\r\n"
    "To: {to}\r\n"
    "Subject: Quarterly report\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\r\n"
    "Content-Transfer-Encoding: base64\r\n"
    "Content-Disposition: attachment; filename=smime.p7m\r\n"
    "\r\n"
)


def protected(*to: str, size: int = 3000, sender: str = ALICE) -> bytes:
    """An S/MIME enveloped-data message as the transport sees it: headers that say
    "encrypted" and ``size`` bytes of base64 lines that look like ciphertext."""
    head = _HEAD.format(sender=sender, to=", ".join(to or (BOB,))).encode("ascii")
    body = base64.encodebytes(MARKER + os.urandom(max(size * 3 // 4, 1)))
    return head + body.replace(b"\n", b"\r\n")


class Clock:
    """The outbox's idea of now: moves only when a test says so."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def plain(port: int, **options: Any) -> SMTPConfig:
    """The scripted server offers no TLS (the faults here are not about TLS)."""
    return config_for(port, tls="opportunistic", **options)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def open_outbox(tmp_path: Path, clock: Clock) -> Any:
    """``open_outbox(**options)``: an outbox on ``tmp_path/outbox.sqlite`` with the test's
    clock; closed at the end."""
    opened: list[Outbox] = []

    def open_(**options: Any) -> Outbox:
        options.setdefault("clock", clock)
        outbox = Outbox(options.pop("path", tmp_path / "outbox.sqlite"), **options)
        opened.append(outbox)
        return outbox

    yield open_
    for outbox in opened:
        outbox.close()


def deliver(outbox: Outbox, config: SMTPConfig) -> list[DeliveryReport]:
    with SMTPTransport(config) as transport:
        return outbox.deliver_due(transport)


def rcpt_lines(server: FakeSMTP) -> list[bytes]:
    return [line for line in server.lines if line.upper().startswith(b"RCPT")]


def stored_blob(outbox: Outbox, message_id: str) -> tuple[bytes | None, str | None]:
    with sqlite3.connect(outbox.path) as db:
        row = db.execute("SELECT data, spool FROM messages WHERE id = ?", (message_id,)).fetchone()
    db.close()
    return row[0], row[1]


# --- the good path -------------------------------------------------------------------------------


def test_enqueue_then_deliver_over_verified_tls(
    real_server: Any, pki: PKI, open_outbox: Any, clock: Clock
) -> None:
    server = real_server()
    bob = throwaway_identity("Bob", email=BOB)
    built = MessageBuilder().from_addr(ALICE).to(BOB).bcc(CAROL).subject("Hi").text("Hello\n")
    sealed = securemail.encrypt(built.build(), [bob])
    outbox = open_outbox()

    message_id = outbox.enqueue(sealed)
    # Written before any attempt: the protected bytes, as they were given, and the envelope.
    assert stored_blob(outbox, message_id) == (sealed.data, None)
    queued = outbox.status(message_id)
    assert (queued.mail_from, queued.queued, queued.stored) == (ALICE, (BOB, CAROL), True)
    assert [r.next_attempt_at for r in queued.recipients] == [T0, T0]
    assert outbox.pending() == (queued,)
    assert server.lines == []

    clock.advance(5)
    (report,) = deliver(outbox, config_for(server.port, ca_data=pki.ca_pem))
    assert report.error is None
    assert report.result is not None and report.result.ok
    assert report.recipients == (BOB, CAROL)
    (received,) = server.messages
    assert received.content == sealed.data
    assert (received.mail_from, received.rcpt_tos) == (ALICE, [BOB, CAROL])

    status = outbox.status(message_id)
    assert status == report.status
    assert status.sent == (BOB, CAROL)
    assert status.done and status.finished == T0 + 5
    assert [(r.attempts, r.last_code, r.next_attempt_at) for r in status.recipients] == [
        (1, 250, None),
        (1, 250, None),
    ]
    assert status.recipient(BOB).last_reply == "2.0.0 Ok: queued as REAL1"
    # Delivered everywhere: the protected bytes are not kept.
    assert not status.stored
    assert stored_blob(outbox, message_id) == (None, None)
    assert outbox.pending() == ()
    assert deliver(outbox, config_for(server.port, ca_data=pki.ca_pem)) == []
    assert len(server.messages) == 1


def test_large_message_goes_to_a_spool_file_and_is_removed_after(
    fake_server: Any, open_outbox: Any
) -> None:
    server = fake_server()
    outbox = open_outbox(inline_limit=10_000)
    small, large = protected(size=1000), protected(size=200_000)
    small_id, large_id = outbox.enqueue(small), outbox.enqueue(large)

    assert stored_blob(outbox, small_id) == (small, None)
    data, spool = stored_blob(outbox, large_id)
    assert data is None and spool is not None
    spool_file = outbox.spool_directory / spool
    assert spool_file.read_bytes() == large
    assert stat.S_IMODE(spool_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(outbox.spool_directory.stat().st_mode) == 0o700
    assert stat.S_IMODE(outbox.path.stat().st_mode) == 0o600
    assert outbox.status(large_id).size == len(large)

    reports = deliver(outbox, plain(server.port))
    assert [r.message_id for r in reports] == [small_id, large_id]
    assert all(r.status.sent == (BOB,) for r in reports)
    assert server.messages == [small + b".\r\n", large + b".\r\n"]
    mail = [line for line in server.lines if line.startswith(b"MAIL")]
    assert f"SIZE={len(large)}".encode() in mail[1]  # the spool file's size is announced
    assert not spool_file.exists()
    assert list(outbox.spool_directory.iterdir()) == []


# --- per-recipient outcomes and retries ----------------------------------------------------------


def test_rcpt_mix_then_only_the_deferred_recipient_is_retried(
    fake_server: Any, open_outbox: Any, clock: Clock
) -> None:
    server = fake_server(
        rcpt_replies={CAROL: "450 4.2.1 Mailbox busy", DAVE: "550 5.1.1 No such user"}
    )
    outbox = open_outbox(random=lambda: 0.25)
    message_id = outbox.enqueue(protected(BOB, CAROL, DAVE))

    (report,) = deliver(outbox, plain(server.port))
    status = report.status
    assert (status.sent, status.deferred, status.failed) == ((BOB,), (CAROL,), (DAVE,))
    carol = status.recipient(CAROL)
    assert (carol.last_code, carol.last_reply, carol.attempts) == (450, "4.2.1 Mailbox busy", 1)
    # First retry: base 60 s, full jitter; the draw of 0.25 takes a quarter off.
    assert carol.next_attempt_at == T0 + 45
    assert status.recipient(DAVE).last_code == 550
    assert not status.done and status.stored

    # Not due yet: nothing happens, not even a connection.
    clock.advance(44)
    assert deliver(outbox, plain(server.port)) == []
    assert server.connections == 1

    clock.advance(1)
    server.rcpt_replies = {}
    (retry,) = deliver(outbox, plain(server.port))
    assert retry.recipients == (CAROL,)
    assert (retry.status.sent, retry.status.failed) == ((BOB, CAROL), (DAVE,))
    assert retry.status.recipient(CAROL).attempts == 2
    assert retry.status.recipient(BOB).attempts == 1
    assert retry.status.done and not retry.status.stored
    # The second transaction named Carol alone: Bob is not sent the message twice.
    assert rcpt_lines(server)[3:] == [b"RCPT TO:<carol@example.org>\r\n"]
    assert len(server.messages) == 2
    assert outbox.status(message_id) == retry.status


def test_deferral_waits_a_jittered_time_within_the_backoff(
    fake_server: Any, open_outbox: Any, clock: Clock
) -> None:
    server = fake_server(rcpt_replies={BOB: "451 4.3.0 Try again later"})
    outbox = open_outbox(retry=RetryPolicy(base=60, factor=2, cap=300))
    message_id = outbox.enqueue(protected(BOB))
    waits = []
    for attempt in range(1, 7):
        deliver(outbox, plain(server.port))
        state = outbox.status(message_id).recipient(BOB)
        assert state.attempts == attempt
        assert state.next_attempt_at is not None
        wait = state.next_attempt_at - clock.now
        assert 1.0 <= wait <= min(300, 60 * 2 ** (attempt - 1)), (attempt, wait)
        waits.append(wait)
        clock.now = state.next_attempt_at
    assert len(set(waits)) > 1  # drawn, not fixed


def test_retry_policy() -> None:
    policy = RetryPolicy()
    assert (policy.base, policy.factor, policy.cap, policy.lifetime) == (60, 2, HOUR, 5 * DAY)
    assert [policy.ceiling(n) for n in (1, 2, 3, 7, 10_000)] == [60, 120, 240, 3600, 3600]
    assert policy.delay(1, 0.0) == 60
    assert policy.delay(2, 0.5) == 60
    assert policy.delay(1, 0.999999) == 1.0  # never sooner than a second
    assert RetryPolicy(jitter=0).delay(3, 0.9) == 240
    assert RetryPolicy(factor=10, cap=1e9).ceiling(10_000) == 1e9  # no overflow
    with pytest.raises(InputError, match="base must be positive; jitter"):
        RetryPolicy(base=0, jitter=2)
    with pytest.raises(InputError, match="cap must be at least base"):
        RetryPolicy(base=100, cap=10)


@pytest.mark.parametrize(
    ("step", "reply", "status"),
    [
        ("data_reply", "451 4.3.0 Local error", OutboxStatus.DEFERRED),
        ("data_reply", "554 5.5.1 Transaction failed", OutboxStatus.FAILED),
        ("final_reply", "452 4.3.1 Insufficient storage", OutboxStatus.DEFERRED),
        ("final_reply", "554 5.7.1 Rejected", OutboxStatus.FAILED),
        ("mail_reply", "421 4.3.2 Shutting down", OutboxStatus.DEFERRED),
    ],
)
def test_refusals_of_the_whole_message(
    fake_server: Any, open_outbox: Any, step: str, reply: str, status: OutboxStatus
) -> None:
    server = fake_server(**{step: reply})
    outbox = open_outbox()
    message_id = outbox.enqueue(protected(BOB, CAROL))
    (report,) = deliver(outbox, plain(server.port))
    assert [r.status for r in report.status.recipients] == [status, status]
    assert {(r.last_code, r.last_reply) for r in report.status.recipients} == {
        (int(reply[:3]), reply[4:])
    }
    assert report.status.done == (status is OutboxStatus.FAILED)
    assert report.status.stored == (status is OutboxStatus.DEFERRED)
    assert outbox.status(message_id) == report.status


class DropMidDataOnce(DropMidData):
    def on_data(self, conn: Conn, line: bytes) -> bool | None:
        if self.connections > 1:
            return FakeSMTP.on_data(self, conn, line)
        return super().on_data(conn, line)


class DropAfterDotOnce(DropAfterDot):
    def after_data(self, conn: Conn) -> bool | None:
        if self.connections > 1:
            return FakeSMTP.after_data(self, conn)
        return super().after_data(conn)


@pytest.mark.parametrize("server_class", [DropMidDataOnce, DropAfterDotOnce])
def test_lost_connection_defers_and_the_retry_delivers(
    fake_server: Any, open_outbox: Any, clock: Clock, server_class: type[FakeSMTP]
) -> None:
    server = fake_server(server_class, rcpt_replies={DAVE: "550 5.1.1 No such user"})
    outbox = open_outbox()
    data = protected(BOB, CAROL, DAVE, size=4_000_000)  # more than the socket buffers hold
    message_id = outbox.enqueue(data)

    (report,) = deliver(outbox, plain(server.port))
    status = report.status
    assert (status.deferred, status.failed) == ((BOB, CAROL), (DAVE,))
    lost = status.recipient(BOB)
    assert lost.last_code is None
    assert "connection lost" in lost.last_reply
    assert "may or may not have been delivered" in lost.last_reply
    assert status.stored
    after_dot = server_class is DropAfterDotOnce
    assert len(server.messages) == (1 if after_dot else 0)

    assert status.next_attempt_at is not None
    clock.now = status.next_attempt_at
    (retry,) = deliver(outbox, plain(server.port))
    assert retry.recipients == (BOB, CAROL)
    assert (retry.status.sent, retry.status.failed) == ((BOB, CAROL), (DAVE,))
    assert not retry.status.stored
    # Nothing lost; after the dot the server may well have it twice (at least once).
    assert server.messages[-1] == data + b".\r\n"
    assert len(server.messages) == (2 if after_dot else 1)
    assert outbox.status(message_id).done


def test_lifetime_ends_in_failure_with_the_last_reason(
    fake_server: Any, open_outbox: Any, clock: Clock
) -> None:
    server = fake_server(rcpt_replies={CAROL: "450 4.2.1 Mailbox busy"})
    outbox = open_outbox(retry=RetryPolicy(base=60, cap=600, lifetime=2 * HOUR))
    message_id = outbox.enqueue(protected(BOB, CAROL))
    attempts = 0
    while not outbox.status(message_id).done:
        deliver(outbox, plain(server.port))
        attempts += 1
        state = outbox.status(message_id).recipient(CAROL)
        if state.next_attempt_at is not None:
            assert state.next_attempt_at <= T0 + 2 * HOUR  # the last try is at the deadline
            clock.now = state.next_attempt_at
        assert attempts < 100
    carol = outbox.status(message_id).recipient(CAROL)
    assert carol.status is OutboxStatus.FAILED
    assert carol.expired
    assert (carol.last_code, carol.last_reply) == (450, "4.2.1 Mailbox busy")
    assert carol.attempts == attempts > 5
    assert clock.now == T0 + 2 * HOUR
    assert not outbox.status(message_id).recipient(BOB).expired
    assert not outbox.status(message_id).stored


# --- the server cannot be used -------------------------------------------------------------------


def test_certificate_failure_holds_mail_until_the_lifetime_ends(
    real_server: Any, pki: PKI, open_outbox: Any, clock: Clock
) -> None:
    server = real_server(pki.stranger_cert)
    outbox = open_outbox(retry=RetryPolicy(lifetime=DAY))
    first, second = outbox.enqueue(protected(BOB)), outbox.enqueue(protected(CAROL))
    config = config_for(server.port, ca_data=pki.ca_pem)

    (report,) = deliver(outbox, config)  # the run stops: the next message would fail alike
    assert isinstance(report.error, TLSRequiredError)
    assert report.error.kind == "certificate"
    assert report.result is None
    bob = report.status.recipient(BOB)
    assert bob.status is OutboxStatus.DEFERRED
    assert "certificate failed verification" in bob.last_reply
    assert outbox.status(second).queued == (CAROL,)
    assert "MAIL" not in server.verbs()

    # A day on, each run tries one message (the oldest due first) and gives up on it.
    clock.advance(DAY)
    (queued_one,) = deliver(outbox, config)
    (deferred_one,) = deliver(outbox, config)
    assert (queued_one.message_id, deferred_one.message_id) == (second, first)
    for report, address in ((queued_one, CAROL), (deferred_one, BOB)):
        state = report.status.recipient(address)
        assert (state.status, state.expired) == (OutboxStatus.FAILED, True)
        assert "certificate failed verification" in state.last_reply
    assert outbox.pending() == ()
    assert server.messages == []


def test_refused_credentials_hold_mail(real_server: Any, pki: PKI, open_outbox: Any) -> None:
    server = real_server()
    outbox = open_outbox()
    message_id = outbox.enqueue(protected(BOB))
    config = config_for(server.port, ca_data=pki.ca_pem, username=USER, password="wrong")
    (report,) = deliver(outbox, config)
    assert isinstance(report.error, SMTPAuthError)
    assert not report.error.temporary
    state = outbox.status(message_id).recipient(BOB)
    assert (state.status, state.last_code) == (OutboxStatus.DEFERRED, 535)
    assert "refused the credentials" in state.last_reply
    assert PASSWORD not in state.last_reply


def test_message_the_server_can_never_take_fails_and_the_run_goes_on(
    fake_server: Any, open_outbox: Any
) -> None:
    server = fake_server(capabilities=("8BITMIME", "SIZE 20000"))
    outbox = open_outbox()
    too_big, fits = outbox.enqueue(protected(BOB, size=30_000)), outbox.enqueue(protected(CAROL))
    first, second = deliver(outbox, plain(server.port))
    assert isinstance(first.error, MessageTooLargeError)
    assert first.status.failed == (BOB,)
    assert "accepts at most 20000" in first.status.recipient(BOB).last_reply
    assert (first.message_id, second.message_id) == (too_big, fits)
    assert second.status.sent == (CAROL,)
    assert len(server.messages) == 1


def test_missing_spool_file_fails_the_message(fake_server: Any, open_outbox: Any) -> None:
    server = fake_server()
    outbox = open_outbox(inline_limit=100)
    message_id = outbox.enqueue(protected(BOB))
    (spool_file,) = outbox.spool_directory.iterdir()
    spool_file.unlink()
    (report,) = deliver(outbox, plain(server.port))
    assert isinstance(report.error, OutboxError)
    assert report.status.failed == (BOB,)
    assert report.status.recipient(BOB).last_reply == "the stored copy of the message is missing"
    assert server.connections == 0
    assert outbox.status(message_id).done


def test_failing_spool_read_defers_and_raises(
    fake_server: Any, open_outbox: Any, clock: Clock
) -> None:
    server = fake_server()
    outbox = open_outbox(inline_limit=100)
    message_id = outbox.enqueue(protected(BOB, size=500_000))

    def failing_disk(message: Any) -> None:
        read = message.readinto
        calls = 0

        def readinto(buffer: Any) -> Any:
            nonlocal calls
            calls += 1
            if calls == 3:
                raise OSError(5, "Input/output error")
            return read(buffer)

        message.readinto = readinto

    with (
        pytest.raises(OutboxError, match="local error while sending: OSError"),
        Hooked(plain(server.port), failing_disk) as transport,
    ):
        outbox.deliver_due(transport)
    assert server.messages == []  # dropped before the final dot
    assert "DATA" in server.verbs()
    state = outbox.status(message_id).recipient(BOB)
    assert state.status is OutboxStatus.DEFERRED
    assert state.next_attempt_at is not None and state.next_attempt_at > clock.now
    assert outbox.status(message_id).stored


# --- crashes and concurrency ---------------------------------------------------------------------

_CRASH_AFTER_250 = textwrap.dedent(
    """
    import os, sys
    from securemail.transport import SMTPConfig, SMTPTransport
    from securemail.transport.outbox import Outbox

    path, port, ca_file, now = sys.argv[1:]

    class DiesAfter250(SMTPTransport):
        def send(self, message, **options):
            result = super().send(message, **options)
            if result.ok:
                os._exit(17)  # the server said 250; the outbox has not recorded it
            return result

    config = SMTPConfig(
        host="127.0.0.1", port=int(port), ca_file=ca_file, local_hostname="client.test"
    )
    outbox = Outbox(path, clock=lambda: float(now))
    with DiesAfter250(config) as transport:
        outbox.deliver_due(transport)
    sys.exit(3)
    """
)


def test_crash_after_the_servers_250_means_at_least_once(
    real_server: Any, pki: PKI, open_outbox: Any, clock: Clock, tmp_path: Path
) -> None:
    server = real_server()
    ca_file = tmp_path / "ca.pem"
    ca_file.write_text(pki.ca_pem)
    outbox = open_outbox()
    data = protected(BOB, CAROL)
    message_id = outbox.enqueue(data)
    outbox.close()

    crashed = subprocess.run(
        [sys.executable, "-c", _CRASH_AFTER_250, str(outbox.path), str(server.port),
         str(ca_file), str(T0)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )  # fmt: skip
    assert crashed.returncode == 17, crashed.stderr
    assert len(server.messages) == 1  # delivered, and nobody knows

    # Reopened while the dead process's lease still runs: a live claim is left alone.
    clock.advance(60)
    reopened = open_outbox()
    claimed = reopened.status(message_id)
    assert claimed.sending == (BOB, CAROL)
    lease_until = claimed.recipient(BOB).lease_until
    assert lease_until is not None and lease_until > T0 + HOUR  # RFC deadlines add up
    assert deliver(reopened, config_for(server.port, ca_data=pki.ca_pem)) == []
    assert len(server.messages) == 1

    # Once it has run out, the recipients are due again and the message goes out again.
    clock.now = lease_until
    reopened.close()
    recovered = open_outbox()
    status = recovered.status(message_id)
    assert status.deferred == (BOB, CAROL)
    assert "may or may not have been delivered" in status.recipient(BOB).last_reply
    (report,) = deliver(recovered, config_for(server.port, ca_data=pki.ca_pem))
    assert report.status.sent == (BOB, CAROL)
    assert [r.attempts for r in report.status.recipients] == [2, 2]
    assert [m.content for m in server.messages] == [data, data]  # twice, never zero
    assert not report.status.stored


class Hooked(SMTPTransport):
    """Runs ``hook(message)`` just before the real send."""

    def __init__(self, config: SMTPConfig, hook: Callable[[Any], None]) -> None:
        super().__init__(config)
        self.hook = hook

    def send(self, message: Any, **options: Any) -> Any:
        self.hook(message)
        return super().send(message, **options)


def test_a_live_claim_is_not_taken_by_another_outbox(
    fake_server: Any, open_outbox: Any, clock: Clock
) -> None:
    server = fake_server()
    first, second = open_outbox(), open_outbox()
    message_id = first.enqueue(protected(BOB))
    seen: list[list[DeliveryReport]] = []

    def meanwhile(message: Any) -> None:
        assert second.status(message_id).sending == (BOB,)
        seen.append(deliver(second, plain(server.port)))

    with Hooked(plain(server.port), meanwhile) as transport:
        (report,) = first.deliver_due(transport)
    assert seen == [[]]
    assert report.status.sent == (BOB,)
    assert server.connections == 1
    assert len(server.messages) == 1


def test_an_expired_claim_is_taken_over_and_its_late_result_ignored(
    fake_server: Any, open_outbox: Any, clock: Clock
) -> None:
    server = fake_server(rcpt_replies={CAROL: "450 4.2.1 Mailbox busy"})
    slow, other = open_outbox(lease=100), open_outbox(lease=100)
    message_id = slow.enqueue(protected(BOB, CAROL))
    taken: list[DeliveryReport] = []

    def stall(message: Any) -> None:
        clock.advance(101)  # the slow process's lease runs out before it sends
        server.rcpt_replies = {}
        taken.extend(deliver(other, plain(server.port)))
        server.rcpt_replies = {CAROL: "450 4.2.1 Mailbox busy"}

    with Hooked(plain(server.port), stall) as transport:
        (late,) = slow.deliver_due(transport)
    assert taken[0].status.sent == (BOB, CAROL)
    # The slow process's own result (Carol deferred) is not written over the new owner's.
    assert late.status == taken[0].status == other.status(message_id)
    assert len(server.messages) == 2  # at least once


def test_lease_is_renewed_while_streaming_and_a_lost_lease_stops_before_the_dot(
    fake_server: Any, open_outbox: Any, clock: Clock
) -> None:
    server = fake_server()
    sender, other = open_outbox(lease=100, inline_limit=1000), open_outbox(lease=100)
    message_id = sender.enqueue(protected(BOB, size=1_000_000))
    others: list[list[DeliveryReport]] = []

    def ticking(message: Any) -> None:
        read = message.readinto
        calls = 0

        def readinto(buffer: Any) -> Any:
            nonlocal calls
            calls += 1
            clock.advance(30)  # 3 s per chunk on a slow link: the lease is renewed
            if calls == 8:
                others.append(deliver(other, plain(server.port)))
            return read(buffer)

        message.readinto = readinto

    with Hooked(plain(server.port), ticking) as transport:
        (report,) = sender.deliver_due(transport)
    assert others == [[]]  # 240 s in, past the first lease: still held
    assert report.error is None
    assert report.status.sent == (BOB,)
    assert len(server.messages) == 1

    # Now the clock jumps (the process was stopped) and another takes the message over:
    # the first one notices at its next read and drops the connection before the dot.
    message_id = sender.enqueue(protected(CAROL, size=1_000_000))

    def jump(message: Any) -> None:
        read = message.readinto
        calls = 0

        def readinto(buffer: Any) -> Any:
            nonlocal calls
            calls += 1
            if calls == 3:
                clock.advance(500)
                others.append(deliver(other, plain(server.port)))
            return read(buffer)

        message.readinto = readinto

    with Hooked(plain(server.port), jump) as transport:
        (report,) = sender.deliver_due(transport)
    assert isinstance(report.error, OutboxError)
    assert "another process took the message over" in str(report.error)
    assert others[-1][0].status.sent == (CAROL,)
    assert report.status.sent == (CAROL,)
    assert report.status.recipient(CAROL).attempts == 2
    assert len(server.messages) == 2  # the interrupted transfer never completed
    assert sender.status(message_id).done


def test_two_outboxes_on_one_file_never_send_a_message_twice(
    fake_server: Any, tmp_path: Path
) -> None:
    server = fake_server()
    path = tmp_path / "shared.sqlite"
    with Outbox(path) as outbox:
        ids = [outbox.enqueue(protected(f"user{n}@example.org")) for n in range(30)]
    start = threading.Barrier(2)
    counts: list[int] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            with Outbox(path) as outbox, SMTPTransport(plain(server.port)) as transport:
                start.wait()
                total = 0
                while reports := outbox.deliver_due(transport, limit=3):
                    total += len(reports)
                counts.append(total)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    assert sum(counts) == 30
    assert len(server.messages) == 30
    with Outbox(path) as outbox:
        assert outbox.pending() == ()
        assert {outbox.status(i).recipients[0].attempts for i in ids} == {1}


def test_interrupted_delivery_is_due_again_at_once(
    fake_server: Any, open_outbox: Any, clock: Clock
) -> None:
    server = fake_server()
    outbox = open_outbox()
    message_id = outbox.enqueue(protected(BOB))

    class Interrupted(SMTPTransport):
        def send(self, message: Any, **options: Any) -> Any:
            super().send(message, **options)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt), Interrupted(plain(server.port)) as transport:
        outbox.deliver_due(transport)
    state = outbox.status(message_id).recipient(BOB)
    assert (state.status, state.next_attempt_at) == (OutboxStatus.DEFERRED, T0)
    assert "may or may not have been delivered" in state.last_reply
    (report,) = deliver(outbox, plain(server.port))
    assert report.status.sent == (BOB,)
    assert len(server.messages) == 2


# --- what is stored ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["plain", "signed", "bytes", "pgp-signed"])
def test_unprotected_mail_is_refused_at_enqueue(open_outbox: Any, kind: str) -> None:
    alice = throwaway_identity("Alice", email=ALICE)
    built = MessageBuilder().from_addr(ALICE).to(BOB).subject("Hi").text("Hello\n").build()
    item: Any = {
        "plain": built,
        "signed": securemail.sign(built, alice) if kind == "signed" else None,
        "bytes": wire.to_bytes(built),
        "pgp-signed": (
            b"From: alice@example.org\r\nTo: bob@example.org\r\nContent-Type: multipart/"
            b'encrypted; protocol="application/pgp-signature"; boundary=x\r\n\r\n--x--\r\n'
        ),
    }[kind]
    outbox = open_outbox()
    with pytest.raises(ProtectionRequiredError):
        outbox.enqueue(item)
    assert outbox.pending() == ()
    assert list(outbox.spool_directory.iterdir()) == []


def test_bcc_header_is_refused_like_the_transport_does(open_outbox: Any) -> None:
    data = protected(BOB).replace(b"To:", b"Bcc: carol@example.org\r\nTo:", 1)
    outbox = open_outbox()
    with pytest.raises(BccHeaderError):
        outbox.enqueue(data)
    with pytest.raises(InputError, match="no recipients"):
        outbox.enqueue(protected(BOB), recipients=[])
    assert outbox.pending() == ()


def test_unprotected_mail_when_allowed(fake_server: Any, open_outbox: Any) -> None:
    server = fake_server()
    outbox = open_outbox(allow_unprotected=True)
    data = b"From: alice@example.org\r\nTo: bob@example.org\r\nSubject: Hi\r\n\r\nHello\r\n"
    message_id = outbox.enqueue(data, mail_from="", recipients=[CAROL])
    assert outbox.status(message_id).mail_from == ""
    (report,) = deliver(outbox, plain(server.port))
    assert report.status.sent == (CAROL,)
    assert any(line.startswith(b"MAIL FROM:<> ") for line in server.lines)


def test_reopening_shows_the_same_state(fake_server: Any, tmp_path: Path, clock: Clock) -> None:
    server = fake_server(rcpt_replies={CAROL: "450 4.2.1 Mailbox busy"})
    path = tmp_path / "outbox.sqlite"
    with Outbox(path, clock=clock) as outbox:
        queued = outbox.enqueue(protected(BOB), mail_from=ALICE, recipients=[BOB])
        mixed = outbox.enqueue(protected(BOB, CAROL))
        before_queued = outbox.status(queued)
        with SMTPTransport(plain(server.port)) as transport:
            outbox.deliver_due(transport, limit=1)
            outbox.deliver_due(transport, limit=1)
        before = (outbox.status(queued), outbox.status(mixed), outbox.pending())
    assert before_queued.queued == (BOB,)
    with Outbox(path, clock=clock) as reopened:
        assert (reopened.status(queued), reopened.status(mixed), reopened.pending()) == before
    assert before[1].deferred == (CAROL,)
    assert before[2] == (before[1],)


def test_purge_removes_finished_messages(fake_server: Any, open_outbox: Any, clock: Clock) -> None:
    server = fake_server()
    outbox = open_outbox(keep_sent=True, inline_limit=100)
    message_id = outbox.enqueue(protected(BOB))
    waiting = outbox.enqueue(protected(CAROL))
    with SMTPTransport(plain(server.port)) as transport:
        outbox.deliver_due(transport, limit=1)
    status = outbox.status(message_id)
    assert status.done and status.stored  # keep_sent
    assert len(list(outbox.spool_directory.iterdir())) == 2

    orphan = outbox.spool_directory / "left-by-a-crash.msg.tmp"
    orphan.write_bytes(b"x")
    young = outbox.spool_directory / "being-written.msg.tmp"
    young.write_bytes(b"x")
    old = time.time() - 2 * HOUR
    os.utime(orphan, (old, old))

    clock.advance(HOUR)
    assert outbox.purge(older_than=2 * HOUR) == 0
    assert outbox.status(message_id).done
    assert outbox.purge(older_than=HOUR) == 1
    with pytest.raises(UnknownMessageError) as caught:
        outbox.status(message_id)
    assert caught.value.message_id == message_id
    assert isinstance(caught.value, LookupError)
    remaining = {p.name for p in outbox.spool_directory.iterdir()}
    assert remaining == {f"{waiting}.msg", young.name}
    assert outbox.status(waiting).queued == (CAROL,)


def test_not_an_outbox(tmp_path: Path) -> None:
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(OutboxError, match="database error"):
        Outbox(junk)

    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE something (x)")
    db.close()
    with pytest.raises(OutboxError, match="not an outbox"):
        Outbox(other)

    newer = tmp_path / "newer.sqlite"
    Outbox(newer).close()
    with sqlite3.connect(newer) as db:
        db.execute("UPDATE schema_version SET version = 99")
    db.close()
    with pytest.raises(OutboxError, match="schema version 99"):
        Outbox(newer)

    with pytest.raises(OutboxError, match="cannot create"):
        Outbox(tmp_path / "no" / "such" / "dir.sqlite")
    assert issubclass(OutboxError, SecureMailError)


def test_logs_name_messages_not_their_content(
    fake_server: Any, open_outbox: Any, caplog: pytest.LogCaptureFixture
) -> None:
    server = fake_server(rcpt_replies={CAROL: "450 4.2.1 Mailbox busy"})
    caplog.set_level(logging.DEBUG, logger="securemail")
    outbox = open_outbox()
    data = protected(BOB, CAROL)
    message_id = outbox.enqueue(data)
    deliver(outbox, plain(server.port))
    text = caplog.text
    assert message_id in text
    body = data.split(b"\r\n\r\n", 1)[1].split(b"\r\n")[0].decode()
    assert body not in text


# --- 64 MiB in bounded memory --------------------------------------------------------------------


class LazyProtected:
    """An S/MIME-looking message of about ``size`` bytes, made as it is read (base64 lines
    of 76 characters), hashed on the way out."""

    def __init__(self, size: int) -> None:
        line = base64.b64encode(bytes(range(57))) + b"\r\n"
        self._block = bytearray(line * (65536 // len(line)))
        self._pending = memoryview(_HEAD.format(sender=ALICE, to=BOB).encode("ascii"))
        self._blocks = -(-size // len(self._block))
        self._index = 0
        self.digest = hashlib.sha256()
        self.size = 0

    def readinto(self, buffer: bytearray | memoryview) -> int:
        if not self._pending:
            if self._index == self._blocks:
                return 0
            self._block[:8] = b"%08x" % self._index  # every block different
            self._index += 1
            self._pending = memoryview(self._block)
        count = min(len(buffer), len(self._pending))
        buffer[:count] = self._pending[:count]
        self.digest.update(self._pending[:count])
        self.size += count
        self._pending = self._pending[count:]
        return count


@pytest.mark.slow
def test_64_mib_enqueued_and_delivered_in_bounded_memory(
    pki: PKI, tmp_path: Path, open_outbox: Any
) -> None:
    pem = tmp_path / "server.pem"
    pki.good.private_key_and_cert_chain_pem.write_to_path(str(pem))
    server = subprocess.Popen(
        [sys.executable, "-c", _SINK_SERVER, str(pem)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        outbox = open_outbox()
        source = LazyProtected(64 * 1024 * 1024)
        tracemalloc.start()
        try:
            message_id = outbox.enqueue(source)
            spooled = outbox.status(message_id)
            with SMTPTransport(config_for(port, ca_data=pki.ca_pem)) as transport:
                (report,) = outbox.deliver_due(transport)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert server.wait(timeout=60) == 0
    finally:
        server.kill()
    assert spooled.size == source.size > 64 * 1024 * 1024
    assert report.result is not None
    # The sink hashes what it received, un-stuffed: the bytes exactly as enqueued.
    assert report.result.reply == f"sha256={source.digest.hexdigest()} size={source.size}"
    assert report.status.sent == (BOB,)
    assert list(outbox.spool_directory.iterdir()) == []
    assert peak < 4 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB"
