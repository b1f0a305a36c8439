"""DKIM signing, checked by dkimpy as the reference verifier (DNS answered by a stub), and the
SPF/DKIM/DMARC record checks against a dictionary zone and a local DNS server."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import re
import socket
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import dkim
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pki
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from dkim.util import parse_tag_value
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import securemail
from securemail import wire
from securemail.demo import throwaway_identity
from securemail.errors import (
    AlreadyFinalized,
    DNSLookupError,
    HeaderInjectionError,
    InputError,
    KeyLoadError,
    MalformedMessageError,
    MissingHeaderError,
    SizeLimitExceeded,
    WeakKeyError,
    WrongPasswordError,
)
from securemail.results import ProtectedMessage
from securemail.transport import dkim as sm_dkim
from securemail.transport.dkim import Canonicalization, DKIMSigner, dns_record, txt_strings
from securemail.transport.dns_check import (
    RecordStatus,
    check_dkim_key,
    check_dmarc,
    check_domain,
    check_spf,
    dns_resolver,
)

MESSAGE = (
    b"From: Alice <alice@example.com>\r\n"
    b"To: Bob <bob@example.org>\r\n"
    b"Subject:  Quarterly   figures\r\n"
    b"Date: Mon, 01 Jan 2024 10:00:00 +0000\r\n"
    b"Message-ID: <1@example.com>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"X-Mailer: test\r\n"
    b"\r\n"
    b"Hello Bob,  \r\n"
    b"\r\n"
    b"the  numbers\tare in.\r\n"
    b"\r\n"
    b"\r\n"
)


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    key = pki.new_key("rsa2048")
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


@pytest.fixture(scope="module")
def ed_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


@pytest.fixture(params=["rsa", "ed25519"])
def key(
    request: pytest.FixtureRequest, rsa_key: rsa.RSAPrivateKey, ed_key: ed25519.Ed25519PrivateKey
) -> rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey:
    return rsa_key if request.param == "rsa" else ed_key


def make_signer(
    key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey, selector: str = "s2024", **options: object
) -> DKIMSigner:
    return DKIMSigner.from_key(key, selector=selector, domain="example.com", **options)  # type: ignore[arg-type]


def dnsfunc(*signers: DKIMSigner) -> Callable[..., bytes]:
    """dkimpy's DNS hook, answering from the signers' own records."""
    zone = {f"{s.dns_name}.".encode(): s.dns_record.encode() for s in signers}

    def lookup(name: bytes, timeout: int = 5) -> bytes:
        return zone.get(name, b"")

    return lookup


def verifies(data: bytes, *signers: DKIMSigner, index: int = 0) -> bool:
    """dkimpy's verdict on the ``index``-th DKIM-Signature (from the top)."""
    checker = dkim.DKIM(data, minkey=1024)
    try:
        return bool(checker.verify(idx=index, dnsfunc=dnsfunc(*signers)))
    except dkim.DKIMException:
        return False


def signature_field(signed: bytes) -> bytes:
    end = re.search(rb"\r\n(?![ \t])", signed)
    assert end is not None and signed.startswith(b"DKIM-Signature:")
    return signed[: end.end()]


def tags(signed: bytes) -> dict[bytes, bytes]:
    value = signature_field(signed).split(b":", 1)[1]
    return parse_tag_value(re.sub(rb"\r\n(?=[ \t])", b"", value))


def signed_names(signed: bytes) -> list[bytes]:
    return [name.strip() for name in tags(signed)[b"h"].split(b":")]


# --- signing and verifying ----------------------------------------------------------------


@pytest.mark.parametrize("canonicalization", list(Canonicalization))
def test_signature_verifies_and_the_message_bytes_are_untouched(
    key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey, canonicalization: Canonicalization
) -> None:
    signer = make_signer(
        key, header_canonicalization=canonicalization, body_canonicalization=canonicalization
    )
    signed = signer.sign(MESSAGE)
    field = signature_field(signed)
    assert signed[len(field) :] == MESSAGE
    assert verifies(signed, signer)
    found = tags(signed)
    assert found[b"a"] == signer.algorithm.encode()
    assert found[b"c"] == f"{canonicalization}/{canonicalization}".encode()
    assert (found[b"d"], found[b"s"]) == (b"example.com", b"s2024")
    assert b"l" not in found
    assert all(len(line) <= 78 for line in field.split(b"\r\n"))


def test_algorithms_follow_the_key(
    rsa_key: rsa.RSAPrivateKey, ed_key: ed25519.Ed25519PrivateKey
) -> None:
    assert make_signer(rsa_key).algorithm == "rsa-sha256"
    assert make_signer(ed_key).algorithm == "ed25519-sha256"
    assert tags(make_signer(ed_key).sign(MESSAGE))[b"a"] == b"ed25519-sha256"


