"""Streaming PGP/MIME (securemail.stream.pgp): RFC 3156 multipart/encrypted, written and read
in chunks.

* What :func:`encrypt` and :func:`encrypt_stream` write, the in-memory reader
  (``securemail.pgp.decrypt``), ``gpg --decrypt`` and :func:`decrypt_stream` read back,
  attachments byte for byte, to RSA, Cv25519 and three recipients at once; it has the same
  frame as what ``securemail.pgp.encrypt`` writes, and a Bcc recipient is hidden.
* An unusable recipient stops the message before its first byte.
* :func:`decrypt_stream` reads what gpg writes and what others send (LF line ends, base64,
  no close delimiter, bytes read ahead, a few bytes per read) to the bytes the in-memory
  reader gives, and refuses every malformed, damaged or foreign message with its typed
  error, no byte in the sink, nothing in the spool directory, no file descriptor and no
  worker thread left.
* Memory stays bounded while 256 MiB pass through (``tracemalloc`` peak, never time).
* ``securemail compose | encrypt --pgp | decrypt --pgp`` streams a message larger than the
  command line's threshold, and a damaged one leaves no output file.

Messages are taken apart with the standard library's parser, :mod:`pgp.keys` and a packet
walker of this file's own, not with securemail.wire, so that the code under test does not
check itself.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import email.parser
import email.policy
import hashlib
import io
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from email.message import EmailMessage
from pathlib import Path

import pki
import pytest
from interop.test_corpus_pgp import CASES, KEYSETS, Case, Engines, attached_message
from pgp.keys import (
    PASSPHRASE,
    GpgCli,
    KeySet,
    PgpKey,
    armor,
    dearmor,
    multipart_parts,
    part_body,
    pgp_mime_encrypted,
    shared_keyset,
    status_keywords,
)

from securemail import pgp, smime, wire
from securemail.cliio import STREAM_THRESHOLD
from securemail.compose import MessageBuilder
from securemail.errors import (
    DecryptionError,
    EmbeddedCiphertextError,
    IntegrityError,
    MalformedMessageError,
    NoSecretKeyError,
    RecipientError,
    SecureMailError,
    SizeLimitExceeded,
    WrongPasswordError,
)
from securemail.pgp.gpg import GnuPG
from securemail.policy import DEFAULT
from securemail.results import SignatureStatus
from securemail.stream import pgp as streaming
from securemail.stream.base import Sink, Source
from securemail.stream.message import LEGACY_DISPLAY_LIMIT, StreamDecryptResult
from securemail.stream.mime import StreamedAttachment, write_message
from securemail.stream.openpgp import OpenPGPEncryptWriter
from securemail.stream.openpgp_keys import recipient_keys
from stream.helpers import (
    DiscardingSink,
    FailingSource,
    MiB,
    PatternSource,
    RecordingSink,
    TrickleSource,
    as_in_memory,
    canonical,
    decrypted_from_pipe,
    noise,
    open_fds,
    traced_peak,
    workers,
)

SUBJECT = "Quartalsbericht: Grüße aus Köln"
TEXT = "The figures are attached.\nZweite Zeile: déjà vu.\n"
SENDER, TO = "alice@example.org", "bob@example.org"
DATE = dt.datetime(2024, 5, 17, 9, 30, tzinfo=dt.UTC)
MESSAGE_ID = "<streaming-pgp-test@example.org>"
ENTITY = (
    b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n"
    b"Made by gpg itself.\r\n"
)


# --- keys and tools -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keyset(gpg_bin: str, tmp_path_factory: pytest.TempPathFactory) -> KeySet:
    return shared_keyset(gpg_bin, lambda: tmp_path_factory.mktemp("pgp-keys"))


@pytest.fixture(scope="module")
def cli(gpg_bin: str, keyset: KeySet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GpgCli]:
    """The gpg command line with the secret keys of alice, bob, carol and dave."""
    tool = GpgCli(gpg_bin, tmp_path_factory.mktemp("stream-pgp-cli") / "home")
    tool.add(keyset.alice.secret, keyset.bob.secret, keyset.carol.secret, keyset.dave.secret)
    yield tool
    tool.stop()


@pytest.fixture(scope="module")
def gpg_for(
    gpg_bin: str, keyset: KeySet, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[PgpKey], GpgCli]]:
    """gpg command lines that each hold one person's secret key and nothing else."""
    made: dict[str, GpgCli] = {}

    def home(person: PgpKey) -> GpgCli:
        if person.label not in made:
            tool = GpgCli(gpg_bin, tmp_path_factory.mktemp(f"gpg-{person.label}") / "home")
            made[person.label] = tool.add(person.secret)
        return made[person.label]

    yield home
    for tool in made.values():
        tool.stop()


# --- sinks and sources ----------------------------------------------------------------------------


# --- messages -------------------------------------------------------------------------------------


def builder(*, bcc: Sequence[str] = (), to: Sequence[str] = (TO,)) -> MessageBuilder:
    """The test message, with a fixed Date and Message-ID so two encryptions of it can be
    compared."""
    made = (
        MessageBuilder()
        .from_addr(SENDER)
        .to(*to)
        .subject(SUBJECT)
        .text(TEXT)
        .date(DATE)
        .message_id(MESSAGE_ID)
    )
    return made.bcc(*bcc) if bcc else made


def parse(data: bytes) -> EmailMessage:
    message = email.parser.BytesParser(policy=email.policy.default).parsebytes(data)
    assert isinstance(message, EmailMessage)
    return message


def digest(data: bytes) -> tuple[int, str]:
    """Length and SHA-256: compared instead of MiB of bytes in failure output."""
    return len(data), hashlib.sha256(data).hexdigest()


def split_message(data: bytes) -> tuple[bytes, bytes]:
    """(header section, body) at the first empty line, CRLF or LF."""
    for marker in (b"\r\n\r\n", b"\n\n"):
        head, found, body = data.partition(marker)
        if found:
            return head, body
    raise AssertionError("no empty line after the header section")


def leaves(message: EmailMessage) -> list[tuple[str, str | None, tuple[int, str]]]:
    """Each leaf part: its type, filename and decoded content."""
    return [
        (part.get_content_type(), part.get_filename(), digest(part.get_payload(decode=True) or b""))
        for part in message.walk()
        if not part.is_multipart()
    ]


def summary(data: bytes) -> tuple[list[tuple[str, str]], str, list[object]]:
    """What a reader sees: the header fields (but Content-Type, whose boundary is random),
    the content type with its parameters but the boundary, and every leaf."""
    message = parse(data)
    fields = [(n, str(v)) for n, v in message.items() if n.lower() != "content-type"]
    params = sorted((k, v) for k, v in message.get_params() or [] if k != "boundary")
    return fields, str(params), list(leaves(message))


@dataclasses.dataclass(frozen=True)
class AttachedFile:
    """A file to stream: from ``path`` when given (its name on disk is the filename), else
    from a file object."""

    filename: str
    data: bytes
    path: Path | None = None

    def streamed(self) -> StreamedAttachment:
        if self.path is not None:
            return StreamedAttachment(self.path, content_type="application/octet-stream")
        return StreamedAttachment(
            io.BytesIO(self.data), filename=self.filename, content_type="application/octet-stream"
        )


SIZES = (0, 1, 3 * MiB + 7)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[AttachedFile, ...]:
    """One file per size, from a path and from a file object alternately."""
    directory = tmp_path_factory.mktemp("attachments")
    made = []
    for index, size in enumerate(SIZES):
        data = noise(size, size)
        name = f"file-{size}.bin" if index != 1 else "Prüfbericht März.bin"
        if index % 2 == 0:
            (directory / name).write_bytes(data)
            made.append(AttachedFile(name, data, directory / name))
        else:
            made.append(AttachedFile(name, data))
    return tuple(made)


def expected_leaves(files: Sequence[AttachedFile]) -> list[object]:
    return [
        ("text/plain", None, digest(TEXT.replace("\n", "\r\n").encode())),
        *[("application/octet-stream", f.filename, digest(f.data)) for f in files],
    ]


def check_message(data: bytes, files: Sequence[AttachedFile]) -> EmailMessage:
    """``data`` is the message sent: Subject restored, text and every file byte for byte."""
    message = parse(data)
    assert message["Subject"] == SUBJECT
    assert message["From"] == SENDER
    assert message["To"] == TO
    assert message.get_content_type() == ("multipart/mixed" if files else "text/plain")
    assert leaves(message) == expected_leaves(files)
    return message


# --- running the recipes --------------------------------------------------------------------------


def stream_encrypt(
    message: EmailMessage,
    recipients: Sequence[PgpKey],
    *,
    attachments: Sequence[StreamedAttachment] = (),
    **options: object,
) -> bytes:
    sink = io.BytesIO()
    streaming.encrypt(
        sink, message, keys=[r.public for r in recipients], attachments=attachments, **options
    )
    return sink.getvalue()


def stream_decrypt(
    data: bytes, reader: PgpKey, source: Source | None = None, **options: object
) -> tuple[bytes, StreamDecryptResult]:
    """decrypt_stream of ``data`` (or of ``source``) with ``reader``'s secret key."""
    sink = RecordingSink()
    result = streaming.decrypt_stream(
        source if source is not None else io.BytesIO(data), sink, keys=[reader.secret], **options
    )
    return sink.data, result


