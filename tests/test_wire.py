"""The wire format: canonical CRLF bytes, 7-bit transfer encodings, splitting received bytes,
and the promise that the transmitted bytes are exactly the signed bytes."""

from __future__ import annotations

import base64
import email.message
import email.policy
import hashlib
import re

import pki
import pytest
from asn1crypto import cms
from pki import identity, message

from securemail import wire
from securemail.compose import MessageBuilder
from securemail.errors import HeaderInjectionError, MalformedMessageError, SizeLimitExceeded
from securemail.keys import Identity
from securemail.policy import Policy, SignatureMode
from securemail.smime import encrypt, sign

# --- canonicalize, base64_body, parse ------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"a\nb\n", b"a\r\nb\r\n"),
        (b"a\r\nb\r\n", b"a\r\nb\r\n"),
        (b"a\rb\r", b"a\r\nb\r\n"),
        (b"a\r\r\nb", b"a\r\n\r\nb"),
        (b"a\n\rb", b"a\r\n\r\nb"),
        (b"\n\n", b"\r\n\r\n"),
        (b"no line end", b"no line end"),
        (b"", b""),
    ],
)
def test_canonicalize(data: bytes, expected: bytes) -> None:
    assert wire.canonicalize(data) == expected
    assert wire.canonicalize(expected) == expected  # idempotent


@pytest.mark.parametrize("size", [0, 1, 56, 57, 58, 114, 1000])
def test_base64_body_has_76_character_crlf_lines(size: int) -> None:
    data = bytes(range(256)) * 4
    data = data[:size]
    encoded = wire.base64_body(data)
    lines = encoded.split(b"\r\n")
    assert lines[-1] == b""
    assert all(len(line) == 76 for line in lines[:-2])
    assert all(0 < len(line) <= 76 for line in lines[:-1])
    assert b"\n" not in encoded.replace(b"\r\n", b"")
    assert base64.b64decode(encoded) == data
    assert encoded == b"" if size == 0 else encoded.endswith(b"\r\n")


def test_parse_size_limit() -> None:
    data = message().as_bytes()
    assert wire.parse(data, limit=len(data))["Subject"] == "Quarterly report"
    with pytest.raises(SizeLimitExceeded) as info:
        wire.parse(data, limit=len(data) - 1)
    assert info.value.limit == len(data) - 1


def test_parse_keeps_binary_content() -> None:
    """Content-Transfer-Encoding: binary has no lines: CR LF pairs inside are data."""
    payload = b"\x00\r\n\x01\r\x02\n\x03" * 8
    data = (
        b"From: a@example.com\r\nMIME-Version: 1.0\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Transfer-Encoding: binary\r\n\r\n" + payload
    )
    assert wire.parse(data).get_payload(decode=True) == payload


@pytest.mark.parametrize("data", [b"", b"\r\n", b"  \r\n\t"])
def test_parse_empty(data: bytes) -> None:
    with pytest.raises(MalformedMessageError):
        wire.parse(data)


# --- fold_field and to_bytes ---------------------------------------------------------------------


def test_fold_field_ends_in_crlf_and_folds_long_values() -> None:
    folded = wire.fold_field("Subject", "word " * 40)
    assert folded.endswith(b"\r\n")
    assert all(len(line) <= 78 for line in folded.split(b"\r\n"))
    assert re.sub(rb"\r\n(?=[ \t])", b"", folded).startswith(b"Subject: word word")


def test_fold_field_encodes_non_ascii() -> None:
    folded = wire.fold_field("Subject", "Grüße")
    assert folded.isascii()
    assert b"=?utf-8?" in folded.lower()
    assert str(wire.parse_headers(folded)["Subject"]) == "Grüße"


@pytest.mark.parametrize("value", ["a\r\nBcc: x@example.com", "a\nb", "a\rb", "a\x00b"])
def test_fold_field_refuses_line_breaks(value: str) -> None:
    with pytest.raises(HeaderInjectionError):
        wire.fold_field("Subject", value)


@pytest.mark.parametrize(
    "value",
    ["x\r\nBcc: eve@example.net", "x\r\n\r\nInjected body", "x\n\nInjected body", "x\rTo: e@x.y"],
    ids=["extra-field", "crlf-blank-line", "lf-blank-line", "cr"],
)
def test_to_bytes_refuses_a_raw_header_value_with_line_breaks(value: str) -> None:
    """CVE-2024-6923: the standard library writes a raw value with line breaks as it is. An
    extra field is caught by re-parsing; a blank line must be caught too, since it moves the
    rest of the header (and the injected text) into the body."""
    msg = email.message.EmailMessage()
    msg["From"] = "alice@example.com"
    msg.set_content("real body\n")
    msg._headers.append(("Subject", value))  # type: ignore[attr-defined]
    with pytest.raises(HeaderInjectionError):
        wire.to_bytes(msg)