def test_from_is_oversigned_and_only_present_fields_are_signed(rsa_key: rsa.RSAPrivateKey) -> None:
    names = signed_names(make_signer(rsa_key).sign(MESSAGE))
    assert names.count(b"from") == 2  # one more than present
    assert names.count(b"subject") == 2 and names.count(b"to") == 2
    assert names.count(b"date") == 1 and names.count(b"message-id") == 1  # signed, not over
    assert names.count(b"reply-to") == 1  # absent but oversigned: cannot be added
    assert b"in-reply-to" not in names  # absent and not oversigned: not listed
    assert b"x-mailer" not in names


TAMPERING: dict[str, Callable[[bytes], bytes]] = {
    "body byte changed": lambda m: m.replace(b"numbers", b"Numbers"),
    "body line appended": lambda m: m + b"P.S. send money\r\n",
    "Subject changed": lambda m: m.replace(b"Quarterly", b"Quarterlx"),
    "second From prepended": lambda m: _prepend_to_headers(m, b"From: mallory@evil.example\r\n"),
    "second From appended": lambda m: _append_to_headers(m, b"From: mallory@evil.example\r\n"),
    "second Subject prepended": lambda m: _prepend_to_headers(m, b"Subject: urgent\r\n"),
    "second To appended": lambda m: _append_to_headers(m, b"To: mallory@evil.example\r\n"),
    "Reply-To added": lambda m: _prepend_to_headers(m, b"Reply-To: mallory@evil.example\r\n"),
    "Date removed": lambda m: re.sub(rb"Date: [^\r]*\r\n", b"", m),
    "signature value altered": lambda m: re.sub(rb"(\r\n b=)(.)", _flip_group_2, m, count=1),
    "signing domain altered": lambda m: m.replace(b"d=example.com", b"d=example.org", 1),
    "signed header list altered": lambda m: m.replace(b"h=from:from:", b"h=from:", 1),
    "body hash altered": lambda m: re.sub(rb"(bh=)(.)", _flip_group_2, m, count=1),
}


def _flip_group_2(match: re.Match[bytes]) -> bytes:
    return match.group(1) + (b"A" if match.group(2) != b"A" else b"B")


def _prepend_to_headers(signed: bytes, field: bytes) -> bytes:
    """Add a field right below the DKIM-Signature field (the top of the signed header)."""
    sig = signature_field(signed)
    return sig + field + signed[len(sig) :]


def _append_to_headers(signed: bytes, field: bytes) -> bytes:
    head, _, body = signed.partition(b"\r\n\r\n")
    return head + b"\r\n" + field + b"\r\n" + body


@pytest.mark.parametrize("tamper", TAMPERING.values(), ids=TAMPERING.keys())
def test_any_change_to_signed_content_breaks_the_signature(
    key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey, tamper: Callable[[bytes], bytes]
) -> None:
    signer = make_signer(key)
    signed = signer.sign(MESSAGE)
    tampered = tamper(signed)
    assert tampered != signed
    assert not verifies(tampered, signer)


def test_oversigning_is_what_stops_an_added_subject(rsa_key: rsa.RSAPrivateKey) -> None:
    """dkimpy always counts one extra From when verifying, which would hide a missing
    oversign of From; Subject shows the mechanism without that help."""
    forged = b"Subject: urgent: wire the money\r\n"
    weak = make_signer(rsa_key, oversign=["from"])
    assert verifies(_prepend_to_headers(weak.sign(MESSAGE), forged), weak)  # the attack
    strong = make_signer(rsa_key)
    assert not verifies(_prepend_to_headers(strong.sign(MESSAGE), forged), strong)


def test_relaxed_tolerates_refolding_and_simple_does_not(rsa_key: rsa.RSAPrivateKey) -> None:
    def refold(m: bytes) -> bytes:
        return m.replace(b"Subject:  Quarterly   figures", b"Subject: Quarterly\r\n\tfigures")

    relaxed = make_signer(rsa_key)
    assert verifies(refold(relaxed.sign(MESSAGE)), relaxed)
    simple = make_signer(rsa_key, header_canonicalization="simple", body_canonicalization="simple")
    assert not verifies(refold(simple.sign(MESSAGE)), simple)


def test_two_signatures_rsa_and_ed25519_both_verify(
    rsa_key: rsa.RSAPrivateKey, ed_key: ed25519.Ed25519PrivateKey
) -> None:
    """RFC 8463 recommends signing with both algorithms while verifiers catch up."""
    rsa_signer = make_signer(rsa_key, selector="rsa")
    ed_signer = make_signer(ed_key, selector="ed")
    signed = ed_signer.sign(rsa_signer.sign(MESSAGE))
    assert verifies(signed, rsa_signer, ed_signer, index=0)
    assert verifies(signed, rsa_signer, ed_signer, index=1)