def refused(
    data: bytes,
    error: type[SecureMailError],
    spool: Path,
    *,
    keys: Sequence[bytes],
    **options: object,
) -> SecureMailError:
    """``decrypt_stream`` of ``data`` raises ``error``, writes nothing to its sink, and
    leaves no file in ``spool``, no file descriptor open and no worker thread running."""
    sink = RecordingSink()
    before = open_fds()
    with pytest.raises(error) as caught:
        streaming.decrypt_stream(io.BytesIO(data), sink, keys=keys, spool_dir=spool, **options)
    assert sink.writes == [], "something was written to the sink"
    assert list(spool.iterdir()) == [], "the spool directory is not empty"
    assert open_fds() == before, "a file descriptor was left open"
    assert not workers(), "a worker thread was left running"
    assert "Zweite Zeile" not in str(caught.value)
    return caught.value


def gpg_decrypts(tool: GpgCli, armored: bytes) -> bytes:
    """What ``gpg --decrypt`` makes of ``armored``, which it must find whole (MDC good)."""
    done = tool.run("--decrypt", stdin=armored, check=False)
    assert done.returncode == 0, done.stderr.decode("utf-8", "replace")[-2000:]
    assert {"DECRYPTION_OKAY", "GOODMDC"} <= set(status_keywords(done))
    return done.stdout


# --- taking the message apart ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Sealed:
    """A multipart/encrypted message cut around its armored block."""

    data: bytes

    @property
    def begin(self) -> int:
        return self.data.index(b"-----BEGIN PGP MESSAGE-----")

    @property
    def end(self) -> int:
        """Just after the armor's tail line and its CRLF."""
        return self.data.index(b"-----END PGP MESSAGE-----\r\n") + 27

    @property
    def armored(self) -> bytes:
        return self.data[self.begin : self.end]

    @property
    def binary(self) -> bytes:
        return dearmor(self.armored)

    def with_binary(self, binary: bytes) -> bytes:
        """The message with its OpenPGP data replaced (armored here, CRC-24 correct)."""
        return self.data[: self.begin] + armor(binary) + self.data[self.end :]

    @property
    def boundary(self) -> str:
        found = parse(self.data).get_param("boundary")
        assert isinstance(found, str)
        return found

    def flipped(self, offset: int) -> bytes:
        binary = bytearray(self.binary)
        binary[offset] ^= 0x01
        return self.with_binary(bytes(binary))


def walk(data: bytes) -> list[tuple[int, list[tuple[int, int]]]]:
    """(tag, [(body offset, length) per piece]) of each OpenPGP packet (RFC 9580 4.2: both
    header formats; legacy ones only with a definite length)."""
    found = []
    position = 0
    while position < len(data):
        first = data[position]
        position += 1
        assert first & 0x80, f"not a packet header at {position - 1}"
        if not first & 0x40:  # legacy format
            octets = 1 << (first & 3)
            assert octets <= 4
            size = int.from_bytes(data[position : position + octets], "big")
            found.append(((first >> 2) & 0x0F, [(position + octets, size)]))
            position += octets + size
            continue
        pieces = []
        while True:
            octet = data[position]
            if octet < 192:
                size, octets, last = octet, 1, True
            elif octet < 224:
                size, octets, last = ((octet - 192) << 8) + data[position + 1] + 192, 2, True
            elif octet == 255:
                size, octets = int.from_bytes(data[position + 1 : position + 5], "big"), 5
                last = True
            else:
                size, octets, last = 1 << (octet & 0x1F), 1, False
            position += octets
            pieces.append((position, size))
            position += size
            if last:
                break
        found.append((first & 0x3F, pieces))
    return found


def session_key_ids(binary: bytes) -> list[str]:
    """The key IDs named by the PKESK packets (tag 1, version 3: ID after the version)."""
    return [
        binary[body + 1 : body + 9].hex().upper()
        for tag, pieces in walk(binary)
        if tag == 1
        for body, _ in pieces
    ]


def ciphertext_offsets(binary: bytes) -> list[int]:
    """Offsets of the SEIPD packet's ciphertext octets (after its version octet)."""
    every: list[int] = []
    for tag, pieces in walk(binary):
        if tag == 18:
            for body, size in pieces:
                every.extend(range(body, body + size))
    return every[1:]


