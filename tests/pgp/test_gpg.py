"""The GnuPG engine against the real gpg binary: round trips, key selection and refusals,
passphrases, decryption that cannot leak (no MDC, flipped bytes, compression bombs, wrong
keys), verification outcomes, home hygiene, and a few messages from the shared corpus.

Messages the engine must refuse are made with the gpg command line, so that they are what
a real sender (or attacker with gpg) produces. Where gpg itself releases plaintext that the
engine withholds, the test shows both.
"""

from __future__ import annotations

import datetime as dt
import re
import stat
import subprocess
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from pgp.keys import PASSPHRASE, SIGNED_DATA, KeySet, PgpKey
from securemail.errors import (
    DecryptionError,
    InputError,
    IntegrityError,
    KeyLoadError,
    NoSecretKeyError,
    NotARecipientError,
    NotSignedError,
    RecipientError,
    SignatureError,
    SignatureInvalidError,
    SigningKeyError,
    SizeLimitExceeded,
    ToolError,
    ToolNotFoundError,
    UnsupportedAlgorithmError,
    WrongPasswordError,
)
from securemail.pgp.gpg import GnuPG, KeyInfo, Verdict
from securemail.policy import DigestAlgorithm

MESSAGE = b"Content-Type: text/plain; charset=utf-8\r\n\r\nMeet me at the usual place.\r\n"
TIMEOUT = 120
MiB = 1024 * 1024

MakeEngine = Callable[..., GnuPG]


# --- fixtures and helpers ---------------------------------------------------------------------


@pytest.fixture
def make_engine(gpg_bin: str) -> Iterator[MakeEngine]:
    """Engines with the given secret keys (and public-only keys), closed after the test."""
    engines: list[GnuPG] = []

    def make(*secret: PgpKey, public: Sequence[PgpKey] = (), **options: Any) -> GnuPG:
        engine = GnuPG(gpg=gpg_bin, **options)
        engines.append(engine)
        for key in secret:
            engine.import_keys(key.secret)
        for key in public:
            engine.import_keys(key.public)
        return engine

    yield make
    for engine in engines:
        engine.close()


@pytest.fixture(scope="module")
def everyone(gpg_bin: str, keyset: KeySet) -> Iterator[GnuPG]:
    """One engine with every test key; secret parts of all but the twins."""
    with GnuPG(gpg=gpg_bin) as engine:
        for key in (
            keyset.alice,
            keyset.bob,
            keyset.carol,
            keyset.dave,
            keyset.expired,
            keyset.revoked,
            keyset.sign_only,
            keyset.old,
        ):
            engine.import_keys(key.secret)
        for key in (keyset.twin_one, keyset.twin_two):
            engine.import_keys(key.public)
        yield engine


class RawGpg:
    """The gpg command line in its own scratch home: the reference tool and the attacker."""

    def __init__(self, gpg: str, home: Path) -> None:
        self.gpg = gpg
        self.home = home
        home.mkdir(mode=0o700)
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

    def add(self, *keys: bytes) -> RawGpg:
        for key in keys:
            self.run("--import", stdin=key)
        return self

    def stop(self) -> None:
        gpgconf = Path(self.gpg).with_name("gpgconf")
        tool = str(gpgconf) if gpgconf.exists() else "gpgconf"
        subprocess.run(
            [tool, "--homedir", str(self.home), "--kill", "all"],
            capture_output=True,
            timeout=TIMEOUT,
            check=False,
        )


@pytest.fixture
def raw_gpg(gpg_bin: str, tmp_path: Path) -> Iterator[RawGpg]:
    tool = RawGpg(gpg_bin, tmp_path / "raw-gnupg")
    yield tool
    tool.stop()


def status_keywords(done: subprocess.CompletedProcess[bytes]) -> list[str]:
    return [
        line.split()[1]
        for line in done.stderr.decode("latin-1").splitlines()
        if line.startswith("[GNUPG:] ") and len(line.split()) > 1
    ]


