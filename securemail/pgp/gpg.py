"""The OpenPGP engine: GnuPG, run through python-gnupg, typed and fail-closed.

This is the only module that imports :mod:`gnupg`. It encrypts, signs, decrypts and verifies
raw bytes (the MIME entity is prepared by the caller, :mod:`securemail.pgp.mime`), selects
keys, and turns what gpg reports into frozen value objects and typed errors.

Why it is built the way it is:

* **Status lines only.** gpg's human-readable messages change between versions and
  locales, and in 2018 a crafted file name printed among them forged ``[GNUPG:]`` lines
  for programs reading status and log from one stream (CVE-2018-12020, "SigSpoof"). Here
  gpg's log goes to a file (``--log-file``), so its stderr carries status lines only, and
  every decision is made from them and the exit code. python-gnupg's result classes
  (``ok``, ``valid``, ``status``) are never consulted: they call a decryption "ok" on
  ``DECRYPTION_OKAY`` alone, and a malformed line raises inside their reader thread.
* **No plaintext before the verdict.** gpg writes decrypted bytes as it goes and reports a
  failed or missing integrity check only afterwards; python-gnupg returns those bytes in
  ``.data`` whatever happened. Output is received chunk by chunk (python-gnupg's
  ``on_data``) into a private buffer that is released only when the status lines prove
  decryption *and* integrity (``DECRYPTION_OKAY`` + ``GOODMDC``), and wiped otherwise.
* **Bounded output.** A few hundred bytes of compressed OpenPGP can expand to hundreds of
  megabytes. gpg's ``--max-output`` is set a margin above the caller's cap and the bytes
  are counted here too; past the cap gpg is stopped and :class:`SizeLimitExceeded` raised.
  (gpg alone is not enough: when it hits ``--max-output`` it still reports
  ``DECRYPTION_OKAY`` and ``GOODMDC`` and signals the truncation only by its exit code.)
* **Private homes.** Each :class:`GnuPG` works in a fresh temporary home (removed, with its
  agent, on :meth:`GnuPG.close`) unless the caller names one. The user's ``~/.gnupg`` is
  never touched: ``--homedir`` and ``GNUPGHOME`` are always set, ``--no-options`` keeps any
  ``gpg.conf`` from weakening the options given here, and no key server is ever contacted.
* **Keys chosen here, not by gpg.** gpg's ``--recipient alice@example.org`` is a substring
  match and its refusal (``INV_RECP 0``) does not say why; keys are listed and checked here,
  by full fingerprint or exact address, and gpg is then given fingerprints only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import enum
import io
import itertools
import os
import queue
import re
import shutil
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import gnupg

from ..errors import (
    AlreadyFinalized,
    DecryptionError,
    EncryptionError,
    InputError,
    IntegrityError,
    KeyLoadError,
    NoSecretKeyError,
    NotSignedError,
    RecipientError,
    SecureMailError,
    SignatureError,
    SignatureInvalidError,
    SigningKeyError,
    SizeLimitExceeded,
    ToolError,
    ToolNotFoundError,
    UnsupportedAlgorithmError,
    WrongPasswordError,
)
from ..keys import read_source
from ..policy import DigestAlgorithm
from ..stream.openpgp_packets import (
    TAG_PKESK,
    TAG_SEIPD,
    TAG_SKESK,
    MalformedPacket,
    packet,
    split_packets,
)

__all__ = [
    "DEFAULT_MAX_OUTPUT",
    "DEFAULT_TIMEOUT",
    "INSTALL_HINT",
    "MIN_VERSION",
    "Decrypted",
    "DetachedSignature",
    "Encrypted",
    "GnuPG",
    "KeyInfo",
    "Passphrase",
    "SignatureMade",
    "SignatureStream",
    "SubkeyInfo",
    "UserID",
    "Verdict",
    "Verification",
    "VerificationStream",
    "check_passphrase",
    "find_gpg",
]

Passphrase = str | bytes | None
Source = bytes | str | Path

INSTALL_HINT = "install GnuPG: apt-get install gnupg / brew install gnupg"
MIN_VERSION = (2, 2, 8)
"""2.2.8 fixed CVE-2018-12020 and made gpg refuse to decrypt without integrity protection."""
DEFAULT_TIMEOUT = 120.0
"""Seconds one gpg process may run before it is killed."""
DEFAULT_MAX_OUTPUT = 256 * 1024 * 1024
"""Largest plaintext released, in bytes (the default ``Policy.max_message_size``)."""
_OUTPUT_MARGIN = 1024 * 1024
"""gpg's ``--max-output`` sits this far above the cap, so that gpg writes past the cap (and
the count here notices) before it truncates silently; gpg writes in chunks well below it."""

# RFC 9580 9.1, 9.3, 9.5, 9.6 (and the LibrePGP AEAD numbers gpg 2.2 knows).
_PUBKEY_ALGORITHMS = {
    1: "rsa",
    2: "rsa",
    3: "rsa",
    16: "elgamal",
    17: "dsa",
    18: "ecdh",
    19: "ecdsa",
    20: "elgamal",
    22: "eddsa",
    25: "x25519",
    26: "x448",
    27: "ed25519",
    28: "ed448",
}
_CIPHERS = {
    1: "idea",
    2: "3des",
    3: "cast5",
    4: "blowfish",
    7: "aes128",
    8: "aes192",
    9: "aes256",
    10: "twofish",
    11: "camellia128",
    12: "camellia192",
    13: "camellia256",
}
_AEAD = {1: "eax", 2: "ocb", 3: "gcm"}
_HASHES = {
    1: "md5",
    2: "sha1",
    3: "ripemd160",
    8: "sha256",
    9: "sha384",
    10: "sha512",
    11: "sha224",
    12: "sha3-256",
    14: "sha3-512",
}
_WEAK_HASHES = frozenset({"md5", "sha1", "ripemd160"})
_DIGEST_OPTION = {
    DigestAlgorithm.SHA256: "SHA256",
    DigestAlgorithm.SHA384: "SHA384",
    DigestAlgorithm.SHA512: "SHA512",
}
# INV_RECP / INV_SGNR reason codes (gnupg doc/DETAILS). gpg 2.2 sends 0 for expired, revoked
# and sign-only keys alike, and 9 for an expired or revoked signing key: the checks made
# before gpg runs are what name the actual reason.
_INVALID_KEY_REASONS = {
    0: "gpg refused the key (unusable public key)",
    1: "no key with this fingerprint in the GnuPG home",
    2: "the specification is ambiguous",
    3: "the key cannot be used for this purpose",
    4: "the key is revoked",
    5: "the key has expired",
    9: "the secret key is not available or not usable",
    10: "the key is not trusted",
    13: "the key is disabled",
}
_IMPORT_PROBLEMS = {
    0: "gpg refused it (no specific reason)",
    1: "invalid certificate",
    2: "issuer certificate missing",
    3: "certificate chain too long",
    4: "error storing the certificate",
}
_GPG_ERR_BAD_PASSPHRASE = 11
_SIGNATURE_PROBLEMS = frozenset(
    {"BADSIG", "ERRSIG", "EXPSIG", "EXPKEYSIG", "REVKEYSIG", "NO_PUBKEY"}
)
_SIGNATURE_RESULTS = frozenset({"GOODSIG", "BADSIG", "EXPSIG", "EXPKEYSIG", "REVKEYSIG", "ERRSIG"})

_AGENT_CONF = """\
# Written by securemail for a private, throwaway GnuPG home.
# Passphrases come from the caller (loopback), are never cached, and no smartcard is used.
allow-loopback-pinentry
default-cache-ttl 0
max-cache-ttl 0
no-allow-external-cache
disable-scdaemon
"""
_GPG_CONF = """\
# Written by securemail for a private, throwaway GnuPG home. securemail's own calls pass
# --no-options and these settings on the command line; this file only makes gpg run by
# hand in this home behave the same.
batch
no-tty
pinentry-mode loopback
trust-model always
no-auto-key-retrieve
no-auto-key-locate
disable-dirmngr
no-random-seed-file
no-emit-version
no-comments
"""


# --- value objects ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SubkeyInfo:
    """One key of an OpenPGP certificate (the primary key or a subkey), as listed when it
    was read. ``expired`` is judged at that moment; ``secret`` says whether its secret part
    is in the home (not a stub, possibly on a card)."""

    fingerprint: str
    algorithm: str
    """``rsa3072``, ``ed25519``, ``cv25519``, ``nistp256``, ``dsa2048``, ..."""
    created: dt.datetime
    expires: dt.datetime | None
    can_encrypt: bool
    can_sign: bool
    can_certify: bool = False
    revoked: bool = False
    expired: bool = False
    invalid: bool = False
    secret: bool = False

    @property
    def key_id(self) -> str:
        """The long key ID: the low 64 bits of a v4 fingerprint, the high ones of v5/v6."""
        return self.fingerprint[-16:] if len(self.fingerprint) == 40 else self.fingerprint[:16]

    @property
    def usable(self) -> bool:
        return not (self.revoked or self.expired or self.invalid)

    def problem(self) -> str | None:
        """Why this key cannot be used, or None."""
        if self.revoked:
            return f"{self.key_id} is revoked"
        if self.expired:
            when = f" on {self.expires:%Y-%m-%d}" if self.expires else ""
            return f"{self.key_id} expired{when}"
        if self.invalid:
            return f"{self.key_id} is invalid (no valid binding signature)"
        return None


@dataclasses.dataclass(frozen=True)
class UserID:
    """A user ID and the addr-spec in it (``None`` when it holds no email address)."""

    text: str
    email: str | None
    revoked: bool = False


@dataclasses.dataclass(frozen=True, repr=False)
class KeyInfo:
    """An OpenPGP certificate as the GnuPG home holds it: primary key, subkeys, user IDs."""

    primary: SubkeyInfo
    subkeys: tuple[SubkeyInfo, ...] = ()
    user_ids: tuple[UserID, ...] = ()
    disabled: bool = False

    @property
    def fingerprint(self) -> str:
        return self.primary.fingerprint

    @property
    def key_id(self) -> str:
        return self.primary.key_id

    @property
    def algorithm(self) -> str:
        return self.primary.algorithm

    @property
    def created(self) -> dt.datetime:
        return self.primary.created

    @property
    def expires(self) -> dt.datetime | None:
        return self.primary.expires

    @property
    def revoked(self) -> bool:
        return self.primary.revoked

    @property
    def expired(self) -> bool:
        return self.primary.expired

    @property
    def emails(self) -> tuple[str, ...]:
        """The addresses of the user IDs that are not revoked, in order, without repeats."""
        seen: dict[str, None] = {}
        for uid in self.user_ids:
            if uid.email and not uid.revoked:
                seen.setdefault(uid.email, None)
        return tuple(seen)

    @property
    def name(self) -> str:
        """The first email address, or the fingerprint (for messages)."""
        return self.emails[0] if self.emails else self.fingerprint

    @property
    def has_secret(self) -> bool:
        return any(k.secret for k in self.keys)

    @property
    def keys(self) -> tuple[SubkeyInfo, ...]:
        """The primary key followed by the subkeys."""
        return (self.primary, *self.subkeys)

    def owns(self, fingerprint: str) -> bool:
        """Whether ``fingerprint`` is this certificate's primary key or one of its subkeys."""
        wanted = fingerprint.upper()
        return any(k.fingerprint == wanted for k in self.keys)

    def has_email(self, address: str) -> bool:
        """A non-revoked user ID with this addr-spec, compared without case (as From is
        compared with a signer's addresses, and as S/MIME compares certificates)."""
        wanted = address.strip().casefold()
        return any(
            uid.email is not None and not uid.revoked and uid.email.casefold() == wanted
            for uid in self.user_ids
        )

    def encryption_keys(self) -> tuple[SubkeyInfo, ...]:
        return tuple(k for k in self.keys if k.can_encrypt and k.usable)

    def signing_keys(self) -> tuple[SubkeyInfo, ...]:
        """Usable signing-capable keys whose secret part is in the home."""
        return tuple(k for k in self.keys if k.can_sign and k.usable and k.secret)

    def problem_for_encryption(self) -> str | None:
        """Why nothing can be encrypted to this key, or None."""
        problem = self._certificate_problem()
        if problem or self.encryption_keys():
            return problem
        capable = [k for k in self.keys if k.can_encrypt]
        if not capable:
            return f"the key {self.fingerprint} has no encryption-capable (sub)key (sign-only)"
        details = "; ".join(p for p in (k.problem() for k in capable) if p)
        return f"the key {self.fingerprint} has no valid encryption (sub)key: {details}"

    def problem_for_signing(self) -> str | None:
        """Why this key cannot sign here, or None."""
        problem = self._certificate_problem()
        if problem or self.signing_keys():
            return problem
        capable = [k for k in self.keys if k.can_sign]
        if not capable:
            return f"the key {self.fingerprint} has no signing-capable (sub)key"
        usable = [k for k in capable if k.usable]
        if not usable:
            details = "; ".join(p for p in (k.problem() for k in capable) if p)
            return f"the key {self.fingerprint} has no valid signing (sub)key: {details}"
        return f"the secret part of the key {self.fingerprint} is not in the GnuPG home"

    def __repr__(self) -> str:
        flags = "".join(
            f", {flag}"
            for flag, on in (
                ("secret", self.has_secret),
                ("expired", self.expired),
                ("revoked", self.revoked),
            )
            if on
        )
        return f"KeyInfo({self.fingerprint}, {self.algorithm}, {list(self.emails)}{flags})"

    def _certificate_problem(self) -> str | None:
        if self.revoked:
            return f"the key {self.fingerprint} is revoked"
        if self.expired:
            when = f" on {self.expires:%Y-%m-%d}" if self.expires else ""
            return f"the key {self.fingerprint} expired{when}"
        if self.primary.invalid:
            return f"the key {self.fingerprint} is invalid (no valid self-signature)"
        if self.disabled:
            return f"the key {self.fingerprint} is disabled in the GnuPG home"
        return None


