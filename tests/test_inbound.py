from __future__ import annotations

import dataclasses
import email
import email.policy
from email.message import EmailMessage

import pytest

from securemail.compose import MessageBuilder
from securemail.inbound import InboundAttachment, iter_attachments

BINARY = bytes(range(256)) * 4


def parse(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def test_attachments_of_a_composed_message() -> None:
    built = (
        MessageBuilder()
        .from_addr("alice@example.com")
        .to("bob@example.com")
        .html("<p><img src='cid:logo'></p>")
        .inline_image(b"\x89PNG", cid="logo", content_type="image/png")
        .attach(BINARY, filename="données été.bin")
        .attach(b"a,b\n", filename="table.csv")
        .build()
    )
    found = list(iter_attachments(parse(built.as_bytes(policy=email.policy.SMTP))))
    assert found == [
        InboundAttachment(
            filename="données été.bin",
            original_filename="données été.bin",
            content_type="application/octet-stream",
            content_id=None,
            data=BINARY,
        ),
        InboundAttachment(
            filename="table.csv",
            original_filename="table.csv",
            content_type="text/csv",
            content_id=None,
            data=b"a,b\n",
        ),
    ]


HOSTILE = b"""\
From: eve@example.com
To: bob@example.com
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="outer"

--outer
Content-Type: text/plain

Please open the invoice.
--outer
Content-Type: application/octet-stream
Content-Disposition: attachment; filename="../../.ssh/authorized_keys"
Content-ID: <keys@example.com>
Content-Transfer-Encoding: base64

c3NoLXJzYSBBQUFB
--outer
Content-Type: application/x-msdownload
Content-Disposition: attachment; filename*=utf-8''invoice%E2%80%AEfdp.exe
Content-Transfer-Encoding: base64

TVo=
--outer
Content-Type: multipart/mixed; boundary="inner"

--inner
Content-Type: text/plain

nested body
--inner
Content-Type: application/pdf; name="CON.pdf"
Content-Transfer-Encoding: base64

JVBERg==
--inner--
--outer
Content-Type: message/rfc822
Content-Disposition: attachment

Subject: forwarded

hello
--outer--
"""


def test_hostile_filenames_are_sanitized_and_nested_parts_found() -> None:
    found = list(iter_attachments(parse(HOSTILE)))
    assert [(a.filename, a.original_filename, a.content_type) for a in found] == [
        ("authorized_keys", "../../.ssh/authorized_keys", "application/octet-stream"),
        ("invoicefdp.exe", "invoice\u202efdp.exe", "application/x-msdownload"),
        ("_CON.pdf", "CON.pdf", "application/pdf"),
        ("attachment", None, "message/rfc822"),
    ]
    keys, exe, pdf, forwarded = found
    assert keys.content_id == "<keys@example.com>"
    assert (keys.data, exe.data, pdf.data) == (b"ssh-rsa AAAA", b"MZ", b"%PDF")
    assert parse(forwarded.data)["Subject"] == "forwarded"


def test_a_message_that_is_one_attachment() -> None:
    data = (
        b"From: a@example.com\r\nContent-Type: application/pdf\r\n"
        b'Content-Disposition: attachment; filename="x.pdf"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\nJVBERg==\r\n"
    )
    (only,) = iter_attachments(parse(data))
    assert (only.filename, only.data) == ("x.pdf", b"%PDF")


def test_a_text_message_has_no_attachments() -> None:
    assert list(iter_attachments(parse(b"From: a@example.com\r\n\r\nhello\r\n"))) == []


def test_inbound_attachment_is_frozen_and_keeps_data_out_of_repr() -> None:
    attachment = InboundAttachment(
        filename="a", original_filename=None, content_type="x/y", content_id=None, data=b"SECRET"
    )
    assert "SECRET" not in repr(attachment)
    with pytest.raises(dataclasses.FrozenInstanceError):
        attachment.filename = "b"  # type: ignore[misc]
