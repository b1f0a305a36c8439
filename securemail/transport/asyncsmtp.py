"""Sending over SMTP from asyncio, with the guarantees of :mod:`securemail.transport.smtp`.

:class:`AsyncSMTPTransport` is :class:`~securemail.transport.smtp.SMTPTransport` for asyncio
programs: the same :class:`~securemail.transport.config.SMTPConfig`, TLS policy, deadlines,
errors and :class:`~securemail.transport.results.SendResult`, and the same decisions, made by
the same functions (the message and envelope checks, the MAIL FROM parameters, the account of
the replies for each recipient). Only the input and output differ::

    async with AsyncSMTPTransport(config) as transport:
        result = await transport.send(message)

What raises and what is reported is as documented for the synchronous transport. In
addition, the caller's own cancellation (``task.cancel()``, ``asyncio.timeout`` around
``send``) is treated like a failure of the caller's data: during a mail transaction the
connection is dropped at once, before the final dot if it was not sent yet (the server
then discards the message), and the cancellation propagates. A cancellation while the
server is answering the final dot leaves the message's fate unknown, exactly like a lost
connection at that point, but no result can report it.

One transport is one SMTP connection: concurrent :meth:`~AsyncSMTPTransport.send` calls on
it take turns. For parallel delivery use several transports.

The message may also come from an asynchronous source (:data:`AsyncSendable`): an object
with an awaitable ``read(size)`` (:class:`asyncio.StreamReader`, aiofiles) or an async
iterable of bytes. A synchronous binary file, or a path, is read in a worker thread
(:func:`asyncio.to_thread`) so that a slow disk does not stall the event loop.

Why the SMTP dialogue is driven here rather than by aiosmtplib (5.1): it can be configured
with a verified TLS context and bounds each reply with ``asyncio.wait_for`` (a whole-reply
deadline), but

* ``SMTPProtocol.start_tls`` silently *discards* bytes buffered after the STARTTLS ``220``
  (``del self._buffer[:]``), and ``data_received`` drops any bytes arriving while no reply
  is awaited: pipelined injection cannot be detected, so it cannot be refused
  (:class:`~securemail.errors.TLSError` ``"data-after-starttls"``) as the synchronous
  transport does.
* ``SMTP.data``/``sendmail`` take the whole message as ``bytes`` and build two more copies
  of it (line-end normalization, dot-stuffing) before one ``transport.write`` that never
  waits for the socket: no streaming from a file or an async source, memory of several
  times the message, and no deadline on sending the data.
* The final reply can only be awaited reliably after flow-control waits by setting the
  private ``_response_pending`` flag: an answer arriving during a wait is dropped as
  unsolicited.
* Implicit TLS checks the certificate against ``hostname`` only (``server_hostname`` is
  honoured for STARTTLS alone).

Working around these needs its private attributes (``_buffer``, ``_response_pending``,
``_drain_helper``), which have changed between releases. So this module speaks SMTP over
an :class:`asyncio.Protocol` of its own, with public asyncio interfaces only
(``loop.create_connection``, ``loop.start_tls``, ``asyncio.timeout_at``), and needs no
dependency beyond the standard library.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import dataclasses
import hmac
import inspect
import logging
import os
import re
import smtplib
import socket
import ssl
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Awaitable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self, TypeVar, cast

from ..errors import (
    EightBitUnsupportedError,
    InputError,
    SMTPAuthError,
    SMTPConnectionError,
    SMTPTimeoutError,
    TLSError,
    TLSRequiredError,
)
from ..stream.base import CHUNK, Data, Source
from .config import SMTPConfig
from .data import DataWriter
from .results import SendResult, TLSInfo
from .smtp import (
    _MAX_HEAD,
    _MAX_LINE,
    Sendable,
    _checked,
    _Envelope,
    _handshake_error,
    _header_section,
    _in_memory,
    _Ledger,
    _log,
    _mail_options,
    _read_head,
    _refused,
    _reply_line,
    _shown_command,
    _shown_reply,
    _source_size,
    _starttls_missing,
    _starttls_refused,
    _text,
    _tls_error,
    tls_context,
)

__all__ = ["AsyncSMTPTransport", "AsyncSendable", "AsyncSource", "send_async"]

_T = TypeVar("_T")


class AsyncSource(Protocol):
    """Anything bytes can be read from with ``await source.read(size)`` (an empty result
    at the end): :class:`asyncio.StreamReader`, an aiofiles file opened in binary mode."""

    async def read(self, size: int, /) -> bytes: ...


AsyncSendable = Sendable | AsyncSource | AsyncIterable[Data]
"""What :meth:`AsyncSMTPTransport.send` takes: anything
:meth:`~securemail.transport.smtp.SMTPTransport.send` takes, an :class:`AsyncSource`, or an
async iterable of bytes (such as an async generator)."""

_READ_AHEAD = 64 * 1024
"""Received bytes held before the connection stops reading from the network."""
_TOO_LONG = "the server sent a reply line longer than 8192 bytes"
_AUTH_MECHANISMS = ("CRAM-MD5", "PLAIN", "LOGIN")
"""smtplib's order of preference, so that both transports authenticate alike."""
_MAX_CHALLENGES = 5  # smtplib's bound
_OLDSTYLE_AUTH = re.compile(r"auth=(.*)", re.IGNORECASE)
_FEATURE = re.compile(r"(?P<feature>[A-Za-z0-9][A-Za-z0-9\-]*) ?")


