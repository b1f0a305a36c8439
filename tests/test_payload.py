"""Header protection (RFC 9788): what goes inside, what stays outside, what a reader gets back.

The protected payload is inspected at the CMS level (``decrypt_envelope``), so these tests see
exactly what a recipient's client would see, not what securemail chooses to restore.
"""

from __future__ import annotations

import email.message
import email.policy
import re

import pki
import pytest
from pki import enveloped_message, identity, message, replace_once, signed_parts, smime_der

from securemail.compose import MessageBuilder
from securemail.keys import Identity
from securemail.policy import COMPATIBLE, DEFAULT, ContentCipher, Policy
from securemail.results import ProtectedMessage, SignatureStatus
from securemail.smime import decrypt, encrypt, sign, verify
from securemail.smime.enveloped import EnvelopeRecipient, decrypt_envelope, encrypt_envelope

SUBJECT = "Quarterly report"
PROTECTED = ("From", "To", "Subject", "Date", "Message-ID")


@pytest.fixture(scope="module")
def p() -> pki.PKI:
    return pki.shared_pki()


@pytest.fixture(scope="module")
def alice(p: pki.PKI) -> Identity:
    return identity(p.users["rsa"], p.intermediate)


@pytest.fixture(scope="module")
def carol(p: pki.PKI) -> Identity:
    return identity(p.users["p256"], p.intermediate)


def header_block(data: bytes) -> bytes:
    return pki.split_head(data)[0]


def fields(block: bytes) -> list[tuple[str, str]]:
    """(name, unfolded value) of each field of a header block."""
    unfolded = re.sub(rb"\r\n[ \t]+", b" ", block).decode("ascii")
    return [tuple(line.split(": ", 1)) for line in unfolded.split("\r\n") if line]  # type: ignore[misc]


def names(block: bytes) -> list[str]:
    return [name for name, _ in fields(block)]


def value(block: bytes, name: str) -> str | None:
    found = [v for n, v in fields(block) if n.lower() == name.lower()]
    assert len(found) <= 1, f"{name} appears {len(found)} times"
    return found[0] if found else None


def payload_of(protected: ProtectedMessage, who: Identity) -> bytes:
    """The decrypted CMS content: the entity exactly as the sender wrapped it."""
    opened = decrypt_envelope(smime_der(protected.data), who.private_key, who.certificate)
    return opened.content


def trust(p: pki.PKI) -> dict[str, object]:
    return {"trust": [p.root.cert], "certificates": [p.intermediate.cert]}


# --- encrypting ----------------------------------------------------------------------------------


def test_encrypted_message_shows_an_obscured_subject_outside(p: pki.PKI, carol: Identity) -> None:
    protected = encrypt(message(), [p.users["p256"].cert])
    outer = header_block(protected.data)
    assert value(outer, "Subject") == "..."
    assert SUBJECT.encode() not in protected.data
    inner = header_block(payload_of(protected, carol))
    assert value(inner, "Subject") == SUBJECT


def test_obscured_subject_is_configurable(p: pki.PKI) -> None:
    policy = DEFAULT.clone(obscured_subject="[encrypted]")
    protected = encrypt(message(), [p.users["p256"].cert], policy=policy)
    assert value(header_block(protected.data), "Subject") == "[encrypted]"


def test_payload_carries_the_headers_hp_outer_and_hp_cipher(p: pki.PKI, carol: Identity) -> None:
    protected = encrypt(message(), [p.users["p256"].cert])
    outer = [(n, v) for n, v in fields(header_block(protected.data)) if not is_content(n)]
    inner = fields(header_block(payload_of(protected, carol)))
    assert [n for n, _ in inner if n in PROTECTED] == list(PROTECTED)
    hp_outer = [v for n, v in inner if n == "HP-Outer"]
    assert hp_outer == [f"{n}: {v}" for n, v in outer]
    content_type = dict(inner)["Content-Type"]
    assert re.search(r'hp="?cipher"?', content_type)


def is_content(name: str) -> bool:
    return name.lower().startswith("content-") or name.lower() == "mime-version"


def test_decrypt_restores_the_protected_headers(p: pki.PKI, carol: Identity) -> None:
    result = decrypt(encrypt(message(), [p.users["p256"].cert]), carol)
    assert result.message["Subject"] == SUBJECT
    assert set(PROTECTED) <= set(result.protected_headers)
    assert "HP-Outer" not in result.message
    assert result.message.get_param("hp") is None or result.message.get_param("hp") == "cipher"


def test_non_ascii_subject_is_protected_and_restored(p: pki.PKI, carol: Identity) -> None:
    subject = "Grüße aus Köln, Q3"
    protected = encrypt(message(subject=subject), [p.users["p256"].cert])
    assert value(header_block(protected.data), "Subject") == "..."
    assert decrypt(protected, carol).message["Subject"] == subject


