"""Faults a well-behaved server does not produce, from a scripted server that records every
command: refused STARTTLS, bytes pipelined after the STARTTLS go-ahead, per-recipient
refusals, 4xx/5xx at each step, 421, dropped connections, and drip-fed replies."""

from __future__ import annotations

import io
import time
from typing import Any

import pytest

from securemail import wire
from securemail.compose import MessageBuilder
from securemail.errors import (
    DeliveryError,
    EightBitUnsupportedError,
    SMTPAuthError,
    SMTPConnectionError,
    SMTPTimeoutError,
    TLSError,
    TLSRequiredError,
)
from securemail.transport import RecipientStatus, SendResult, SMTPTransport

from .conftest import PASSWORD, PKI, USER, Conn, FakeSMTP, config_for, drip, server_context

BOB, CAROL, DAVE = "bob@example.org", "carol@example.org", "dave@example.org"


def message(*to: str, text: str = "Hello.\n") -> bytes:
    built = (
        MessageBuilder()
        .from_addr("alice@example.org")
        .to(*(to or (BOB,)))
        .subject("Status")
        .text(text)
        .build()
    )
    return wire.to_bytes(built)


def plain(port: int, **options: Any) -> Any:
    """A configuration for a server without TLS (the faults here are not about TLS)."""
    return config_for(port, tls="opportunistic", **options)


def send(server: FakeSMTP, item: Any = None, **options: Any) -> SendResult:
    with SMTPTransport(plain(server.port, **options)) as transport:
        return transport.send(item if item is not None else message())


# --- STARTTLS ------------------------------------------------------------------------------------


@pytest.mark.parametrize("reply", ["454 4.7.0 TLS not available", "502 5.5.1 Not implemented"])
def test_refused_starttls_stops_required_modes(fake_server: Any, pki: PKI, reply: str) -> None:
    server = fake_server(tls=server_context(pki.good), starttls_reply=reply)
    config = config_for(server.port, ca_data=pki.ca_pem, username=USER, password=PASSWORD)
    with pytest.raises(TLSRequiredError) as caught, SMTPTransport(config) as transport:
        transport.send(message())
    assert caught.value.kind == "starttls-refused"
    assert reply[:3] in caught.value.detail
    assert server.verbs() == ["EHLO", "STARTTLS", "QUIT"]


def test_refused_starttls_is_plaintext_when_opportunistic(fake_server: Any, pki: PKI) -> None:
    server = fake_server(tls=server_context(pki.good), starttls_reply="454 4.7.0 Not now")
    with SMTPTransport(plain(server.port)) as transport:
        assert transport.send(message()).ok
        assert not transport.encrypted
    assert server.verbs()[:3] == ["EHLO", "STARTTLS", "MAIL"]


@pytest.mark.parametrize("tls", ["required-verify", "opportunistic"])
def test_bytes_pipelined_after_starttls_go_ahead_are_refused(
    fake_server: Any, pki: PKI, tls: str
) -> None:
    # CVE-2011-0411 family: text injected after "220" in the plaintext phase would be read
    # as the first reply inside TLS (here: an EHLO answer offering AUTH PLAIN).
    injected = "220 2.0.0 Ready\r\n250-fake.test\r\n250 AUTH PLAIN"
    server = fake_server(tls=server_context(pki.good), starttls_reply=injected)
    options: dict[str, Any] = {"ca_data": pki.ca_pem} if tls == "required-verify" else {}
    config = config_for(server.port, tls=tls, username=USER, password=PASSWORD, **options)
    with pytest.raises(TLSError) as caught, SMTPTransport(config) as transport:
        transport.send(message())
    assert caught.value.kind == "data-after-starttls"
    assert isinstance(caught.value, TLSRequiredError) == (tls == "required-verify")
    assert server.verbs() == ["EHLO", "STARTTLS"]


def test_injection_arriving_late_still_stops_the_session(fake_server: Any, pki: PKI) -> None:
    # Sent after the client has read the 220: it lands where the TLS handshake expects a
    # ServerHello, and the handshake fails; nothing is read as a reply.
    class LateInjection(FakeSMTP):
        def on_starttls(self, conn: Conn, line: bytes) -> bool | None:
            conn.send("220 2.0.0 Ready")
            time.sleep(0.2)
            conn.send("250-fake.test", "250 AUTH PLAIN")
            time.sleep(0.5)
            return False

    server = fake_server(LateInjection, tls=server_context(pki.good))
    config = config_for(server.port, ca_data=pki.ca_pem, username=USER, password=PASSWORD)
    with pytest.raises(TLSRequiredError) as caught:
        SMTPTransport(config).connect()
    assert caught.value.kind in ("data-after-starttls", "handshake")
    assert server.verbs() == ["EHLO", "STARTTLS"]


