"""Native OpenPGP streams (securemail.stream.openpgp and the modules under it), against gpg.

* What :class:`OpenPGPEncryptWriter` on :class:`ArmorWriter` writes is one armored block and
  nothing else, and ``gpg --decrypt`` opens it to exactly the input: RSA-2048/3072, Cv25519
  and NIST P-256/P-384 recipients, one and three at once, sizes around every boundary of
  the framing (512 for the first partial length, 64 KiB for the blocks) and a few MiB.
* gpg 2.2 finds the end of armor without a checksum line only at ``=`` padding: every
  length is checked to leave the binary message's length indivisible by 3.
* :func:`decrypt_stream` reads what ``gpg --encrypt`` writes (armored and binary, with
  ``-z 0`` and compressed with ZIP, ZLIB and BZip2, signed too) byte for byte, also when
  the source hands it a few bytes at a time.
* A truncated stream, a flipped byte at the start, middle and end of the ciphertext, a
  flipped MDC, a message without MDC, a compression bomb, a wrong key or passphrase: each
  gives its typed error, no byte in the sink, no file in the spool directory, no file
  descriptor left open.
* Memory stays bounded while 256 MiB pass through the writer and through the reader
  (``tracemalloc`` peak, never time; the throughput is printed for information only).

The armor of damaged messages is rebuilt with :mod:`pgp.keys` (with a correct CRC-24) and
packets are found with a small parser of this file's own, so that the code under test does
not check itself.
"""

from __future__ import annotations

import base64
import gc
import hashlib
import io
import os
import random
import re
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.decrepit.ciphers.modes import CFB
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from pgp.keys import PASSPHRASE, GpgCli, KeySet, PgpKey, armor, shared_keyset, status_keywords

from securemail.errors import (
    AlreadyFinalized,
    DecryptionError,
    IntegrityError,
    KeyLoadError,
    NoSecretKeyError,
    RecipientError,
    SecureMailError,
    SizeLimitExceeded,
    UnsupportedAlgorithmError,
    WrongPasswordError,
)
from securemail.pgp.gpg import GnuPG
from securemail.stream.base import Data
from securemail.stream.openpgp import (
    BLOCK,
    ArmorWriter,
    OpenPGPDecryptResult,
    OpenPGPEncryptWriter,
    RecipientKey,
    SessionKeyProvider,
    decrypt_stream,
    recipient_keys,
)
from securemail.stream.openpgp_armor import CHECKSUM_LIMIT, ArmorReader, dearmor
from securemail.stream.openpgp_packets import (
    PacketReader,
    body_length,
    mpi,
    packet,
    partial_length,
    split_packets,
)
from stream.helpers import (
    DiscardingSink,
    MiB,
    RecordingSink,
    TrickleSource,
    open_fds,
    traced_peak,
    workers,
)

SIZES = [0, 1, 511, 512, 513, BLOCK - 7, BLOCK - 6, BLOCK, 2 * BLOCK - 6, 3 * MiB + 7]
"""Around the framing's edges: 512 (the least first partial length), 64 KiB parts (the
first one holds 6 octets of literal data header, so BLOCK - 6 fills it exactly)."""
TEXT = b"Content-Type: text/plain; charset=utf-8\r\n\r\nThe invoice is attached.\r\n"


# --- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keyset(gpg_bin: str, tmp_path_factory: pytest.TempPathFactory) -> KeySet:
    return shared_keyset(gpg_bin, lambda: tmp_path_factory.mktemp("pgp-keys"))


@pytest.fixture(scope="module")
def cli(gpg_bin: str, keyset: KeySet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GpgCli]:
    """The gpg command line with the secret keys of alice, bob, carol and dave."""
    tool = GpgCli(gpg_bin, tmp_path_factory.mktemp("openpgp-cli") / "home")
    tool.add(keyset.alice.secret, keyset.bob.secret, keyset.carol.secret, keyset.dave.secret)
    yield tool
    tool.stop()


@pytest.fixture(scope="module")
def engine(gpg_bin: str, keyset: KeySet) -> Iterator[GnuPG]:
    """The engine with the secret keys of alice, bob, carol, dave and the unusable keys."""
    with GnuPG(gpg=gpg_bin) as gpg:
        for key in (keyset.alice, keyset.bob, keyset.carol, keyset.dave, keyset.expired):
            gpg.import_keys(key.secret)
        for key in (keyset.revoked, keyset.sign_only):
            gpg.import_keys(key.public)
        yield gpg


@pytest.fixture(scope="module")
def nist(gpg_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GpgCli]:
    """gpg with two keys made here: ECDSA + ECDH on NIST P-256, and on P-384."""
    tool = GpgCli(gpg_bin, tmp_path_factory.mktemp("openpgp-nist") / "home")
    for curve in ("nistp256", "nistp384"):
        made = tool.run(
            "--passphrase", "", "--quick-gen-key", f"{curve} <{curve}@example.org>", curve, "sign"
        )
        fingerprint = re.search(rb"KEY_CREATED P ([0-9A-F]{40})", made.stderr)
        assert fingerprint is not None
        tool.run(
            "--passphrase", "", "--quick-add-key", fingerprint.group(1).decode(), curve, "encr"
        )
    yield tool
    tool.stop()


@pytest.fixture(scope="module")
def keys(engine: GnuPG, keyset: KeySet) -> dict[str, list[RecipientKey]]:
    """The recipient keys of alice, bob and carol, as the engine exports them."""
    found = {
        name: recipient_keys(engine.export_public(getattr(keyset, name).email))
        for name in ("alice", "bob", "carol")
    }
    found["all"] = found["alice"] + found["bob"] + found["carol"]
    return found


