"""AsyncSMTPTransport against the servers of the synchronous tests: aiosmtpd with STARTTLS
and trustme certificates, and the scripted fake server.

Most scenarios run on both transports (``transport_type``), written once against the
synchronous interface: the async transport is driven on an event loop of its own by
:class:`AsyncDriver`. The same expectations for both is the evidence that they behave
alike: same results, same errors, same commands seen by the server. The deadline tests,
the 64 MiB test and what only the async transport has (async sources, concurrent sends,
cancellation) run on the async transport alone; their synchronous counterparts are in
test_faults.py and test_data.py.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import io
import logging
import smtplib
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

from securemail import wire
from securemail.errors import (
    BccHeaderError,
    EightBitUnsupportedError,
    HeaderInjectionError,
    InputError,
    MessageTooLargeError,
    ProtectionRequiredError,
    SMTPAuthError,
    SMTPConnectionError,
    SMTPTimeoutError,
    TLSError,
    TLSRequiredError,
)
from securemail.results import ProtectedMessage
from securemail.transport import RecipientStatus, SendResult, SMTPConfig, SMTPTransport
from securemail.transport.asyncsmtp import AsyncSMTPTransport, _esmtp_features, send_async

from .conftest import PASSWORD, PKI, USER, Conn, FakeSMTP, RealServer, config_for, drip
from .conftest import server_context as tls_server
from .test_data import _SINK_SERVER, DOT_BODIES, Generated, expected, unstuff
from .test_faults import DropAfterDot, DropMidData, Stalls
from .test_faults import message as addressed
from .test_smtp import message

BOB, CAROL, DAVE = "bob@example.org", "carol@example.org", "dave@example.org"


class AsyncDriver:
    """An :class:`AsyncSMTPTransport` behind :class:`SMTPTransport`'s synchronous
    interface, each call run to completion on the driver's own event loop."""

    def __init__(self, config: SMTPConfig) -> None:
        self._runner = asyncio.Runner()
        self._closed = False
        self.transport = AsyncSMTPTransport(config)

    def __enter__(self) -> AsyncDriver:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def send(self, item: Any, **envelope: Any) -> SendResult:
        return self._runner.run(self.transport.send(item, **envelope))

    def connect(self) -> None:
        self._runner.run(self.transport.connect())

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._runner.run(self.transport.close())
        finally:
            self._runner.close()

    @property
    def connected(self) -> bool:
        return self.transport.connected

    @property
    def encrypted(self) -> bool:
        return self.transport.encrypted

    @property
    def extensions(self) -> dict[str, str]:
        return self.transport.extensions


Transport = Callable[[SMTPConfig], Any]


@pytest.fixture(params=["sync", "async"])
def transport_type(request: pytest.FixtureRequest) -> Iterator[Transport]:
    """``transport_type(config)``: an SMTPTransport, or an AsyncDriver; closed at the end."""
    made: list[Any] = []

    def make(config: SMTPConfig) -> Any:
        transport = SMTPTransport(config) if request.param == "sync" else AsyncDriver(config)
        made.append(transport)
        return transport

    yield make
    for transport in made:
        transport.close()


def send_one(make: Transport, config: SMTPConfig, item: Any, **envelope: Any) -> SendResult:
    with make(config) as transport:
        result: SendResult = transport.send(item, **envelope)
        return result


def verified(server: RealServer | FakeSMTP, pki: PKI, **options: Any) -> SMTPConfig:
    return config_for(server.port, ca_data=pki.ca_pem, **options)


def plain(server: FakeSMTP, **options: Any) -> SMTPConfig:
    return config_for(server.port, tls="opportunistic", **options)


# --- TLS and AUTH against aiosmtpd ---------------------------------------------------------------


