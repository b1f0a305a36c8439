"""OpenPGP test keys, generated at test time with the gpg binary (never with securemail).

Key generation is slow, so :func:`generate` makes the whole set once per session in a
scratch GnuPG home and exports it as armored bytes; tests import what they need into their
own homes. Besides ordinary keys (Curve25519, RSA-3072, RSA-2048, one with a passphrase)
the set has the awkward ones the engine must refuse: an expired key (made with gpg's
``--faked-system-time`` in 2020, valid for one year), a revoked key (gpg's own revocation
certificate imported), a sign-only key, and two keys sharing one address. Signatures made
by the expired and revoked keys *before* they became unusable are kept too, and one that
expired itself (a one-day signature lifetime in 2020) by a key that is still valid.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
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
