"""SMTPTransport against a real SMTP server: aiosmtpd on loopback, STARTTLS required,
certificates made at test time with trustme.

What the server *received* is the evidence: the envelope, the exact content, and every
command line, so that "nothing was sent" is checked on the server's side.
"""

from __future__ import annotations

import hashlib
import logging
import ssl
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pydantic
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

import securemail
from securemail import wire
from securemail.compose import Message, MessageBuilder
from securemail.demo import throwaway_identity
from securemail.errors import (
    BccHeaderError,
    EightBitUnsupportedError,
    HeaderInjectionError,
    InputError,
    MalformedMessageError,
    MessageTooLargeError,
    ProtectionRequiredError,
    SMTPAuthError,
    SMTPConnectionError,
    TLSError,
    TLSRequiredError,
    TransportConfigError,
    TransportError,
)
from securemail.results import ProtectedMessage
from securemail.transport import (
    RecipientStatus,
    SendResult,
    SMTPConfig,
    SMTPTransport,
    check_encrypted,
    send,
    tls_context,
)

from .conftest import PASSWORD, PKI, USER, RealServer, config_for


def message(*, bcc: tuple[str, ...] = (), text: str = "The numbers are in.\n") -> Message:
    builder = (
        MessageBuilder()
        .from_addr("Alice <alice@example.org>")
        .to("bob@example.org")
        .subject("Quarterly report")
        .text(text)
    )
    return (builder.bcc(*bcc) if bcc else builder).build()


def send_one(server: RealServer, pki: PKI, item: Any, **options: Any) -> SendResult:
    options.setdefault("ca_data", pki.ca_pem)
    with SMTPTransport(config_for(server.port, **options)) as transport:
        return transport.send(item)


# --- required-verify: the good server ------------------------------------------------------------


def test_delivers_over_verified_starttls(real_server: Any, pki: PKI) -> None:
    server = real_server()
    sent = message(bcc=("carol@example.org",))
    with SMTPTransport(config_for(server.port, ca_data=pki.ca_pem)) as transport:
        result = transport.send(sent)
        assert transport.encrypted
        assert "starttls" not in transport.extensions

    assert result.ok
    assert result.delivered == ("bob@example.org", "carol@example.org")
    assert result.code == 250
    assert result.queue_id == "REAL1"
    assert all(r.status is RecipientStatus.DELIVERED for r in result.recipients)
    (received,) = server.messages
    assert received.mail_from == "alice@example.org"
    assert received.rcpt_tos == ["bob@example.org", "carol@example.org"]
    assert received.content == wire.to_bytes(sent)
    assert b"carol" not in received.content  # Bcc: envelope only
    assert server.verbs() == ["EHLO", "STARTTLS", "EHLO", "MAIL", "RCPT", "RCPT", "DATA", "QUIT"]


def leaf_sha256(cert: Any) -> str:
    der = x509.load_pem_x509_certificate(cert.cert_chain_pems[0].bytes()).public_bytes(
        serialization.Encoding.DER
    )
    return hashlib.sha256(der).hexdigest()


def test_result_names_the_tls_session(real_server: Any, pki: PKI) -> None:
    """For the audit log: the TLS version, cipher and the server certificate's fingerprint,
    and whether it was verified; None for a plaintext transaction."""
    verified = send_one(real_server(), pki, message())
    assert verified.tls is not None
    assert verified.tls.version in ("TLSv1.2", "TLSv1.3")
    assert verified.tls.cipher and verified.tls.verified
    assert verified.tls.certificate_sha256 == leaf_sha256(pki.good)
    unverified = send(message(), config_for(real_server(pki.stranger_cert).port, tls="required"))
    assert unverified.tls is not None and not unverified.tls.verified
    assert unverified.tls.certificate_sha256 == leaf_sha256(pki.stranger_cert)
    plain = send(message(), config_for(real_server(starttls=False).port, tls="opportunistic"))
    assert plain.ok and plain.tls is None


def test_authenticates_only_after_tls(real_server: Any, pki: PKI) -> None:
    server = real_server()
    result = send_one(server, pki, message(), username=USER, password=PASSWORD)
    assert result.ok
    assert server.logins == [(USER, PASSWORD)]
    verbs = server.verbs()
    assert verbs.index("STARTTLS") < verbs.index("AUTH") < verbs.index("MAIL")


