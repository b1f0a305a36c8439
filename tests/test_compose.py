from __future__ import annotations

import copy
import dataclasses
import email
import email.policy
import io
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from email.headerregistry import Address
from email.message import EmailMessage, MIMEPart
from email.utils import format_datetime, parsedate_to_datetime
from pathlib import Path
from typing import Any

import pytest

from securemail import compose
from securemail.compose import (
    Message,
    MessageBuilder,
    envelope_recipients,
    envelope_sender,
    register_source,
)
from securemail.errors import HeaderInjectionError, InputError

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
BINARY = bytes(range(256)) * 40
INJECTED = "\r\nBcc: victim@example.com"


def base() -> MessageBuilder:
    return MessageBuilder().from_addr("alice@example.com").to("bob@example.com")


def wire(message: EmailMessage) -> bytes:
    return message.as_bytes(policy=email.policy.SMTP)


def reparse(message: EmailMessage) -> EmailMessage:
    parsed = email.message_from_bytes(wire(message), policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def shape(part: MIMEPart) -> Any:
    """The MIME tree as nested (content type, [children]) / content type."""
    if part.get_content_maintype() != "multipart":
        return part.get_content_type()
    return (part.get_content_type(), [shape(child) for child in part.iter_parts()])


def header_lines(message: EmailMessage) -> dict[str, bytes]:
    """Top-level header fields as on the wire (unfolded), keyed by lower-case name."""
    head = wire(message).split(b"\r\n\r\n", 1)[0].replace(b"\r\n ", b" ")
    return {
        line.split(b":", 1)[0].decode().lower(): line.split(b":", 1)[1].strip()
        for line in head.split(b"\r\n")
    }


# --- setters ---------------------------------------------------------------------------------


def test_from_addr_accepts_strings_and_addresses_and_replaces() -> None:
    builder = base().text("x").from_addr("Alice Example <alice@example.com>")
    assert builder.build()["From"] == "Alice Example <alice@example.com>"
    builder = builder.from_addr(Address("Other", "other", "example.net"))
    assert builder.build()["From"] == "Other <other@example.net>"


@pytest.mark.parametrize(
    ("method", "field"), [("to", "To"), ("cc", "Cc"), ("reply_to", "Reply-To")]
)
def test_address_setters_append(method: str, field: str) -> None:
    builder = MessageBuilder().from_addr("alice@example.com").bcc("hidden@example.com").text("x")
    builder = getattr(builder, method)("a@example.com", "B <b@example.com>")
    builder = getattr(builder, method)(Address("C", "c", "example.com"))
    message = builder.build()
    header = message[field]
    assert [a.addr_spec for a in header.addresses] == [
        "a@example.com",
        "b@example.com",
        "c@example.com",
    ]
    assert len(message.get_all(field)) == 1


def test_subject_non_ascii_is_rfc2047_on_the_wire() -> None:
    message = base().subject("Quarterly report — Q3").text("x").build()
    assert b"=?utf-8?" in header_lines(message)["subject"]
    assert reparse(message)["Subject"] == "Quarterly report — Q3"


def test_no_subject_header_without_subject() -> None:
    assert "Subject" not in base().text("x").build()


def test_display_names_are_rfc2047_and_idna_domains_on_the_wire() -> None:
    message = base().to("Ĉarli <carl@bücher.de>").text("x").build()
    to = header_lines(message)["to"]
    assert b"=?utf-8?" in to
    assert b"carl@xn--bcher-kva.de" in to
    assert "bücher".encode() not in wire(message)
    addresses = reparse(message)["To"].addresses
    assert (addresses[1].display_name, addresses[1].addr_spec) == (
        "Ĉarli",
        "carl@xn--bcher-kva.de",
    )


def test_date_given() -> None:
    when = datetime(2024, 3, 1, 12, 30, tzinfo=timezone(timedelta(hours=2)))
    message = base().date(when).text("x").build()
    assert message["Date"] == format_datetime(when)
    assert message["Date"].datetime == when


def test_date_default_is_now_in_utc() -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    date = base().text("x").build()["Date"]
    assert before <= parsedate_to_datetime(date) <= datetime.now(UTC)
    assert date.endswith("+0000")


def test_date_refuses_naive_datetime() -> None:
    with pytest.raises(InputError, match="naive"):
        base().date(datetime(2024, 3, 1, 12, 30))


def test_message_id_given() -> None:
    message = base().message_id("<x.1@mail.example.com>").text("x").build()
    assert message["Message-ID"] == "<x.1@mail.example.com>"


def test_message_id_default_uses_the_from_domain() -> None:
    first = MessageBuilder().from_addr("a@bücher.de").to("b@example.com").text("x").build()
    second = MessageBuilder().from_addr("a@bücher.de").to("b@example.com").text("x").build()
    assert re.fullmatch(r"<[^@<>\s]+@xn--bcher-kva\.de>", first["Message-ID"])
    assert first["Message-ID"] != second["Message-ID"]


@pytest.mark.parametrize(
    "message_id", ["x@y", "<x>", "<a b@c>", "<x@y> <z@w>", "<@y>", "<x@>", "<x@y", "<x@[a[b]>"]
)
def test_message_id_refuses_malformed(message_id: str) -> None:
    with pytest.raises(InputError, match="Message-ID"):
        base().message_id(message_id)


def test_header_adds_custom_headers_in_order() -> None:
    message = (
        base()
        .header("X-Ticket", "1234")
        .header("X-Ticket", "5678")
        .header("Sender", "Secretary <sec@example.com>")
        .text("x")
        .build()
    )
    assert message.get_all("X-Ticket") == ["1234", "5678"]
    assert message["Sender"] == "Secretary <sec@example.com>"


def test_header_values_may_be_non_ascii() -> None:
    message = base().header("X-Note", "données").text("x").build()
    assert b"=?utf-8?" in header_lines(message)["x-note"]
    assert reparse(message)["X-Note"] == "données"


@pytest.mark.parametrize(
    "name",
    [
        "From",
        "to",
        "CC",
        "Bcc",
        "Reply-To",
        "subject",
        "Date",
        "Message-Id",
        "MIME-Version",
        "Content-Type",
        "content-transfer-encoding",
        "Content-Disposition",
    ],
)
def test_header_refuses_names_owned_by_setters_or_mime(name: str) -> None:
    with pytest.raises(InputError, match="own method or by MIME"):
        base().header(name, "x")


def test_header_respects_the_maximum_count() -> None:
    builder = base().header("Sender", "a@example.com")
    with pytest.raises(InputError, match="at most 1"):
        builder.header("sender", "b@example.com")


def test_header_refuses_a_malformed_structured_value() -> None:
    with pytest.raises(InputError, match="malformed"):
        base().header("Sender", "not an address")


def test_header_order() -> None:
    message = (
        MessageBuilder()
        .header("X-Ticket", "1")
        .text("x")
        .subject("s")
        .reply_to("r@example.com")
        .cc("c@example.com")
        .to("t@example.com")
        .from_addr("f@example.com")
        .build()
    )
    expected = ["From", "To", "Cc", "Reply-To", "Subject", "Date", "Message-ID", "X-Ticket"]
    expected += ["MIME-Version", "Content-Type", "Content-Transfer-Encoding"]
    assert message.keys() == expected
    assert [name.title() for name in header_lines(message)] == [n.title() for n in expected]


# --- immutability ----------------------------------------------------------------------------

SETTERS: dict[str, Callable[[MessageBuilder], MessageBuilder]] = {
    "from_addr": lambda b: b.from_addr("x@example.com"),
    "to": lambda b: b.to("x@example.com"),
    "cc": lambda b: b.cc("x@example.com"),
    "bcc": lambda b: b.bcc("x@example.com"),
    "reply_to": lambda b: b.reply_to("x@example.com"),
    "subject": lambda b: b.subject("new"),
    "date": lambda b: b.date(datetime(2020, 1, 1, tzinfo=UTC)),
    "message_id": lambda b: b.message_id("<new@example.com>"),
    "header": lambda b: b.header("X-New", "1"),
    "text": lambda b: b.text("new"),
    "html": lambda b: b.html("<p>new</p>"),
    "inline_image": lambda b: b.inline_image(PNG, cid="new", content_type="image/png"),
    "attach": lambda b: b.attach(b"new", filename="new.bin"),
}


@pytest.mark.parametrize("setter", SETTERS.values(), ids=SETTERS.keys())
def test_setters_return_a_new_builder_and_leave_the_old_one_unchanged(
    setter: Callable[[MessageBuilder], MessageBuilder],
) -> None:
    old = (
        base()
        .cc("c@example.com")
        .subject("old")
        .html("<img src='cid:old'>")
        .inline_image(PNG, cid="old", content_type="image/png")
        .attach(b"old", filename="old.bin")
    )
    snapshot = copy.deepcopy(old)
    new = setter(old)
    assert new is not old
    assert new != old
    assert old == snapshot


def test_builder_is_frozen() -> None:
    builder = base()
    with pytest.raises(dataclasses.FrozenInstanceError):
        builder._to = ()  # type: ignore[misc]


def test_builder_can_be_branched() -> None:
    common = base().subject("Report")
    to_bob = common.text("Hi Bob").build()
    to_carl = common.to("carl@example.com").text("Hi Carl").build()
    assert [a.addr_spec for a in to_bob["To"].addresses] == ["bob@example.com"]
    assert len(to_carl["To"].addresses) == 2


# --- completeness ----------------------------------------------------------------------------


def test_build_requires_from() -> None:
    with pytest.raises(InputError, match="From"):
        MessageBuilder().to("bob@example.com").text("x").build()


def test_build_requires_a_recipient() -> None:
    with pytest.raises(InputError, match="recipient"):
        MessageBuilder().from_addr("alice@example.com").text("x").build()


@pytest.mark.parametrize("method", ["to", "cc", "bcc"])
def test_any_recipient_kind_is_enough(method: str) -> None:
    builder = getattr(MessageBuilder().from_addr("alice@example.com"), method)("b@example.com")
    assert envelope_recipients(builder.text("x").build()) == ("b@example.com",)


def test_build_requires_a_body_or_an_attachment() -> None:
    with pytest.raises(InputError, match="body or an attachment"):
        base().subject("empty").build()


def test_build_requires_every_inline_image_to_be_referenced() -> None:
    builder = (
        base()
        .html("<p><img src='cid:logo'></p>")
        .inline_image(PNG, cid="logo", content_type="image/png")
        .inline_image(PNG, cid="unused", content_type="image/png")
    )
    with pytest.raises(InputError, match="'unused'"):
        builder.build()


def test_inline_image_without_html_is_unreferenced() -> None:
    builder = base().text("x").inline_image(PNG, cid="logo", content_type="image/png")
    with pytest.raises(InputError, match="'logo' is not referenced"):
        builder.build()


@pytest.mark.parametrize(
    ("cid", "html"),
    [
        ("logo", '<img src="CID:logo">'),
        ("a@b.example", "<img src='cid:a%40b.example'>"),
        ("a&b", '<img src="cid:a&amp;b">'),
        ("bg", "<div style='background: url(cid:bg)'>x</div>"),
    ],
)
def test_cid_references_are_found_in_the_html(cid: str, html: str) -> None:
    base().html(html).inline_image(PNG, cid=cid, content_type="image/png").build()


# --- MIME structure --------------------------------------------------------------------------


def test_text_only_is_text_plain_utf8() -> None:
    message = base().text("Hello").build()
    assert shape(message) == "text/plain"
    assert message.get_content_charset() == "utf-8"
    assert message.get_content() == "Hello\n"


def test_html_gets_a_plain_text_alternative() -> None:
    message = base().html("<p>Hello <b>world</b></p>").build()
    assert shape(message) == ("multipart/alternative", ["text/plain", "text/html"])
    plain, html = message.iter_parts()
    assert plain.get_content() == "Hello world\n"
    assert html.get_content() == "<p>Hello <b>world</b></p>\n"


def test_text_and_html_are_alternatives_in_that_order() -> None:
    message = base().html("<p>rich</p>").text("plain").build()
    plain, html = message.iter_parts()
    assert (plain.get_content(), html.get_content()) == ("plain\n", "<p>rich</p>\n")


def test_html_with_inline_images_is_related() -> None:
    message = (
        base()
        .html("<p>Hi <img src='cid:logo'><img src='cid:sig'></p>")
        .inline_image(PNG, cid="logo", filename="logo.png")
        .inline_image(b"GIF89a", cid="sig", content_type="image/gif")
        .build()
    )
    assert shape(message) == (
        "multipart/alternative",
        ["text/plain", ("multipart/related", ["text/html", "image/png", "image/gif"])],
    )
    related = message.get_payload(1)
    assert related.get_param("type") == "text/html"
    _, logo, sig = related.iter_parts()
    assert (logo["Content-ID"], sig["Content-ID"]) == ("<logo>", "<sig>")
    assert logo.get_content_disposition() == "inline"
    assert logo.get_filename() == "logo.png"
    assert logo.get_content() == PNG


def test_attachments_make_multipart_mixed_around_the_body() -> None:
    message = (
        base()
        .html("<img src='cid:logo'>")
        .inline_image(PNG, cid="logo", content_type="image/png")
        .attach(b"%PDF-1.7", filename="report.pdf")
        .attach(BINARY, filename="data.bin")
        .build()
    )
    assert shape(message) == (
        "multipart/mixed",
        [
            (
                "multipart/alternative",
                ["text/plain", ("multipart/related", ["text/html", "image/png"])],
            ),
            "application/pdf",
            "application/octet-stream",
        ],
    )


def test_text_with_attachment() -> None:
    message = base().text("see attached").attach(b"x", filename="a.txt").build()
    assert shape(message) == ("multipart/mixed", ["text/plain", "text/plain"])
    body, attachment = message.iter_parts()
    assert body.get_content_disposition() is None
    assert attachment.get_content_disposition() == "attachment"


def test_attachments_only_have_no_empty_text_part() -> None:
    message = base().attach(b"x", filename="a.pdf").attach(b"y", filename="b.pdf").build()
    assert shape(message) == ("multipart/mixed", ["application/pdf", "application/pdf"])


def test_only_the_top_level_has_mime_version() -> None:
    message = (
        base()
        .html("<img src='cid:logo'>")
        .inline_image(PNG, cid="logo", content_type="image/png")
        .attach(b"x", filename="a.pdf")
        .build()
    )
    assert wire(message).count(b"MIME-Version") == 1
    assert all(part.get("MIME-Version") is None for part in message.iter_parts())


def test_the_whole_message_is_7bit() -> None:
    message = (
        base()
        .subject("été")
        .text("Grüße, ümlaut ☃")
        .html("<p>Grüße ☃</p>")
        .attach(BINARY, filename="données.bin")
        .build()
    )
    assert wire(message).isascii()
    for part in message.walk():
        assert part.get("Content-Transfer-Encoding", "7bit") in (
            "7bit",
            "quoted-printable",
            "base64",
        )


def test_serialization_is_stable() -> None:
    message = base().html("<p>x</p>").attach(b"x", filename="a.bin").build()
    assert wire(message) == wire(message)
    assert bytes(message) == bytes(copy.deepcopy(message))


# --- HTML to text ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("html", "text"),
    [
        ("<p>Hello</p><p>World</p>", "Hello\n\nWorld\n"),
        ("<div>line 1</div><div>line 2</div>", "line 1\nline 2\n"),
        ("a<br>b<br/>c", "a\nb\nc\n"),
        ("<h1>Title</h1>Text", "Title\n\nText\n"),
        ("<ul><li>one</li><li>two</li></ul>", "- one\n- two\n"),
        ("<p>  lots   of\n\n  space  </p>", "lots of space\n"),
        ("<pre>  keep\n    indent</pre>", "  keep\n    indent\n"),
        ("<style>p { color: red }</style><script>alert(1)</script><p>shown</p>", "shown\n"),
        ("<head><title>T</title></head><body>body</body>", "body\n"),
        ("<a href='https://example.com/x'>the site</a>", "the site <https://example.com/x>\n"),
        ("<a href='https://example.com/'>https://example.com/</a>", "https://example.com/\n"),
        ("<a href='mailto:bob@example.com'>bob@example.com</a>", "bob@example.com\n"),
        ("<a href='#top'>top</a>", "top\n"),
        ("<img src='cid:logo' alt='Logo'>Text", "[Logo] Text\n"),
        ("<table><tr><td>a</td><td>b</td></tr><tr><td>c</td></tr></table>", "a b\nc\n"),
        ("Fish &amp; chips &lt;3 &eacute;", "Fish & chips <3 é\n"),
    ],
)
def test_html_to_text(html: str, text: str) -> None:
    message = base().html(html).build()
    assert message.get_payload(0).get_content() == text