# --- helpers --------------------------------------------------------------------------------------


def pattern(size: int, seed: int = 1) -> bytes:
    """Incompressible-looking but reproducible data."""
    return random.Random(seed).randbytes(size)  # noqa: S311 (test data, not secrets)


def encrypt(
    data: bytes,
    keys: Sequence[RecipientKey],
    *,
    armored: bool = True,
    threaded: bool = True,
    piece: int = 10_007,
) -> bytes:
    sink = io.BytesIO()
    inner = ArmorWriter(sink) if armored else sink
    with OpenPGPEncryptWriter.for_recipients(inner, keys, threaded=threaded) as writer:
        for start in range(0, len(data), piece):
            writer.write(data[start : start + piece])
    return sink.getvalue()


def openpgp_workers() -> list[threading.Thread]:
    """The OpenPGP streams' worker threads still running."""
    return workers("securemail-openpgp")


def decrypt(
    message: bytes,
    session_key: SessionKeyProvider,
    spool: Path,
    *,
    max_output: int = 1 << 40,
    threaded: bool = True,
) -> tuple[bytes, OpenPGPDecryptResult]:
    sink = RecordingSink()
    result = decrypt_stream(
        io.BytesIO(message),
        sink,
        session_key=session_key,
        spool_dir=spool,
        max_output=max_output,
        threaded=threaded,
    )
    assert list(spool.iterdir()) == []
    return sink.data, result


def refused(
    message: bytes,
    session_key: SessionKeyProvider,
    error: type[SecureMailError],
    spool: Path,
    **options: int,
) -> SecureMailError:
    """``decrypt_stream`` raises ``error``, writes nothing to its sink, and leaves no file
    in ``spool``, no file descriptor open and no thread running."""
    sink = RecordingSink()
    before = open_fds()
    with pytest.raises(error) as caught:
        decrypt_stream(
            io.BytesIO(message), sink, session_key=session_key, spool_dir=spool, **options
        )
    assert sink.writes == [], "something was written to the sink"
    assert list(spool.iterdir()) == []
    assert open_fds() == before, "the spool file was left open"
    assert not openpgp_workers(), "a worker thread was left running"
    return caught.value


def gpg_decrypts(cli: GpgCli, message: bytes, expected: bytes) -> None:
    done = cli.run("--decrypt", stdin=message, check=False)
    keywords = status_keywords(done)
    assert done.returncode == 0, done.stderr.decode("utf-8", "replace")[-2000:]
    assert {"DECRYPTION_OKAY", "GOODMDC"} <= set(keywords)
    assert done.stdout == expected


# A packet walker of this file's own (RFC 9580 4.2), for finding bytes to damage.


def walk(data: bytes) -> list[tuple[int, int, list[tuple[int, int, int]]]]:
    """(tag, header offset, [(body offset, body length, length octets) per part]) of each
    packet (legacy headers only with a definite length)."""
    found = []
    position = 0
    while position < len(data):
        start = position
        first = data[position]
        position += 1
        if first & 0xC0 == 0x80:  # legacy format, definite length (gpg's PKESK)
            octets = 1 << (first & 3)
            assert octets <= 4, "no indeterminate length here"
            size = int.from_bytes(data[position : position + octets], "big")
            found.append(((first >> 2) & 0x0F, start, [(position + octets, size, octets)]))
            position += octets + size
            continue
        assert first & 0xC0 == 0xC0
        tag = first & 0x3F
        parts = []
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
            parts.append((position, size, octets))
            position += size
            if last:
                break
        found.append((tag, start, parts))
    return found


def ciphertext_offsets(message: bytes) -> list[int]:
    """Offsets of the encrypted packet's ciphertext octets (after the version octet)."""
    every: list[int] = []
    for tag, _, parts in walk(message):
        if tag == 18:
            for body, size, _ in parts:
                every.extend(range(body, body + size))
    return every[1:]


def flipped(message: bytes, offset: int) -> bytes:
    damaged = bytearray(message)
    damaged[offset] ^= 0x01
    return bytes(damaged)


# --- packet framing -------------------------------------------------------------------------------


def test_lengths() -> None:
    assert body_length(0) == b"\x00"
    assert body_length(191) == b"\xbf"
    assert body_length(192) == b"\xc0\x00"
    assert body_length(8383) == b"\xdf\xff"
    assert body_length(8384) == b"\xff\x00\x00\x20\xc0"
    assert partial_length(512) == b"\xe9"
    assert partial_length(1 << 16) == b"\xf0"
    assert partial_length(1 << 20) == b"\xf4"
    for bad in (0, 3, 1 << 31):
        with pytest.raises(ValueError):
            partial_length(bad)
    assert mpi(1) == b"\x00\x01\x01"
    assert mpi(b"\x00\x40" + bytes(32)) == b"\x01\x07\x40" + bytes(32)


class Recorder:
    """Packet events, with consecutive body pieces joined."""

    def __init__(self) -> None:
        self.events: list[tuple[str, int | bytes]] = []
        self._body = bytearray()

    def start(self, tag: int, header: bytes) -> None:
        self.events.append(("start", tag))

    def body(self, data: memoryview) -> None:
        self._body += data

    def end(self) -> None:
        if self._body:
            self.events.append(("body", bytes(self._body)))
            self._body.clear()
        self.events.append(("end", 0))


