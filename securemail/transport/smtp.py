"""Sending over SMTP without the ways :mod:`smtplib` loses mail or leaks it.

smtplib on its own does not verify the server's certificate, applies its timeout to each
socket read (a server that drip-feeds a reply holds the client for as long as it likes),
and returns refused recipients from ``sendmail`` instead of raising. :class:`SMTPTransport`
keeps smtplib's command and AUTH code but does its own socket I/O and decides the policy:

* TLS as configured (:mod:`securemail.transport.config`): with ``required*`` or
  ``implicit``, a missing or refused STARTTLS, a failed handshake or a bad certificate ends
  the session before AUTH and before MAIL FROM, with :class:`~securemail.errors.TLSError`
  saying why. After STARTTLS, capabilities come only from the new EHLO (RFC 3207 4.2), and
  a server that pipelines anything after its ``220`` go-ahead (the STARTTLS command
  injection of CVE-2011-0411 and its relatives) is refused, whatever the mode.
* Credentials never travel unencrypted unless ``allow_auth_without_tls`` says so.
* Deadlines cover a whole reply or data block (RFC 5321 4.5.3.2 values by default).
* Every recipient gets a status in a :class:`~securemail.transport.results.SendResult`.
* The message is streamed (:class:`~securemail.transport.data.DataWriter`): CRLF line ends,
  dot-stuffing, the server's SIZE limit and 8BITMIME honoured, in bounded memory.

What raises and what is reported: ``send`` raises when no mail transaction could be started
(bad input or envelope, a message refused by ``require_protection``, too large for the
server's SIZE, 8-bit data without 8BITMIME, connection or greeting failure, TLS, AUTH, a
deadline before MAIL FROM). Nothing of the message has crossed the wire then, so nothing is
lost by raising, and a raise cannot be overlooked. Once MAIL FROM is sent, everything the
server or the network does is reported per recipient in the result, including a transaction
in which no recipient was accepted: a lost connection, a 421 or a missed deadline make every
recipient not yet refused *deferred*, because the message may or may not have been
delivered. The one exception is a failure of the caller's own data source mid-message (a
read error, or 8-bit data found while streaming to a server without 8BITMIME): the
connection is then dropped before the final dot, so the server discards the message, and
the error is raised.

Logging goes to ``securemail.transport`` at DEBUG: commands and replies, never message
content, credentials or AUTH exchanges.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import smtplib
import socket
import ssl
import stat
import time
from collections.abc import Iterable, Iterator
from email.message import EmailMessage
from email.utils import collapse_rfc2231_value
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self

from .. import wire
from ..compose import envelope_recipients, envelope_sender
from ..errors import (
    BccHeaderError,
    EightBitUnsupportedError,
    InputError,
    MalformedMessageError,
    MessageTooLargeError,
    ProtectionRequiredError,
    SMTPAuthError,
    SMTPConnectionError,
    SMTPTimeoutError,
    TLSError,
    TLSRequiredError,
)
from ..headers import check_address
from ..results import ProtectedMessage
from ..stream.base import CHUNK, Data, Source
from .config import SMTPConfig
from .data import DataWriter, canonical_size
from .results import RecipientResult, RecipientStatus, SendResult

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

__all__ = ["SMTPTransport", "Sendable", "check_encrypted", "send", "tls_context"]

_log = logging.getLogger("securemail.transport")

Sendable = (
    ProtectedMessage | EmailMessage | bytes | bytearray | memoryview | Source | os.PathLike[str]
)
"""What :meth:`SMTPTransport.send` takes: a protected message, a message object, its bytes, a
binary file (or any object with ``readinto``), or a path to a file. Files are streamed."""

_MAX_LINE = 8192  # smtplib's bound on a reply line
_MAX_HEAD = 1024 * 1024
"""How far into a streamed message its header section must end."""
_BCC_FIELDS = ("bcc", "resent-bcc")
_ENCRYPTED_SMIME = frozenset({"enveloped-data", "authenveloped-data"})


def tls_context(config: SMTPConfig) -> ssl.SSLContext:
    """The client TLS context ``config`` asks for: TLS 1.2 or newer; with a verifying mode,
    the CA chain and the host name are checked against ``ca_file``/``ca_data`` or, when
    neither is given, the system's trust store."""
    if config.verifies_certificate:
        context = ssl.create_default_context(
            cafile=str(config.ca_file) if config.ca_file is not None else None,
            cadata=config.ca_data,
        )
        context.check_hostname = True
        context.verify_mode = ssl.CERT_REQUIRED
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _text(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply


# --- the session: smtplib's protocol code, our I/O -----------------------------------------------


class _Session(smtplib.SMTP):
    """One connection. smtplib builds the commands and runs EHLO and AUTH; reading and
    writing are replaced so that a deadline bounds each whole reply, the reply buffer can be
    inspected after STARTTLS, and nothing secret is logged.

    A lost connection surfaces as ``smtplib.SMTPServerDisconnected`` and a missed deadline as
    :class:`~securemail.errors.SMTPTimeoutError`; both close the socket first.
    """

    def __init__(self, config: SMTPConfig) -> None:
        super().__init__(local_hostname=config.local_hostname)
        self.config = config
        self.host = config.host
        self.encrypted = False
        self.fresh = True
        """No transaction has run on this connection yet (no RSET needed)."""
        self._buffer = bytearray()
        self._deadline = math.inf
        self._stage = "connect"
        self._seconds = 0.0
        self._secret = False

    # deadlines

    def arm(self, stage: str, seconds: float) -> None:
        """Start the clock for ``stage``: everything until its reply must fit in ``seconds``."""
        self._stage = stage
        self._seconds = seconds
        self._deadline = time.monotonic() + seconds

    def _remaining(self) -> float:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise self._timed_out()
        return left

    def _timed_out(self) -> SMTPTimeoutError:
        # A late reply would be read as the answer to the next command: the session is over.
        self.close()
        _log.debug("%s: deadline for %s (%g s) passed", self.host, self._stage, self._seconds)
        return SMTPTimeoutError(self.host, self._stage, self._seconds)

    def _lost(self, reason: str) -> smtplib.SMTPServerDisconnected:
        self.close()
        _log.debug("%s: %s", self.host, reason)
        return smtplib.SMTPServerDisconnected(reason)

    def _socket(self) -> socket.socket:
        if self.sock is None:
            raise smtplib.SMTPServerDisconnected("not connected")
        return self.sock

    # connecting and TLS

    def _get_socket(self, host: str, port: int, timeout: object) -> socket.socket:
        try:
            sock = socket.create_connection((host, port), self._remaining())
        except TimeoutError:
            raise self._timed_out() from None
        except OSError as exc:
            raise SMTPConnectionError(
                self.host, f"cannot connect to port {port}: {exc.strerror or exc}"
            ) from None
        if self.config.tls == "implicit":
            sock = self._handshake(sock)
        return sock

    def _tls_failure(self, kind: str, detail: str = "") -> TLSError:
        self.close()
        if self.config.tls == "opportunistic":
            return TLSError(self.host, kind, detail)
        return TLSRequiredError(self.host, kind, detail)

    def _handshake(self, sock: socket.socket) -> ssl.SSLSocket:
        context = tls_context(self.config)
        sock.settimeout(self._remaining())
        try:
            secured = context.wrap_socket(sock, server_hostname=self.config.tls_name)
        except ssl.SSLCertVerificationError as exc:
            sock.close()
            raise self._tls_failure("certificate", exc.verify_message or exc.reason or "") from None
        except TimeoutError:
            sock.close()
            raise self._timed_out() from None
        except (ssl.SSLError, OSError, ValueError) as exc:
            sock.close()
            reason = getattr(exc, "reason", None) or exc.__class__.__name__
            raise self._tls_failure("handshake", str(reason)) from None
        self.encrypted = True
        _log.debug("%s: %s, %s", self.host, secured.version(), (secured.cipher() or ("?",))[0])
        return secured

    def starttls_checked(self) -> tuple[int, bytes]:
        """STARTTLS, then the handshake. Returns the reply if the server did not agree.

        Whatever the server sent after its 220 was sent before encryption and could come
        from anyone on the path: it must not be read as part of the encrypted session. So
        any such byte, in our buffer or already waiting in the socket, ends the session.
        """
        code, reply = self.docmd("STARTTLS")
        if code != 220:
            return code, reply
        if self._buffer or self._unread_bytes():
            raise self._tls_failure("data-after-starttls")
        self.sock = self._handshake(self._socket())
        # RFC 3207 4.2: forget everything learnt before TLS.
        self.helo_resp = None
        self.ehlo_resp = None
        self.esmtp_features = {}
        self.does_esmtp = False
        return code, reply

    def _unread_bytes(self) -> bool:
        sock = self._socket()
        sock.setblocking(False)
        try:
            return bool(sock.recv(1, socket.MSG_PEEK))
        except OSError:  # BlockingIOError: nothing waiting
            return False

    # writing

    def send(self, s: ReadableBuffer | str) -> None:
        data = s.encode(self.command_encoding) if isinstance(s, str) else bytes(s)
        if _log.isEnabledFor(logging.DEBUG):
            text = data.decode("ascii", "replace").rstrip("\r\n")
            if self._secret:  # AUTH: keep the verb and the mechanism, hide the rest
                words = text.split(" ")
                text = " ".join([*words[:2], "[hidden]"]) if words[0].upper() == "AUTH" else ""
                text = text or "[hidden]"
            _log.debug("%s >>> %s", self.host, text)
        self.send_raw(data)

    def send_raw(self, data: Data) -> None:
        """Write ``data`` within the current deadline (a whole-write bound, also for TLS)."""
        sock = self._socket()
        with memoryview(data) as view:
            sent = 0
            while sent < len(view):
                sock.settimeout(self._remaining())
                try:
                    sent += sock.send(view[sent : sent + CHUNK])
                except TimeoutError:
                    raise self._timed_out() from None
                except OSError as exc:
                    raise self._lost(f"connection lost while sending: {exc}") from None

    # reading

    def getreply(self) -> tuple[int, bytes]:
        lines: list[bytes] = []
        code = -1
        while True:
            line = self._readline()
            lines.append(line[4:].strip(b" \t\r\n"))
            if not line[:3].isdigit():
                code = -1
                break
            code = int(line[:3])
            if line[3:4] != b"-":
                break
        reply = b"\n".join(lines)
        if _log.isEnabledFor(logging.DEBUG):
            shown = "[hidden]" if self._secret and code == 334 else _text(reply)
            shown = shown.replace("\n", " | ").replace("\r", " ")
            _log.debug("%s <<< %d %s", self.host, code, shown)
        return code, reply

    def _readline(self) -> bytes:
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                line = bytes(self._buffer[: end + 1])
                del self._buffer[: end + 1]
                if len(line) > _MAX_LINE:
                    raise self._lost("the server sent a reply line longer than 8192 bytes")
                return line
            if len(self._buffer) > _MAX_LINE:
                raise self._lost("the server sent a reply line longer than 8192 bytes")
            self._buffer += self._recv()

    def _recv(self) -> bytes:
        sock = self._socket()
        sock.settimeout(self._remaining())
        try:
            chunk = sock.recv(8192)
        except TimeoutError:
            raise self._timed_out() from None
        except OSError as exc:
            raise self._lost(f"connection lost: {exc}") from None
        if not chunk:
            raise self._lost("the server closed the connection")
        return chunk

    # AUTH

    def authenticate(self, username: str, password: str) -> None:
        self._secret = True
        try:
            self.login(username, password)
        except smtplib.SMTPServerDisconnected:
            raise
        except smtplib.SMTPNotSupportedError:
            raise SMTPAuthError(self.host, "the server does not offer AUTH") from None
        except smtplib.SMTPAuthenticationError as exc:
            raise SMTPAuthError(
                self.host,
                "the server refused the credentials",
                code=exc.smtp_code,
                reply=_text(exc.smtp_error),
            ) from None
        except smtplib.SMTPException as exc:
            raise SMTPAuthError(self.host, str(exc)) from None
        finally:
            self._secret = False
            self.user = self.password = ""

    def close(self) -> None:
        super().close()
        self._buffer.clear()

    def quit_quietly(self) -> None:
        """QUIT if the connection is still usable; close it in any case."""
        if self.sock is not None:
            self.arm("QUIT", self.config.deadlines.quit)
            with contextlib.suppress(smtplib.SMTPServerDisconnected, SMTPTimeoutError):
                self.docmd("QUIT")
        self.close()


# --- what is sent --------------------------------------------------------------------------------


@dataclasses.dataclass
class _Outgoing:
    """A message ready for the wire: its first bytes (at least the header section), the
    rest as a source when it is streamed, and what the envelope and the checks need."""

    head: bytes
    source: Source | None
    size: int | None
    """The size announced with SIZE= (exact for bytes, the file size for files)."""
    eight_bit: bool | None
    """Whether the message holds 8-bit bytes; None when a stream has not been read yet."""
    mail_from: str
    recipients: tuple[str, ...]

    def chunks(self) -> Iterator[Data]:
        if self.head:
            yield self.head
        if self.source is None:
            return
        buffer = bytearray(CHUNK)
        with memoryview(buffer) as view:
            while True:
                count = self.source.readinto(view)
                if count is None:
                    raise InputError("the message source is non-blocking and had no data ready")
                if not count:
                    return
                yield view[:count]


def _header_section(head: bytes) -> tuple[bytes, bool]:
    """The canonical header section at the start of ``head``, and whether it is complete."""
    canonical = wire.canonicalize(head[:_MAX_HEAD])
    if canonical.startswith(b"\r\n"):
        return b"", True
    end = canonical.find(b"\r\n\r\n")
    if end < 0:
        return canonical, False
    return canonical[: end + 2], True


def _param(headers: EmailMessage, name: str, header: str = "content-type") -> str:
    value = headers.get_param(name, header=header)
    if value is None:
        return ""
    return collapse_rfc2231_value(value).strip().lower()


def check_encrypted(headers: EmailMessage) -> None:
    """Raise :class:`~securemail.errors.ProtectionRequiredError` unless the top-level type
    is an encryption: PGP/MIME (RFC 3156) or S/MIME enveloped or authenticated-enveloped
    data (RFC 8551). A signature alone is not protection of the content."""
    content_type = headers.get_content_type()
    if content_type == "multipart/encrypted":
        protocol = _param(headers, "protocol")
        if protocol == "application/pgp-encrypted":
            return
        raise ProtectionRequiredError(
            content_type, f"protocol {protocol!r} is not PGP/MIME (application/pgp-encrypted)"
        )
    if content_type in ("application/pkcs7-mime", "application/x-pkcs7-mime"):
        smime_type = _param(headers, "smime-type")
        if smime_type in _ENCRYPTED_SMIME:
            return
        name = _param(headers, "name") or _param(headers, "filename", "content-disposition")
        if not smime_type and name.endswith(".p7m"):
            return
        raise ProtectionRequiredError(
            content_type, f"smime-type {smime_type or '(none)'!r} is not encrypted content"
        )
    if content_type == "multipart/signed":
        raise ProtectionRequiredError(content_type, "the message is signed but not encrypted")
    raise ProtectionRequiredError(content_type, "the message is not encrypted")


def _mailbox(field: str, address: str) -> str:
    return check_address(field, address).addr_spec


def _unique(addresses: Iterable[str]) -> tuple[str, ...]:
    unique: dict[str, str] = {}
    for spec in addresses:
        local, _, domain = spec.rpartition("@")
        unique.setdefault(f"{local}@{domain.lower()}", spec)
    return tuple(unique.values())


def _source_size(source: Source) -> int | None:
    fileno = getattr(source, "fileno", None)
    tell = getattr(source, "tell", None)
    if fileno is None or tell is None:
        return None
    try:
        info = os.fstat(fileno())
        position = int(tell())
    except (OSError, ValueError):
        return None
    return info.st_size - position if stat.S_ISREG(info.st_mode) else None


def _read_head(source: Source) -> bytes:
    head = bytearray()
    buffer = bytearray(CHUNK)
    while True:
        count = source.readinto(buffer)
        if not count:
            break
        head += buffer[:count]
        if len(head) > _MAX_HEAD or _header_section(bytes(head))[1]:
            break
    return bytes(head)


def _prepare(
    message: Sendable,
    mail_from: str | None,
    recipients: Iterable[str] | None,
    config: SMTPConfig,
    stack: contextlib.ExitStack,
) -> _Outgoing:
    if isinstance(recipients, str):
        raise InputError("recipients= takes a list of addresses, not a single string")
    default_from: str | None = None
    default_to: tuple[str, ...] = ()
    source: Source | None = None
    size: int | None = None
    eight_bit: bool | None = None
    if isinstance(message, ProtectedMessage):
        head = message.data
        default_from, default_to = message.mail_from, message.recipients
    elif isinstance(message, EmailMessage):
        for name in ("Bcc", "Resent-Bcc"):
            if name in message:
                raise BccHeaderError(name)
        head = wire.to_bytes(message)
        # From the object: a compose.Message keeps its Bcc recipients beside the headers.
        if mail_from is None:
            default_from = envelope_sender(message)
        if recipients is None:
            default_to = envelope_recipients(message)
    elif isinstance(message, bytes | bytearray | memoryview):
        head = bytes(message)
    elif isinstance(message, os.PathLike):
        source = stack.enter_context(Path(message).open("rb"))  # noqa: SIM115
        size = _source_size(source)
        head = _read_head(source)
    elif hasattr(message, "readinto"):
        source = message
        size = _source_size(source)
        head = _read_head(source)
    else:
        raise InputError(
            f"cannot send a {type(message).__name__}: give a ProtectedMessage, an "
            "EmailMessage, bytes, a binary file or a path"
        )
    if source is None:
        size = canonical_size(head)
        eight_bit = not head.isascii()
    elif not head.isascii():
        eight_bit = True

    header_bytes, complete = _header_section(head)
    if not complete and (source is not None or len(head) > _MAX_HEAD):
        raise InputError("the message's header section does not end within its first MiB")
    raw = wire.split_entity(header_bytes + b"\r\n")
    if raw.body:
        raise MalformedMessageError(
            "the message does not start with a header section (a line before the first "
            "empty line is not a header field; an mbox 'From ' line?)"
        )
    for field in raw.fields:
        if field.name.lower() in _BCC_FIELDS:
            raise BccHeaderError(field.name)
    headers = wire.parse_headers(raw.header_bytes())
    if config.require_protection:
        check_encrypted(headers)

    if mail_from is None:
        mail_from = default_from
    if mail_from is None:
        try:
            mail_from = envelope_sender(headers)
        except InputError as exc:
            raise InputError(f"{exc}; pass mail_from= to set the envelope sender") from None
    # Every envelope address is checked here, wherever it came from: it becomes part of a
    # command line, where a line break would be a command of its own.
    sender = "" if mail_from == "" else _mailbox("MAIL FROM", mail_from)
    if recipients is None:
        recipients = default_to or envelope_recipients(headers)
    to = _unique(_mailbox("RCPT TO", r) for r in recipients)
    if not to:
        raise InputError("the message has no recipients: give To/Cc, or pass recipients=")
    return _Outgoing(head, source, size, eight_bit, sender, to)


# --- the transport -------------------------------------------------------------------------------


def _status(code: int) -> RecipientStatus | None:
    """The status a reply gives (None: accepted, the transaction goes on)."""
    if 200 <= code < 300:
        return None
    if 500 <= code < 600:
        return RecipientStatus.FAILED
    return RecipientStatus.DEFERRED  # 4xx, and anything unexpected: try again later


class _DataSink:
    def __init__(self, session: _Session) -> None:
        self._session = session
        self._seconds = session.config.deadlines.data_block

    def write(self, data: Data) -> int:
        self._session.arm("DATA block", self._seconds)
        self._session.send_raw(data)
        return len(data)


class SMTPTransport:
    """A connection to one mail server, reused for many messages.

    ::

        config = SMTPConfig(host="smtp.example.com", username="alice", password="...")
        with SMTPTransport(config) as transport:
            for message in outbox:
                result = transport.send(message)
                if not result.ok:
                    ...  # result.deferred: retry later; result.failed: tell the sender

    The connection is opened by the first :meth:`send` (or :meth:`connect`, to fail fast),
    so a message refused before sending (``require_protection``, a Bcc header) never
    causes one. Between messages the session is reset with RSET; if the server has closed
    it meanwhile, the transport reconnects.
    """

    def __init__(self, config: SMTPConfig) -> None:
        if not isinstance(config, SMTPConfig):
            raise InputError("SMTPTransport needs an SMTPConfig")
        self._config = config
        self._session: _Session | None = None

    @property
    def config(self) -> SMTPConfig:
        return self._config

    @property
    def connected(self) -> bool:
        return self._session is not None and self._session.sock is not None

    @property
    def encrypted(self) -> bool:
        """The current connection is TLS-protected."""
        return self.connected and self._session is not None and self._session.encrypted

    @property
    def extensions(self) -> dict[str, str]:
        """The server's EHLO keywords (lowercase) and parameters, as learnt over the current
        connection (after TLS: only what the server said after the handshake)."""
        if self._session is None or self._session.sock is None:
            return {}
        return dict(self._session.esmtp_features)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def connect(self) -> None:
        """Open the session now (greeting, EHLO, TLS, AUTH) if it is not open."""
        if not self.connected:
            self._session = self._open()

    def close(self) -> None:
        """QUIT and close the connection (quietly: the messages are already accounted for)."""
        session, self._session = self._session, None
        if session is not None:
            session.quit_quietly()

    def send(
        self,
        message: Sendable,
        *,
        mail_from: str | None = None,
        recipients: Iterable[str] | None = None,
    ) -> SendResult:
        """Send one message; the envelope defaults to the message's own.

        ``mail_from`` and ``recipients`` replace the envelope sender and recipients (a
        :class:`~securemail.results.ProtectedMessage` carries its own, Bcc included; other
        messages give From (or Sender) and To/Cc). ``mail_from=""`` sends the null reverse
        path ``<>`` used for bounces. A message with a Bcc header is refused. See the
        module documentation for what raises and what the result reports.
        """
        with contextlib.ExitStack() as stack:
            outgoing = _prepare(message, mail_from, recipients, self._config, stack)
            session = self._ready()
            options = self._check_fit(session, outgoing)
            result = self._transaction(session, outgoing, options)
        _log.info(
            "%s: %d delivered, %d deferred, %d failed",
            self._config.host,
            len(result.delivered),
            len(result.deferred),
            len(result.failed),
        )
        return result

    # session setup

    def _open(self) -> _Session:
        session = _Session(self._config)
        try:
            self._setup(session)
        except smtplib.SMTPServerDisconnected as exc:
            session.close()
            raise SMTPConnectionError(
                self._config.host, f"connection lost before a mail transaction: {exc}"
            ) from None
        except BaseException:
            session.close()
            raise
        return session

    def _setup(self, session: _Session) -> None:
        config = self._config
        deadlines = config.deadlines
        session.arm("greeting", deadlines.greeting)
        code, reply = session.connect(config.host, config.port)
        if code != 220:
            session.quit_quietly()
            raise SMTPConnectionError(
                config.host,
                f"the server refused the session ({code})",
                code=code,
                reply=_text(reply),
                temporary=not 500 <= code < 600,
            )
        self._hello(session)
        if config.tls != "implicit":
            self._starttls(session)
        if config.username is not None and config.password is not None:
            if not session.encrypted and not config.allow_auth_without_tls:
                session.quit_quietly()
                raise TLSRequiredError(config.host, "auth-without-tls")
            session.arm("AUTH", deadlines.command)
            try:
                session.authenticate(config.username, config.password.get_secret_value())
            except SMTPAuthError:
                session.quit_quietly()
                raise

    def _hello(self, session: _Session) -> None:
        session.arm("EHLO", self._config.deadlines.command)
        code, reply = session.ehlo()
        if not 200 <= code < 300:
            session.arm("HELO", self._config.deadlines.command)
            code, reply = session.helo()
        if not 200 <= code < 300:
            session.quit_quietly()
            raise SMTPConnectionError(
                self._config.host,
                f"the server refused EHLO and HELO ({code})",
                code=code,
                reply=_text(reply),
                temporary=not 500 <= code < 600,
            )

    def _starttls(self, session: _Session) -> None:
        config = self._config
        if not session.has_extn("starttls"):
            if config.tls == "opportunistic":
                _log.warning("%s does not offer STARTTLS: sending unencrypted", config.host)
                return
            session.quit_quietly()
            raise TLSRequiredError(config.host, "starttls-not-offered")
        session.arm("STARTTLS", config.deadlines.command)
        code, reply = session.starttls_checked()
        if code == 220:
            self._hello(session)
            return
        if code == 421:
            session.close()
            raise SMTPConnectionError(
                config.host, "the server closed the session", code=code, reply=_text(reply)
            )
        if config.tls == "opportunistic":
            _log.warning("%s refused STARTTLS (%d): sending unencrypted", config.host, code)
            return
        session.quit_quietly()
        raise TLSRequiredError(config.host, "starttls-refused", f"{code} {_text(reply)}")

    def _ready(self) -> _Session:
        session = self._session
        if session is not None and session.sock is not None:
            if session.fresh:
                return session
            session.arm("RSET", self._config.deadlines.command)
            try:
                code, _ = session.docmd("RSET")
            except (smtplib.SMTPServerDisconnected, SMTPTimeoutError):
                code = -1
            if 200 <= code < 300:
                return session
            _log.debug("%s: reconnecting (RSET answered %d)", self._config.host, code)
            session.close()
        self._session = None
        self._session = self._open()
        return self._session

    def _check_fit(self, session: _Session, outgoing: _Outgoing) -> list[str]:
        """The MAIL FROM parameters; raises if the server cannot take the message."""
        options = []
        if session.has_extn("size"):
            limit_text = session.esmtp_features.get("size", "").strip()
            limit = int(limit_text) if limit_text.isdigit() else 0
            if outgoing.size is not None:
                if limit and outgoing.size > limit:
                    raise MessageTooLargeError(self._config.host, outgoing.size, limit)
                options.append(f"SIZE={outgoing.size}")
        if session.has_extn("8bitmime"):
            if outgoing.eight_bit is not False:
                options.append("BODY=8BITMIME")
        elif outgoing.eight_bit:
            raise EightBitUnsupportedError(self._config.host)
        return options

    # the mail transaction

    def _transaction(
        self, session: _Session, outgoing: _Outgoing, options: list[str]
    ) -> SendResult:
        deadlines = self._config.deadlines
        session.fresh = False
        settled: dict[str, RecipientResult] = {}
        accepted: list[str] = []
        final: tuple[int | None, str] = (None, "")

        def settle(
            addresses: Iterable[str],
            code: int | None,
            reply: str,
            success: RecipientStatus = RecipientStatus.DELIVERED,
        ) -> None:
            status = RecipientStatus.DEFERRED if code is None else _status(code) or success
            for address in addresses:
                settled[address] = RecipientResult(address, status, code, reply)

        def open_recipients() -> list[str]:
            return [r for r in outgoing.recipients if r not in settled]

        try:
            session.arm("MAIL", deadlines.mail)
            parameters = "".join(f" {option}" for option in options)
            code, raw = session.docmd("MAIL", f"FROM:<{outgoing.mail_from}>{parameters}")
            final = (code, _text(raw))
            if _status(code) is not None:
                settle(outgoing.recipients, *final)
                return self._result(session, outgoing, settled, final)
            for address in outgoing.recipients:
                session.arm("RCPT", deadlines.rcpt)
                code, raw = session.docmd("RCPT", f"TO:<{address}>")
                final = (code, _text(raw))
                if _status(code) is None:
                    accepted.append(address)
                else:
                    settle([address], *final)
                if code == 421:
                    settle(open_recipients(), *final)
                    return self._result(session, outgoing, settled, final)
            if not accepted:
                return self._result(session, outgoing, settled, final)
            session.arm("DATA", deadlines.data_init)
            code, raw = session.docmd("DATA")
            final = (code, _text(raw))
            if code != 354:
                # Only the reply to the final dot can mean delivered.
                settle(accepted, *final, success=RecipientStatus.DEFERRED)
                return self._result(session, outgoing, settled, final)
            self._stream(session, outgoing)
            session.arm("end of DATA", deadlines.data_done)
            code, raw = session.getreply()
            final = (code, _text(raw))
            settle(accepted, *final)
        except (smtplib.SMTPServerDisconnected, SMTPTimeoutError) as exc:
            session.close()
            what = (
                f"gave up waiting ({exc.reason})"
                if isinstance(exc, SMTPTimeoutError)
                else f"connection lost ({exc})"
            )
            if final[0] == 354:
                why = (
                    f"{what} before the server confirmed the message; "
                    "it may or may not have been delivered"
                )
            else:
                why = f"{what} before the message was sent"
            final = (None, why)
            settle(open_recipients(), *final)
        except BaseException:
            # The caller's data failed mid-message: drop the connection before the final
            # dot, so that the server discards what it has.
            session.close()
            raise
        return self._result(session, outgoing, settled, final)

    def _stream(self, session: _Session, outgoing: _Outgoing) -> None:
        check_ascii = outgoing.eight_bit is None and not session.has_extn("8bitmime")
        writer = DataWriter(_DataSink(session))
        for chunk in outgoing.chunks():
            if check_ascii and not bytes(chunk).isascii():
                raise EightBitUnsupportedError(self._config.host)
            writer.write(chunk)
        writer.finalize()

    def _result(
        self,
        session: _Session,
        outgoing: _Outgoing,
        settled: dict[str, RecipientResult],
        final: tuple[int | None, str],
    ) -> SendResult:
        code = final[0]
        if code is not None and (code == 421 or not (200 <= code < 300 or 400 <= code < 600)):
            session.close()  # the server is closing, or the dialogue is out of step
        return SendResult(
            host=self._config.host,
            mail_from=outgoing.mail_from,
            recipients=tuple(settled[address] for address in outgoing.recipients),
            code=code,
            reply=final[1],
        )


def send(
    message: Sendable,
    config: SMTPConfig,
    *,
    mail_from: str | None = None,
    recipients: Iterable[str] | None = None,
) -> SendResult:
    """Send one message over a new connection, and close it."""
    with SMTPTransport(config) as transport:
        return transport.send(message, mail_from=mail_from, recipients=recipients)
