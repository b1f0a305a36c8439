"""Streamed attachments carried unencoded inside encryption (``Policy.binary_attachments``).

What the streaming recipes write with the policy on is read byte for byte by independent
readers (``openssl cms -decrypt``, ``gpgsm --decrypt``, ``gpg --decrypt``, then the standard
library's parser) and by securemail's own in-memory and streaming readers; the files are
made of every line ending and delimiter look-alike a MIME parser could trip on. Where a
signature covers the content the policy does not apply (signed content stays 7-bit), and a
file that holds the multipart boundary stops the message.
"""

from __future__ import annotations

import email.parser
import email.policy
import hashlib
import io
import random
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pki
import pytest
from cryptography.hazmat.primitives import hashes
from interop.tools import Gpgsm, OpenSSL, Workspace, expect_ok
from pgp.keys import GpgCli, KeySet, PgpKey, shared_keyset, status_keywords

from securemail import pgp, smime
from securemail.errors import MalformedMessageError
from securemail.keys import Recipient
from securemail.policy import DEFAULT
from securemail.smime import MODERN
from securemail.smime.enveloped import decrypt_envelope
from securemail.stream import pgp as stream_pgp
from securemail.stream import smime as stream_smime
from securemail.stream.base import CHUNK
from securemail.stream.mime import MultipartWriter, StreamedAttachment

MiB = 1024 * 1024
BINARY = DEFAULT.clone(binary_attachments=True)
SUBJECT = "Vertrag (unterschrieben)"
TEXT = "The signed contract is attached.\n"

AWKWARD = [
    b"\r\n",
    b"\n",
    b"\r",
    b"\n\r",
    b"\r\n.\r\n",
    b"\r\n\r\n",
    b"\nFrom \n",
    b"\r\n--",
    b"\r\n--\r\n",
    b"\x00",
    b"\xff\xfe",
    b"=\r\n",
    b"-----BEGIN PGP MESSAGE-----\r\n",
]
"""What a MIME or armor reader might treat specially: every kind of line end, a lone dot,
an mbox From line, a delimiter without a boundary, NUL, non-ASCII, a soft line break."""


def awkward(size: int, seed: int) -> bytes:
    """``size`` bytes of noise with the AWKWARD sequences strewn in, at the start, the end
    and around every CHUNK edge (where the writers split their work)."""
    rng = random.Random(seed)  # noqa: S311 (test data, not secrets)
    data = bytearray(rng.randbytes(size))
    places = [0, max(0, size - 16)] + [edge - 3 for edge in range(CHUNK, size, CHUNK)]
    places += [rng.randrange(size) for _ in range(size // 4096)] if size else []
    for index, place in enumerate(places):
        piece = AWKWARD[index % len(AWKWARD)]
        data[place : place + len(piece)] = piece
    return bytes(data[:size])


SIZES = (0, 1, 2, 57, CHUNK - 1, CHUNK, CHUNK + 1, 3 * MiB + 5)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Path, bytes]]:
    directory = tmp_path_factory.mktemp("binary-attachments")
    made = []
    for size in SIZES:
        path = directory / f"file-{size}.bin"
        data = awkward(size, size)
        path.write_bytes(data)
        made.append((path, data))
    return made


def streamed(files: list[tuple[Path, bytes]]) -> list[StreamedAttachment]:
    return [StreamedAttachment(path, content_type="application/octet-stream") for path, _ in files]


def message() -> EmailMessage:
    return pki.message(subject=SUBJECT, text=TEXT)


def parse(data: bytes) -> EmailMessage:
    """The standard library's reading (from bytes: a text wrapper would translate CRs)."""
    parsed = email.parser.BytesParser(policy=email.policy.default).parsebytes(data)
    assert isinstance(parsed, EmailMessage)
    return parsed


def digest(data: bytes) -> tuple[int, str]:
    return len(data), hashlib.sha256(data).hexdigest()


def attachments(entity: bytes) -> list[tuple[str | None, str, tuple[int, str]]]:
    """Each attachment's name, transfer encoding and decoded content."""
    return [
        (
            part.get_filename(),
            str(part.get("Content-Transfer-Encoding", "")).lower(),
            digest(part.get_payload(decode=True) or b""),
        )
        for part in parse(entity).iter_attachments()
    ]


