"""Streamed PGP/MIME signing (securemail.stream.pgp: sign, sign_stream, and encrypt and
encrypt_stream with a signer): gpg signs the part while it is written.

* What is streamed verifies with ``gpg --verify`` (the signed part and its signature taken
  apart without securemail's MIME code) and with the in-memory reader; signed and
  encrypted, it decrypts with ``gpg --decrypt`` and the in-memory reader, which checks the
  signature inside, and with the streaming reader, whose output verifies.
* It has the shape the in-memory recipes write (RFC 3156 5 and 6.1), with the micalg of
  the policy's digest.
* A wrong passphrase and an unusable signer stop the message before its first byte; 8-bit
  content, a failing attachment and a gpg that stops reading raise their typed errors; no
  gpg process and no worker thread is left behind.
"""

from __future__ import annotations

import base64
import contextlib
import io
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pgp.keys import (
    PASSPHRASE,
    GpgCli,
    KeySet,
    multipart_parts,
    part_body,
    pgp_mime_encrypted,
    shared_keyset,
)

from securemail import pgp
from securemail.cliio import STREAM_THRESHOLD
from securemail.compose import MessageBuilder
from securemail.errors import InputError, SigningKeyError, ToolError, WrongPasswordError
from securemail.pgp.gpg import GnuPG
from securemail.policy import DEFAULT, DigestAlgorithm
from securemail.stream import pgp as streaming
from securemail.stream.mime import StreamedAttachment
from stream.helpers import DiscardingSink, MiB, PatternSource, noise, traced_peak, workers
from stream.test_pgp import BIG, PEAK_LIMIT, parse, pipeline, securemail

SENDER, TO = "alice@example.org", "bob@example.org"
FILE = bytes(range(256)) * 4000 + b"the end"  # 1 MB: several blocks of every layer


@pytest.fixture(scope="module")
def keyset(gpg_bin: str, tmp_path_factory: pytest.TempPathFactory) -> KeySet:
    return shared_keyset(gpg_bin, lambda: tmp_path_factory.mktemp("pgp-keys"))


@pytest.fixture(scope="module")
def cli(gpg_bin: str, keyset: KeySet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GpgCli]:
    """gpg with alice's and dave's public keys and bob's secret key: it verifies what alice
    and dave sign, and decrypts what is encrypted to bob."""
    tool = GpgCli(gpg_bin, tmp_path_factory.mktemp("stream-sign-cli") / "home")
    tool.add(keyset.alice.public, keyset.dave.public, keyset.bob.secret)
    yield tool
    tool.stop()


def message(text: str = "The contract is attached.\n") -> MessageBuilder:
    return MessageBuilder().from_addr(SENDER).to(TO).subject("Signed, streamed").text(text)


def attachment(tmp_path: Path, data: bytes = FILE) -> StreamedAttachment:
    path = tmp_path / "contract.bin"
    path.write_bytes(data)
    return StreamedAttachment(path, content_type="application/octet-stream")


def gpg_verify(cli: GpgCli, signed: bytes, tmp_path: Path) -> list[str]:
    """gpg's status lines for the multipart/signed ``signed``: the first part as
    transmitted, the second part's armored signature."""
    content, signature = multipart_parts(signed)
    (tmp_path / "part").write_bytes(content)
    (tmp_path / "part.asc").write_bytes(part_body(signature))
    done = cli.run("--verify", str(tmp_path / "part.asc"), str(tmp_path / "part"))
    return done.stderr.decode("latin-1").splitlines()


def good_by(lines: list[str], fingerprint: str) -> bool:
    valid = [line.split() for line in lines if line.startswith("[GNUPG:] VALIDSIG ")]
    return any("GOODSIG" in line for line in lines) and any(fingerprint in words for words in valid)