# --- attachments -----------------------------------------------------------------------------


def test_attach_path(tmp_path: Path) -> None:
    path = tmp_path / "report.pdf"
    path.write_bytes(BINARY)
    (attachment,) = base().attach(path).build().iter_attachments()
    assert attachment.get_filename() == "report.pdf"
    assert attachment.get_content_type() == "application/pdf"
    assert attachment.get_content() == BINARY


def test_attach_path_with_explicit_filename_and_type(tmp_path: Path) -> None:
    path = tmp_path / "x.dat"
    path.write_bytes(b"a;b\n")
    builder = base().attach(path, filename="data.csv", content_type="text/csv; charset=utf-8")
    (attachment,) = builder.build().iter_attachments()
    assert attachment.get_filename() == "data.csv"
    assert attachment["Content-Type"] == 'text/csv; charset="utf-8"'
    assert attachment.get_payload(decode=True) == b"a;b\n"


def test_attach_missing_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pdf"
    with pytest.raises(InputError, match=r"nope\.pdf") as caught:
        base().attach(missing)
    assert isinstance(caught.value.__cause__, FileNotFoundError)


def test_attach_directory_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=re.escape(str(tmp_path))):
        base().attach(tmp_path)


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_attach_buffers(kind: Callable[[bytes], Any]) -> None:
    (attachment,) = base().attach(kind(BINARY), filename="a.bin").build().iter_attachments()
    assert attachment.get_content() == BINARY