def test_wrong_password_raises_before_mail(real_server: Any, pki: PKI) -> None:
    server = real_server()
    with pytest.raises(SMTPAuthError) as caught:
        send_one(server, pki, message(), username=USER, password="wrong")
    assert caught.value.code == 535
    assert not caught.value.temporary
    assert "wrong" not in str(caught.value)
    assert "MAIL" not in server.verbs()
    assert server.messages == []


def test_server_hostname_names_the_certificate(real_server: Any, pki: PKI) -> None:
    server = real_server(pki.other_name)
    result = send_one(server, pki, message(), server_hostname="mail.example.org")
    assert result.ok


@pytest.mark.parametrize(
    ("cert_name", "why"),
    [
        ("other_name", "mismatch"),  # issued for mail.example.org, reached as 127.0.0.1
        ("stranger_cert", "issuer"),  # from a CA the client does not trust
        ("expired", "expired"),
    ],
)
def test_bad_certificate_stops_before_auth_and_mail(
    real_server: Any, pki: PKI, cert_name: str, why: str
) -> None:
    server = real_server(getattr(pki, cert_name))
    with pytest.raises(TLSRequiredError) as caught:
        send_one(server, pki, message(), username=USER, password=PASSWORD)
    assert caught.value.kind == "certificate"
    assert why in caught.value.detail.lower()
    assert server.verbs() == ["EHLO", "STARTTLS"]
    assert server.logins == []
    assert server.messages == []


def test_no_starttls_offered_stops_before_mail(real_server: Any, pki: PKI) -> None:
    server = real_server(starttls=False, auth_require_tls=False)
    with pytest.raises(TLSRequiredError) as caught:
        send_one(server, pki, message(), username=USER, password=PASSWORD)
    assert caught.value.kind == "starttls-not-offered"
    assert server.verbs() == ["EHLO", "QUIT"]
    assert server.logins == []


# --- the other TLS modes -------------------------------------------------------------------------


def test_required_encrypts_without_verifying(real_server: Any, pki: PKI) -> None:
    server = real_server(pki.stranger_cert)
    with SMTPTransport(config_for(server.port, tls="required")) as transport:
        assert transport.send(message()).ok
        assert transport.encrypted


def test_required_still_refuses_plaintext(real_server: Any) -> None:
    server = real_server(starttls=False)
    with pytest.raises(TLSRequiredError):
        send(message(), config_for(server.port, tls="required"))
    assert "MAIL" not in server.verbs()


def test_opportunistic_uses_tls_when_offered(real_server: Any, pki: PKI) -> None:
    server = real_server(pki.stranger_cert)
    with SMTPTransport(config_for(server.port, tls="opportunistic")) as transport:
        assert transport.send(message()).ok
        assert transport.encrypted
    assert server.verbs()[:3] == ["EHLO", "STARTTLS", "EHLO"]