def expected(files: list[tuple[Path, bytes]], encoding: str) -> list[object]:
    return [(path.name, encoding, digest(data)) for path, data in files]


def body_of(data: bytes) -> bytes:
    return data.partition(b"\r\n\r\n")[2]


# === S/MIME ======================================================================================


@pytest.fixture(scope="module")
def people() -> pki.PKI:
    return pki.shared_pki()


@pytest.fixture(scope="module")
def openssl(openssl_bin: str, tmp_path_factory: pytest.TempPathFactory, people: pki.PKI) -> OpenSSL:
    work = Workspace(tmp_path_factory.mktemp("openssl-binary"))
    work.identity("rsa", people.users["rsa"])
    return OpenSSL(openssl_bin, work)


def smime_encrypt(
    people: pki.PKI, files: list[tuple[Path, bytes]], cipher: str, **options: object
) -> bytes:
    recipient = Recipient(
        people.users["rsa"].cert, capabilities=MODERN if cipher == "gcm" else None
    )
    sink = io.BytesIO()
    stream_smime.encrypt(sink, message(), [recipient], attachments=streamed(files), **options)
    return sink.getvalue()


@pytest.mark.parametrize("cipher", ["gcm", "cbc"])
def test_smime_binary_parts_read_by_openssl_and_securemail(
    people: pki.PKI, files: list[tuple[Path, bytes]], openssl: OpenSSL, cipher: str, tmp_path: Path
) -> None:
    data = smime_encrypt(people, files, cipher, policy=BINARY)
    seven_bit = smime_encrypt(people, files, cipher)
    # One base64 layer instead of two: the message is about 3/4 of the 7-bit one.
    assert len(data) < 0.8 * len(seven_bit)
    outer = body_of(data)
    assert outer.endswith(b"\r\n") and {len(line) for line in outer.split(b"\r\n")[:-2]} == {76}

    # openssl, then the standard library's parser: every file byte for byte, as binary.
    path = openssl.workspace.write(f"binary-{cipher}.eml", data)
    plaintext = openssl(
        "cms", "-decrypt", "-binary", "-recip", "rsa.pem", "-inkey", "rsa.key", "-in", path
    )
    issued = people.users["rsa"]
    assert plaintext == decrypt_envelope(pki.smime_der(data), issued.key, issued.cert).content
    assert parse(plaintext)["Subject"] == SUBJECT
    assert attachments(plaintext) == expected(files, "binary")

    # securemail's in-memory and streaming readers give the same message.
    identity = pki.identity(issued, people.intermediate)
    decrypted = smime.decrypt(data, identity)
    assert decrypted.authenticated == (cipher == "gcm")
    assert attachments(decrypted.data) == expected(files, "binary")
    assert parse(decrypted.data)["Subject"] == SUBJECT
    sink = io.BytesIO()
    result = stream_smime.decrypt_stream(io.BytesIO(data), sink, identity, spool_dir=tmp_path)
    assert sink.getvalue() == decrypted.data
    assert result.authenticated == (cipher == "gcm")
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def gpgsm(
    gpgsm_bin: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[pki.PKI, Gpgsm]]:
    """gpgsm holding bob's key, in a PKI of its own (the root signed with SHA-384, which
    gpgsm 2.2 verifies)."""
    made = pki.make_pki(root_signature_hash=hashes.SHA384())
    tool = Gpgsm.create(
        gpgsm_bin, tmp_path_factory.mktemp("gpgsm-binary"), trusted_root=made.root.cert
    )
    try:
        tool.import_certificates(made.intermediate.cert)
        tool.import_identity(made.users["rsa"], made.intermediate.cert)
        yield made, tool
    finally:
        tool.kill_agent()


def test_gpgsm_decrypts_binary_parts(
    gpgsm: tuple[pki.PKI, Gpgsm], files: list[tuple[Path, bytes]]
) -> None:
    """gpgsm 2.2 reads EnvelopedData (AES-CBC), not AuthEnvelopedData."""
    made, tool = gpgsm
    data = smime_encrypt(made, files, "cbc", policy=BINARY)
    path = tool.workspace.write("binary.p7m", pki.smime_der(data))
    plaintext = expect_ok(tool.run("--decrypt", path, passphrase=True)).stdout
    assert attachments(plaintext) == expected(files, "binary")