def test_packet_reader_in_pieces_of_any_size() -> None:
    body = pattern(3000)
    stream = (
        b"\x84\x03abc"  # legacy format, one-octet length
        + b"\xc1\x00"  # empty packet
        + b"\xcb"
        + partial_length(1024)  # literal data in parts: 1024 + 1 + rest
        + body[:1024]
        + partial_length(1)
        + body[1024:1025]
        + body_length(3000 - 1025)
        + body[1025:]
        + b"\xa3"  # legacy compressed data of indeterminate length, to the end
        + b"the rest"
    )
    expected = [
        ("start", 1),
        ("body", b"abc"),
        ("end", 0),
        ("start", 1),
        ("end", 0),
        ("start", 11),
        ("body", body),
        ("end", 0),
        ("start", 8),
        ("body", b"the rest"),
        ("end", 0),
    ]
    for size in (1, 2, 3, 5, 64, len(stream)):
        recorder = Recorder()
        reader = PacketReader(recorder)
        for start in range(0, len(stream), size):
            reader.feed(stream[start : start + size])
        reader.close()
        assert recorder.events == expected


def test_packet_reader_refuses_broken_framing() -> None:
    from securemail.stream.openpgp_packets import MalformedPacket

    for broken in (
        b"\x01",  # not a packet header
        b"\xc1\xe9" + bytes(512),  # partial length on a session-key packet
        b"\xcb\x05abc",  # ends inside the packet
        b"\x86\xff\xff\xff\xff",  # legacy session-key packet of 4 GiB
    ):
        reader = PacketReader(Recorder(), max_packet=1 << 20)
        with pytest.raises(MalformedPacket):
            reader.feed(broken)
            reader.close()


# --- armor ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 2, 3, 56, 57, 58, 1000, CHECKSUM_LIMIT, 200_000])
def test_armor_writer_output(size: int) -> None:
    data = pattern(size)
    sink = io.BytesIO()
    with ArmorWriter(sink) as writer:
        for start in range(0, size, 999):
            writer.write(data[start : start + 999])
    text = sink.getvalue()
    lines = text.split(b"\r\n")
    assert lines[:2] == [b"-----BEGIN PGP MESSAGE-----", b""]
    assert lines[-2:] == [b"-----END PGP MESSAGE-----", b""]
    assert all(len(line) <= 76 for line in lines)
    assert b"\n" not in text.replace(b"\r\n", b"")
    body = lines[2:-2]
    if size <= CHECKSUM_LIMIT:  # the checksum line, as pgp.keys computes it
        reference = [line for line in armor(data).split(b"\r\n") if line.startswith(b"=")]
        assert body.pop() == reference[-1]
    assert not any(line.startswith(b"=") for line in body)
    assert base64.b64decode(b"".join(body), validate=True) == data
    assert dearmor(text) == data


def gpg_style(data: bytes, width: int, *, crc: bool = True, end: bytes = b"\n") -> bytes:
    """Armor as others write it: ``width``-column lines, headers, a checksum line."""
    encoded = base64.b64encode(data)
    lines = [encoded[i : i + width] for i in range(0, len(encoded), width)]
    text = armor(data).split(b"\r\n")
    checksum = [line for line in text if line.startswith(b"=")]
    return end.join(
        [
            b"Some text before the armor.",
            b"-----BEGIN PGP MESSAGE-----",
            b"Version: GnuPG v2",
            b"Comment: https://example.org/",
            b"",
            *lines,
            *(checksum if crc else []),
            b"-----END PGP MESSAGE-----  ",
            b"and after it.",
        ]
    )


@pytest.mark.parametrize("width", [64, 76, 70, 1])
@pytest.mark.parametrize("size", [0, 1, 2, 3, 4000, 70_001])
def test_armor_reader_reads_other_styles(width: int, size: int) -> None:
    data = pattern(size, seed=size)
    for crc in (True, False):
        for end in (b"\n", b"\r\n"):
            text = gpg_style(data, width, crc=crc, end=end)
            assert dearmor(text, ("MESSAGE",)) == data
            parts: list[bytes] = []
            reader = ArmorReader(parts.append, ("MESSAGE",))
            for start in range(0, len(text), 4093):
                reader.feed(text[start : start + 4093])
            reader.close()
            assert b"".join(parts) == data


def test_armor_reader_refusals() -> None:
    good = armor(pattern(100))
    for broken in (
        good.replace(b"-----END PGP MESSAGE-----", b""),  # no tail line
        b"no armor at all\r\n",
        good.replace(
            b"-----BEGIN PGP MESSAGE-----\r\n\r\n", b"-----BEGIN PGP MESSAGE-----\r\n\r\n*"
        ),
        good[:40] + b"*" + good[40:],  # in the first line of base64
        good.replace(b"-----END PGP MESSAGE-----", b"garbage\r\n-----END PGP MESSAGE-----"),
    ):
        with pytest.raises(ValueError):
            dearmor(broken, ("MESSAGE",))


# --- recipient keys -------------------------------------------------------------------------------


def test_recipient_keys_from_exports(engine: GnuPG, keyset: KeySet) -> None:
    expected = {
        "alice": "cv25519",
        "bob": "rsa3072",
        "carol": "rsa2048",
        "dave": "cv25519",
    }
    for name, algorithm in expected.items():
        person: PgpKey = getattr(keyset, name)
        (info,) = engine.find_keys(person.fingerprint)
        (subkey,) = info.encryption_keys()
        for export in (person.public, engine.export_public(person.email, armor=True)):
            (key,) = recipient_keys(export)
            assert key.fingerprint == subkey.fingerprint
            assert key.key_id == subkey.key_id
            assert key.algorithm == algorithm
    # A certificate that cannot be encrypted to contributes nothing.
    for person in (keyset.expired, keyset.revoked, keyset.sign_only):
        assert recipient_keys(person.public) == []
    # Several certificates in one export.
    both = recipient_keys(keyset.alice.public + keyset.carol.public)
    assert [k.algorithm for k in both] == ["cv25519", "rsa2048"]


