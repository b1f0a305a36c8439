"""Helpers for the interop tests: run openssl and gpgsm in a temporary directory, set up a
throwaway GnuPG home, and wrap the tools' raw CMS output in the MIME structures securemail
reads (and take securemail's MIME structures apart for the tools).

The MIME handling here is deliberately independent of :mod:`securemail.wire`: the tests
should not check securemail's output with securemail's own parser.
"""

from __future__ import annotations

import base64
import dataclasses
import email.parser
import email.policy
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Sequence
from email.message import EmailMessage
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from pki import Issued, to_pkcs12

from securemail import payload
from securemail.compose import MessageBuilder
from securemail.keys import Identity
from securemail.policy import Policy

TIMEOUT = 60
CRLF = b"\r\n"
# Tools must talk English: some tests assert on their error messages.
_LOCALE = {"LC_ALL": "C", "LANG": "C", "LANGUAGE": "C"}


# --- running tools ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What a tool run produced."""

    argv: tuple[str, ...]
    returncode: int
    stdout: bytes
    stderr: bytes

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def errors(self) -> str:
        return self.stderr.decode("utf-8", "replace")

    def describe(self) -> str:
        return f"$ {' '.join(self.argv)}\nexit status {self.returncode}\n{self.errors}"

    def status(self, keyword: str) -> list[str]:
        """GnuPG status lines (``--status-fd 2``) starting with ``keyword``."""
        prefix = f"[GNUPG:] {keyword}"
        return [
            line.removeprefix("[GNUPG:] ")
            for line in self.errors.splitlines()
            if line == prefix or line.startswith(prefix + " ")
        ]


def run(
    argv: Sequence[str | Path],
    *,
    cwd: Path,
    stdin: bytes = b"",
    env: dict[str, str] | None = None,
) -> Outcome:
    command = tuple(str(a) for a in argv)
    completed = subprocess.run(
        command,
        cwd=cwd,
        input=stdin,
        capture_output=True,
        env={**os.environ, **_LOCALE, **(env or {})},
        timeout=TIMEOUT,
        check=False,
    )
    return Outcome(command, completed.returncode, completed.stdout, completed.stderr)


def expect_ok(outcome: Outcome) -> Outcome:
    if not outcome.ok:
        raise AssertionError("the tool failed:\n" + outcome.describe())
    return outcome


def expect_failure(outcome: Outcome, *messages: str) -> Outcome:
    """The run failed and its diagnostics contain every one of ``messages``."""
    if outcome.ok:
        raise AssertionError("the tool unexpectedly succeeded:\n" + outcome.describe())
    missing = [m for m in messages if m not in outcome.errors]
    if missing:
        raise AssertionError(f"expected {missing!r} in the diagnostics:\n" + outcome.describe())
    return outcome


def require_binary(name: str, *, near: str | None = None) -> str:
    """A tool's path, preferably next to ``near``; fail (never skip) if it is missing."""
    if near is not None:
        sibling = Path(near).with_name(name)
        if sibling.is_file():
            return str(sibling)
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"REQUIRED TOOL MISSING: {name} is not on PATH", pytrace=False)
    return path


# --- files ---------------------------------------------------------------------------------------


def pem(*certificates: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)