def test_delivers_byte_identical_over_verified_starttls(
    real_server: Any, pki: PKI, transport_type: Transport
) -> None:
    server = real_server()
    sent = message(bcc=(CAROL,))
    with transport_type(verified(server, pki)) as transport:
        result = transport.send(sent)
        assert transport.encrypted
        assert "starttls" not in transport.extensions
    assert result.ok
    assert result.delivered == (BOB, CAROL)
    assert (result.code, result.queue_id) == (250, "REAL1")
    assert result.tls is not None and result.tls.verified  # the same account as the sync one
    assert result.tls.version in ("TLSv1.2", "TLSv1.3") and result.tls.certificate_sha256
    (received,) = server.messages
    assert received.mail_from == "alice@example.org"
    assert received.rcpt_tos == [BOB, CAROL]
    assert received.content == wire.to_bytes(sent)
    assert server.verbs() == ["EHLO", "STARTTLS", "EHLO", "MAIL", "RCPT", "RCPT", "DATA", "QUIT"]


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_authenticates_only_after_tls(
    real_server: Any, pki: PKI, transport_type: Transport, mechanism: str
) -> None:
    other = {"PLAIN": "LOGIN", "LOGIN": "PLAIN"}[mechanism]
    server = real_server(auth_exclude_mechanism=[other])
    config = verified(server, pki, username=USER, password=PASSWORD)
    assert send_one(transport_type, config, message()).ok
    assert server.logins == [(USER, PASSWORD)]
    verbs = server.verbs()
    assert verbs.index("STARTTLS") < verbs.index("AUTH") < verbs.index("MAIL")
    auth = next(line for line in server.lines if line.upper().startswith(b"AUTH"))
    assert auth.split()[1].decode() == mechanism


def test_wrong_password_raises_before_mail(
    real_server: Any, pki: PKI, transport_type: Transport
) -> None:
    server = real_server()
    config = verified(server, pki, username=USER, password="wrong")
    with pytest.raises(SMTPAuthError) as caught:
        send_one(transport_type, config, message())
    assert caught.value.code == 535
    assert "wrong" not in str(caught.value)
    assert "MAIL" not in server.verbs()


@pytest.mark.parametrize(
    ("cert_name", "why"),
    [("other_name", "mismatch"), ("stranger_cert", "issuer"), ("expired", "expired")],
)
def test_bad_certificate_stops_before_auth_and_mail(
    real_server: Any, pki: PKI, transport_type: Transport, cert_name: str, why: str
) -> None:
    server = real_server(getattr(pki, cert_name))
    config = verified(server, pki, username=USER, password=PASSWORD)
    with pytest.raises(TLSRequiredError) as caught:
        send_one(transport_type, config, message())
    assert caught.value.kind == "certificate"
    assert why in caught.value.detail.lower()
    assert server.verbs() == ["EHLO", "STARTTLS"]
    assert server.logins == []
    assert server.messages == []


def test_server_hostname_names_the_certificate(
    real_server: Any, pki: PKI, transport_type: Transport
) -> None:
    server = real_server(pki.other_name)
    config = verified(server, pki, server_hostname="mail.example.org")
    assert send_one(transport_type, config, message()).ok


def test_no_starttls_offered_stops_before_mail(
    real_server: Any, pki: PKI, transport_type: Transport
) -> None:
    server = real_server(starttls=False, auth_require_tls=False)
    config = verified(server, pki, username=USER, password=PASSWORD)
    with pytest.raises(TLSRequiredError) as caught:
        send_one(transport_type, config, message())
    assert caught.value.kind == "starttls-not-offered"
    assert server.verbs() == ["EHLO", "QUIT"]
    assert server.logins == []


@pytest.mark.parametrize(("cert_name", "ok"), [("good", True), ("stranger_cert", False)])
def test_implicit_tls_verifies(
    real_server: Any, pki: PKI, transport_type: Transport, cert_name: str, ok: bool
) -> None:
    server = real_server(getattr(pki, cert_name), implicit=True)
    config = verified(server, pki, tls="implicit")
    if ok:
        assert send_one(transport_type, config, message()).ok
        assert "STARTTLS" not in server.verbs()
        return
    with pytest.raises(TLSRequiredError) as caught:
        send_one(transport_type, config, message())
    assert caught.value.kind == "certificate"
    assert server.lines == []


def test_modes_that_do_not_verify(real_server: Any, pki: PKI, transport_type: Transport) -> None:
    untrusted = real_server(pki.stranger_cert)
    for mode in ("required", "opportunistic"):
        with transport_type(config_for(untrusted.port, tls=mode)) as transport:
            assert transport.send(message()).ok
            assert transport.encrypted
    cleartext = real_server(starttls=False)
    with pytest.raises(TLSRequiredError):
        send_one(transport_type, config_for(cleartext.port, tls="required"), message())
    with transport_type(config_for(cleartext.port, tls="opportunistic")) as transport:
        assert transport.send(message()).ok
        assert not transport.encrypted
    assert cleartext.verbs().count("MAIL") == 1


def test_credentials_never_sent_unencrypted(real_server: Any, transport_type: Transport) -> None:
    server = real_server(starttls=False, auth_require_tls=False)
    config = config_for(server.port, tls="opportunistic", username=USER, password=PASSWORD)
    with pytest.raises(TLSRequiredError) as caught:
        send_one(transport_type, config, message())
    assert caught.value.kind == "auth-without-tls"
    assert "AUTH" not in server.verbs()