def test_certifications_by_others_are_ignored(gpg_bin: str, keyset: KeySet, tmp_path: Path) -> None:
    """Bob's RSA primary key signs and certifies only. A later certification of his user
    ID by Alice carries no key flags; taken for a self-signature, it would make the primary
    key look fit for encryption."""
    tool = GpgCli(gpg_bin, tmp_path / "home")
    try:
        tool.add(keyset.alice.secret, keyset.bob.public)
        time.sleep(1.1)  # a certification newer than Bob's self-signatures
        tool.run(
            "--passphrase", "", "--default-key", keyset.alice.fingerprint,
            "--quick-sign-key", keyset.bob.fingerprint,
        )  # fmt: skip
        exported = tool.run("--export", keyset.bob.fingerprint).stdout
    finally:
        tool.stop()
    assert len([tag for tag, _ in split_packets(exported) if tag == 2]) >= 3
    (key,) = recipient_keys(exported)
    assert key.fingerprint != keyset.bob.fingerprint and key.algorithm == "rsa3072"


def test_recipient_keys_refuses_what_is_not_a_key() -> None:
    with pytest.raises(KeyLoadError):
        recipient_keys(b"\xc1\x00")  # an empty session-key packet, no key
    with pytest.raises(KeyLoadError):
        recipient_keys(b"\x99\x00")  # truncated
    with pytest.raises(KeyLoadError):
        recipient_keys(b"-----BEGIN PGP PUBLIC KEY BLOCK-----\r\n\r\n*\r\n")


def test_export_public_refuses_unusable_keys(engine: GnuPG, keyset: KeySet) -> None:
    for person in (keyset.expired, keyset.revoked, keyset.sign_only):
        with pytest.raises(RecipientError) as caught:
            engine.export_public(person.email)
        assert caught.value.recipient == person.email
    with pytest.raises(RecipientError, match="no key"):
        engine.export_public("nobody@example.org")
    exported = engine.export_public(keyset.bob.fingerprint)
    tags = [tag for tag, _ in split_packets(exported)]
    assert tags.count(6) == 1 and tags.count(14) == 1  # primary and one subkey


def test_writer_needs_a_recipient() -> None:
    with pytest.raises(RecipientError):
        OpenPGPEncryptWriter.for_recipients(io.BytesIO(), [])


# --- what gpg reads -------------------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("who", ["alice", "bob", "carol", "all"])
def test_gpg_decrypts_what_the_writer_writes(
    keys: dict[str, list[RecipientKey]], cli: GpgCli, who: str, size: int
) -> None:
    data = pattern(size)
    message = encrypt(data, keys[who])
    # One armored block and nothing else around it.
    assert message.startswith(b"-----BEGIN PGP MESSAGE-----\r\n\r\n")
    assert message.endswith(b"\r\n-----END PGP MESSAGE-----\r\n")
    assert message.count(b"-----") == 4
    gpg_decrypts(cli, message, data)
    done = cli.run("--decrypt", stdin=message)
    assert next(
        line.split()[2:5]
        for line in done.stderr.decode().splitlines()
        if line.startswith("[GNUPG:] DECRYPTION_INFO")
    ) == ["2", "9", "0"], "SEIPD v1 with MDC (2), AES-256 (9)"
    recipients = [
        line.split()[2] for line in done.stderr.decode().splitlines() if " ENC_TO " in line
    ]
    assert sorted(recipients) == sorted(k.key_id for k in keys[who])


@pytest.mark.parametrize("piece", [1, 4096, BLOCK, 3 * BLOCK + 5, 1 << 30])
def test_any_write_sizes(keys: dict[str, list[RecipientKey]], cli: GpgCli, piece: int) -> None:
    sizes = [0, 200, BLOCK - 6, BLOCK + 300] if piece == 1 else [0, 200, BLOCK - 6, 4 * BLOCK]
    for size in sizes:
        data = pattern(size, seed=piece)
        gpg_decrypts(cli, encrypt(data, keys["carol"], piece=piece), data)


def test_binary_output_and_framing(keys: dict[str, list[RecipientKey]], cli: GpgCli) -> None:
    data = pattern(5 * BLOCK + 123)
    message = encrypt(data, keys["alice"], armored=False)
    gpg_decrypts(cli, message, data)
    packets = walk(message)
    assert [tag for tag, _, _ in packets] == [1, 18]
    seipd = packets[1][2]
    assert all(size == BLOCK for _, size, _ in seipd[:-1]), "partial lengths of BLOCK"
    assert len(seipd) == 6
    assert message[seipd[0][0]] == 1, "SEIPD version 1"
    listing = cli.run("--list-packets", stdin=message).stdout.decode()
    assert "mdc_method: 2" in listing


def test_nist_recipients(nist: GpgCli) -> None:
    data = pattern(BLOCK + 77)
    for curve in ("nistp256", "nistp384"):
        exported = nist.run("--export", f"{curve}@example.org").stdout
        (key,) = recipient_keys(exported)
        assert key.algorithm == curve
        gpg_decrypts(nist, encrypt(data, [key]), data)