class Workspace:
    """A directory the tools work in; files are named, written once and read back."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, name: str, data: bytes) -> Path:
        target = self.path / name
        target.write_bytes(data)
        return target

    def read(self, name: str) -> bytes:
        return (self.path / name).read_bytes()

    def certificates(self, name: str, *certificates: x509.Certificate) -> Path:
        return self.write(name, pem(*certificates))

    def identity(self, name: str, issued: Issued) -> tuple[Path, Path]:
        """``name.pem`` (certificate) and ``name.key`` (unencrypted PKCS#8)."""
        return self.certificates(f"{name}.pem", issued.cert), self.write(
            f"{name}.key", issued.key_pem
        )


def identity(issued: Issued, *chain: Issued) -> Identity:
    return Identity.create(issued.key, issued.cert, chain=[c.cert for c in chain])  # type: ignore[arg-type]


TEXT = (
    "Quarterly figures attached.\n"
    "From the desk of the CFO: déjà vu, 12 € more than planned.\n"
    "A line with trailing spaces   \n"
    ".\n"
    "-- \nsecuremail interop\n"
)
ATTACHMENT = bytes(range(256)) * 4


def make_message(sender: str, *recipients: str, subject: str = "Interop: résumé") -> bytes:
    """A multipart message (QP text with non-ASCII, a binary attachment), serialized once
    so that every later step sees the same bytes (boundaries included)."""
    built = (
        MessageBuilder()
        .from_addr(sender)
        .to(*recipients)
        .subject(subject)
        .text(TEXT)
        .attach(ATTACHMENT, filename="figures.bin", content_type="application/octet-stream")
        .build()
    )
    return bytes(built.as_bytes(policy=email.policy.SMTP))


def canonical_entity(message: bytes, policy: Policy, *, encrypting: bool) -> bytes:
    """The exact MIME entity securemail signs or encrypts for ``message`` under ``policy``:
    what a peer must get back out of the CMS layer."""
    return payload.prepare(message, policy, encrypting=encrypting).entity


# --- openssl -------------------------------------------------------------------------------------


class OpenSSL:
    """``openssl`` run in a workspace; file arguments are names inside it."""

    def __init__(self, binary: str, workspace: Workspace) -> None:
        self.binary = binary
        self.workspace = workspace

    def run(self, *args: str | Path, stdin: bytes = b"") -> Outcome:
        return run([self.binary, *args], cwd=self.workspace.path, stdin=stdin)

    def __call__(self, *args: str | Path, stdin: bytes = b"") -> bytes:
        """Run, insist on success, return standard output."""
        return expect_ok(self.run(*args, stdin=stdin)).stdout

    def cms_print(self, *args: str | Path) -> str:
        """``openssl cms -cmsout -print``: the structure, with algorithm names, as text."""
        return self("cms", "-cmsout", "-print", "-noout", *args).decode("utf-8", "replace")


# --- gpgsm ---------------------------------------------------------------------------------------


class Gpgsm:
    """gpgsm with a throwaway GnuPG home: trusts one root, never asks dirmngr or pinentry.

    gpgsm 2.2 has no ``--passphrase`` option (only ``--passphrase-fd``; an abbreviated
    ``--passphrase`` is taken for it and reads the passphrase from the *named fd*), so the
    passphrase goes in on stdin with ``--pinentry-mode loopback --passphrase-fd 0``; data
    files are always given by name.
    """

    PASSPHRASE = b"interop-passphrase"

    def __init__(self, binary: str, home: Path, workspace: Workspace) -> None:
        self.binary = binary
        self.home = home
        self.workspace = workspace
        self.gpgconf = require_binary("gpgconf", near=binary)

    @classmethod
    def create(cls, binary: str, base: Path, *, trusted_root: x509.Certificate) -> Gpgsm:
        home = base / "gnupg"
        home.mkdir(mode=0o700)
        (home / "gpgsm.conf").write_text(
            "disable-dirmngr\ndisable-crl-checks\ndisable-policy-checks\n"
        )
        (home / "gpg-agent.conf").write_text("allow-loopback-pinentry\n")
        fingerprint = trusted_root.fingerprint(hashes.SHA1()).hex(":").upper()  # noqa: S303
        # "S": the root is trusted for S/MIME (the other flag, P, is for PGP).
        (home / "trustlist.txt").write_text(f"{fingerprint} S\n")
        workspace = Workspace(base / "work")
        workspace.path.mkdir()
        gpgsm = cls(binary, home, workspace)
        expect_ok(gpgsm.run("--import", workspace.certificates("root.pem", trusted_root)))
        return gpgsm

    def run(self, *args: str | Path, passphrase: bool = False) -> Outcome:
        options: list[str | Path] = ["--batch", "--status-fd", "2"]
        stdin = b""
        if passphrase:
            options += ["--pinentry-mode", "loopback", "--passphrase-fd", "0"]
            stdin = self.PASSPHRASE + b"\n"
        return run(
            [self.binary, *options, *args],
            cwd=self.workspace.path,
            stdin=stdin,
            env={"GNUPGHOME": str(self.home)},
        )

    def import_certificates(self, *certificates: x509.Certificate) -> None:
        for certificate in certificates:
            path = self.workspace.certificates("import.pem", certificate)
            expect_ok(self.run("--import", path))

    def import_pkcs12(self, data: bytes) -> Outcome:
        return self.run("--import", self.workspace.write("import.p12", data), passphrase=True)

    def import_fresh_pkcs12(self, make: Callable[[], bytes]) -> Outcome:
        """Import the PKCS#12 file ``make()`` returns, made again if gpgsm cannot parse it.

        gpgsm 2.2.40 fails to decrypt about one PKCS#12 file in 70 that it reads correctly
        otherwise ("data error at shrouded_key_bag.decrypted-text"): the failure follows the
        file's random salt, not the key (measured: 3 of 200 serializations of the same two
        keys). So a file it cannot parse is made again, with a new salt, a few times; what
        the tests check starts after that."""
        for _ in range(4):
            outcome = self.import_pkcs12(make())
            if outcome.ok or b"error parsing or decrypting the PKCS#12" not in outcome.stderr:
                break
        return outcome

    def import_identity(self, issued: Issued, *chain: x509.Certificate) -> None:
        """Key and certificate, via PKCS#12 protected the way gpgsm 2.2 can read."""
        expect_ok(
            self.import_fresh_pkcs12(
                lambda: to_pkcs12(issued, self.PASSPHRASE, chain=chain, legacy=True)
            )
        )

    def has_secret_key(self, email_address: str) -> bool:
        outcome = self.run("--with-colons", "--list-secret-keys", email_address)
        # gpgsm lists a certificate with its secret key as a "crs" record.
        return outcome.ok and b"\ncrs:" in b"\n" + outcome.stdout

    def kill_agent(self) -> None:
        run(
            [self.gpgconf, "--kill", "all"],
            cwd=self.workspace.path,
            env={"GNUPGHOME": str(self.home)},
        )


# --- MIME wrapping and unwrapping ------------------------------------------------------------


def _fields(headers: Sequence[tuple[str, str]]) -> bytes:
    return b"".join(f"{name}: {value}".encode() + CRLF for name, value in headers)


def base64_lines(data: bytes) -> bytes:
    encoded = base64.b64encode(data)
    return b"".join(encoded[i : i + 76] + CRLF for i in range(0, len(encoded), 76))


def pkcs7_mime(der: bytes, *, smime_type: str, headers: Sequence[tuple[str, str]] = ()) -> bytes:
    """A message whose body is ``der`` as application/pkcs7-mime (base64)."""
    return pkcs7_mime_base64(base64_lines(der), smime_type=smime_type, headers=headers)


def pkcs7_mime_base64(
    body: bytes, *, smime_type: str, headers: Sequence[tuple[str, str]] = ()
) -> bytes:
    """An application/pkcs7-mime message around an already base64-encoded ``body``."""
    return (
        _fields(headers)
        + b"MIME-Version: 1.0\r\n"
        + b"Content-Type: application/pkcs7-mime; smime-type="
        + smime_type.encode()
        + b'; name="smime.p7m"\r\n'
        + b"Content-Transfer-Encoding: base64\r\n"
        + b'Content-Disposition: attachment; filename="smime.p7m"\r\n'
        + CRLF
        + body
    )


def multipart_signed(
    entity: bytes, signature: bytes, *, micalg: str, headers: Sequence[tuple[str, str]] = ()
) -> bytes:
    """multipart/signed (RFC 8551 3.5.3) with ``entity`` as the first part, byte for byte."""
    boundary = "----interop-boundary-7c1e0f"
    assert boundary.encode() not in entity
    content_type = (
        f'multipart/signed; protocol="application/pkcs7-signature"; micalg={micalg}; '
        f'boundary="{boundary}"'
    )
    delimiter = b"--" + boundary.encode()
    return (
        _fields([*headers, ("MIME-Version", "1.0"), ("Content-Type", content_type)])
        + CRLF
        + delimiter
        + CRLF
        + entity
        + CRLF
        + delimiter
        + CRLF
        + b'Content-Type: application/pkcs7-signature; name="smime.p7s"\r\n'
        + b"Content-Transfer-Encoding: base64\r\n\r\n"
        + base64_lines(signature)
        + CRLF
        + delimiter
        + b"--"
        + CRLF
    )


def _split_head(data: bytes) -> tuple[bytes, bytes]:
    head, separator, body = data.partition(CRLF + CRLF)
    assert separator, "no blank line after the header block"
    return head + CRLF, body


def _header(data: bytes) -> EmailMessage:
    parser = email.parser.BytesHeaderParser(policy=email.policy.default)
    return parser.parsebytes(_split_head(data)[0])


def content_type(data: bytes) -> str:
    return _header(data).get_content_type()


def content_param(data: bytes, name: str) -> str | None:
    """A parameter of the top-level Content-Type field."""
    value = _header(data).get_param(name)
    return None if value is None else str(value)


def plain_text(message: bytes) -> str:
    """The text/plain body of ``message``, decoded, with LF line ends."""
    parsed = email.parser.BytesParser(policy=email.policy.default).parsebytes(message)
    body = parsed.get_body(("plain",))
    assert body is not None, "no text/plain part"
    return str(body.get_content()).replace("\r\n", "\n")


def body_der(message: bytes) -> bytes:
    """The DER inside an application/pkcs7-mime message (base64 body)."""
    header = _header(message)
    assert header.get_content_type() in ("application/pkcs7-mime", "application/x-pkcs7-mime")
    assert str(header["Content-Transfer-Encoding"]).lower() == "base64"
    return base64.b64decode(b"".join(_split_head(message)[1].split()), validate=True)


def split_multipart_signed(message: bytes) -> tuple[bytes, bytes]:
    """(first part exactly as transmitted, signature DER) of a multipart/signed message.

    RFC 2046 5.1.1: the CRLF before a delimiter belongs to the delimiter, not to the part.
    """
    header = _header(message)
    assert header.get_content_type() == "multipart/signed"
    boundary = header.get_param("boundary")
    assert isinstance(boundary, str)
    body = _split_head(message)[1]
    pieces = (CRLF + body).split(CRLF + b"--" + boundary.encode())
    assert len(pieces) == 4 and pieces[3].startswith(b"--"), "expected exactly two parts"
    first, second = (p[p.index(CRLF) + 2 :] for p in pieces[1:3])
    return first, body_der_of_part(second)


def body_der_of_part(part: bytes) -> bytes:
    head, body = _split_head(part)
    assert b"base64" in head.lower()
    return base64.b64decode(b"".join(body.split()), validate=True)


def dearmor(text: bytes) -> bytes:
    """The DER inside PEM-style armor (``-----BEGIN ... MESSAGE-----``, as gpgsm writes)."""
    lines = [line.strip() for line in text.splitlines()]
    begin = next(i for i, line in enumerate(lines) if line.startswith(b"-----BEGIN "))
    end = next(i for i, line in enumerate(lines) if line.startswith(b"-----END "))
    return base64.b64decode(b"".join(lines[begin + 1 : end]), validate=True)


def crlf(data: bytes) -> bytes:
    """Line ends made CRLF (openssl writes its S/MIME headers with bare LF)."""
    return re.sub(rb"\r?\n", b"\r\n", data)


def tamper(data: bytes, old: bytes, new: bytes) -> bytes:
    """``data`` with the one occurrence of ``old`` replaced by ``new`` (same length)."""
    assert len(old) == len(new) and old != new
    assert data.count(old) == 1, f"{old!r} occurs {data.count(old)} times"
    return data.replace(old, new)