def test_many_messages_over_one_connection(
    real_server: Any, pki: PKI, transport_type: Transport
) -> None:
    server = real_server()
    with transport_type(verified(server, pki)) as transport:
        results = [transport.send(message(text=f"Message {n}.\n")) for n in range(3)]
    assert all(r.ok for r in results)
    verbs = server.verbs()
    assert (verbs.count("STARTTLS"), verbs.count("DATA"), verbs.count("RSET")) == (1, 3, 2)


def test_connection_refused(pki: PKI, transport_type: Transport) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(SMTPConnectionError) as caught:
        send_one(transport_type, config_for(port, ca_data=pki.ca_pem), message())
    assert caught.value.temporary
    assert caught.value.code is None


# --- what is sent --------------------------------------------------------------------------------


WITH_BCC = b"From: a@example.org\r\nTo: b@example.org\r\nBcc: c@example.org\r\n\r\nHi\r\n"


@pytest.mark.parametrize(
    ("item", "options", "error"),
    [
        (WITH_BCC, {}, BccHeaderError),
        (message(bcc=(CAROL,)), {"require_protection": True}, ProtectionRequiredError),
        (message(), {"envelope": {"recipients": [BOB + "\r\nDATA"]}}, HeaderInjectionError),
        (message(), {"envelope": {"mail_from": "a@example.org\nRSET"}}, HeaderInjectionError),
        (message(), {"envelope": {"recipients": BOB}}, InputError),
    ],
)
def test_refused_before_connecting(
    real_server: Any, pki: PKI, transport_type: Transport, item: Any, options: Any, error: type
) -> None:
    server = real_server()
    options = dict(options)
    envelope = options.pop("envelope", {})
    with pytest.raises(error):
        send_one(transport_type, verified(server, pki, **options), item, **envelope)
    assert server.lines == []


def test_protected_message_carries_its_envelope(
    real_server: Any, pki: PKI, transport_type: Transport
) -> None:
    server = real_server()
    data = wire.to_bytes(message())
    protected = ProtectedMessage(data, "alice@example.org", (BOB, "hidden@example.org"))
    assert send_one(transport_type, verified(server, pki), protected).ok
    (received,) = server.messages
    assert received.rcpt_tos == [BOB, "hidden@example.org"]
    assert received.content == data


def test_size_and_8bitmime(real_server: Any, pki: PKI, transport_type: Transport) -> None:
    server = real_server()
    data = "From: alice@example.org\r\nTo: bob@example.org\r\nContent-Type: text/plain; "
    data += "charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGrüße\r\n"
    assert send_one(transport_type, verified(server, pki), data.encode()).ok
    (received,) = server.messages
    assert received.mail_options == [f"SIZE={len(data.encode())}", "BODY=8BITMIME"]
    assert received.content == data.encode()

    small = real_server(data_size_limit=1000)
    with pytest.raises(MessageTooLargeError):
        send_one(transport_type, verified(small, pki), message(text="Many words. " * 100))
    seven_bit = real_server(decode_data=True)  # aiosmtpd then offers no 8BITMIME
    with pytest.raises(EightBitUnsupportedError):
        send_one(transport_type, verified(seven_bit, pki), data.encode())
    assert "MAIL" not in small.verbs() + seven_bit.verbs()


def test_streams_a_file_with_lf_line_ends(
    real_server: Any, pki: PKI, transport_type: Transport, tmp_path: Path
) -> None:
    server = real_server()
    path = tmp_path / "message.eml"
    lf = wire.to_bytes(message(text="Line one.\n.Leading dot.\n")).replace(b"\r\n", b"\n")
    path.write_bytes(lf)
    assert send_one(transport_type, verified(server, pki), path).ok
    with path.open("rb") as file:
        assert send_one(transport_type, verified(server, pki), file).ok
    first, second = server.messages
    assert first.content == second.content == wire.canonicalize(lf)
    assert first.mail_options == [f"SIZE={len(lf)}", "BODY=8BITMIME"]