def test_to_bytes_is_crlf_and_keeps_folding() -> None:
    data = wire.to_bytes(message(subject="s " * 60))
    assert b"\n" not in data.replace(b"\r\n", b"")
    assert b"\r\n " in data.split(b"\r\n\r\n")[0]  # the long Subject stayed folded


# --- 7-bit canonical form of what is signed ------------------------------------------------------


@pytest.fixture(scope="module")
def alice() -> Identity:
    p = pki.shared_pki()
    return identity(p.users["rsa"], p.intermediate)


def raw_message(*parts: tuple[bytes, bytes]) -> bytes:
    """A multipart/mixed message from (header block, body) pairs, written by hand so that the
    input can be 8bit, binary or oddly wrapped base64."""
    body = b"".join(b"--b0\r\n" + head + b"\r\n" + data + b"\r\n" for head, data in parts)
    return (
        b"From: alice@example.com\r\nTo: bob@example.com\r\nSubject: s\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b0"\r\n\r\n' + body + b"--b0--\r\n"
    )


def signed_entity(data: bytes, signer: Identity) -> bytes:
    protected = sign(data, signer)
    outer = wire.split_entity(protected.data)
    boundary = outer.content_type[1]["boundary"]
    return wire.split_multipart(outer.body, boundary).parts[0]


def leaf(entity: bytes, index: int) -> wire.RawEntity:
    """Part ``index`` of the multipart/mixed signed ``entity``."""
    raw = wire.split_entity(entity)
    return wire.split_entity(
        wire.split_multipart(raw.body, raw.content_type[1]["boundary"]).parts[index]
    )


def test_signed_part_is_crlf_and_7bit(alice: Identity) -> None:
    data = raw_message(
        (
            b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n",
            "Grüße\n".encode(),
        ),
        (
            b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n",
            bytes(range(1, 256)),
        ),
    )
    entity = signed_entity(data, alice)
    assert entity.isascii()
    assert b"\n" not in entity.replace(b"\r\n", b"")
    assert b"\r" not in entity.replace(b"\r\n", b"")
    assert all(len(line) <= 998 for line in entity.split(b"\r\n"))


def test_8bit_text_becomes_quoted_printable(alice: Identity) -> None:
    data = raw_message(
        (
            b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n",
            "Grüße\r\n".encode(),
        )
    )
    part = leaf(signed_entity(data, alice), 0)
    assert part.get("Content-Transfer-Encoding").value.lower() == "quoted-printable"  # type: ignore[union-attr]
    assert b"Gr=C3=BC=C3=9Fe" in part.body


@pytest.mark.parametrize(
    ("text", "encoded"),
    [
        (b"From here on\r\n", b"From=20here on"),
        (b"first\r\nFrom the top\r\n", b"\r\nFrom=20the top"),
        (b"trailing space   \r\n", b"trailing space  =20"),
        (b"trailing tab\t\r\n", b"trailing tab=09"),
    ],
    ids=["from-first-line", "from-later-line", "space", "tab"],
)
def test_fragile_lines_are_protected(alice: Identity, text: bytes, encoded: bytes) -> None:
    """Mail stores rewrite "From " to ">From " and relays strip trailing whitespace; both
    would break the signature, so such lines are quoted-printable encoded."""
    data = raw_message((b"Content-Type: text/plain\r\nContent-Transfer-Encoding: 7bit\r\n", text))
    part = leaf(signed_entity(data, alice), 0)
    assert part.get("Content-Transfer-Encoding").value.lower() == "quoted-printable"  # type: ignore[union-attr]
    assert encoded in part.body
    assert not re.search(rb"(^|\n)From ", part.body)
    assert not re.search(rb"[ \t]\r\n", part.body)


def test_plain_7bit_text_is_left_alone(alice: Identity) -> None:
    data = raw_message(
        (b"Content-Type: text/plain\r\nContent-Transfer-Encoding: 7bit\r\n", b"hello\r\nworld\r\n")
    )
    part = leaf(signed_entity(data, alice), 0)
    assert part.get("Content-Transfer-Encoding").value.lower() == "7bit"  # type: ignore[union-attr]
    assert part.body.startswith(b"hello\r\nworld\r\n")


