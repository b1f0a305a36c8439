"""The DATA stream: canonical CRLF, dot-stuffing and the terminator, whatever the chunking;
checked against an independent un-stuffing reference, through real servers, and for a
256 MiB message in bounded memory."""

from __future__ import annotations

import hashlib
import itertools
import re
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from securemail import wire
from securemail.errors import AlreadyFinalized
from securemail.stream.base import CHUNK
from securemail.transport import DataWriter, SMTPTransport
from securemail.transport.data import canonical_size

from .conftest import PKI, FakeSMTP, config_for

_BARE = re.compile(rb"\r(?!\n)|(?<!\r)\n")


class Collect:
    def __init__(self) -> None:
        self.pieces: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self.pieces.append(bytes(data))
        return len(data)

    @property
    def data(self) -> bytes:
        return b"".join(self.pieces)


def stuffed(chunks: list[bytes], **options: Any) -> bytes:
    sink = Collect()
    writer = DataWriter(sink, **options)
    for chunk in chunks:
        writer.write(chunk)
    writer.finalize()
    return sink.data


def unstuff(stream: bytes) -> bytes:
    """Reference decoder (RFC 5321 4.5.2), written independently of the writer: the stream
    must end with the one terminator line, every line starting with a dot must have had it
    doubled, and the content is what remains."""
    assert stream.endswith(b".\r\n")
    assert _BARE.search(stream) is None, "bare CR or LF on the wire"
    lines = stream.split(b"\r\n")
    assert lines[-2:] == [b".", b""]
    content = []
    for line in lines[:-2]:
        assert line != b".", "a content line would end the message early"
        if line.startswith(b"."):
            assert line.startswith(b".."), "a leading dot was not doubled"
        content.append(line.removeprefix(b".") + b"\r\n")
    return b"".join(content)


def expected(data: bytes) -> bytes:
    canonical = wire.canonicalize(data)
    return canonical if not canonical or canonical.endswith(b"\r\n") else canonical + b"\r\n"


