"""SMTP servers on loopback for the transport tests, all recording what they were sent.

* :func:`real_server`: aiosmtpd (a real SMTP implementation) with STARTTLS required and
  certificates made at test time by trustme.
* :class:`FakeSMTP`: a small scripted server in a thread, for the faults a real server does
  not produce (a refused STARTTLS, bytes pipelined after ``220``, 421, dropped connections,
  drip-fed replies). Tests subclass it and override one ``on_<verb>`` method.

Both record every line the client sent, so that tests can assert what never reached the
server ("no MAIL, no AUTH").
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from securemail.transport import SMTPConfig

USER = "alice"
PASSWORD = "correct horse battery staple"


# --- certificates --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PKI:
    ca: trustme.CA
    good: trustme.LeafCert
    """Issued for localhost and 127.0.0.1."""
    other_name: trustme.LeafCert
    """Issued for mail.example.org only."""
    expired: trustme.LeafCert
    """For 127.0.0.1, expired yesterday."""
    stranger: trustme.CA
    """A CA the client does not trust, with its own certificate for 127.0.0.1."""
    stranger_cert: trustme.LeafCert

    @property
    def ca_pem(self) -> str:
        return self.ca.cert_pem.bytes().decode("ascii")


@pytest.fixture(scope="session")
def pki() -> PKI:
    ca = trustme.CA()
    stranger = trustme.CA()
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    return PKI(
        ca=ca,
        good=ca.issue_cert("localhost", "127.0.0.1"),
        other_name=ca.issue_cert("mail.example.org"),
        expired=ca.issue_cert(
            "127.0.0.1",
            not_before=now - dt.timedelta(days=30),
            not_after=now - dt.timedelta(days=1),
        ),
        stranger=stranger,
        stranger_cert=stranger.issue_cert("127.0.0.1"),
    )


def server_context(cert: trustme.LeafCert) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    return context


# --- aiosmtpd ------------------------------------------------------------------------------------


@dataclasses.dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    mail_options: list[str]
    content: bytes


class _Handler:
    def __init__(self) -> None:
        self.messages: list[Received] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        assert isinstance(content, bytes)
        self.messages.append(
            Received(
                mail_from=envelope.mail_from or "",
                rcpt_tos=list(envelope.rcpt_tos),
                mail_options=list(envelope.mail_options),
                content=content,
            )
        )
        return "250 2.0.0 Ok: queued as REAL1"


class _RecordingSMTP(SMTP):
    def __init__(self, handler: Any, *, lines: list[bytes], **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._lines = lines

    async def _handle_client(self) -> None:
        read = self._reader.readuntil

        async def readuntil(separator: bytes = b"\n") -> bytes:
            line = await read(separator)
            self._lines.append(line)
            return line

        self._reader.readuntil = readuntil  # type: ignore[method-assign]
        await super()._handle_client()


class _Controller(Controller):
    def __init__(self, handler: _Handler, lines: list[bytes], **kwargs: Any) -> None:
        super().__init__(handler, hostname="127.0.0.1", port=0, **kwargs)
        self.lines = lines

    def factory(self) -> SMTP:
        return _RecordingSMTP(self.handler, lines=self.lines, **self.SMTP_kwargs)

    def _trigger_server(self) -> None:
        assert self.server is not None
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


@dataclasses.dataclass
class RealServer:
    port: int
    handler: _Handler
    lines: list[bytes]
    logins: list[tuple[str, str]]

    @property
    def messages(self) -> list[Received]:
        return self.handler.messages

    def verbs(self) -> list[str]:
        """The command verbs received (data lines excluded), in order."""
        return _verbs(self.lines)


def _verbs(lines: list[bytes]) -> list[str]:
    verbs = []
    in_data = False
    for line in lines:
        if in_data:
            in_data = line != b".\r\n"
            continue
        verb = line.split(b" ", 1)[0].strip().upper().decode("ascii", "replace")
        verbs.append(verb)
        in_data = verb == "DATA"
    return verbs


def _authenticator(logins: list[tuple[str, str]]) -> Callable[..., AuthResult]:
    def authenticate(
        server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        assert isinstance(data, LoginPassword)
        user, password = data.login.decode(), data.password.decode()
        logins.append((user, password))
        return AuthResult(success=user == USER and password == PASSWORD, handled=False)

    return authenticate


@pytest.fixture
def real_server(pki: PKI) -> Iterator[Callable[..., RealServer]]:
    """Start aiosmtpd: ``real_server(cert=..., starttls=True, implicit=False, **SMTP_kwargs)``."""
    controllers: list[Controller] = []

    def start(
        cert: trustme.LeafCert | None = None,
        *,
        starttls: bool = True,
        implicit: bool = False,
        **kwargs: Any,
    ) -> RealServer:
        cert = cert or pki.good
        handler = _Handler()
        lines: list[bytes] = []
        logins: list[tuple[str, str]] = []
        options: dict[str, Any] = {"authenticator": _authenticator(logins)}
        if implicit:
            options["ssl_context"] = server_context(cert)
        elif starttls:
            options["tls_context"] = server_context(cert)
            options["require_starttls"] = True
        options.update(kwargs)
        controller = _Controller(handler, lines, **options)
        controller.start()
        controllers.append(controller)
        lines.clear()  # the controller's own start-up probe
        return RealServer(controller.port, handler, lines, logins)

    yield start
    for controller in controllers:
        controller.stop()


# --- the scripted server -------------------------------------------------------------------------


class Conn:
    """One client connection as the scripted server sees it."""

    def __init__(self, server: FakeSMTP, sock: socket.socket) -> None:
        self.server = server
        self.sock: socket.socket = sock
        self.reader = sock.makefile("rb")
        self.encrypted = False

    def send(self, *lines: str) -> None:
        self.raw("".join(f"{line}\r\n" for line in lines).encode("ascii"))

    def raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def readline(self) -> bytes:
        line: bytes = self.reader.readline(1 << 20)
        return line

    def starttls(self, context: ssl.SSLContext) -> None:
        self.reader.close()
        self.sock = context.wrap_socket(self.sock, server_side=True)
        self.reader = self.sock.makefile("rb")
        self.encrypted = True

    def read_data(self) -> bytes | None:
        """The DATA stream up to and including the final dot line (None if cut off)."""
        lines = []
        while True:
            line = self.readline()
            if not line:
                return None
            lines.append(line)
            if line == b".\r\n":
                return b"".join(lines)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.reader.close()
        with contextlib.suppress(OSError):
            self.sock.close()


class FakeSMTP:
    """A scripted SMTP server. Class attributes are the default script; keyword arguments
    to the constructor override them; ``on_<verb>`` methods can be overridden. A handler
    returning ``False`` ends the connection (the server closes it without a word)."""

    greeting = "220 fake.test ESMTP"
    capabilities: tuple[str, ...] = ("8BITMIME", "SIZE 100000000", "AUTH PLAIN LOGIN")
    tls_capabilities: tuple[str, ...] | None = None
    """EHLO keywords after STARTTLS (default: the same as before)."""
    starttls_reply = "220 2.0.0 Ready to start TLS"
    mail_reply = "250 2.1.0 Ok"
    rcpt_replies: dict[str, str] = {}  # noqa: RUF012 (replaced, never mutated)
    data_reply = "354 End data with <CR><LF>.<CR><LF>"
    final_reply = "250 2.0.0 Ok: queued as FAKE42"

    def __init__(self, tls: ssl.SSLContext | None = None, **script: Any) -> None:
        for name, value in script.items():
            if not hasattr(type(self), name):
                raise AttributeError(name)
            setattr(self, name, value)
        self.tls = tls
        self.lines: list[bytes] = []
        self.messages: list[bytes] = []
        self.connections = 0
        self.errors: list[BaseException] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.port: int = self._listener.getsockname()[1]
        self._stopped = threading.Event()
        self._threads: list[threading.Thread] = []
        self._conns: list[Conn] = []
        accept = threading.Thread(target=self._accept, daemon=True)
        accept.start()
        self._threads.append(accept)

    def verbs(self) -> list[str]:
        return _verbs(self.lines)

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            sock.settimeout(30)
            self.connections += 1
            conn = Conn(self, sock)
            self._conns.append(conn)
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, conn: Conn) -> None:
        try:
            if self.greet(conn) is False:
                return
            while True:
                line = conn.readline()
                if not line:
                    return
                self.lines.append(line)
                verb = line.split(b" ", 1)[0].strip().decode("ascii", "replace").lower()
                handler = getattr(self, f"on_{verb}", None)
                if handler is None:
                    conn.send("502 5.5.2 Error: command not recognized")
                elif handler(conn, line) is False:
                    return
        except (OSError, ValueError) as exc:  # the client went away, or TLS failed
            self.errors.append(exc)
        finally:
            conn.close()

    def stop(self) -> None:
        self._stopped.set()
        self._listener.close()
        for conn in self._conns:
            conn.close()
        for thread in self._threads:
            thread.join(timeout=5)

    # the script

    def greet(self, conn: Conn) -> bool | None:
        conn.send(self.greeting)
        return None

    def on_ehlo(self, conn: Conn, line: bytes) -> bool | None:
        keywords = list(self.capabilities)
        if conn.encrypted and self.tls_capabilities is not None:
            keywords = list(self.tls_capabilities)
        if self.tls is not None and not conn.encrypted:
            keywords.append("STARTTLS")
        replies = ["fake.test", *keywords]
        conn.send(*(f"250-{r}" for r in replies[:-1]), f"250 {replies[-1]}")
        return None

    def on_helo(self, conn: Conn, line: bytes) -> bool | None:
        conn.send("250 fake.test")
        return None

    def on_starttls(self, conn: Conn, line: bytes) -> bool | None:
        conn.raw(self.starttls_reply.encode("ascii") + b"\r\n")
        if self.starttls_reply.startswith("220") and self.tls is not None:
            conn.starttls(self.tls)
        return None

    def on_auth(self, conn: Conn, line: bytes) -> bool | None:
        conn.send("235 2.7.0 Authentication successful")
        return None

    def on_mail(self, conn: Conn, line: bytes) -> bool | None:
        conn.send(self.mail_reply)
        return None

    def on_rcpt(self, conn: Conn, line: bytes) -> bool | None:
        match = re.search(rb"<([^>]*)>", line)
        address = match.group(1).decode() if match else ""
        conn.send(self.rcpt_replies.get(address, "250 2.1.5 Ok"))
        return None

    def on_data(self, conn: Conn, line: bytes) -> bool | None:
        conn.send(self.data_reply)
        if not self.data_reply.startswith("354"):
            return None
        data = conn.read_data()
        if data is None:
            return False
        self.messages.append(data)
        return self.after_data(conn)

    def after_data(self, conn: Conn) -> bool | None:
        conn.send(self.final_reply)
        return None

    def on_rset(self, conn: Conn, line: bytes) -> bool | None:
        conn.send("250 2.0.0 Ok")
        return None

    def on_noop(self, conn: Conn, line: bytes) -> bool | None:
        conn.send("250 2.0.0 Ok")
        return None

    def on_quit(self, conn: Conn, line: bytes) -> bool | None:
        conn.send("221 2.0.0 Bye")
        return False


def drip(conn: Conn, text: str, interval: float = 0.2) -> None:
    """Send ``text`` one byte at a time: a server that keeps a per-read timeout alive."""
    for byte in text.encode("ascii"):
        conn.raw(bytes([byte]))
        time.sleep(interval)


@pytest.fixture
def fake_server() -> Iterator[Callable[..., FakeSMTP]]:
    """``fake_server(FakeSMTPSubclass, tls=context, **script)``: start a scripted server."""
    servers: list[FakeSMTP] = []

    def start(cls: type[FakeSMTP] = FakeSMTP, **kwargs: Any) -> FakeSMTP:
        server = cls(**kwargs)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def config_for(port: int, **options: Any) -> SMTPConfig:
    """A configuration for a loopback test server (short deadlines: nothing here is slow)."""
    options.setdefault("tls", "required-verify")
    options.setdefault("local_hostname", "client.test")
    options.setdefault("deadlines", {"quit": 2.0})
    return SMTPConfig(host=options.pop("host", "127.0.0.1"), port=port, **options)