def test_binary_parts_become_base64(alice: Identity) -> None:
    """Every octet, CR and LF included, must survive: binary content has no line endings."""
    payload = bytes(range(256))
    data = raw_message(
        (
            b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n",
            payload,
        )
    )
    part = leaf(signed_entity(data, alice), 0)
    assert part.get("Content-Transfer-Encoding").value.lower() == "base64"  # type: ignore[union-attr]
    assert base64.b64decode(part.body) == payload


def test_base64_parts_are_kept_byte_for_byte(alice: Identity) -> None:
    """Already 7-bit: re-encoding would change bytes other implementations may have hashed."""
    odd = base64.b64encode(bytes(range(200)))
    body = b"\r\n".join(odd[i : i + 60] for i in range(0, len(odd), 60))  # 60-column lines
    data = raw_message((b"Content-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n", body))
    part = leaf(signed_entity(data, alice), 0)
    assert part.body.startswith(body)


def test_transmitted_bytes_are_the_signed_bytes(alice: Identity) -> None:
    """Take part 1 of what goes on the wire with split_multipart: its digest is the one the
    signature covers."""
    protected = sign(message(text="Grüße\nFrom me\nend \n"), alice)
    outer = wire.split_entity(protected.data)
    parts = wire.split_multipart(outer.body, outer.content_type[1]["boundary"])
    assert parts.closed
    assert len(parts.parts) == 2
    der = base64.b64decode(wire.split_entity(parts.parts[1]).body)
    attrs = cms.ContentInfo.load(der)["content"]["signer_infos"][0]["signed_attrs"]
    (digest,) = (a["values"][0].native for a in attrs if a["type"].native == "message_digest")
    assert digest == hashlib.sha256(parts.parts[0]).digest()


# --- inversion: parse then generate gives the same bytes -----------------------------------------


def rich_message() -> email.message.EmailMessage:
    """Non-ASCII names and Subject, a long line, HTML with an inline image, attachments."""
    return (
        MessageBuilder()
        .from_addr("Älice Ü <alice@example.com>")
        .to("bob@example.com")
        .cc("carol@example.com")
        .subject("Grüße, a long subject line " * 4)
        .text("Grüße\nFrom me\n" + "x" * 1200 + "\n")
        .html('<p>Hi <img src="cid:logo@example.com"></p>')
        .inline_image(b"\x89PNG\r\n\x1a\n" + bytes(256), cid="logo@example.com", filename="l.png")
        .attach(bytes(range(256)) * 10, filename="data.bin")
        .attach("naïve".encode(), filename="naïve résumé.txt", content_type="text/plain")
        .build()
    )


@pytest.mark.parametrize("source", ["simple", "rich"])
@pytest.mark.parametrize("kind", ["detached", "opaque", "encrypted", "signed-and-encrypted"])
def test_inversion_of_our_own_output(alice: Identity, kind: str, source: str) -> None:
    p = pki.shared_pki()
    original = message(text="Grüße\nFrom me\n") if source == "simple" else rich_message()
    if kind == "encrypted":
        data = encrypt(original, [p.users["p256"].cert]).data
    elif kind == "signed-and-encrypted":
        data = encrypt(original, [p.users["p256"].cert], signer=alice).data
    else:
        data = sign(original, alice, policy=Policy(signature_mode=SignatureMode(kind))).data
    assert wire.to_bytes(wire.parse(data)) == data
    assert wire.parse(data).as_bytes(policy=wire.WIRE_POLICY) == data


# --- split_entity --------------------------------------------------------------------------------


def test_split_entity_keeps_raw_fields_and_body() -> None:
    data = b"Subject: a\r\n  folded\r\nX-A:b\r\n\r\nbody\r\n\r\nmore"
    raw = wire.split_entity(data)
    assert [f.name for f in raw.fields] == ["Subject", "X-A"]
    assert raw.fields[0].raw == b"Subject: a\r\n  folded\r\n"
    assert raw.fields[0].value == "a  folded"
    assert raw.fields[1].value == "b"
    assert raw.body == b"body\r\n\r\nmore"
    assert raw.to_bytes() == data
    assert raw.get("subject") is raw.fields[0]
    assert raw.get("Missing") is None


@pytest.mark.parametrize(
    ("data", "names", "body"),
    [
        (b"\r\nonly body", [], b"only body"),
        (b"Subject: x\r\n", ["Subject"], b""),
        (b"Subject: x", ["Subject"], b""),
        (b"Subject: x\r\n\r\n", ["Subject"], b""),
    ],
    ids=["no-headers", "no-body", "no-final-crlf", "empty-body"],
)
def test_split_entity_edges(data: bytes, names: list[str], body: bytes) -> None:
    raw = wire.split_entity(data)
    assert [f.name for f in raw.fields] == names
    assert raw.body == body