def test_opportunistic_sends_plaintext_when_tls_is_not_offered(
    real_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    server = real_server(starttls=False)
    with SMTPTransport(config_for(server.port, tls="opportunistic")) as transport:
        assert transport.send(message()).ok
        assert not transport.encrypted
    assert "does not offer STARTTLS" in caplog.text
    assert len(server.messages) == 1


def test_implicit_tls(real_server: Any, pki: PKI) -> None:
    server = real_server(implicit=True)
    result = send_one(server, pki, message(), tls="implicit")
    assert result.ok
    assert "STARTTLS" not in server.verbs()


def test_implicit_tls_verifies(real_server: Any, pki: PKI) -> None:
    server = real_server(pki.stranger_cert, implicit=True)
    with pytest.raises(TLSRequiredError) as caught:
        send_one(server, pki, message(), tls="implicit")
    assert caught.value.kind == "certificate"
    assert server.lines == []


def test_tls_context_settings(pki: PKI) -> None:
    verified = tls_context(SMTPConfig(host="mail.example.org", ca_data=pki.ca_pem))
    assert verified.check_hostname
    assert verified.verify_mode is ssl.CERT_REQUIRED
    assert verified.minimum_version is ssl.TLSVersion.TLSv1_2
    opportunistic = tls_context(SMTPConfig(host="mail.example.org", tls="opportunistic"))
    assert opportunistic.verify_mode is ssl.CERT_NONE
    assert opportunistic.minimum_version is ssl.TLSVersion.TLSv1_2


# --- AUTH without TLS ----------------------------------------------------------------------------


def test_credentials_never_sent_unencrypted(real_server: Any) -> None:
    server = real_server(starttls=False, auth_require_tls=False)  # offers AUTH in plaintext
    config = config_for(server.port, tls="opportunistic", username=USER, password=PASSWORD)
    with pytest.raises(TLSRequiredError) as caught:
        send(message(), config)
    assert caught.value.kind == "auth-without-tls"
    assert "AUTH" not in server.verbs()
    assert server.logins == []


def test_credentials_unencrypted_when_explicitly_allowed(real_server: Any) -> None:
    server = real_server(starttls=False, auth_require_tls=False)
    config = config_for(
        server.port,
        tls="opportunistic",
        username=USER,
        password=PASSWORD,
        allow_auth_without_tls=True,
    )
    assert send(message(), config).ok
    assert server.logins == [(USER, PASSWORD)]


# --- connection reuse ----------------------------------------------------------------------------


def test_many_messages_over_one_connection(real_server: Any, pki: PKI) -> None:
    server = real_server()
    with SMTPTransport(config_for(server.port, ca_data=pki.ca_pem)) as transport:
        results = [transport.send(message(text=f"Message {n}.\n")) for n in range(3)]
    assert all(r.ok for r in results)
    verbs = server.verbs()
    assert verbs.count("STARTTLS") == 1
    assert verbs.count("DATA") == 3
    assert verbs.count("RSET") == 2
    assert [m.content.count(b"Message ") for m in server.messages] == [1, 1, 1]


def test_connect_fails_fast(real_server: Any, pki: PKI) -> None:
    server = real_server(pki.stranger_cert)
    transport = SMTPTransport(config_for(server.port, ca_data=pki.ca_pem))
    with pytest.raises(TLSRequiredError):
        transport.connect()
    assert not transport.connected


def test_connection_refused_is_a_transport_error(pki: PKI) -> None:
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(SMTPConnectionError) as caught:
        send(message(), config_for(port, ca_data=pki.ca_pem))
    assert caught.value.temporary
    assert caught.value.code is None


# --- what is sent: envelope, Bcc, injection, protection ------------------------------------------


def test_protected_message_carries_its_envelope(real_server: Any, pki: PKI) -> None:
    server = real_server()
    data = wire.to_bytes(message())
    protected = ProtectedMessage(
        data, "alice@example.org", ("bob@example.org", "hidden@example.org")
    )
    assert send_one(server, pki, protected).ok
    (received,) = server.messages
    assert received.rcpt_tos == ["bob@example.org", "hidden@example.org"]
    assert received.content == data


def test_explicit_envelope_overrides_the_headers(real_server: Any, pki: PKI) -> None:
    server = real_server()
    with SMTPTransport(config_for(server.port, ca_data=pki.ca_pem)) as transport:
        result = transport.send(
            wire.to_bytes(message()),
            mail_from="",
            recipients=["Postmaster <postmaster@EXAMPLE.net>", "postmaster@example.NET"],
        )
    assert result.delivered == ("postmaster@EXAMPLE.net",)  # deduplicated, first spelling kept
    (received,) = server.messages
    assert received.mail_from == "<>"  # the null reverse path
    assert received.rcpt_tos == ["postmaster@EXAMPLE.net"]


@pytest.mark.parametrize(
    "item",
    [
        b"From: alice@example.org\r\nTo: bob@example.org\r\nBcc: carol@example.org\r\n\r\nHi\r\n",
        b"From: alice@example.org\nTo: bob@example.org\nresent-bcc: carol@example.org\n\nHi\n",
    ],
)
def test_bcc_header_is_refused_before_connecting(real_server: Any, pki: PKI, item: bytes) -> None:
    server = real_server()
    with pytest.raises(BccHeaderError):
        send_one(server, pki, item)
    assert server.lines == []


def test_bcc_header_on_a_message_object_is_refused(real_server: Any, pki: PKI) -> None:
    server = real_server()
    sent = EmailMessage()
    sent["From"] = "alice@example.org"
    sent["To"] = "bob@example.org"
    sent["Bcc"] = "carol@example.org"
    sent.set_content("Hi\n")
    with pytest.raises(BccHeaderError) as caught:
        send_one(server, pki, sent)
    assert caught.value.field == "Bcc"
    assert server.lines == []


@pytest.mark.parametrize(
    "envelope",
    [
        {"mail_from": "alice@example.org\r\nRCPT TO:<evil@example.net>"},
        {"recipients": ["bob@example.org\nRCPT TO:<evil@example.net>"]},
        {"recipients": ["bob@example.org\r"]},
    ],
)
def test_line_breaks_in_the_envelope_are_refused(
    real_server: Any, pki: PKI, envelope: dict[str, Any]
) -> None:
    server = real_server()
    with (
        SMTPTransport(config_for(server.port, ca_data=pki.ca_pem)) as transport,
        pytest.raises(HeaderInjectionError),
    ):
        transport.send(message(), **envelope)
    assert server.lines == []


def test_protected_message_envelope_is_checked_too(real_server: Any, pki: PKI) -> None:
    server = real_server()
    forged = ProtectedMessage(
        wire.to_bytes(message()), "alice@example.org", ("bob@example.org\r\nDATA",)
    )
    with pytest.raises(HeaderInjectionError):
        send_one(server, pki, forged)
    assert server.lines == []


def test_message_must_start_with_its_header_section(pki: PKI) -> None:
    mbox = b"From alice@example.org Mon Jan  1 00:00:00 2024\nBcc: carol@example.org\n\nHi\n"
    with pytest.raises(MalformedMessageError, match="header section"):
        send(mbox, config_for(1, ca_data=pki.ca_pem), recipients=["bob@example.org"])


def test_no_recipients_is_an_input_error(pki: PKI) -> None:
    with pytest.raises(InputError, match="no recipients"):
        send(b"From: alice@example.org\r\n\r\nHi\r\n", config_for(1, ca_data=pki.ca_pem))


def test_require_protection_refuses_before_connecting(real_server: Any, pki: PKI) -> None:
    server = real_server()
    alice = throwaway_identity("Alice", email="alice@example.org")
    signed = securemail.sign(message(), alice)
    for item in (message(), signed, wire.to_bytes(message())):
        with pytest.raises(ProtectionRequiredError):
            send_one(server, pki, item, require_protection=True)
    assert server.lines == []


def test_require_protection_sends_smime_encrypted(real_server: Any, pki: PKI) -> None:
    server = real_server()
    bob = throwaway_identity("Bob", email="bob@example.org")
    protected = securemail.encrypt(message(bcc=("carol@example.org",)), [bob])
    result = send_one(server, pki, protected, require_protection=True)
    assert result.delivered == ("bob@example.org", "carol@example.org")
    assert server.messages[0].content == protected.data


@pytest.mark.parametrize(
    ("content_type", "encrypted"),
    [
        ('multipart/encrypted; protocol="application/pgp-encrypted"; boundary=x', True),
        ('multipart/encrypted; protocol="application/pgp-signature"; boundary=x', False),
        ("application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m", True),
        ("application/x-pkcs7-mime; smime-type=authEnveloped-data", True),
        ('application/pkcs7-mime; name="smime.p7m"', True),
        ("application/pkcs7-mime; smime-type=signed-data; name=smime.p7m", False),
        ("application/pkcs7-mime; smime-type=compressed-data", False),
        ('multipart/signed; protocol="application/pkcs7-signature"; boundary=x', False),
        ("text/plain", False),
    ],
)
def test_what_counts_as_encrypted(content_type: str, encrypted: bool) -> None:
    headers = wire.parse_headers(f"Content-Type: {content_type}\r\n".encode())
    if encrypted:
        check_encrypted(headers)
    else:
        with pytest.raises(ProtectionRequiredError):
            check_encrypted(headers)


# --- SIZE and 8BITMIME ---------------------------------------------------------------------------


def test_size_is_announced(real_server: Any, pki: PKI) -> None:
    server = real_server()
    data = wire.to_bytes(message())
    assert send_one(server, pki, data).ok
    assert server.messages[0].mail_options == [f"SIZE={len(data)}"]


def test_too_large_for_the_server_is_refused_before_mail(real_server: Any, pki: PKI) -> None:
    server = real_server(data_size_limit=1000)
    with pytest.raises(MessageTooLargeError) as caught:
        send_one(server, pki, message(text="Many words. " * 100))
    assert caught.value.limit == 1000
    assert "MAIL" not in server.verbs()


def test_eight_bit_data_is_declared(real_server: Any, pki: PKI) -> None:
    server = real_server()
    data = "From: alice@example.org\r\nTo: bob@example.org\r\nContent-Type: text/plain; "
    data += "charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGrüße\r\n"
    assert send_one(server, pki, data.encode()).ok
    (received,) = server.messages
    assert "BODY=8BITMIME" in received.mail_options
    assert received.content == data.encode()


def test_eight_bit_data_refused_without_8bitmime(real_server: Any, pki: PKI) -> None:
    server = real_server(decode_data=True)  # aiosmtpd then offers no 8BITMIME
    data = b"From: alice@example.org\r\nTo: bob@example.org\r\n\r\nGr\xc3\xbc\xc3\x9fe\r\n"
    with pytest.raises(EightBitUnsupportedError):
        send_one(server, pki, data)
    assert "MAIL" not in server.verbs()


# --- files ---------------------------------------------------------------------------------------


def test_streams_a_file_with_lf_line_ends(real_server: Any, pki: PKI, tmp_path: Path) -> None:
    server = real_server()
    path = tmp_path / "message.eml"
    lf = wire.to_bytes(message(text="Line one.\n.Leading dot.\n")).replace(b"\r\n", b"\n")
    path.write_bytes(lf)
    assert send_one(server, pki, path).ok
    with path.open("rb") as file:
        assert send_one(server, pki, file).ok
    first, second = server.messages
    assert first.content == second.content == wire.canonicalize(lf)
    assert first.mail_options == [f"SIZE={len(lf)}", "BODY=8BITMIME"]


def test_text_files_are_refused(tmp_path: Path, pki: PKI) -> None:
    path = tmp_path / "message.eml"
    path.write_text("From: a@example.org\n\nHi\n")
    with path.open() as text, pytest.raises(InputError, match="cannot send"):
        send(text, config_for(1, ca_data=pki.ca_pem))  # type: ignore[arg-type]


# --- configuration and logging -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "names"),
    [
        ({"port": 70000}, ["port"]),
        ({"tls": "starttls"}, ["tls"]),
        ({"username": USER}, ["username and password"]),
        ({"password": PASSWORD}, ["username and password"]),
        ({"username": USER, "pasword": PASSWORD}, ["pasword"]),
        ({"tls": "opportunistic", "ca_data": "x"}, ["ca_file/ca_data"]),
        ({"ca_data": "not a certificate"}, ["ca_file/ca_data"]),
        ({"ca_file": "/nonexistent/ca.pem"}, ["ca_file"]),
        ({"deadlines": {"rcpt": 0}}, ["deadlines.rcpt"]),
        ({"host": "mail.example.org\r\nMAIL FROM:<x>"}, ["host"]),
    ],
)
def test_configuration_errors_are_typed_and_actionable(
    options: dict[str, Any], names: list[str]
) -> None:
    with pytest.raises(TransportConfigError) as caught:
        SMTPConfig(**{"host": "mail.example.org", **options})
    assert not isinstance(caught.value, pydantic.ValidationError)
    assert isinstance(caught.value, InputError)
    for name in names:
        assert any(problem.startswith(name) for problem in caught.value.problems), caught.value
    assert PASSWORD not in str(caught.value)


