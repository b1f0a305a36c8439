"""Base64Source: the base64 text of a streamed S/MIME or PGP/MIME part, decoded in SIMD
passes over whole lines when they are regular, and strictly otherwise."""

from __future__ import annotations

import base64
import io
import random

import pytest

from securemail.errors import DecryptionError
from securemail.stream.ber import Base64Source

DATA = random.Random(7).randbytes(700_001)  # noqa: S311 (test data)


class Trickle(io.RawIOBase):
    """A source that hands out at most ``step`` bytes per read."""

    def __init__(self, data: bytes, step: int) -> None:
        self._data = memoryview(data)
        self._step = step

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        count = min(len(buffer), self._step, len(self._data))
        buffer[:count] = self._data[:count]
        self._data = self._data[count:]
        return count


def lines(text: bytes, width: int, end: bytes) -> bytes:
    return b"".join(text[i : i + width] + end for i in range(0, len(text), width))


def decode(encoded: bytes, step: int = 1 << 20, read: int = 8192) -> bytes:
    source = Base64Source(Trickle(encoded, step))
    out = bytearray()
    buffer = bytearray(read)
    while count := source.readinto(buffer):
        out += buffer[:count]
    return bytes(out)


ENCODINGS = {
    "76-crlf": lines(base64.b64encode(DATA), 76, b"\r\n"),
    "64-lf": lines(base64.b64encode(DATA), 64, b"\n"),
    "odd-57": lines(base64.b64encode(DATA), 57, b"\r\n"),
    "one-line": base64.b64encode(DATA),
    "no-final-break": lines(base64.b64encode(DATA), 76, b"\r\n")[:-2],
    "mixed-ends": lines(base64.b64encode(DATA), 76, b"\r\n").replace(b"\r\n", b"\n", 500),
    "spaces": lines(base64.b64encode(DATA), 76, b" \r\n"),
}


@pytest.mark.parametrize("name", ENCODINGS)
@pytest.mark.parametrize("step", [1 << 20, 65_536, 1_001, 77])
def test_decodes_every_layout(name: str, step: int) -> None:
    assert decode(ENCODINGS[name], step) == DATA


def test_text_after_the_padding_is_not_data() -> None:
    encoded = lines(base64.b64encode(DATA), 76, b"\r\n") + b"\r\n--boundary--\r\n"
    assert decode(encoded) == DATA


@pytest.mark.parametrize("at", [0, 100_000, 500_000])
def test_a_stray_character_is_refused(at: int) -> None:
    encoded = bytearray(lines(base64.b64encode(DATA), 76, b"\r\n"))
    encoded[at + (1 if encoded[at : at + 1] in (b"\r", b"\n") else 0)] = ord("*")
    with pytest.raises(DecryptionError):
        decode(bytes(encoded), 65_536)
