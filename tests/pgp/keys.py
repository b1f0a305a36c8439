"""OpenPGP test keys, generated at test time with the gpg binary (never with securemail).

Key generation is slow, so :func:`generate` makes the whole set once per session in a
scratch GnuPG home and exports it as armored bytes; tests import what they need into their
own homes. Besides ordinary keys (Curve25519, RSA-3072, RSA-2048, one with a passphrase)
the set has the awkward ones the engine must refuse: an expired key (made with gpg's
``--faked-system-time`` in 2020, valid for one year), a revoked key (gpg's own revocation
certificate imported), a sign-only key, and two keys sharing one address. Signatures made
by the expired and revoked keys *before* they became unusable are kept too, and one that
expired itself (a one-day signature lifetime in 2020) by a key that is still valid.

Also here, for the PGP/MIME, CLI and interop tests: :func:`shared_keyset` (the same set for
test directories that cannot see ``tests/pgp/conftest.py``), :class:`GpgCli` (the gpg command
line in a throwaway home), ASCII armor that tests can rewrite, and RFC 3156 structures built
and split without securemail's own MIME code.
"""

from __future__ import annotations

import base64
import dataclasses
import email.parser
import email.policy
import re
import subprocess
from collections.abc import Callable, Sequence
from email.message import EmailMessage
from pathlib import Path

TIMEOUT = 120
SIGNED_DATA = b"Content-Type: text/plain\r\n\r\nsigned before the key became unusable\r\n"
PASSPHRASE = "correct horse battery staple"


@dataclasses.dataclass(frozen=True)
class PgpKey:
    """One generated certificate: its armored public and secret exports."""

    label: str
    email: str
    fingerprint: str
    algorithm: str
    public: bytes
    secret: bytes
    passphrase: str | None = None


@dataclasses.dataclass(frozen=True)
class KeySet:
    alice: PgpKey
    """Ed25519 primary + Cv25519 encryption subkey."""
    bob: PgpKey
    """RSA-3072 primary + RSA-3072 encryption subkey."""
    carol: PgpKey
    """RSA-2048 primary + RSA-2048 encryption subkey."""
    dave: PgpKey
    """Ed25519/Cv25519 protected with :data:`PASSPHRASE`."""
    expired: PgpKey
    revoked: PgpKey
    sign_only: PgpKey
    twin_one: PgpKey
    twin_two: PgpKey
    """Two usable keys with the same address, twin@example.org."""
    expired_signature: bytes
    """Detached signature over :data:`SIGNED_DATA` by ``expired``, made while it was valid."""
    revoked_signature: bytes
    """Detached signature over :data:`SIGNED_DATA` by ``revoked``, made before revocation."""
    expired_signature_valid_key: bytes
    """Detached signature over :data:`SIGNED_DATA` that itself expired (made in 2020 with a
    one-day lifetime) by a key that is still valid (``old``)."""
    old: PgpKey
    """Ed25519, made in 2020, never expires."""