class Verdict(enum.StrEnum):
    """What gpg's status lines say about a signed message (the MIME layer adds the check of
    the signer against From and maps this to :class:`~securemail.results.SignatureStatus`)."""

    GOOD = "good"
    """Exactly one signature; it verifies with a key that is neither expired nor revoked."""
    FAILED = "failed"
    """Bad signature, expired or revoked signing key, expired signature, several signatures,
    or gpg reported an error."""
    NOT_CHECKED = "not-checked"
    """No signature, the signer's key is unknown, or the algorithm is not accepted."""


@dataclasses.dataclass(frozen=True)
class Verification:
    """The outcome of checking OpenPGP signatures.

    ``fingerprint`` is the signer's *primary* key fingerprint, ``signing_key`` the (sub)key
    that made the signature; ``emails`` are the signer's user ID addresses (so the caller can
    compare them with From). For inline and clearsigned input ``data`` holds exactly the
    bytes gpg verified (never the text around a clearsigned block); for a detached signature
    it is None, the caller has the data.
    """

    verdict: Verdict
    reason: str
    error: SecureMailError | None = None
    fingerprint: str | None = None
    signing_key: str | None = None
    emails: tuple[str, ...] = ()
    signer: KeyInfo | None = None
    created: dt.datetime | None = None
    hash_algorithm: str | None = None
    """``sha256``, ``sha512``, ... as found in the signature."""
    signatures: int = 0
    """How many signatures gpg saw (only exactly one can be GOOD)."""
    data: bytes | None = None

    @property
    def good(self) -> bool:
        return self.verdict is Verdict.GOOD

    @property
    def micalg(self) -> str | None:
        """RFC 3156 ``micalg`` value for the signature's hash, e.g. ``pgp-sha256``."""
        return f"pgp-{self.hash_algorithm}" if self.hash_algorithm else None

    def raise_for_verdict(self) -> Verification:
        """Return ``self`` if GOOD, else raise the typed error that explains why."""
        if self.good:
            return self
        raise self.error if self.error is not None else NotSignedError(self.reason)


@dataclasses.dataclass(frozen=True)
class SignatureMade:
    """A signature gpg has just made (from its ``SIG_CREATED`` status line)."""

    signer: KeyInfo
    signing_key: str
    """Fingerprint of the (sub)key that signed."""
    hash_algorithm: str
    created: dt.datetime

    @property
    def micalg(self) -> str:
        """RFC 3156 ``micalg`` parameter: the hash actually used, e.g. ``pgp-sha256``."""
        return f"pgp-{self.hash_algorithm}"


@dataclasses.dataclass(frozen=True)
class DetachedSignature:
    """An armored detached signature (``application/pgp-signature``) and how it was made."""

    data: bytes
    made: SignatureMade

    @property
    def hash_algorithm(self) -> str:
        return self.made.hash_algorithm

    @property
    def micalg(self) -> str:
        return self.made.micalg


@dataclasses.dataclass(frozen=True)
class Encrypted:
    """An OpenPGP message (armored unless asked otherwise) and what went into it."""

    data: bytes
    recipients: tuple[KeyInfo, ...]
    cipher: str
    signature: SignatureMade | None = None


@dataclasses.dataclass(frozen=True, repr=False)
class Decrypted:
    """A decrypted OpenPGP message whose integrity check passed.

    ``recipients`` are the key IDs the message was encrypted to (``0000000000000000`` for a
    hidden recipient); ``key``/``primary`` the fingerprints of the subkey that opened it and
    its certificate (None for a password-encrypted message). ``integrity`` is ``"mdc"``
    (SEIPD v1, SHA-1 MDC) or ``"aead"`` (OCB/EAX/GCM). ``signature`` is None when the
    message carried no signature. The repr never shows the plaintext.
    """

    data: bytes
    recipients: tuple[str, ...]
    key: str | None
    primary: str | None
    cipher: str
    integrity: str
    signature: Verification | None = None

    def __repr__(self) -> str:
        return (
            f"Decrypted(<{len(self.data)} bytes>, cipher={self.cipher!r}, "
            f"integrity={self.integrity!r}, key={self.key!r}, signature={self.signature!r})"
        )


# --- status lines and output --------------------------------------------------------------------


class _Recorder(gnupg.StatusHandler):  # type: ignore[misc]  # python-gnupg has no type hints
    """Receives every ``[GNUPG:]`` line from python-gnupg's stderr reader, and nothing else.

    Unlike python-gnupg's own result classes it interprets nothing, so a malformed line
    cannot raise inside the reader thread (which would lose the lines after it)."""

    def __init__(self, gpg: Any) -> None:
        super().__init__(gpg)
        self.lines: list[tuple[str, str]] = []
        self.returncode: int | None = None
        self.data = b""
        self.stderr = ""

    def handle_status(self, key: str, value: str) -> None:
        self.lines.append((key, value))


class _Sink:
    """gpg's stdout, received chunk by chunk through python-gnupg's ``on_data`` and kept
    here, never in python-gnupg. Past ``limit`` bytes it wipes what it holds, drops the
    rest and calls ``on_overflow`` (which stops gpg)."""

    def __init__(self, limit: int | None, on_overflow: Callable[[], None]) -> None:
        self._buffer = bytearray()
        self._limit = limit
        self._on_overflow = on_overflow
        self.overflow = False

    def __call__(self, chunk: bytes) -> bool:
        if self.overflow or not chunk:
            return False
        if self._limit is not None and len(self._buffer) + len(chunk) > self._limit:
            self.overflow = True
            self.wipe()
            self._on_overflow()
            return False
        self._buffer += chunk
        return False  # python-gnupg: do not keep a copy of the chunk

    def take(self) -> bytes:
        data = bytes(self._buffer)
        self.wipe()
        return data

    def wipe(self) -> None:
        self._buffer[:] = bytes(len(self._buffer))
        self._buffer.clear()


