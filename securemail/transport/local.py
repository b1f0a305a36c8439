"""A real SMTP server on loopback, with STARTTLS required, for trying securemail out.

``securemail demo`` sends through it, and it is handy in an application's own tests: it is
aiosmtpd (a complete RFC 5321 server), listening on 127.0.0.1 on a free port, with a
server certificate from a throwaway certification authority made in memory. The
:meth:`LocalSMTPServer.config` it hands out trusts exactly that authority, so the client
verifies the certificate and the host name as it would for a real server: nothing is
switched off to make the local case work.

Messages are kept in memory as received (``messages``); nothing is relayed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import ipaddress
import ssl
import tempfile
import threading
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .config import SMTPConfig

__all__ = ["LocalSMTPServer", "ReceivedMessage"]

_HOST = "127.0.0.1"


@dataclasses.dataclass(frozen=True)
class ReceivedMessage:
    """One message as the server received it: the envelope and the exact bytes."""

    mail_from: str
    recipients: tuple[str, ...]
    data: bytes


def _certificates() -> tuple[bytes, bytes, bytes]:
    """(CA certificate PEM, server certificate PEM, server key PEM), valid for a day."""
    now = dt.datetime.now(dt.UTC)

    def name(text: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("securemail local SMTP CA"))
        .issuer_name(name("securemail local SMTP CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(name("localhost"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(_HOST))]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return ca.public_bytes(pem), server.public_bytes(pem), key_pem


def _server_context(certificate: bytes, key: bytes) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # The ssl module loads a key only from a file: a private temporary directory holds it
    # for the duration of this call.
    with tempfile.TemporaryDirectory(prefix="securemail-smtp-") as directory:
        cert_path, key_path = Path(directory, "server.pem"), Path(directory, "server.key")
        cert_path.write_bytes(certificate)
        key_path.touch(mode=0o600)
        key_path.write_bytes(key)
        context.load_cert_chain(cert_path, key_path)
    return context


class LocalSMTPServer:
    """aiosmtpd on 127.0.0.1 with STARTTLS required; a context manager.

    >>> with LocalSMTPServer() as server:  # doctest: +SKIP
    ...     securemail.transport.send(message, server.config())
    ...     server.messages[0].data
    """

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import SMTP, Envelope, Session

        self.ca_pem, certificate, key = _certificates()
        self.messages: list[ReceivedMessage] = []
        self._lock = threading.Lock()
        received = self.messages
        lock = self._lock

        class Handler:
            async def handle_DATA(  # noqa: N802 (the name aiosmtpd calls)
                self, server: SMTP, session: Session, envelope: Envelope
            ) -> str:
                data = envelope.original_content or b""
                assert isinstance(data, bytes)
                with lock:
                    received.append(
                        ReceivedMessage(
                            mail_from=envelope.mail_from or "",
                            recipients=tuple(envelope.rcpt_tos),
                            data=data,
                        )
                    )
                return "250 2.0.0 Ok: queued"

        class FreePortController(Controller):
            """aiosmtpd on a port the system picks (port 0), read back once bound."""

            def _trigger_server(self) -> None:
                server = self.server
                assert isinstance(server, asyncio.Server)
                self.port = server.sockets[0].getsockname()[1]
                super()._trigger_server()  # type: ignore[no-untyped-call]

        options: dict[str, Any] = {
            "tls_context": _server_context(certificate, key),
            "require_starttls": True,
        }
        self._controller = FreePortController(Handler(), hostname=_HOST, port=0, **options)
        self.port = 0

    def start(self) -> None:
        self._controller.start()
        self.port = self._controller.port

    def stop(self) -> None:
        self._controller.stop()

    def config(self, **options: Any) -> SMTPConfig:
        """Settings that reach this server with verified STARTTLS (``options`` override)."""
        values: dict[str, Any] = {
            "host": _HOST,
            "port": self.port,
            "tls": "required-verify",
            "ca_data": self.ca_pem.decode("ascii"),
        }
        values.update(options)
        return SMTPConfig(**values)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