def test_protected_message_from_encrypt_is_signed_and_still_decrypts(
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    ca = throwaway_identity("Example CA")
    alice = throwaway_identity("Alice", email="alice@example.com", issuer=ca)
    bob = throwaway_identity("Bob", email="bob@example.org", issuer=ca)
    message = (
        securemail.MessageBuilder()
        .from_addr("Alice <alice@example.com>")
        .to("bob@example.org")
        .bcc("carol@example.net")
        .subject("Q3 figures")
        .text("Attached.")
        .attach(b"id,amount\n1,100\n", filename="q3.csv")
        .build()
    )
    protected = securemail.encrypt(message, [bob], signer=alice)
    signer = make_signer(rsa_key)
    signed = signer.sign(protected)
    assert isinstance(signed, ProtectedMessage)
    assert (signed.mail_from, signed.recipients) == (protected.mail_from, protected.recipients)
    assert signed.data.endswith(protected.data)
    assert signed.data[len(signature_field(signed.data)) :] == protected.data
    assert verifies(signed.data, signer)
    names = signed_names(signed.data)
    assert b"content-type" in names and b"bcc" not in names
    decrypted = securemail.decrypt(signed.as_bytes(), bob)
    assert securemail.verify(decrypted.data, trust=[ca.certificate]).verified


def test_message_serialized_by_the_wire_module_verifies(ed_key: ed25519.Ed25519PrivateKey) -> None:
    data = wire.to_bytes(pki.message(text="caf\u00e9 \u2615\n" * 50))
    signer = make_signer(ed_key)
    assert verifies(signer.sign(data), signer)


def test_expiration_and_timestamp(ed_key: ed25519.Ed25519PrivateKey) -> None:
    signer = make_signer(ed_key, expiration=dt.timedelta(days=7))
    now = int(dt.datetime.now(dt.UTC).timestamp())
    signed = signer.sign(MESSAGE, timestamp=now)
    found = tags(signed)
    assert int(found[b"t"]) == now and int(found[b"x"]) == now + 7 * 86400
    assert verifies(signed, signer)
    stale = signer.sign(MESSAGE, timestamp=now - 8 * 86400)
    assert not verifies(stale, signer)  # expired


def test_many_signed_fields_fold_within_the_line_limit(rsa_key: rsa.RSAPrivateKey) -> None:
    head = b"".join(b"References: <%d@example.com>\r\n" % i for i in range(40))
    message = head + MESSAGE
    signer = make_signer(rsa_key)
    signed = signer.sign(message)
    assert all(len(line) <= 78 for line in signature_field(signed).split(b"\r\n"))
    assert signed_names(signed).count(b"references") == 40
    assert verifies(signed, signer)


# --- line endings and message shapes ------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        MESSAGE.replace(b"\r\n", b"\n"),
        MESSAGE.replace(b"the  numbers", b"the\nnumbers"),
        MESSAGE.replace(b"the  numbers", b"the\rnumbers"),
        MESSAGE + b"\r",
        MESSAGE.replace(b"\r\n", b"\r"),
    ],
    ids=["LF", "one bare LF", "one bare CR", "trailing CR", "CR"],
)
def test_anything_but_crlf_line_ends_is_refused(
    ed_key: ed25519.Ed25519PrivateKey, data: bytes
) -> None:
    """Converting would change bytes that an inner signature may cover: refuse instead."""
    with pytest.raises(MalformedMessageError, match="bare LF or CR"):
        make_signer(ed_key).sign(data)
    with pytest.raises(MalformedMessageError):
        make_signer(ed_key).sign_stream(data[i : i + 1] for i in range(len(data)))


@pytest.mark.parametrize("canonicalization", [Canonicalization.RELAXED, Canonicalization.SIMPLE])
@pytest.mark.parametrize(
    "body",
    [b"", b"\r\n", b"\r\n\r\n", b"last line without CRLF", b"text\r\n\r\nmore  \t", b"   "],
)
def test_bodies_without_final_crlf_verify_as_smtp_transmits_them(
    ed_key: ed25519.Ed25519PrivateKey, canonicalization: Canonicalization, body: bytes
) -> None:
    """SMTP ends the data with CRLF; the signature is made for what arrives."""
    signer = make_signer(
        ed_key, header_canonicalization=canonicalization, body_canonicalization=canonicalization
    )
    message = b"From: a@example.com\r\nSubject: x\r\n\r\n" + body
    signed = signer.sign(message)
    transmitted = signed if signed.endswith(b"\r\n") else signed + b"\r\n"
    assert verifies(transmitted, signer)