class _Watchdog:
    """Kills the gpg process after ``timeout`` seconds (never, if None), or at once on
    :meth:`kill`."""

    def __init__(self, timeout: float | None) -> None:
        self._timeout = timeout
        self._timer: threading.Timer | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self.fired = False

    def start(self, process: subprocess.Popen[bytes]) -> None:
        self._process = process
        if self._timeout is not None:
            self._timer = threading.Timer(self._timeout, self._expire)
            self._timer.daemon = True
            self._timer.start()

    def _expire(self) -> None:
        self.fired = True
        self.kill()

    def kill(self) -> None:
        process = self._process
        if process is not None and process.poll() is None:
            with contextlib.suppress(OSError):  # already gone
                process.kill()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()


@dataclasses.dataclass(frozen=True)
class _Run:
    """One gpg invocation: exit code, status lines, and what went wrong around them."""

    returncode: int | None
    status: tuple[tuple[str, str], ...]
    log: str
    timed_out: bool = False
    overflow: bool = False
    input_error: bool = False

    def has(self, *keywords: str) -> bool:
        return any(key in keywords for key, _ in self.status)

    def all(self, keyword: str) -> list[list[str]]:
        return [value.split() for key, value in self.status if key == keyword]

    def first(self, keyword: str) -> list[str] | None:
        found = self.all(keyword)
        return found[0] if found else None

    def count(self, keyword: str) -> int:
        return sum(1 for key, _ in self.status if key == keyword)

    def failures(self) -> list[str]:
        """``ERROR``/``FAILURE``/``UNEXPECTED``/``NODATA``/``BADARMOR`` lines, except the
        ``FAILURE gpg-exit`` summary gpg adds whenever it exits non-zero."""
        found = []
        for key, value in self.status:
            if key in ("ERROR", "FAILURE", "UNEXPECTED", "NODATA", "BADARMOR") and not (
                key == "FAILURE" and value.startswith("gpg-exit")
            ):
                found.append(f"{key} {value}".strip())
        return found

    def diagnostic(self) -> str:
        """A short account for error messages: failure status lines, else gpg's last log
        line (gpg's log names keys and files, never message content)."""
        failures = self.failures()
        if failures:
            return "; ".join(failures[:3])
        lines = [line.strip() for line in self.log.splitlines() if line.strip()]
        if lines:
            return lines[-1][-300:]
        return f"exit status {self.returncode}"


def _error_code(text: str) -> int | None:
    """The gpg-error code (low 16 bits) of ``67108875`` or ``11_BAD_PASSPHRASE``."""
    head = text.split("_", 1)[0]
    return int(head) & 0xFFFF if head.isdigit() else None


def _passphrase_rejected(run: _Run) -> bool:
    if run.has("BAD_PASSPHRASE"):
        return True
    for keyword in ("ERROR", "FAILURE"):
        for args in run.all(keyword):
            if len(args) >= 2 and _error_code(args[-1]) == _GPG_ERR_BAD_PASSPHRASE:
                return True
    return False


def _timestamp(text: str) -> dt.datetime | None:
    """gpg prints times as seconds since the epoch or, in some modes, ISO 8601 basic."""
    if not text or text == "0":
        return None
    try:
        if "T" in text:
            return dt.datetime.strptime(text, "%Y%m%dT%H%M%S").replace(tzinfo=dt.UTC)
        return dt.datetime.fromtimestamp(int(text), dt.UTC)
    except (ValueError, OverflowError, OSError):
        return None


def _number(text: str | None) -> int | None:
    return int(text) if text is not None and text.isdigit() else None


# --- passphrases, selectors and addresses --------------------------------------------------------


def check_passphrase(passphrase: Passphrase) -> None:
    """Refuse now a passphrase gpg would misread (see :func:`_passphrase`): for callers that
    ask gpg for other things (keys, recipients) before it needs the passphrase."""
    _passphrase(passphrase)


def _passphrase(passphrase: Passphrase) -> str | None:
    """Check a passphrase before any gpg process starts, and encode it for python-gnupg.

    python-gnupg sends the passphrase on gpg's stdin as the first line, followed by the
    data; a line break in it would end the passphrase early and make the rest part of the
    input (CVE-2019-6690). python-gnupg encodes with its ``encoding`` (latin-1 here), so the
    UTF-8 bytes are handed over as the latin-1 string that encodes back to exactly them."""
    if passphrase is None:
        return None
    raw = passphrase.encode("utf-8") if isinstance(passphrase, str) else bytes(passphrase)
    if any(c in raw for c in b"\r\n\0"):
        raise InputError(
            "the passphrase contains CR, LF or NUL, which gpg would read as the end of the "
            "passphrase (CVE-2019-6690); refused"
        )
    return raw.decode("latin-1") if raw else None


_FINGERPRINT = re.compile(r"[0-9A-F]{40}|[0-9A-F]{64}")
_KEY_ID = re.compile(r"[0-9A-F]{8}|[0-9A-F]{16}")
_ADDRESS = re.compile(r"[^<>\s@]+@[^<>\s@]+")
_ANGLE_ADDRESS = re.compile(r"<([^<>\s@]+@[^<>\s@]+)>\s*$")


def _parse_selector(selector: str) -> tuple[str, str]:
    """``("fingerprint", HEX)`` or ``("email", address)``. Short and long key IDs are
    refused: 32-bit IDs collide in practice, and even 64-bit ones can be made to."""
    text = selector.strip()
    compact = "".join(text.split()).upper().removeprefix("0X")
    if _FINGERPRINT.fullmatch(compact):
        return "fingerprint", compact
    if _KEY_ID.fullmatch(compact):
        raise InputError(
            f"{selector!r} is a key ID; select keys by their full fingerprint "
            "(40 or 64 hex digits) or an email address"
        )
    address = text[1:-1] if text.startswith("<") and text.endswith(">") else text
    if _ADDRESS.fullmatch(address):
        return "email", address
    raise InputError(f"{selector!r} is neither a full key fingerprint nor an email address")


def _uid_email(text: str) -> str | None:
    """The addr-spec of ``Name (comment) <addr>`` or of a bare ``addr`` user ID."""
    match = _ANGLE_ADDRESS.search(text)
    if match:
        return match.group(1)
    stripped = text.strip()
    return stripped if _ADDRESS.fullmatch(stripped) else None


# --- key listings -------------------------------------------------------------------------------


_COLON_ESCAPE = re.compile(rb"\\x([0-9a-fA-F]{2})")


def _unescape(field: bytes) -> str:
    """gpg's colon listings escape ``:`` and control characters as ``\\xHH``; the rest is
    UTF-8."""
    raw = _COLON_ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), field)
    return raw.decode("utf-8", "replace")


def _field(fields: Sequence[str], index: int) -> str:
    return fields[index] if index < len(fields) else ""


def _algorithm_name(algorithm: int, length: str, curve: str) -> str:
    if curve:
        return curve.lower()
    family = _PUBKEY_ALGORITHMS.get(algorithm, f"algorithm{algorithm}")
    return f"{family}{length}" if family in ("rsa", "dsa", "elgamal") else family


@dataclasses.dataclass
class _Listed:
    record: list[str]
    fingerprint: str = ""


def _parse_listing(output: bytes) -> list[tuple[_Listed, list[_Listed], list[tuple[str, str]]]]:
    """Group ``--with-colons`` records: (primary, subkeys, [(validity, user ID)])."""
    groups: list[tuple[_Listed, list[_Listed], list[tuple[str, str]]]] = []
    last: _Listed | None = None
    for line in output.splitlines():
        parts = line.rstrip(b"\r").split(b":")
        kind = parts[0]
        if kind in (b"pub", b"sec"):
            last = _Listed([p.decode("latin-1") for p in parts])
            groups.append((last, [], []))
        elif kind in (b"sub", b"ssb") and groups:
            last = _Listed([p.decode("latin-1") for p in parts])
            groups[-1][1].append(last)
        elif kind == b"fpr" and last is not None and not last.fingerprint and len(parts) > 9:
            last.fingerprint = parts[9].decode("latin-1").upper()
        elif kind == b"uid" and groups and len(parts) > 9:
            groups[-1][2].append((parts[1].decode("latin-1"), _unescape(parts[9])))
            last = None
        elif kind not in (b"fpr", b"grp"):
            last = None
    return groups


def _subkey(listed: _Listed, secrets: set[str], now: dt.datetime) -> SubkeyInfo:
    f = listed.record
    validity = _field(f, 1)
    capabilities = _field(f, 11)
    expires = _timestamp(_field(f, 6))
    return SubkeyInfo(
        fingerprint=listed.fingerprint,
        algorithm=_algorithm_name(_number(_field(f, 3)) or 0, _field(f, 2), _field(f, 16)),
        created=_timestamp(_field(f, 5)) or dt.datetime.fromtimestamp(0, dt.UTC),
        expires=expires,
        can_encrypt="e" in capabilities,
        can_sign="s" in capabilities,
        can_certify="c" in capabilities,
        revoked=validity == "r",
        expired=validity == "e" or (expires is not None and expires <= now),
        invalid=validity == "i",
        secret=listed.fingerprint in secrets,
    )


def _build_keys(public: bytes, secret: bytes) -> tuple[KeyInfo, ...]:
    now = dt.datetime.now(dt.UTC)
    secrets: set[str] = set()
    for primary, subs, _ in _parse_listing(secret):
        for listed in (primary, *subs):
            # Field 15: "+" secret present, "#" stub (offline), a serial number: on a card.
            if listed.fingerprint and _field(listed.record, 14) != "#":
                secrets.add(listed.fingerprint)
    keys = []
    for primary, subs, uids in _parse_listing(public):
        if not primary.fingerprint:
            continue
        # A revoked key shows all its user IDs as revoked; they still name it (so that
        # selecting it by address says "revoked", not "unknown").
        key_revoked = _field(primary.record, 1) == "r"
        keys.append(
            KeyInfo(
                primary=_subkey(primary, secrets, now),
                subkeys=tuple(_subkey(s, secrets, now) for s in subs if s.fingerprint),
                user_ids=tuple(
                    UserID(
                        text=text,
                        email=_uid_email(text),
                        revoked=validity == "r" and not key_revoked,
                    )
                    for validity, text in uids
                ),
                disabled="D" in _field(primary.record, 11),
            )
        )
    return tuple(keys)


