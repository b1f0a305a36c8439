"""securemail: message-level email encryption for Python applications.

Compose a message, protect it (S/MIME today, PGP/MIME next), serialize it once, send it::

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
    wire_bytes = protected.as_bytes()

The recipes here cover the common path; :mod:`securemail.smime`, :mod:`securemail.wire`
and :mod:`securemail.payload` hold the building blocks.
"""

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
from .smime import decrypt, encrypt, read, sign, verify

__all__ = [
    "COMPATIBLE",
    "DEFAULT",
    "STRICT",
    "DecryptResult",
    "Identity",
    "Message",
    "MessageBuilder",
    "Policy",
    "ProtectedMessage",
    "ReadResult",
    "Recipient",
    "SecureMailError",
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
    "sign",
    "verify",
]

__version__ = "0.1.0"