def cut(data: bytes, points: list[int]) -> list[bytes]:
    edges = [0, *sorted(p % (len(data) + 1) for p in points), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


_PIECES = st.sampled_from([b"\r", b"\n", b"\r\n", b".", b"..", b"a", b" ", b"\x80", b"\x00"])


@given(
    data=st.lists(_PIECES, max_size=60).map(b"".join),
    points=st.lists(st.integers(min_value=0), max_size=8),
    chunk=st.integers(min_value=1, max_value=9),
)
@settings(max_examples=400, deadline=None)
def test_stream_decodes_to_the_canonical_input(data: bytes, points: list[int], chunk: int) -> None:
    assert unstuff(stuffed(cut(data, points), chunk=chunk)) == expected(data)


@given(data=st.binary(max_size=300), points=st.lists(st.integers(min_value=0), max_size=5))
@settings(max_examples=200, deadline=None)
def test_any_bytes_any_cuts(data: bytes, points: list[int]) -> None:
    whole = stuffed([data])
    assert stuffed(cut(data, points)) == whole
    assert unstuff(whole) == expected(data)


@given(data=st.lists(_PIECES, max_size=40).map(b"".join))
def test_canonical_size(data: bytes) -> None:
    assert canonical_size(data) == len(wire.canonicalize(data))


@pytest.mark.parametrize(
    ("chunks", "wire_bytes"),
    [
        ([b""], b".\r\n"),
        ([b"."], b"..\r\n.\r\n"),
        ([b"a\r", b"\n.b"], b"a\r\n..b\r\n.\r\n"),  # CRLF cut in two, then a dot
        ([b"a\r\n", b".", b"\r\n"], b"a\r\n..\r\n.\r\n"),
        ([b"a\r", b"\r\n"], b"a\r\n\r\n.\r\n"),  # bare CR, then CRLF
        ([b"a\n.\n"], b"a\r\n..\r\n.\r\n"),
        ([b"a\r.\r"], b"a\r\n..\r\n.\r\n"),
        ([b"a\r\n.\r"], b"a\r\n..\r\n.\r\n"),
        ([b"x.\r\n"], b"x.\r\n.\r\n"),  # a dot not at the start of a line stays single
    ],
)
def test_known_streams(chunks: list[bytes], wire_bytes: bytes) -> None:
    assert stuffed(chunks) == wire_bytes


def test_output_arrives_in_bounded_pieces() -> None:
    sink = Collect()
    writer = DataWriter(sink)
    writer.write(b"\n." * (1 << 20))  # one 2 MiB write that grows to 5 MiB on the wire
    for _ in range(10_000):
        writer.write(b"x\n")  # many tiny writes are gathered
    writer.finalize()
    assert max(len(p) for p in sink.pieces) <= 3 * CHUNK
    assert len(sink.pieces) < 200
    assert writer.bytes_in == (2 << 20) + 20_000
    assert writer.bytes_out == len(sink.data)


def test_finalized_writer_refuses_more() -> None:
    writer = DataWriter(Collect())
    writer.finalize()
    with pytest.raises(AlreadyFinalized):
        writer.write(b"late")
    with pytest.raises(AlreadyFinalized):
        writer.finalize()


# --- through servers -----------------------------------------------------------------------------

DOT_BODIES = [b"one\n.\ntwo\n", b"one\r.\rtwo\r", b"one\r\n.\rtwo", b".\r\n.\r\n..\r\n"]


@pytest.mark.parametrize("body", DOT_BODIES)
def test_dot_bodies_arrive_as_one_message(
    real_server: Any, fake_server: Any, pki: PKI, body: bytes
) -> None:
    data = b"From: alice@example.org\r\nTo: bob@example.org\r\nSubject: dots\r\n\r\n" + body
    real = real_server()
    with SMTPTransport(config_for(real.port, ca_data=pki.ca_pem)) as transport:
        assert transport.send(data).ok
        assert transport.send(b"From: alice@example.org\r\nTo: bob@example.org\r\n\r\nnext\r\n").ok
    first, second = real.messages
    assert first.content == expected(data)
    assert second.content.endswith(b"next\r\n")
    assert real.verbs().count("DATA") == 2

    raw = fake_server(FakeSMTP)
    with SMTPTransport(config_for(raw.port, tls="opportunistic")) as transport:
        assert transport.send(data).ok
    (stream,) = raw.messages
    assert unstuff(stream) == expected(data)  # one terminator, at the end; no bare CR/LF


# --- 256 MiB, bounded memory ---------------------------------------------------------------------

_SINK_SERVER = textwrap.dedent(
    r"""
    import hashlib, socket, ssl, sys

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(sys.argv[1])
    listener = socket.create_server(("127.0.0.1", 0))
    print(listener.getsockname()[1], flush=True)
    sock, _ = listener.accept()
    sock.settimeout(120)
    reader = sock.makefile("rb")

    def reply(text):
        sock.sendall(text.encode() + b"\r\n")

    reply("220 sink.test ESMTP")
    while True:
        line = reader.readline()
        if not line:
            break
        verb = line[:4].upper()
        if verb == b"EHLO":
            tls = isinstance(sock, ssl.SSLSocket)
            last = "HELP" if tls else "STARTTLS"
            reply("250-sink.test\r\n250-SIZE 0\r\n250-8BITMIME\r\n250 " + last)
        elif verb == b"STAR":
            reply("220 go ahead")
            reader.close()
            sock = context.wrap_socket(sock, server_side=True)
            reader = sock.makefile("rb")
        elif verb == b"DATA":
            reply("354 go ahead")
            digest, size = hashlib.sha256(), 0
            while True:
                line = reader.readline()
                if line == b".\r\n" or not line:
                    break
                if line.startswith(b"."):
                    line = line[1:]
                digest.update(line)
                size += len(line)
            reply(f"250 sha256={digest.hexdigest()} size={size}")
        elif verb == b"QUIT":
            reply("221 bye")
            break
        else:
            reply("250 ok")
    """
)


class Generated:
    """``size`` bytes of CRLF lines (every eighth one starting with a dot), made as they are
    read, behind a small header section; hashed on the way out."""

    def __init__(self, size: int) -> None:
        lines = [(b"." if n % 8 == 3 else b"") + b"line %04d " % n for n in range(128)]
        self._block = bytearray(b"".join(line.ljust(510, b"x") + b"\r\n" for line in lines))
        assert len(self._block) == 65536
        head = b"From: alice@example.org\r\nTo: bob@example.org\r\nSubject: big\r\n\r\n"
        self._pending = memoryview(head)
        self._blocks = size // len(self._block)
        self._index = 0
        self.digest = hashlib.sha256()
        self.size = 0

    def readinto(self, buffer: bytearray | memoryview) -> int:
        if not self._pending:
            if self._index == self._blocks:
                return 0
            self._block[:8] = b"%08x" % self._index  # every block different
            self._index += 1
            self._pending = memoryview(self._block)
        count = min(len(buffer), len(self._pending))
        buffer[:count] = self._pending[:count]
        self.digest.update(self._pending[:count])
        self.size += count
        self._pending = self._pending[count:]
        return count


@pytest.mark.slow
def test_256_mib_streams_in_bounded_memory(pki: PKI, tmp_path: Path) -> None:
    # The server runs in another process: tracemalloc counts this process only.
    pem = tmp_path / "server.pem"
    pki.good.private_key_and_cert_chain_pem.write_to_path(str(pem))
    server = subprocess.Popen(
        [sys.executable, "-c", _SINK_SERVER, str(pem)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        source = Generated(256 * 1024 * 1024)
        config = config_for(port, ca_data=pki.ca_pem)
        tracemalloc.start()
        try:
            with SMTPTransport(config) as transport:
                result = transport.send(source)
                assert transport.encrypted
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert server.wait(timeout=60) == 0
    finally:
        server.kill()
    assert result.ok
    assert source.size > 256 * 1024 * 1024
    assert result.reply == f"sha256={source.digest.hexdigest()} size={source.size}"
    assert peak < 4 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB"