def test_message_without_body_or_blank_line(ed_key: ed25519.Ed25519PrivateKey) -> None:
    signer = make_signer(ed_key)
    for data in (b"From: a@example.com\r\nSubject: x\r\n", b"From: a@example.com\r\n\r\n"):
        assert verifies(signer.sign(data), signer)


def test_missing_or_duplicate_from_is_refused(ed_key: ed25519.Ed25519PrivateKey) -> None:
    signer = make_signer(ed_key)
    with pytest.raises(MissingHeaderError) as caught:
        signer.sign(MESSAGE.replace(b"From:", b"Sender:"))
    assert caught.value.field == "From"
    with pytest.raises(MissingHeaderError):
        signer.sign(b"\r\nbody only\r\n")
    with pytest.raises(MalformedMessageError, match="2 From"):
        signer.sign(b"From: a@example.com\r\n" + MESSAGE)


@pytest.mark.parametrize(
    "data",
    [
        b" folded: first\r\nFrom: a@example.com\r\n\r\n",
        b"From: a@example.com\r\nno colon\r\n\r\n",
        b"From : a@example.com\r\n\r\n",
    ],
    ids=["starts folded", "not a field", "space before colon"],
)
def test_header_section_must_be_fields(ed_key: ed25519.Ed25519PrivateKey, data: bytes) -> None:
    with pytest.raises(MalformedMessageError):
        make_signer(ed_key).sign(data)


def test_header_section_is_bounded(ed_key: ed25519.Ed25519PrivateKey) -> None:
    context = make_signer(ed_key).signing_context()
    with pytest.raises(SizeLimitExceeded):
        for _ in range(20):
            context.update(b"X-Filler: " + b"x" * 65536 + b"\r\n")


def test_fields_with_odd_names_and_folding_verify(rsa_key: rsa.RSAPrivateKey) -> None:
    message = (
        b"FROM: Alice\r\n <alice@example.com>\r\n"
        b"subject:\tno  space\t \r\n"
        b"To: a@example.org,\r\n\tb@example.org\r\n\r\nx\r\n"
    )
    for mode in Canonicalization:
        signer = make_signer(rsa_key, header_canonicalization=mode, body_canonicalization=mode)
        assert verifies(signer.sign(message), signer)


# --- streaming ----------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 2, 3, 5, 64, 1 << 16])
def test_streamed_signature_equals_the_one_in_memory(rsa_key: rsa.RSAPrivateKey, size: int) -> None:
    signer = make_signer(rsa_key)
    whole = signer.sign(MESSAGE, timestamp=1_700_000_000)
    chunks = (MESSAGE[i : i + size] for i in range(0, len(MESSAGE), size))
    field = signer.sign_stream(chunks, timestamp=1_700_000_000)
    assert field + MESSAGE == whole


def test_long_lines_are_hashed_in_pieces(
    ed_key: ed25519.Ed25519PrivateKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sm_dkim, "_LINE_FLUSH", 8)
    body = b"a  b   " * 40 + b"  \t \r\n" + b"x" * 100 + b"\r\n\r\n" + b" " * 50 + b"\r\n"
    message = b"From: a@example.com\r\n\r\n" + body
    for mode in Canonicalization:
        signer = make_signer(ed_key, header_canonicalization=mode, body_canonicalization=mode)
        field = signer.sign_stream(message[i : i + 3] for i in range(0, len(message), 3))
        assert verifies(field + message, signer)


BODY_PIECES = st.sampled_from([b" ", b"\t", b"a", b"\r\n", b"\r\n\r\n", b"  x ", b"\t\r\n"])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pieces=st.lists(BODY_PIECES, max_size=30),
    cuts=st.lists(st.integers(min_value=1, max_value=9), min_size=1, max_size=10),
    mode=st.sampled_from(list(Canonicalization)),
    flush=st.sampled_from([2, 5, 1 << 16]),
)
def test_incremental_body_hash_agrees_with_dkimpy(
    pieces: list[bytes], cuts: list[int], mode: Canonicalization, flush: int
) -> None:
    """Any body, cut anywhere, gives the body hash dkimpy computes for the same bytes as
    transmitted (SMTP's final CRLF added when missing)."""
    message = b"From: a@example.com\r\n\r\n" + b"".join(pieces)
    chunks, position, turn = [], 0, 0
    while position < len(message):
        size = cuts[turn % len(cuts)]
        chunks.append(message[position : position + size])
        position, turn = position + size, turn + 1
    signer = make_signer(_HYPOTHESIS_KEY, header_canonicalization=mode, body_canonicalization=mode)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sm_dkim, "_LINE_FLUSH", flush)
        field = signer.sign_stream(chunks)
    transmitted = message if message.endswith(b"\r\n") else message + b"\r\n"
    assert verifies(field + transmitted, signer)