def test_default_ports_follow_the_mode() -> None:
    assert SMTPConfig(host="mail.example.org").port == 587
    implicit = SMTPConfig(host="mail.example.org", tls="implicit")
    assert implicit.port == 465
    assert implicit.clone(tls="required-verify").port == 587
    assert SMTPConfig(host="mail.example.org", port=25).clone(tls="implicit").port == 25
    with pytest.raises(TransportConfigError):
        implicit.clone(port=-1)


def test_logs_commands_but_no_secrets_or_content(
    real_server: Any, pki: PKI, caplog: pytest.LogCaptureFixture
) -> None:
    import base64

    caplog.set_level(logging.DEBUG, logger="securemail.transport")
    server = real_server()
    sent = message(text="Top secret body text.\n")
    send_one(server, pki, sent, username=USER, password=PASSWORD)
    logged = caplog.text
    assert "MAIL FROM:<alice@example.org>" in logged
    assert "AUTH PLAIN [hidden]" in logged
    assert PASSWORD not in logged
    plain = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode()
    login = base64.b64encode(PASSWORD.encode()).decode()
    assert plain not in logged
    assert login not in logged
    assert "Top secret" not in logged
    assert "Quarterly report" not in logged


def test_errors_share_one_root() -> None:
    for error in (TLSRequiredError, TLSError, SMTPAuthError, MessageTooLargeError):
        assert issubclass(error, TransportError)
        assert issubclass(error, securemail.SecureMailError)
