"""OpenPGP (RFC 9580 / RFC 4880) and PGP/MIME (RFC 3156).

:mod:`.gpg` is the engine: it runs GnuPG (through python-gnupg) in a private, throwaway home
by default, selects keys by fingerprint or email address, encrypts, signs, decrypts and
verifies raw bytes, and decides every outcome from gpg's ``[GNUPG:]`` status lines alone, so
that no unauthenticated plaintext and no unverified text ever reaches the caller. The MIME
structures of RFC 3156 are built on top of it.
"""

from .gpg import GnuPG, KeyInfo, find_gpg
from .mime import KeySource, decrypt, encrypt, read, sign, verify

__all__ = [
    "GnuPG",
    "KeyInfo",
    "KeySource",
    "decrypt",
    "encrypt",
    "find_gpg",
    "read",
    "sign",
    "verify",
]