def gpg_processes(home_marker: str = "sm-gnupg-") -> list[int]:
    """Running gpg processes of securemail's private homes."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            command = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if (
            command
            and command[0].endswith(b"gpg")
            and any(home_marker.encode() in a for a in command)
        ):
            found.append(int(entry))
    return found


def header_and_body(data: bytes) -> tuple[bytes, bytes]:
    header, _, body = data.partition(b"\r\n\r\n")
    return header, body


# --- what is written verifies -----------------------------------------------------------------


def test_streamed_signature_verifies_with_gpg_and_in_memory(
    keyset: KeySet, cli: GpgCli, tmp_path: Path
) -> None:
    sink = io.BytesIO()
    streaming.sign(
        sink, message().build(), keys=[keyset.alice.secret], attachments=[attachment(tmp_path)]
    )
    data = sink.getvalue()
    assert good_by(gpg_verify(cli, data, tmp_path), keyset.alice.fingerprint)
    result = pgp.verify(data, keys=[keyset.alice.public])
    assert result.verified, result.reason
    assert result.fingerprint == keyset.alice.fingerprint
    assert result.message is not None
    attached = [p for p in result.message.walk() if p.get_filename() == "contract.bin"]
    assert attached[0].get_payload(decode=True) == FILE


def test_same_shape_as_the_in_memory_signature(keyset: KeySet, tmp_path: Path) -> None:
    built = message().build()
    sink = io.BytesIO()
    streaming.sign(sink, built, keys=[keyset.alice.secret])
    ours = sink.getvalue()
    theirs = pgp.sign(built, keys=[keyset.alice.secret]).as_bytes()
    for data in (ours, theirs):
        parsed = parse(data)
        assert parsed.get_content_type() == "multipart/signed"
        assert parsed.get_param("micalg") == "pgp-sha256"
        assert parsed.get_param("protocol") == "application/pgp-signature"
        body = header_and_body(data)[1]
        signature = multipart_parts(data)[1]
        assert signature.startswith(b"Content-Type: application/pgp-signature")
        assert body.startswith(b"This is an OpenPGP/MIME signed message")
    assert multipart_parts(ours)[0] == multipart_parts(theirs)[0]


def test_micalg_follows_the_policy_digest(keyset: KeySet, cli: GpgCli, tmp_path: Path) -> None:
    sink = io.BytesIO()
    policy = DEFAULT.clone(digest=DigestAlgorithm.SHA512)
    streaming.sign(sink, message().build(), keys=[keyset.alice.secret], policy=policy)
    data = sink.getvalue()
    assert parse(data).get_param("micalg") == "pgp-sha512"
    lines = gpg_verify(cli, data, tmp_path)
    assert good_by(lines, keyset.alice.fingerprint)
    validsig = next(line.split() for line in lines if line.startswith("[GNUPG:] VALIDSIG "))
    assert validsig[9] == "10", "hash algorithm 10 is SHA-512"


def test_sign_stream_makes_lf_input_canonical(keyset: KeySet, cli: GpgCli, tmp_path: Path) -> None:
    composed = message("line one\nline two\n").build().as_bytes().replace(b"\r\n", b"\n")
    sink = io.BytesIO()
    streaming.sign_stream(io.BytesIO(composed), sink, keys=[keyset.alice.secret])
    data = sink.getvalue()
    assert b"\n" not in data.replace(b"\r\n", b"")
    assert good_by(gpg_verify(cli, data, tmp_path), keyset.alice.fingerprint)
    assert b"line one\r\nline two" in multipart_parts(data)[0]


def test_passphrase_protected_key_signs(keyset: KeySet, cli: GpgCli, tmp_path: Path) -> None:
    sink = io.BytesIO()
    streaming.sign(
        sink,
        message().build(),
        keys=[keyset.dave.secret],
        passphrase=PASSPHRASE,
        attachments=[attachment(tmp_path)],
    )
    assert good_by(gpg_verify(cli, sink.getvalue(), tmp_path), keyset.dave.fingerprint)


def test_signed_and_encrypted_reads_everywhere(keyset: KeySet, cli: GpgCli, tmp_path: Path) -> None:
    sink = io.BytesIO()
    streaming.encrypt(
        sink,
        message().build(),
        keys=[keyset.bob.public, keyset.alice.secret],
        signer=keyset.alice.fingerprint,
        attachments=[attachment(tmp_path)],
    )
    data = sink.getvalue()
    # securemail's in-memory reader decrypts; the multipart/signed inside verifies
    opened = pgp.decrypt(data, keys=[keyset.bob.secret])
    assert opened.signed
    checked = pgp.verify(opened.data, keys=[keyset.alice.public])
    assert checked.verified, checked.reason
    assert checked.fingerprint == keyset.alice.fingerprint
    # gpg decrypts; the multipart/signed inside verifies with gpg
    armored = part_body(multipart_parts(data)[1])
    inner = cli.run("--decrypt", stdin=armored).stdout
    assert parse(inner).get_param("micalg") == "pgp-sha256"
    assert good_by(gpg_verify(cli, inner, tmp_path), keyset.alice.fingerprint)
    # the streaming reader releases the same multipart/signed, which verifies
    out = io.BytesIO()
    streaming.decrypt_stream(io.BytesIO(data), out, keys=[keyset.bob.secret], spool_dir=tmp_path)
    assert pgp.verify(out.getvalue(), keys=[keyset.alice.public]).verified


def test_encrypt_to_self_adds_the_signer(keyset: KeySet, tmp_path: Path) -> None:
    sink = io.BytesIO()
    streaming.encrypt(
        sink, message().build(), keys=[keyset.bob.public, keyset.alice.secret], sign=True
    )
    # alice (the signer) can read what she sent, as with the in-memory recipe
    opened = pgp.decrypt(sink.getvalue(), keys=[keyset.alice.secret])
    assert opened.signed and pgp.verify(opened.data, keys=[keyset.alice.public]).verified


def test_encrypt_stream_signs(keyset: KeySet, cli: GpgCli, tmp_path: Path) -> None:
    composed = message().build().as_bytes()
    sink = io.BytesIO()
    streaming.encrypt_stream(
        io.BytesIO(composed), sink, keys=[keyset.bob.public, keyset.alice.secret], sign=True
    )
    opened = pgp.decrypt(sink.getvalue(), keys=[keyset.bob.secret])
    assert opened.signed and pgp.verify(opened.data, keys=[keyset.alice.public]).verified


# --- failures ------------------------------------------------------------------------------------


def test_wrong_passphrase_writes_nothing(keyset: KeySet, tmp_path: Path) -> None:
    sink = io.BytesIO()
    with pytest.raises(WrongPasswordError):
        streaming.sign(
            sink,
            message().build(),
            keys=[keyset.dave.secret],
            passphrase="not the passphrase",
            attachments=[attachment(tmp_path)],
        )
    assert sink.getvalue() == b""
    with pytest.raises(WrongPasswordError):
        streaming.encrypt(
            sink,
            message().build(),
            keys=[keyset.bob.public, keyset.dave.secret],
            sign=True,
            passphrase="not the passphrase",
        )
    assert sink.getvalue() == b""
    assert not workers() and not gpg_processes()


@pytest.mark.parametrize("passphrase", ["line\nbreak", b"x\r\ny"], ids=repr)
def test_passphrase_with_line_break_is_refused_first(
    keyset: KeySet, passphrase: str | bytes
) -> None:
    """Refused before anything is written or signed (CVE-2019-6690), as in memory."""
    with GnuPG() as engine:
        engine.import_keys(keyset.dave.secret)
        engine.import_keys(keyset.bob.public)
        for attempt in (
            lambda sink: streaming.sign(
                sink, message().build(), gnupg=engine, passphrase=passphrase
            ),
            lambda sink: streaming.sign_stream(
                io.BytesIO(message().build().as_bytes()), sink, gnupg=engine, passphrase=passphrase
            ),
            lambda sink: streaming.encrypt(
                sink, message().build(), [TO], gnupg=engine, sign=True, passphrase=passphrase
            ),
        ):
            sink = io.BytesIO()
            with pytest.raises(InputError, match="CVE-2019-6690"):
                attempt(sink)
            assert sink.getvalue() == b""


def test_unusable_signer_writes_nothing(keyset: KeySet) -> None:
    for key in (keyset.expired, keyset.revoked):
        sink = io.BytesIO()
        with pytest.raises(SigningKeyError):
            streaming.sign(sink, message().build(), key.fingerprint, keys=[key.secret])
        assert sink.getvalue() == b""
    sink = io.BytesIO()
    with pytest.raises(SigningKeyError):  # a public key only: nothing to sign with
        streaming.sign(
            sink, message().build(), keyset.alice.fingerprint, keys=[keyset.alice.public]
        )
    assert sink.getvalue() == b""


def test_8bit_content_is_refused_and_gpg_stopped(keyset: KeySet) -> None:
    composed = (
        b"From: alice@example.org\r\nTo: bob@example.org\r\nSubject: 8-bit\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        b"Gr\xc3\xbc\xc3\x9fe\r\n"
    )
    with pytest.raises(InputError, match="7-bit"):
        streaming.sign_stream(io.BytesIO(composed), io.BytesIO(), keys=[keyset.alice.secret])
    assert not workers() and not gpg_processes()


class FailingFile:
    """A file whose reads fail after ``size`` bytes."""

    def __init__(self, size: int) -> None:
        self._left = size

    def readinto(self, buffer: bytearray | memoryview) -> int:
        if self._left <= 0:
            raise OSError("the disk went away")
        count = min(len(buffer), self._left)
        buffer[:count] = b"x" * count
        self._left -= count
        return count


def test_failing_attachment_stops_gpg(keyset: KeySet) -> None:
    sink = io.BytesIO()
    broken = StreamedAttachment(FailingFile(3_000_000), filename="broken.bin")
    with pytest.raises(OSError, match="went away"):
        streaming.sign(sink, message().build(), keys=[keyset.alice.secret], attachments=[broken])
    assert b"-----BEGIN PGP SIGNATURE-----" not in sink.getvalue()
    assert not workers() and not gpg_processes()


def test_gpg_that_stops_reading_is_stopped(keyset: KeySet, gpg_bin: str) -> None:
    """gpg is paused (SIGSTOP) while it signs: the writer waits no longer than the engine's
    timeout, then stops gpg and raises."""
    with GnuPG(gpg=gpg_bin, timeout=2) as engine:
        engine.import_keys(keyset.alice.secret)
        stream = engine.sign_detached_stream(keyset.alice.fingerprint)
        paused = []
        for _ in range(100):  # gpg starts in the stream's thread
            paused = [
                pid
                for pid in gpg_processes()
                if b"--detach-sign" in Path(f"/proc/{pid}/cmdline").read_bytes()
            ]
            if paused:
                break
            time.sleep(0.05)
        assert len(paused) == 1
        os.kill(paused[0], signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(ToolError, match="took no data"):
                for _ in range(64):  # far more than the pipe and the queue hold
                    stream.write(b"x" * (1 << 20))
            assert time.monotonic() - started < 30
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(paused[0], signal.SIGCONT)
        stream.abort()
    assert not workers() and not gpg_processes()


# --- bounded memory, and the command line --------------------------------------------------------


@pytest.mark.slow
def test_sign_64_mib_in_bounded_memory(keyset: KeySet) -> None:
    sink = DiscardingSink()
    big = StreamedAttachment(PatternSource(64 * MiB), filename="big.bin")
    with traced_peak() as peak:
        streaming.sign(sink, message().build(), keys=[keyset.alice.secret], attachments=[big])
        highest = peak()
    assert sink.size > 64 * MiB * 4 // 3
    assert highest < PEAK_LIMIT, f"peak {highest / MiB:.1f} MiB"


COMPOSE = (
    "compose --from alice@example.org --to bob@example.org --subject 'Signed, large' "
    "--text 'The file is attached.' --attach big.bin"
)
SIGN = "sign --pgp --secret-key alice.asc"
VERIFY = "verify --pgp --key alice.pub.asc"
ENCRYPT_SIGNED = "encrypt --pgp --recipient-key bob.pub.asc --secret-key alice.asc"
DECRYPT = "decrypt --pgp --secret-key bob.asc"


@pytest.fixture(scope="module")
def workdir(keyset: KeySet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli-stream-sign")
    (path / "alice.asc").write_bytes(keyset.alice.secret)
    (path / "alice.pub.asc").write_bytes(keyset.alice.public)
    (path / "bob.asc").write_bytes(keyset.bob.secret)
    (path / "bob.pub.asc").write_bytes(keyset.bob.public)
    (path / "big.bin").write_bytes(noise(BIG, 21))
    return path


def test_cli_compose_sign_verify_through_pipes(workdir: Path) -> None:
    stdout, codes, errors = pipeline(workdir, COMPOSE, SIGN, VERIFY)
    assert codes == [0, 0, 0], errors
    assert errors[:2] == ["", ""]
    assert "alice@example.org" in errors[2]
    assert parse(stdout)["Subject"] == "Signed, large"
    attached = [p for p in parse(stdout).walk() if p.get_filename() == "big.bin"]
    assert attached[0].get_payload(decode=True) == (workdir / "big.bin").read_bytes()


def test_cli_compose_sign_encrypt_decrypt_verify_through_pipes(workdir: Path) -> None:
    stdout, codes, errors = pipeline(workdir, COMPOSE, ENCRYPT_SIGNED, DECRYPT, VERIFY)
    assert codes == [0, 0, 0, 0], errors
    attached = [p for p in parse(stdout).walk() if p.get_filename() == "big.bin"]
    assert attached[0].get_payload(decode=True) == (workdir / "big.bin").read_bytes()


def test_cli_wrong_passphrase_is_one_line_and_no_output(keyset: KeySet, workdir: Path) -> None:
    (workdir / "dave.asc").write_bytes(keyset.dave.secret)
    (workdir / "wrong.pass").write_text("not the passphrase\n")
    plain = securemail(workdir, COMPOSE).stdout
    assert len(plain) > STREAM_THRESHOLD
    done = securemail(
        workdir, "sign --pgp --secret-key dave.asc --passphrase-file wrong.pass -o out.eml", plain
    )
    stderr = done.stderr.decode()
    assert done.returncode != 0 and "Traceback" not in stderr
    assert len(stderr.splitlines()) == 1 and stderr.startswith("securemail: error: "), stderr
    assert not (workdir / "out.eml").exists()


def test_cli_checks_a_signature_made_with_the_encryption(
    keyset: KeySet, workdir: Path, gpg_bin: str, tmp_path: Path
) -> None:
    """A large ``gpg --sign --encrypt`` message streams through ``decrypt --pgp``, which
    reports gpg's verdict on the signature as the in-memory path does."""
    alice = GpgCli(gpg_bin, tmp_path / "alice-home").add(keyset.alice.secret, keyset.bob.public)
    try:
        entity = (
            b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            + base64.encodebytes(noise(BIG, 22)).replace(b"\n", b"\r\n")
        )
        armored = alice.run(
            "--sign", "--local-user", keyset.alice.fingerprint, "--armor", "--encrypt",
            "-r", keyset.bob.fingerprint, stdin=entity,
        ).stdout  # fmt: skip
    finally:
        alice.stop()
    (workdir / "combined.eml").write_bytes(pgp_mime_encrypted(armored))
    done = securemail(
        workdir, f"{DECRYPT} --signer-key alice.pub.asc -i combined.eml -o combined.out"
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.decode().startswith("securemail: verified: signed by alice@example.org")
    assert split_body(workdir / "combined.out") == entity.partition(b"\r\n\r\n")[2]
    done = securemail(workdir, f"{DECRYPT} -i combined.eml -o unchecked.out")
    assert done.returncode == 0, done.stderr
    assert "signature NOT verified (not-checked)" in done.stderr.decode()


def split_body(path: Path) -> bytes:
    return path.read_bytes().partition(b"\r\n\r\n")[2]