def test_signed_content_stays_base64(people: pki.PKI, files: list[tuple[Path, bytes]]) -> None:
    """Sign, then encrypt: what the signature covers must be 7-bit, so the policy gives
    way and the files go base64; the signature verifies."""
    signer = pki.identity(people.users["rsa"], people.intermediate)  # alice, the sender
    data = smime_encrypt(people, files[:4], "gcm", policy=BINARY, signer=signer)
    decrypted = smime.decrypt(data, pki.identity(people.users["rsa"], people.intermediate))
    verified = smime.verify(
        decrypted.data, trust=[people.root.cert], certificates=[people.intermediate.cert]
    )
    assert verified.verified, verified.reason
    assert verified.data is not None
    assert attachments(verified.data) == expected(files[:4], "base64")


def test_off_by_default(people: pki.PKI, files: list[tuple[Path, bytes]]) -> None:
    assert DEFAULT.binary_attachments is False
    data = smime_encrypt(people, files[:3], "gcm")
    decrypted = smime.decrypt(data, pki.identity(people.users["rsa"], people.intermediate))
    assert attachments(decrypted.data) == expected(files[:3], "base64")


# === PGP/MIME ====================================================================================


@pytest.fixture(scope="module")
def keyset(gpg_bin: str, tmp_path_factory: pytest.TempPathFactory) -> KeySet:
    return shared_keyset(gpg_bin, lambda: tmp_path_factory.mktemp("pgp-keys-binary"))


@pytest.fixture(scope="module")
def gpg(gpg_bin: str, keyset: KeySet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GpgCli]:
    tool = GpgCli(gpg_bin, tmp_path_factory.mktemp("gpg-binary") / "home")
    tool.add(keyset.bob.secret)
    yield tool
    tool.stop()


def armored_block(data: bytes) -> bytes:
    start = data.index(b"-----BEGIN PGP MESSAGE-----")
    return data[start : data.index(b"-----END PGP MESSAGE-----\r\n") + 27]


@pytest.mark.parametrize("reader", ["gpg", "securemail"])
def test_pgp_binary_parts(
    keyset: KeySet,
    gpg: GpgCli,
    files: list[tuple[Path, bytes]],
    tmp_path: Path,
    reader: str,
) -> None:
    bob: PgpKey = keyset.bob
    sink = io.BytesIO()
    stream_pgp.encrypt(
        sink, message(), keys=[bob.public], attachments=streamed(files), policy=BINARY
    )
    data = sink.getvalue()
    if reader == "gpg":
        done = gpg.run("--decrypt", stdin=armored_block(data), check=False)
        assert done.returncode == 0, done.stderr.decode("utf-8", "replace")[-2000:]
        assert {"DECRYPTION_OKAY", "GOODMDC"} <= set(status_keywords(done))
        assert parse(done.stdout)["Subject"] == SUBJECT
        assert attachments(done.stdout) == expected(files, "binary")
        return
    decrypted = pgp.decrypt(data, keys=[bob.secret])
    assert attachments(decrypted.data) == expected(files, "binary")
    out = io.BytesIO()
    result = stream_pgp.decrypt_stream(io.BytesIO(data), out, keys=[bob.secret], spool_dir=tmp_path)
    assert out.getvalue() == decrypted.data
    assert result.authenticated
    assert list(tmp_path.iterdir()) == []


# === a file that holds the boundary ==============================================================

BOUNDARY = "----=_securemail_0123456789abcdef0123456789abcdef"


def _placed(size: int, where: int, text: bytes) -> bytes:
    data = bytearray(random.Random(where).randbytes(size))  # noqa: S311 (test data)
    data[where : where + len(text)] = text
    return bytes(data)


@pytest.mark.parametrize(
    "where",
    [0, 1, 5000, CHUNK - 20, CHUNK - 1, 3 * CHUNK - 10, 4 * CHUNK - len(BOUNDARY) - 2],
    ids=lambda w: f"at-{w}",
)
@pytest.mark.parametrize("before", [b"\r\n--", b"\n--", b"\r--", b"--", b"x"])
def test_boundary_inside_a_binary_part_is_refused(where: int, before: bytes) -> None:
    """Wherever it falls (across the writer's CHUNK steps too) and whatever precedes it."""
    data = _placed(4 * CHUNK, where, before + BOUNDARY.encode())
    sink = io.BytesIO()
    parts = MultipartWriter(sink, BOUNDARY)
    with pytest.raises(MalformedMessageError) as caught:
        parts.add_attachment(StreamedAttachment(io.BytesIO(data), filename="x.bin"), binary=True)
    assert "boundary" in str(caught.value)


