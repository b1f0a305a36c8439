"""securemail: message-level email encryption for Python applications.

Compose a message, protect it (S/MIME; PGP/MIME in :mod:`securemail.pgp`), serialize it
once, send it::

    import securemail

    message = (
        securemail.MessageBuilder()
        .from_addr("alice@example.com")
        .to("bob@example.com")
        .subject("Quarterly report")
        .text("Attached.")
        .attach(Path("report.pdf"))
        .build()
    )
    alice = securemail.load_identity("alice.p12", password="...")
    bob = securemail.Recipient.load("bob.pem")
    protected = securemail.encrypt(message, [bob], signer=alice)
    result = securemail.send(protected, securemail.SMTPConfig(host="smtp.example.com"))

The recipes here cover the common path; :mod:`securemail.smime`, :mod:`securemail.pgp`,
:mod:`securemail.stream`, :mod:`securemail.transport`, :mod:`securemail.wire` and
:mod:`securemail.payload` hold the building blocks.
"""

from typing import TYPE_CHECKING, Any

from . import errors, policy
from .compose import Message, MessageBuilder
from .errors import SecureMailError
from .keys import (
    Identity,
    Recipient,
    load_certificate,
    load_certificates,
    load_identity,
    load_pkcs12,
    load_private_key,
)
from .policy import COMPATIBLE, DEFAULT, STRICT, Policy
from .results import DecryptResult, ProtectedMessage, ReadResult, SignatureStatus, VerifyResult
from .smime import PasswordRecipient, decrypt, encrypt, read, sign, verify

if TYPE_CHECKING:
    from .governance.gateway import send
    from .transport import SendResult, SMTPConfig, SMTPTransport

_TRANSPORT = frozenset({"SMTPConfig", "SMTPTransport", "SendResult"})


def __getattr__(name: str) -> Any:
    # The transport (and pydantic under it) loads on first use: protecting a message
    # does not pay for the SMTP client.
    if name in _TRANSPORT:
        from . import transport

        return getattr(transport, name)
    if name == "send":  # plain, or governed by rules (policy=...)
        from .governance.gateway import send

        return send
    raise AttributeError(f"module 'securemail' has no attribute {name!r}")


__all__ = [
    "COMPATIBLE",
    "DEFAULT",
    "STRICT",
    "DecryptResult",
    "Identity",
    "Message",
    "MessageBuilder",
    "PasswordRecipient",
    "Policy",
    "ProtectedMessage",
    "ReadResult",
    "Recipient",
    "SMTPConfig",
    "SMTPTransport",
    "SecureMailError",
    "SendResult",
    "SignatureStatus",
    "VerifyResult",
    "decrypt",
    "encrypt",
    "errors",
    "load_certificate",
    "load_certificates",
    "load_identity",
    "load_pkcs12",
    "load_private_key",
    "policy",
    "read",
    "send",
    "sign",
    "verify",
]

__version__ = "0.1.0"