@pytest.fixture(scope="module")
def key_ids(gpg_bin: str, keyset: KeySet) -> dict[str, str]:
    """Each person's encryption subkey ID, as gpg lists it."""
    found = {}
    for person in (keyset.alice, keyset.bob, keyset.carol, keyset.dave):
        listing = subprocess.run(
            [gpg_bin, "--batch", "--with-colons", "--show-keys"],
            input=person.public,
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout.decode()
        (found[person.label],) = [
            fields[4]
            for fields in (line.split(":") for line in listing.splitlines())
            if fields[0] == "sub" and "e" in fields[11]
        ]
    return found


# === 1. round trips ===============================================================================

GROUPS = {"cv25519": ("alice",), "rsa3072": ("bob",), "three": ("alice", "bob", "carol")}


@pytest.mark.parametrize("group", GROUPS)
def test_encrypt_with_streamed_files_round_trips(
    keyset: KeySet,
    key_ids: dict[str, str],
    files: tuple[AttachedFile, ...],
    gpg_for: Callable[[PgpKey], GpgCli],
    tmp_path: Path,
    group: str,
) -> None:
    """Each recipient reads the streamed message with securemail.pgp.decrypt, with gpg and
    with decrypt_stream; it holds what the in-memory encryption of the same message holds."""
    people: list[PgpKey] = [getattr(keyset, name) for name in GROUPS[group]]
    sink = io.BytesIO()
    envelope = streaming.encrypt(
        sink,
        builder().build(),
        keys=[p.public for p in people],
        attachments=[f.streamed() for f in files],
    )
    assert envelope.mail_from == SENDER and envelope.recipients == (TO,)
    data = sink.getvalue()
    sealed = Sealed(data)
    assert sorted(session_key_ids(sealed.binary)) == sorted(key_ids[p.label] for p in people)

    first = people[0]
    ours = pgp.decrypt(data, keys=[first.secret])
    check_message(ours.data, files)
    assert ours.content_cipher == "openpgp-aes256-mdc"
    if group == "rsa3072":  # what the in-memory encryption of the same message holds
        in_memory = builder()
        for f in files:
            in_memory = in_memory.attach(
                f.data, filename=f.filename, content_type="application/octet-stream"
            )
        reference = pgp.encrypt(in_memory.build(), keys=[first.public])
        theirs = pgp.decrypt(reference, keys=[first.secret])
        assert summary(ours.data) == summary(theirs.data)
        assert ours.protected_headers == theirs.protected_headers
    entity = gpg_decrypts(gpg_for(first), sealed.armored)
    parsed = parse(entity)
    assert parsed["Subject"] == SUBJECT  # the protected copy
    assert parsed.get_param("hp") == "cipher"
    assert leaves(parsed) == expected_leaves(files)

    # Every recipient reads the same, with each reader.
    for person in people:
        if person is not first:
            assert digest(gpg_decrypts(gpg_for(person), sealed.armored)) == digest(entity)
            assert digest(pgp.decrypt(data, keys=[person.secret]).data) == digest(ours.data)
        released, result = stream_decrypt(data, person, spool_dir=tmp_path)
        assert digest(released) == digest(ours.data)
        assert result.authenticated and result.content_cipher == "openpgp-aes256-mdc"
        assert result.protected_headers == ours.protected_headers
        assert result.recipient == person.fingerprint
        assert result.size == len(entity)
        assert result.signature is None
        assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("size", [0, 1, 3 * MiB + 7])
def test_single_attachment_sizes(keyset: KeySet, tmp_path: Path, size: int) -> None:
    """One file alone, from a file object: decrypt_stream gives what pgp.decrypt gives, and
    the file comes back byte for byte."""
    attached = AttachedFile("only.bin", noise(size, 7))
    data = stream_encrypt(builder().build(), [keyset.carol], attachments=[attached.streamed()])
    expected = pgp.decrypt(data, keys=[keyset.carol.secret]).data
    check_message(expected, [attached])
    released, result = stream_decrypt(data, keyset.carol, spool_dir=tmp_path)
    assert digest(released) == digest(expected)
    assert result.size > size


def test_encrypt_without_attachments_equals_in_memory(keyset: KeySet, tmp_path: Path) -> None:
    message = builder().build()
    data = stream_encrypt(message, [keyset.bob])
    reference = pgp.encrypt(message, keys=[keyset.bob.public])
    ours = pgp.decrypt(data, keys=[keyset.bob.secret])
    theirs = pgp.decrypt(reference, keys=[keyset.bob.secret])
    assert ours.data == theirs.data  # the same entity, byte for byte
    check_message(ours.data, [])
    released, _ = stream_decrypt(data, keyset.bob, spool_dir=tmp_path)
    assert released == ours.data
    # decrypt_stream reads gpg's ciphertext (the in-memory encryption) the same way.
    released, result = stream_decrypt(reference.data, keyset.bob, spool_dir=tmp_path)
    assert released == theirs.data
    assert result.protected_headers == theirs.protected_headers


def compose_bytes(attachment: bytes = b"") -> bytes:
    """A whole message as ``securemail compose`` writes it (7-bit, CRLF)."""
    made = builder()
    if attachment:
        made = made.attach(attachment, filename="report.bin")
    return wire.to_bytes(made.build())


def composed_with_streamed_file(size: int) -> bytes:
    """What ``securemail compose --attach BIG`` writes: the file streamed after the text."""
    sink = io.BytesIO()
    attachment = StreamedAttachment(io.BytesIO(noise(size, 11)), filename="big.bin")
    write_message(sink, builder().build(), [attachment])
    return sink.getvalue()


def restored_header(data: bytes) -> list[tuple[str, str]]:
    """The header fields, without the ``hp`` parameter that header protection adds to the
    Content-Type of a decrypted message."""
    fields = []
    for name, value in parse(data).items():
        text = str(value)
        if name.lower() == "content-type":
            text = re.sub(r';\s*hp="?cipher"?', "", text)
        fields.append((name, text))
    return fields


@pytest.mark.parametrize(
    "prefix", [0, 9, -1], ids=["no-prefix", "prefix-in-header", "prefix-past-header"]
)
@pytest.mark.parametrize("kind", ["compose", "write_message"])
def test_encrypt_stream_of_a_composed_message(
    keyset: KeySet, tmp_path: Path, kind: str, prefix: int
) -> None:
    if kind == "compose":
        source = compose_bytes(noise(200_000, 3))
    else:
        source = composed_with_streamed_file(300_001)
    cut = len(split_message(source)[0]) + 1000 if prefix == -1 else prefix
    sink = io.BytesIO()
    envelope = streaming.encrypt_stream(
        TrickleSource(source[cut:], 3000),
        sink,
        keys=[keyset.alice.public, keyset.bob.public],
        prefix=source[:cut],
    )
    assert envelope.recipients == (TO,)
    data = sink.getvalue()
    assert parse(data)["Subject"] == "..."
    in_memory = pgp.encrypt(source, keys=[keyset.alice.public, keyset.bob.public])
    person = keyset.alice if prefix == 0 else keyset.bob
    ours = pgp.decrypt(data, keys=[person.secret])
    theirs = pgp.decrypt(in_memory, keys=[person.secret])
    assert ours.protected_headers == theirs.protected_headers
    assert summary(ours.data) == summary(theirs.data)
    # The body passes through unchanged; the header gains only hp="cipher".
    assert split_message(ours.data)[1] == split_message(source)[1]
    assert restored_header(ours.data) == restored_header(source)
    released, _ = stream_decrypt(data, person, spool_dir=tmp_path)
    assert released == ours.data


def test_encrypted_data_is_seipd_with_mdc(keyset: KeySet, cli: GpgCli) -> None:
    sealed = Sealed(stream_encrypt(builder().build(), [keyset.bob]))
    done = cli.run("--decrypt", stdin=sealed.armored)
    info = next(
        line.split()[2:4]
        for line in done.stderr.decode().splitlines()
        if line.startswith("[GNUPG:] DECRYPTION_INFO")
    )
    assert info == ["2", "9"], "SEIPD with MDC (2), AES-256 (9)"
    assert [tag for tag, _ in walk(sealed.binary)] == [1, 18]


def test_failing_attachment_leaves_a_stream_that_does_not_decrypt(
    keyset: KeySet, tmp_path: Path
) -> None:
    """The source of a file fails halfway: the error reaches the caller, and what was
    written has no armor tail and no close delimiter, so no reader takes it for whole."""
    sink = RecordingSink()
    attachment = StreamedAttachment(FailingSource(300_000), filename="broken.bin")
    with pytest.raises(OSError, match="went away"):
        streaming.encrypt(
            sink, builder().build(), keys=[keyset.bob.public], attachments=[attachment]
        )
    written = sink.data
    assert written.startswith(b"From: ")
    assert b"-----END PGP MESSAGE-----" not in written
    boundary = wire.parse_headers(written.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n").get_boundary()
    assert boundary and f"--{boundary}--".encode() not in written
    refused(written, DecryptionError, tmp_path, keys=[keyset.bob.secret])
    with pytest.raises(DecryptionError):
        pgp.decrypt(written, keys=[keyset.bob.secret])
    assert not workers()


# === 2. the wire format ===========================================================================


def test_rfc3156_structure(keyset: KeySet) -> None:
    data = stream_encrypt(
        builder().build(),
        [keyset.bob],
        attachments=[StreamedAttachment(io.BytesIO(b"x" * 1000), filename="x.txt")],
    )
    assert b"\n" not in data.replace(b"\r\n", b""), "a bare LF or CR"
    assert max(len(line) for line in data.split(b"\r\n")) <= 78
    message = parse(data)
    assert message.get_content_type() == "multipart/encrypted"
    assert message.get_param("protocol") == "application/pgp-encrypted"
    assert message["MIME-Version"] == "1.0"
    assert message["Subject"] == "..."  # header protection: the real one is inside
    assert message["From"] == SENDER and message["To"] == TO
    assert message["Message-ID"] == MESSAGE_ID
    assert message["Date"].datetime == DATE
    parts = list(message.iter_parts())
    assert [p.get_content_type() for p in parts] == [
        "application/pgp-encrypted",
        "application/octet-stream",
    ]
    version = parts[0].get_payload(decode=True)
    assert isinstance(version, bytes) and version.strip() == b"Version: 1"
    raw = multipart_parts(data)
    assert len(raw) == 2
    body = part_body(raw[1])
    assert body.startswith(b"-----BEGIN PGP MESSAGE-----\r\n")
    assert body.endswith(b"\r\n-----END PGP MESSAGE-----\r\n")
    assert data.endswith(b"\r\n--" + Sealed(data).boundary.encode() + b"--\r\n")
    assert SUBJECT.encode() not in data and b"Zweite Zeile" not in data


def normalized(data: bytes) -> bytes:
    """``data`` with its boundary and its armored block replaced by placeholders."""
    sealed = Sealed(data)
    frame = data[: sealed.begin] + b"<ARMOR>" + data[sealed.end :]
    return frame.replace(sealed.boundary.encode(), b"<BOUNDARY>")


def test_the_same_frame_as_in_memory_encryption(keyset: KeySet) -> None:
    message = builder().build()
    streamed = stream_encrypt(message, [keyset.alice])
    in_memory = pgp.encrypt(message, keys=[keyset.alice.public]).data
    assert normalized(streamed) == normalized(in_memory)
    assert normalized(streamed).count(b"<BOUNDARY>") == 4  # Content-Type, 2 delimiters, close


def test_protected_subject_restored(keyset: KeySet, tmp_path: Path) -> None:
    data = stream_encrypt(builder().build(), [keyset.bob])
    released, result = stream_decrypt(data, keyset.bob, spool_dir=tmp_path)
    restored = parse(released)
    assert restored["Subject"] == SUBJECT
    assert "Subject" in result.protected_headers
    assert restored["Message-ID"] == MESSAGE_ID
    assert "HP-Outer" not in restored


# === 3. Bcc =======================================================================================


def bcc_message(keyset: KeySet, *, attached: bool, recipe: str) -> bytes:
    """To bob, Bcc carol: with a streamed file or not; from an EmailMessage (encrypt) or
    from bytes with a Bcc field (encrypt_stream)."""
    keys = [keyset.bob.public, keyset.carol.public]
    sink = io.BytesIO()
    if recipe == "encrypt":
        files = [StreamedAttachment(io.BytesIO(noise(70_000, 5)), filename="a.bin")]
        envelope = streaming.encrypt(
            sink,
            builder(bcc=[keyset.carol.email]).build(),
            keys=keys,
            attachments=files if attached else [],
        )
    else:
        head, body = split_message(compose_bytes(noise(70_000, 5) if attached else b""))
        source = head + f"\r\nBcc: {keyset.carol.email}\r\n\r\n".encode() + body
        envelope = streaming.encrypt_stream(io.BytesIO(source), sink, keys=keys)
    assert envelope.recipients == (TO, keyset.carol.email)
    return sink.getvalue()


@pytest.mark.parametrize("attached", [False, True], ids=["text", "attached"])
@pytest.mark.parametrize("recipe", ["encrypt", "encrypt_stream"])
def test_bcc_recipient_is_hidden(
    keyset: KeySet,
    key_ids: dict[str, str],
    gpg_for: Callable[[PgpKey], GpgCli],
    gpg_bin: str,
    tmp_path: Path,
    attached: bool,
    recipe: str,
) -> None:
    """The Bcc recipient's session-key packet names no key (the wildcard key ID); the To
    recipient's names his. Both read the message, and nobody learns of the Bcc."""
    data = bcc_message(keyset, attached=attached, recipe=recipe)
    sealed = Sealed(data)
    assert sorted(session_key_ids(sealed.binary)) == sorted(["0" * 16, key_ids["bob"]])
    # gpg, in a home without keys, lists the same session-key packets.
    empty = GpgCli(gpg_bin, tmp_path / "empty-home")
    try:
        listed = empty.run("--list-packets", stdin=sealed.armored, check=False).stdout.decode()
    finally:
        empty.stop()
    assert "keyid 0000000000000000" in listed
    assert f"keyid {key_ids['bob']}" in listed
    assert key_ids["carol"] not in listed
    # The Bcc address is not in the header section, nor in what anyone reads.
    header = split_message(data)[0]
    assert keyset.carol.email.encode() not in header and b"Bcc" not in header
    spool = tmp_path / "spool"
    spool.mkdir()
    for person in (keyset.bob, keyset.carol):
        entity = gpg_decrypts(gpg_for(person), sealed.armored)
        assert keyset.carol.email.encode() not in entity
        released, _ = stream_decrypt(data, person, spool_dir=spool)
        assert released == pgp.decrypt(data, keys=[person.secret]).data
        assert parse(released)["Subject"] == SUBJECT
        assert keyset.carol.email.encode() not in released
    refused(data, NoSecretKeyError, spool, keys=[keyset.alice.secret])


# === 4. fail-closed encryption ====================================================================

UNUSABLE = ["expired", "revoked", "sign_only", "unknown"]


@pytest.fixture(scope="module")
def public_engine(gpg_bin: str, keyset: KeySet) -> Iterator[GnuPG]:
    """An engine with the public keys of bob and of the unusable keys."""
    with GnuPG(gpg=gpg_bin) as engine:
        for person in (keyset.bob, keyset.expired, keyset.revoked, keyset.sign_only):
            engine.import_keys(person.public)
        yield engine


@pytest.mark.parametrize("recipe", ["encrypt", "encrypt_stream"])
@pytest.mark.parametrize(
    ("which", "chosen"),
    [
        (which, chosen)
        for which in UNUSABLE
        for chosen in ("named", "from-message", "given-key")
        if not (which == "unknown" and chosen == "given-key")  # it has no key to give
    ],
)
def test_unusable_recipient_stops_before_anything_is_written(
    keyset: KeySet, public_engine: GnuPG, which: str, chosen: str, recipe: str
) -> None:
    """A recipient named as a selector, taken from the message's To, or given as a key
    file: unusable, it stops the message with a RecipientError naming it, and the sink has
    received nothing."""
    address = "nobody@example.org" if which == "unknown" else getattr(keyset, which).email
    message = builder(to=[TO, address]).build()
    options: dict[str, object] = {"gnupg": public_engine}
    selectors: list[str] = []
    if chosen == "named":
        selectors = [TO, address]
    elif chosen == "given-key":
        person: PgpKey = getattr(keyset, which)
        options = {"keys": [keyset.bob.public, person.public]}
    sink = RecordingSink()
    attachment = StreamedAttachment(io.BytesIO(b"never read"), filename="a.bin")
    with pytest.raises(RecipientError) as caught:
        if recipe == "encrypt":
            streaming.encrypt(sink, message, selectors, attachments=[attachment], **options)
        else:
            source = io.BytesIO(wire.to_bytes(message))
            streaming.encrypt_stream(source, sink, selectors, **options)
    assert address in str(caught.value)
    assert address in caught.value.recipient
    assert sink.writes == [], f"{recipe} wrote before it checked its recipients"


# === 5. what decrypt_stream refuses ===============================================================


@dataclasses.dataclass(frozen=True)
class Reference:
    """A streamed message to bob and what securemail.pgp.decrypt makes of it."""

    sealed: Sealed
    expected: bytes

    @property
    def data(self) -> bytes:
        return self.sealed.data

    @property
    def boundary(self) -> bytes:
        return self.sealed.boundary.encode()


@pytest.fixture(scope="module")
def to_bob(keyset: KeySet) -> Reference:
    """Several 64 KiB blocks of ciphertext, so that damage lands inside, at an edge, or at
    the end of the stream."""
    attachment = StreamedAttachment(io.BytesIO(noise(200_000, 9)), filename="report.bin")
    data = stream_encrypt(builder().build(), [keyset.bob], attachments=[attachment])
    return Reference(Sealed(data), pgp.decrypt(data, keys=[keyset.bob.secret]).data)


def test_undamaged_reference_decrypts(keyset: KeySet, to_bob: Reference, tmp_path: Path) -> None:
    """The messages below are refused for their damage, not for anything else."""
    released, result = stream_decrypt(to_bob.data, keyset.bob, spool_dir=tmp_path)
    assert released == to_bob.expected
    assert result.recipient == keyset.bob.fingerprint


def third_part(boundary: bytes, *, close: bool = True) -> bytes:
    text = b"Content-Type: text/plain\r\n\r\nPay the invoice to the new account.\r\n"
    return (
        b"\r\n--" + boundary + b"\r\n" + text + (b"\r\n--" + boundary + b"--\r\n" if close else b"")
    )


@pytest.mark.parametrize("close", [True, False], ids=["closed", "unclosed"])
@pytest.mark.parametrize("line_end", [b"\r\n", b"\n"], ids=["crlf", "lf"])
def test_third_part_after_the_encrypted_part(
    keyset: KeySet, to_bob: Reference, tmp_path: Path, close: bool, line_end: bytes
) -> None:
    """A reader that showed a third part would show unencrypted text as part of the
    encrypted message (EFAIL's direct exfiltration)."""
    closing = b"\r\n--" + to_bob.boundary + b"--\r\n"
    assert to_bob.data.endswith(closing)
    data = to_bob.data[: -len(closing)] + third_part(to_bob.boundary, close=close)
    data = data.replace(b"\r\n", line_end)
    refused(data, EmbeddedCiphertextError, tmp_path, keys=[keyset.bob.secret])
    with pytest.raises(SecureMailError):
        pgp.decrypt(data, keys=[keyset.bob.secret])


def smime_message() -> bytes:
    people = pki.shared_pki()
    return smime.encrypt(pki.message(), [people.users["rsa"].cert]).data


def swapped(reference: Reference) -> bytes:
    """The encrypted part first, the version part second."""
    version, encrypted = multipart_parts(reference.data)
    delimiter = b"--" + reference.boundary
    head = reference.data[: reference.data.index(delimiter)]
    crlf = b"\r\n"
    body = crlf.join([delimiter, encrypted, delimiter, version, delimiter + b"--", b""])
    return head + body


FOREIGN = {
    "plain-text": lambda _: wire.to_bytes(builder().build()),
    "s-mime": lambda _: smime_message(),
    "multipart-alternative": lambda r: r.data.replace(
        b"multipart/encrypted;", b"multipart/alternative;", 1
    ),
    "wrong-protocol": lambda r: r.data.replace(
        b'protocol="application/pgp-encrypted"', b'protocol="application/pkcs7-mime"', 1
    ),
    "no-protocol": lambda r: r.data.replace(b'protocol="application/pgp-encrypted";', b"", 1),
    "no-boundary": lambda r: re.sub(rb";\s*boundary=\"[^\"]+\"", b"", r.data, count=1),
    "boundary-too-long": lambda r: r.data.replace(r.boundary, r.boundary + b"x" * 30),
    "first-part-type": lambda r: r.data.replace(
        b"Content-Type: application/pgp-encrypted\r\n", b"Content-Type: text/plain\r\n", 1
    ),
    "version-2": lambda r: r.data.replace(b"\r\nVersion: 1\r\n", b"\r\nVersion: 2\r\n", 1),
    "no-version": lambda r: r.data.replace(b"\r\nVersion: 1\r\n", b"\r\n\r\n", 1),
    "second-part-type": lambda r: r.data.replace(
        b"Content-Type: application/octet-stream;", b"Content-Type: text/plain;", 1
    ),
    "second-part-pgp-encrypted": lambda r: r.data.replace(
        b"Content-Type: application/octet-stream;", b"Content-Type: application/pgp-encrypted;", 1
    ),
    "quoted-printable": lambda r: r.data.replace(
        b"Content-Description: OpenPGP encrypted message\r\n",
        b"Content-Transfer-Encoding: quoted-printable\r\n",
        1,
    ),
    "no-encrypted-part": lambda r: (
        r.data[: r.data.index(b"--" + r.boundary + b"\r\nContent-Type: application/octet")]
        + b"--"
        + r.boundary
        + b"--\r\n"
    ),
    "only-the-encrypted-part": lambda r: r.data.replace(
        r.data[
            r.data.index(b"--" + r.boundary) : r.data.index(
                b"--" + r.boundary + b"\r\nContent-Type: application/octet"
            )
        ],
        b"",
    ),
    "parts-swapped": swapped,
    "preamble-over-1-mib": lambda r: r.data.replace(
        b"\r\n\r\nThis is an OpenPGP/MIME", b"\r\n\r\n" + b"padding line\r\n" * 90_000 + b"This", 1
    ),
}


@pytest.mark.parametrize("kind", FOREIGN)
def test_not_pgp_mime_is_refused(
    keyset: KeySet, to_bob: Reference, tmp_path: Path, kind: str
) -> None:
    data = FOREIGN[kind](to_bob)
    assert data != to_bob.data
    refused(data, MalformedMessageError, tmp_path, keys=[keyset.bob.secret])


# PGP/MIME that a server rewrapped in multipart/mixed (the shapes the in-memory reader takes).
EMPTY_TEXT = (
    b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n\r\n"
)
FOOTER = b"Content-Type: text/plain\r\n\r\n-- \r\n\r\n"
INJECTED = b"Content-Type: text/plain\r\n\r\nPay the invoice to the new account.\r\n"


def rewrapped(reference: Reference, *children: bytes) -> bytes:
    """``reference``'s header over a multipart/mixed body of ``children``."""
    head = reference.data.split(b"\r\n\r\n", 1)[0]
    boundary, body = wire.multipart_body(b"", children)
    mixed = b'Content-Type: multipart/mixed; boundary="' + boundary.encode() + b'"'
    head, count = re.subn(rb"(?mi)^Content-Type:[^\r\n]*(?:\r\n[ \t][^\r\n]*)*", mixed, head)
    assert count == 1
    return head + b"\r\n\r\n" + body


def whole_entity(reference: Reference) -> bytes:
    """The multipart/encrypted entity of ``reference``: its Content-Type field and body."""
    head, body = reference.data.split(b"\r\n\r\n", 1)
    found = re.search(rb"(?mi)^Content-Type:[^\r\n]*(?:\r\n[ \t][^\r\n]*)*", head)
    assert found is not None
    return found.group(0) + b"\r\n\r\n" + body


def exchange_data_part(reference: Reference) -> bytes:
    """The encrypted part as Exchange re-attaches it: encrypted.asc, in base64."""
    return (
        b'Content-Type: application/octet-stream; name="encrypted.asc"\r\n'
        b'Content-Disposition: attachment; filename="encrypted.asc"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n" + wire.base64_body(reference.sealed.armored)
    )


def mangled(reference: Reference, shape: str) -> bytes:
    version, encrypted = multipart_parts(reference.data)
    shapes: dict[str, Callable[[], bytes]] = {
        "exchange": lambda: rewrapped(
            reference, EMPTY_TEXT, version, exchange_data_part(reference)
        ),
        "exchange-lf": lambda: mangled(reference, "exchange").replace(b"\r\n", b"\n"),
        "two-parts-in-mixed": lambda: rewrapped(reference, version, encrypted),
        "empty-text-around": lambda: rewrapped(reference, EMPTY_TEXT, version, encrypted, FOOTER),
        "gateway-footer": lambda: rewrapped(reference, whole_entity(reference), FOOTER),
        "gateway-without-footer": lambda: rewrapped(reference, whole_entity(reference)),
        "text-before": lambda: rewrapped(reference, INJECTED, version, encrypted),
        "text-after": lambda: rewrapped(reference, EMPTY_TEXT, version, encrypted, INJECTED),
        "html-before": lambda: rewrapped(
            reference, b"Content-Type: text/html\r\n\r\n<img src='x'>\r\n", version, encrypted
        ),
        "gateway-text-after": lambda: rewrapped(reference, whole_entity(reference), INJECTED),
        "gateway-text-before": lambda: rewrapped(reference, INJECTED, whole_entity(reference)),
        "gateway-third-part": lambda: rewrapped(
            reference,
            whole_entity(reference).replace(
                b"\r\n--" + reference.boundary + b"--", third_part(reference.boundary)[:-2]
            ),
        ),
        "no-pgp-parts": lambda: rewrapped(reference, INJECTED, EMPTY_TEXT),
        "only-the-version-part": lambda: rewrapped(reference, EMPTY_TEXT, version),
    }
    return shapes[shape]()


@pytest.mark.parametrize(
    "shape",
    [
        "exchange",
        "exchange-lf",
        "two-parts-in-mixed",
        "empty-text-around",
        "gateway-footer",
        "gateway-without-footer",
    ],
)
def test_pgp_mime_rewrapped_by_a_server(
    keyset: KeySet, to_bob: Reference, tmp_path: Path, shape: str
) -> None:
    """Exchange turns PGP/MIME into multipart/mixed (an empty text part, the version part,
    the encrypted part as an attachment in base64); gateways wrap it in multipart/mixed with
    an empty footer. A large message in those shapes streams as the in-memory reader reads
    it."""
    data = mangled(to_bob, shape)
    released, result = stream_decrypt(data, keyset.bob, spool_dir=tmp_path)
    assert released == to_bob.expected
    assert result.recipient == keyset.bob.fingerprint
    in_memory = pgp.decrypt(data, keys=[keyset.bob.secret]).data
    assert canonical(released) == canonical(in_memory)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("shape", "error"),
    [
        ("text-before", EmbeddedCiphertextError),
        ("text-after", EmbeddedCiphertextError),
        ("html-before", EmbeddedCiphertextError),
        ("gateway-text-after", EmbeddedCiphertextError),
        ("gateway-text-before", EmbeddedCiphertextError),
        ("gateway-third-part", EmbeddedCiphertextError),
        ("no-pgp-parts", MalformedMessageError),
        ("only-the-version-part", MalformedMessageError),
    ],
)
def test_rewrapped_pgp_mime_with_other_parts_is_refused(
    keyset: KeySet, to_bob: Reference, tmp_path: Path, shape: str, error: type[SecureMailError]
) -> None:
    """Text next to the ciphertext could be shown with its plaintext (EFAIL): refused as the
    in-memory reader refuses it, with nothing released, even when the text comes after the
    ciphertext (read before any plaintext is released)."""
    data = mangled(to_bob, shape)
    refused(data, error, tmp_path, keys=[keyset.bob.secret])
    with pytest.raises(SecureMailError):
        pgp.decrypt(data, keys=[keyset.bob.secret])


def test_large_text_after_rewrapped_pgp_mime_is_refused(
    keyset: KeySet, to_bob: Reference, tmp_path: Path
) -> None:
    """Blank text too large to be read whole is not taken for an empty footer."""
    version, encrypted = multipart_parts(to_bob.data)
    blank = b"Content-Type: text/plain\r\n\r\n" + (b" " * 70 + b"\r\n") * 1000
    refused(
        rewrapped(to_bob, version, encrypted, blank), EmbeddedCiphertextError, tmp_path,
        keys=[keyset.bob.secret],
    )  # fmt: skip


@pytest.mark.parametrize(
    "where",
    [
        "in-the-header",
        "after-the-header",
        "in-the-version-part",
        "in-the-encrypted-part-header",
        "after-the-begin-line",
        "in-the-session-key-packet",
        "in-the-middle",
        "in-the-last-line",
        "before-the-end-line",
        "in-the-end-line",
    ],
)
def test_truncated(keyset: KeySet, to_bob: Reference, tmp_path: Path, where: str) -> None:
    data, sealed = to_bob.data, to_bob.sealed
    tail = data.index(b"-----END PGP MESSAGE-----")
    cut = {
        "in-the-header": 40,
        "after-the-header": data.index(b"\r\n\r\n") + 4,
        "in-the-version-part": data.index(b"Version: 1") + 3,
        "in-the-encrypted-part-header": data.index(b"Content-Description: OpenPGP encrypted"),
        "after-the-begin-line": sealed.begin + 29,
        "in-the-session-key-packet": sealed.begin + 200,
        "in-the-middle": (sealed.begin + tail) // 2,
        "in-the-last-line": tail - 10,
        "before-the-end-line": tail,
        "in-the-end-line": tail + 12,
    }[where]
    error = MalformedMessageError if cut < sealed.begin else DecryptionError
    refused(data[:cut], error, tmp_path, keys=[keyset.bob.secret])


@pytest.mark.parametrize("where", ["end-line-crlf", "close-delimiter", "in-the-close-delimiter"])
def test_truncated_after_the_armor(
    keyset: KeySet, to_bob: Reference, tmp_path: Path, where: str
) -> None:
    """Cut after the armor's tail line, everything the message holds is there: read as
    a message without its close delimiter, which every client tolerates."""
    data, end = to_bob.data, to_bob.sealed.end
    cut = {"end-line-crlf": end - 2, "close-delimiter": end, "in-the-close-delimiter": end + 8}
    released, _ = stream_decrypt(data[: cut[where]], keyset.bob, spool_dir=tmp_path)
    assert released == to_bob.expected


@pytest.mark.parametrize("where", ["start", "middle", "block-edge", "end", "mdc"])
def test_flipped_ciphertext_byte(
    keyset: KeySet, to_bob: Reference, tmp_path: Path, where: str
) -> None:
    ciphertext = ciphertext_offsets(to_bob.sealed.binary)
    offset = {
        "start": ciphertext[0],
        "middle": ciphertext[len(ciphertext) // 2],
        "block-edge": ciphertext[65536],
        "end": ciphertext[-23],  # the last octet before the MDC packet
        "mdc": ciphertext[-1],
    }[where]
    error = refused(
        to_bob.sealed.flipped(offset), IntegrityError, tmp_path, keys=[keyset.bob.secret]
    )
    assert str(error) == str(IntegrityError())  # every damage looks alike


def test_flipped_session_key_packet(keyset: KeySet, to_bob: Reference, tmp_path: Path) -> None:
    [(body, size)] = next(pieces for tag, pieces in walk(to_bob.sealed.binary) if tag == 1)
    for offset in (body + 1, body + size // 2, body + size - 1):  # key ID, MPI, last octet
        damaged = to_bob.sealed.flipped(offset)
        refused(damaged, DecryptionError, tmp_path, keys=[keyset.bob.secret])


def test_flipped_armor_character(keyset: KeySet, to_bob: Reference, tmp_path: Path) -> None:
    """Damage in the armor text itself (no checksum line on data this large)."""
    data = to_bob.data
    middle = (to_bob.sealed.begin + to_bob.sealed.end) // 2
    middle = data.index(b"\r\n", middle) + 10
    for replacement in (b"A" if data[middle : middle + 1] != b"A" else b"B", b"*", b"-"):
        damaged = data[:middle] + replacement + data[middle + 1 :]
        refused(damaged, DecryptionError, tmp_path, keys=[keyset.bob.secret])


def test_not_a_recipient(
    keyset: KeySet, to_bob: Reference, tmp_path: Path, key_ids: dict[str, str]
) -> None:
    error = refused(to_bob.data, NoSecretKeyError, tmp_path, keys=[keyset.alice.secret])
    assert isinstance(error, NoSecretKeyError)
    assert error.key_ids == (key_ids["bob"],)
    refused(to_bob.data, NoSecretKeyError, tmp_path, keys=[keyset.bob.public])


@pytest.mark.parametrize("size", [0, 200_000], ids=["small", "large"])
def test_passphrase(keyset: KeySet, tmp_path: Path, size: int) -> None:
    """Dave's key is protected: without its passphrase, or with a wrong one, the error says
    so (whatever the size of the message); with it, the message is read."""
    attachment = StreamedAttachment(io.BytesIO(noise(size, 8)), filename="a.bin")
    data = stream_encrypt(builder().build(), [keyset.dave], attachments=[attachment])
    refused(data, WrongPasswordError, tmp_path, keys=[keyset.dave.secret])
    refused(data, WrongPasswordError, tmp_path, keys=[keyset.dave.secret], passphrase="not it")
    released, result = stream_decrypt(data, keyset.dave, spool_dir=tmp_path, passphrase=PASSPHRASE)
    expected = pgp.decrypt(data, keys=[keyset.dave.secret], passphrase=PASSPHRASE)
    assert released == expected.data
    assert result.recipient == keyset.dave.fingerprint


def gpg_message(cli: GpgCli, *args: str, entity: bytes = ENTITY) -> bytes:
    return cli.run(*args, stdin=entity).stdout


def test_message_without_mdc(keyset: KeySet, cli: GpgCli, tmp_path: Path) -> None:
    armored = gpg_message(cli, "--rfc2440", "--armor", "--encrypt", "-r", keyset.bob.fingerprint)
    assert 9 in [tag for tag, _ in walk(dearmor(armored))], "symmetrically encrypted, no MDC"
    data = pgp_mime_encrypted(armored)
    error = refused(data, IntegrityError, tmp_path, keys=[keyset.bob.secret])
    assert "not integrity-protected" in str(error)
    with pytest.raises(DecryptionError):
        pgp.decrypt(data, keys=[keyset.bob.secret])


def inline_message(armored: bytes) -> bytes:
    """An inline-PGP message: a text/plain body that is ``armored``."""
    return (
        b"From: alice@example.org\r\nTo: bob@example.org\r\nSubject: inline\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + armored
    )


def test_inline_pgp_as_in_memory(keyset: KeySet, cli: GpgCli, tmp_path: Path) -> None:
    """A text body that is one armored message: read in memory, under the in-memory
    reader's rules, and written to the sink."""
    text = "Treffen um zwölf.\n".encode()
    armored = cli.run("--armor", "--encrypt", "-r", keyset.bob.fingerprint, stdin=text).stdout
    data = inline_message(armored)
    released, result = stream_decrypt(data, keyset.bob, spool_dir=tmp_path)
    in_memory = pgp.decrypt(data, keys=[keyset.bob.secret])
    assert released == in_memory.data
    assert parse(released).get_content() == text.decode().replace("\n", "\r\n")
    assert result.recipient == in_memory.recipient == keyset.bob.fingerprint
    assert result.content_cipher == in_memory.content_cipher
    assert result.size == len(released)
    # Text around the armor could be shown with the plaintext (EFAIL): refused.
    around = inline_message(b"Click <a href='https://x/?\r\n" + armored)
    refused(around, EmbeddedCiphertextError, tmp_path, keys=[keyset.bob.secret])
    # Held in memory only up to the policy's limit.
    small = DEFAULT.clone(max_message_size=len(data) - 1)
    refused(data, SizeLimitExceeded, tmp_path, keys=[keyset.bob.secret], policy=small)


def test_password_encrypted_message(keyset: KeySet, cli: GpgCli, tmp_path: Path) -> None:
    armored = gpg_message(cli, "--armor", "--symmetric", "--passphrase", PASSPHRASE)
    refused(
        pgp_mime_encrypted(armored),
        DecryptionError,
        tmp_path,
        keys=[keyset.dave.secret],
        passphrase=PASSPHRASE,
    )


def test_size_limit(keyset: KeySet, to_bob: Reference, tmp_path: Path) -> None:
    _, result = stream_decrypt(to_bob.data, keyset.bob, spool_dir=tmp_path)
    exact = DEFAULT.clone(max_stream_size=result.size)
    released, _ = stream_decrypt(to_bob.data, keyset.bob, spool_dir=tmp_path, policy=exact)
    assert released == to_bob.expected
    for limit in (result.size - 1, 1000):
        error = refused(
            to_bob.data,
            SizeLimitExceeded,
            tmp_path,
            keys=[keyset.bob.secret],
            policy=DEFAULT.clone(max_stream_size=limit),
        )
        assert isinstance(error, SizeLimitExceeded) and error.limit == limit


# === 6. what decrypt_stream reads =================================================================


def base64_part(reference_headers: bytes, payload: bytes) -> bytes:
    """multipart/encrypted with the encrypted part in base64, as some clients send it."""
    boundary = b"b64-boundary"
    encoded = base64.encodebytes(payload).replace(b"\n", b"\r\n")
    return (
        reference_headers
        + b'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted"; '
        + b'boundary="' + boundary + b'"\r\n\r\n'
        + b"--" + boundary + b"\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n"
        + b"\r\n--" + boundary + b"\r\nContent-Type: application/octet-stream\r\n"
        + b"Content-Transfer-Encoding: base64\r\n\r\n"
        + encoded
        + b"\r\n--" + boundary + b"--\r\n"
    )  # fmt: skip


HEADERS = (
    b"From: Alice <alice@example.org>\r\nTo: bob@example.org\r\nSubject: gpg made it\r\n"
    b"MIME-Version: 1.0\r\n"
)


GPG_OPTIONS = {
    "armored": ["--armor"],
    "armored-uncompressed": ["-z", "0", "--armor"],
    "armored-bzip2": ["--compress-algo", "bzip2", "--armor"],
    "binary-in-base64": [],
    "armored-in-base64": ["--armor"],
}


@pytest.mark.parametrize("made", GPG_OPTIONS)
def test_reads_what_gpg_writes(keyset: KeySet, cli: GpgCli, tmp_path: Path, made: str) -> None:
    """``gpg --encrypt`` of an entity in RFC 3156 multipart/encrypted, the encrypted part
    armored or in base64: decrypt_stream gives what securemail.pgp.decrypt gives."""
    entity = ENTITY + noise(100_000, 1).hex().encode() + b"\r\n"
    encrypted = gpg_message(
        cli, *GPG_OPTIONS[made], "--encrypt", "-r", keyset.bob.fingerprint, entity=entity
    )
    if made.endswith("-in-base64"):
        data = base64_part(HEADERS, encrypted)
    else:
        data = pgp_mime_encrypted(encrypted)
    expected = pgp.decrypt(data, keys=[keyset.bob.secret])
    released, result = stream_decrypt(data, keyset.bob, spool_dir=tmp_path)
    assert released == expected.data
    assert result.protected_headers == expected.protected_headers
    assert result.size == len(entity)
    assert result.recipient == keyset.bob.fingerprint


_BLANKISH = re.compile(rb"\n(?:[ \t]|\xa0)+\r?\n")


def test_binary_ciphertext_in_base64_is_not_taken_for_armor(keyset: KeySet, tmp_path: Path) -> None:
    """Regression: the in-memory reader dropped "blank-looking lines" (white space or a
    no-break space between line ends, an HTML-to-text artefact in armor) from *binary*
    OpenPGP data too, corrupting about one gpg message in thirty. Ciphertext is drawn until
    it holds such bytes, then both readers must open it."""
    keys = recipient_keys(keyset.bob.public)
    entity = ENTITY + noise(200_000, 3).hex().encode() + b"\r\n"
    for _ in range(200):
        sink = io.BytesIO()
        with OpenPGPEncryptWriter.for_recipients(sink, keys, threaded=False) as writer:
            writer.write(entity)
        binary = sink.getvalue()
        if _BLANKISH.search(binary):
            break
    else:
        pytest.fail("no ciphertext with a blank-looking line in 200 draws")
    data = base64_part(HEADERS, binary)
    opened = pgp.decrypt(data, keys=[keyset.bob.secret])
    released, _ = stream_decrypt(data, keyset.bob, spool_dir=tmp_path)
    assert released == opened.data
    assert opened.data.endswith(noise(200_000, 3).hex().encode() + b"\r\n")


@pytest.fixture(scope="module")
def variants(to_bob: Reference) -> dict[str, bytes]:
    data, sealed, boundary = to_bob.data, to_bob.sealed, to_bob.boundary
    armored = sealed.armored
    return {
        "lf-throughout": data.replace(b"\r\n", b"\n"),
        "lf-in-the-armor": data.replace(armored, armored.replace(b"\r\n", b"\n")),
        "gpg-style-armor": sealed.with_binary(sealed.binary),  # 64 columns, CRC-24 line
        "no-close-delimiter": data[: sealed.end],
        "epilogue": data + b"An epilogue nobody reads.\r\n--" + boundary + b"\r\nnot a part\r\n",
        "transport-padding": data.replace(b"--" + boundary + b"--", b"--" + boundary + b"--  \t"),
        "padded-delimiters": data.replace(b"--" + boundary + b"\r\n", b"--" + boundary + b" \r\n"),
        "no-preamble": data.replace(
            b"This is an OpenPGP/MIME encrypted message (RFC 4880 and 3156)\r\n", b""
        ),
        "explicit-7bit": data.replace(
            b"Content-Description: OpenPGP encrypted message\r\n",
            b"Content-Transfer-Encoding: 7bit\r\n",
            1,
        ),
        "armor-headers": data.replace(
            b"-----BEGIN PGP MESSAGE-----\r\n",
            b"-----BEGIN PGP MESSAGE-----\r\nVersion: GnuPG v2\r\nComment: hi\r\n",
            1,
        ),
    }


VARIANTS = [
    "lf-throughout",
    "lf-in-the-armor",
    "gpg-style-armor",
    "no-close-delimiter",
    "epilogue",
    "transport-padding",
    "padded-delimiters",
    "no-preamble",
    "explicit-7bit",
    "armor-headers",
]


@pytest.mark.parametrize("variant", VARIANTS)
def test_reads_other_shapes_of_the_message(
    keyset: KeySet, to_bob: Reference, variants: dict[str, bytes], tmp_path: Path, variant: str
) -> None:
    data = variants[variant]
    assert data != to_bob.data
    released, _ = stream_decrypt(data, keyset.bob, spool_dir=tmp_path)
    assert released == to_bob.expected
    assert pgp.decrypt(data, keys=[keyset.bob.secret]).data == to_bob.expected


@pytest.mark.parametrize(
    "where", ["empty", "in-the-header", "in-the-version-part", "in-the-armor", "all"]
)
def test_prefix(keyset: KeySet, to_bob: Reference, tmp_path: Path, where: str) -> None:
    """Bytes already read from the source (the command line reads ahead to decide whether
    to stream) are passed as ``prefix``."""
    data = to_bob.data
    cut = {
        "empty": 0,
        "in-the-header": 17,
        "in-the-version-part": data.index(b"Version: 1") + 4,
        "in-the-armor": to_bob.sealed.begin + 5000,
        "all": len(data),
    }[where]
    released, _ = stream_decrypt(
        data, keyset.bob, source=io.BytesIO(data[cut:]), prefix=data[:cut], spool_dir=tmp_path
    )
    assert released == to_bob.expected


@pytest.mark.parametrize("lf", [False, True], ids=["crlf", "lf"])
def test_a_few_bytes_per_read(keyset: KeySet, tmp_path: Path, lf: bool) -> None:
    attachment = StreamedAttachment(io.BytesIO(noise(20_000, 2)), filename="small.bin")
    data = stream_encrypt(builder().build(), [keyset.alice], attachments=[attachment])
    closing = b"\r\n--" + Sealed(data).boundary.encode() + b"--\r\n"
    damaged = data[: -len(closing)] + third_part(Sealed(data).boundary.encode())
    if lf:
        data, damaged = data.replace(b"\r\n", b"\n"), damaged.replace(b"\r\n", b"\n")
    expected = pgp.decrypt(data, keys=[keyset.alice.secret]).data
    released, _ = stream_decrypt(data, keyset.alice, source=TrickleSource(data), spool_dir=tmp_path)
    assert released == expected
    # A third part is found too when it comes a few bytes at a time.
    sink = RecordingSink()
    with pytest.raises(EmbeddedCiphertextError):
        streaming.decrypt_stream(
            TrickleSource(damaged), sink, keys=[keyset.alice.secret], spool_dir=tmp_path
        )
    assert sink.writes == []
    assert list(tmp_path.iterdir()) == []


def signed_by_gpg(cli: GpgCli, signer: PgpKey, to: PgpKey, *extra: str) -> bytes:
    armored = gpg_message(
        cli, "--sign", "--local-user", signer.fingerprint, *extra, "--armor", "--encrypt",
        "-r", to.fingerprint,
    )  # fmt: skip
    return pgp_mime_encrypted(armored)


@pytest.mark.parametrize("extra", [(), ("--textmode",), ("-z", "6")], ids=repr)
def test_signed_and_encrypted_by_gpg(
    keyset: KeySet, cli: GpgCli, tmp_path: Path, extra: tuple[str, ...]
) -> None:
    """``gpg --sign --encrypt`` (binary or text signature, compressed or not): the
    plaintext is released, and the signature made with the encryption is checked by gpg
    over the literal data as it streams by, with the verdict the in-memory reader gives."""
    data = signed_by_gpg(cli, keyset.alice, keyset.bob, *extra)
    in_memory = pgp.decrypt(data, keys=[keyset.bob.secret, keyset.alice.public])
    assert in_memory.signature is not None and in_memory.signature.verified
    out = io.BytesIO()
    result = streaming.decrypt_stream(
        io.BytesIO(data), out, keys=[keyset.bob.secret, keyset.alice.public], spool_dir=tmp_path
    )
    assert out.getvalue() == in_memory.data
    assert result.authenticated
    assert result.signature is not None and result.signature.verified, result.signature
    assert result.signature.signer == "alice@example.org"
    assert result.signature.fingerprint == keyset.alice.fingerprint
    assert result.signature.data is None
    assert not workers()


def test_signature_made_with_the_encryption_failures(
    keyset: KeySet, cli: GpgCli, tmp_path: Path
) -> None:
    """An unknown signer is not checked; a signer who is not the From address fails; both
    as in memory, the plaintext released either way (it passed the MDC)."""
    unknown = signed_by_gpg(cli, keyset.alice, keyset.bob)
    mismatch = signed_by_gpg(cli, keyset.carol, keyset.bob)  # From: alice
    for data, keys, status in (
        (unknown, [keyset.bob.secret], SignatureStatus.NOT_CHECKED),
        (mismatch, [keyset.bob.secret, keyset.carol.public], SignatureStatus.FAILED),
    ):
        in_memory = pgp.decrypt(data, keys=keys)
        assert in_memory.signature is not None
        out = io.BytesIO()
        result = streaming.decrypt_stream(io.BytesIO(data), out, keys=keys, spool_dir=tmp_path)
        assert out.getvalue() == in_memory.data
        assert result.signature is not None
        assert result.signature.status == in_memory.signature.status == status
        assert result.signature.reason == in_memory.signature.reason
        assert result.signature.fingerprint == in_memory.signature.fingerprint
    assert not workers()


def test_mbox_separator_line(keyset: KeySet, to_bob: Reference, tmp_path: Path) -> None:
    """A message saved from a mail store starts with an mbox ``From `` line (RFC 4155);
    securemail.pgp.decrypt drops it, and so must decrypt_stream, or a large saved message
    could not be decrypted by the command line while a small one can."""
    data = b"From alice@example.org Fri May 17 09:30:00 2024\r\n" + to_bob.data
    assert pgp.decrypt(data, keys=[keyset.bob.secret]).data == to_bob.expected
    released, _ = stream_decrypt(data, keyset.bob, spool_dir=tmp_path)
    assert released == to_bob.expected


def test_legacy_display_element_as_in_memory(keyset: KeySet, tmp_path: Path) -> None:
    """A message encrypted with legacy display (``COMPATIBLE``: the Subject repeated at the
    top of the body, RFC 9788 legacy display) reads as securemail.pgp.decrypt reads it: the
    element removed, and a header that matches the body that follows it."""
    compatible = DEFAULT.clone(legacy_display=True)
    data = pgp.encrypt(builder().build(), keys=[keyset.bob.public], policy=compatible).data
    expected = pgp.decrypt(data, keys=[keyset.bob.secret]).data
    body = parse(expected).get_body(("plain",))
    assert body is not None and body.get_content().replace("\r\n", "\n") == TEXT
    released, _ = stream_decrypt(data, keyset.bob, spool_dir=tmp_path)
    text = parse(released).get_body(("plain",))
    assert text is not None
    assert text.get_content().replace("\r\n", "\n") == TEXT, "the header does not fit the body"
    assert released == expected


def test_large_legacy_display_message_as_in_memory(keyset: KeySet, tmp_path: Path) -> None:
    """With a 3 MiB attachment, more than decrypt_stream holds in memory: the element is
    still removed (it is in the first part, the text), byte for byte as the in-memory
    reader removes it, and the attachment streams through rather than being held whole."""
    compatible = DEFAULT.clone(legacy_display=True)
    attachment = noise(3 * MiB, 23)
    built = builder().attach(attachment, filename="big.bin").build()
    data = pgp.encrypt(built, keys=[keyset.bob.public], policy=compatible).data
    expected = pgp.decrypt(data, keys=[keyset.bob.secret]).data
    assert len(expected) > 2 * LEGACY_DISPLAY_LIMIT
    sink = RecordingSink()
    streaming.decrypt_stream(io.BytesIO(data), sink, keys=[keyset.bob.secret], spool_dir=tmp_path)
    assert sink.data == expected
    message = parse(sink.data)
    text = message.get_body(("plain",))
    assert text is not None and text.get_content().replace("\r\n", "\n") == TEXT
    assert [p.get_content() for p in message.iter_attachments()] == [attachment]
    assert max(len(w) for w in sink.writes) < 2 * LEGACY_DISPLAY_LIMIT, "held whole"


def test_mixed_line_ends_header_section(keyset: KeySet, to_bob: Reference, tmp_path: Path) -> None:
    """The header section ends at the first empty line, whichever its line ends: a message
    saved with LF line ends whose armor kept CRLF has a CRLF CRLF only further on."""
    data, sealed = to_bob.data, to_bob.sealed
    mixed = (
        data[: sealed.begin].replace(b"\r\n", b"\n")
        + sealed.armored
        + data[sealed.end :].replace(b"\r\n", b"\n")
    )
    assert pgp.decrypt(mixed, keys=[keyset.bob.secret]).data == to_bob.expected
    released, _ = stream_decrypt(mixed, keyset.bob, spool_dir=tmp_path)
    assert released == to_bob.expected


# --- the shared corpus ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus_engines(gpg_bin: str, interop_dir: Path) -> Iterator[Engines]:
    pool = Engines(gpg_bin, interop_dir)
    yield pool
    pool.close()


def _corpus_id(case: Case) -> str:
    return f"{case.path}{f'#{case.attached}' if case.attached else ''}~{case.keys}"


@pytest.mark.parametrize("case", CASES, ids=_corpus_id)
def test_corpus_message_reads_as_in_memory(
    case: Case, interop_dir: Path, corpus_engines: Engines, tmp_path: Path
) -> None:
    """Every PGP message of the shared corpus (see tests/interop/test_corpus_pgp.py): what
    securemail.pgp.decrypt reads, decrypt_stream reads to the same message (line ends
    aside: the in-memory reader makes the whole entity CRLF), the PGP/MIME that servers
    rewrap (Exchange, Google Workspace, footer-adding gateways) and inline PGP included.
    What the in-memory reader refuses, decrypt_stream refuses too, with a typed error.
    Never an untyped error, never a byte released with a refusal."""
    data = (interop_dir / case.path).read_bytes()
    if case.attached:
        data = attached_message(data, case.attached)
    engine = corpus_engines.get(case.keys)
    passphrase = KEYSETS[case.keys].passphrase
    both = as_in_memory(
        lambda: pgp.decrypt(data, gnupg=engine, passphrase=passphrase),
        lambda sink: streaming.decrypt_stream(
            io.BytesIO(data), sink, gnupg=engine, passphrase=passphrase, spool_dir=tmp_path
        ),
        tmp_path,
    )
    if both is None:
        return
    in_memory, result = both
    # A signature made with the encryption: the same verdict, for the same reason.
    ours, theirs = result.signature, in_memory.signature
    assert (ours is None) == (theirs is None)
    if ours is not None and theirs is not None:
        assert (ours.status, ours.reason, ours.signer, ours.fingerprint) == (
            theirs.status,
            theirs.reason,
            theirs.signer,
            theirs.fingerprint,
        )


def test_thunderbird_message_with_data_after_the_deflate_stream(
    interop_dir: Path, corpus_engines: Engines, tmp_path: Path
) -> None:
    """Thunderbird 102 (RNP) wrote this message's compressed packet with 13 octets after
    the end of the deflate stream; gpg, Sequoia and securemail.pgp.decrypt read it (the MDC
    covers those octets like the rest)."""
    data = (interop_dir / "deltachat/messages/thunderbird_encrypted_unsigned.eml").read_bytes()
    engine = corpus_engines.get("dc")
    expected = pgp.decrypt(data, gnupg=engine).data
    text = parse(expected).get_body(("plain",))
    assert text is not None and text.get_content().strip() == "Hi!"
    sink = RecordingSink()
    streaming.decrypt_stream(io.BytesIO(data), sink, gnupg=engine, spool_dir=tmp_path)
    assert sink.data == expected


# === 7. bounded memory ============================================================================

STREAMED_SIZE = 256 * MiB
PEAK_LIMIT = 24 * MiB


def big_message_stream(keyset: KeySet, sink: Sink) -> None:
    attachment = StreamedAttachment(PatternSource(STREAMED_SIZE), filename="disk.img")
    streaming.encrypt(sink, builder().build(), keys=[keyset.alice.public], attachments=[attachment])


@pytest.mark.slow
def test_encrypt_256_mib_in_bounded_memory(keyset: KeySet) -> None:
    sink = DiscardingSink()
    with traced_peak() as peak:
        big_message_stream(keyset, sink)
        highest = peak()
    assert sink.size > STREAMED_SIZE * 4 // 3 * 4 // 3  # base64 of the file, then armor
    assert highest < PEAK_LIMIT, f"peak {highest / MiB:.1f} MiB"


@pytest.mark.slow
def test_decrypt_256_mib_in_bounded_memory(keyset: KeySet, tmp_path: Path) -> None:
    """Encrypted in a thread into a pipe, decrypted from it: no message file on disk, only
    the (encrypted) spool. The peak covers both sides at once."""
    sink = DiscardingSink()
    with traced_peak() as peak:
        result = decrypted_from_pipe(
            lambda pipe: big_message_stream(keyset, pipe),
            lambda source: streaming.decrypt_stream(
                source, sink, keys=[keyset.alice.secret], spool_dir=tmp_path
            ),
        )
        highest = peak()
    assert result.authenticated
    assert result.size > STREAMED_SIZE * 4 // 3
    assert sink.size > STREAMED_SIZE * 4 // 3
    assert list(tmp_path.iterdir()) == []
    assert highest < PEAK_LIMIT, f"peak {highest / MiB:.1f} MiB"


# === 8. the command line ==========================================================================

BIG = STREAM_THRESHOLD + MiB
"""Larger than what the command line handles in memory: it streams."""


def securemail(cwd: Path, command: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "securemail", *shlex.split(command)],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        timeout=120,
        check=False,
    )


def pipeline(cwd: Path, *commands: str) -> tuple[bytes, list[int], list[str]]:
    """``securemail A | securemail B | ...`` with OS pipes between the processes."""
    processes: list[subprocess.Popen[bytes]] = []
    upstream = None
    for command in commands:
        process = subprocess.Popen(
            [sys.executable, "-m", "securemail", *shlex.split(command)],
            cwd=cwd,
            stdin=upstream if upstream is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        if upstream is not None:
            upstream.close()
        upstream = process.stdout
        processes.append(process)
    assert upstream is not None
    stdout = upstream.read()
    upstream.close()
    errors = []
    for process in processes:
        assert process.stderr is not None
        errors.append(process.stderr.read().decode())
        process.stderr.close()
        process.wait(timeout=120)
    return stdout, [p.returncode for p in processes], errors


COMPOSE = (
    "compose --from alice@example.org --to bob@example.org --subject 'Große Datei' "
    "--text-file body.txt --attach big.bin"
)
ENCRYPT = "encrypt --pgp --recipient-key bob.pub.asc"
DECRYPT = "decrypt --pgp --secret-key bob.asc"


@pytest.fixture(scope="module")
def workdir(keyset: KeySet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Bob's keys, a text and a large file; ``plain.eml`` composed with that file attached
    and ``encrypted.eml``, its encryption to Bob."""
    path = tmp_path_factory.mktemp("cli-stream-pgp")
    (path / "bob.asc").write_bytes(keyset.bob.secret)
    (path / "bob.pub.asc").write_bytes(keyset.bob.public)
    (path / "body.txt").write_text(TEXT, encoding="utf-8")
    (path / "big.bin").write_bytes(noise(BIG, 12))
    for command in (f"{COMPOSE} -o plain.eml", f"{ENCRYPT} -i plain.eml -o encrypted.eml"):
        done = securemail(path, command)
        assert done.returncode == 0 and done.stderr == b"", done.stderr
    return path


def test_cli_compose_encrypt_decrypt_through_pipes(workdir: Path) -> None:
    stdout, codes, errors = pipeline(workdir, COMPOSE, ENCRYPT, DECRYPT)
    assert codes == [0, 0, 0], errors
    assert errors == ["", "", ""]
    message = parse(stdout)
    assert message["Subject"] == "Große Datei"
    assert leaves(message) == [
        ("text/plain", None, digest(TEXT.replace("\n", "\r\n").encode())),
        ("application/octet-stream", "big.bin", digest((workdir / "big.bin").read_bytes())),
    ]


def test_cli_round_trip_restores_the_composed_message(workdir: Path) -> None:
    plain = (workdir / "plain.eml").read_bytes()
    assert len(plain) > STREAM_THRESHOLD
    encrypted = (workdir / "encrypted.eml").read_bytes()
    assert parse(encrypted)["Subject"] == "..."
    # Written by the streaming writer (76-column armor; gpg's is 64 columns).
    assert len(Sealed(encrypted).armored.split(b"\r\n")[3]) == 76
    done = securemail(workdir, DECRYPT, encrypted)
    assert done.returncode == 0 and done.stderr == b"", done.stderr
    decrypted = done.stdout
    assert split_message(decrypted)[1] == split_message(plain)[1]
    assert restored_header(decrypted) == restored_header(plain)
    assert parse(decrypted).get_param("hp") == "cipher"


def test_cli_decrypts_a_large_message_exchange_rewrapped(workdir: Path) -> None:
    """Over the command line's in-memory limit, PGP/MIME that Exchange rewrapped (empty
    text, version part, encrypted.asc in base64) streams to the same message."""
    encrypted = (workdir / "encrypted.eml").read_bytes()
    reference = Reference(Sealed(encrypted), b"")
    version, _ = multipart_parts(encrypted)
    exchange = rewrapped(reference, EMPTY_TEXT, version, exchange_data_part(reference))
    assert len(exchange) > STREAM_THRESHOLD
    direct = securemail(workdir, DECRYPT, encrypted)
    done = securemail(workdir, DECRYPT, exchange)
    assert done.returncode == 0 and done.stderr == b"", done.stderr
    assert split_message(done.stdout)[1] == split_message(direct.stdout)[1]
    assert restored_header(done.stdout) == restored_header(direct.stdout)


def test_cli_decrypts_a_large_inline_pgp_message(
    workdir: Path, cli: GpgCli, keyset: KeySet
) -> None:
    """Over the command line's in-memory limit, an inline-PGP message is still read (in
    memory, up to the policy's limit) rather than refused for not being PGP/MIME."""
    text = (workdir / "body.txt").read_bytes() * (STREAM_THRESHOLD // 40)
    armored = cli.run(
        "--armor", "--compress-algo", "none", "--encrypt", "-r", keyset.bob.fingerprint, stdin=text
    ).stdout
    data = inline_message(armored)
    assert len(data) > STREAM_THRESHOLD
    done = securemail(workdir, DECRYPT, data)
    assert done.returncode == 0 and done.stderr == b"", done.stderr
    assert parse(done.stdout).get_content() == text.decode().replace("\n", "\r\n")


def test_cli_damaged_message_leaves_no_output_file(workdir: Path) -> None:
    sealed = Sealed((workdir / "encrypted.eml").read_bytes())
    offsets = ciphertext_offsets(sealed.binary)
    (workdir / "flipped.eml").write_bytes(sealed.flipped(offsets[len(offsets) // 2]))
    before = sorted(p.name for p in workdir.iterdir())
    done = securemail(workdir, f"{DECRYPT} -i flipped.eml -o out.eml")
    stderr = done.stderr.decode()
    assert done.returncode == 1, stderr
    assert "Traceback" not in stderr
    assert len(stderr.splitlines()) == 1 and stderr.startswith("securemail: error: "), stderr
    assert done.stdout == b""
    assert not (workdir / "out.eml").exists()
    assert sorted(p.name for p in workdir.iterdir()) == before, "a temporary file was left"