READ = 16 * CHUNK
"""What ``copy_into`` reads at a time: a whole read reaches the guard as the buffer itself."""


@pytest.mark.parametrize(
    "where",
    [100, READ - len(BOUNDARY) // 2, READ - len(BOUNDARY), READ, 2 * READ - 3],
    ids=lambda w: f"at-{w}",
)
def test_boundary_in_whole_reads_is_refused(where: int) -> None:
    """In a file larger than one read, inside a read or straddling two."""
    data = _placed(3 * READ + 11, where, BOUNDARY.encode())
    parts = MultipartWriter(io.BytesIO(), BOUNDARY)
    with pytest.raises(MalformedMessageError, match="boundary"):
        parts.add_attachment(StreamedAttachment(io.BytesIO(data), filename="x.bin"), binary=True)


def test_large_file_without_the_boundary_passes_unchanged() -> None:
    """Near misses at the borders of whole reads: nothing refused, nothing changed."""
    data = bytearray(_placed(3 * READ + 11, 5, b""))
    for border in (READ, 2 * READ):
        near = b"\r\n--" + BOUNDARY[:-1].encode()
        data[border - len(near) // 2 : border - len(near) // 2 + len(near)] = near
    sink = io.BytesIO()
    parts = MultipartWriter(sink, BOUNDARY)
    parts.add_attachment(StreamedAttachment(io.BytesIO(bytes(data)), filename="x.bin"), binary=True)
    parts.finalize()
    body = sink.getvalue().split(b"\r\n\r\n", 1)[1]
    assert body == bytes(data) + b"\r\n--" + BOUNDARY.encode() + b"--\r\n"


@pytest.mark.parametrize("read", [1, 7, CHUNK - 1, 3 * CHUNK])
def test_boundary_split_across_reads_is_refused(read: int) -> None:
    """Delivered by a source in pieces of ``read`` bytes, the boundary straddles them."""
    data = _placed(3 * CHUNK, CHUNK - 10, BOUNDARY.encode())

    class Trickle(io.RawIOBase):
        def __init__(self) -> None:
            self.position = 0

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
            count = min(len(buffer), read, len(data) - self.position)
            buffer[:count] = data[self.position : self.position + count]
            self.position += count
            return count

    parts = MultipartWriter(io.BytesIO(), BOUNDARY)
    with pytest.raises(MalformedMessageError):
        parts.add_attachment(StreamedAttachment(Trickle(), filename="x.bin"), binary=True)


@pytest.mark.parametrize(
    "near",
    [BOUNDARY[:-1].encode(), BOUNDARY.encode()[:20] + b"\r\n" + BOUNDARY.encode()[20:]],
    ids=["one-short", "broken-by-crlf"],
)
def test_near_misses_pass_unchanged(near: bytes) -> None:
    data = _placed(2 * CHUNK, CHUNK - 15, b"\r\n--" + near)
    sink = io.BytesIO()
    parts = MultipartWriter(sink, BOUNDARY)
    parts.add_attachment(StreamedAttachment(io.BytesIO(data), filename="x.bin"), binary=True)
    parts.finalize()
    written = sink.getvalue()
    assert b"Content-Transfer-Encoding: binary\r\n" in written
    body = written.split(b"\r\n\r\n", 1)[1]
    assert body == data + b"\r\n--" + BOUNDARY.encode() + b"--\r\n"


def test_a_base64_part_is_not_searched() -> None:
    """Base64 text cannot hold the boundary (it has ``_`` and ``=``): no search needed, and
    the bytes a binary part would refuse go base64 unchanged."""
    data = _placed(CHUNK, 100, b"\r\n--" + BOUNDARY.encode())
    sink = io.BytesIO()
    parts = MultipartWriter(sink, BOUNDARY)
    parts.add_attachment(StreamedAttachment(io.BytesIO(data), filename="x.bin"))
    parts.finalize()
    assert attachments(
        b'Content-Type: multipart/mixed; boundary="'
        + BOUNDARY.encode()
        + b'"\r\n\r\n'
        + sink.getvalue()
    ) == [("x.bin", "base64", digest(data))]
