"""Password-based key encryption for CMS (RFC 3211): PBKDF2 and the PWRI-KEK key wrap.

A :class:`PasswordRecipient` lets a message be opened with a shared password instead of a
certificate, e.g. for a recipient who has none. The CMS structure (PasswordRecipientInfo) is
built and read by :mod:`securemail.smime.enveloped`; this module holds the two primitives
under it: the key derivation (PBKDF2, RFC 8018) and RFC 3211's two-pass CBC key wrap.

The wrap stores three check bytes with the content key, so a wrong password is detected
before any content is decrypted, and reported as such
(:class:`~securemail.errors.WrongMessagePasswordError`). That distinguishes it from damaged
content, unlike every other decryption failure; the format makes it unavoidable, and it
tells an attacker nothing an offline guess at the password would not.
"""

from __future__ import annotations

import dataclasses
import hmac
import os
from typing import ClassVar

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from ..errors import DecryptionError, InputError

__all__ = [
    "DEFAULT_ITERATIONS",
    "PasswordRecipient",
    "derive_kek",
    "password_bytes",
    "unwrap_key",
    "wrap_key",
]

DEFAULT_ITERATIONS = 600_000
"""OWASP's current recommendation for PBKDF2-HMAC-SHA256 (Password Storage Cheat Sheet)."""
SALT_SIZE = 16
_BLOCK = 16  # AES: the only KEK cipher read or written


def password_bytes(password: str | bytes) -> bytes:
    """The password as PBKDF2 takes it: UTF-8 for text (RFC 8018 leaves the encoding to the
    application; UTF-8 is what OpenSSL passes on from a UTF-8 command line)."""
    data = password.encode("utf-8") if isinstance(password, str) else bytes(password)
    if not data:
        raise InputError("the message password must not be empty")
    return data


@dataclasses.dataclass(frozen=True)
class PasswordRecipient:
    """Whoever knows ``password`` can read the message (a CMS PasswordRecipientInfo).

    Accepted with certificate recipients by :func:`securemail.encrypt`; each recipient then
    opens the message their own way. The password is kept as bytes (UTF-8 for text) and is
    never shown by ``repr`` or in errors. ``iterations`` is the PBKDF2-HMAC-SHA256 work
    factor: the default follows OWASP; the reader's policy refuses counts outside its
    ``min_pbkdf2_iterations`` .. ``max_pbkdf2_iterations``.
    """

    password: bytes = dataclasses.field(repr=False)
    iterations: int = DEFAULT_ITERATIONS
    name: ClassVar[str] = "(password)"
    """How errors and results name a password recipient (never by its password)."""

    def __init__(self, password: str | bytes, *, iterations: int = DEFAULT_ITERATIONS) -> None:
        if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
            raise InputError("PasswordRecipient iterations must be a positive integer")
        object.__setattr__(self, "password", password_bytes(password))
        object.__setattr__(self, "iterations", iterations)


def derive_kek(
    password: bytes, salt: bytes, iterations: int, prf: hashes.HashAlgorithm, size: int
) -> bytes:
    """PBKDF2 (RFC 8018 5.2) with HMAC-``prf``: the key-encryption key."""
    kdf = PBKDF2HMAC(algorithm=prf, length=size, salt=salt, iterations=iterations)
    return kdf.derive(password)


def wrap_key(kek: bytes, iv: bytes, cek: bytes) -> bytes:
    """RFC 3211 2.3.1: length byte, check bytes (the complement of the key's first three
    bytes), the key and random padding to at least two whole blocks, encrypted twice in CBC,
    the second pass chained on from the first, so every output block depends on every key
    byte."""
    if not 3 <= len(cek) <= 255:
        raise ValueError("RFC 3211 wraps keys of 3 to 255 bytes")
    check = bytes(b ^ 0xFF for b in cek[:3])
    formatted = bytes([len(cek)]) + check + cek
    size = max(2 * _BLOCK, -(-len(formatted) // _BLOCK) * _BLOCK)
    formatted += os.urandom(size - len(formatted))
    encryptor = Cipher(algorithms.AES(kek), modes.CBC(iv)).encryptor()
    first = encryptor.update(formatted)
    return encryptor.update(first) + encryptor.finalize()


def unwrap_key(kek: bytes, iv: bytes, wrapped: bytes) -> bytes | None:
    """RFC 3211 2.3.2. ``None`` when the check bytes or the length do not fit: the password
    (or the encrypted key) is wrong. A wrapped key of impossible size is malformed:
    :class:`DecryptionError`."""
    if len(wrapped) < 2 * _BLOCK or len(wrapped) % _BLOCK or len(iv) != _BLOCK:
        raise DecryptionError()
    aes = algorithms.AES(kek)
    # The last block, decrypted with the one before it as IV, is the first pass's last
    # block: the IV the second pass started from.
    last = Cipher(aes, modes.CBC(wrapped[-2 * _BLOCK : -_BLOCK])).decryptor()
    first_pass_last = last.update(wrapped[-_BLOCK:]) + last.finalize()
    outer = Cipher(aes, modes.CBC(first_pass_last)).decryptor()
    first_pass = outer.update(wrapped[:-_BLOCK]) + outer.finalize() + first_pass_last
    inner = Cipher(aes, modes.CBC(iv)).decryptor()
    formatted = inner.update(first_pass) + inner.finalize()
    length = formatted[0]
    check = bytes(b ^ 0xFF for b in formatted[1:4])
    if not hmac.compare_digest(check, formatted[4:7]) or not 3 <= length <= len(formatted) - 4:
        return None
    return formatted[4 : 4 + length]