@pytest.mark.parametrize("body", DOT_BODIES)
def test_dot_bodies_arrive_as_one_message(
    real_server: Any, fake_server: Any, pki: PKI, transport_type: Transport, body: bytes
) -> None:
    data = b"From: alice@example.org\r\nTo: bob@example.org\r\nSubject: dots\r\n\r\n" + body
    real = real_server()
    with transport_type(verified(real, pki)) as transport:
        assert transport.send(data).ok
        assert transport.send(b"From: alice@example.org\r\nTo: bob@example.org\r\n\r\nnext\r\n").ok
    first, second = real.messages
    assert first.content == expected(data)
    assert second.content.endswith(b"next\r\n")

    raw = fake_server()
    assert send_one(transport_type, plain(raw), data).ok
    (stream,) = raw.messages
    assert unstuff(stream) == expected(data)  # one terminator, at the end; no bare CR/LF


# --- STARTTLS faults -----------------------------------------------------------------------------


@pytest.mark.parametrize("reply", ["454 4.7.0 TLS not available", "502 5.5.1 Not implemented"])
def test_refused_starttls_stops_required_modes(
    fake_server: Any, pki: PKI, transport_type: Transport, reply: str
) -> None:
    server = fake_server(tls=tls_server(pki.good), starttls_reply=reply)
    config = verified(server, pki, username=USER, password=PASSWORD)
    with pytest.raises(TLSRequiredError) as caught:
        send_one(transport_type, config, message())
    assert caught.value.kind == "starttls-refused"
    assert reply[:3] in caught.value.detail
    assert server.verbs() == ["EHLO", "STARTTLS", "QUIT"]


def test_refused_starttls_is_plaintext_when_opportunistic(
    fake_server: Any, pki: PKI, transport_type: Transport
) -> None:
    server = fake_server(tls=tls_server(pki.good), starttls_reply="454 4.7.0 Not now")
    with transport_type(plain(server)) as transport:
        assert transport.send(message()).ok
        assert not transport.encrypted
    assert server.verbs()[:3] == ["EHLO", "STARTTLS", "MAIL"]


@pytest.mark.parametrize("tls", ["required-verify", "opportunistic"])
def test_bytes_pipelined_after_starttls_go_ahead_are_refused(
    fake_server: Any, pki: PKI, transport_type: Transport, tls: str
) -> None:
    injected = "220 2.0.0 Ready\r\n250-fake.test\r\n250 AUTH PLAIN"
    server = fake_server(tls=tls_server(pki.good), starttls_reply=injected)
    options: dict[str, Any] = {"ca_data": pki.ca_pem} if tls == "required-verify" else {}
    config = config_for(server.port, tls=tls, username=USER, password=PASSWORD, **options)
    with pytest.raises(TLSError) as caught:
        send_one(transport_type, config, message())
    assert caught.value.kind == "data-after-starttls"
    assert isinstance(caught.value, TLSRequiredError) == (tls == "required-verify")
    assert server.verbs() == ["EHLO", "STARTTLS"]


def test_injection_arriving_late_still_stops_the_session(
    fake_server: Any, pki: PKI, transport_type: Transport
) -> None:
    class LateInjection(FakeSMTP):
        def on_starttls(self, conn: Conn, line: bytes) -> bool | None:
            conn.send("220 2.0.0 Ready")
            time.sleep(0.2)
            conn.send("250-fake.test", "250 AUTH PLAIN")
            time.sleep(0.5)
            return False

    server = fake_server(LateInjection, tls=tls_server(pki.good))
    config = verified(server, pki, username=USER, password=PASSWORD)
    with pytest.raises(TLSRequiredError) as caught, transport_type(config) as transport:
        transport.connect()
    assert caught.value.kind in ("data-after-starttls", "handshake")
    assert server.verbs() == ["EHLO", "STARTTLS"]


def test_capabilities_come_only_from_the_ehlo_after_tls(
    fake_server: Any, pki: PKI, transport_type: Transport
) -> None:
    server = fake_server(
        tls=tls_server(pki.good),
        capabilities=("AUTH PLAIN", "SIZE 10"),
        tls_capabilities=("8BITMIME",),
    )
    with transport_type(verified(server, pki)) as transport:
        assert transport.send(message()).ok  # the SIZE 10 seen before TLS is forgotten
        assert transport.extensions == {"8bitmime": ""}
    mail = next(line for line in server.lines if line.startswith(b"MAIL"))
    assert b"SIZE=" not in mail
    with (
        pytest.raises(SMTPAuthError, match="does not offer AUTH"),
        transport_type(verified(server, pki, username=USER, password=PASSWORD)) as transport,
    ):
        transport.connect()
    assert "AUTH" not in server.verbs()


# --- replies and lost connections ----------------------------------------------------------------