class _Home:
    """A scratch GnuPG home driven by the gpg command line."""

    def __init__(self, gpg: str, home: Path) -> None:
        self.gpg = gpg
        self.home = home
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        (home / "gpg-agent.conf").write_text("allow-loopback-pinentry\n")

    def run(self, *args: str, stdin: bytes = b"", passphrase: str = "") -> bytes:
        command = [
            self.gpg,
            "--homedir",
            str(self.home),
            "--batch",
            "--no-tty",
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            passphrase,
            *args,
        ]
        done = subprocess.run(
            command, input=stdin, capture_output=True, timeout=TIMEOUT, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"gpg failed ({done.returncode}): {' '.join(args)}\n"
                + done.stderr.decode("utf-8", "replace")
            )
        return done.stdout

    def generate(
        self,
        uid: str,
        algorithm: str,
        *,
        subkey: str | None = None,
        passphrase: str = "",
        expire: str = "never",
        when: str | None = None,
    ) -> str:
        """Create a key (and an encryption subkey when ``subkey`` is given); returns its
        fingerprint. ``when`` fakes the system time (gpg's ISO basic format)."""
        clock = ["--faked-system-time", when + "!"] if when else []
        # "future-default" makes Ed25519 + a Cv25519 subkey; an explicit algorithm makes
        # only the primary key, which then signs and certifies.
        usage = "default" if algorithm == "future-default" else "sign,cert"
        output = self.run(
            *clock,
            "--status-fd",
            "1",
            "--quick-gen-key",
            uid,
            algorithm,
            usage,
            expire,
            passphrase=passphrase,
        )
        match = re.search(rb"KEY_CREATED [BP] ([0-9A-F]{40})", output)
        if match is None:
            raise RuntimeError(f"no KEY_CREATED for {uid}: {output!r}")
        fingerprint = match.group(1).decode()
        if subkey is not None:
            self.run(
                *clock,
                "--quick-add-key",
                fingerprint,
                subkey,
                "encr",
                expire,
                passphrase=passphrase,
            )
        return fingerprint

    def export(
        self,
        label: str,
        email: str,
        fingerprint: str,
        algorithm: str,
        passphrase: str | None = None,
    ) -> PgpKey:
        return PgpKey(
            label=label,
            email=email,
            fingerprint=fingerprint,
            algorithm=algorithm,
            public=self.run("--armor", "--export", fingerprint),
            secret=self.run(
                "--armor", "--export-secret-keys", fingerprint, passphrase=passphrase or ""
            ),
            passphrase=passphrase,
        )

    def sign_detached(
        self, fingerprint: str, data: bytes, *, when: str | None = None, lifetime: str = "0"
    ) -> bytes:
        clock = ["--faked-system-time", when + "!"] if when else []
        return self.run(
            *clock,
            "--default-sig-expire",
            lifetime,
            "--armor",
            "--detach-sign",
            "--local-user",
            fingerprint,
            stdin=data,
        )

    def revoke(self, fingerprint: str) -> None:
        """Import the revocation certificate gpg wrote when it made the key (its armor
        lines are prefixed with ':' so that it cannot be imported by accident)."""
        certificate = (self.home / "openpgp-revocs.d" / f"{fingerprint}.rev").read_bytes()
        self.run("--import", stdin=re.sub(rb"(?m)^:-----", b"-----", certificate))

    def stop_agent(self) -> None:
        gpgconf = Path(self.gpg).with_name("gpgconf")
        tool = str(gpgconf) if gpgconf.exists() else "gpgconf"
        subprocess.run(
            [tool, "--homedir", str(self.home), "--kill", "all"],
            capture_output=True,
            timeout=TIMEOUT,
            check=False,
        )


def generate(gpg: str, directory: Path) -> KeySet:
    """Make every test key in ``directory`` (a scratch GnuPG home) and export them."""
    home = _Home(gpg, directory / "keygen-home")
    try:
        alice = home.generate("Alice <alice@example.org>", "future-default")
        bob = home.generate("Bob <bob@example.org>", "rsa3072", subkey="rsa3072")
        carol = home.generate("Carol <carol@example.org>", "rsa2048", subkey="rsa2048")
        dave = home.generate("Dave <dave@example.org>", "future-default", passphrase=PASSPHRASE)
        expired = home.generate(
            "Eve Expired <expired@example.org>",
            "future-default",
            expire="1y",
            when="20200101T000000",
        )
        expired_signature = home.sign_detached(expired, SIGNED_DATA, when="20200601T000000")
        revoked = home.generate("Rita Revoked <revoked@example.org>", "future-default")
        revoked_signature = home.sign_detached(revoked, SIGNED_DATA)
        home.revoke(revoked)
        old = home.generate("Olga Old <old@example.org>", "ed25519", when="20200101T000000")
        expired_signature_valid_key = home.sign_detached(
            old, SIGNED_DATA, when="20200601T000000", lifetime="1d"
        )
        sign_only = home.generate("Sid Signer <signonly@example.org>", "ed25519")
        twin_one = home.generate("Twin One <twin@example.org>", "future-default")
        twin_two = home.generate("Twin Two <twin@example.org>", "future-default")
        return KeySet(
            alice=home.export("alice", "alice@example.org", alice, "ed25519"),
            bob=home.export("bob", "bob@example.org", bob, "rsa3072"),
            carol=home.export("carol", "carol@example.org", carol, "rsa2048"),
            dave=home.export("dave", "dave@example.org", dave, "ed25519", PASSPHRASE),
            expired=home.export("expired", "expired@example.org", expired, "ed25519"),
            revoked=home.export("revoked", "revoked@example.org", revoked, "ed25519"),
            sign_only=home.export("sign-only", "signonly@example.org", sign_only, "ed25519"),
            twin_one=home.export("twin-one", "twin@example.org", twin_one, "ed25519"),
            twin_two=home.export("twin-two", "twin@example.org", twin_two, "ed25519"),
            expired_signature=expired_signature,
            revoked_signature=revoked_signature,
            expired_signature_valid_key=expired_signature_valid_key,
            old=home.export("old", "old@example.org", old, "ed25519"),
        )
    finally:
        home.stop_agent()


