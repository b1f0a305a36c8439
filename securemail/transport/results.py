"""What happened to each recipient of a sent message.

SMTP answers per recipient (RCPT) and then once for the message (the reply to the final dot),
and ``smtplib.sendmail`` reports refused recipients by *returning* them, where a caller that
only checks for exceptions never looks. A :class:`SendResult` instead gives every recipient
an explicit status, and :attr:`SendResult.ok` is true only when all were delivered.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import re
import ssl

from ..errors import DeliveryError

__all__ = ["RecipientResult", "RecipientStatus", "SendResult", "TLSInfo"]

_QUEUE_ID = re.compile(r"queued as ([A-Za-z0-9._-]+)|\bid=([A-Za-z0-9._-]+)", re.IGNORECASE)


class RecipientStatus(enum.StrEnum):
    DELIVERED = "delivered"
    """The server took responsibility for the message (2xx to the final dot)."""
    DEFERRED = "deferred"
    """Not delivered for now (4xx, 421, a timeout or a lost connection): try again later.
    After a connection lost between the final dot and the server's answer the message may
    or may not have been accepted; retrying then risks a duplicate, never a loss."""
    FAILED = "failed"
    """Refused for good (5xx): retrying will not help; tell the sender."""


@dataclasses.dataclass(frozen=True)
class RecipientResult:
    address: str
    status: RecipientStatus
    code: int | None
    """The SMTP reply code that decided the status (None when no reply came)."""
    reply: str
    """The server's reply text, or why there was none ("connection lost ...")."""

    @property
    def delivered(self) -> bool:
        return self.status is RecipientStatus.DELIVERED


@dataclasses.dataclass(frozen=True)
class TLSInfo:
    """The TLS session a message went over: what an auditor asks after ("was it encrypted
    in transit, and to whom?")."""

    version: str
    """As :meth:`ssl.SSLSocket.version` names it: ``"TLSv1.3"``."""
    cipher: str
    """The cipher suite, in OpenSSL's naming: ``"TLS_AES_256_GCM_SHA384"``."""
    certificate_sha256: str | None
    """SHA-256 of the server's certificate (DER), hex; None if it sent none."""
    verified: bool
    """The certificate chain and host name were checked (``required-verify``,
    ``implicit``); False when TLS was only opportunistic or unverified."""

    @classmethod
    def of(cls, connection: ssl.SSLSocket | ssl.SSLObject, *, verified: bool) -> TLSInfo:
        certificate = connection.getpeercert(binary_form=True)
        return cls(
            version=connection.version() or "?",
            cipher=(connection.cipher() or ("?",))[0],
            certificate_sha256=hashlib.sha256(certificate).hexdigest() if certificate else None,
            verified=verified,
        )


@dataclasses.dataclass(frozen=True)
class SendResult:
    """The outcome of one mail transaction: a status for every envelope recipient.

    ``code`` and ``reply`` are the answer that ended the transaction: to the final dot when
    the message was transmitted, otherwise to the command that stopped it (MAIL, the last
    RCPT, DATA), or ``None`` and an explanation when the connection was lost.
    """

    host: str
    mail_from: str
    recipients: tuple[RecipientResult, ...]
    code: int | None
    reply: str
    tls: TLSInfo | None = None
    """The TLS session the transaction ran over; None if it ran in plaintext."""

    def _addresses(self, status: RecipientStatus) -> tuple[str, ...]:
        return tuple(r.address for r in self.recipients if r.status is status)

    @property
    def delivered(self) -> tuple[str, ...]:
        return self._addresses(RecipientStatus.DELIVERED)

    @property
    def deferred(self) -> tuple[str, ...]:
        return self._addresses(RecipientStatus.DEFERRED)

    @property
    def failed(self) -> tuple[str, ...]:
        return self._addresses(RecipientStatus.FAILED)

    @property
    def ok(self) -> bool:
        """Every recipient was delivered."""
        return all(r.delivered for r in self.recipients)

    def recipient(self, address: str) -> RecipientResult:
        """The result for ``address`` as it was given to the envelope."""
        for result in self.recipients:
            if result.address == address:
                return result
        raise KeyError(address)

    @property
    def queue_id(self) -> str | None:
        """The server's identifier for the accepted message, when its final reply names one
        the common ways (Postfix ``queued as X``, Exim ``id=X``); a best-effort parse."""
        if self.code is None or not 200 <= self.code < 300:
            return None
        match = _QUEUE_ID.search(self.reply)
        return (match.group(1) or match.group(2)) if match else None

    def raise_for_status(self) -> SendResult:
        """Return ``self`` if every recipient was delivered, else raise
        :class:`~securemail.errors.DeliveryError` (``temporary`` when none failed for good)."""
        if self.ok:
            return self
        parts = [
            f"{len(addresses)} {label}"
            for label, addresses in (("deferred", self.deferred), ("failed", self.failed))
            if addresses
        ]
        raise DeliveryError(
            self.host,
            self,
            "not delivered to every recipient: " + ", ".join(parts),
            temporary=not self.failed,
        )
