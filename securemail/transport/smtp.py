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
    TransportError,
)
from ..headers import check_address
from ..results import ProtectedMessage
from ..stream.base import CHUNK, Data, Source
from .config import SMTPConfig
from .data import DataWriter, canonical_size
from .results import RecipientResult, RecipientStatus, SendResult, TLSInfo

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


# --- the dialogue's pure parts, shared with the asyncio transport --------------------------------


def _reply_line(line: bytes) -> tuple[int, bytes, bool]:
    """One reply line: its code (-1 when it has none), its text, and whether more follow."""
    text = line[4:].strip(b" \t\r\n")
    if not line[:3].isdigit():
        return -1, text, False
    return int(line[:3]), text, line[3:4] == b"-"


def _shown_command(data: bytes, secret: bool) -> str:
    """A command line as the debug log shows it: during AUTH, the verb and mechanism only."""
    text = data.decode("ascii", "replace").rstrip("\r\n")
    if secret:  # AUTH: keep the verb and the mechanism, hide the rest
        words = text.split(" ")
        text = " ".join([*words[:2], "[hidden]"]) if words[0].upper() == "AUTH" else ""
        text = text or "[hidden]"
    return text


def _shown_reply(code: int, reply: bytes, secret: bool) -> str:
    """A reply as the debug log shows it (AUTH challenges hidden), on one line."""
    shown = "[hidden]" if secret and code == 334 else _text(reply)
    return shown.replace("\n", " | ").replace("\r", " ")


def _tls_error(config: SMTPConfig, kind: str, detail: str = "") -> TLSError:
    """A TLS failure: :class:`~securemail.errors.TLSRequiredError` unless opportunistic."""
    if config.tls == "opportunistic":
        return TLSError(config.host, kind, detail)
    return TLSRequiredError(config.host, kind, detail)