def test_every_length_leaves_padding_for_gpg(keys: dict[str, list[RecipientKey]]) -> None:
    """gpg 2.2 needs "=" padding or a checksum to find the end of armored data: armored,
    every message has one or the other; binary (where it does not matter, but another
    armorer may follow), its length is indivisible by 3."""
    sizes = [*range(700), *range(BLOCK - 60, BLOCK + 60), *range(3 * BLOCK - 40, 3 * BLOCK)]
    for who in ("alice", "bob", "all"):
        for size in sizes:
            message = encrypt(bytes(size), keys[who], armored=False, threaded=False)
            assert len(message) % 3, (who, size)
            armored = encrypt(bytes(size), keys[who], threaded=False)
            tail = armored.rsplit(b"\r\n-----END", 1)[0].rsplit(b"\r\n", 2)
            assert tail[-1].endswith(b"=") or re.fullmatch(rb"=[A-Za-z0-9+/]{4}", tail[-1])
            assert 10 not in [tag for tag, _, _ in walk(dearmor(armored))], "no Marker"


def framing(message: bytes) -> tuple[int, int, int, int]:
    """(Marker packets, octets of the encrypted packet's last length, its parts of one
    octet, the size of its first part)."""
    packets = walk(message)
    markers = sum(1 for tag, _, _ in packets if tag == 10)
    tag, _, parts = packets[-1]
    assert tag == 18
    ones = sum(1 for _, size, _ in parts[:-1] if size == 1)
    return markers, parts[-1][2], ones, parts[0][1]


def test_gpg_reads_every_framing_the_writer_picks(
    keys: dict[str, list[RecipientKey]], cli: GpgCli
) -> None:
    """The framings the padding rule picks: for messages of one block a five-octet length
    or a first part of 512 octets (and one of one octet) before the last, or a Marker
    packet first (only for a binary message under 513 octets: armored, the checksum line
    does it); for larger ones five-octet lengths and a one-octet part before the last."""
    recipients = [keys["alice"], keys["carol"]]  # session-key packets of 96 and 271 octets
    examples: dict[tuple[int, int, int, int], tuple[int, int]] = {}
    for index, chosen in enumerate(recipients):
        for size in [*range(700), *range(BLOCK - 30, BLOCK + 200), 2 * BLOCK + 8500]:
            message = encrypt(bytes(size), chosen, armored=False, threaded=False)
            examples.setdefault(framing(message), (index, size))
    assert {shape[0] for shape in examples} == {0, 1}  # Marker packets
    assert {shape[1] for shape in examples} == {1, 2, 5}  # octets of the last length
    assert {shape[2] for shape in examples} == {0, 1}  # one-octet parts
    assert 512 in {shape[3] for shape in examples}  # a first part of 512 octets
    for index, size in examples.values():
        data = pattern(size)
        gpg_decrypts(cli, encrypt(data, recipients[index]), data)
        gpg_decrypts(cli, encrypt(data, recipients[index], armored=False), data)


# --- what the reader reads ------------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
def test_reads_what_gpg_writes(
    cli: GpgCli, engine: GnuPG, keyset: KeySet, tmp_path: Path, size: int
) -> None:
    data = pattern(size, seed=size)
    for options in (["--armor"], []):
        message = cli.run(
            "-z", "0", "--encrypt", *options, "-r", keyset.carol.fingerprint, stdin=data
        ).stdout
        released, result = decrypt(message, engine.session_key, tmp_path)
        assert released == data
        assert result.size == size
        assert result.cipher == "aes256"
        assert result.compression is None and not result.signed
        assert result.literal_format == "b"