def test_split_entity_content_fields() -> None:
    raw = wire.split_entity(
        b"From: a@b.c\r\nContent-Type: Text/Plain; Charset=utf-8; X=Y\r\n"
        b"MIME-Version: 1.0\r\nContent-Transfer-Encoding: 7bit\r\n\r\nx"
    )
    assert [f.name for f in raw.content_fields] == [
        "Content-Type",
        "MIME-Version",
        "Content-Transfer-Encoding",
    ]
    assert [f.name for f in raw.other_fields] == ["From"]
    assert raw.content_type == ("text/plain", {"charset": "utf-8", "x": "Y"})
    assert wire.split_entity(b"From: a@b.c\r\n\r\nx").content_type == ("text/plain", {})


# --- split_multipart -----------------------------------------------------------------------------


def test_split_multipart_parts_preamble_and_epilogue() -> None:
    body = (
        b"preamble line\r\n--XYZ\r\nContent-Type: text/plain\r\n\r\none\r\n"
        b"--XYZ\r\n\r\ntwo\r\n\r\n--XYZ--\r\nepilogue\r\n"
    )
    parts = wire.split_multipart(body, "XYZ")
    assert parts.preamble == b"preamble line"
    assert parts.parts == (b"Content-Type: text/plain\r\n\r\none", b"\r\ntwo\r\n")
    assert parts.epilogue == b"epilogue\r\n"
    assert parts.closed


def test_split_multipart_crlf_before_delimiter_belongs_to_it() -> None:
    parts = wire.split_multipart(b"--B\r\nA\r\n\r\n--B\r\nB\r\n--B--", "B")
    assert parts.parts == (b"A\r\n", b"B")


def test_split_multipart_transport_padding() -> None:
    body = b"--B  \t\r\none\r\n--B \r\ntwo\r\n--B-- \t\r\n"
    parts = wire.split_multipart(body, "B")
    assert parts.parts == (b"one", b"two")
    assert parts.closed


@pytest.mark.parametrize(
    "line",
    [b"--BOUNDARYX", b"--BOUNDARY-x", b" --BOUNDARY", b"x--BOUNDARY", b"--boundary"],
)
def test_split_multipart_ignores_lines_that_only_look_like_delimiters(line: bytes) -> None:
    body = b"--BOUNDARY\r\none\r\n" + line + b"\r\nstill one\r\n--BOUNDARY--\r\n"
    assert wire.split_multipart(body, "BOUNDARY").parts == (b"one\r\n" + line + b"\r\nstill one",)


def test_split_multipart_missing_close_delimiter_is_recorded() -> None:
    """Tolerated as mail clients do; ``closed`` says it was missing."""
    parts = wire.split_multipart(b"--B\r\none\r\n--B\r\ntwo\r\n", "B")
    assert parts.parts == (b"one", b"two\r\n")
    assert not parts.closed


@pytest.mark.parametrize(
    ("body", "boundary"),
    [
        (b"--B\r\nx\r\n--B--", "B" * 71),
        (b"--B\r\nx\r\n--B--", ""),
        (b"no delimiter at all", "B"),
        (b"--B--\r\n", "B"),
    ],
    ids=["boundary-too-long", "no-boundary", "no-delimiter", "close-first"],
)
def test_split_multipart_refuses(body: bytes, boundary: str) -> None:
    with pytest.raises(MalformedMessageError):
        wire.split_multipart(body, boundary)


def test_split_multipart_boundary_with_every_allowed_special_character() -> None:
    boundary = "a'()+_,-./:=? z"  # RFC 2046 bchars; a space is allowed inside
    body = f"--{boundary}\r\none\r\n--{boundary}\r\ntwo\r\n--{boundary}--\r\n".encode()
    assert wire.split_multipart(body, boundary).parts == (b"one", b"two")


def test_split_multipart_boundary_of_70_characters_is_fine() -> None:
    boundary = "b" * 70
    body = f"--{boundary}\r\nx\r\n--{boundary}--\r\n".encode()
    assert wire.split_multipart(body, boundary).parts == (b"x",)


def test_new_boundary_avoids_the_content() -> None:
    boundary = wire.new_boundary(b"some content")
    assert 0 < len(boundary) <= 70
    assert boundary.encode() not in b"some content"
    assert wire.new_boundary() != wire.new_boundary()


def test_seven_bit_leaves_the_original_untouched() -> None:
    msg = email.message.EmailMessage(policy=email.policy.default)
    msg.set_content("Grüße\n", cte="8bit")
    copy = wire.seven_bit(msg)
    assert msg["Content-Transfer-Encoding"] == "8bit"
    assert copy["Content-Transfer-Encoding"] == "quoted-printable"