# --- finding gpg --------------------------------------------------------------------------------


_SOCKET_PATH_ROOM = 60
"""gpg-agent's socket lives in the home, and a Unix socket path has room for 107 bytes."""


def _short_tempdir() -> str | None:
    """Where private homes go: the usual temporary directory, unless its path is too long
    for the agent's socket inside a home (then /tmp, which every Unix has)."""
    return None if len(tempfile.gettempdir()) <= _SOCKET_PATH_ROOM else "/tmp"  # noqa: S108


def find_gpg(gpg: str | os.PathLike[str] | None = None) -> str:
    """The gpg executable: ``gpg`` as given (a path, or a name looked up on PATH), else
    ``gpg`` or ``gpg2`` on PATH. Raises :class:`ToolNotFoundError` with an install hint."""
    if gpg is not None:
        candidate = os.fspath(gpg)
        if os.sep in candidate or (os.altsep and os.altsep in candidate):
            if Path(candidate).is_file() and os.access(candidate, os.X_OK):
                return candidate
            raise ToolNotFoundError("gpg", f"{candidate} is not an executable file; {INSTALL_HINT}")
        found = shutil.which(candidate)
        if found is None:
            raise ToolNotFoundError("gpg", f"{candidate} is not on PATH; {INSTALL_HINT}")
        return found
    for name in ("gpg", "gpg2"):
        found = shutil.which(name)
        if found is not None:
            return found
    raise ToolNotFoundError("gpg", INSTALL_HINT)


def _find_gpgconf(gpg: str) -> str | None:
    sibling = Path(gpg).with_name("gpgconf")
    if sibling.is_file() and os.access(sibling, os.X_OK):
        return str(sibling)
    return shutil.which("gpgconf")


def _environment(home: Path) -> dict[str, str]:
    """A minimal environment: nothing of the user's GnuPG setup (``GNUPGHOME``,
    ``GPG_AGENT_INFO``, ``GPG_TTY``, ``DISPLAY`` for pinentry), C locale for the log."""
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "TMPDIR", "SYSTEMROOT")}
    env.update(GNUPGHOME=str(home), LC_ALL="C", LANGUAGE="C")
    return env


def _base_options(home: Path) -> list[str]:
    return [
        "--homedir",
        str(home),
        "--no-options",
        "--batch",
        "--no-tty",
        "--status-fd",
        "2",
        "--exit-on-status-write-error",
        "--pinentry-mode",
        "loopback",
        "--trust-model",
        "always",  # validity (expiry, revocation) is checked here, from the key listing
        "--no-auto-key-retrieve",
        "--no-auto-key-locate",
        "--disable-dirmngr",
        "--no-random-seed-file",
        "--no-emit-version",
        "--no-comments",
    ]


def _detach_args(key: KeyInfo, digest: DigestAlgorithm) -> list[str]:
    return [
        "--detach-sign",
        "--armor",
        "--local-user",
        key.fingerprint,
        "--digest-algo",
        _DIGEST_OPTION[DigestAlgorithm(digest)],
    ]


class _Feed:
    """gpg's input while the caller is still writing it: a short queue of pieces that
    python-gnupg's copying thread reads (as it reads a file) into gpg's stdin."""

    DEPTH = 4

    def __init__(self) -> None:
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=self.DEPTH)
        self._piece = memoryview(b"")
        self._ended = False

    def read(self, size: int = -1) -> memoryview:
        """The next at most ``size`` bytes; empty at the end (python-gnupg's side)."""
        while not self._piece:
            if self._ended:
                return memoryview(b"")
            item = self._queue.get()
            if item is None:
                self._ended = True
            else:
                self._piece = memoryview(item)
        take = len(self._piece) if size < 0 else size
        piece, self._piece = self._piece[:take], self._piece[take:]
        return piece

    def put(self, item: bytes | None, timeout: float) -> bool:
        """Queue ``item`` (None: the end) within ``timeout`` seconds; False if the reader
        took nothing in that time."""
        try:
            self._queue.put(item, timeout=timeout)
        except queue.Full:
            return False
        return True

    def close(self) -> None:
        """(python-gnupg closes what it read; the queue needs nothing.)"""