def _esmtp_features(reply: bytes) -> dict[str, str]:
    """The EHLO keywords (lowercase) and their parameters, parsed as smtplib does."""
    features: dict[str, str] = {}
    for line in reply.decode("latin-1").split("\n")[1:]:
        old_auth = _OLDSTYLE_AUTH.match(line)
        if old_auth:
            features["auth"] = features.get("auth", "") + " " + old_auth.group(1)
            continue
        match = _FEATURE.match(line)
        if match:
            feature = match.group("feature").lower()
            parameters = line[match.end("feature") :].strip()
            if feature == "auth":
                features[feature] = features.get(feature, "") + " " + parameters
            else:
                features[feature] = parameters
    return features


def _local_hostname() -> str:
    """The name for EHLO when none is configured, found as smtplib finds it."""
    fqdn = socket.getfqdn()
    if "." in fqdn:
        return fqdn
    address = "127.0.0.1"
    with contextlib.suppress(socket.gaierror):
        address = socket.gethostbyname(socket.gethostname())
    return f"[{address}]"


def _auth_answer(
    mechanism: str, username: str, password: str, challenge: bytes | None, count: int
) -> bytes | None:
    """The client's answer in an AUTH exchange (None: no initial response), as smtplib
    gives it, but in UTF-8 (RFC 4616) where smtplib accepts ASCII only."""
    user, secret = username.encode(), password.encode()
    if mechanism == "CRAM-MD5":
        if challenge is None:
            return None
        return user + b" " + hmac.new(secret, challenge, "md5").hexdigest().encode("ascii")
    if mechanism == "PLAIN":
        return b"\0" + user + b"\0" + secret
    return user if challenge is None or count < 2 else secret  # LOGIN


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# --- the connection's bytes ----------------------------------------------------------------------


class _Gone(Exception):
    """The connection is closed (the reason is the message)."""