def _handshake_error(config: SMTPConfig, exc: BaseException) -> TLSError:
    """What a failed TLS handshake (``ssl`` or connection error) means."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return _tls_error(config, "certificate", exc.verify_message or exc.reason or "")
    reason = getattr(exc, "reason", None) or exc.__class__.__name__
    return _tls_error(config, "handshake", str(reason))


def _refused(host: str, what: str, code: int, reply: bytes) -> SMTPConnectionError:
    """The server refused ``what`` (the session, EHLO and HELO) with ``code``."""
    return SMTPConnectionError(
        host,
        f"the server refused {what} ({code})",
        code=code,
        reply=_text(reply),
        temporary=not 500 <= code < 600,
    )


def _starttls_missing(config: SMTPConfig) -> TLSRequiredError | None:
    """The error for a server that does not offer STARTTLS; None (go on in plaintext, with a
    warning) when opportunistic."""
    if config.tls == "opportunistic":
        _log.warning("%s does not offer STARTTLS: sending unencrypted", config.host)
        return None
    return TLSRequiredError(config.host, "starttls-not-offered")


def _starttls_refused(config: SMTPConfig, code: int, reply: bytes) -> TransportError | None:
    """The error for a STARTTLS answered with ``code``, not 220; None (go on in plaintext,
    with a warning) when opportunistic. After a 421 the server has closed the session."""
    if code == 421:
        return SMTPConnectionError(
            config.host, "the server closed the session", code=code, reply=_text(reply)
        )
    if config.tls == "opportunistic":
        _log.warning("%s refused STARTTLS (%d): sending unencrypted", config.host, code)
        return None
    return TLSRequiredError(config.host, "starttls-refused", f"{code} {_text(reply)}")


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
        self.tls_info: TLSInfo | None = None
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
        return _tls_error(self.config, kind, detail)

    def _handshake(self, sock: socket.socket) -> ssl.SSLSocket:
        context = tls_context(self.config)
        sock.settimeout(self._remaining())
        try:
            secured = context.wrap_socket(sock, server_hostname=self.config.tls_name)
        except TimeoutError:
            sock.close()
            raise self._timed_out() from None
        except (ssl.SSLError, OSError, ValueError) as exc:
            sock.close()
            self.close()
            raise _handshake_error(self.config, exc) from None
        self.encrypted = True
        self.tls_info = TLSInfo.of(secured, verified=context.verify_mode == ssl.CERT_REQUIRED)
        _log.debug("%s: %s, %s", self.host, self.tls_info.version, self.tls_info.cipher)
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
            _log.debug("%s >>> %s", self.host, _shown_command(data, self._secret))
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
        more = True
        while more:
            code, text, more = _reply_line(self._readline())
            lines.append(text)
        reply = b"\n".join(lines)
        if _log.isEnabledFor(logging.DEBUG):
            _log.debug("%s <<< %d %s", self.host, code, _shown_reply(code, reply, self._secret))
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


@dataclasses.dataclass(frozen=True)
class _Envelope:
    """A checked message: its first bytes (at least the header section; all of it when it
    is not streamed), and what the envelope and the checks against the server need."""

    head: bytes
    size: int | None
    """The size announced with SIZE= (exact for bytes, the file size for files)."""
    eight_bit: bool | None
    """Whether the message holds 8-bit bytes; None when a stream has not been read yet."""
    mail_from: str
    recipients: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class _Outgoing(_Envelope):
    """A message ready for the wire: checked, and the rest of it as a source when it is
    streamed."""

    source: Source | None

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


def _in_memory(
    message: object, mail_from: str | None, recipients: Iterable[str] | None
) -> tuple[bytes, str | None, tuple[str, ...]] | None:
    """A message given whole: its bytes and the envelope it carries (sender, recipients);
    None for a message to be streamed."""
    if isinstance(message, ProtectedMessage):
        return message.data, message.mail_from, message.recipients
    if isinstance(message, EmailMessage):
        for name in ("Bcc", "Resent-Bcc"):
            if name in message:
                raise BccHeaderError(name)
        head = wire.to_bytes(message)
        # From the object: a compose.Message keeps its Bcc recipients beside the headers.
        default_from = envelope_sender(message) if mail_from is None else None
        default_to = envelope_recipients(message) if recipients is None else ()
        return head, default_from, default_to
    if isinstance(message, bytes | bytearray | memoryview):
        return bytes(message), None, ()
    return None


def _checked(
    head: bytes,
    *,
    streamed: bool,
    size: int | None,
    default_from: str | None,
    default_to: tuple[str, ...],
    mail_from: str | None,
    recipients: Iterable[str] | None,
    config: SMTPConfig,
) -> _Envelope:
    """Check a message (header section, Bcc, ``require_protection``) and settle its
    envelope. ``head`` is the whole message, or its first bytes when ``streamed``."""
    eight_bit: bool | None = None
    if not streamed:
        size = canonical_size(head)
        eight_bit = not head.isascii()
    elif not head.isascii():
        eight_bit = True

    header_bytes, complete = _header_section(head)
    if not complete and (streamed or len(head) > _MAX_HEAD):
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
    return _Envelope(head=head, size=size, eight_bit=eight_bit, mail_from=sender, recipients=to)


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
    whole = _in_memory(message, mail_from, recipients)
    if whole is not None:
        head, default_from, default_to = whole
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
    envelope = _checked(
        head,
        streamed=source is not None,
        size=size,
        default_from=default_from,
        default_to=default_to,
        mail_from=mail_from,
        recipients=recipients,
        config=config,
    )
    return _Outgoing(**dataclasses.asdict(envelope), source=source)


# --- the transport -------------------------------------------------------------------------------


def _status(code: int) -> RecipientStatus | None:
    """The status a reply gives (None: accepted, the transaction goes on)."""
    if 200 <= code < 300:
        return None
    if 500 <= code < 600:
        return RecipientStatus.FAILED
    return RecipientStatus.DEFERRED  # 4xx, and anything unexpected: try again later


def _mail_options(host: str, features: dict[str, str], envelope: _Envelope) -> list[str]:
    """The MAIL FROM parameters for a server with EHLO ``features``; raises if the server
    cannot take the message."""
    options = []
    if "size" in features:
        limit_text = features.get("size", "").strip()
        limit = int(limit_text) if limit_text.isdigit() else 0
        if envelope.size is not None:
            if limit and envelope.size > limit:
                raise MessageTooLargeError(host, envelope.size, limit)
            options.append(f"SIZE={envelope.size}")
    if "8bitmime" in features:
        if envelope.eight_bit is not False:
            options.append("BODY=8BITMIME")
    elif envelope.eight_bit:
        raise EightBitUnsupportedError(host)
    return options


class _Ledger:
    """The account of one mail transaction: each reply is entered as it comes, and
    :meth:`result` gives every recipient the status the replies decided."""

    def __init__(self, host: str, envelope: _Envelope) -> None:
        self._host = host
        self._envelope = envelope
        self._settled: dict[str, RecipientResult] = {}
        self.accepted: list[str] = []
        self.final: tuple[int | None, str] = (None, "")
        """The reply that ended the transaction (so far)."""

    def _settle(
        self,
        addresses: Iterable[str],
        code: int | None,
        reply: str,
        success: RecipientStatus = RecipientStatus.DELIVERED,
    ) -> None:
        status = RecipientStatus.DEFERRED if code is None else _status(code) or success
        for address in addresses:
            self._settled[address] = RecipientResult(address, status, code, reply)

    def _open(self) -> list[str]:
        return [r for r in self._envelope.recipients if r not in self._settled]

    def mail(self, code: int, reply: bytes) -> bool:
        """The reply to MAIL FROM; whether the transaction goes on."""
        self.final = (code, _text(reply))
        if _status(code) is not None:
            self._settle(self._envelope.recipients, *self.final)
            return False
        return True

    def rcpt(self, address: str, code: int, reply: bytes) -> bool:
        """The reply to RCPT TO for ``address``; whether the transaction goes on."""
        self.final = (code, _text(reply))
        if _status(code) is None:
            self.accepted.append(address)
        else:
            self._settle([address], *self.final)
        if code == 421:
            self._settle(self._open(), *self.final)
            return False
        return True

    def data(self, code: int, reply: bytes) -> bool:
        """The reply to DATA; whether the message is to be sent."""
        self.final = (code, _text(reply))
        if code != 354:
            # Only the reply to the final dot can mean delivered.
            self._settle(self.accepted, *self.final, success=RecipientStatus.DEFERRED)
            return False
        return True

    def done(self, code: int, reply: bytes) -> None:
        """The reply to the final dot."""
        self.final = (code, _text(reply))
        self._settle(self.accepted, *self.final)

    def lost(self, exc: Exception) -> None:
        """The connection was lost or a deadline passed (``exc`` says which): whoever is
        not settled yet is deferred."""
        what = (
            f"gave up waiting ({exc.reason})"
            if isinstance(exc, SMTPTimeoutError)
            else f"connection lost ({exc})"
        )
        if self.final[0] == 354:
            why = (
                f"{what} before the server confirmed the message; "
                "it may or may not have been delivered"
            )
        else:
            why = f"{what} before the message was sent"
        self.final = (None, why)
        self._settle(self._open(), *self.final)

    @property
    def ends_session(self) -> bool:
        """The last reply closes the session: a 421, or a reply out of step."""
        code = self.final[0]
        return code is not None and (code == 421 or not (200 <= code < 300 or 400 <= code < 600))

    def result(self) -> SendResult:
        return SendResult(
            host=self._host,
            mail_from=self._envelope.mail_from,
            recipients=tuple(self._settled[address] for address in self._envelope.recipients),
            code=self.final[0],
            reply=self.final[1],
        )


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
            options = _mail_options(self._config.host, session.esmtp_features, outgoing)
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
            raise _refused(config.host, "the session", code, reply)
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
            raise _refused(self._config.host, "EHLO and HELO", code, reply)

    def _starttls(self, session: _Session) -> None:
        config = self._config
        if not session.has_extn("starttls"):
            missing = _starttls_missing(config)
            if missing is None:
                return
            session.quit_quietly()
            raise missing
        session.arm("STARTTLS", config.deadlines.command)
        code, reply = session.starttls_checked()
        if code == 220:
            self._hello(session)
            return
        refused = _starttls_refused(config, code, reply)
        if refused is None:
            return
        if code == 421:
            session.close()
        else:
            session.quit_quietly()
        raise refused

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

    # the mail transaction

    def _transaction(
        self, session: _Session, outgoing: _Outgoing, options: list[str]
    ) -> SendResult:
        deadlines = self._config.deadlines
        session.fresh = False
        ledger = _Ledger(self._config.host, outgoing)
        try:
            session.arm("MAIL", deadlines.mail)
            parameters = "".join(f" {option}" for option in options)
            if not ledger.mail(*session.docmd("MAIL", f"FROM:<{outgoing.mail_from}>{parameters}")):
                return self._result(session, ledger)
            for address in outgoing.recipients:
                session.arm("RCPT", deadlines.rcpt)
                if not ledger.rcpt(address, *session.docmd("RCPT", f"TO:<{address}>")):
                    return self._result(session, ledger)
            if not ledger.accepted:
                return self._result(session, ledger)
            session.arm("DATA", deadlines.data_init)
            if not ledger.data(*session.docmd("DATA")):
                return self._result(session, ledger)
            self._stream(session, outgoing)
            session.arm("end of DATA", deadlines.data_done)
            ledger.done(*session.getreply())
        except (smtplib.SMTPServerDisconnected, SMTPTimeoutError) as exc:
            session.close()
            ledger.lost(exc)
        except BaseException:
            # The caller's data failed mid-message: drop the connection before the final
            # dot, so that the server discards what it has.
            session.close()
            raise
        return self._result(session, ledger)

    def _stream(self, session: _Session, outgoing: _Outgoing) -> None:
        check_ascii = outgoing.eight_bit is None and not session.has_extn("8bitmime")
        writer = DataWriter(_DataSink(session))
        for chunk in outgoing.chunks():
            if check_ascii and not bytes(chunk).isascii():
                raise EightBitUnsupportedError(self._config.host)
            writer.write(chunk)
        writer.finalize()

    def _result(self, session: _Session, ledger: _Ledger) -> SendResult:
        if ledger.ends_session:
            session.close()  # the server is closing, or the dialogue is out of step
        return dataclasses.replace(ledger.result(), tls=session.tls_info)


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