def test_sign_and_encrypt_restores_on_verify(p: pki.PKI, alice: Identity, carol: Identity) -> None:
    protected = encrypt(message(), [p.users["p256"].cert], signer=alice)
    decrypted = decrypt(protected, carol)
    assert decrypted.signed
    result = verify(decrypted.data, **trust(p))  # type: ignore[arg-type]
    assert result.status is SignatureStatus.VERIFIED
    assert result.message is not None
    assert result.message["Subject"] == SUBJECT
    assert set(PROTECTED) <= set(result.protected_headers)


def test_without_header_protection(p: pki.PKI, alice: Identity, carol: Identity) -> None:
    policy = Policy(header_protection=False)
    protected = encrypt(message(), [p.users["p256"].cert], policy=policy)
    assert value(header_block(protected.data), "Subject") == SUBJECT
    inner = header_block(payload_of(protected, carol))
    assert names(inner) and all(is_content(n) for n in names(inner))
    assert "hp=" not in inner.decode()
    result = decrypt(protected, carol)
    assert result.message["Subject"] == SUBJECT
    assert result.protected_headers == ()
    signed_entity, _ = signed_parts(sign(message(), alice, policy=policy).data)
    assert "hp=" not in header_block(signed_entity).decode()
    assert all(is_content(n) for n in names(header_block(signed_entity)))


# --- signing -------------------------------------------------------------------------------------


def test_signing_alone_protects_headers_in_the_clear(alice: Identity) -> None:
    protected = sign(message(), alice)
    outer = header_block(protected.data)
    assert value(outer, "Subject") == SUBJECT  # nothing is hidden by a signature
    inner = header_block(signed_parts(protected.data)[0])
    assert [n for n in names(inner) if n in PROTECTED] == list(PROTECTED)
    assert "HP-Outer" not in names(inner)
    assert re.search(r'hp="?clear"?', value(inner, "Content-Type") or "")


def test_rewritten_outer_subject_of_a_signed_message_is_not_believed(
    p: pki.PKI, alice: Identity
) -> None:
    data = sign(message(), alice).data
    outer = header_block(data)
    forged = replace_once(
        data, outer, outer.replace(b"Subject: " + SUBJECT.encode(), b"Subject: Pay now")
    )
    result = verify(forged, **trust(p))  # type: ignore[arg-type]
    assert result.status is SignatureStatus.VERIFIED
    assert result.message is not None
    assert result.message["Subject"] == SUBJECT


# --- an attacker rewrites the outside ------------------------------------------------------------


def rewrite_outer(data: bytes, old: bytes, new: bytes) -> bytes:
    outer = header_block(data)
    return replace_once(data, outer, replace_once(outer, old, new))


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b"Subject: ...", b"Subject: Urgent: reset your password"),
        (b"From: alice@example.com", b"From: mallory@example.com"),
    ],
    ids=["subject", "from"],
)
def test_rewritten_outer_headers_of_signed_and_encrypted_mail_are_not_restored(
    p: pki.PKI, alice: Identity, carol: Identity, old: bytes, new: bytes
) -> None:
    protected = encrypt(message(), [p.users["p256"].cert], signer=alice)
    forged = rewrite_outer(protected.data, old, new)
    result = verify(decrypt(forged, carol).data, **trust(p))  # type: ignore[arg-type]
    assert result.status is SignatureStatus.VERIFIED
    assert result.message is not None
    assert result.message["Subject"] == SUBJECT
    assert result.message["From"] == "alice@example.com"


def test_rewritten_outer_subject_of_encrypted_mail_is_not_restored(
    p: pki.PKI, carol: Identity
) -> None:
    protected = encrypt(message(), [p.users["p256"].cert])
    forged = rewrite_outer(protected.data, b"Subject: ...", b"Subject: Pay now")
    assert decrypt(forged, carol).message["Subject"] == SUBJECT


def test_unprotected_field_added_outside_is_not_merged_into_a_verified_message(
    p: pki.PKI, alice: Identity
) -> None:
    """With header protection the inner header section is complete; a Reply-To that only the
    outside carries was added in transit. RFC 9788 has a receiver use the protected header
    section, not merge unprotected fields into it: otherwise a VERIFIED result would present an
    attacker's Reply-To as part of the signed message."""
    data = sign(message(), alice).data
    forged = rewrite_outer(data, b"From: ", b"Reply-To: mallory@example.com\r\nFrom: ")
    result = verify(forged, **trust(p))  # type: ignore[arg-type]
    assert result.status is SignatureStatus.VERIFIED
    assert result.message is not None
    assert "Reply-To" not in result.message


# --- the older protected-headers="v1" form and legacy display ------------------------------------


