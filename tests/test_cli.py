"""The ``securemail`` command, run as a user runs it: one process per command, key files on
disk, whole messages through files, stdin/stdout and real pipes.

Commands are written as shell words (split with :func:`shlex.split`, never given to a shell).
Every failing command must print exactly one line to stderr, exit non-zero and show no
traceback. Where the command line alone cannot tell which algorithm was used, the result is
checked in-process (``securemail.smime.decrypt``, asn1crypto).
"""

from __future__ import annotations

import dataclasses
import email
import email.policy
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
from asn1crypto import cms
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from pgp.keys import (
    PASSPHRASE,
    GpgCli,
    KeySet,
    PgpKey,
    armor,
    dearmor,
    pgp_mime_encrypted,
    shared_keyset,
)

from securemail.demo import throwaway_identity
from securemail.inbound import iter_attachments
from securemail.keys import Identity
from securemail.smime import decrypt

PYTHON_M = (sys.executable, "-m")
TEXT = "Hello Bob,\n\nthe figures are attached. Grüße!\n"
ATTACHMENT = bytes(range(256)) * 800  # 200 KiB: more than a pipe buffer holds
P12_PASSWORD = "correct horse"

COMPOSE = (
    "compose --from 'Alice <alice@example.com>' --to 'Bob <bob@example.org>' "
    "--to dave@example.org --cc carol@example.net --subject 'Q3 figures' --text-file body.txt"
)
COMPOSE_MINIMAL = "compose --from alice@example.com --to bob@example.org"
SIGN = "sign --smime --key alice.key --cert alice.pem"
ENCRYPT_TO_BOB = "encrypt --smime --recipient-cert bob.pem"
DECRYPT_AS_BOB = "decrypt --smime --key bob.key --cert bob.pem"
VERIFY = "verify --smime --trust ca.pem"
VERIFIED_BY_ALICE = "securemail: verified: signed by alice@example.com (CN=Alice)\n"


# --- helpers --------------------------------------------------------------------------------------