_HYPOTHESIS_KEY = ed25519.Ed25519PrivateKey.generate()


def test_context_is_a_state_machine(ed_key: ed25519.Ed25519PrivateKey) -> None:
    with make_signer(ed_key).signing_context() as context:
        assert context.write(MESSAGE) == len(MESSAGE)
        field = context.finalize()
    assert field.startswith(b"DKIM-Signature:") and field.endswith(b"\r\n")
    assert context.finalized
    with pytest.raises(AlreadyFinalized):
        context.update(b"more")
    with pytest.raises(AlreadyFinalized):
        context.finalize()


# --- keys and settings --------------------------------------------------------------------


def _pem(key: object, password: bytes | None = None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(  # type: ignore[attr-defined,no-any-return]
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def test_load_from_file_and_bytes(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    path = tmp_path / "dkim.pem"
    path.write_bytes(_pem(rsa_key, b"secret"))
    signer = DKIMSigner.load(path, selector="s1", domain="example.com", password="secret")
    assert verifies(signer.sign(MESSAGE), signer)
    from_bytes = DKIMSigner.load(_pem(rsa_key), selector="s1", domain="example.com")
    assert from_bytes.dns_record == signer.dns_record
    with pytest.raises(WrongPasswordError):
        DKIMSigner.load(path, selector="s1", domain="example.com")


def test_rsa_1024_is_refused_naming_the_file(tmp_path: Path) -> None:
    weak = pki.new_key("rsa1024")
    path = tmp_path / "weak.pem"
    path.write_bytes(_pem(weak))
    with pytest.raises(WeakKeyError) as caught:
        DKIMSigner.load(path, selector="s1", domain="example.com")
    assert (caught.value.bits, caught.value.minimum, caught.value.source) == (
        1024,
        2048,
        str(path),
    )
    assert "2048" in str(caught.value) and "BEGIN" not in str(caught.value)
    with pytest.raises(WeakKeyError):
        DKIMSigner.from_key(weak, selector="s1", domain="example.com")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "data",
    [
        b"-----BEGIN PRIVATE KEY-----\nnot base64 at all\n-----END PRIVATE KEY-----\n",
        b"\x30\x03\x02\x01\x00",
        b"",
    ],
    ids=["malformed PEM", "malformed DER", "empty"],
)
def test_malformed_key_material_is_a_key_load_error(data: bytes) -> None:
    with pytest.raises(KeyLoadError) as caught:
        DKIMSigner.load(data, selector="s1", domain="example.com")
    assert not isinstance(caught.value, WeakKeyError)
    assert caught.value.source == "<bytes>"


def test_other_key_types_and_missing_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(KeyLoadError, match=r"RSA .* or Ed25519"):
        DKIMSigner.load(_pem(pki.new_key("p256")), selector="s1", domain="example.com")
    with pytest.raises(KeyLoadError) as caught:
        DKIMSigner.load(tmp_path / "absent.pem", selector="s", domain="example.com")
    assert caught.value.source.endswith("absent.pem")


@pytest.mark.parametrize("field", ["selector", "domain"])
@pytest.mark.parametrize("value", ["s1\r\nBcc: x", "s1\n", "ex\rample", "s1\0"])
def test_line_breaks_in_selector_or_domain_are_header_injection(
    ed_key: ed25519.Ed25519PrivateKey, field: str, value: str
) -> None:
    names = {"selector": "s1", "domain": "example.com", field: value}
    with pytest.raises(HeaderInjectionError):
        DKIMSigner.from_key(ed_key, **names)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "value", ["s1; l=0", "s1 x", "", "-s1", "a..b", "ex_ample", "\u00e9t\u00e9", "a" * 64]
)
def test_selector_and_domain_must_be_host_names(
    ed_key: ed25519.Ed25519PrivateKey, value: str
) -> None:
    with pytest.raises(InputError):
        DKIMSigner.from_key(ed_key, selector=value, domain="example.com")
    with pytest.raises(InputError):
        DKIMSigner.from_key(ed_key, selector="s1", domain=value)


def test_signed_header_settings_are_checked(ed_key: ed25519.Ed25519PrivateKey) -> None:
    signer = make_signer(ed_key, headers=["Subject"], oversign=[])
    assert signer.headers == ("from", "subject") and signer.oversign == ("from",)
    for bad in (["Received"], ["DKIM-Signature"], ["Bcc"], ["return-path"]):
        with pytest.raises(InputError):
            make_signer(ed_key, headers=bad)
    with pytest.raises(HeaderInjectionError):
        make_signer(ed_key, headers=["Subject:\r\nBcc"])
    with pytest.raises(InputError):
        make_signer(ed_key, headers="from")
    with pytest.raises(InputError):
        make_signer(ed_key, header_canonicalization="nofws")
    with pytest.raises(InputError):
        make_signer(ed_key, expiration=dt.timedelta(0))


def test_signer_is_immutable_and_its_repr_holds_no_key(
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    signer = make_signer(rsa_key)
    with pytest.raises(dataclasses.FrozenInstanceError):
        signer.selector = "other"  # type: ignore[misc]
    assert repr(signer) == "DKIMSigner(rsa-sha256, selector='s2024', domain='example.com')"
    other = signer.clone(selector="s2025")
    assert (other.selector, signer.selector) == ("s2025", "s2024")
    with pytest.raises(HeaderInjectionError):
        signer.clone(domain="example.com\r\n")


# --- DNS records ----------------------------------------------------------------------------


def test_dns_record_values(rsa_key: rsa.RSAPrivateKey, ed_key: ed25519.Ed25519PrivateKey) -> None:
    rsa_signer, ed_signer = make_signer(rsa_key), make_signer(ed_key)
    assert rsa_signer.dns_name == "s2024._domainkey.example.com"
    assert rsa_signer.dns_record.startswith("v=DKIM1; k=rsa; p=MII")
    raw = base64.b64decode(ed_signer.dns_record.split("p=")[1])
    assert ed_signer.dns_record.startswith("v=DKIM1; k=ed25519; p=") and len(raw) == 32
    strings = txt_strings(rsa_signer.dns_record)
    assert len(strings) == 2 and all(len(s) <= 255 for s in strings)
    assert "".join(strings) == rsa_signer.dns_record
    assert txt_strings("") == ("",)
    assert dns_record(ed_key.public_key()) == ed_signer.dns_record


def zone_resolver(zone: Mapping[str, Sequence[str]]) -> Callable[[str], list[str]]:
    return lambda name: list(zone.get(name, ()))


@pytest.fixture(scope="module")
def good_zone(rsa_key: rsa.RSAPrivateKey) -> dict[str, list[str]]:
    return {
        "example.com": [
            "google-site-verification=abc",
            "v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 include:_spf.example.net -all",
        ],
        "_spf.example.net": ["v=spf1 a mx:mail.example.net/24 -all"],
        "s2024._domainkey.example.com": [make_signer(rsa_key).dns_record],
        "_dmarc.example.com": ["v=DMARC1; p=reject; rua=mailto:dmarc@example.com; adkim=s"],
    }


def test_good_domain(rsa_key: rsa.RSAPrivateKey, good_zone: dict[str, list[str]]) -> None:
    report = check_domain(
        "example.com", "s2024", zone_resolver(good_zone), public_key=rsa_key.public_key()
    )
    assert report.ok and report.problems == ()
    assert (report.spf.lookups, report.spf.all_qualifier) == (3, "-")
    assert report.dkim.key_matches and report.dkim.key_type == "rsa"
    assert report.dkim.key_bits == 2048
    assert (report.dmarc.policy, report.dmarc.percent) == ("reject", 100)
    # dkimpy verifies a signature against the same resolver.
    signer = make_signer(rsa_key)
    resolver = zone_resolver(good_zone)
    checker = dkim.DKIM(signer.sign(MESSAGE))
    assert checker.verify(
        dnsfunc=lambda name, timeout=5: resolver(name.decode().rstrip("."))[0].encode()
    )


def test_missing_records() -> None:
    report = check_domain("example.com", "s2024", zone_resolver({}))
    assert not report.ok
    assert report.spf.status is RecordStatus.MISSING
    assert report.dkim.status is RecordStatus.MISSING
    assert report.dmarc.status is RecordStatus.MISSING
    assert len(report.problems) == 3


@pytest.mark.parametrize(
    ("records", "expected"),
    [
        (["v=spf1 ip4:999.1.1.1 -all"], "not an IPv4"),
        (["v=spf1 foo:bar -all"], "unknown mechanism"),
        (["v=spf1 include -all"], "needs a domain"),
        (["v=spf1 a/99 -all"], "CIDR"),
        (["v=spf1 -all", "v=spf1 +all"], "2 SPF records"),
        (["v=spf1 include:missing.example -all"], "no SPF record"),
        (["v=spf1 include:loop.example -all"], "loop"),
        (["v=spf1 " + " ".join(f"include:i{n}.example" for n in range(11)) + " -all"], "allows 10"),
        (["v=spf1 include:deep.example -all"], "allows 10"),
        (["v=spf1 redirect=a.example redirect=b.example"], "twice"),
    ],
)
def test_malformed_spf(records: list[str], expected: str) -> None:
    zone: dict[str, list[str]] = {
        "example.com": records,
        "loop.example": ["v=spf1 include:example.com"],
    }
    zone |= {f"i{n}.example": ["v=spf1 -all"] for n in range(11)}
    zone["deep.example"] = ["v=spf1 " + " ".join(f"a:h{n}.example" for n in range(10)) + " -all"]
    zone |= {"a.example": ["v=spf1 -all"], "b.example": ["v=spf1 -all"]}
    check = check_spf("example.com", zone_resolver(zone))
    assert check.status is RecordStatus.INVALID
    assert any(expected in problem for problem in check.problems), check.problems


def test_spf_warnings_keep_the_record_valid() -> None:
    zone = {
        "example.com": ["v=spf1 ptr +all ip4:192.0.2.1"],
        "soft.example": ["v=spf1 redirect=_spf.soft.example"],
        "_spf.soft.example": ["v=spf1 mx ~all"],
    }
    check = check_spf("example.com", zone_resolver(zone))
    assert check.status is RecordStatus.VALID and check.all_qualifier == "+"
    assert any("+all" in w for w in check.warnings)
    assert any("ptr" in w for w in check.warnings)
    assert any("never evaluated" in w for w in check.warnings)
    soft = check_spf("soft.example", zone_resolver(zone))
    assert (soft.status, soft.all_qualifier, soft.lookups) == (RecordStatus.VALID, "~", 2)


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ("v=DMARC1; p=maybe", "not none, quarantine or reject"),
        ("v=DMARC1; rua=mailto:d@example.com", "no p= tag"),
        ("v=DMARC1; p=reject; pct=200", "pct="),
        ("v=DMARC1; p=reject; adkim=x", "adkim="),
        ("v=DMARC1; p=reject; sp=all", "sp="),
        ("v=DMARC1; p=reject; rua=dmarc@example.com", "not a URI"),
        ("v=DMARC1; p=reject; garbage", "tag=value"),
        ("v=DMARC1; p=reject; p=none", "twice"),
    ],
)
def test_malformed_dmarc(record: str, expected: str) -> None:
    check = check_dmarc("example.com", zone_resolver({"_dmarc.example.com": [record]}))
    assert check.status is RecordStatus.INVALID
    assert any(expected in problem for problem in check.problems), check.problems