class _FedGpg:
    """One gpg process reading data the caller writes while it runs (through a
    :class:`_Feed`): :meth:`write`, then :meth:`_end` for gpg's outcome, or :meth:`abort`.
    The engine's timeout bounds each wait for gpg to take more data, and its end once the
    data is in."""

    _POLL = 0.25  # seconds between checks that gpg is still running, while it takes no data

    def __init__(self, engine: GnuPG, args: list[str], secret: str | None, name: str) -> None:
        self._engine = engine
        self._timeout = engine.timeout
        self._feed = _Feed()
        self._watchdog = _Watchdog(None)
        self._outcome: list[tuple[_Run, _Sink] | BaseException] = []
        self._done = False
        self._thread = threading.Thread(
            target=_run_fed,
            args=(engine, args, self._feed, secret, self._watchdog, self._outcome),
            name=name,
            daemon=True,
        )
        self._thread.start()

    def _put(self, item: bytes | None) -> bool:
        """Hand ``item`` to gpg; False if gpg has ended (it reads no more). If gpg is still
        running but takes nothing for the timeout, stop it and raise."""
        waited = 0.0
        while not self._feed.put(item, self._POLL):
            waited += self._POLL
            if not self._thread.is_alive():
                return False
            if waited >= self._timeout:
                self.abort()
                raise ToolError(f"gpg took no data for {self._timeout} seconds and was stopped")
        return True

    def _end(self) -> tuple[_Run, _Sink]:
        """The end of the data; gpg's run once it has finished."""
        if self._done:
            raise AlreadyFinalized(type(self).__name__)
        self._put(None)
        self._done = True
        self._thread.join(self._timeout)
        if self._thread.is_alive():
            self._watchdog.kill()
            self._thread.join()
            raise ToolError(f"gpg did not finish within {self._timeout} seconds")
        return self._ran()

    def _ran(self) -> tuple[_Run, _Sink]:
        """gpg's run, once its thread has ended (or what it raised)."""
        self._thread.join()
        outcome = self._outcome[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def abort(self) -> None:
        """Stop gpg; its outcome is dropped. (Nothing to do once it has ended.)"""
        if self._thread.is_alive():
            self._done = True
            self._watchdog.kill()
            while self._thread.is_alive() and not self._feed.put(None, self._POLL):
                pass
            self._thread.join()
        self._done = True


class SignatureStream(_FedGpg):
    """A detached signature gpg makes while the data is written
    (:meth:`GnuPG.sign_detached_stream`): :meth:`write` the data, then :meth:`finish`;
    or :meth:`abort`, which stops gpg and makes no signature."""

    def __init__(
        self,
        engine: GnuPG,
        args: list[str],
        key: KeyInfo,
        name: str,
        secret: str | None,
        *,
        micalg: str,
    ) -> None:
        self.micalg = micalg
        """The ``micalg`` of the signature to come (RFC 3156 5), as the trial one had."""
        self._key, self._name, self._secret = key, name, secret
        super().__init__(engine, args, secret, "securemail-gpg-signer")

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self._done:
            raise AlreadyFinalized(type(self).__name__)
        if data and not self._put(bytes(data)):
            self._done = True
            self._signature(*self._ran())  # gpg's own error, if it gave one
            raise ToolError("gpg stopped reading the data to sign")
        return len(data)

    def finish(self) -> DetachedSignature:
        """The end of the data: gpg's signature over all of it."""
        return self._signature(*self._end())

    def _signature(self, run: _Run, sink: _Sink) -> DetachedSignature:
        return self._engine._detached(run, sink, self._key, self._name, self._secret)


class VerificationStream(_FedGpg):
    """gpg checking a detached signature over data written while it runs
    (:meth:`GnuPG.verify_detached_stream`): :meth:`write` the data, then :meth:`finish`
    for the verdict. A gpg that stops reading early (an unreadable signature) gets no
    more; its verdict says why."""

    def __init__(
        self, engine: GnuPG, args: list[str], path: Path, *, allow_weak_digest: bool
    ) -> None:
        self._path = path
        self._allow_weak = allow_weak_digest
        self._gone = False
        super().__init__(engine, args, None, "securemail-gpg-verifier")

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self._done:
            raise AlreadyFinalized(type(self).__name__)
        if data and not self._gone:
            self._gone = not self._put(bytes(data))
        return len(data)

    def finish(self) -> Verification:
        try:
            run, _ = self._end()
        finally:
            self._path.unlink(missing_ok=True)
        clean = run.returncode == 0 and not run.failures() and not run.input_error
        return self._engine._verification(run, clean=clean, allow_weak=self._allow_weak)

    def abort(self) -> None:
        super().abort()
        self._path.unlink(missing_ok=True)


def _run_fed(
    engine: GnuPG,
    args: list[str],
    feed: _Feed,
    secret: str | None,
    watchdog: _Watchdog,
    outcome: list[tuple[_Run, _Sink] | BaseException],
) -> None:
    try:
        outcome.append(engine._call(args, feed, passphrase=secret, watchdog=watchdog))
    except BaseException as exc:  # handed to the writing thread
        outcome.append(exc)


class _Runner(gnupg.GPG):  # type: ignore[misc]  # python-gnupg has no type hints
    """python-gnupg with our command line and a hook on each process it starts (for the
    watchdog); its I/O plumbing (passphrase and data on stdin, stdout in chunks to
    ``on_data``, status lines from stderr) is used as it is."""

    def __init__(self, binary: str, home: Path, timeout: float) -> None:
        self._options = _base_options(home)
        watchdog = _Watchdog(timeout)
        self.on_process: Callable[[subprocess.Popen[bytes]], None] | None = watchdog.start
        try:
            # Runs `gpg --list-config` once, through make_args below, to learn the version.
            super().__init__(gpgbinary=binary, gnupghome=str(home), env=_environment(home))
        finally:
            watchdog.stop()
            self.on_process = None
        if watchdog.fired:
            raise ToolError(f"{binary} did not answer within {timeout} seconds")
        self.encoding = "latin-1"  # lossless for status lines; see _passphrase
        self.buffer_size = 64 * 1024

    def make_args(self, args: list[str], passphrase: bool) -> list[str]:
        command = [self.gpgbinary, *self._options]
        if passphrase:
            command += ["--passphrase-fd", "0"]
        return [*command, *args]

    def _open_subprocess(self, args: list[str], passphrase: bool = False) -> Any:
        process = super()._open_subprocess(args, passphrase)
        if self.on_process is not None:
            self.on_process(process)
        return process


def _remove_tree(path: Path) -> bool:
    """Remove ``path``; retry a few times, since a just-killed agent may still be deleting
    its sockets in it. True when it is gone."""
    for attempt in range(10):
        try:
            shutil.rmtree(path)
        except FileNotFoundError:
            pass
        except OSError:
            time.sleep(0.05 * (attempt + 1))
            continue
        if not path.exists():
            return True
    return not path.exists()


def _cleanup(gpgconf: str | None, home: Path | None, scratch: Path, env: dict[str, str]) -> bool:
    """Stop the private home's agent and delete the home and the scratch directory."""
    removed = _remove_tree(scratch)
    if home is None:
        return removed
    if gpgconf is not None:
        for action in (["--kill", "all"], ["--remove-socketdir"]):
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                subprocess.run(
                    [gpgconf, "--homedir", str(home), *action],
                    env=env,
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    timeout=30,
                    check=False,
                )
    return _remove_tree(home) and removed


# --- the engine ---------------------------------------------------------------------------------


class GnuPG:
    """A GnuPG home and the operations on it.

    ``GnuPG()`` creates a private temporary home (mode 0700, non-interactive configuration,
    passphrases never cached) that :meth:`close` (or leaving the ``with`` block) removes
    together with its gpg-agent. ``GnuPG(home=path)`` uses an existing home instead: it is
    never deleted, and changed only by :meth:`import_keys` (gpg-agent may also rewrite a
    private-key file into its current format when it first uses it). In a named home the
    user's gpg-agent and its passphrase cache are used as they are configured there.

    Calls on one instance are serialized; use one instance per thread for parallelism.
    ``timeout`` bounds each gpg process; ``max_output`` the plaintext released by
    :meth:`decrypt` and :meth:`verify_inline` (each call may lower or raise it).
    """

    def __init__(
        self,
        home: str | os.PathLike[str] | None = None,
        *,
        gpg: str | os.PathLike[str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_output: int = DEFAULT_MAX_OUTPUT,
    ) -> None:
        binary = find_gpg(gpg)
        if timeout <= 0:
            raise InputError("timeout must be positive")
        if max_output <= 0:
            raise InputError("max_output must be positive")
        if home is not None:
            path = Path(home)
            if not path.is_dir():
                raise InputError(f"the GnuPG home {path} is not a directory")
            self._home = path.resolve()
            self._private = False
        else:
            self._home = Path(tempfile.mkdtemp(prefix="sm-gnupg-", dir=_short_tempdir()))
            self._private = True
        self._scratch = Path(tempfile.mkdtemp(prefix="securemail-gpgio-"))
        self._timeout = timeout
        self._max_output = max_output
        self._lock = threading.Lock()
        self._serial = itertools.count()
        self._closed = False
        self._finalizer = weakref.finalize(
            self,
            _cleanup,
            _find_gpgconf(binary),
            self._home if self._private else None,
            self._scratch,
            _environment(self._home),
        )
        try:
            if self._private:
                (self._home / "gpg.conf").write_text(_GPG_CONF)
                (self._home / "gpg-agent.conf").write_text(_AGENT_CONF)
            self._runner = _Runner(binary, self._home, timeout)
        except (OSError, ValueError) as exc:
            self._finalizer()
            raise ToolError(f"cannot run {binary}: {exc}") from None
        except BaseException:
            self._finalizer()
            raise
        version: tuple[int, ...] | None = getattr(self._runner, "version", None)
        if not version or version < MIN_VERSION:
            self._finalizer()
            shown = ".".join(map(str, version)) if version else "of unknown version"
            raise ToolError(
                f"{binary} is GnuPG {shown}; securemail needs GnuPG "
                f"{'.'.join(map(str, MIN_VERSION))} or later ({INSTALL_HINT})"
            )
        self._version = version
        self._binary = binary

    # -- life cycle --

    @property
    def home(self) -> Path:
        return self._home

    @property
    def private(self) -> bool:
        """True when the home is a temporary one that :meth:`close` removes."""
        return self._private

    @property
    def version(self) -> tuple[int, ...]:
        return self._version

    @property
    def binary(self) -> str:
        return self._binary

    @property
    def timeout(self) -> float:
        """Seconds one gpg process may run (a streamed one: may wait for data)."""
        return self._timeout

    def close(self) -> None:
        """Remove the private home (after stopping its agent) and the scratch files."""
        if self._closed:
            return
        self._closed = True
        if not self._finalizer():
            where = self._home if self._private else self._scratch
            raise ToolError(f"could not remove the temporary directory {where}")

    def __enter__(self) -> GnuPG:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        kind = "private" if self._private else "named"
        return f"GnuPG({kind} home {str(self._home)!r}, gpg {'.'.join(map(str, self._version))})"

    # -- running gpg --

    def _call(
        self,
        args: Sequence[str],
        data: bytes | _Feed = b"",
        *,
        passphrase: str | None = None,
        limit: int | None = None,
        watchdog: _Watchdog | None = None,
    ) -> tuple[_Run, _Sink]:
        """Run gpg on ``data`` (bytes, or a :class:`_Feed` written while it runs, watched
        by the caller's ``watchdog``)."""
        if self._closed:
            raise InputError("this GnuPG engine is closed")
        runner = self._runner
        with self._lock:
            log = self._scratch / f"gpg-{next(self._serial)}.log"
            watchdog = watchdog or _Watchdog(self._timeout)
            sink = _Sink(limit, watchdog.kill)
            recorder = _Recorder(runner)
            runner.on_data = sink
            runner.on_process = watchdog.start
            input_error = False
            try:
                runner._handle_io(
                    ["--log-file", str(log), *args],
                    data if isinstance(data, _Feed) else io.BytesIO(data),
                    recorder,
                    passphrase=passphrase,
                    binary=True,
                )
            except OSError:
                # gpg stopped reading its input (killed, or it gave up early). If it never
                # started, there is no exit code.
                input_error = True
            finally:
                watchdog.stop()
                runner.on_data = None
                runner.on_process = None
            try:
                log_text = log.read_text("utf-8", "replace")
                log.unlink()
            except OSError:
                log_text = ""
        if recorder.returncode is None:
            sink.wipe()
            raise ToolError(f"could not run {self._binary}")
        run = _Run(
            returncode=recorder.returncode,
            status=tuple(recorder.lines),
            log=log_text,
            timed_out=watchdog.fired,
            overflow=sink.overflow,
            input_error=input_error,
        )
        if run.timed_out:
            sink.wipe()
            raise ToolError(f"gpg did not finish within {self._timeout} seconds and was stopped")
        return run, sink

    # -- keys --

    def import_keys(self, source: Source) -> tuple[KeyInfo, ...]:
        """Import OpenPGP keys (public or secret, armored or binary) from bytes or a file
        path; returns the certificates the import touched. A revocation certificate
        returns the key it revoked. Nothing importable raises :class:`KeyLoadError`."""
        data, name = read_source(source)
        run, _ = self._call(["--import"], data)
        fingerprints = [args[1].upper() for args in run.all("IMPORT_OK") if len(args) > 1]
        result = run.first("IMPORT_RES")
        revocations = _number(result[8]) if result and len(result) > 8 else None
        if not fingerprints and revocations:
            fingerprints = [a[0].upper() for a in run.all("KEY_CONSIDERED") if a]
        if not fingerprints:
            problem = run.first("IMPORT_PROBLEM")
            if problem:
                reason = _IMPORT_PROBLEMS.get(_number(problem[0]) or 0, "gpg refused it")
            else:
                reason = f"no OpenPGP key that GnuPG can read ({run.diagnostic()})"
            raise KeyLoadError(name, reason)
        keys = self.list_keys()
        wanted = dict.fromkeys(fingerprints)
        return tuple(k for fpr in wanted for k in keys if k.fingerprint == fpr)

    def list_keys(self) -> tuple[KeyInfo, ...]:
        """Every certificate in the home, with what is known of each key right now."""
        listing = ["--with-colons", "--fixed-list-mode", "--with-subkey-fingerprint"]
        public, public_out = self._call([*listing, "--list-keys"])
        secret, secret_out = self._call([*listing, "--list-secret-keys"])
        for run in (public, secret):
            # An empty home lists nothing and exits 0; a broken keyring is an error.
            if run.returncode not in (0, None) or run.failures():
                raise ToolError(f"gpg could not list the keys in {self._home}: {run.diagnostic()}")
        return _build_keys(public_out.take(), secret_out.take())

    def find_keys(self, selector: str) -> tuple[KeyInfo, ...]:
        """The certificates a fingerprint (full, 40 or 64 hex digits) or an email address
        (exact addr-spec of a non-revoked user ID; domain case-insensitive) selects."""
        return self._matching(selector, self.list_keys())

    @staticmethod
    def _matching(selector: str, keys: Iterable[KeyInfo]) -> tuple[KeyInfo, ...]:
        kind, value = _parse_selector(selector)
        if kind == "fingerprint":
            return tuple(k for k in keys if k.fingerprint == value)
        return tuple(k for k in keys if k.has_email(value))

    def recipient_key(self, recipient: str | KeyInfo) -> KeyInfo:
        """The certificate to encrypt to for ``recipient``, checked now: raises
        :class:`RecipientError` naming the recipient when it is unknown, ambiguous, expired,
        revoked, disabled or has no valid encryption (sub)key."""
        return self._choose(recipient, self.list_keys(), purpose="encrypt")

    def signing_key(self, signer: str | KeyInfo) -> KeyInfo:
        """The certificate to sign with for ``signer``: raises :class:`SigningKeyError`
        naming it when it is unknown, ambiguous, expired, revoked, cannot sign, or its
        secret part is missing."""
        return self._choose(signer, self.list_keys(), purpose="sign")

    def _choose(self, selector: str | KeyInfo, keys: Sequence[KeyInfo], *, purpose: str) -> KeyInfo:
        """Resolve a selector for ``purpose`` ("encrypt" or "sign").

        When an address selects several certificates and exactly one of them is usable
        (an old key expired or revoked next to its replacement), that one is chosen; two
        usable ones are ambiguous and refused."""
        if isinstance(selector, KeyInfo):
            name, text = selector.name, selector.fingerprint
        else:
            name = text = selector
        error: type[RecipientError] | type[SigningKeyError] = (
            RecipientError if purpose == "encrypt" else SigningKeyError
        )
        kind, _ = _parse_selector(text)
        candidates = self._matching(text, keys)

        def problem(key: KeyInfo) -> str | None:
            if purpose == "encrypt":
                return key.problem_for_encryption()
            return key.problem_for_signing()

        if not candidates:
            what = "fingerprint" if kind == "fingerprint" else "address"
            raise error(name, f"no key with this {what} in the GnuPG home")
        usable = [k for k in candidates if problem(k) is None]
        if len(usable) == 1:
            return usable[0]
        if len(usable) > 1:
            listed = ", ".join(k.fingerprint for k in usable)
            raise error(
                name,
                f"ambiguous: {len(usable)} usable keys carry this address ({listed}); "
                "select one by fingerprint",
            )
        raise error(name, "; ".join(p for p in (problem(k) for k in candidates) if p))

    # -- encrypting and signing --

    def encrypt(
        self,
        data: bytes,
        recipients: Sequence[str | KeyInfo],
        *,
        sign_with: str | KeyInfo | None = None,
        passphrase: Passphrase = None,
        digest: DigestAlgorithm = DigestAlgorithm.SHA256,
        armor: bool = True,
        hide_recipients: bool = False,
        hidden: Sequence[str | KeyInfo] = (),
        compress: bool = False,
    ) -> Encrypted:
        """Encrypt ``data`` to every recipient (fail-closed: one unusable recipient refuses
        the whole message), optionally signing it too (RFC 3156 6.2 combined form;
        ``passphrase`` is the signing key's).

        Integrity protection is always on (SEIPD with MDC). Compression is off by default:
        MIME bodies are mostly base64 of already-compressed files, it costs time on large
        messages, and compressing before encrypting leaks information through the length.
        Key IDs stay in the message unless ``hide_recipients`` (``--throw-keyids``), which
        makes every recipient try all of its secret keys; ``hidden`` recipients (Bcc) are
        added with ``--hidden-recipient``, so the others cannot tell they received it.
        """
        secret = _passphrase(passphrase)
        if isinstance(recipients, str | KeyInfo) or isinstance(hidden, str | KeyInfo):
            raise InputError("recipients must be a sequence of addresses, fingerprints or keys")
        if not recipients and not hidden:
            raise InputError("at least one recipient is needed")
        keys = self.list_keys()
        chosen: dict[str, KeyInfo] = {}
        names: dict[str, str] = {}
        concealed: set[str] = set()
        for recipient in [*recipients, *hidden]:
            key = self._choose(recipient, keys, purpose="encrypt")
            chosen.setdefault(key.fingerprint, key)
            names.setdefault(
                key.fingerprint, recipient.name if isinstance(recipient, KeyInfo) else recipient
            )
        for recipient in hidden:
            concealed.add(self._choose(recipient, keys, purpose="encrypt").fingerprint)
        # A key named openly and as Bcc is open: the others already know it.
        concealed -= {self._choose(r, keys, purpose="encrypt").fingerprint for r in recipients}
        signer = self._choose(sign_with, keys, purpose="sign") if sign_with is not None else None
        signer_name = _display(sign_with) if sign_with is not None else ""
        args = ["--encrypt", "--force-mdc"]
        args += ["--throw-keyids"] if hide_recipients else ["--no-throw-keyids"]
        if armor:
            args.append("--armor")
        if not compress:
            args += ["--compress-algo", "none"]
        for fingerprint in chosen:
            option = "--hidden-recipient" if fingerprint in concealed else "--recipient"
            args += [option, fingerprint]
        if signer is not None:
            args += ["--sign", "--local-user", signer.fingerprint]
            args += ["--digest-algo", _DIGEST_OPTION[DigestAlgorithm(digest)]]
        run, sink = self._call(args, bytes(data), passphrase=secret)
        for invalid in run.all("INV_RECP"):
            code = _number(invalid[0] if invalid else None)
            spec = invalid[1].upper() if len(invalid) > 1 else ""
            sink.wipe()
            raise RecipientError(names.get(spec, spec or "?"), _invalid_reason(code))
        made = None
        if signer is not None:
            made = self._signature_made(run, signer, signer_name, secret, sink, detached=False)
        begin = run.first("BEGIN_ENCRYPTION")
        if (
            run.returncode != 0
            or begin is None
            or not run.has("END_ENCRYPTION")
            or run.failures()
            or run.input_error
        ):
            sink.wipe()
            raise EncryptionError(f"gpg could not encrypt: {run.diagnostic()}")
        mdc, cipher, aead = _number(begin[0]), _number(_at(begin, 1)), _number(_at(begin, 2))
        if mdc != 2 and not aead:
            sink.wipe()
            raise EncryptionError("gpg did not add integrity protection; nothing was produced")
        return Encrypted(
            data=sink.take(),
            recipients=tuple(chosen.values()),
            cipher=_CIPHERS.get(cipher or 0, f"cipher{cipher}"),
            signature=made,
        )

    def sign_detached(
        self,
        data: bytes,
        signer: str | KeyInfo,
        *,
        passphrase: Passphrase = None,
        digest: DigestAlgorithm = DigestAlgorithm.SHA256,
    ) -> DetachedSignature:
        """An armored detached signature over exactly ``data`` (a binary signature, class
        0x00: the caller passes the canonical CRLF form RFC 3156 requires). The hash gpg
        actually used (for ``micalg``) is taken from its ``SIG_CREATED`` line."""
        secret = _passphrase(passphrase)
        key = self._choose(signer, self.list_keys(), purpose="sign")
        run, sink = self._call(_detach_args(key, digest), bytes(data), passphrase=secret)
        return self._detached(run, sink, key, _display(signer), secret)

    def sign_detached_stream(
        self,
        signer: str | KeyInfo,
        *,
        passphrase: Passphrase = None,
        digest: DigestAlgorithm = DigestAlgorithm.SHA256,
    ) -> SignatureStream:
        """:meth:`sign_detached` over data written to the returned stream while gpg runs,
        for data too large to hold: ``write`` it, then ``finish()`` for the signature.

        The key and passphrase are tried on empty data first, so that a wrong passphrase
        or an unusable key stops the caller before it has written anything. The engine
        runs nothing else until the stream is finished or aborted. The engine's timeout
        bounds each wait for gpg to take more data, and its end once the data is in."""
        secret = _passphrase(passphrase)
        key = self._choose(signer, self.list_keys(), purpose="sign")
        tried = self._call(_detach_args(key, digest), passphrase=secret)
        made = self._detached(*tried, key, _display(signer), secret)
        return SignatureStream(
            self, _detach_args(key, digest), key, _display(signer), secret, micalg=made.micalg
        )

    def _detached(
        self, run: _Run, sink: _Sink, key: KeyInfo, name: str, passphrase: str | None
    ) -> DetachedSignature:
        made = self._signature_made(run, key, name, passphrase, sink, detached=True)
        if run.returncode != 0 or run.failures() or run.input_error:
            sink.wipe()
            raise ToolError(f"gpg could not sign: {run.diagnostic()}")
        return DetachedSignature(data=sink.take(), made=made)

    def _signature_made(
        self,
        run: _Run,
        key: KeyInfo,
        name: str,
        passphrase: str | None,
        sink: _Sink,
        *,
        detached: bool,
    ) -> SignatureMade:
        if _passphrase_rejected(run) or (
            passphrase is None and run.has("NEED_PASSPHRASE") and not run.has("SIG_CREATED")
        ):
            sink.wipe()
            raise WrongPasswordError(name)
        invalid = run.first("INV_SGNR")
        if invalid is not None:
            sink.wipe()
            raise SigningKeyError(name, _invalid_reason(_number(_at(invalid, 0))))
        created = run.all("SIG_CREATED")
        # SIG_CREATED <type> <pubkey algo> <hash algo> <class> <timestamp> <key fpr>
        if len(created) != 1 or len(created[0]) < 6:
            sink.wipe()
            raise ToolError(f"gpg did not report one signature: {run.diagnostic()}")
        kind, _, hash_algo, _, stamp, fingerprint = created[0][:6]
        if (detached and kind != "D") or not key.owns(fingerprint):
            sink.wipe()
            raise ToolError(f"gpg made an unexpected signature ({kind}, key {fingerprint})")
        hash_number = _number(hash_algo) or 0
        return SignatureMade(
            signer=key,
            signing_key=fingerprint.upper(),
            hash_algorithm=_HASHES.get(hash_number, f"hash{hash_number}"),
            created=_timestamp(stamp) or dt.datetime.now(dt.UTC),
        )

    # -- decrypting --

    def decrypt(
        self,
        data: bytes,
        *,
        passphrase: Passphrase = None,
        max_output: int | None = None,
        allow_weak_digest: bool = False,
    ) -> Decrypted:
        """Decrypt a public-key encrypted OpenPGP message (armored or binary) with a secret
        key in the home; ``passphrase`` unlocks that key.

        Plaintext is released only if gpg reported ``DECRYPTION_OKAY`` and ``GOODMDC``
        (integrity checked: MDC, or an AEAD tag) and nothing failed. Otherwise no byte of
        it is returned and the error says what happened: :class:`IntegrityError` (modified,
        or not integrity-protected at all), :class:`NoSecretKeyError` (none of the message's
        keys is here; the error lists their IDs), :class:`WrongPasswordError`,
        :class:`SizeLimitExceeded` (more than ``max_output`` bytes), or
        :class:`DecryptionError`. Password-encrypted (symmetric) messages are refused here,
        so that a key passphrase is never tried as a message password; see
        :meth:`decrypt_symmetric`. Signatures inside are reported in ``signature``.
        """
        secret = _passphrase(passphrase)
        return self._decrypt(
            bytes(data), secret, max_output, allow_weak_digest=allow_weak_digest, symmetric=False
        )

    def decrypt_symmetric(
        self, data: bytes, password: str | bytes, *, max_output: int | None = None
    ) -> Decrypted:
        """Decrypt a password-encrypted (SKESK) message, e.g. an Autocrypt Setup Message,
        with the same integrity and size rules as :meth:`decrypt`. A message that needs a
        secret key instead is refused."""
        secret = _passphrase(password)
        if secret is None:
            raise InputError("a password is needed")
        return self._decrypt(
            bytes(data), secret, max_output, allow_weak_digest=False, symmetric=True
        )

    def _decrypt(
        self,
        data: bytes,
        passphrase: str | None,
        max_output: int | None,
        *,
        allow_weak_digest: bool,
        symmetric: bool,
    ) -> Decrypted:
        limit = self._limit(max_output)
        args = ["--decrypt", "--no-symkey-cache", "--max-output", str(limit + _OUTPUT_MARGIN)]
        run, sink = self._call(args, data, passphrase=passphrase, limit=limit)
        signed_run = run
        if (
            run.has("BADSIG")
            and not run.has("DECRYPTION_OKAY", "BADMDC", "DECRYPTION_FAILED")
            and not run.overflow
        ):
            # gpg stops at a bad signature inside an encrypted message, before it checks
            # the integrity of the ciphertext. Decrypt again without verifying, so the
            # integrity verdict is gpg's; the signature verdict stays the first run's.
            sink.wipe()
            run, sink = self._call(
                ["--skip-verify", *args], data, passphrase=passphrase, limit=limit
            )
        try:
            self._check_decryption(run, passphrase, limit, symmetric=symmetric)
        except BaseException:
            sink.wipe()
            raise
        info = run.first("DECRYPTION_INFO") or []
        mdc, cipher, aead = _number(_at(info, 0)), _number(_at(info, 1)), _number(_at(info, 2))
        key = run.first("DECRYPTION_KEY")
        plaintext = sink.take()
        signature = None
        if signed_run.has("NEWSIG", *_SIGNATURE_RESULTS):
            signature = self._verification(signed_run, clean=True, allow_weak=allow_weak_digest)
        return Decrypted(
            data=plaintext,
            recipients=tuple(a[0].upper() for a in run.all("ENC_TO") if a),
            key=key[0].upper() if key else None,
            primary=key[1].upper() if key and len(key) > 1 else None,
            cipher=_CIPHERS.get(cipher or 0, f"cipher{cipher}"),
            integrity="mdc" if mdc == 2 else "aead" + (f"-{_AEAD[aead]}" if aead in _AEAD else ""),
            signature=signature,
        )

    def _check_decryption(
        self, run: _Run, passphrase: str | None, limit: int, *, symmetric: bool
    ) -> None:
        """Raise unless the status lines prove a complete, integrity-checked decryption.

        The order matters: the specific failures (size, password, integrity, wrong key)
        are recognised before the generic one, and success needs every condition at once."""
        if run.overflow:
            raise SizeLimitExceeded("the decrypted message", limit)
        password_message = run.has("NEED_PASSPHRASE_SYM")
        if run.has("NODATA") and not run.has("DECRYPTION_OKAY"):
            # gpg found no packet it could read: an unknown version (RFC 9580 v6 needs
            # GnuPG 2.4+ or another implementation) or no OpenPGP data at all.
            raise DecryptionError(
                "no OpenPGP data this GnuPG can read (a newer packet version, or damaged)"
            )
        if symmetric and (not password_message or run.has("DECRYPTION_KEY")):
            raise DecryptionError("the message is not password-encrypted; decrypt it with a key")
        if not symmetric and password_message:
            raise DecryptionError(
                "the message is password-encrypted (symmetric); refused here, so that a key "
                "passphrase is never tried as a message password"
            )
        okay = run.has("DECRYPTION_OKAY")
        if _passphrase_rejected(run) or (
            passphrase is None and run.has("NEED_PASSPHRASE") and not okay
        ):
            names = "" if symmetric else self._names_for(run)
            raise WrongPasswordError("the password-encrypted message" if symmetric else names)
        if run.has("BADMDC"):
            raise IntegrityError(
                "the integrity check failed: the message was modified; no plaintext released"
            )
        info = run.first("DECRYPTION_INFO")
        unprotected = (
            info is not None
            and _number(_at(info, 0)) == 0
            and not _number(_at(info, 2))
            and not run.has("GOODMDC")
        )
        # No MDC and no AEAD: gpg 2.2 logs "message was not integrity protected" and fails
        # (adding ERROR nomdc_with_legacy_cipher for 64-bit ciphers); gpg before 2.2.8, or
        # --ignore-mdc-error, would release it. (gpg 2.2 reports LibrePGP OCB messages as
        # "DECRYPTION_INFO 0 <cipher> 0" followed by GOODMDC, hence the GOODMDC test.)
        if unprotected or any(a[:1] == ["nomdc_with_legacy_cipher"] for a in run.all("ERROR")):
            raise IntegrityError(
                "the message is not integrity-protected (no MDC); refused, no plaintext released"
            )
        enc_to = [a[0].upper() for a in run.all("ENC_TO") if a]
        no_secret = {a[0].upper() for a in run.all("NO_SECKEY") if a}
        if not okay and enc_to and not run.has("DECRYPTION_KEY") and set(enc_to) <= no_secret:
            # NO_SECKEY alone proves nothing: gpg also sends it for the remaining keys after
            # one has worked. Here none worked.
            raise NoSecretKeyError(tuple(enc_to))
        signature_trouble = run.has(*_SIGNATURE_PROBLEMS)
        failures = [
            f
            for f in run.failures()
            # A signature gpg could not check makes it exit 2 without failing decryption.
            if not (signature_trouble and f.startswith("FAILURE gpg-exit"))
        ]
        good = (
            okay
            and run.has("GOODMDC")
            and run.has("BEGIN_DECRYPTION")
            and run.has("END_DECRYPTION")
            and not run.has("DECRYPTION_FAILED", "BADMDC")
            and not failures
            and run.count("PLAINTEXT") == 1
            and not run.input_error
            and (run.returncode == 0 or (signature_trouble and run.returncode in (1, 2)))
        )
        if not good:
            raise DecryptionError()

    def _names_for(self, run: _Run) -> str:
        """Who the failed key is, for a passphrase error: the home's certificates that own
        one of the message's key IDs."""
        ids = {a[0].upper() for a in run.all("ENC_TO") if a}
        hints = {a[0].upper() for a in run.all("NEED_PASSPHRASE") if a}
        try:
            keys = self.list_keys()
        except SecureMailError:
            keys = ()
        # Only keys whose secret part is here can have asked for the passphrase.
        owners = [
            k.name for k in keys if any(s.secret and s.key_id in (hints or ids) for s in k.keys)
        ]
        return ", ".join(dict.fromkeys(owners)) or "the secret key"

    def _limit(self, max_output: int | None) -> int:
        limit = self._max_output if max_output is None else max_output
        if limit <= 0:
            raise InputError("max_output must be positive")
        return limit

    # -- verifying --

    def verify_detached(
        self, data: bytes, signature: bytes, *, allow_weak_digest: bool = False
    ) -> Verification:
        """Check a detached signature over exactly ``data`` (for RFC 3156, the signed part
        in its canonical CRLF form)."""
        path = self._scratch / f"signature-{next(self._serial)}.sig"
        path.write_bytes(bytes(signature))
        try:
            run, _ = self._call(["--verify", str(path), "-"], bytes(data))
        finally:
            path.unlink(missing_ok=True)
        clean = run.returncode == 0 and not run.failures() and not run.input_error
        return self._verification(run, clean=clean, allow_weak=allow_weak_digest)

    def verify_detached_stream(
        self, signature: bytes, *, allow_weak_digest: bool = False
    ) -> VerificationStream:
        """:meth:`verify_detached` over data written to the returned stream while gpg
        runs, for data too large to hold: ``write`` it, then ``finish()`` for the verdict.
        The engine runs nothing else until the stream is finished or aborted."""
        path = self._scratch / f"signature-{next(self._serial)}.sig"
        path.write_bytes(bytes(signature))
        return VerificationStream(
            self, ["--verify", str(path), "-"], path, allow_weak_digest=allow_weak_digest
        )

    def verify_inline(
        self,
        message: bytes,
        *,
        max_output: int | None = None,
        allow_weak_digest: bool = False,
    ) -> Verification:
        """Check an inline-signed (one-pass) or cleartext-signed message.

        ``data`` of the result is what gpg verified and wrote out (``--output``): for a
        clearsigned block inside other text, the block's content only, never the text
        around it. Encrypted input is not decrypted here (use :meth:`decrypt`)."""
        limit = self._limit(max_output)
        args = ["--output", "-", "--max-output", str(limit + _OUTPUT_MARGIN), "--verify"]
        run, sink = self._call(args, bytes(message), limit=limit)
        if run.overflow:
            raise SizeLimitExceeded("the signed content", limit)
        single = run.count("PLAINTEXT") == 1
        clean = run.returncode == 0 and not run.failures() and not run.input_error and single
        output = sink.take()
        return self._verification(
            run, clean=clean, allow_weak=allow_weak_digest, data=output if single else None
        )

    def _verification(
        self, run: _Run, *, clean: bool, allow_weak: bool, data: bytes | None = None
    ) -> Verification:
        signatures = _signatures(run)
        count = len(signatures)
        if count == 0:
            error: SecureMailError = NotSignedError("no OpenPGP signature found")
            return Verification(Verdict.NOT_CHECKED, str(error), error, data=data)
        if count > 1:
            error = SignatureError(f"{count} signatures; exactly one is accepted")
            return Verification(Verdict.FAILED, str(error), error, signatures=count, data=data)
        sig = signatures[0]
        signer = None
        if sig.primary:
            signer = next((k for k in self.list_keys() if k.fingerprint == sig.primary), None)
        hash_name = _HASHES.get(sig.hash_algo or 0) if sig.hash_algo else None
        verdict, problem = _judge(sig, hash_name, allow_weak=allow_weak, clean=clean, run=run)
        return Verification(
            verdict=verdict,
            reason=str(problem) if problem is not None else "good signature",
            error=problem,
            fingerprint=sig.primary,
            signing_key=sig.fingerprint,
            emails=signer.emails if signer is not None else (),
            signer=signer,
            created=sig.created,
            hash_algorithm=hash_name,
            signatures=1,
            data=data,
        )

    # -- for native OpenPGP streaming (securemail.stream.openpgp) --

    def export_public(self, recipient: str | KeyInfo, *, armor: bool = False) -> bytes:
        """The public key to encrypt to for ``recipient``, for
        :func:`securemail.stream.openpgp.recipient_keys`: checked now like
        :meth:`recipient_key` (:class:`RecipientError` naming the recipient when it is
        unknown, ambiguous, expired, revoked, disabled or cannot encrypt), and exported
        minimal, with only the encryption subkey gpg would choose (the newest valid one),
        so that gpg's judgment of the self-signatures is what the native writer uses."""
        key = self.recipient_key(recipient)
        name = _display(recipient)
        subkey = max(key.encryption_keys(), key=lambda k: k.created)
        args = ["--export", "--export-options", "export-minimal", f"{subkey.fingerprint}!"]
        run, sink = self._call(["--armor", *args] if armor else args)
        exported = sink.take()
        if run.returncode != 0 or run.failures() or run.input_error or not exported:
            raise RecipientError(name, f"gpg could not export the key: {run.diagnostic()}")
        return exported

    def export_certificate(self, fingerprint: str) -> bytes:
        """The whole public certificate (every subkey, user ID and signature, revocations
        included) of the key with this full ``fingerprint``, ASCII-armored, unjudged: for
        keeping a key to be judged later (the key directory). Never secret key material."""
        kind, value = _parse_selector(fingerprint)
        if kind != "fingerprint":
            raise InputError(f"{fingerprint!r} is not a full key fingerprint")
        run, sink = self._call(["--armor", "--export", value])
        exported = sink.take()
        if run.returncode != 0 or run.failures() or run.input_error or not exported:
            raise KeyLoadError(value, f"gpg could not export the key: {run.diagnostic()}")
        return exported

    def session_key(self, pkesk_packets: bytes, passphrase: Passphrase = None) -> tuple[int, bytes]:
        """The session key of a message, from its public-key encrypted session-key
        packets (PKESK), decrypted by gpg with a secret key in the home (``passphrase``
        unlocks it): (symmetric algorithm ID, key). The provider
        :func:`securemail.stream.openpgp.decrypt_stream` needs.

        gpg is given the PKESK packets and an encrypted packet of 40 octets, and asked to
        ``--show-session-key``: it reports the key as soon as it has it, before it tries
        (and fails) to decrypt the 40 octets; the message data never passes through gpg.
        gpg's log would repeat the key, so it goes nowhere. Password-encrypted (SKESK)
        packets are never given to gpg, so a key passphrase is never tried as a message
        password. Raises :class:`NoSecretKeyError` (none of the message's keys has its
        secret part here; the error lists their IDs), :class:`WrongPasswordError`, or
        :class:`DecryptionError`."""
        secret = _passphrase(passphrase)
        try:
            packets = list(split_packets(bytes(pkesk_packets), max_packet=1 << 16))
        except MalformedPacket:
            raise DecryptionError("malformed session-key packets") from None
        public = b"".join(packet(tag, body) for tag, body in packets if tag == TAG_PKESK)
        if not public:
            if any(tag == TAG_SKESK for tag, _ in packets):
                raise DecryptionError(
                    "the message is password-encrypted (symmetric); refused here, so that a "
                    "key passphrase is never tried as a message password"
                )
            raise DecryptionError("the message has no public-key session-key packet")
        probe = packet(TAG_SEIPD, b"\x01" + bytes(40))  # version 1, nothing to decrypt
        args = ["--decrypt", "--show-session-key", "--no-symkey-cache"]
        args += ["--log-file", os.devnull, "--max-output", "4096"]
        run, sink = self._call(args, public + probe, passphrase=secret, limit=4096)
        sink.wipe()
        reported = run.first("SESSION_KEY")
        if reported:
            algorithm, _, key = reported[0].partition(":")
            if algorithm.isdigit() and key and len(key) % 2 == 0:
                try:
                    return int(algorithm), bytes.fromhex(key)
                except ValueError:
                    pass
            raise DecryptionError("gpg reported a session key that cannot be read")
        if _passphrase_rejected(run) or (secret is None and run.has("NEED_PASSPHRASE")):
            raise WrongPasswordError(self._names_for(run))
        enc_to = [a[0].upper() for a in run.all("ENC_TO") if a]
        no_secret = {a[0].upper() for a in run.all("NO_SECKEY") if a}
        if enc_to and set(enc_to) <= no_secret:
            raise NoSecretKeyError(tuple(enc_to))
        raise DecryptionError()


def _display(selector: str | KeyInfo) -> str:
    return selector.name if isinstance(selector, KeyInfo) else selector


def _at(values: Sequence[str], index: int) -> str | None:
    return values[index] if index < len(values) else None


def _invalid_reason(code: int | None) -> str:
    return _INVALID_KEY_REASONS.get(code if code is not None else -1, f"gpg refused it ({code})")


@dataclasses.dataclass
class _Signature:
    """One signature as gpg reported it, between ``NEWSIG`` lines."""

    result: str = ""
    key_id: str = ""
    fingerprint: str | None = None
    primary: str | None = None
    created: dt.datetime | None = None
    hash_algo: int | None = None
    error_code: int | None = None


def _signatures(run: _Run) -> list[_Signature]:
    found: list[_Signature] = []
    current: _Signature | None = None
    for key, value in run.status:
        args = value.split()
        if key == "NEWSIG":
            current = _Signature()
            found.append(current)
        elif key in _SIGNATURE_RESULTS:
            if current is None or current.result:
                # gpg before 2.1 sent no NEWSIG; a second result line is a second signature.
                current = _Signature()
                found.append(current)
            current.result = key
            current.key_id = _at(args, 0) or ""
            if key == "ERRSIG":
                # ERRSIG <keyid> <pkalgo> <hashalgo> <class> <time> <rc> [<fpr>]
                current.hash_algo = _number(_at(args, 2))
                current.created = _timestamp(_at(args, 4) or "")
                current.error_code = _number(_at(args, 5))
                fpr = _at(args, 6)
                current.fingerprint = fpr.upper() if fpr and fpr != "-" else None
        elif key == "VALIDSIG" and current is not None:
            # VALIDSIG <fpr> <date> <timestamp> <expire> <version> <reserved> <pkalgo>
            #          <hashalgo> <class> [<primary fpr>]
            current.fingerprint = (_at(args, 0) or "").upper() or None
            current.created = _timestamp(_at(args, 2) or "")
            current.hash_algo = _number(_at(args, 7))
            primary = _at(args, 9)
            current.primary = primary.upper() if primary else current.fingerprint
    return found


def _judge(
    sig: _Signature, hash_name: str | None, *, allow_weak: bool, clean: bool, run: _Run
) -> tuple[Verdict, SecureMailError | None]:
    who = f"key {sig.primary or sig.fingerprint or sig.key_id}"
    if sig.result == "BADSIG":
        return Verdict.FAILED, SignatureInvalidError(
            f"bad signature by {who}: the data does not match what was signed"
        )
    if sig.result == "EXPKEYSIG":
        return Verdict.FAILED, SignatureError(f"signed by {who}, which has expired")
    if sig.result == "REVKEYSIG":
        return Verdict.FAILED, SignatureError(f"signed by {who}, which is revoked")
    if sig.result == "EXPSIG":
        return Verdict.FAILED, SignatureError(f"the signature by {who} has expired")
    if sig.result == "ERRSIG":
        if sig.error_code == 9 or run.has("NO_PUBKEY"):
            return Verdict.NOT_CHECKED, SignatureError(
                f"the signer's public key ({sig.key_id}) is not in the GnuPG home; "
                "the signature could not be checked"
            )
        return Verdict.NOT_CHECKED, UnsupportedAlgorithmError(
            f"(gpg error {sig.error_code})", f"the signature by {who}"
        )
    if sig.result != "GOODSIG" or sig.fingerprint is None or sig.primary is None:
        return Verdict.FAILED, SignatureError("gpg did not confirm the signature (no VALIDSIG)")
    if hash_name is None:
        return Verdict.NOT_CHECKED, UnsupportedAlgorithmError(
            f"hash {sig.hash_algo}", "OpenPGP signatures"
        )
    if hash_name in _WEAK_HASHES and not allow_weak:
        return Verdict.NOT_CHECKED, UnsupportedAlgorithmError(
            hash_name.upper().replace("SHA", "SHA-"),
            "signatures (insecure; allow_weak_digest=True accepts it)",
        )
    if not clean:
        return Verdict.FAILED, SignatureError(
            f"gpg reported an error besides the signature: {run.diagnostic()}"
        )
    return Verdict.GOOD, None
