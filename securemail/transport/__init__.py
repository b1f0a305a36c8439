"""Sending protected messages: SMTP with enforced TLS, per-recipient results, streamed DATA.

:class:`SMTPTransport` (with :class:`SMTPConfig`) is the front door; :func:`send` sends one
message over a new connection. :class:`~securemail.transport.data.DataWriter` is the
low-level DATA stream writer.
"""

from .config import Deadlines, SMTPConfig, TLSMode
from .data import DataWriter
from .results import RecipientResult, RecipientStatus, SendResult, TLSInfo
from .smtp import Sendable, SMTPTransport, check_encrypted, send, tls_context

__all__ = [
    "DataWriter",
    "Deadlines",
    "RecipientResult",
    "RecipientStatus",
    "SMTPConfig",
    "SMTPTransport",
    "SendResult",
    "Sendable",
    "TLSInfo",
    "TLSMode",
    "check_encrypted",
    "send",
    "tls_context",
]