def test_dmarc_duplicates_and_weak_policies() -> None:
    two = check_dmarc(
        "example.com",
        zone_resolver({"_dmarc.example.com": ["v=DMARC1; p=reject", "v=DMARC1; p=none"]}),
    )
    assert two.status is RecordStatus.INVALID
    weak = check_dmarc(
        "example.com",
        zone_resolver({"_dmarc.example.com": ["v=DMARC1; p=none; pct=50", "unrelated"]}),
    )
    assert weak.status is RecordStatus.VALID and weak.percent == 50
    assert any("monitoring only" in w for w in weak.warnings)
    missing = check_dmarc("example.com", zone_resolver({"_dmarc.example.com": ["v=spf1 -all"]}))
    assert missing.status is RecordStatus.MISSING


def test_dkim_key_mismatch(rsa_key: rsa.RSAPrivateKey, good_zone: dict[str, list[str]]) -> None:
    other = pki.new_key("rsa2048")
    assert isinstance(other, rsa.RSAPrivateKey) and other is not rsa_key
    check = check_dkim_key(
        "example.com", "s2024", zone_resolver(good_zone), public_key=other.public_key()
    )
    assert check.status is RecordStatus.MISMATCH and check.key_matches is False
    assert any("not the expected" in p for p in check.problems)