def test_rcpt_mix_delivered_deferred_failed(fake_server: Any, transport_type: Transport) -> None:
    server = fake_server(
        rcpt_replies={CAROL: "450 4.2.1 Mailbox busy", DAVE: "550 5.1.1 No such user"}
    )
    result = send_one(transport_type, plain(server), addressed(BOB, CAROL, DAVE))
    assert [(r.address, r.status, r.code, r.reply) for r in result.recipients] == [
        (BOB, RecipientStatus.DELIVERED, 250, "2.0.0 Ok: queued as FAKE42"),
        (CAROL, RecipientStatus.DEFERRED, 450, "4.2.1 Mailbox busy"),
        (DAVE, RecipientStatus.FAILED, 550, "5.1.1 No such user"),
    ]
    assert result.queue_id == "FAKE42"
    assert server.verbs().count("DATA") == 1


def test_no_recipient_accepted_sends_no_data(fake_server: Any, transport_type: Transport) -> None:
    server = fake_server(rcpt_replies={BOB: "550 5.1.1 No such user", CAROL: "451 4.3.0 Later"})
    with transport_type(plain(server)) as transport:
        result = transport.send(addressed(BOB, CAROL))
        assert (result.failed, result.deferred) == ((BOB,), (CAROL,))
        assert "DATA" not in server.verbs()
        assert transport.send(addressed(DAVE)).ok  # the connection is still good
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
    fake_server: Any, transport_type: Transport, step: str, reply: str, status: RecipientStatus
) -> None:
    server = fake_server(rcpt_replies={DAVE: "550 5.1.1 No such user"}, **{step: reply})
    result = send_one(transport_type, plain(server), addressed(BOB, CAROL, DAVE))
    expected_dave = RecipientStatus.FAILED if step != "mail_reply" else status
    assert [r.status for r in result.recipients] == [status, status, expected_dave]
    assert (result.code, result.reply) == (int(reply[:3]), reply[4:])
    assert len(server.messages) == (1 if step == "final_reply" else 0)


@pytest.mark.parametrize(
    ("greeting", "temporary"),
    [("421 4.3.2 Service shutting down", True), ("554 5.3.2 No SMTP service here", False)],
)
def test_refused_greeting(
    fake_server: Any, transport_type: Transport, greeting: str, temporary: bool
) -> None:
    server = fake_server(greeting=greeting)
    with pytest.raises(SMTPConnectionError) as caught:
        send_one(transport_type, plain(server), addressed())
    assert caught.value.code == int(greeting[:3])
    assert caught.value.temporary is temporary
    assert greeting[4:] in caught.value.reply
    assert server.verbs() in ([], ["QUIT"])


def test_greeting_line_too_long(fake_server: Any, transport_type: Transport) -> None:
    server = fake_server(greeting="220 " + "x" * 9000)
    with pytest.raises(SMTPConnectionError, match="longer than 8192"):
        send_one(transport_type, plain(server), addressed())


def test_421_during_rcpt_defers_everyone_and_reconnects(
    fake_server: Any, transport_type: Transport
) -> None:
    server = fake_server(rcpt_replies={CAROL: "421 4.7.0 Too many errors, closing"})
    with transport_type(plain(server)) as transport:
        result = transport.send(addressed(BOB, CAROL, DAVE))
        assert [r.status for r in result.recipients] == [RecipientStatus.DEFERRED] * 3
        assert {r.code for r in result.recipients} == {421}
        assert not transport.connected
        assert transport.send(addressed(DAVE)).ok
    assert server.connections == 2


def test_helo_fallback(fake_server: Any, transport_type: Transport) -> None:
    class NoEhlo(FakeSMTP):
        def on_ehlo(self, conn: Conn, line: bytes) -> bool | None:
            conn.send("502 5.5.2 Error: command not recognized")
            return None

    server = fake_server(NoEhlo)
    assert send_one(transport_type, plain(server), addressed()).ok
    assert server.verbs()[:3] == ["EHLO", "HELO", "MAIL"]
    with pytest.raises(TLSRequiredError):
        send_one(transport_type, config_for(server.port, tls="required"), addressed())


@pytest.mark.parametrize("server_class", [DropMidData, DropAfterDot])
def test_connection_lost_after_data_started_defers(
    fake_server: Any, transport_type: Transport, server_class: type[FakeSMTP]
) -> None:
    server = fake_server(server_class, rcpt_replies={DAVE: "550 5.1.1 No such user"})
    big = addressed(BOB, CAROL, DAVE, text="All work and no play. " * 200_000)
    with transport_type(plain(server)) as transport:
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
    assert len(server.messages) == (0 if server_class is DropMidData else 1)