def test_capabilities_come_only_from_the_ehlo_after_tls(fake_server: Any, pki: PKI) -> None:
    server = fake_server(
        tls=server_context(pki.good),
        capabilities=("AUTH PLAIN", "SIZE 10"),
        tls_capabilities=("8BITMIME",),
    )
    config = config_for(server.port, ca_data=pki.ca_pem)
    with SMTPTransport(config) as transport:
        assert transport.send(message()).ok  # the SIZE 10 seen before TLS is forgotten
        assert transport.extensions == {"8bitmime": ""}
    mail = next(line for line in server.lines if line.startswith(b"MAIL"))
    assert b"SIZE=" not in mail

    with pytest.raises(SMTPAuthError, match="does not offer AUTH"):
        SMTPTransport(config.clone(username=USER, password=PASSWORD)).connect()
    assert "AUTH" not in server.verbs()


def test_tls_handshake_stall_hits_the_deadline(fake_server: Any, pki: PKI) -> None:
    class NoHandshake(FakeSMTP):
        def on_starttls(self, conn: Conn, line: bytes) -> bool | None:
            conn.send("220 2.0.0 Ready")
            time.sleep(1.5)  # ... and never a ServerHello
            return False

    server = fake_server(NoHandshake, tls=server_context(pki.good))
    config = config_for(server.port, ca_data=pki.ca_pem, deadlines={"command": 0.5, "quit": 1})
    with pytest.raises(SMTPTimeoutError) as caught:
        SMTPTransport(config).connect()
    assert caught.value.stage == "STARTTLS"


# --- per-recipient results -----------------------------------------------------------------------


def test_rcpt_mix_delivered_deferred_failed(fake_server: Any) -> None:
    server = fake_server(
        rcpt_replies={CAROL: "450 4.2.1 Mailbox busy", DAVE: "550 5.1.1 No such user"}
    )
    result = send(server, message(BOB, CAROL, DAVE))
    assert [(r.address, r.status, r.code) for r in result.recipients] == [
        (BOB, RecipientStatus.DELIVERED, 250),
        (CAROL, RecipientStatus.DEFERRED, 450),
        (DAVE, RecipientStatus.FAILED, 550),
    ]
    assert result.recipient(CAROL).reply == "4.2.1 Mailbox busy"
    assert result.recipient(DAVE).reply == "5.1.1 No such user"
    assert result.recipient(BOB).reply == "2.0.0 Ok: queued as FAKE42"
    assert result.queue_id == "FAKE42"
    assert (result.delivered, result.deferred, result.failed) == ((BOB,), (CAROL,), (DAVE,))
    assert not result.ok
    assert server.verbs().count("DATA") == 1
    with pytest.raises(DeliveryError) as caught:
        result.raise_for_status()
    assert caught.value.result is result
    assert not caught.value.temporary


def test_no_recipient_accepted_sends_no_data(fake_server: Any) -> None:
    server = fake_server(rcpt_replies={BOB: "550 5.1.1 No such user", CAROL: "451 4.3.0 Try later"})
    with SMTPTransport(plain(server.port)) as transport:
        result = transport.send(message(BOB, CAROL))
        assert result.failed == (BOB,)
        assert result.deferred == (CAROL,)
        assert "DATA" not in server.verbs()
        # The connection is still good for the next message.
        assert transport.send(message(DAVE)).ok
    assert server.connections == 1
    assert server.verbs().count("RSET") == 1