@pytest.mark.parametrize(
    ("record", "status", "expected"),
    [
        ("v=DKIM1; k=rsa; p=", RecordStatus.INVALID, "revoked"),
        ("v=DKIM1; k=rsa; p=!!notbase64", RecordStatus.INVALID, "not base64"),
        ("v=DKIM1; k=rsa; p=AAAA", RecordStatus.INVALID, "not an RSA public key"),
        ("v=DKIM1; k=dsa; p=AAAA", RecordStatus.INVALID, "k=dsa"),
        ("v=DKIM1; k=ed25519; p=AAAA", RecordStatus.INVALID, "32-byte"),
        ("k=rsa; v=DKIM1; p=AAAA", RecordStatus.INVALID, "first tag"),
        ("v=DKIM1; k=rsa", RecordStatus.INVALID, "no p= tag"),
    ],
)
def test_malformed_dkim_key_records(record: str, status: RecordStatus, expected: str) -> None:
    zone = {"s1._domainkey.example.com": [record]}
    check = check_dkim_key("example.com", "s1", zone_resolver(zone))
    assert check.status is status
    assert any(expected in problem for problem in check.problems), check.problems


def test_dkim_key_record_forms(ed_key: ed25519.Ed25519PrivateKey) -> None:
    weak = pki.new_key("rsa1024")
    assert isinstance(weak, rsa.RSAPrivateKey)
    pkcs1 = weak.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.PKCS1
    )
    zone = {
        "ed._domainkey.example.com": [dns_record(ed_key.public_key()) + "; t=y"],
        "old._domainkey.example.com": [f"p={base64.b64encode(pkcs1).decode()}; s=email"],
        "web._domainkey.example.com": [dns_record(ed_key.public_key()) + "; s=tlsrpt"],
        "two._domainkey.example.com": ["p=", "p="],
    }
    resolve = zone_resolver(zone)
    ed = check_dkim_key("example.com", "ed", resolve, public_key=ed_key.public_key())
    assert ed.status is RecordStatus.VALID and ed.key_matches and ed.testing
    assert ed.key_type == "ed25519"
    old = check_dkim_key("example.com", "old", resolve, public_key=weak.public_key())
    assert old.status is RecordStatus.VALID and old.key_bits == 1024 and old.key_matches
    assert any("2048" in w for w in old.warnings)
    assert check_dkim_key("example.com", "web", resolve).status is RecordStatus.INVALID
    assert check_dkim_key("example.com", "two", resolve).status is RecordStatus.INVALID


