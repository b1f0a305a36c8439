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
import shlex
import subprocess
import sys
from email.message import EmailMessage
from pathlib import Path

import pytest
from asn1crypto import cms
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12

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