def test_connection_lost_before_data_defers(fake_server: Any, transport_type: Transport) -> None:
    class DropAtRcpt(FakeSMTP):
        def on_rcpt(self, conn: Conn, line: bytes) -> bool | None:
            return False if CAROL.encode() in line else super().on_rcpt(conn, line)

    server = fake_server(DropAtRcpt)
    result = send_one(transport_type, plain(server), addressed(BOB, CAROL))
    assert result.deferred == (BOB, CAROL)
    assert "before the message was sent" in result.recipient(BOB).reply


def test_reconnects_when_the_server_closed_the_idle_connection(
    fake_server: Any, transport_type: Transport
) -> None:
    class OneMessagePerConnection(FakeSMTP):
        def after_data(self, conn: Conn) -> bool | None:
            conn.send(self.final_reply)
            return False

    server = fake_server(OneMessagePerConnection)
    with transport_type(plain(server)) as transport:
        results = [transport.send(addressed()) for _ in range(3)]
    assert all(r.ok for r in results)
    assert (server.connections, len(server.messages)) == (3, 3)


def test_source_failure_drops_the_connection_before_the_dot(
    fake_server: Any, transport_type: Transport
) -> None:
    server = fake_server()
    with pytest.raises(OSError, match="disk on fire"), transport_type(plain(server)) as t:
        t.send(Stalls(addressed(text="Some text.\n" * 50_000)))
    assert "DATA" in server.verbs()
    assert server.messages == []


def test_eight_bit_found_mid_stream_without_8bitmime(
    fake_server: Any, transport_type: Transport
) -> None:
    server = fake_server(capabilities=("SIZE 100000000",))
    data = addressed(text="Plain ASCII for a while.\n" * 20_000) + "Grüße\r\n".encode()
    with pytest.raises(EightBitUnsupportedError), transport_type(plain(server)) as t:
        t.send(io.BytesIO(data))
    assert server.messages == []


# --- deadlines (async; the synchronous ones are in test_faults.py) -------------------------------


def test_drip_fed_greeting_hits_the_deadline(fake_server: Any) -> None:
    class DripGreeting(FakeSMTP):
        def greet(self, conn: Conn) -> bool | None:
            drip(conn, "220 " + "x" * 40 + "\r\n")
            return None

    server = fake_server(DripGreeting)
    config = plain(server, deadlines={"greeting": 1.0, "quit": 1.0})
    started = time.monotonic()
    with pytest.raises(SMTPTimeoutError) as caught:
        asyncio.run(send_async(addressed(), config))
    elapsed = time.monotonic() - started
    assert (caught.value.stage, caught.value.seconds) == ("greeting", 1.0)
    assert caught.value.temporary
    assert elapsed < 3, elapsed


def test_drip_fed_final_reply_defers(fake_server: Any) -> None:
    class DripFinal(FakeSMTP):
        def after_data(self, conn: Conn) -> bool | None:
            drip(conn, "250 2.0.0 Ok: queued as SLOW1" + "x" * 30 + "\r\n")
            return None

    server = fake_server(DripFinal)
    config = plain(server, deadlines={"data_done": 1.0, "quit": 1.0})

    async def scenario() -> tuple[SendResult, bool]:
        async with AsyncSMTPTransport(config) as transport:
            return await transport.send(addressed(BOB, CAROL)), transport.connected

    started = time.monotonic()
    result, connected = asyncio.run(scenario())
    elapsed = time.monotonic() - started
    assert not connected
    assert result.deferred == (BOB, CAROL)
    assert "deadline of 1 s passed during end of DATA" in result.recipient(BOB).reply
    assert elapsed < 3, elapsed


def test_silent_rcpt_defers(fake_server: Any) -> None:
    class Silent(FakeSMTP):
        def on_rcpt(self, conn: Conn, line: bytes) -> bool | None:
            return None

    server = fake_server(Silent)
    config = plain(server, deadlines={"rcpt": 0.5, "quit": 0.5})
    result = asyncio.run(send_async(addressed(BOB, CAROL), config))
    assert result.deferred == (BOB, CAROL)
    assert "gave up waiting (deadline of 0.5 s passed during RCPT)" in result.recipient(BOB).reply


def test_tls_handshake_stall_hits_the_deadline(fake_server: Any, pki: PKI) -> None:
    class NoHandshake(FakeSMTP):
        def on_starttls(self, conn: Conn, line: bytes) -> bool | None:
            conn.send("220 2.0.0 Ready")
            time.sleep(1.5)  # ... and never a ServerHello
            return False

    server = fake_server(NoHandshake, tls=tls_server(pki.good))
    config = verified(server, pki, deadlines={"command": 0.5, "quit": 1})
    with pytest.raises(SMTPTimeoutError) as caught:
        asyncio.run(AsyncSMTPTransport(config).connect())
    assert caught.value.stage == "STARTTLS"