def test_protected_headers_v1_is_restored(p: pki.PKI, carol: Identity) -> None:
    """Thunderbird/Enigmail/Autocrypt write the copies with protected-headers="v1"."""
    inner = (
        b'Content-Type: text/plain; charset="utf-8"; protected-headers="v1"\r\n'
        b"Subject: " + SUBJECT.encode() + b"\r\n"
        b"From: alice@example.com\r\nTo: bob@example.com\r\n\r\nbody text\r\n"
    )
    der = encrypt_envelope(
        inner, [EnvelopeRecipient(p.users["p256"].cert)], ContentCipher.AES_256_GCM
    )
    result = decrypt(enveloped_message(der, headers=b"Subject: ...\r\n"), carol)
    assert result.message["Subject"] == SUBJECT
    assert "Subject" in result.protected_headers
    assert result.message.get_content() == "body text\n"


def test_autocrypt_legacy_part_is_removed(p: pki.PKI, carol: Identity) -> None:
    inner = (
        b'Content-Type: multipart/mixed; boundary="lg"; protected-headers="v1"\r\n'
        b"Subject: " + SUBJECT.encode() + b"\r\nFrom: alice@example.com\r\n\r\n"
        b'--lg\r\nContent-Type: text/rfc822-headers; protected-headers="v1"\r\n'
        b"Content-Disposition: inline\r\n\r\nSubject: " + SUBJECT.encode() + b"\r\n\r\n"
        b"--lg\r\nContent-Type: text/plain\r\n\r\nbody text\r\n--lg--\r\n"
    )
    der = encrypt_envelope(
        inner, [EnvelopeRecipient(p.users["p256"].cert)], ContentCipher.AES_256_GCM
    )
    result = decrypt(enveloped_message(der, headers=b"Subject: ...\r\n"), carol)
    assert result.message["Subject"] == SUBJECT
    parts = list(result.message.iter_parts())
    assert [part.get_content_type() for part in parts] == ["text/plain"]


def html_message() -> email.message.EmailMessage:
    return (
        MessageBuilder()
        .from_addr("alice@example.com")
        .to("bob@example.com")
        .subject(SUBJECT)
        .html("<html><body><p>Hi</p></body></html>")
        .build()
    )


@pytest.mark.parametrize("kind", ["text", "html"])
def test_compatible_writes_a_legacy_display_and_decrypt_removes_it(
    p: pki.PKI, carol: Identity, kind: str
) -> None:
    source = message() if kind == "text" else html_message()
    protected = encrypt(source, [p.users["p256"].cert], policy=COMPATIBLE)
    payload = payload_of(protected, carol)
    assert b'hp-legacy-display="1"' in payload
    assert b"Subject: " + SUBJECT.encode() in pki.split_head(payload)[1]
    result = decrypt(protected, carol)
    assert b"hp-legacy-display" not in result.data
    assert b"Subject: " + SUBJECT.encode() not in pki.split_head(result.data)[1]
    assert result.message["Subject"] == SUBJECT


def test_no_legacy_display_by_default_or_when_only_signing(
    p: pki.PKI, alice: Identity, carol: Identity
) -> None:
    assert b"hp-legacy-display" not in payload_of(encrypt(message(), [p.users["p256"].cert]), carol)
    assert b"hp-legacy-display" not in sign(message(), alice, policy=COMPATIBLE).data


# --- Bcc -----------------------------------------------------------------------------------------


SECRET = "hidden.reader@example.org"


def bcc_sources() -> list[email.message.EmailMessage]:
    built = message(bcc=[SECRET])
    user_built = email.message.EmailMessage(policy=email.policy.default)
    user_built["From"] = "alice@example.com"
    user_built["To"] = "bob@example.com"
    user_built["Bcc"] = SECRET
    user_built["Subject"] = SUBJECT
    user_built.set_content("hello\n")
    return [built, user_built]


@pytest.mark.parametrize("source", bcc_sources(), ids=["builder", "bcc-header"])
@pytest.mark.parametrize("operation", ["sign", "encrypt", "sign+encrypt"])
def test_bcc_is_in_the_envelope_and_nowhere_in_the_bytes(
    p: pki.PKI,
    alice: Identity,
    carol: Identity,
    operation: str,
    source: email.message.EmailMessage,
) -> None:
    if operation == "sign":
        protected = sign(source, alice)
        visible = [protected.data]
    else:
        signer = alice if operation == "sign+encrypt" else None
        protected = encrypt(source, [p.users["p256"].cert], signer=signer)
        visible = [protected.data, payload_of(protected, carol)]
    for data in visible:
        assert SECRET.encode() not in data
        assert b"bcc:" not in data.lower()
    assert SECRET in protected.recipients
    assert "bob@example.com" in protected.recipients


def test_compatible_sign_and_encrypt_verifies_and_drops_the_legacy_display(
    p: pki.PKI, alice: Identity, carol: Identity
) -> None:
    protected = encrypt(message(), [p.users["p256"].cert], signer=alice, policy=COMPATIBLE)
    result = verify(decrypt(protected, carol).data, **trust(p))  # type: ignore[arg-type]
    assert result.status is SignatureStatus.VERIFIED
    assert result.data is not None
    assert b"hp-legacy-display" not in result.data
    assert result.message is not None
    assert result.message["Subject"] == SUBJECT
    assert result.message.get_content() == "The numbers are in.\n"