class _Wire(asyncio.Protocol):
    """One connection's bytes: what arrived waits in :attr:`buffer` for the reply reader,
    and writes are paced by the transport's flow control (:meth:`drain`). Reading pauses
    while more than a few replies' worth is unread, so a flooding server costs no memory.
    After STARTTLS the same object receives the decrypted bytes."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.ended: str | None = None
        """Why no more bytes will arrive (None while they may)."""
        self.closed: asyncio.Future[None] = self._loop.create_future()
        self._arrived: asyncio.Future[None] | None = None
        self._writable: asyncio.Future[None] | None = None
        self._write_paused = False
        self._read_paused = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > _READ_AHEAD and self.transport is not None:
            self.transport.pause_reading()
            self._read_paused = True
        self._wake(self._arrived)

    def eof_received(self) -> bool:
        self._end("the server closed the connection")
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self._end(f"connection lost: {exc}" if exc else "the server closed the connection")
        self.transport = None
        self._write_paused = False
        self._wake(self._writable)
        if not self.closed.done():
            self.closed.set_result(None)

    @property
    def write_paused(self) -> bool:
        return self._write_paused

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake(self._writable)

    # for the session

    def consumed(self) -> None:
        """The reader took bytes from :attr:`buffer`: read on if reading was paused."""
        if self._read_paused and len(self.buffer) <= _READ_AHEAD and self.transport is not None:
            self._read_paused = False
            self.transport.resume_reading()

    async def more(self) -> None:
        """Wait until more bytes arrive or the connection ends."""
        if self.ended is not None:
            return
        self._arrived = self._loop.create_future()
        try:
            await self._arrived
        finally:
            self._arrived = None

    def write(self, data: bytes) -> None:
        """Hand ``data`` to the transport (which keeps it until the network takes it)."""
        if self.transport is None or self.transport.is_closing():
            raise _Gone(self.ended or "the connection is closed")
        self.transport.write(data)

    async def drain(self) -> None:
        """Wait until the transport has room for more (or the connection is gone: the next
        write or read says so, after any reply already received)."""
        while self._write_paused and self.transport is not None:
            self._writable = self._loop.create_future()
            try:
                await self._writable
            finally:
                self._writable = None

    def unread_bytes(self) -> bool:
        """Bytes are waiting: in :attr:`buffer`, or in the socket, not yet read by the loop."""
        if self.buffer:
            return True
        sock = self.transport.get_extra_info("socket") if self.transport is not None else None
        if sock is None:
            return False
        with sock.dup() as peer:
            peer.setblocking(False)
            try:
                return bool(peer.recv(1, socket.MSG_PEEK))
            except OSError:  # BlockingIOError: nothing waiting
                return False

    def abort(self) -> None:
        self._end("the connection was closed")
        if self.transport is not None:
            self.transport.abort()

    def _end(self, reason: str) -> None:
        if self.ended is None:
            self.ended = reason
        self._wake(self._arrived)

    @staticmethod
    def _wake(waiter: asyncio.Future[None] | None) -> None:
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


# --- the session ---------------------------------------------------------------------------------


class _Session:
    """One connection and its SMTP state, as ``smtp._Session`` keeps it for smtplib: a
    deadline armed per step bounds everything until that step's reply; a lost connection
    surfaces as ``smtplib.SMTPServerDisconnected`` and a missed deadline as
    :class:`~securemail.errors.SMTPTimeoutError`, both after the connection is dropped."""

    def __init__(self, config: SMTPConfig, local_hostname: str) -> None:
        self.config = config
        self.host = config.host
        self.local_hostname = local_hostname
        self.encrypted = False
        self.tls_info: TLSInfo | None = None
        self.fresh = True
        """No transaction has run on this connection yet (no RSET needed)."""
        self.features: dict[str, str] = {}
        self.wire: _Wire | None = None
        self._loop = asyncio.get_running_loop()
        self._deadline = self._loop.time()
        self._stage = "connect"
        self._seconds = 0.0
        self._secret = False

    @property
    def connected(self) -> bool:
        return self.wire is not None and self.wire.ended is None

    def has_extn(self, name: str) -> bool:
        return name.lower() in self.features

    # deadlines

    def arm(self, stage: str, seconds: float) -> None:
        """Start the clock for ``stage``: everything until its reply must fit in ``seconds``."""
        self._stage = stage
        self._seconds = seconds
        self._deadline = self._loop.time() + seconds

    async def _within(self, awaitable: Awaitable[_T]) -> _T:
        try:
            async with asyncio.timeout_at(self._deadline):
                return await awaitable
        except TimeoutError:
            raise self._timed_out() from None

    def _timed_out(self) -> SMTPTimeoutError:
        # A late reply would be read as the answer to the next command: the session is over.
        self.abort()
        _log.debug("%s: deadline for %s (%g s) passed", self.host, self._stage, self._seconds)
        return SMTPTimeoutError(self.host, self._stage, self._seconds)

    def _lost(self, reason: str) -> smtplib.SMTPServerDisconnected:
        self.abort()
        _log.debug("%s: %s", self.host, reason)
        return smtplib.SMTPServerDisconnected(reason)

    def _wire(self) -> _Wire:
        if self.wire is None:
            raise smtplib.SMTPServerDisconnected("not connected")
        return self.wire

    # connecting and TLS

    async def connect(self) -> tuple[int, bytes]:
        """Connect (and, for implicit TLS, secure the connection); return the greeting."""
        port = self.config.port
        try:
            _, self.wire = await self._within(
                self._loop.create_connection(_Wire, self.config.host, port)
            )
        except OSError as exc:
            raise SMTPConnectionError(
                self.host, f"cannot connect to port {port}: {exc.strerror or exc}"
            ) from None
        if self.config.tls == "implicit":
            await self._handshake()
        return await self.getreply()

    def _tls_failure(self, kind: str, detail: str = "") -> TLSError:
        self.abort()
        return _tls_error(self.config, kind, detail)

    async def _handshake(self) -> None:
        wire = self._wire()
        if wire.transport is None:
            raise self._lost(wire.ended or "the connection is closed")
        # asyncio's own handshake timeout is set past the step's deadline, which rules.
        slack = self._deadline - self._loop.time() + 1.0
        context = tls_context(self.config)
        try:
            secured = await self._within(
                self._loop.start_tls(
                    wire.transport,
                    wire,
                    context,
                    server_hostname=self.config.tls_name,
                    ssl_handshake_timeout=max(slack, 1.0),
                )
            )
        except (ssl.SSLError, OSError, ValueError) as exc:
            self.abort()
            raise _handshake_error(self.config, exc) from None
        if secured is None or secured.is_closing():  # the server hung up during the handshake
            self.abort()
            raise _handshake_error(self.config, ConnectionResetError())
        wire.transport = secured
        self.encrypted = True
        ssl_object = secured.get_extra_info("ssl_object")
        if ssl_object is not None:
            verified = context.verify_mode == ssl.CERT_REQUIRED
            self.tls_info = TLSInfo.of(ssl_object, verified=verified)
            _log.debug("%s: %s, %s", self.host, self.tls_info.version, self.tls_info.cipher)

    async def starttls_checked(self) -> tuple[int, bytes]:
        """STARTTLS, then the handshake. Returns the reply if the server did not agree.

        Whatever the server sent after its 220 was sent before encryption and could come
        from anyone on the path: any such byte, received or waiting in the socket, ends
        the session. (Bytes arriving later reach the TLS layer and fail the handshake.)
        """
        code, reply = await self.docmd("STARTTLS")
        if code != 220:
            return code, reply
        if self._wire().unread_bytes():
            raise self._tls_failure("data-after-starttls")
        await self._handshake()
        # RFC 3207 4.2: forget everything learnt before TLS.
        self.features = {}
        return code, reply

    # commands and replies

    async def docmd(self, command: str, arguments: str = "") -> tuple[int, bytes]:
        line = f"{command} {arguments}" if arguments else command
        if "\r" in line or "\n" in line:
            raise InputError("an SMTP command must not contain CR or LF")
        data = line.encode("ascii") + b"\r\n"
        if _log.isEnabledFor(logging.DEBUG):
            _log.debug("%s >>> %s", self.host, _shown_command(data, self._secret))
        self.write(data)
        await self.drain()
        return await self.getreply()

    def write(self, data: Data) -> None:
        """Hand ``data`` to the connection (see :meth:`drain`)."""
        try:
            self._wire().write(bytes(data))
        except _Gone as exc:
            raise self._lost(f"connection lost while sending: {exc}") from None

    async def drain(self) -> None:
        """Wait, within the current deadline, until the connection takes more data."""
        wire = self._wire()
        if wire.write_paused:
            await self._within(wire.drain())

    async def getreply(self) -> tuple[int, bytes]:
        lines: list[bytes] = []
        code = -1
        more = True
        while more:
            code, text, more = _reply_line(await self._readline())
            lines.append(text)
        reply = b"\n".join(lines)
        if _log.isEnabledFor(logging.DEBUG):
            _log.debug("%s <<< %d %s", self.host, code, _shown_reply(code, reply, self._secret))
        return code, reply

    async def _readline(self) -> bytes:
        wire = self._wire()
        while True:
            end = wire.buffer.find(b"\n")
            if end >= 0:
                line = bytes(wire.buffer[: end + 1])
                del wire.buffer[: end + 1]
                wire.consumed()
                if len(line) > _MAX_LINE:
                    raise self._lost(_TOO_LONG)
                return line
            if len(wire.buffer) > _MAX_LINE:
                raise self._lost(_TOO_LONG)
            if wire.ended is not None:
                raise self._lost(wire.ended)
            await self._within(wire.more())

    async def ehlo(self) -> tuple[int, bytes]:
        self.features = {}
        code, reply = await self.docmd("EHLO", self.local_hostname)
        if code == -1 and not reply:  # as smtplib: an empty line for an answer
            raise self._lost("Server not connected")
        if code == 250:
            self.features = _esmtp_features(reply)
        return code, reply

    async def helo(self) -> tuple[int, bytes]:
        return await self.docmd("HELO", self.local_hostname)

    # AUTH

    async def authenticate(self, username: str, password: str) -> None:
        """Log in with the first mechanism both sides know (smtplib's order), trying the
        next one if the server refuses."""
        self._secret = True
        try:
            if not self.has_extn("auth"):
                raise SMTPAuthError(self.host, "the server does not offer AUTH")
            advertised = self.features["auth"].split()
            mechanisms = [m for m in _AUTH_MECHANISMS if m in advertised]
            if not mechanisms:
                raise SMTPAuthError(self.host, "No suitable authentication method found.")
            code, reply = -1, b""
            for mechanism in mechanisms:
                code, reply = await self._auth(mechanism, username, password)
                if code in (235, 503):
                    return
            raise SMTPAuthError(
                self.host, "the server refused the credentials", code=code, reply=_text(reply)
            )
        finally:
            self._secret = False

    async def _auth(self, mechanism: str, username: str, password: str) -> tuple[int, bytes]:
        initial = _auth_answer(mechanism, username, password, None, 0)
        if initial is not None:
            code, reply = await self.docmd("AUTH", f"{mechanism} {_b64(initial)}")
            count = 1
        else:
            code, reply = await self.docmd("AUTH", mechanism)
            count = 0
        while code == 334:
            count += 1
            try:
                challenge = base64.decodebytes(reply)
            except binascii.Error:
                raise SMTPAuthError(
                    self.host, "the server sent a malformed AUTH challenge"
                ) from None
            answer = _auth_answer(mechanism, username, password, challenge, count) or b""
            code, reply = await self.docmd(_b64(answer))
            if count > _MAX_CHALLENGES:
                raise SMTPAuthError(
                    self.host, f"Server AUTH mechanism infinite loop. Last response: {code}"
                )
        return code, reply

    # ending

    def abort(self) -> None:
        """Drop the connection now."""
        wire, self.wire = self.wire, None
        if wire is not None:
            wire.abort()

    async def quit_quietly(self) -> None:
        """QUIT if the connection is still usable; close it in any case."""
        wire = self.wire
        if wire is None:
            return
        if self.connected:
            self.arm("QUIT", self.config.deadlines.quit)
            with contextlib.suppress(smtplib.SMTPServerDisconnected, SMTPTimeoutError):
                await self.docmd("QUIT")
        self.wire = None
        if wire.transport is not None:
            wire.transport.close()
            try:  # a TLS connection ends with the close_notify exchange
                async with asyncio.timeout_at(self._deadline):
                    await asyncio.shield(wire.closed)
            except TimeoutError:
                pass
        wire.abort()


# --- what is sent --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _AsyncOutgoing(_Envelope):
    """A message ready for the wire: checked, and the rest of it as chunks when it is
    streamed."""

    source: AsyncIterator[Data] | None

    async def chunks(self) -> AsyncGenerator[Data, None]:
        if self.head:
            yield self.head
        if self.source is not None:
            async for chunk in self.source:
                yield chunk


def _is_async_source(message: object) -> bool:
    return inspect.iscoroutinefunction(getattr(message, "read", None))


async def _from_file(source: Source) -> AsyncGenerator[Data, None]:
    buffer = bytearray(CHUNK)
    with memoryview(buffer) as view:
        while True:
            count = await asyncio.to_thread(source.readinto, view)
            if count is None:
                raise InputError("the message source is non-blocking and had no data ready")
            if not count:
                return
            yield view[:count]


def _bytes(data: object) -> Data:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InputError(f"an async message source gave a {type(data).__name__}, not bytes")
    return data


async def _from_reader(source: AsyncSource) -> AsyncGenerator[Data, None]:
    while data := _bytes(await source.read(CHUNK)):
        yield data


async def _from_iterable(source: AsyncIterable[Data]) -> AsyncGenerator[Data, None]:
    async for data in source:
        if _bytes(data):
            yield data


async def _read_head_async(chunks: AsyncIterator[Data]) -> bytes:
    """The first bytes of a stream, at least its header section (or its first MiB), like
    ``smtp._read_head``; checked for the section's end once per :data:`CHUNK` bytes, so
    that a source of many small pieces costs no more than one of large ones."""
    head = bytearray()
    checked = 0
    async for data in chunks:
        head += data
        if len(head) > _MAX_HEAD:
            break
        if len(head) - checked >= CHUNK:
            checked = len(head)
            if _header_section(bytes(head))[1]:
                break
    return bytes(head)


async def _prepare(
    message: AsyncSendable,
    mail_from: str | None,
    recipients: Iterable[str] | None,
    config: SMTPConfig,
    stack: contextlib.AsyncExitStack,
) -> _AsyncOutgoing:
    if isinstance(recipients, str):
        raise InputError("recipients= takes a list of addresses, not a single string")
    default_from: str | None = None
    default_to: tuple[str, ...] = ()
    chunks: AsyncGenerator[Data, None] | None = None
    size: int | None = None
    whole = _in_memory(message, mail_from, recipients)
    if whole is not None:
        head, default_from, default_to = whole
    elif _is_async_source(message) or isinstance(message, AsyncIterable):
        # Before readinto: an async file (aiofiles) has an awaitable readinto too.
        if _is_async_source(message):
            chunks = _from_reader(cast(AsyncSource, message))
        else:
            chunks = _from_iterable(cast(AsyncIterable[Data], message))
        head = await _read_head_async(chunks)
    elif isinstance(message, os.PathLike) or hasattr(message, "readinto"):
        if isinstance(message, os.PathLike):
            file = await asyncio.to_thread(Path(message).open, "rb")
            stack.callback(file.close)
            source: Source = file
        else:
            source = cast(Source, message)
        size = _source_size(source)
        head = await asyncio.to_thread(_read_head, source)
        chunks = _from_file(source)
    else:
        raise InputError(
            f"cannot send a {type(message).__name__}: give a ProtectedMessage, an "
            "EmailMessage, bytes, a binary file, a path, or an async source (an object with "
            "an async read(size), or an async iterable of bytes)"
        )
    if chunks is not None:
        stack.push_async_callback(chunks.aclose)
    envelope = _checked(
        head,
        streamed=chunks is not None,
        size=size,
        default_from=default_from,
        default_to=default_to,
        mail_from=mail_from,
        recipients=recipients,
        config=config,
    )
    return _AsyncOutgoing(**dataclasses.asdict(envelope), source=chunks)


class _DataSink:
    def __init__(self, session: _Session) -> None:
        self._session = session

    def write(self, data: Data) -> int:
        self._session.write(data)
        return len(data)


# --- the transport -------------------------------------------------------------------------------


class AsyncSMTPTransport:
    """A connection to one mail server, reused for many messages, for asyncio.

    ::

        config = SMTPConfig(host="smtp.example.com", username="alice", password="...")
        async with AsyncSMTPTransport(config) as transport:
            for message in outbox:
                result = await transport.send(message)
                if not result.ok:
                    ...  # result.deferred: retry later; result.failed: tell the sender

    The same as :class:`~securemail.transport.smtp.SMTPTransport`, awaited: the connection
    is opened by the first :meth:`send` (or :meth:`connect`), reset with RSET between
    messages, and reopened if the server closed it meanwhile.
    """

    def __init__(self, config: SMTPConfig) -> None:
        if not isinstance(config, SMTPConfig):
            raise InputError("AsyncSMTPTransport needs an SMTPConfig")
        self._config = config
        self._session: _Session | None = None
        self._lock = asyncio.Lock()
        self._local_hostname = config.local_hostname

    @property
    def config(self) -> SMTPConfig:
        return self._config

    @property
    def connected(self) -> bool:
        return self._session is not None and self._session.connected

    @property
    def encrypted(self) -> bool:
        """The current connection is TLS-protected."""
        return self.connected and self._session is not None and self._session.encrypted

    @property
    def extensions(self) -> dict[str, str]:
        """The server's EHLO keywords (lowercase) and parameters, as learnt over the current
        connection (after TLS: only what the server said after the handshake)."""
        if self._session is None or not self._session.connected:
            return {}
        return dict(self._session.features)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def connect(self) -> None:
        """Open the session now (greeting, EHLO, TLS, AUTH) if it is not open."""
        async with self._lock:
            if not self.connected:
                self._drop()
                self._session = await self._open()

    async def close(self) -> None:
        """QUIT and close the connection (quietly: the messages are already accounted for)."""
        async with self._lock:
            session, self._session = self._session, None
            if session is not None:
                await session.quit_quietly()

    async def send(
        self,
        message: AsyncSendable,
        *,
        mail_from: str | None = None,
        recipients: Iterable[str] | None = None,
    ) -> SendResult:
        """Send one message; the envelope defaults to the message's own.

        As :meth:`securemail.transport.smtp.SMTPTransport.send`; ``message`` may also be an
        async source (:data:`AsyncSendable`).
        """
        async with self._lock, contextlib.AsyncExitStack() as stack:
            outgoing = await _prepare(message, mail_from, recipients, self._config, stack)
            session = await self._ready()
            options = _mail_options(self._config.host, session.features, outgoing)
            result = await self._transaction(session, outgoing, options)
        _log.info(
            "%s: %d delivered, %d deferred, %d failed",
            self._config.host,
            len(result.delivered),
            len(result.deferred),
            len(result.failed),
        )
        return result

    # session setup

    def _drop(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            session.abort()

    async def _open(self) -> _Session:
        if self._local_hostname is None:
            self._local_hostname = await asyncio.to_thread(_local_hostname)
        session = _Session(self._config, self._local_hostname)
        try:
            await self._setup(session)
        except smtplib.SMTPServerDisconnected as exc:
            session.abort()
            raise SMTPConnectionError(
                self._config.host, f"connection lost before a mail transaction: {exc}"
            ) from None
        except BaseException:
            session.abort()
            raise
        return session

    async def _setup(self, session: _Session) -> None:
        config = self._config
        deadlines = config.deadlines
        session.arm("greeting", deadlines.greeting)
        code, reply = await session.connect()
        if code != 220:
            await session.quit_quietly()
            raise _refused(config.host, "the session", code, reply)
        await self._hello(session)
        if config.tls != "implicit":
            await self._starttls(session)
        if config.username is not None and config.password is not None:
            if not session.encrypted and not config.allow_auth_without_tls:
                await session.quit_quietly()
                raise TLSRequiredError(config.host, "auth-without-tls")
            session.arm("AUTH", deadlines.command)
            try:
                await session.authenticate(config.username, config.password.get_secret_value())
            except SMTPAuthError:
                await session.quit_quietly()
                raise

    async def _hello(self, session: _Session) -> None:
        session.arm("EHLO", self._config.deadlines.command)
        code, reply = await session.ehlo()
        if not 200 <= code < 300:
            session.arm("HELO", self._config.deadlines.command)
            code, reply = await session.helo()
        if not 200 <= code < 300:
            await session.quit_quietly()
            raise _refused(self._config.host, "EHLO and HELO", code, reply)

    async def _starttls(self, session: _Session) -> None:
        config = self._config
        if not session.has_extn("starttls"):
            missing = _starttls_missing(config)
            if missing is None:
                return
            await session.quit_quietly()
            raise missing
        session.arm("STARTTLS", config.deadlines.command)
        code, reply = await session.starttls_checked()
        if code == 220:
            await self._hello(session)
            return
        refused = _starttls_refused(config, code, reply)
        if refused is None:
            return
        if code == 421:
            session.abort()
        else:
            await session.quit_quietly()
        raise refused

    async def _ready(self) -> _Session:
        session = self._session
        if session is not None and session.connected:
            if session.fresh:
                return session
            session.arm("RSET", self._config.deadlines.command)
            try:
                code, _ = await session.docmd("RSET")
            except (smtplib.SMTPServerDisconnected, SMTPTimeoutError):
                code = -1
            if 200 <= code < 300:
                return session
            _log.debug("%s: reconnecting (RSET answered %d)", self._config.host, code)
        self._drop()
        self._session = await self._open()
        return self._session

    # the mail transaction

    async def _transaction(
        self, session: _Session, outgoing: _AsyncOutgoing, options: list[str]
    ) -> SendResult:
        deadlines = self._config.deadlines
        session.fresh = False
        ledger = _Ledger(self._config.host, outgoing)
        try:
            session.arm("MAIL", deadlines.mail)
            parameters = "".join(f" {option}" for option in options)
            reply = await session.docmd("MAIL", f"FROM:<{outgoing.mail_from}>{parameters}")
            if not ledger.mail(*reply):
                return self._result(session, ledger)
            for address in outgoing.recipients:
                session.arm("RCPT", deadlines.rcpt)
                if not ledger.rcpt(address, *await session.docmd("RCPT", f"TO:<{address}>")):
                    return self._result(session, ledger)
            if not ledger.accepted:
                return self._result(session, ledger)
            session.arm("DATA", deadlines.data_init)
            if not ledger.data(*await session.docmd("DATA")):
                return self._result(session, ledger)
            await self._stream(session, outgoing)
            session.arm("end of DATA", deadlines.data_done)
            ledger.done(*await session.getreply())
        except (smtplib.SMTPServerDisconnected, SMTPTimeoutError) as exc:
            session.abort()
            ledger.lost(exc)
        except BaseException:
            # The caller's data failed mid-message, or the caller cancelled: drop the
            # connection before the final dot, so that the server discards what it has.
            session.abort()
            raise
        return self._result(session, ledger)

    async def _stream(self, session: _Session, outgoing: _AsyncOutgoing) -> None:
        check_ascii = outgoing.eight_bit is None and not session.has_extn("8bitmime")
        seconds = self._config.deadlines.data_block
        writer = DataWriter(_DataSink(session))
        async with contextlib.aclosing(outgoing.chunks()) as chunks:
            async for chunk in chunks:
                if check_ascii and not bytes(chunk).isascii():
                    raise EightBitUnsupportedError(self._config.host)
                # One block at a time into the connection, each within its deadline: the
                # memory held stays a few blocks whatever the size of the source's pieces.
                with memoryview(chunk) as view, view.cast("B") as octets:
                    for start in range(0, len(octets), CHUNK):
                        session.arm("DATA block", seconds)
                        writer.write(octets[start : start + CHUNK])
                        await session.drain()
        session.arm("DATA block", seconds)
        writer.finalize()
        await session.drain()

    def _result(self, session: _Session, ledger: _Ledger) -> SendResult:
        if ledger.ends_session:
            session.abort()  # the server is closing, or the dialogue is out of step
        return dataclasses.replace(ledger.result(), tls=session.tls_info)


async def send_async(
    message: AsyncSendable,
    config: SMTPConfig,
    *,
    mail_from: str | None = None,
    recipients: Iterable[str] | None = None,
) -> SendResult:
    """Send one message over a new connection, and close it."""
    async with AsyncSMTPTransport(config) as transport:
        return await transport.send(message, mail_from=mail_from, recipients=recipients)