def test_server_that_stops_reading_hits_the_data_block_deadline(fake_server: Any) -> None:
    class Deaf(FakeSMTP):
        def on_data(self, conn: Conn, line: bytes) -> bool | None:
            conn.send(self.data_reply)
            self._stopped.wait(10)  # reads nothing more until the test ends
            return False

    server = fake_server(Deaf)
    config = plain(server, deadlines={"data_block": 0.5, "quit": 0.5})
    source = Generated(64 * 1024 * 1024)  # more than the socket buffers hold
    result = asyncio.run(send_async(source, config))
    assert result.deferred == (BOB,)
    assert "deadline of 0.5 s passed during DATA block" in result.recipient(BOB).reply
    assert source.size < 32 * 1024 * 1024  # it stopped reading the source, too


# --- only the async transport: async sources, concurrency, cancellation -------------------------


def pieces(data: bytes, size: int) -> list[bytes]:
    return [data[start : start + size] for start in range(0, len(data), size)]


class Reader:
    """Like an aiofiles binary file: awaitable read(size) and readinto, iterable by line."""

    def __init__(self, data: bytes) -> None:
        self._file = io.BytesIO(data)

    async def read(self, size: int) -> bytes:
        await asyncio.sleep(0)
        return self._file.read(size)

    async def readinto(self, buffer: bytearray) -> int:
        raise AssertionError("read(size) is the interface used")

    def __aiter__(self) -> AsyncIterator[bytes]:
        raise AssertionError("read(size) is the interface used")


@pytest.mark.parametrize("cut", [1, 7, 65536])
def test_async_sources_are_streamed(fake_server: Any, cut: int) -> None:
    body = b"one\n.\ntwo\r.\rthree\r\n.\r" + b"Line of text.\n" * 20_000 + b".\n"
    data = b"From: alice@example.org\nTo: bob@example.org\nSubject: dots\n\n" + body

    async def generator() -> AsyncIterator[bytes]:
        for piece in pieces(data, cut):
            yield piece

    async def scenario() -> list[SendResult]:
        stream = asyncio.StreamReader()
        stream.feed_data(data)
        stream.feed_eof()
        async with AsyncSMTPTransport(plain(server)) as transport:
            return [
                await transport.send(generator()),
                await transport.send(Reader(data)),
                await transport.send(stream),
            ]

    server = fake_server()
    assert all(r.ok for r in asyncio.run(scenario()))
    assert [unstuff(stream) for stream in server.messages] == [expected(data)] * 3
    mails = [line for line in server.lines if line.startswith(b"MAIL")]
    assert all(b"SIZE=" not in line for line in mails)  # the size of a stream is unknown


def test_async_source_giving_text_is_refused(fake_server: Any) -> None:
    async def text() -> AsyncIterator[Any]:
        yield "From: alice@example.org\r\n\r\nHi\r\n"

    server = fake_server()
    with pytest.raises(InputError, match="not bytes"):
        asyncio.run(send_async(text(), plain(server)))
    assert server.lines == []


def test_concurrent_sends_take_turns_on_one_connection(fake_server: Any) -> None:
    server = fake_server()

    async def scenario() -> list[SendResult]:
        async with AsyncSMTPTransport(plain(server)) as transport:
            texts = [f"Message {n}.\n" for n in range(5)]
            return await asyncio.gather(*(transport.send(addressed(text=t)) for t in texts))

    assert all(r.ok for r in asyncio.run(scenario()))
    assert server.connections == 1
    assert len(server.messages) == 5
    # (FakeSMTP.verbs() stops at the first DATA: its lines hold commands only.)
    assert [line.split()[0] for line in server.lines].count(b"RSET") == 4


def test_cancelled_send_drops_the_connection_before_the_dot(fake_server: Any) -> None:
    receiving = threading.Event()

    class Slow(FakeSMTP):
        def on_data(self, conn: Conn, line: bytes) -> bool | None:
            conn.send(self.data_reply)
            receiving.set()
            time.sleep(0.5)  # the client fills the socket buffers and waits
            data = conn.read_data()
            if data is None:
                return False
            self.messages.append(data)
            return self.after_data(conn)

    server = fake_server(Slow)

    async def scenario() -> tuple[bool, SendResult]:
        async with AsyncSMTPTransport(plain(server)) as transport:
            task = asyncio.create_task(transport.send(Generated(64 * 1024 * 1024)))
            await asyncio.to_thread(receiving.wait, 10)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            connected = transport.connected
            return connected, await transport.send(addressed())

    connected, after = asyncio.run(scenario())
    assert not connected
    assert after.ok  # over a new connection
    assert server.connections == 2
    assert len(server.messages) == 1  # the cancelled message never ended with a dot
    assert unstuff(server.messages[0]).endswith(b"Hello.\r\n")