def test_failed_lookups_are_reported_per_record(good_zone: dict[str, list[str]]) -> None:
    def flaky(name: str) -> list[str]:
        if name.startswith("_dmarc.") or name == "_spf.example.net":
            raise DNSLookupError(name, "SERVFAIL")
        return list(good_zone.get(name, ()))

    report = check_domain("example.com", "s2024", flaky)
    assert report.dmarc.status is RecordStatus.LOOKUP_FAILED
    assert report.spf.status is RecordStatus.LOOKUP_FAILED
    assert report.dkim.status is RecordStatus.VALID


def test_check_domain_refuses_odd_names(good_zone: dict[str, list[str]]) -> None:
    with pytest.raises(HeaderInjectionError):
        check_domain("example.com\r\n", "s2024", zone_resolver(good_zone))
    with pytest.raises(InputError):
        check_domain("example.com", "s 2024", zone_resolver(good_zone))


# --- the dnspython resolver against a local DNS server ---------------------------------------


@pytest.fixture
def dns_server(good_zone: dict[str, list[str]]) -> Iterator[int]:
    """A UDP DNS server on localhost answering TXT queries from ``good_zone``, each record
    split into 255-byte strings as a real zone holds it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                query_bytes, client = sock.recvfrom(4096)
            except TimeoutError:
                continue
            query = dns.message.from_wire(query_bytes)
            response = dns.message.make_response(query)
            question = query.question[0]
            name = question.name.to_text().rstrip(".")
            if name not in good_zone:
                response.set_rcode(dns.rcode.NXDOMAIN)
            elif question.rdtype == dns.rdatatype.TXT:
                texts = [
                    " ".join(f'"{s}"' for s in txt_strings(record)) for record in good_zone[name]
                ]
                response.answer.append(
                    dns.rrset.from_text_list(question.name, 60, "IN", "TXT", texts)
                )
            sock.sendto(response.to_wire(), client)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield sock.getsockname()[1]
    stop.set()
    thread.join()
    sock.close()


def test_dnspython_resolver_against_a_local_server(
    dns_server: int, rsa_key: rsa.RSAPrivateKey, good_zone: dict[str, list[str]]
) -> None:
    resolve = dns_resolver(["127.0.0.1"], port=dns_server, timeout=2)
    assert resolve("s2024._domainkey.example.com") == good_zone["s2024._domainkey.example.com"]
    assert resolve("absent.example.com") == []
    report = check_domain("example.com", "s2024", resolve, public_key=rsa_key.public_key())
    assert report.ok, report.problems


def test_dnspython_resolver_timeout_is_a_lookup_error() -> None:
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    try:
        resolve = dns_resolver(["127.0.0.1"], port=silent.getsockname()[1], timeout=0.3)
        with pytest.raises(DNSLookupError) as caught:
            resolve("example.com")
        assert caught.value.name == "example.com"
        assert check_spf("example.com", resolve).status is RecordStatus.LOOKUP_FAILED
    finally:
        silent.close()