def flip_middle_byte(data: bytes) -> bytes:
    damaged = bytearray(data)
    damaged[len(damaged) // 2] ^= 0x01
    return bytes(damaged)


def encryption_subkey_id(engine: GnuPG, key: PgpKey) -> str:
    (info,) = engine.find_keys(key.fingerprint)
    (subkey,) = info.encryption_keys()
    return subkey.key_id


# --- keys -------------------------------------------------------------------------------------


def test_key_information(everyone: GnuPG, keyset: KeySet) -> None:
    (alice,) = everyone.find_keys(keyset.alice.fingerprint)
    assert alice.algorithm == "ed25519"
    assert alice.emails == ("alice@example.org",)
    assert alice.has_secret
    assert alice.primary.can_sign and not alice.primary.can_encrypt
    (encryption,) = alice.encryption_keys()
    assert encryption.algorithm == "cv25519" and encryption.secret
    assert alice.problem_for_encryption() is None and alice.problem_for_signing() is None

    (bob,) = everyone.find_keys(keyset.bob.fingerprint)
    assert bob.algorithm == "rsa3072"
    assert [k.algorithm for k in bob.encryption_keys()] == ["rsa3072"]
    (carol,) = everyone.find_keys("carol@example.org")
    assert carol.algorithm == "rsa2048"

    (expired,) = everyone.find_keys(keyset.expired.fingerprint)
    assert expired.expired and expired.expires is not None
    assert expired.expires < dt.datetime.now(dt.UTC)
    assert expired.created.year == 2020
    (revoked,) = everyone.find_keys(keyset.revoked.fingerprint)
    assert revoked.revoked
    (sign_only,) = everyone.find_keys(keyset.sign_only.fingerprint)
    assert sign_only.encryption_keys() == () and sign_only.signing_keys()
    (twin,) = everyone.find_keys(keyset.twin_one.fingerprint)
    assert not twin.has_secret


def test_selection_by_fingerprint_and_address(everyone: GnuPG, keyset: KeySet) -> None:
    fingerprint = keyset.alice.fingerprint
    spaced = " ".join(fingerprint[i : i + 4] for i in range(0, 40, 4))
    for selector in (fingerprint, fingerprint.lower(), spaced, "0x" + fingerprint):
        assert [k.fingerprint for k in everyone.find_keys(selector)] == [fingerprint]
    # Exact addr-spec, compared without case (as From is compared with a signer's user IDs).
    for selector in (
        "alice@example.org",
        "<alice@example.org>",
        "alice@EXAMPLE.org",
        "Alice@example.org",
    ):
        assert [k.fingerprint for k in everyone.find_keys(selector)] == [fingerprint]
    assert everyone.find_keys("lice@example.org") == ()  # gpg itself would match a substring
    assert len(everyone.find_keys("twin@example.org")) == 2


@pytest.mark.parametrize("length", [8, 16])
def test_key_ids_are_refused(everyone: GnuPG, keyset: KeySet, length: int) -> None:
    with pytest.raises(InputError, match="full fingerprint"):
        everyone.find_keys(keyset.alice.fingerprint[-length:])
    with pytest.raises(InputError, match="full fingerprint"):
        everyone.recipient_key("0x" + keyset.alice.fingerprint[-length:])


def test_selector_must_be_fingerprint_or_address(everyone: GnuPG) -> None:
    with pytest.raises(InputError, match="neither"):
        everyone.find_keys("Alice Lovelace")


def test_import_refuses_what_gpg_cannot_read(
    make_engine: MakeEngine, interop_dir: Path, tmp_path: Path
) -> None:
    engine = make_engine()
    with pytest.raises(KeyLoadError, match="<bytes>"):
        engine.import_keys(b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nnot a key\n")
    # RFC 9580 v6 keys are unknown to GnuPG 2.2.
    v6 = interop_dir / "thunderbird-openpgp" / "keys" / "pgp-v6-pub.asc"
    with pytest.raises(KeyLoadError) as caught:
        engine.import_keys(v6)
    assert caught.value.source == str(v6)
    with pytest.raises(KeyLoadError, match=r"missing\.asc"):
        engine.import_keys(tmp_path / "missing.asc")
    assert engine.list_keys() == ()


def test_import_from_file_returns_the_keys(
    make_engine: MakeEngine, keyset: KeySet, tmp_path: Path
) -> None:
    path = tmp_path / "bob.asc"
    path.write_bytes(keyset.bob.public + keyset.carol.public)
    imported = make_engine().import_keys(path)
    assert [k.fingerprint for k in imported] == [keyset.bob.fingerprint, keyset.carol.fingerprint]
    assert not any(k.has_secret for k in imported)


# --- encryption round trips -------------------------------------------------------------------


@pytest.mark.parametrize("who", ["alice", "bob"])
def test_encrypt_decrypt_round_trip(make_engine: MakeEngine, keyset: KeySet, who: str) -> None:
    key: PgpKey = getattr(keyset, who)
    sender = make_engine(public=[key])
    encrypted = sender.encrypt(MESSAGE, [key.email])
    assert encrypted.data.startswith(b"-----BEGIN PGP MESSAGE-----")
    assert b"Version:" not in encrypted.data and b"Comment:" not in encrypted.data
    assert encrypted.cipher == "aes256"
    assert [k.fingerprint for k in encrypted.recipients] == [key.fingerprint]
    assert encrypted.signature is None

    receiver = make_engine(key)
    decrypted = receiver.decrypt(encrypted.data)
    assert decrypted.data == MESSAGE
    assert decrypted.integrity == "mdc"
    assert decrypted.primary == key.fingerprint
    assert decrypted.recipients == (encryption_subkey_id(receiver, key),)
    assert decrypted.signature is None
    assert str(len(MESSAGE)) in repr(decrypted) and b"usual place" not in repr(decrypted).encode()


def test_three_recipients(make_engine: MakeEngine, keyset: KeySet) -> None:
    trio = [keyset.alice, keyset.bob, keyset.carol]
    sender = make_engine(public=trio)
    alice_info = sender.recipient_key("alice@example.org")
    encrypted = sender.encrypt(
        MESSAGE, [alice_info, keyset.bob.fingerprint, "carol@example.org", "alice@example.org"]
    )
    assert [k.fingerprint for k in encrypted.recipients] == [k.fingerprint for k in trio]
    for key in trio:
        decrypted = make_engine(key).decrypt(encrypted.data)
        assert decrypted.data == MESSAGE
        assert len(decrypted.recipients) == 3
        assert decrypted.primary == key.fingerprint


def test_hidden_recipients(make_engine: MakeEngine, keyset: KeySet) -> None:
    sender = make_engine(public=[keyset.alice, keyset.bob])
    encrypted = sender.encrypt(
        MESSAGE, ["alice@example.org", "bob@example.org"], hide_recipients=True
    )
    decrypted = make_engine(keyset.bob).decrypt(encrypted.data)
    assert decrypted.data == MESSAGE
    assert decrypted.recipients == ("0000000000000000", "0000000000000000")


def test_gpg_decrypts_what_the_engine_encrypts(
    make_engine: MakeEngine, keyset: KeySet, raw_gpg: RawGpg
) -> None:
    encrypted = make_engine(public=[keyset.carol]).encrypt(MESSAGE, ["carol@example.org"])
    done = raw_gpg.add(keyset.carol.secret).run("--decrypt", stdin=encrypted.data)
    assert done.stdout == MESSAGE
    assert "GOODMDC" in status_keywords(done)


def test_binary_output(make_engine: MakeEngine, keyset: KeySet) -> None:
    encrypted = make_engine(public=[keyset.alice]).encrypt(
        MESSAGE, ["alice@example.org"], armor=False
    )
    assert not encrypted.data.startswith(b"-----")
    assert make_engine(keyset.alice).decrypt(encrypted.data).data == MESSAGE


# --- recipients the engine refuses --------------------------------------------------------------


@pytest.mark.parametrize(
    ("selector", "reason"),
    [
        ("expired@example.org", r"expired on 2020-12-3\d"),
        ("revoked@example.org", "is revoked"),
        ("signonly@example.org", "no encryption-capable"),
        ("nobody@example.org", "no key with this address"),
        ("twin@example.org", "ambiguous: 2 usable keys"),
        ("0123456789ABCDEF0123456789ABCDEF01234567", "no key with this fingerprint"),
    ],
)
def test_recipient_refused_with_its_name_and_reason(
    everyone: GnuPG, keyset: KeySet, selector: str, reason: str
) -> None:
    with pytest.raises(RecipientError) as caught:
        everyone.encrypt(MESSAGE, [keyset.alice.email, selector])
    assert caught.value.recipient == selector
    assert re.search(reason, caught.value.reason)
    assert str(caught.value).startswith(f"cannot encrypt to {selector}:")
    assert "INV_RECP" not in str(caught.value)
    with pytest.raises(RecipientError):
        everyone.recipient_key(selector)


def test_recipient_selected_by_fingerprint_is_named_by_it(everyone: GnuPG, keyset: KeySet) -> None:
    fingerprint = keyset.expired.fingerprint
    with pytest.raises(RecipientError) as caught:
        everyone.encrypt(MESSAGE, [fingerprint])
    assert caught.value.recipient == fingerprint
    assert "expired" in caught.value.reason


def test_ambiguous_address_resolved_by_fingerprint(everyone: GnuPG, keyset: KeySet) -> None:
    encrypted = everyone.encrypt(MESSAGE, [keyset.twin_two.fingerprint])
    assert [k.fingerprint for k in encrypted.recipients] == [keyset.twin_two.fingerprint]


def test_no_recipients(everyone: GnuPG) -> None:
    with pytest.raises(InputError):
        everyone.encrypt(MESSAGE, [])
    with pytest.raises(InputError):
        everyone.encrypt(MESSAGE, "alice@example.org")  # type: ignore[arg-type]


# --- signing ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("who", "digest"),
    [("alice", DigestAlgorithm.SHA256), ("bob", DigestAlgorithm.SHA512), ("carol", "sha384")],
)
def test_detached_signature(
    make_engine: MakeEngine, keyset: KeySet, raw_gpg: RawGpg, who: str, digest: str
) -> None:
    key: PgpKey = getattr(keyset, who)
    signer = make_engine(key)
    signature = signer.sign_detached(MESSAGE, key.email, digest=DigestAlgorithm(digest))
    assert signature.data.startswith(b"-----BEGIN PGP SIGNATURE-----")
    assert signature.hash_algorithm == DigestAlgorithm(digest).value
    assert signature.micalg == f"pgp-{DigestAlgorithm(digest).value}"
    assert signature.made.signer.fingerprint == key.fingerprint
    assert abs(signature.made.created - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=5)

    checked = make_engine(public=[key]).verify_detached(MESSAGE, signature.data)
    assert checked.verdict is Verdict.GOOD, checked.reason
    assert checked.fingerprint == key.fingerprint
    assert checked.emails == (key.email,)
    assert checked.micalg == signature.micalg
    assert checked.created == signature.made.created
    assert checked.data is None
    assert checked.raise_for_verdict() is checked

    sig_file = raw_gpg.home.parent / "part.sig"
    sig_file.write_bytes(signature.data)
    done = raw_gpg.add(key.public).run("--verify", str(sig_file), "-", stdin=MESSAGE)
    assert "GOODSIG" in status_keywords(done)


def test_sign_and_encrypt(make_engine: MakeEngine, keyset: KeySet) -> None:
    sender = make_engine(keyset.bob, public=[keyset.alice])
    encrypted = sender.encrypt(MESSAGE, ["alice@example.org"], sign_with="bob@example.org")
    assert encrypted.signature is not None
    assert encrypted.signature.signer.fingerprint == keyset.bob.fingerprint
    assert encrypted.signature.micalg == "pgp-sha256"

    decrypted = make_engine(keyset.alice, public=[keyset.bob]).decrypt(encrypted.data)
    assert decrypted.data == MESSAGE
    assert decrypted.signature is not None
    assert decrypted.signature.good, decrypted.signature.reason
    assert decrypted.signature.emails == ("bob@example.org",)

    # The signer's key unknown: the message still decrypts, the signature is not checked.
    unknown = make_engine(keyset.alice).decrypt(encrypted.data)
    assert unknown.data == MESSAGE
    assert unknown.signature is not None
    assert unknown.signature.verdict is Verdict.NOT_CHECKED
    assert "not in the GnuPG home" in unknown.signature.reason


@pytest.mark.parametrize(
    ("selector", "reason"),
    [
        ("expired@example.org", "expired"),
        ("revoked@example.org", "is revoked"),
        ("twin@example.org", "secret part"),
        ("nobody@example.org", "no key with this address"),
    ],
)
def test_signing_key_refused_with_its_name(everyone: GnuPG, selector: str, reason: str) -> None:
    with pytest.raises(SigningKeyError) as caught:
        everyone.sign_detached(MESSAGE, selector)
    assert caught.value.signer == selector
    assert reason in caught.value.reason
    assert str(caught.value).startswith(f"cannot sign with {selector}:")
    with pytest.raises(SigningKeyError):
        everyone.encrypt(MESSAGE, ["alice@example.org"], sign_with=selector)


# --- passphrases ------------------------------------------------------------------------------


def test_passphrases(make_engine: MakeEngine, keyset: KeySet) -> None:
    engine = make_engine(keyset.dave)
    encrypted = engine.encrypt(MESSAGE, ["dave@example.org"])
    with pytest.raises(WrongPasswordError, match=r"dave@example\.org"):
        engine.decrypt(encrypted.data, passphrase="wrong")
    with pytest.raises(WrongPasswordError):
        engine.decrypt(encrypted.data)
    assert engine.decrypt(encrypted.data, passphrase=PASSPHRASE).data == MESSAGE
    # The private home's agent caches nothing: a wrong passphrase stays wrong afterwards.
    with pytest.raises(WrongPasswordError):
        engine.decrypt(encrypted.data, passphrase="wrong")
    with pytest.raises(WrongPasswordError):
        engine.decrypt(encrypted.data)
    assert engine.decrypt(encrypted.data, passphrase=PASSPHRASE.encode()).data == MESSAGE

    with pytest.raises(WrongPasswordError, match=r"dave@example\.org"):
        engine.sign_detached(MESSAGE, "dave@example.org", passphrase="wrong")
    with pytest.raises(WrongPasswordError):
        engine.sign_detached(MESSAGE, "dave@example.org")
    signature = engine.sign_detached(MESSAGE, "dave@example.org", passphrase=PASSPHRASE)
    assert engine.verify_detached(MESSAGE, signature.data).good
    with pytest.raises(WrongPasswordError):
        engine.encrypt(MESSAGE, ["dave@example.org"], sign_with="dave@example.org")


@pytest.mark.parametrize("passphrase", ["line\nbreak", "carriage\rreturn", "nul\0", b"x\r\ny"])
def test_passphrase_with_line_break_refused_before_gpg_runs(
    gpg_bin: str, keyset: KeySet, tmp_path: Path, passphrase: str | bytes
) -> None:
    # A wrapper that records every gpg invocation, then runs the real gpg.
    calls = tmp_path / "calls.log"
    wrapper = tmp_path / "gpg"
    wrapper.write_text(f'#!/bin/sh\necho "$@" >> "{calls}"\nexec "{gpg_bin}" "$@"\n')
    wrapper.chmod(0o755)
    with GnuPG(gpg=wrapper) as engine:
        engine.import_keys(keyset.dave.secret)
        encrypted = engine.encrypt(MESSAGE, ["dave@example.org"])
        before = calls.read_text().count("\n")
        with pytest.raises(InputError, match="CVE-2019-6690"):
            engine.decrypt(encrypted.data, passphrase=passphrase)
        with pytest.raises(InputError, match="CVE-2019-6690"):
            engine.sign_detached(MESSAGE, "dave@example.org", passphrase=passphrase)
        with pytest.raises(InputError, match="CVE-2019-6690"):
            engine.encrypt(MESSAGE, ["dave@example.org"], passphrase=passphrase)
        with pytest.raises(InputError, match="CVE-2019-6690"):
            engine.decrypt_symmetric(encrypted.data, passphrase)
        assert calls.read_text().count("\n") == before


# --- decryption that cannot leak ----------------------------------------------------------------


@pytest.mark.parametrize("cipher", ["AES256", "3DES"])
def test_message_without_mdc_is_refused(
    make_engine: MakeEngine, keyset: KeySet, raw_gpg: RawGpg, cipher: str
) -> None:
    # gpg 2.2 ignores --disable-mdc; --rfc2440 still writes a SED packet without MDC.
    raw_gpg.add(keyset.bob.secret)
    made = raw_gpg.run(
        "--rfc2440",
        "--cipher-algo",
        cipher,
        "-r",
        keyset.bob.fingerprint,
        "--encrypt",
        stdin=MESSAGE,
    )
    # gpg itself writes the plaintext to stdout before it refuses the message.
    direct = raw_gpg.run("--decrypt", stdin=made.stdout, check=False)
    assert direct.returncode != 0 and direct.stdout == MESSAGE
    assert "DECRYPTION_FAILED" in status_keywords(direct)

    with pytest.raises(IntegrityError, match="not integrity-protected") as caught:
        make_engine(keyset.bob).decrypt(made.stdout)
    assert b"usual place" not in str(caught.value).encode()


def test_flipped_byte_is_refused_without_plaintext(
    make_engine: MakeEngine, keyset: KeySet, raw_gpg: RawGpg
) -> None:
    engine = make_engine(keyset.alice)
    body = MESSAGE + b"x" * 4000
    encrypted = engine.encrypt(body, ["alice@example.org"], armor=False)
    damaged = flip_middle_byte(encrypted.data)
    # gpg writes the (garbled) plaintext first and reports BADMDC only afterwards.
    direct = raw_gpg.add(keyset.alice.secret).run("--decrypt", stdin=damaged, check=False)
    assert len(direct.stdout) > 3000
    assert "BADMDC" in status_keywords(direct)

    with pytest.raises(IntegrityError, match="modified") as caught:
        engine.decrypt(damaged)
    assert not hasattr(caught.value, "data")
    assert engine.decrypt(encrypted.data).data == body


def test_flipped_byte_in_compressed_message(make_engine: MakeEngine, keyset: KeySet) -> None:
    # Here zlib fails first: gpg stops with no failure status at all, only exit code 2.
    engine = make_engine(keyset.alice)
    encrypted = engine.encrypt(MESSAGE * 200, ["alice@example.org"], armor=False, compress=True)
    with pytest.raises(DecryptionError):
        engine.decrypt(flip_middle_byte(encrypted.data))


def test_compression_bomb(make_engine: MakeEngine, keyset: KeySet, raw_gpg: RawGpg) -> None:
    zeros = bytes(64 * MiB)
    bomb = (
        raw_gpg.add(keyset.alice.public)
        .run(
            "--compress-algo",
            "bzip2",
            "-z",
            "9",
            "-r",
            keyset.alice.fingerprint,
            "--encrypt",
            stdin=zeros,
        )
        .stdout
    )
    assert len(bomb) < 1024  # 64 MiB of plaintext in well under a kilobyte
    engine = make_engine(keyset.alice, max_output=MiB)
    with pytest.raises(SizeLimitExceeded) as caught:
        engine.decrypt(bomb)
    assert caught.value.limit == MiB
    # gpg's own --max-output truncates and still says DECRYPTION_OKAY and GOODMDC: only
    # its exit code tells. That is why the engine counts bytes itself.
    raw_gpg.add(keyset.alice.secret)
    direct = raw_gpg.run("--max-output", str(MiB), "--decrypt", stdin=bomb, check=False)
    assert direct.returncode == 2 and len(direct.stdout) <= MiB
    assert {"DECRYPTION_OKAY", "GOODMDC"} <= set(status_keywords(direct))


def test_output_limit_is_exact(make_engine: MakeEngine, keyset: KeySet) -> None:
    engine = make_engine(keyset.alice)
    exact = engine.encrypt(b"a" * 1000, ["alice@example.org"])
    assert engine.decrypt(exact.data, max_output=1000).data == b"a" * 1000
    with pytest.raises(SizeLimitExceeded):
        engine.decrypt(exact.data, max_output=999)


def test_wrong_key_names_the_message_keys(make_engine: MakeEngine, keyset: KeySet) -> None:
    sender = make_engine(public=[keyset.bob, keyset.carol])
    encrypted = sender.encrypt(MESSAGE, ["bob@example.org", "carol@example.org"])
    with pytest.raises(NoSecretKeyError) as caught:
        make_engine(keyset.alice).decrypt(encrypted.data)
    assert isinstance(caught.value, NotARecipientError)
    assert set(caught.value.key_ids) == {
        encryption_subkey_id(sender, keyset.bob),
        encryption_subkey_id(sender, keyset.carol),
    }


def test_hidden_recipient_without_key(make_engine: MakeEngine, keyset: KeySet) -> None:
    sender = make_engine(public=[keyset.bob])
    encrypted = sender.encrypt(MESSAGE, ["bob@example.org"], hide_recipients=True)
    with pytest.raises(NoSecretKeyError) as caught:
        make_engine(keyset.alice).decrypt(encrypted.data)
    assert caught.value.key_ids == ("0000000000000000",)


def test_decrypt_refuses_what_is_not_encrypted(everyone: GnuPG, raw_gpg: RawGpg) -> None:
    # gpg --decrypt also "decrypts" signed-only and plain literal data: not here.
    stored = raw_gpg.run("--store", stdin=MESSAGE).stdout
    with pytest.raises(DecryptionError):
        everyone.decrypt(stored)


def test_bad_signature_inside_encryption(
    make_engine: MakeEngine, keyset: KeySet, raw_gpg: RawGpg
) -> None:
    # Sign, change the signed text, then encrypt the result as it is (--no-literal):
    # gpg stops at the bad signature before it has checked the MDC.
    raw_gpg.add(keyset.bob.secret, keyset.alice.public)
    signed = raw_gpg.run(
        "--compress-algo", "none", "-u", keyset.bob.fingerprint, "--sign", stdin=b"A" * 64
    ).stdout
    tampered = signed.replace(b"A" * 64, b"B" + b"A" * 63)
    encrypted = raw_gpg.run(
        "--no-literal",
        "--compress-algo",
        "none",
        "-r",
        keyset.alice.fingerprint,
        "--encrypt",
        stdin=tampered,
    ).stdout
    decrypted = make_engine(keyset.alice, public=[keyset.bob]).decrypt(encrypted)
    assert decrypted.data == b"B" + b"A" * 63
    assert decrypted.integrity == "mdc"
    assert decrypted.signature is not None
    assert decrypted.signature.verdict is Verdict.FAILED
    assert isinstance(decrypted.signature.error, SignatureInvalidError)


def test_password_encrypted_messages(
    make_engine: MakeEngine, keyset: KeySet, raw_gpg: RawGpg
) -> None:
    symmetric = raw_gpg.run(
        "--passphrase", "pass phrase", "--symmetric", "--armor", stdin=MESSAGE
    ).stdout
    engine = make_engine(keyset.dave)
    # Never with a key passphrase: it would be tried as the message password.
    with pytest.raises(DecryptionError, match="password-encrypted"):
        engine.decrypt(symmetric, passphrase=PASSPHRASE)
    decrypted = engine.decrypt_symmetric(symmetric, "pass phrase")
    assert decrypted.data == MESSAGE and decrypted.integrity == "mdc"
    assert decrypted.key is None
    with pytest.raises(WrongPasswordError):
        engine.decrypt_symmetric(symmetric, "wrong")
    encrypted = engine.encrypt(MESSAGE, ["dave@example.org"])
    with pytest.raises(DecryptionError, match="not password-encrypted"):
        engine.decrypt_symmetric(encrypted.data, PASSPHRASE)


def test_timeout_stops_gpg(gpg_bin: str, keyset: KeySet, tmp_path: Path) -> None:
    # A gpg that hangs when asked to decrypt (the wrapper becomes `sleep`).
    wrapper = tmp_path / "gpg"
    wrapper.write_text(
        f'#!/bin/sh\ncase "$*" in *--decrypt*) exec sleep 60;; esac\nexec "{gpg_bin}" "$@"\n'
    )
    wrapper.chmod(0o755)
    with GnuPG(gpg=wrapper, timeout=1.0) as engine:
        engine.import_keys(keyset.alice.secret)
        encrypted = engine.encrypt(MESSAGE, ["alice@example.org"])
        with pytest.raises(ToolError, match=r"did not finish within 1\.0 seconds"):
            engine.decrypt(encrypted.data)
        # The engine is still usable afterwards.
        assert engine.list_keys()


# --- verification -------------------------------------------------------------------------------


def test_verification_failures(
    make_engine: MakeEngine, keyset: KeySet, raw_gpg: RawGpg, everyone: GnuPG
) -> None:
    signature = everyone.sign_detached(MESSAGE, "alice@example.org").data

    bad = everyone.verify_detached(MESSAGE + b"!", signature)
    assert bad.verdict is Verdict.FAILED and isinstance(bad.error, SignatureInvalidError)
    with pytest.raises(SignatureInvalidError):
        bad.raise_for_verdict()

    unknown = make_engine().verify_detached(MESSAGE, signature)
    assert unknown.verdict is Verdict.NOT_CHECKED
    assert keyset.alice.fingerprint[-16:] in unknown.reason

    expired = everyone.verify_detached(SIGNED_DATA, keyset.expired_signature)
    assert expired.verdict is Verdict.FAILED and "expired" in expired.reason
    assert expired.fingerprint == keyset.expired.fingerprint
    revoked = everyone.verify_detached(SIGNED_DATA, keyset.revoked_signature)
    assert revoked.verdict is Verdict.FAILED and "revoked" in revoked.reason
    lapsed = everyone.verify_detached(SIGNED_DATA, keyset.expired_signature_valid_key)
    assert lapsed.verdict is Verdict.FAILED and "signature" in lapsed.reason
    assert "has expired" in lapsed.reason

    garbage = everyone.verify_detached(MESSAGE, b"-----BEGIN PGP SIGNATURE-----\n\nAAAA\n")
    assert garbage.verdict is Verdict.NOT_CHECKED
    assert isinstance(garbage.error, NotSignedError)

    raw_gpg.add(keyset.alice.secret, keyset.bob.secret)
    twice = raw_gpg.run(
        "-u",
        keyset.alice.fingerprint,
        "-u",
        keyset.bob.fingerprint,
        "--sign",
        "--armor",
        stdin=MESSAGE,
    ).stdout
    both = everyone.verify_inline(twice)
    assert both.verdict is Verdict.FAILED and both.signatures == 2
    assert isinstance(both.error, SignatureError)

    sig_path = raw_gpg.home.parent / "sha1.sig"
    made = raw_gpg.run(
        "-u", keyset.bob.fingerprint, "--digest-algo", "SHA1", "--detach-sign", stdin=MESSAGE
    )
    sig_path.write_bytes(made.stdout)
    weak = everyone.verify_detached(MESSAGE, made.stdout)
    assert weak.verdict is Verdict.NOT_CHECKED
    assert isinstance(weak.error, UnsupportedAlgorithmError)
    assert weak.hash_algorithm == "sha1"
    assert everyone.verify_detached(MESSAGE, made.stdout, allow_weak_digest=True).good


def test_clearsigned_block_inside_other_text(
    everyone: GnuPG, raw_gpg: RawGpg, keyset: KeySet
) -> None:
    raw_gpg.add(keyset.alice.secret, keyset.bob.secret)
    text = b"signed line   \n- starts with a dash\nlast line\n"
    block = raw_gpg.run("-u", keyset.alice.fingerprint, "--clearsign", stdin=text).stdout
    wrapped = b"UNSIGNED PREFIX: pay to 1234\n" + block + b"UNSIGNED SUFFIX: ignore the above\n"
    checked = everyone.verify_inline(wrapped)
    assert checked.good, checked.reason
    assert checked.emails == ("alice@example.org",)
    # Only what the signature covers (trailing whitespace is not covered, and is dropped).
    assert checked.data == b"signed line\n- starts with a dash\nlast line\n"

    second = raw_gpg.run("-u", keyset.bob.fingerprint, "--clearsign", stdin=b"other\n").stdout
    two = everyone.verify_inline(block + b"between\n" + second)
    assert two.verdict is Verdict.FAILED


def test_inline_one_pass_signature(everyone: GnuPG, raw_gpg: RawGpg, keyset: KeySet) -> None:
    signed = (
        raw_gpg.add(keyset.carol.secret)
        .run("-u", keyset.carol.fingerprint, "--sign", stdin=MESSAGE)
        .stdout
    )
    checked = everyone.verify_inline(signed)
    assert checked.good and checked.data == MESSAGE
    assert checked.emails == ("carol@example.org",)


def test_verify_and_decrypt_stay_apart(everyone: GnuPG, raw_gpg: RawGpg, keyset: KeySet) -> None:
    encrypted = everyone.encrypt(MESSAGE, ["alice@example.org"], sign_with="alice@example.org")
    checked = everyone.verify_inline(encrypted.data)
    assert not checked.good and checked.data is None
    signed = (
        raw_gpg.add(keyset.alice.secret)
        .run("-u", keyset.alice.fingerprint, "--sign", stdin=MESSAGE)
        .stdout
    )
    with pytest.raises(DecryptionError):
        everyone.decrypt(signed)


# --- homes --------------------------------------------------------------------------------------


def test_private_home_is_removed_and_the_user_home_untouched(
    gpg_bin: str, keyset: KeySet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    user_home = tmp_path / "home"
    user_home.mkdir()
    user_gnupg = tmp_path / "user-gnupghome"
    user_gnupg.mkdir()
    monkeypatch.setenv("HOME", str(user_home))
    monkeypatch.setenv("GNUPGHOME", str(user_gnupg))
    with GnuPG(gpg=gpg_bin) as engine:
        home = engine.home
        assert engine.private
        assert stat.S_IMODE(home.stat().st_mode) == 0o700
        assert "pinentry-mode loopback" in (home / "gpg.conf").read_text()
        assert "max-cache-ttl 0" in (home / "gpg-agent.conf").read_text()
        engine.import_keys(keyset.alice.secret)
        encrypted = engine.encrypt(MESSAGE, ["alice@example.org"], sign_with="alice@example.org")
        assert engine.decrypt(encrypted.data).data == MESSAGE
    assert not home.exists()
    assert list(user_home.iterdir()) == []
    assert list(user_gnupg.iterdir()) == []
    with pytest.raises(InputError, match="closed"):
        engine.list_keys()
    engine.close()  # twice is fine


def test_named_home_is_used_and_kept(gpg_bin: str, keyset: KeySet, raw_gpg: RawGpg) -> None:
    raw_gpg.add(keyset.alice.secret, keyset.bob.public)
    home = raw_gpg.home

    def files() -> set[str]:
        return {str(p.relative_to(home)) for p in home.rglob("*") if not p.is_socket()}

    before = files()
    pubring = (home / "pubring.kbx").read_bytes()
    with GnuPG(home=home, gpg=gpg_bin) as engine:
        assert not engine.private and engine.home == home.resolve()
        assert {k.fingerprint for k in engine.list_keys()} == {
            keyset.alice.fingerprint,
            keyset.bob.fingerprint,
        }
        encrypted = engine.encrypt(MESSAGE, ["alice@example.org", "bob@example.org"])
        assert engine.decrypt(encrypted.data).data == MESSAGE
    assert home.is_dir()
    assert files() == before
    assert (home / "pubring.kbx").read_bytes() == pubring


def test_missing_gpg(gpg_bin: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ToolNotFoundError) as caught:
        GnuPG(gpg=tmp_path / "no-such-gpg")
    assert caught.value.tool == "gpg" and "apt-get install gnupg" in caught.value.hint
    with pytest.raises(InputError, match="not a directory"):
        GnuPG(home=tmp_path / "absent", gpg=gpg_bin)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolNotFoundError, match="brew install gnupg"):
        GnuPG()
    assert not any(p.name.startswith("securemail-") for p in tmp_path.iterdir())


# --- the shared corpus ----------------------------------------------------------------------------


def _corpus(interop_dir: Path, *parts: str) -> Path:
    return interop_dir.joinpath(*parts)


def _armored_bytes(data: bytes, kind: str) -> bytes:
    label = kind.encode()
    match = re.search(
        rb"-----BEGIN PGP " + label + rb"-----.*?-----END PGP " + label + rb"-----", data, re.S
    )
    assert match is not None, kind
    return match.group(0)


def _armored(path: Path, kind: str) -> bytes:
    return _armored_bytes(path.read_bytes(), kind)


TB = ("thunderbird-openpgp",)
TB_ALICE = "alice@openpgp.example-0xf231550c4f47e38e"
TB_BOB = "bob@openpgp.example-0xfbfcc82a015e7330"


@pytest.mark.parametrize(
    ("secret_file", "passphrase"),
    [(f"{TB_ALICE}-secret.asc", None), (f"{TB_ALICE}-secret-with-pp.asc", "alice-passphrase")],
)
def test_corpus_thunderbird_encrypted_message(
    make_engine: MakeEngine, interop_dir: Path, secret_file: str, passphrase: str | None
) -> None:
    engine = make_engine()
    (alice,) = engine.import_keys(_corpus(interop_dir, *TB, "keys", secret_file))
    assert alice.fingerprint == "EB85BB5FA33A75E15E944E63F231550C4F47E38E"
    message = _corpus(
        interop_dir,
        *TB,
        "eml",
        "unsigned-encrypted-to-0xf231550c4f47e38e-from-0xfbfcc82a015e7330.eml",
    )
    decrypted = engine.decrypt(_armored(message, "MESSAGE"), passphrase=passphrase)
    assert decrypted.data.startswith(b"Content-Type: ")
    assert decrypted.primary == alice.fingerprint
    assert decrypted.signature is None


def _split_signed(raw: bytes) -> tuple[bytes, bytes]:
    """The first part of the first multipart/signed in ``raw`` (exact bytes, CRLF as sent)
    and the armored signature (RFC 3156 5); deliberately without securemail's MIME code."""
    boundary = re.search(
        rb'multipart/signed;[^\r\n]*(?:\r?\n[ \t][^\r\n]*)*?boundary="([^"]+)"', raw
    )
    assert boundary is not None
    opening = b"--" + boundary.group(1) + b"\r\n"
    start = raw.index(opening) + len(opening)
    signed_part = raw[start : raw.index(b"\r\n--" + boundary.group(1), start)]
    signature = _armored_bytes(raw[start:], "SIGNATURE")
    return signed_part, signature


def test_corpus_thunderbird_signed_and_encrypted(
    make_engine: MakeEngine, interop_dir: Path
) -> None:
    # Thunderbird signs and encrypts the RFC 3156 6.1 way: multipart/signed inside.
    engine = make_engine()
    engine.import_keys(_corpus(interop_dir, *TB, "keys", f"{TB_ALICE}-secret.asc"))
    engine.import_keys(_corpus(interop_dir, *TB, "keys", f"{TB_BOB}-pub.asc"))
    message = _corpus(
        interop_dir, *TB, "eml", "signed-by-0xfbfcc82a015e7330-encrypted-to-0xf231550c4f47e38e.eml"
    )
    decrypted = engine.decrypt(_armored(message, "MESSAGE"))
    assert decrypted.signature is None  # no OpenPGP-level signature
    assert decrypted.data.startswith(b"Content-Type: multipart/signed; micalg=pgp-sha256;")
    signed_part, signature = _split_signed(decrypted.data)
    checked = engine.verify_detached(signed_part, signature)
    assert checked.good, checked.reason
    assert checked.fingerprint == "D1A66E1A23B182C9980F788CFBFCC82A015E7330"
    assert checked.emails == ("bob@openpgp.example",)


def test_corpus_autocrypt_gossip_signed_by_expired_key(
    make_engine: MakeEngine, interop_dir: Path
) -> None:
    # gpg --encrypt --sign (one OpenPGP message) by Alice in 2019; all keys expired in 2021.
    engine = make_engine()
    folder = ("autocrypt-spec-examples",)
    engine.import_keys(_corpus(interop_dir, *folder, "bob@autocrypt.example.sec.asc"))
    engine.import_keys(_corpus(interop_dir, *folder, "alice@autocrypt.example.pub.asc"))
    decrypted = engine.decrypt(
        _armored(_corpus(interop_dir, *folder, "example-gossip.eml"), "MESSAGE")
    )
    assert b"Autocrypt-Gossip: addr=bob@autocrypt.example" in decrypted.data
    assert decrypted.signature is not None
    assert decrypted.signature.verdict is Verdict.FAILED
    assert "expired" in decrypted.signature.reason
    assert decrypted.signature.emails == ("alice@autocrypt.example",)
    assert decrypted.signature.created == dt.datetime(2019, 1, 22, 11, 56, 29, tzinfo=dt.UTC)


def test_corpus_thunderbird_clearsigned(make_engine: MakeEngine, interop_dir: Path) -> None:
    engine = make_engine()
    engine.import_keys(_corpus(interop_dir, *TB, "keys", f"{TB_ALICE}-pub.asc"))
    checked = engine.verify_inline(
        _corpus(interop_dir, *TB, "eml", "alice-signed.eml").read_bytes()
    )
    assert checked.good, checked.reason
    assert checked.emails == ("alice@openpgp.example",)
    assert checked.hash_algorithm == "sha512"
    # The mail headers around the block are not part of what was verified.
    assert checked.data == b"Hello Bob,\n\ncan we meet tomorrow?\n\nAlice\n"


def test_corpus_thunderbird_pgp_mime_detached_signature(
    make_engine: MakeEngine, interop_dir: Path
) -> None:
    raw = _corpus(
        interop_dir,
        *TB,
        "eml",
        "signed-by-0xfbfcc82a015e7330-to-0xf231550c4f47e38e-unencrypted.eml",
    ).read_bytes()
    signed_part, signature = _split_signed(raw)
    assert signed_part.startswith(b"Content-Type: multipart/mixed;")
    engine = make_engine()
    engine.import_keys(_corpus(interop_dir, *TB, "keys", f"{TB_BOB}-pub.asc"))
    checked = engine.verify_detached(signed_part, signature)
    assert checked.good, checked.reason
    assert checked.micalg == "pgp-sha256"  # as the message's micalg parameter says
    assert checked.emails == ("bob@openpgp.example",)
    assert not engine.verify_detached(signed_part.replace(b"callaloo", b"calaloo"), signature).good


@pytest.mark.parametrize(
    ("key_file", "reason"),
    [
        ("carol@pgp.icu-0xEF2FD01608AFD744-revoked-secret.asc", "revoked"),
        ("eddie@openpgp.example-0x15e9357d2c2395c0-pub.asc", "expired"),
    ],
)
def test_corpus_unusable_keys(
    make_engine: MakeEngine, interop_dir: Path, key_file: str, reason: str
) -> None:
    engine = make_engine()
    (key,) = engine.import_keys(_corpus(interop_dir, *TB, "keys", key_file))
    with pytest.raises(RecipientError, match=reason):
        engine.encrypt(MESSAGE, [key.fingerprint])


def test_corpus_librepgp_ocb_message(make_engine: MakeEngine, interop_dir: Path) -> None:
    # gpg 2.2 reports this AEAD (OCB) message as "DECRYPTION_INFO 0 7 0" + GOODMDC.
    message = _corpus(interop_dir, "gnupg", "openpgp-samplemsgs", "enc-sym-ocb-1.asc").read_bytes()
    engine = make_engine()
    decrypted = engine.decrypt_symmetric(message, "password")
    assert decrypted.data == b"Hello, world!\n"
    assert decrypted.integrity.startswith("aead")
    # With a wrong password gpg 2.2 still says DECRYPTION_OKAY and GOODMDC (and NODATA,
    # exit code 2): nothing may be accepted on those two lines alone.
    with pytest.raises(DecryptionError):
        engine.decrypt_symmetric(message, "wrong")


def test_keyinfo_is_frozen(everyone: GnuPG) -> None:
    (key,) = everyone.find_keys("alice@example.org")
    assert isinstance(key, KeyInfo)
    with pytest.raises(AttributeError):
        key.disabled = True  # type: ignore[misc]