def test_send_async_and_explicit_connect(real_server: Any, pki: PKI) -> None:
    server = real_server()
    config = verified(server, pki)

    async def scenario() -> SendResult:
        transport = AsyncSMTPTransport(config)
        await transport.connect()
        await transport.connect()  # already open: nothing happens
        assert transport.encrypted
        await transport.close()
        await transport.close()
        assert not transport.connected
        return await send_async(message(), config, recipients=[CAROL])

    assert asyncio.run(scenario()).delivered == (CAROL,)
    assert server.verbs().count("STARTTLS") == 2
    assert server.messages[0].rcpt_tos == [CAROL]


def test_cram_md5(fake_server: Any, pki: PKI) -> None:
    challenge = b"<1896.697170952@fake.test>"
    answers: list[bytes] = []

    class CramMD5(FakeSMTP):
        capabilities = ("AUTH CRAM-MD5 PLAIN",)

        def on_auth(self, conn: Conn, line: bytes) -> bool | None:
            conn.send("334 " + base64.b64encode(challenge).decode())
            answers.append(base64.b64decode(conn.readline()))
            conn.send("235 2.7.0 Authentication successful")
            return None

    server = fake_server(CramMD5, tls=tls_server(pki.good))
    config = verified(server, pki, username=USER, password=PASSWORD)
    assert asyncio.run(send_async(addressed(), config)).ok
    digest = hmac.new(PASSWORD.encode(), challenge, "md5").hexdigest()
    assert answers == [f"{USER} {digest}".encode()]


@pytest.mark.parametrize(
    "reply",
    [
        b"fake.test\nPIPELINING\nSIZE 10240000\nAUTH PLAIN LOGIN\nAUTH=LOGIN\n8BITMIME",
        b"fake.test greets you\nSTARTTLS\nX-Odd_feature =x\n-bad\nAUTH  CRAM-MD5",
        b"fake.test",
    ],
)
def test_ehlo_keywords_are_parsed_as_smtplib_does(reply: bytes) -> None:
    client = smtplib.SMTP(local_hostname="client.test")
    client.putcmd = lambda *args: None  # type: ignore[method-assign]
    client.getreply = lambda: (250, reply)  # type: ignore[method-assign]
    client.ehlo()
    assert _esmtp_features(reply) == client.esmtp_features


def test_logs_commands_but_no_secrets_or_content(
    real_server: Any, pki: PKI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="securemail.transport")
    server = real_server()
    config = verified(server, pki, username=USER, password=PASSWORD)
    asyncio.run(send_async(message(text="Top secret body text.\n"), config))
    logged = caplog.text
    assert "MAIL FROM:<alice@example.org>" in logged
    assert "AUTH PLAIN [hidden]" in logged
    assert PASSWORD not in logged
    assert base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode() not in logged
    assert "Top secret" not in logged
    assert "Quarterly report" not in logged


# --- 64 MiB, bounded memory ----------------------------------------------------------------------


@pytest.mark.slow
def test_64_mib_streams_in_bounded_memory(pki: PKI, tmp_path: Path) -> None:
    # The server runs in another process: tracemalloc counts this process only.
    pem = tmp_path / "server.pem"
    pki.good.private_key_and_cert_chain_pem.write_to_path(str(pem))
    server = subprocess.Popen(
        [sys.executable, "-c", _SINK_SERVER, str(pem)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        source = Generated(64 * 1024 * 1024)

        async def scenario() -> tuple[SendResult, bool]:
            async with AsyncSMTPTransport(config_for(port, ca_data=pki.ca_pem)) as transport:
                return await transport.send(source), transport.encrypted

        tracemalloc.start()
        try:
            result, encrypted = asyncio.run(scenario())
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert server.wait(timeout=60) == 0
    finally:
        server.kill()
        if server.stdout is not None:
            server.stdout.close()
    assert encrypted
    assert result.ok
    assert source.size > 64 * 1024 * 1024
    assert result.reply == f"sha256={source.digest.hexdigest()} size={source.size}"
    assert peak < 4 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB"