def test_attach_bytes_without_filename() -> None:
    (attachment,) = base().attach(b"x").build().iter_attachments()
    assert attachment.get_filename() is None
    assert attachment.get_content_type() == "application/octet-stream"
    assert attachment.get_content_disposition() == "attachment"


def test_attach_file_object_takes_its_name(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    path.write_bytes(BINARY)
    with path.open("rb") as file:
        (attachment,) = base().attach(file).build().iter_attachments()
    assert attachment.get_filename() == "photo.jpg"
    assert attachment.get_content_type() == "image/jpeg"
    assert attachment.get_content() == BINARY


def test_attach_file_object_is_read_in_chunks() -> None:
    class Trickle(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self.data = data
            self.sizes: list[int] = []

        def read(self, size: int = -1) -> bytes:
            assert size > 0, "read everything at once"
            self.sizes.append(size)
            chunk, self.data = self.data[:7], self.data[7:]
            return chunk

    source = Trickle(BINARY)
    (attachment,) = base().attach(source, filename="x.bin").build().iter_attachments()
    assert attachment.get_content() == BINARY
    assert len(source.sizes) > len(BINARY) // 7


def test_attach_text_mode_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with path.open() as file, pytest.raises(InputError, match="binary mode"):
        base().attach(file)


@pytest.mark.parametrize("source", ["report.pdf", 42, None, ["a"]])
def test_attach_unknown_source_type_names_the_type(source: object) -> None:
    with pytest.raises(InputError, match=f"cannot attach a {type(source).__qualname__}:"):
        base().attach(source)


@pytest.mark.parametrize(
    ("filename", "content_type"),
    [
        ("report.pdf", "application/pdf"),
        ("REPORT.PDF", "application/pdf"),
        ("table.csv", "text/csv"),
        ("logo.png", "image/png"),
        ("archive.tar.gz", "application/octet-stream"),
        ("mail.eml", "application/octet-stream"),
        ("noextension", "application/octet-stream"),
        ("file.unknownext", "application/octet-stream"),
    ],
)
def test_content_type_is_guessed_from_the_filename(filename: str, content_type: str) -> None:
    (attachment,) = base().attach(b"x", filename=filename).build().iter_attachments()
    assert attachment.get_content_type() == content_type


@pytest.mark.parametrize(
    "content_type", ["text", "text/", "a b/c", "multipart/mixed", "message/rfc822", "x/y; a"]
)
def test_attach_refuses_bad_content_types(content_type: str) -> None:
    with pytest.raises(InputError, match="content type"):
        base().attach(b"x", content_type=content_type)


def test_text_attachments_stay_bytes() -> None:
    data = "données;été\r\n".encode("latin-1")
    builder = base().attach(data, filename="x.csv", content_type="text/csv; charset=latin-1")
    (attachment,) = reparse(builder.build()).iter_attachments()
    assert attachment.get_payload(decode=True) == data
    assert attachment["Content-Transfer-Encoding"] == "base64"


def test_inline_image_from_path_and_checks(tmp_path: Path) -> None:
    path = tmp_path / "logo.png"
    path.write_bytes(PNG)
    message = base().html("<img src='cid:logo'>").inline_image(path, cid="logo").build()
    image = message.get_payload(1).get_payload(1)
    assert (image.get_filename(), image.get_content()) == ("logo.png", PNG)


@pytest.mark.parametrize("cid", ["", "has space", "<logo>", "a<b", 'q"uote', "a(b)", "é"])
def test_inline_image_refuses_malformed_cids(cid: str) -> None:
    with pytest.raises(InputError, match="cid"):
        base().inline_image(PNG, cid=cid, content_type="image/png")


def test_inline_image_cids_must_be_unique() -> None:
    builder = base().inline_image(PNG, cid="logo", content_type="image/png")
    with pytest.raises(InputError, match="already used"):
        builder.inline_image(PNG, cid="logo", content_type="image/png")


def test_inline_image_must_be_an_image() -> None:
    with pytest.raises(InputError, match="not image"):
        base().inline_image(b"%PDF", cid="doc", filename="doc.pdf")


# --- the registry ----------------------------------------------------------------------------


@dataclasses.dataclass
class Blob:
    key: str


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registrations made by a test stay in that test."""
    monkeypatch.setattr(compose, "_SOURCES", dict(compose._SOURCES))


@pytest.mark.usefixtures("registry")
def test_register_a_custom_source_type() -> None:
    register_source(Blob, lambda blob: (f"content of {blob.key}".encode(), f"{blob.key}.txt"))
    (attachment,) = base().attach(Blob("notes")).build().iter_attachments()
    assert attachment.get_filename() == "notes.txt"
    assert attachment.get_content_type() == "text/plain"
    assert attachment.get_payload(decode=True) == b"content of notes"


@pytest.mark.usefixtures("registry")
def test_newest_registration_wins() -> None:
    register_source(bytes, lambda data: (data.upper(), "upper.bin"))
    (attachment,) = base().attach(b"abc").build().iter_attachments()
    assert (attachment.get_filename(), attachment.get_content()) == ("upper.bin", b"ABC")
    (attachment,) = base().attach(bytearray(b"abc")).build().iter_attachments()
    assert attachment.get_content() == b"abc"


@pytest.mark.usefixtures("registry")
def test_a_handler_error_reaches_the_caller() -> None:
    def refuse(blob: Blob) -> compose.SourceData:
        raise InputError(f"no blob {blob.key!r}")

    register_source(Blob, refuse)
    with pytest.raises(InputError, match="no blob 'gone'"):
        base().attach(Blob("gone"))


# --- header injection through every input ----------------------------------------------------


class SneakyAddress(Address):
    @property
    def display_name(self) -> str:
        return "Eve" + INJECTED


INJECTIONS: dict[str, tuple[Callable[[MessageBuilder], object], str]] = {
    "from_addr": (lambda b: b.from_addr("alice@example.com" + INJECTED), "From"),
    "from_addr Address": (lambda b: b.from_addr(SneakyAddress("", "e", "example.com")), "From"),
    "from_addr Address NUL": (lambda b: b.from_addr(Address("E\0", "e", "example.com")), "From"),
    "to": (lambda b: b.to("ok@example.com", "bob@example.com" + INJECTED), "To"),
    "to Address": (lambda b: b.to(SneakyAddress("", "e", "example.com")), "To"),
    "cc": (lambda b: b.cc("Bob\n <bob@example.com>"), "Cc"),
    "bcc": (lambda b: b.bcc("bob@example.com\r"), "Bcc"),
    "reply_to": (lambda b: b.reply_to(SneakyAddress("", "e", "example.com")), "Reply-To"),
    "encoded display name": (
        lambda b: b.to("=?utf-8?q?Eve=0D=0ABcc:_victim@example.com?= <e@example.com>"),
        "To",
    ),
    "subject": (lambda b: b.subject("Hello" + INJECTED), "Subject"),
    "subject NUL": (lambda b: b.subject("Hello\0"), "Subject"),
    "subject encoded": (lambda b: b.subject("=?utf-8?q?Hi=0D=0ABcc:_victim?="), "Subject"),
    "subject U+2028": (lambda b: b.subject("Hello\u2028Bcc: victim"), "Subject"),
    "header value": (lambda b: b.header("X-Ticket", "1" + INJECTED), "X-Ticket"),
    "header name": (lambda b: b.header("X-Ticket\r\nBcc", "1"), "X-Ticket\\r\\nBcc"),
    "message_id": (lambda b: b.message_id("<a@b>" + INJECTED), "Message-ID"),
    "attach filename": (
        lambda b: b.attach(b"x", filename="a.pdf" + INJECTED),
        "Content-Disposition",
    ),
    "attach encoded filename": (
        lambda b: b.attach(b"x", filename="=?utf-8?q?a=0D=0ABcc:_victim?="),
        "Content-Disposition",
    ),
    "attach content_type": (
        lambda b: b.attach(b"x", content_type="text/plain" + INJECTED),
        "Content-Type",
    ),
    "attach content_type parameter": (
        lambda b: b.attach(b"x", content_type="text/plain; x*=utf-8''%0D%0ABcc"),
        "Content-Type",
    ),
    "inline cid": (lambda b: b.inline_image(PNG, cid="logo" + INJECTED), "Content-ID"),
    "inline encoded cid": (
        lambda b: b.inline_image(PNG, cid="=?utf-8?q?x=0D=0ABcc=3A_v=40x?="),
        "Content-ID",
    ),
    "inline filename": (
        lambda b: b.inline_image(PNG, cid="logo", filename="logo.png\n"),
        "Content-Disposition",
    ),
}


@pytest.mark.parametrize(("inject", "field"), INJECTIONS.values(), ids=INJECTIONS.keys())
def test_injection_is_refused_at_the_setter(
    inject: Callable[[MessageBuilder], object], field: str
) -> None:
    with pytest.raises(HeaderInjectionError) as caught:
        inject(base())
    assert caught.value.field == field
    assert "victim" not in str(caught.value)


def test_injection_through_a_file_name(tmp_path: Path) -> None:
    path = tmp_path / "a\nBcc: victim.pdf"
    path.write_bytes(b"x")
    with pytest.raises(HeaderInjectionError) as caught:
        base().attach(path)
    assert caught.value.field == "Content-Disposition"


def test_build_rechecks_the_generated_header_names() -> None:
    # Defence in depth: even a value that slipped past the setters cannot add a header.
    smuggled = dataclasses.replace(base().text("x"), _cc=(SneakyAddress("", "e", "x.org"),))
    with pytest.raises(HeaderInjectionError, match="not intended") as caught:
        smuggled.build()
    assert caught.value.field == "bcc"


@pytest.mark.parametrize(
    ("method", "argument"),
    [
        ("from_addr", "alice"),
        ("from_addr", ""),
        ("from_addr", "alice@example.com, eve@example.com"),
        ("to", "bob@"),
        ("to", "Team: a@example.com;"),
        ("cc", "@example.com"),
        ("bcc", "a@example.com b@example.com"),
        ("reply_to", "jörg@example.com"),
    ],
)
def test_invalid_addresses_are_input_errors_naming_the_field(method: str, argument: str) -> None:
    field = {"from_addr": "From", "to": "To", "cc": "Cc", "bcc": "Bcc", "reply_to": "Reply-To"}
    with pytest.raises(InputError, match=f"^{field[method]}: ") as caught:
        getattr(base(), method)(argument)
    assert not isinstance(caught.value, HeaderInjectionError)


def test_non_ascii_local_part_needs_smtputf8() -> None:
    with pytest.raises(InputError, match="SMTPUTF8"):
        base().to("jörg@example.com")


@pytest.mark.parametrize("method", ["text", "html"])
def test_bodies_must_be_encodable(method: str) -> None:
    with pytest.raises(InputError, match="lone surrogates"):
        getattr(base(), method)("broken \udcff")


# --- Bcc and the envelope --------------------------------------------------------------------


def test_bcc_is_never_a_header_but_is_on_the_message() -> None:
    message = (
        base()
        .cc("carl@example.org")
        .bcc("Hidden Person <hidden@secret.example>", "other@secret.example")
        .text("x")
        .build()
    )
    data = wire(message)
    assert b"secret.example" not in data
    assert b"Hidden Person" not in data
    assert b"bcc" not in data.lower()
    assert "Bcc" not in message
    assert message.bcc == ("hidden@secret.example", "other@secret.example")
    assert envelope_recipients(message) == (
        "bob@example.com",
        "carl@example.org",
        "hidden@secret.example",
        "other@secret.example",
    )


def test_bcc_survives_copies() -> None:
    message = base().bcc("hidden@example.com").text("x").build()
    for clone in (copy.deepcopy(message), copy.copy(message)):
        assert isinstance(clone, Message)
        assert clone.bcc == ("hidden@example.com",)


def test_bcc_is_read_only() -> None:
    message = base().bcc("hidden@example.com").text("x").build()
    with pytest.raises(AttributeError):
        message.bcc = ()  # type: ignore[misc]


def test_message_is_an_email_message() -> None:
    message = base().text("x").build()
    assert isinstance(message, EmailMessage)
    assert message.as_bytes().startswith(b"From: alice@example.com\n")
    assert Message().bcc == ()


def test_envelope_recipients_deduplicates_in_order() -> None:
    message = (
        base()
        .to("carl@example.org", "bob@EXAMPLE.com")
        .cc("Bob <bob@example.com>", "dave@example.com")
        .bcc("carl@example.org", "Bob@example.com")
        .text("x")
        .build()
    )
    assert envelope_recipients(message) == (
        "bob@example.com",
        "carl@example.org",
        "dave@example.com",
        "Bob@example.com",
    )


def test_envelope_of_a_user_built_message_with_a_bcc_header() -> None:
    message = EmailMessage()
    message["From"] = "Alice <alice@example.com>"
    message["To"] = "bob@example.com, undisclosed:;"
    message["Bcc"] = "hidden@bücher.de"
    assert envelope_recipients(message) == ("bob@example.com", "hidden@xn--bcher-kva.de")
    assert envelope_sender(message) == "alice@example.com"


def test_envelope_refuses_malformed_recipients() -> None:
    message = email.message_from_bytes(
        b"From: alice@example.com\r\nTo: bob\r\n\r\nx", policy=email.policy.default
    )
    assert isinstance(message, EmailMessage)
    with pytest.raises(InputError, match=r"^To: 'bob'"):
        envelope_recipients(message)


def test_envelope_sender_prefers_sender() -> None:
    message = base().header("Sender", "Secretary <sec@example.com>").text("x").build()
    assert envelope_sender(message) == "sec@example.com"
    assert envelope_sender(base().text("x").build()) == "alice@example.com"


def test_envelope_sender_needs_exactly_one_address() -> None:
    message = EmailMessage()
    message["From"] = "a@example.com, b@example.com"
    with pytest.raises(InputError, match="From holds 2 addresses"):
        envelope_sender(message)
    with pytest.raises(InputError, match="no From"):
        envelope_sender(EmailMessage())


# --- round trip through the standard library -------------------------------------------------


def test_round_trip_through_bytes() -> None:
    message = (
        MessageBuilder()
        .from_addr("Zoë Ünicode <zoe@example.com>")
        .to("Ĉarli Ĝo <carl@example.org>")
        .subject("Quarterly report — Q3 ✓ " + "long " * 20)
        .text("Grüße,\nsee the report.\n")
        .html("<p>Grüße, see <img src='cid:logo'></p>")
        .inline_image(PNG, cid="logo", content_type="image/png")
        .attach(BINARY, filename="données été.bin")
        .attach("€ ✓\n".encode(), filename="ñoño.txt", content_type="text/plain; charset=utf-8")
        .build()
    )
    parsed = reparse(message)
    assert parsed["Subject"] == "Quarterly report — Q3 ✓ " + "long " * 20
    assert str(parsed["From"]) == "Zoë Ünicode <zoe@example.com>"
    assert str(parsed["To"]) == "Ĉarli Ĝo <carl@example.org>"
    assert parsed["Message-ID"] == message["Message-ID"]
    # Parsed from CRLF bytes, text keeps CRLF line ends (MIME's canonical form for text).
    plain, html = (parsed.get_body((kind,)).get_content() for kind in ("plain", "html"))
    assert plain == "Grüße,\r\nsee the report.\r\n"
    assert html == "<p>Grüße, see <img src='cid:logo'></p>\r\n"
    attachments = [(a.get_filename(), a.get_content()) for a in parsed.iter_attachments()]
    assert attachments == [("données été.bin", BINARY), ("ñoño.txt", "€ ✓\n")]
    assert wire(message) == parsed.as_bytes(policy=email.policy.SMTP)


def test_rfc2231_filename_on_the_wire() -> None:
    message = base().attach(b"a,b\n", filename="données été.csv", content_type="text/csv").build()
    assert b"filename*=utf-8''donn%C3%A9es%20%C3%A9t%C3%A9.csv" in wire(message)