@pytest.mark.parametrize(
    ("step", "reply", "status"),
    [
        ("mail_reply", "451 4.3.0 Mail server busy", RecipientStatus.DEFERRED),
        ("mail_reply", "553 5.7.1 Sender rejected", RecipientStatus.FAILED),
        ("data_reply", "451 4.3.0 Local error", RecipientStatus.DEFERRED),
        ("data_reply", "554 5.5.1 No valid recipients", RecipientStatus.FAILED),
        ("data_reply", "250 2.0.0 Ok", RecipientStatus.DEFERRED),  # not the 354 expected
        ("final_reply", "451 4.3.0 Queue full", RecipientStatus.DEFERRED),
        ("final_reply", "554 5.7.1 Rejected: spam", RecipientStatus.FAILED),
    ],
)
def test_refusals_at_each_step(
    fake_server: Any, step: str, reply: str, status: RecipientStatus
) -> None:
    server = fake_server(rcpt_replies={DAVE: "550 5.1.1 No such user"}, **{step: reply})
    result = send(server, message(BOB, CAROL, DAVE))
    expected_dave = RecipientStatus.FAILED if step != "mail_reply" else status
    assert [r.status for r in result.recipients] == [status, status, expected_dave]
    assert result.code == int(reply[:3])
    assert result.reply == reply[4:]
    assert result.recipient(BOB).code == int(reply[:3])
    assert len(server.messages) == (1 if step == "final_reply" else 0)
    if step == "mail_reply":
        assert "RCPT" not in server.verbs()


def test_421_greeting(fake_server: Any) -> None:
    server = fake_server(greeting="421 4.3.2 Service shutting down")
    with pytest.raises(SMTPConnectionError) as caught:
        send(server)
    assert caught.value.code == 421
    assert caught.value.temporary
    assert "4.3.2 Service shutting down" in caught.value.reply
    assert server.verbs() in ([], ["QUIT"])


def test_554_greeting_is_not_temporary(fake_server: Any) -> None:
    server = fake_server(greeting="554 5.3.2 No SMTP service here")
    with pytest.raises(SMTPConnectionError) as caught:
        send(server)
    assert not caught.value.temporary
    assert "EHLO" not in server.verbs()


def test_421_during_rcpt_defers_everyone_and_reconnects(fake_server: Any) -> None:
    server = fake_server(rcpt_replies={CAROL: "421 4.7.0 Too many errors, closing"})
    with SMTPTransport(plain(server.port)) as transport:
        result = transport.send(message(BOB, CAROL, DAVE))
        assert [r.status for r in result.recipients] == [RecipientStatus.DEFERRED] * 3
        assert {r.code for r in result.recipients} == {421}
        assert not transport.connected
        assert transport.send(message(DAVE)).ok
    assert server.connections == 2
    assert len(server.messages) == 1


def test_greeting_line_too_long(fake_server: Any) -> None:
    server = fake_server(greeting="220 " + "x" * 9000)
    with pytest.raises(SMTPConnectionError, match="longer than 8192"):
        send(server)


def test_helo_fallback(fake_server: Any) -> None:
    class NoEhlo(FakeSMTP):
        def on_ehlo(self, conn: Conn, line: bytes) -> bool | None:
            conn.send("502 5.5.2 Error: command not recognized")
            return None

    server = fake_server(NoEhlo)
    assert send(server).ok
    assert server.verbs()[:3] == ["EHLO", "HELO", "MAIL"]
    # Without EHLO there is no STARTTLS: a required mode refuses.
    with pytest.raises(TLSRequiredError):
        SMTPTransport(config_for(server.port, tls="required")).connect()


# --- lost connections ----------------------------------------------------------------------------


class DropMidData(FakeSMTP):
    def on_data(self, conn: Conn, line: bytes) -> bool | None:
        conn.send(self.data_reply)
        conn.reader.read(100_000)
        return False  # close with the client still sending


class DropAfterDot(FakeSMTP):
    def after_data(self, conn: Conn) -> bool | None:
        return False  # the final dot arrived; close without an answer


@pytest.mark.parametrize("server_class", [DropMidData, DropAfterDot])
def test_connection_lost_after_data_started_defers(
    fake_server: Any, server_class: type[FakeSMTP]
) -> None:
    server = fake_server(server_class, rcpt_replies={DAVE: "550 5.1.1 No such user"})
    big = message(BOB, CAROL, DAVE, text="All work and no play. " * 200_000)
    with SMTPTransport(plain(server.port)) as transport:
        result = transport.send(big)
        assert not transport.connected
    assert [r.status for r in result.recipients] == [
        RecipientStatus.DEFERRED,
        RecipientStatus.DEFERRED,
        RecipientStatus.FAILED,
    ]
    lost = result.recipient(BOB)
    assert lost.code is None
    assert "connection lost" in lost.reply
    assert "may or may not have been delivered" in lost.reply
    assert result.code is None


def test_connection_lost_before_data_defers(fake_server: Any) -> None:
    class DropAtRcpt(FakeSMTP):
        def on_rcpt(self, conn: Conn, line: bytes) -> bool | None:
            if CAROL.encode() in line:
                return False
            return super().on_rcpt(conn, line)

    server = fake_server(DropAtRcpt)
    result = send(server, message(BOB, CAROL))
    assert result.deferred == (BOB, CAROL)
    assert "before the message was sent" in result.recipient(BOB).reply