# --- shared across test directories -------------------------------------------------------------

_SHARED: dict[str, KeySet] = {}


def shared_keyset(gpg: str, directory: Callable[[], Path]) -> KeySet:
    """The key set for tests outside ``tests/pgp`` (the CLI and interop tests, which cannot
    see that directory's ``keyset`` fixture): made once per process, in ``directory()``."""
    if gpg not in _SHARED:
        _SHARED[gpg] = generate(gpg, directory())
    return _SHARED[gpg]


# --- the gpg command line: the reference tool, and the attacker's ---------------------------------


class GpgCli:
    """The gpg binary in its own throwaway home (``--homedir`` always; never ``~/.gnupg``),
    with status lines on stderr. It makes what a real sender or attacker would send, and
    checks what securemail sends."""

    def __init__(self, gpg: str, home: Path) -> None:
        self.gpg = gpg
        self.home = home
        home.mkdir(mode=0o700, parents=True)
        (home / "gpg-agent.conf").write_text("allow-loopback-pinentry\n")

    def run(
        self, *args: str, stdin: bytes = b"", check: bool = True
    ) -> subprocess.CompletedProcess[bytes]:
        done = subprocess.run(
            [
                self.gpg,
                "--homedir",
                str(self.home),
                "--batch",
                "--no-tty",
                "--trust-model",
                "always",
                "--pinentry-mode",
                "loopback",
                "--status-fd",
                "2",
                *args,
            ],
            input=stdin,
            capture_output=True,
            timeout=TIMEOUT,
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"gpg {args}: {done.stderr.decode('utf-8', 'replace')}")
        return done

    def add(self, *keys: bytes) -> GpgCli:
        """Import key material (armored or binary, public or secret)."""
        for key in keys:
            self.run("--import", stdin=key)
        return self

    def stop(self) -> None:
        """Stop the home's gpg-agent (the home itself is the test's temporary directory)."""
        gpgconf = Path(self.gpg).with_name("gpgconf")
        tool = str(gpgconf) if gpgconf.exists() else "gpgconf"
        subprocess.run(
            [tool, "--homedir", str(self.home), "--kill", "all"],
            capture_output=True,
            timeout=TIMEOUT,
            check=False,
        )


def status_keywords(done: subprocess.CompletedProcess[bytes]) -> list[str]:
    """The keywords of gpg's ``[GNUPG:]`` status lines (``--status-fd 2``)."""
    return [
        line.split()[1]
        for line in done.stderr.decode("latin-1").splitlines()
        if line.startswith("[GNUPG:] ") and len(line.split()) > 1
    ]


def status_line(done: subprocess.CompletedProcess[bytes], keyword: str) -> list[str]:
    """The arguments of gpg's first ``keyword`` status line."""
    for line in done.stderr.decode("latin-1").splitlines():
        words = line.split()
        if words[:2] == ["[GNUPG:]", keyword]:
            return words[2:]
    raise AssertionError(f"no {keyword} status line:\n{done.stderr.decode('latin-1')}")


# --- ASCII armor (RFC 4880 6), written here so that tests can change the bytes inside ------------


def _crc24(data: bytes) -> int:
    crc = 0xB704CE
    for byte in data:
        crc ^= byte << 16
        for _ in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= 0x1864CFB
    return crc & 0xFFFFFF


def armor(data: bytes, kind: str = "MESSAGE") -> bytes:
    """``data`` in ASCII armor with a correct CRC-24, CRLF line ends."""
    encoded = base64.b64encode(data)
    lines = [encoded[i : i + 64] for i in range(0, len(encoded), 64)]
    checksum = base64.b64encode(_crc24(data).to_bytes(3, "big"))
    return b"\r\n".join(
        [
            f"-----BEGIN PGP {kind}-----".encode(),
            b"",
            *lines,
            b"=" + checksum,
            f"-----END PGP {kind}-----".encode(),
            b"",
        ]
    )


