"""RestoringSink (securemail.stream.message): the decrypted entity under its restored header,
as securemail.payload.restore gives it in memory, legacy display elements (RFC 9788) removed,
in bounded memory.

* The decrypted entities of the shared corpus (Autocrypt's protected-headers vectors: the
  RFC 9788 element and the older separate ``protected-headers="v1"`` part), with a large part
  added after the text, come out as the in-memory reader gives them, however the writes are
  cut, whether held whole or only up to the end of the first part.
* Held, nothing reaches the sink before ``close``; an entity without protected headers is not
  held beyond its header section.
"""

from __future__ import annotations

import email.parser
import email.policy
from email.message import EmailMessage
from pathlib import Path

import pytest

from securemail import payload, wire
from securemail.compose import MessageBuilder
from securemail.policy import DEFAULT
from securemail.stream.message import RestoringSink
from stream.helpers import RecordingSink

VECTORS = "autocrypt-protected-headers/vectors"
LEGACY = [
    "pgpmime-enc+legacy-disp.inner",
    "pgpmime-sign+enc+legacy-disp.inner",
    "smime-enc+legacy-disp.inner",
    "smime-sign+enc+legacy-disp.inner.inner",
]
OUTER = (
    b"From: alice@example.org\r\nTo: bob@example.org\r\nSubject: ...\r\n"
    b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n\r\n"
)
PADDING = (
    b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
    b"Content-Disposition: attachment; filename=pad.bin\r\n\r\n" + b"QUJD" * 19 + b"\r\n"
) + b"QUJD" * 19 * 400


def outer() -> wire.RawEntity:
    return wire.split_entity(OUTER)


def parse(data: bytes) -> EmailMessage:
    message = email.parser.BytesParser(policy=email.policy.default).parsebytes(data)
    assert isinstance(message, EmailMessage)
    return message


def with_large_part(entity: bytes) -> bytes:
    """``entity`` (a multipart) with a part of some 30 KiB added before its close delimiter."""
    boundary = parse(entity).get_boundary()
    assert boundary is not None
    close = b"\r\n--" + boundary.encode() + b"--"
    assert entity.count(close) == 1
    return entity.replace(close, b"\r\n--" + boundary.encode() + b"\r\n" + PADDING + close)


def restored(entity: bytes, *, limit: int, step: int) -> tuple[bytes, RecordingSink]:
    """``entity`` written in ``step``-byte pieces through a RestoringSink; what came out
    before close, and the sink."""
    sink = RecordingSink()
    restorer = RestoringSink(sink, outer(), limit=limit)
    for start in range(0, len(entity), step):
        restorer.write(memoryview(entity)[start : start + step])
    before = b"".join(sink.writes)
    restorer.close()
    return before, sink


def legacy_message(text: str = "The figures are attached.\nZweite Zeile: déjà vu.\n") -> bytes:
    """A decrypted entity as our own builder writes it with legacy display: text and HTML
    alternatives with the element, then an attachment of some 300 KiB."""
    built = (
        MessageBuilder()
        .from_addr("alice@example.org")
        .to("bob@example.org")
        .subject("Quartalsbericht: Grüße aus Köln")
        .text(text)
        .html("<html><body><p>The figures are attached.</p></body></html>")
        .attach(bytes(range(256)) * 1200, filename="figures.bin")
        .build()
    )
    return payload.prepare(built, DEFAULT.clone(legacy_display=True), encrypting=True).entity


@pytest.mark.parametrize("name", LEGACY)
@pytest.mark.parametrize("limit", [4096, 1024 * 1024], ids=["first-part", "whole"])
@pytest.mark.parametrize("step", [1, 100, 65536])
def test_corpus_entity_reads_as_in_memory(
    interop_dir: Path, name: str, limit: int, step: int
) -> None:
    entity = with_large_part(wire.canonicalize((interop_dir / VECTORS / name).read_bytes()))
    expected = payload.restore(outer(), wire.split_entity(entity)).data
    assert b"Subject: " in entity.split(b"\r\n\r\n", 1)[1], "the vector has no element"
    assert (
        b"hp-legacy-display" not in expected
        and b'protected-headers="v1"\r\n' not in (expected.split(b"\r\n\r\n", 1)[1])
    ), "the in-memory reader removed nothing"
    _, sink = restored(entity, limit=limit, step=step)
    assert sink.data == expected


@pytest.mark.parametrize("step", [7, 4096, 1 << 20])
def test_builder_message_past_the_limit_reads_as_in_memory(step: int) -> None:
    entity = legacy_message()
    expected = payload.restore(outer(), wire.split_entity(entity)).data
    before, sink = restored(entity, limit=64 * 1024, step=step)
    assert sink.data == expected
    if step < 64 * 1024:
        assert before, "the body was held past the limit"
    assert max(len(w) for w in sink.writes) < 64 * 1024 + step + 2048


def test_held_entity_reaches_the_sink_only_at_close() -> None:
    entity = legacy_message()
    before, sink = restored(entity, limit=1024 * 1024, step=4096)
    assert before == b""
    text = parse(sink.data).get_body(("plain",))
    assert text is not None
    assert text.get_content().replace("\r\n", "\n").startswith("The figures are attached.")


def test_first_part_past_the_limit_passes_unchanged() -> None:
    """Memory stays bounded: a text longer than the limit keeps its element (the only case
    in which decrypt_stream and the in-memory reader differ)."""
    entity = legacy_message("The figures are attached.\n" * 400)
    header, body = entity.split(b"\r\n\r\n", 1)
    as_sent = payload.restore_header(outer(), wire.split_entity(header + b"\r\n\r\n")).data
    assert payload.restore(outer(), wire.split_entity(entity)).data != as_sent + body
    _, sink = restored(entity, limit=8192, step=4096)
    assert sink.data == as_sent + body
    assert b"hp-legacy-display" in sink.data


@pytest.mark.parametrize("hp", ["clear", None])
def test_entity_without_element_to_remove_is_not_held(hp: str | None) -> None:
    """A signed-only entity (``hp="clear"``) and one without protected headers keep their
    bodies, and pass them on as they come: nothing is held beyond the header section."""
    entity = legacy_message()
    header, body = entity.split(b"\r\n\r\n", 1)
    if hp is None:  # only the Content-* fields: the header fields come from outside
        header = b"".join(f.raw for f in wire.split_entity(header + b"\r\n").content_fields)
        header = header.removesuffix(b"\r\n")
    else:
        header = header.replace(b'hp="cipher"', b'hp="clear"')
    assert header != entity.split(b"\r\n\r\n", 1)[0]
    entity = header + b"\r\n\r\n" + body
    expected = payload.restore(outer(), wire.split_entity(entity)).data
    assert b"hp-legacy-display" in expected
    before, sink = restored(entity, limit=1024 * 1024, step=4096)
    assert sink.data == expected
    assert len(before) > len(entity) - 4096