@pytest.mark.parametrize("algorithm", ["zip", "zlib", "bzip2"])
def test_reads_compressed(
    cli: GpgCli, engine: GnuPG, keyset: KeySet, tmp_path: Path, algorithm: str
) -> None:
    for size in (0, 1, 70_000, 3 * MiB):
        data = pattern(size // 2) + bytes(size - size // 2)
        message = cli.run(
            "-z",
            "6",
            "--compress-algo",
            algorithm,
            "--encrypt",
            "--armor",
            "-r",
            keyset.alice.fingerprint,
            stdin=data,
        ).stdout
        released, result = decrypt(message, engine.session_key, tmp_path)
        assert released == data
        assert result.compression == algorithm


def test_reads_in_tiny_pieces(cli: GpgCli, engine: GnuPG, keyset: KeySet, tmp_path: Path) -> None:
    binary = pattern(3 * BLOCK + 5)
    text = TEXT * 3000  # canonical CRLF text: --textmode keeps it as it is
    for data, options, kind in (
        (binary, ["-z", "0"], "b"),
        (text, ["-z", "6", "--textmode"], "t"),
    ):
        message = cli.run(
            *options, "--encrypt", "--armor", "-r", keyset.bob.fingerprint, stdin=data
        ).stdout
        sink = RecordingSink()
        result = decrypt_stream(
            TrickleSource(message, seed=4880),
            sink,
            session_key=engine.session_key,
            spool_dir=tmp_path,
        )
        assert sink.data == data
        assert result.literal_format == kind


@pytest.mark.parametrize("threaded", [True, False])
def test_round_trip(
    keys: dict[str, list[RecipientKey]], engine: GnuPG, tmp_path: Path, threaded: bool
) -> None:
    for size in SIZES:
        data = pattern(size, seed=size + 1)
        for armored in (True, False):
            message = encrypt(data, keys["all"], armored=armored, threaded=threaded)
            released, result = decrypt(message, engine.session_key, tmp_path, threaded=threaded)
            assert released == data
            assert sorted(result.recipients) == sorted(k.key_id for k in keys["all"])


def test_signed_message(cli: GpgCli, engine: GnuPG, keyset: KeySet, tmp_path: Path) -> None:
    message = cli.run(
        "--sign",
        "--local-user",
        keyset.alice.fingerprint,
        "--encrypt",
        "--armor",
        "-r",
        keyset.carol.fingerprint,
        stdin=TEXT,
    ).stdout
    released, result = decrypt(message, engine.session_key, tmp_path)
    assert released == TEXT
    assert result.signed
    assert [tag for tag, _ in split_packets(result.signature_packets)] == [2]
    # The signature packets are a detached signature over what was released.
    signature = tmp_path / "signature.bin"
    signature.write_bytes(result.signature_packets)
    content = tmp_path / "content.bin"
    content.write_bytes(released)
    checked = cli.run("--verify", str(signature), str(content))
    assert "GOODSIG" in status_keywords(checked)


def test_passphrase(cli: GpgCli, engine: GnuPG, keyset: KeySet, tmp_path: Path) -> None:
    message = cli.run("--encrypt", "-r", keyset.dave.fingerprint, stdin=TEXT).stdout

    def unlocked(packets: bytes) -> tuple[int, bytes]:
        return engine.session_key(packets, passphrase=PASSPHRASE)

    assert decrypt(message, unlocked, tmp_path)[0] == TEXT
    refused(message, engine.session_key, WrongPasswordError, tmp_path)

    def wrong(packets: bytes) -> tuple[int, bytes]:
        return engine.session_key(packets, passphrase="not it")

    refused(message, wrong, WrongPasswordError, tmp_path)


def test_session_key(
    cli: GpgCli, engine: GnuPG, keyset: KeySet, monkeypatch: pytest.MonkeyPatch
) -> None:
    message = cli.run("--encrypt", "-r", keyset.bob.fingerprint, stdin=TEXT).stdout
    decrypted = cli.run("--decrypt", "--show-session-key", stdin=message)
    shown = next(
        line.split()[2]
        for line in decrypted.stderr.decode().splitlines()
        if line.startswith("[GNUPG:] SESSION_KEY")
    )
    packets = b"".join(packet(t, b) for t, b in split_packets(message) if t == 1)
    # gpg logs the session key too ("session key: '9:...'"): the engine reads gpg's log
    # from a file in its scratch directory, which must not get it.
    logs: list[str] = []
    call = engine._call

    def recording(*args: Any, **kwargs: Any) -> Any:
        run, sink = call(*args, **kwargs)
        logs.append(run.log)
        return run, sink

    monkeypatch.setattr(engine, "_call", recording)
    algorithm, key = engine.session_key(packets)
    assert f"{algorithm}:{key.hex().upper()}" == shown
    assert logs and not any(key.hex().upper() in log.upper() for log in logs)
    with pytest.raises(DecryptionError, match="malformed"):
        engine.session_key(b"\x01\x02")
    skesk = packet(3, b"\x04\x09\x03\x08" + bytes(8) + b"\x60")
    with pytest.raises(DecryptionError, match="password-encrypted"):
        engine.session_key(skesk)


# --- what the reader refuses ----------------------------------------------------------------------


@pytest.fixture
def binary_message(keys: dict[str, list[RecipientKey]]) -> bytes:
    return encrypt(TEXT + pattern(3 * BLOCK), keys["alice"], armored=False)


def test_truncated(engine: GnuPG, binary_message: bytes, tmp_path: Path) -> None:
    for cut in (len(binary_message) // 2, len(binary_message) - 30, len(binary_message) - 1):
        refused(binary_message[:cut], engine.session_key, IntegrityError, tmp_path)
    armored = armor(binary_message)
    last_line = armored.rindex(b"\r\n", 0, armored.index(b"\r\n=")) + 2
    for cut in (len(armored) // 2, last_line + 10):
        refused(armored[:cut], engine.session_key, IntegrityError, tmp_path)
    # Damaged framing before the encrypted packet, and a missing armor tail.
    refused(binary_message[:40], engine.session_key, DecryptionError, tmp_path)
    tail = armored.index(b"-----END")
    refused(armored[:tail], engine.session_key, DecryptionError, tmp_path)
    # Only the line end after the tail line missing is fine.
    assert decrypt(armored.rstrip(), engine.session_key, tmp_path)[0].startswith(TEXT)


@pytest.mark.parametrize("where", ["start", "prefix-check", "middle", "end", "mdc", "mdc-header"])
def test_flipped_byte(engine: GnuPG, binary_message: bytes, tmp_path: Path, where: str) -> None:
    ciphertext = ciphertext_offsets(binary_message)
    offset = {
        "start": ciphertext[0],
        "prefix-check": ciphertext[17],  # one of the two repeated octets
        "middle": ciphertext[len(ciphertext) // 2],
        "end": ciphertext[-23],  # the last octet before the MDC packet
        "mdc": ciphertext[-1],
        "mdc-header": ciphertext[-22],
    }[where]
    damaged = flipped(binary_message, offset)
    for message in (damaged, armor(damaged)):
        error = refused(message, engine.session_key, IntegrityError, tmp_path)
        assert str(error) == str(IntegrityError())  # every damage looks alike


def test_flipped_byte_in_compressed_data(
    cli: GpgCli, engine: GnuPG, keyset: KeySet, tmp_path: Path
) -> None:
    message = cli.run(
        "-z", "6", "--encrypt", "-r", keyset.alice.fingerprint, stdin=TEXT * 5000
    ).stdout
    ciphertext = ciphertext_offsets(message)
    for offset in (ciphertext[40], ciphertext[len(ciphertext) // 2], ciphertext[-30]):
        refused(flipped(message, offset), engine.session_key, IntegrityError, tmp_path)


def test_message_without_mdc(cli: GpgCli, engine: GnuPG, keyset: KeySet, tmp_path: Path) -> None:
    message = cli.run("--rfc2440", "--encrypt", "-r", keyset.alice.fingerprint, stdin=TEXT).stdout
    assert 9 in [tag for tag, _ in split_packets(message)]
    error = refused(message, engine.session_key, IntegrityError, tmp_path)
    assert "not integrity-protected" in str(error)


def test_compression_bomb(cli: GpgCli, engine: GnuPG, keyset: KeySet, tmp_path: Path) -> None:
    zeros = bytes(64 * MiB)
    bomb = cli.run(
        "--compress-algo",
        "bzip2",
        "-z",
        "9",
        "-r",
        keyset.alice.fingerprint,
        "--encrypt",
        stdin=zeros,
    ).stdout
    assert len(bomb) < 1024
    error = refused(bomb, engine.session_key, SizeLimitExceeded, tmp_path, max_output=MiB)
    assert isinstance(error, SizeLimitExceeded) and error.limit == MiB


def test_output_limit_is_exact(
    keys: dict[str, list[RecipientKey]], engine: GnuPG, tmp_path: Path
) -> None:
    message = encrypt(b"a" * 1000, keys["alice"])
    assert decrypt(message, engine.session_key, tmp_path, max_output=1000)[0] == b"a" * 1000
    refused(message, engine.session_key, SizeLimitExceeded, tmp_path, max_output=999)


def test_not_for_us(cli: GpgCli, engine: GnuPG, keyset: KeySet, tmp_path: Path) -> None:
    cli.add(keyset.twin_one.public)
    message = cli.run("--encrypt", "-r", keyset.twin_one.fingerprint, stdin=TEXT)
    error = refused(message.stdout, engine.session_key, NoSecretKeyError, tmp_path)
    assert isinstance(error, NoSecretKeyError) and len(error.key_ids) == 1


def test_not_encrypted_at_all(cli: GpgCli, engine: GnuPG, keyset: KeySet, tmp_path: Path) -> None:
    signed = cli.run("--sign", "--local-user", keyset.alice.fingerprint, stdin=TEXT).stdout
    password = cli.run("--symmetric", "--passphrase", "pw", stdin=TEXT).stdout
    for message in (signed, password, b"", b"garbage", armor(b"\xc1\x00")):
        refused(message, engine.session_key, DecryptionError, tmp_path)


def test_unsupported_encryption(
    keys: dict[str, list[RecipientKey]], engine: GnuPG, tmp_path: Path
) -> None:
    pkesk = keys["alice"][0].pkesk(9, bytes(32))
    for version in (2, 5):
        message = pkesk + packet(18, bytes([version]) + bytes(100))
        refused(message, engine.session_key, UnsupportedAlgorithmError, tmp_path)
    refused(pkesk + packet(20, bytes(100)), engine.session_key, UnsupportedAlgorithmError, tmp_path)


def handmade(key: RecipientKey, inner: bytes, *, quick_check: bool = True) -> bytes:
    """A message whose encrypted packet holds ``inner``, with a correct MDC: made here with
    cryptography's CFB, independently of the writer."""
    session_key = os.urandom(32)
    prefix = os.urandom(16)
    prefix += prefix[-2:] if quick_check else bytes(x ^ 0xFF for x in prefix[-2:])
    plain = prefix + inner + b"\xd3\x14"
    plain += hashlib.sha1(plain).digest()  # noqa: S324 (the MDC is SHA-1)
    encryptor = Cipher(algorithms.AES(session_key), CFB(bytes(16))).encryptor()
    ciphertext = encryptor.update(plain) + encryptor.finalize()
    return key.pkesk(9, session_key) + packet(18, b"\x01" + ciphertext)


def literal(data: bytes, name: bytes = b"") -> bytes:
    return packet(11, b"b" + bytes([len(name)]) + name + bytes(4) + data)


def test_handmade_content(
    keys: dict[str, list[RecipientKey]], engine: GnuPG, tmp_path: Path
) -> None:
    """What may be inside: one literal data packet, maybe in one compressed packet, maybe
    with signature and marker packets around it; the MDC good or not, anything else is an
    IntegrityError, decided only at the end."""
    key = keys["alice"][0]
    good = handmade(key, literal(TEXT, b"invoice.txt"))
    released, result = decrypt(good, engine.session_key, tmp_path)
    assert released == TEXT and result.filename == b"invoice.txt"
    stored = packet(8, b"\x00" + packet(10, b"PGP") + literal(TEXT))
    released, result = decrypt(handmade(key, stored), engine.session_key, tmp_path)
    assert released == TEXT and result.compression == "none"
    for inner in (
        literal(TEXT) + literal(TEXT),  # two literal data packets
        packet(10, b"PGP"),  # none
        packet(8, b"\x00" + packet(8, b"\x00" + literal(TEXT))),  # compressed twice
        literal(TEXT) + packet(8, b"\x00" + literal(TEXT)),
        packet(13, b"Mallory <mallory@example.org>") + literal(TEXT),
        b"\xcb\x05ab",  # truncated
        literal(TEXT)[:-1],
    ):
        refused(handmade(key, inner), engine.session_key, IntegrityError, tmp_path)
    bad_check = handmade(key, literal(TEXT), quick_check=False)
    refused(bad_check, engine.session_key, IntegrityError, tmp_path)
    unknown = handmade(key, packet(8, b"\x09" + bytes(20)))
    refused(unknown, engine.session_key, UnsupportedAlgorithmError, tmp_path)
    refused(good + packet(10, b"PGP"), engine.session_key, DecryptionError, tmp_path)
    # Marker packets before the session-key packets are fine.
    assert decrypt(packet(10, b"PGP") + good, engine.session_key, tmp_path)[0] == TEXT


def test_a_failing_session_key_provider(
    engine: GnuPG, binary_message: bytes, tmp_path: Path
) -> None:
    def failing(packets: bytes) -> tuple[int, bytes]:
        raise NoSecretKeyError(("0123456789ABCDEF",))

    refused(binary_message, failing, NoSecretKeyError, tmp_path)
    refused(binary_message, lambda _: (9, bytes(32)), IntegrityError, tmp_path)  # wrong key
    refused(binary_message, lambda _: (10, bytes(32)), UnsupportedAlgorithmError, tmp_path)


# --- writers are state machines -------------------------------------------------------------------


def test_writer_state_machine(keys: dict[str, list[RecipientKey]]) -> None:
    writer = OpenPGPEncryptWriter.for_recipients(ArmorWriter(io.BytesIO()), keys["alice"])
    writer.write(b"x")
    writer.finalize()
    with pytest.raises(AlreadyFinalized):
        writer.write(b"y")
    with pytest.raises(AlreadyFinalized):
        writer.finalize()


def test_abandoned_writer_writes_no_tail(keys: dict[str, list[RecipientKey]]) -> None:
    sink = io.BytesIO()
    with (
        pytest.raises(RuntimeError),
        OpenPGPEncryptWriter.for_recipients(ArmorWriter(sink), keys["alice"]) as writer,
    ):
        writer.write(pattern(10 * BLOCK))
        raise RuntimeError("the attachment could not be read")
    assert b"-----END" not in sink.getvalue()
    assert not openpgp_workers(), "the worker thread was left running"
    # Dropped without finalize() or a with block: the worker stops when it is collected.
    dropped = OpenPGPEncryptWriter.for_recipients(ArmorWriter(io.BytesIO()), keys["alice"])
    dropped.write(pattern(10 * BLOCK))
    assert openpgp_workers()
    del dropped
    gc.collect()
    for thread in openpgp_workers():
        thread.join(timeout=10)
    assert not openpgp_workers()


# --- bounded memory -------------------------------------------------------------------------------

STREAMED = 256 * MiB
PEAK_LIMIT = 16 * MiB


class EncryptingSource:
    """An armored message of ``size`` bytes of plaintext, made while it is read."""

    def __init__(self, keys: Sequence[RecipientKey], size: int) -> None:
        self._output = bytearray()
        self._writer = OpenPGPEncryptWriter.for_recipients(ArmorWriter(self), keys)
        self._left = size
        self._chunk = pattern(BLOCK)

    def write(self, data: Data) -> int:
        self._output += data
        return len(data)

    def readinto(self, buffer: bytearray) -> int:
        while len(self._output) < len(buffer) and not self._writer.finalized:
            if self._left:
                piece = memoryview(self._chunk)[: min(self._left, len(self._chunk))]
                self._writer.write(piece)
                self._left -= len(piece)
            else:
                self._writer.finalize()
        count = min(len(buffer), len(self._output))
        buffer[:count] = self._output[:count]
        del self._output[:count]
        return count


@pytest.mark.slow
def test_encrypt_256_mib_in_bounded_memory(keys: dict[str, list[RecipientKey]]) -> None:
    chunk = pattern(BLOCK)
    sink = DiscardingSink()
    started = time.perf_counter()
    with traced_peak() as peak:
        with OpenPGPEncryptWriter.for_recipients(ArmorWriter(sink), keys["alice"]) as writer:
            for _ in range(STREAMED // BLOCK):
                writer.write(chunk)
        highest = peak()
    elapsed = time.perf_counter() - started
    print(
        f"\nencrypt+armor under tracemalloc: {STREAMED / MiB / elapsed:.0f} MiB/s, "
        f"peak {highest / MiB:.1f} MiB"
    )
    assert sink.size > STREAMED * 4 // 3
    assert highest < PEAK_LIMIT, f"peak {highest / MiB:.1f} MiB"


@pytest.mark.slow
def test_decrypt_256_mib_in_bounded_memory(
    keys: dict[str, list[RecipientKey]], engine: GnuPG, tmp_path: Path
) -> None:
    sink = DiscardingSink()
    source = EncryptingSource(keys["alice"], STREAMED)
    started = time.perf_counter()
    with traced_peak() as peak:
        result = decrypt_stream(source, sink, session_key=engine.session_key, spool_dir=tmp_path)
        highest = peak()
    elapsed = time.perf_counter() - started
    print(
        "\nencrypt+decrypt, one after the other, under tracemalloc: "
        f"{STREAMED / MiB / elapsed:.0f} MiB/s, peak {highest / MiB:.1f} MiB"
    )
    assert result.size == sink.size == STREAMED
    assert list(tmp_path.iterdir()) == []
    assert highest < PEAK_LIMIT, f"peak {highest / MiB:.1f} MiB"