def dearmor(text: bytes) -> bytes:
    """The binary OpenPGP data of the first armored block in ``text``."""
    lines = [line.strip() for line in text.splitlines()]
    begin = next(i for i, line in enumerate(lines) if line.startswith(b"-----BEGIN PGP "))
    end = next(i for i, line in enumerate(lines) if line.startswith(b"-----END PGP "))
    blank = lines.index(b"", begin)  # after the armor headers (Version:, Comment:, ...)
    body = [line for line in lines[blank + 1 : end] if not line.startswith(b"=")]
    return base64.b64decode(b"".join(body), validate=True)


# --- RFC 3156 structures, built and taken apart without securemail's MIME code ------------------

HEADERS = (
    ("From", "Alice <alice@example.org>"),
    ("To", "bob@example.org"),
    ("Subject", "assembled by the test"),
)
_BOUNDARY = "----test-boundary-3156"


def _fields(headers: Sequence[tuple[str, str]]) -> bytes:
    return b"".join(f"{name}: {value}\r\n".encode() for name, value in headers)


def pgp_mime_encrypted(armored: bytes, headers: Sequence[tuple[str, str]] = HEADERS) -> bytes:
    """multipart/encrypted (RFC 3156 4) around an armored OpenPGP message, as a peer sends it."""
    content_type = (
        f'multipart/encrypted; protocol="application/pgp-encrypted"; boundary="{_BOUNDARY}"'
    )
    delimiter = b"--" + _BOUNDARY.encode()
    return (
        _fields([*headers, ("MIME-Version", "1.0"), ("Content-Type", content_type)])
        + b"\r\nThis is an OpenPGP/MIME encrypted message.\r\n"
        + delimiter
        + b"\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n"
        + delimiter
        + b'\r\nContent-Type: application/octet-stream; name="encrypted.asc"\r\n\r\n'
        + armored.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n").rstrip(b"\r\n")
        + b"\r\n\r\n"
        + delimiter
        + b"--\r\n"
    )


def pgp_mime_signed(
    entity: bytes,
    signature: bytes,
    *,
    micalg: str,
    headers: Sequence[tuple[str, str]] = HEADERS,
) -> bytes:
    """multipart/signed (RFC 3156 5) with ``entity`` as the first part, byte for byte."""
    assert _BOUNDARY.encode() not in entity
    content_type = (
        f'multipart/signed; micalg={micalg}; protocol="application/pgp-signature"; '
        f'boundary="{_BOUNDARY}"'
    )
    delimiter = b"--" + _BOUNDARY.encode()
    return (
        _fields([*headers, ("MIME-Version", "1.0"), ("Content-Type", content_type)])
        + b"\r\n"
        + delimiter
        + b"\r\n"
        + entity
        + b"\r\n"
        + delimiter
        + b"\r\nContent-Type: application/pgp-signature\r\n\r\n"
        + signature.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        + b"\r\n"
        + delimiter
        + b"--\r\n"
    )


def header_of(message: bytes) -> EmailMessage:
    """The top-level header fields of ``message``, parsed by the standard library."""
    head = message.replace(b"\r\n", b"\n").partition(b"\n\n")[0] + b"\n\n"
    parsed = email.parser.BytesHeaderParser(policy=email.policy.default).parsebytes(head)
    assert isinstance(parsed, EmailMessage)
    return parsed


def multipart_parts(message: bytes) -> list[bytes]:
    """The parts of a multipart ``message`` (or entity) exactly as transmitted; RFC 2046
    5.1.1: the CRLF before a delimiter belongs to the delimiter, not to the part."""
    boundary = header_of(message).get_param("boundary")
    assert isinstance(boundary, str), "no boundary"
    body = message.partition(b"\r\n\r\n")[2]
    pieces = (b"\r\n" + body).split(b"\r\n--" + boundary.encode())
    assert pieces[-1].startswith(b"--"), "no closing delimiter"
    return [piece[piece.index(b"\r\n") + 2 :] for piece in pieces[1:-1]]


def part_body(part: bytes) -> bytes:
    return part.partition(b"\r\n\r\n")[2]