def test_reconnects_when_the_server_closed_the_idle_connection(fake_server: Any) -> None:
    class OneMessagePerConnection(FakeSMTP):
        def after_data(self, conn: Conn) -> bool | None:
            conn.send(self.final_reply)
            return False

    server = fake_server(OneMessagePerConnection)
    with SMTPTransport(plain(server.port)) as transport:
        results = [transport.send(message()) for _ in range(3)]
    assert all(r.ok for r in results)
    assert server.connections == 3
    assert len(server.messages) == 3


def test_greeting_then_close(fake_server: Any) -> None:
    class Hangup(FakeSMTP):
        def greet(self, conn: Conn) -> bool | None:
            return False

    server = fake_server(Hangup)
    with pytest.raises(SMTPConnectionError) as caught:
        send(server)
    assert caught.value.temporary


# --- deadlines -----------------------------------------------------------------------------------


class DripGreeting(FakeSMTP):
    def greet(self, conn: Conn) -> bool | None:
        drip(conn, "220 " + "x" * 40 + "\r\n")
        return None


def test_drip_fed_greeting_hits_the_deadline(fake_server: Any) -> None:
    # One byte every 0.2 s keeps a per-read timeout of 1 s alive for 9 s; the deadline
    # bounds the whole reply.
    server = fake_server(DripGreeting)
    started = time.monotonic()
    with pytest.raises(SMTPTimeoutError) as caught:
        send(server, deadlines={"greeting": 1.0, "quit": 1.0})
    elapsed = time.monotonic() - started
    assert caught.value.stage == "greeting"
    assert caught.value.seconds == 1.0
    assert caught.value.temporary
    assert elapsed < 3, elapsed


def test_drip_fed_final_reply_defers(fake_server: Any) -> None:
    class DripFinal(FakeSMTP):
        def after_data(self, conn: Conn) -> bool | None:
            drip(conn, "250 2.0.0 Ok: queued as SLOW1" + "x" * 30 + "\r\n")
            return None

    server = fake_server(DripFinal)
    started = time.monotonic()
    with SMTPTransport(plain(server.port, deadlines={"data_done": 1.0, "quit": 1})) as transport:
        result = transport.send(message(BOB, CAROL))
        assert not transport.connected
    elapsed = time.monotonic() - started
    assert result.deferred == (BOB, CAROL)
    assert "deadline of 1 s passed during end of DATA" in result.recipient(BOB).reply
    assert elapsed < 3, elapsed


def test_silent_rcpt_defers(fake_server: Any) -> None:
    class Silent(FakeSMTP):
        def on_rcpt(self, conn: Conn, line: bytes) -> bool | None:
            return None  # never answers

    server = fake_server(Silent)
    result = send(server, message(BOB, CAROL), deadlines={"rcpt": 0.5, "quit": 0.5})
    assert result.deferred == (BOB, CAROL)
    assert "gave up waiting (deadline of 0.5 s passed during RCPT)" in result.recipient(BOB).reply


# --- the caller's data fails mid-message ---------------------------------------------------------


class Stalls:
    """A binary source that delivers ``good`` bytes and then raises."""

    def __init__(self, good: bytes) -> None:
        self._file = io.BytesIO(good)

    def readinto(self, buffer: bytearray | memoryview) -> int:
        count = self._file.readinto(buffer)
        if not count:
            raise OSError("disk on fire")
        return count


def test_source_failure_drops_the_connection_before_the_dot(fake_server: Any) -> None:
    server = fake_server()
    with pytest.raises(OSError, match="disk on fire"), SMTPTransport(plain(server.port)) as t:
        t.send(Stalls(message(text="Some text.\n" * 50_000)))
    assert "DATA" in server.verbs()
    assert server.messages == []  # never completed: the server discards it


def test_eight_bit_found_mid_stream_without_8bitmime(fake_server: Any) -> None:
    server = fake_server(capabilities=("SIZE 100000000",))
    data = message(text="Plain ASCII for a while.\n" * 20_000) + "Grüße\r\n".encode()
    with pytest.raises(EightBitUnsupportedError), SMTPTransport(plain(server.port)) as t:
        t.send(io.BytesIO(data))
    mail = next(line for line in server.lines if line.startswith(b"MAIL"))
    assert b"BODY=" not in mail
    assert server.messages == []
