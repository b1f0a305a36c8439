"""The streaming multipart reader against the in-memory splitter (wire.split_multipart), on
bodies handed over whole and a few bytes at a time."""

from __future__ import annotations

import io

import pytest

from securemail import wire
from securemail.errors import MalformedMessageError
from securemail.stream.base import Source
from securemail.stream.multipart import MAX_HEADER_SECTION, MultipartReader
from stream.helpers import TrickleSource

B = "b0undary"
HEAD_A = b"Content-Type: text/plain\r\n\r\n"
HEAD_B = b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"


def body(
    *parts: bytes, preamble: bytes = b"preamble\r\n", close: bytes = b"--", pad: bytes = b""
) -> bytes:
    out = preamble
    for part in parts:
        out += b"--" + B.encode() + pad + b"\r\n" + part + b"\r\n"
    return out + b"--" + B.encode() + close + pad + b"\r\nepilogue\r\n"


def read_parts(source: Source, boundary: str = B) -> tuple[list[bytes], bool]:
    """Each part's header and body, as the reader hands them over."""
    reader = MultipartReader(source, boundary)
    parts = []
    while (part := reader.next_part()) is not None:
        data = bytearray()
        chunk = bytearray(5)
        while count := part.readinto(chunk):
            data += chunk[:count]
        parts.append(part.header + bytes(data))
    return parts, reader.closed


SAMPLES = {
    "two-parts": body(HEAD_A + b"hello", HEAD_B + b"QUJD\r\nREVG"),
    "empty-body": body(HEAD_A, HEAD_B + b"x"),
    "no-header-fields": body(b"\r\nbare text", HEAD_A + b"y"),
    "no-preamble": body(HEAD_A + b"a", preamble=b""),
    "padding": body(HEAD_A + b"a", HEAD_A + b"b", pad=b" \t "),
    "lookalike-lines": body(
        HEAD_A + b"--" + B.encode() + b"x is not a delimiter\r\n--" + B.encode() + b"-- neither",
        HEAD_A + b"\r\n--" + B[:-1].encode() + b"\r\n",
    ),
    "crlf-inside": body(HEAD_A + b"line\r\n\r\n", HEAD_A + b"\r\n"),
}


@pytest.mark.parametrize("name", SAMPLES)
@pytest.mark.parametrize("trickle", [False, True], ids=["whole", "trickle"])
def test_parts_as_split_in_memory(name: str, trickle: bool) -> None:
    data = SAMPLES[name]
    expected = wire.split_multipart(data, B)
    source: Source = TrickleSource(data, 3) if trickle else io.BytesIO(data)
    parts, closed = read_parts(source)
    assert parts == list(expected.parts)  # header and body, byte for byte
    assert closed == expected.closed


def test_lf_line_ends() -> None:
    data = SAMPLES["two-parts"].replace(b"\r\n", b"\n")
    parts, closed = read_parts(TrickleSource(data, 4))
    assert parts == [HEAD_A + b"hello", HEAD_B + b"QUJD\nREVG"]
    assert closed


def test_no_close_delimiter_ends_the_last_part_at_the_end() -> None:
    data = b"--" + B.encode() + b"\r\n" + HEAD_A + b"last words\r\n"
    parts, closed = read_parts(TrickleSource(data, 2))
    assert parts == [HEAD_A + b"last words\r\n"]
    assert not closed


def test_a_part_left_unread_is_skipped() -> None:
    reader = MultipartReader(io.BytesIO(SAMPLES["two-parts"]), B)
    first = reader.next_part()
    assert first is not None and first.header == HEAD_A
    second = reader.next_part()
    assert second is not None and second.header == HEAD_B
    assert second.read_all(100) == b"QUJD\r\nREVG"
    assert reader.next_part() is None
    assert reader.closed


def test_read_all_refuses_a_large_body() -> None:
    reader = MultipartReader(io.BytesIO(body(HEAD_A + b"x" * 1000, HEAD_A + b"y")), B)
    part = reader.next_part()
    assert part is not None and part.read_all(999) is None
    following = reader.next_part()
    assert following is not None and following.read_all(10) == b"y"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"no delimiter at all\r\n", "no opening boundary"),
        (b"--" + B.encode() + b"--\r\n", "no opening boundary"),
        (b"x" * (MAX_HEADER_SECTION + 200_000), "first 1 MiB"),
        (b"--" + B.encode() + b"\r\nContent-Type: text/plain\r\n", "inside a part's header"),
        (
            b"--" + B.encode() + b"\r\n" + b"X-Long: y\r\n" * 100_000 + b"\r\nbody",
            "header section is larger",
        ),
    ],
    ids=["no-delimiter", "close-first", "long-preamble", "cut-in-header", "huge-header"],
)
def test_malformed_bodies(data: bytes, message: str) -> None:
    with pytest.raises(MalformedMessageError, match=message):
        read_parts(io.BytesIO(data))


@pytest.mark.parametrize("boundary", ["", "x" * 71])
def test_bad_boundary(boundary: str) -> None:
    with pytest.raises(MalformedMessageError, match="boundary"):
        MultipartReader(io.BytesIO(b""), boundary)
