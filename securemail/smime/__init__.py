"""S/MIME (RFC 8551): sign, encrypt, decrypt and verify messages.

The functions here are the S/MIME recipes. The building blocks underneath are public for
those who need control: :mod:`.enveloped` and :mod:`.signed` (CMS), :mod:`.validation`
(certificate paths), :mod:`.capabilities` (SMIMECapabilities), :mod:`.password` (RFC 3211
password recipients).
"""

from .capabilities import ANNOUNCED, MODERN, Capabilities
from .mime import choose_algorithms, decrypt, encrypt, read, sign, verify
from .password import PasswordRecipient
from .validation import KeyPurpose, ValidatedPath, validate_path

__all__ = [
    "ANNOUNCED",
    "MODERN",
    "Capabilities",
    "KeyPurpose",
    "PasswordRecipient",
    "ValidatedPath",
    "choose_algorithms",
    "decrypt",
    "encrypt",
    "read",
    "sign",
    "validate_path",
    "verify",
]