def run(cwd: Path, command: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    """``securemail COMMAND`` in ``cwd``, as its own process."""
    return subprocess.run(
        [*PYTHON_M, "securemail", *shlex.split(command)],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        timeout=60,
        check=False,
    )


def ok(cwd: Path, command: str, stdin: bytes = b"") -> bytes:
    """Run a command that must succeed; return its stdout."""
    result = run(cwd, command, stdin)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout


@dataclasses.dataclass(frozen=True)
class Piped:
    stdout: bytes
    returncodes: tuple[int, ...]
    stderr: tuple[str, ...]


def pipeline(cwd: Path, *commands: str) -> Piped:
    """``securemail A | securemail B | ...`` with OS pipes between the processes."""
    processes: list[subprocess.Popen[bytes]] = []
    upstream = None
    for command in commands:
        process = subprocess.Popen(
            [*PYTHON_M, "securemail", *shlex.split(command)],
            cwd=cwd,
            stdin=upstream if upstream is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        if upstream is not None:
            upstream.close()  # the new process is its only reader now
        upstream = process.stdout
        processes.append(process)
    assert upstream is not None
    stdout = upstream.read()
    stderr = []
    for process in processes:
        assert process.stderr is not None
        stderr.append(process.stderr.read().decode())
        process.wait(timeout=60)
        process.stderr.close()
    upstream.close()
    return Piped(stdout, tuple(p.returncode for p in processes), tuple(stderr))


def assert_one_line_failure(
    result: subprocess.CompletedProcess[bytes], says: str, *, code: int = 1
) -> None:
    stderr = result.stderr.decode()
    assert result.returncode == code, stderr
    assert "Traceback" not in stderr and b"Traceback" not in result.stdout
    assert len(stderr.splitlines()) == 1, stderr
    assert stderr.startswith("securemail: ") and stderr.endswith("\n"), stderr
    assert says in stderr


def parse(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def text_of(message: EmailMessage) -> str:
    """The text/plain body, with the wire's CRLF line ends as ``\\n``."""
    body = message.get_body(("plain",))
    assert body is not None
    return str(body.get_content()).replace("\r\n", "\n")


def recipient_infos(data: bytes) -> tuple[str, list[tuple[str, str]]]:
    """The CMS content type of an encrypted message, and (kind, algorithm) per recipient."""
    info = cms.ContentInfo.load(parse(data).get_content())
    recipients = [
        (ri.name, ri.chosen["key_encryption_algorithm"]["algorithm"].native)
        for ri in info["content"]["recipient_infos"]
    ]
    return info["content_type"].native, recipients


def write_identity(directory: Path, name: str, identity: Identity) -> None:
    """``NAME.key`` (PKCS#8 PEM) and ``NAME.pem`` (certificate)."""
    key = identity.private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    (directory / f"{name}.key").write_bytes(key)
    (directory / f"{name}.pem").write_bytes(
        identity.certificate.public_bytes(serialization.Encoding.PEM)
    )


# --- the working directory ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Workdir:
    """Key files and messages; every command runs in :attr:`path`.

    Identities, as ``NAME.key`` + ``NAME.pem``: ``ca`` (the trusted CA), ``alice`` (RSA, the
    sender), ``bob`` (RSA), ``carol`` (EC P-256), ``mallory`` (claims alice@example.com but
    comes from another CA), ``alice-sub`` (alice@example.com under ``intermediate`` under
    ``root``). Also ``alice.p12`` and the messages made by :func:`work`.
    """

    path: Path
    identities: dict[str, Identity]

    def read(self, name: str) -> bytes:
        return (self.path / name).read_bytes()


def _rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Workdir:
    path = tmp_path_factory.mktemp("cli")
    ca, root = throwaway_identity("Test CA"), throwaway_identity("Test Root")
    intermediate = throwaway_identity("Test Intermediate", issuer=root)
    other_ca = throwaway_identity("Other CA")
    identities = {
        "ca": ca,
        "alice": throwaway_identity("Alice", email="alice@example.com", issuer=ca, key=_rsa_key()),
        "bob": throwaway_identity("Bob", email="bob@example.org", issuer=ca, key=_rsa_key()),
        "carol": throwaway_identity("Carol", email="carol@example.net", issuer=ca),
        "mallory": throwaway_identity("Alice", email="alice@example.com", issuer=other_ca),
        "root": root,
        "intermediate": intermediate,
        "alice-sub": throwaway_identity("Alice", email="alice@example.com", issuer=intermediate),
    }
    for name, identity in identities.items():
        write_identity(path, name, identity)
    alice = identities["alice"]
    (path / "alice.p12").write_bytes(
        pkcs12.serialize_key_and_certificates(
            b"alice",
            alice.private_key,  # type: ignore[arg-type]
            alice.certificate,
            [ca.certificate],
            serialization.BestAvailableEncryption(P12_PASSWORD.encode()),
        )
    )
    (path / "password.txt").write_text(P12_PASSWORD + "\n")
    (path / "wrong-password.txt").write_text("incorrect\n")
    (path / "body.txt").write_text(TEXT, encoding="utf-8")
    (path / "figures.bin").write_bytes(ATTACHMENT)
    (path / "garbage.bin").write_bytes(bytes(range(256)) * 3)
    (path / "garbage.pem").write_text("this is not a certificate\n")

    # Messages for the tests below: composed, signed, encrypted, and spoilt ones.
    ok(path, f"{COMPOSE} --attach figures.bin -o plain.eml")
    ok(path, f"{SIGN} -i plain.eml -o signed.eml")
    ok(path, f"{ENCRYPT_TO_BOB} -i plain.eml -o encrypted.eml")
    ok(path, "sign --key mallory.key --cert mallory.pem -i plain.eml -o untrusted.eml")
    signed = (path / "signed.eml").read_bytes()
    assert signed.count(b"\r\nHello Bob,\r\n") == 1
    (path / "tampered.eml").write_bytes(signed.replace(b"\r\nHello Bob,", b"\r\nHello Eve,"))
    return Workdir(path, identities)


# --- compose --------------------------------------------------------------------------------------


def test_compose_writes_the_whole_message(work: Workdir) -> None:
    message = parse(work.read("plain.eml"))
    assert message["From"] == "Alice <alice@example.com>"
    assert message["To"] == "Bob <bob@example.org>, dave@example.org"
    assert message["Cc"] == "carol@example.net"
    assert message["Subject"] == "Q3 figures"
    assert message["Date"] and message["Message-ID"]
    assert text_of(message) == TEXT
    [attachment] = iter_attachments(message)
    assert (attachment.filename, attachment.data) == ("figures.bin", ATTACHMENT)


def test_compose_writes_to_stdout_with_crlf_line_ends(work: Workdir) -> None:
    out = ok(work.path, f"{COMPOSE_MINIMAL} --text Hi")
    assert out.startswith(b"From: alice@example.com\r\n")
    assert b"\n" not in out.replace(b"\r\n", b"")
    message = parse(out)
    assert message["Subject"] is None
    assert text_of(message) == "Hi\n"


def test_compose_html_file_and_several_attachments(work: Workdir) -> None:
    (work.path / "body.html").write_text("<p>Hello <b>Bob</b></p>", encoding="utf-8")
    (work.path / "notes.txt").write_text("notes\n")
    out = ok(work.path, f"{COMPOSE} --html-file body.html --attach figures.bin --attach notes.txt")
    message = parse(out)
    assert message.get_content_type() == "multipart/mixed"
    html = message.get_body(("html",))
    assert html is not None and "<b>Bob</b>" in html.get_content()
    assert text_of(message) == TEXT
    found = [(a.filename, a.data) for a in iter_attachments(message)]
    assert found == [("figures.bin", ATTACHMENT), ("notes.txt", b"notes\n")]


# --- the pipeline ---------------------------------------------------------------------------------


def test_compose_sign_encrypt_decrypt_verify_through_pipes(work: Workdir) -> None:
    piped = pipeline(
        work.path, f"{COMPOSE} --attach figures.bin", SIGN, ENCRYPT_TO_BOB, DECRYPT_AS_BOB, VERIFY
    )
    assert piped.returncodes == (0, 0, 0, 0, 0), piped.stderr
    assert piped.stderr[-1] == VERIFIED_BY_ALICE
    message = parse(piped.stdout)
    assert message["Subject"] == "Q3 figures"  # restored from the protected copy
    assert text_of(message) == TEXT
    [attachment] = iter_attachments(message)
    assert attachment.data == ATTACHMENT


def test_sign_then_encrypt_leaves_signed_content_inside(work: Workdir) -> None:
    piped = pipeline(work.path, COMPOSE, SIGN, ENCRYPT_TO_BOB)
    assert piped.returncodes == (0, 0, 0), piped.stderr
    assert parse(piped.stdout).get_content_type() == "application/pkcs7-mime"
    result = decrypt(piped.stdout, work.identities["bob"])
    assert result.signed
    assert result.message.get_content_type() == "multipart/signed"


def test_files_and_standard_streams_give_the_same_result(work: Workdir) -> None:
    from_stdin = ok(work.path, DECRYPT_AS_BOB, work.read("encrypted.eml"))
    ok(work.path, f"{DECRYPT_AS_BOB} -i encrypted.eml -o decrypted.eml")
    assert work.read("decrypted.eml") == from_stdin
    assert ok(work.path, f"{DECRYPT_AS_BOB} -i - -o -", work.read("encrypted.eml")) == from_stdin
    assert text_of(parse(from_stdin)) == TEXT


@pytest.mark.parametrize(
    ("command", "subject"), [(SIGN, "Q3 figures"), (ENCRYPT_TO_BOB, "...")], ids=["sign", "encrypt"]
)
def test_outer_headers_are_preserved(work: Workdir, command: str, subject: str) -> None:
    original = parse(work.read("plain.eml"))
    protected = parse(ok(work.path, f"{command} -i plain.eml"))
    for field in ("From", "To", "Cc", "Date", "Message-ID"):
        assert protected[field] == original[field], field
    assert protected["Subject"] == subject  # encryption hides it (RFC 9788 header protection)


def test_bcc_never_leaves_the_envelope(work: Workdir) -> None:
    raw = (
        b"From: alice@example.com\nTo: bob@example.org\nBcc: hidden@example.net\n"
        b"Subject: Unix line ends\nContent-Type: text/plain\n\nhello\n"
    )
    signed = ok(work.path, SIGN, raw)
    encrypted = ok(work.path, ENCRYPT_TO_BOB, signed)
    decrypted = ok(work.path, DECRYPT_AS_BOB, encrypted)
    for data in (signed, encrypted, decrypted):
        assert b"hidden@example.net" not in data


def test_signatures_survive_a_change_of_line_endings(work: Workdir) -> None:
    unix = work.read("signed.eml").replace(b"\r\n", b"\n")
    result = run(work.path, VERIFY, unix)
    assert result.returncode == 0, result.stderr


# --- encrypt options ------------------------------------------------------------------------------


@pytest.mark.parametrize("cipher", ["aes-256-gcm", "aes-128-gcm", "aes-256-cbc", "aes-128-cbc"])
def test_cipher_option(work: Workdir, cipher: str) -> None:
    out = ok(work.path, f"{ENCRYPT_TO_BOB} --cipher {cipher} -i plain.eml")
    gcm = cipher.endswith("gcm")
    assert recipient_infos(out)[0] == ("authenticated_enveloped_data" if gcm else "enveloped_data")
    smime_type = parse(out).get_param("smime-type")
    assert smime_type == ("authEnveloped-data" if gcm else "enveloped-data")
    result = decrypt(out, work.identities["bob"])
    assert (result.content_cipher, result.authenticated) == (cipher, gcm)
    assert text_of(result.message) == TEXT


def test_default_profile_for_a_recipient_of_unknown_capabilities(work: Workdir) -> None:
    out = work.read("encrypted.eml")
    assert recipient_infos(out) == ("enveloped_data", [("ktri", "rsaes_pkcs1v15")])
    result = run(work.path, DECRYPT_AS_BOB, out)
    assert result.returncode == 0
    assert result.stderr.decode().splitlines() == [
        "securemail: warning: aes-256-cbc has no integrity protection; "
        "trust the content only if a signature inside verifies"
    ]


@pytest.mark.parametrize(
    ("transport", "algorithm"), [("rsa-oaep", "rsaes_oaep"), ("rsa-pkcs1v15", "rsaes_pkcs1v15")]
)
def test_key_transport_option(work: Workdir, transport: str, algorithm: str) -> None:
    out = ok(work.path, f"{ENCRYPT_TO_BOB} --key-transport {transport} -i plain.eml")
    assert recipient_infos(out)[1] == [("ktri", algorithm)]
    assert text_of(decrypt(out, work.identities["bob"]).message) == TEXT


def test_ec_recipient_gets_key_agreement_by_itself(work: Workdir) -> None:
    out = ok(work.path, "encrypt --smime --recipient-cert carol.pem -i plain.eml")
    [(kind, _)] = recipient_infos(out)[1]
    assert kind == "kari"
    assert text_of(decrypt(out, work.identities["carol"]).message) == TEXT


def test_several_recipients_can_each_decrypt(work: Workdir) -> None:
    out = ok(work.path, f"{ENCRYPT_TO_BOB} --recipient-cert carol.pem -i plain.eml")
    assert [kind for kind, _ in recipient_infos(out)[1]] == ["ktri", "kari"]
    for name in ("bob", "carol"):
        decrypted = ok(work.path, f"decrypt --smime --key {name}.key --cert {name}.pem", out)
        assert text_of(parse(decrypted)) == TEXT


def test_encrypt_with_a_key_signs_and_encrypts_to_self(work: Workdir) -> None:
    out = ok(work.path, f"{ENCRYPT_TO_BOB} --key alice.key --cert alice.pem -i plain.eml")
    assert len(recipient_infos(out)[1]) == 2  # Bob, and Alice for her sent folder
    assert decrypt(out, work.identities["alice"]).signed
    inner = decrypt(out, work.identities["bob"])
    assert inner.signed
    assert run(work.path, VERIFY, inner.data).stderr.decode() == VERIFIED_BY_ALICE


def test_encrypt_trust_refuses_a_recipient_outside_it(work: Workdir) -> None:
    ok(work.path, f"{ENCRYPT_TO_BOB} --trust ca.pem -i plain.eml")
    result = run(work.path, "encrypt --recipient-cert mallory.pem --trust ca.pem -i plain.eml")
    assert_one_line_failure(result, "cannot encrypt to alice@example.com")
    assert result.stdout == b""


def test_decrypt_require_authenticated_refuses_cbc(work: Workdir) -> None:
    result = run(work.path, f"{DECRYPT_AS_BOB} --require-authenticated -i encrypted.eml")
    assert_one_line_failure(result, "no integrity protection")
    assert result.stdout == b""


# --- sign and verify options ----------------------------------------------------------------------


def test_detached_signature_is_the_default(work: Workdir) -> None:
    signed = parse(work.read("signed.eml"))
    assert signed.get_content_type() == "multipart/signed"
    assert signed.get_param("protocol") == "application/pkcs7-signature"
    assert signed.get_param("micalg") == "sha-256"


def test_verify_prints_the_signer_and_writes_the_message(work: Workdir) -> None:
    result = run(work.path, f"{VERIFY} -i signed.eml -o verified.eml")
    assert result.returncode == 0
    assert result.stderr.decode() == VERIFIED_BY_ALICE
    assert result.stdout == b""
    message = parse(work.read("verified.eml"))
    assert text_of(message) == TEXT
    assert [a.data for a in iter_attachments(message)] == [ATTACHMENT]


def test_opaque_signature(work: Workdir) -> None:
    out = ok(work.path, f"{SIGN} --opaque -i plain.eml")
    signed = parse(out)
    assert signed.get_content_type() == "application/pkcs7-mime"
    assert signed.get_param("smime-type") == "signed-data"
    assert b"Hello Bob" not in out  # the content travels inside the CMS structure
    assert text_of(parse(ok(work.path, VERIFY, out))) == TEXT


def test_digest_option(work: Workdir) -> None:
    out = ok(work.path, f"{SIGN} --digest sha512 -i plain.eml")
    assert parse(out).get_param("micalg") == "sha-512"
    assert run(work.path, VERIFY, out).returncode == 0


def test_chain_option_lets_a_verifier_holding_only_the_root_verify(work: Workdir) -> None:
    sign = "sign --smime --key alice-sub.key --cert alice-sub.pem -i plain.eml"
    with_chain = ok(work.path, f"{sign} --chain intermediate.pem")
    without = ok(work.path, sign)
    verify = "verify --smime --trust root.pem"
    assert run(work.path, verify, with_chain).returncode == 0
    assert_one_line_failure(run(work.path, verify, without), "NOT verified (failed)")
    # The verifier may supply the missing intermediate itself.
    assert run(work.path, f"{verify} --cert intermediate.pem", without).returncode == 0


def test_pkcs12_identity_with_password_file(work: Workdir) -> None:
    out = ok(work.path, "sign --key alice.p12 --password-file password.txt -i plain.eml")
    assert run(work.path, VERIFY, out).stderr.decode() == VERIFIED_BY_ALICE


# --- failures: one line, non-zero, no traceback --------------------------------------------------

FAILURES = {
    "missing-input-file": (f"{SIGN} -i missing.eml", "missing.eml"),
    "missing-attachment": (f"{COMPOSE_MINIMAL} --text x --attach missing.bin", "missing.bin"),
    "wrong-key-for-decrypt": (
        "decrypt --key carol.key --cert carol.pem -i encrypted.eml",
        "not encrypted to",
    ),
    "key-and-cert-differ": ("decrypt --key alice.key --cert bob.pem -i encrypted.eml", "match"),
    "tampered-message": (f"{VERIFY} -i tampered.eml", "NOT verified (failed)"),
    "untrusted-signer": (f"{VERIFY} -i untrusted.eml", "NOT verified (failed)"),
    "unsigned-message": (f"{VERIFY} -i plain.eml", "NOT verified (not-checked)"),
    "garbage-to-decrypt": (f"{DECRYPT_AS_BOB} -i garbage.bin", "error: "),
    "decrypt-a-signed-message": (f"{DECRYPT_AS_BOB} -i signed.eml", "not S/MIME encrypted"),
    "garbage-to-sign": (f"{SIGN} -i garbage.bin", "error: "),
    "garbage-certificate": ("encrypt --recipient-cert garbage.pem -i plain.eml", "garbage.pem"),
    "garbage-trust-anchor": ("verify --trust garbage.pem -i signed.eml", "garbage.pem"),
    "ca-certificate-as-recipient": (
        "encrypt --recipient-cert ca.pem -i plain.eml",
        "does not allow encryption",
    ),
    "wrong-pkcs12-password": (
        "sign --key alice.p12 --password-file wrong-password.txt -i plain.eml",
        "alice.p12: wrong or missing password",
    ),
    "missing-pkcs12-password": (
        "sign --key alice.p12 -i plain.eml",
        "alice.p12: wrong or missing password",
    ),
    "missing-password-file": (
        "sign --key alice.p12 --password-file missing.txt -i plain.eml",
        "missing.txt",
    ),
    "header-injection-from": (
        "compose --from 'alice@example.com\r\nBcc: x@y' --to bob@example.org --text x",
        "header 'From' refused",
    ),
    "invalid-address": (f"{COMPOSE_MINIMAL} --to 'not an address' --text x", "not a valid"),
    "compose-without-body": (COMPOSE_MINIMAL, "needs a body"),
}


@pytest.mark.parametrize(("command", "says"), FAILURES.values(), ids=FAILURES.keys())
def test_failure_is_one_line_and_non_zero(work: Workdir, command: str, says: str) -> None:
    result = run(work.path, command)
    assert_one_line_failure(result, says)
    if not command.startswith("verify"):  # see test_verify_writes_no_message_unless_verified
        assert result.stdout == b""


def test_header_injection_in_subject_leaks_nothing(work: Workdir) -> None:
    result = run(work.path, f"{COMPOSE_MINIMAL} --subject 'a\r\nBcc: x@y' --text x")
    assert_one_line_failure(result, "header 'Subject' refused")
    assert result.stdout == b""
    assert "x@y" not in result.stderr.decode()  # errors name the header, never its value


USAGE_ERRORS = {
    "unknown-option": (f"{COMPOSE_MINIMAL} --text x --frobnicate", "unrecognized arguments"),
    "no-command": ("", "required: command"),
    "unknown-command": ("shred", "invalid choice"),
    "unknown-cipher": (f"{ENCRYPT_TO_BOB} --cipher des-ede3-cbc", "invalid choice"),
    "missing-required-option": ("encrypt --smime", "--recipient-cert"),
    "text-and-text-file": (f"{COMPOSE_MINIMAL} --text x --text-file body.txt", "not allowed"),
    "smime-and-pgp": (f"{SIGN} --pgp", "not allowed"),
}


@pytest.mark.parametrize(("command", "says"), USAGE_ERRORS.values(), ids=USAGE_ERRORS.keys())
def test_usage_error_is_one_line_with_exit_2(work: Workdir, command: str, says: str) -> None:
    result = run(work.path, command)
    assert_one_line_failure(result, says, code=2)
    assert result.stdout == b""


def test_help_and_version(work: Workdir) -> None:
    assert ok(work.path, "--version") == b"securemail 0.1.0\n"
    usage = ok(work.path, "--help").decode()
    for command in ("compose", "encrypt", "decrypt", "sign", "verify", "demo"):
        assert command in usage


# --- known bugs: these fail until the CLI is fixed ------------------------------------------------


def test_non_utf8_text_file_is_an_input_error(work: Workdir) -> None:
    """A body file in Latin-1 is the user's mistake, not an internal error (exit 70)."""
    (work.path / "latin1.txt").write_bytes("Grüße\n".encode("latin-1"))
    for option in ("--text-file", "--html-file"):
        result = run(work.path, f"{COMPOSE_MINIMAL} {option} latin1.txt")
        assert_one_line_failure(result, "latin1.txt")


def test_key_file_errors_name_the_file(work: Workdir) -> None:
    """The error must name the key file that could not be loaded, not ``<bytes>``."""
    result = run(work.path, "decrypt --key garbage.pem --cert bob.pem -i encrypted.eml")
    assert_one_line_failure(result, "garbage.pem")
    encrypted_key = work.identities["bob"].private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"right"),
    )
    (work.path / "bob-encrypted.key").write_bytes(encrypted_key)
    result = run(
        work.path,
        "decrypt --key bob-encrypted.key --cert bob.pem --password-file wrong-password.txt "
        "-i encrypted.eml",
    )
    assert_one_line_failure(result, "bob-encrypted.key: wrong or missing password")


@pytest.mark.parametrize("name", ["tampered.eml", "untrusted.eml"])
def test_verify_writes_no_message_unless_verified(work: Workdir, name: str) -> None:
    """``verify -o OUT`` and ``verify | next`` must not pass on content they refused."""
    result = run(work.path, f"{VERIFY} -i {name}")
    assert_one_line_failure(result, "NOT verified")
    assert result.stdout == b""


def test_chain_option_with_a_pkcs12_key(work: Workdir) -> None:
    """``--chain`` must not be silently ignored when ``--key`` is a PKCS#12 file."""
    sub = work.identities["alice-sub"]
    (work.path / "alice-sub.p12").write_bytes(
        pkcs12.serialize_key_and_certificates(
            b"alice",
            sub.private_key,  # type: ignore[arg-type]
            sub.certificate,
            None,
            serialization.NoEncryption(),
        )
    )
    signed = ok(work.path, "sign --key alice-sub.p12 --chain intermediate.pem -i plain.eml")
    result = run(work.path, "verify --trust root.pem", signed)
    assert result.returncode == 0, result.stderr


def test_verify_cert_option_reads_every_certificate_of_a_bundle(work: Workdir) -> None:
    """``--cert`` takes "extra certificates": a bundle's second certificate counts too."""
    bundle = work.read("ca.pem") + work.read("intermediate.pem")
    (work.path / "bundle.pem").write_bytes(bundle)
    signed = ok(work.path, "sign --key alice-sub.key --cert alice-sub.pem -i plain.eml")
    result = run(work.path, "verify --trust root.pem --cert bundle.pem", signed)
    assert result.returncode == 0, result.stderr


# --- PGP/MIME (--pgp) -----------------------------------------------------------------------------
#
# The same commands with OpenPGP keys (made with the gpg binary, see tests/pgp/keys.py) as
# ASCII-armored files, or in a GnuPG home named with --gnupg-home. Alice (Ed25519/Cv25519)
# signs, Bob (RSA-3072) and Carol (RSA-2048) receive, Dave's key has a passphrase.

PGP_COMPOSE = (
    "compose --from 'Alice <alice@example.org>' --to 'Bob <bob@example.org>' "
    "--subject 'Q3 figures' --text-file body.txt"
)
PGP_SIGN = "sign --pgp --secret-key alice.asc"
PGP_ENCRYPT_TO_BOB = "encrypt --pgp --recipient-key bob.pub.asc"
PGP_DECRYPT_AS_BOB = "decrypt --pgp --secret-key bob.asc"
PGP_VERIFY = "verify --pgp --key alice.pub.asc"
HOME = "--gnupg-home gnupg-home"


@dataclasses.dataclass(frozen=True)
class PgpWorkdir:
    """Key files (``NAME.asc`` secret, ``NAME.pub.asc`` public), a GnuPG home
    ``gnupg-home`` holding Alice's and Bob's secret keys and Carol's public key, and the
    messages made by :func:`pgp_work`."""

    path: Path
    keys: KeySet

    def read(self, name: str) -> bytes:
        return (self.path / name).read_bytes()

    def verified_by(self, key: PgpKey) -> str:
        return f"securemail: verified: signed by {key.email} (key {key.fingerprint})\n"


@pytest.fixture(scope="module")
def pgp_work(gpg_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgpWorkdir]:
    keys = shared_keyset(gpg_bin, lambda: tmp_path_factory.mktemp("pgp-keys"))
    path = tmp_path_factory.mktemp("cli-pgp")
    for key in (keys.alice, keys.bob, keys.carol, keys.dave, keys.expired, keys.revoked):
        (path / f"{key.label}.asc").write_bytes(key.secret)
        (path / f"{key.label}.pub.asc").write_bytes(key.public)
    (path / "dave.pass").write_text(PASSPHRASE + "\n")
    (path / "wrong.pass").write_text("incorrect\n")
    (path / "body.txt").write_text(TEXT, encoding="utf-8")
    (path / "garbage.asc").write_text("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nnot a key\n")
    home = GpgCli(gpg_bin, path / "gnupg-home")
    home.add(keys.alice.secret, keys.bob.secret, keys.carol.public)
    work = PgpWorkdir(path, keys)
    try:
        ok(path, f"{PGP_COMPOSE} -o plain.eml")
        ok(path, f"{PGP_SIGN} -i plain.eml -o signed.eml")
        ok(path, f"{PGP_ENCRYPT_TO_BOB} -i plain.eml -o encrypted.eml")
        ok(path, "sign --pgp --secret-key bob.asc -i plain.eml -o signed-by-bob.eml")
        signed = work.read("signed.eml")
        assert signed.count(b"\r\nHello Bob,\r\n") == 1
        (path / "tampered.eml").write_bytes(signed.replace(b"\r\nHello Bob,", b"\r\nHello Eve,"))
        encrypted = work.read("encrypted.eml")
        armored = encrypted[encrypted.index(b"-----BEGIN PGP MESSAGE-----") :]
        armored = armored[: armored.index(b"-----END PGP MESSAGE-----\r\n") + 27]
        binary = bytearray(dearmor(armored))
        binary[len(binary) // 2] ^= 0x01
        (path / "flipped.eml").write_bytes(encrypted.replace(armored, armor(bytes(binary))))
        yield work
    finally:
        home.stop()


def test_pgp_compose_sign_encrypt_decrypt_verify_through_pipes(pgp_work: PgpWorkdir) -> None:
    piped = pipeline(
        pgp_work.path,
        f"{PGP_COMPOSE} --attach body.txt",
        PGP_SIGN,
        PGP_ENCRYPT_TO_BOB,
        PGP_DECRYPT_AS_BOB,
        PGP_VERIFY,
    )
    assert piped.returncodes == (0, 0, 0, 0, 0), piped.stderr
    assert piped.stderr[:4] == ("", "", "", "")
    assert piped.stderr[-1] == pgp_work.verified_by(pgp_work.keys.alice)
    message = parse(piped.stdout)
    assert message["Subject"] == "Q3 figures"  # "..." while encrypted, restored
    assert message["From"] == "Alice <alice@example.org>"
    assert text_of(message) == TEXT
    [attachment] = iter_attachments(message)
    assert attachment.data == TEXT.encode()


def test_pgp_encrypt_and_decrypt(pgp_work: PgpWorkdir) -> None:
    encrypted = parse(pgp_work.read("encrypted.eml"))
    assert encrypted.get_content_type() == "multipart/encrypted"
    assert encrypted.get_param("protocol") == "application/pgp-encrypted"
    assert encrypted["Subject"] == "..."
    original = parse(pgp_work.read("plain.eml"))
    for field in ("From", "To", "Date", "Message-ID"):
        assert encrypted[field] == original[field], field
    assert b"Hello Bob" not in pgp_work.read("encrypted.eml")

    decrypted = parse(ok(pgp_work.path, f"{PGP_DECRYPT_AS_BOB} -i encrypted.eml"))
    assert decrypted["Subject"] == "Q3 figures"
    assert text_of(decrypted) == TEXT


def test_pgp_several_recipients_each_decrypt(pgp_work: PgpWorkdir) -> None:
    out = ok(
        pgp_work.path,
        "encrypt --pgp --recipient-key bob.pub.asc --recipient-key carol.pub.asc -i plain.eml",
    )
    for reader in ("bob", "carol"):
        decrypted = ok(pgp_work.path, f"decrypt --pgp --secret-key {reader}.asc", out)
        assert text_of(parse(decrypted)) == TEXT
    result = run(pgp_work.path, "decrypt --pgp --secret-key alice.asc", out)
    assert_one_line_failure(result, "the secret key of none of them is available")


def test_pgp_encrypt_with_a_secret_key_signs_and_encrypts(pgp_work: PgpWorkdir) -> None:
    out = ok(pgp_work.path, f"{PGP_ENCRYPT_TO_BOB} --secret-key alice.asc -i plain.eml")
    decrypted = ok(pgp_work.path, PGP_DECRYPT_AS_BOB, out)
    assert parse(decrypted).get_content_type() == "multipart/signed"  # RFC 3156 6.1
    result = run(pgp_work.path, PGP_VERIFY, decrypted)
    assert result.returncode == 0, result.stderr
    assert result.stderr.decode() == pgp_work.verified_by(pgp_work.keys.alice)
    assert parse(result.stdout)["Subject"] == "Q3 figures"
    # Alice can read her sent copy (encrypt-to-self).
    ok(pgp_work.path, "decrypt --pgp --secret-key alice.asc", out)


def test_pgp_verify_prints_the_signer_and_writes_the_message(pgp_work: PgpWorkdir) -> None:
    result = run(pgp_work.path, f"{PGP_VERIFY} -i signed.eml")
    assert result.returncode == 0
    assert result.stderr.decode() == pgp_work.verified_by(pgp_work.keys.alice)
    message = parse(result.stdout)
    assert message.get_content_type() == "text/plain"  # the signature layer is gone
    assert text_of(message) == TEXT
    ok(pgp_work.path, f"{PGP_VERIFY} -i signed.eml -o verified.eml")
    assert pgp_work.read("verified.eml") == result.stdout


def test_pgp_passphrase_file(pgp_work: PgpWorkdir) -> None:
    plain = ok(pgp_work.path, "compose --from dave@example.org --to dave@example.org --text Hi")
    signed = ok(
        pgp_work.path, "sign --pgp --secret-key dave.asc --passphrase-file dave.pass", plain
    )
    result = run(pgp_work.path, "verify --pgp --key dave.pub.asc", signed)
    assert result.stderr.decode() == pgp_work.verified_by(pgp_work.keys.dave)
    encrypted = ok(pgp_work.path, "encrypt --pgp --recipient-key dave.pub.asc", plain)
    decrypted = ok(
        pgp_work.path, "decrypt --pgp --secret-key dave.asc --passphrase-file dave.pass", encrypted
    )
    assert text_of(parse(decrypted)) == "Hi\n"
    for command in (
        "decrypt --pgp --secret-key dave.asc --passphrase-file wrong.pass",
        "decrypt --pgp --secret-key dave.asc",
    ):
        failed = run(pgp_work.path, command, encrypted)
        assert_one_line_failure(failed, "dave@example.org: wrong or missing password")
        assert failed.stdout == b""
    failed = run(
        pgp_work.path, "sign --pgp --secret-key dave.asc --passphrase-file wrong.pass", plain
    )
    assert_one_line_failure(failed, "dave@example.org: wrong or missing password")


def test_pgp_gnupg_home_instead_of_key_files(pgp_work: PgpWorkdir) -> None:
    keyring = pgp_work.read("gnupg-home/pubring.kbx")
    piped = pipeline(
        pgp_work.path,
        PGP_COMPOSE,
        f"sign --pgp {HOME}",  # the key for From
        f"encrypt --pgp {HOME}",  # to the message's To (Bob), found in the home
        f"decrypt --pgp {HOME}",
        f"verify --pgp {HOME}",
    )
    assert piped.returncodes == (0, 0, 0, 0, 0), piped.stderr
    assert piped.stderr[-1] == pgp_work.verified_by(pgp_work.keys.alice)
    assert parse(piped.stdout)["Subject"] == "Q3 figures"
    # --recipient names a key in the home; --signer picks the signing key.
    out = ok(
        pgp_work.path,
        f"encrypt --pgp {HOME} --recipient carol@example.org --signer alice@example.org "
        "-i plain.eml",
    )
    assert text_of(parse(ok(pgp_work.path, "decrypt --pgp --secret-key carol.asc", out))) == TEXT
    # The home was used, not changed.
    assert (pgp_work.path / "gnupg-home").is_dir()
    assert pgp_work.read("gnupg-home/pubring.kbx") == keyring


def test_pgp_private_homes_are_removed(pgp_work: PgpWorkdir) -> None:
    scratch = Path(tempfile.mkdtemp(prefix="sm-cli-"))  # short: gpg-agent's socket is inside
    try:
        for command in (f"{PGP_SIGN} -i plain.eml", f"{PGP_DECRYPT_AS_BOB} -i encrypted.eml"):
            done = subprocess.run(
                [*PYTHON_M, "securemail", *shlex.split(command)],
                cwd=pgp_work.path,
                env={**os.environ, "TMPDIR": str(scratch)},
                capture_output=True,
                timeout=60,
                check=False,
            )
            assert done.returncode == 0, done.stderr
            assert list(scratch.iterdir()) == []
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


PGP_FAILURES = {
    "wrong-key-for-decrypt": (
        "decrypt --pgp --secret-key carol.asc -i encrypted.eml",
        "the secret key of none of them is available",
    ),
    "public-key-for-decrypt": (
        "decrypt --pgp --secret-key bob.pub.asc -i encrypted.eml",
        "the secret key of none of them is available",
    ),
    "expired-recipient-key": (
        "encrypt --pgp --recipient-key expired.pub.asc -i plain.eml",
        "cannot encrypt to expired@example.org: the key",
    ),
    "one-revoked-recipient-of-two": (
        f"{PGP_ENCRYPT_TO_BOB} --recipient-key revoked.pub.asc -i plain.eml",
        "cannot encrypt to revoked@example.org: the key",
    ),
    "tampered-message": (f"{PGP_VERIFY} -i tampered.eml", "NOT verified (failed): bad signature"),
    "signer-is-not-the-sender": (
        "verify --pgp --key bob.pub.asc -i signed-by-bob.eml",
        "NOT verified (failed): the message is from alice@example.org but was signed by bob",
    ),
    "unknown-signer": (
        "verify --pgp --key bob.pub.asc -i signed.eml",
        "NOT verified (not-checked)",
    ),
    "unsigned-message": (f"{PGP_VERIFY} -i plain.eml", "NOT verified (not-checked)"),
    "flipped-ciphertext": (f"{PGP_DECRYPT_AS_BOB} -i flipped.eml", "integrity check failed"),
    "decrypt-a-signed-message": (f"{PGP_DECRYPT_AS_BOB} -i signed.eml", "not PGP/MIME"),
    "garbage-key-file": ("encrypt --pgp --recipient-key garbage.asc -i plain.eml", "garbage.asc"),
    "missing-key-file": (
        "decrypt --pgp --secret-key missing.asc -i encrypted.eml",
        "missing.asc",
    ),
    "missing-gnupg-home": ("verify --pgp --gnupg-home no-such-dir -i signed.eml", "no-such-dir"),
}


@pytest.mark.parametrize(("command", "says"), PGP_FAILURES.values(), ids=PGP_FAILURES.keys())
def test_pgp_failure_is_one_line_and_non_zero(
    pgp_work: PgpWorkdir, command: str, says: str
) -> None:
    result = run(pgp_work.path, command)
    assert_one_line_failure(result, says)
    assert result.stdout == b""  # verify too: nothing unverified is passed on


PGP_USAGE_ERRORS = {
    "decrypt-without-secret-key": ("decrypt --pgp -i encrypted.eml", "--secret-key"),
    "sign-without-secret-key": ("sign --pgp -i plain.eml", "--secret-key"),
    "encrypt-without-recipient-key": ("encrypt --pgp -i plain.eml", "--recipient-key"),
    "verify-without-key": ("verify --pgp -i signed.eml", "--key"),
}


@pytest.mark.parametrize(
    ("command", "says"), PGP_USAGE_ERRORS.values(), ids=PGP_USAGE_ERRORS.keys()
)
def test_pgp_usage_error_is_one_line_with_exit_2(
    pgp_work: PgpWorkdir, command: str, says: str
) -> None:
    result = run(pgp_work.path, command)
    assert_one_line_failure(result, says, code=2)
    assert result.stdout == b""


def test_pgp_digest_option(pgp_work: PgpWorkdir) -> None:
    out = ok(pgp_work.path, f"{PGP_SIGN} --digest sha512 -i plain.eml")
    assert parse(out).get_param("micalg") == "pgp-sha512"
    assert run(pgp_work.path, PGP_VERIFY, out).returncode == 0


def test_pgp_decrypt_reports_a_signature_made_with_the_encryption(
    pgp_work: PgpWorkdir, gpg_bin: str
) -> None:
    """A message signed and encrypted in one OpenPGP message (RFC 3156 6.2, what ``gpg --sign
    --encrypt`` and many clients send) carries its signature inside the encryption; the
    decrypted output has no signature layer left for ``verify --pgp``, so ``decrypt``
    reports the verdict on stderr (the signer's key given with ``--signer-key``)."""
    keys = pgp_work.keys
    tool = GpgCli(gpg_bin, pgp_work.path / "combined-home")
    try:
        tool.add(keys.alice.secret, keys.bob.public)
        entity = b"Content-Type: text/plain\r\n\r\nSigned inside the encryption.\r\n"
        armored = tool.run(
            "--armor", "-u", keys.alice.fingerprint, "-r", keys.bob.fingerprint,
            "--sign", "--encrypt", stdin=entity,
        ).stdout  # fmt: skip
    finally:
        tool.stop()
    message = pgp_mime_encrypted(
        armored, [("From", "alice@example.org"), ("To", "bob@example.org")]
    )
    result = run(pgp_work.path, f"{PGP_DECRYPT_AS_BOB} --signer-key alice.pub.asc", message)
    assert result.returncode == 0, result.stderr
    assert b"Signed inside the encryption." in result.stdout
    assert "signed by alice@example.org" in result.stderr.decode()
