"""CMS SignedData (RFC 5652 5, RFC 8551 2.5): what sign_content writes and check_signed_data
accepts, per key type and digest; and SHA-1 signatures, built by hand since securemail only
writes SHA-2."""

from __future__ import annotations

import datetime as dt
import hashlib

import pki
import pytest
from asn1crypto import algos, cms
from asn1crypto import x509 as asn1_x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from pki import NOW, Issued, flip, identity, multipart_signed

from securemail.errors import (
    MalformedASN1Error,
    SignatureInvalidError,
    UnsupportedAlgorithmError,
)
from securemail.keys import Identity
from securemail.policy import DEFAULT, ContentCipher, DigestAlgorithm, SignaturePadding
from securemail.results import SignatureStatus
from securemail.smime import ANNOUNCED, MODERN, Capabilities, _asn1, verify
from securemail.smime.enveloped import EnvelopeRecipient, encrypt_envelope
from securemail.smime.signed import (
    CheckedSigner,
    check_signed_data,
    load_signed_data,
    sign_content,
    signing_digest,
)

CONTENT = b"Content-Type: text/plain\r\n\r\nsigned text\r\n"
SIGNERS = [
    ("rsa", SignaturePadding.PKCS1V15),
    ("rsa", SignaturePadding.PSS),
    ("rsa3072", SignaturePadding.PSS),
    ("p256", SignaturePadding.PKCS1V15),
    ("p384", SignaturePadding.PKCS1V15),
    ("ed25519", SignaturePadding.PKCS1V15),
]
SIGNER_IDS = ["rsa", "rsa-pss", "rsa3072-pss", "p256", "p384", "ed25519"]


@pytest.fixture(scope="module")
def p() -> pki.PKI:
    return pki.shared_pki()


@pytest.fixture(scope="module")
def ids(p: pki.PKI) -> dict[str, Identity]:
    return {name: identity(user, p.intermediate) for name, user in p.users.items()}


def signer_info(der: bytes) -> cms.SignerInfo:
    (info,) = cms.ContentInfo.load(der)["content"]["signer_infos"]
    return info


def attributes(der: bytes) -> dict[str, object]:
    return {a["type"].native: a["values"] for a in signer_info(der)["signed_attrs"]}


def checked(der: bytes, content: bytes | None = None, **kwargs: object) -> CheckedSigner:
    _, (result,) = check_signed_data(load_signed_data(der), detached_content=content, **kwargs)  # type: ignore[arg-type]
    return result


# --- what is written -----------------------------------------------------------------------------


@pytest.mark.parametrize("detached", [True, False], ids=["detached", "encapsulated"])
@pytest.mark.parametrize("digest", list(DigestAlgorithm))
@pytest.mark.parametrize(("name", "rsa_padding"), SIGNERS, ids=SIGNER_IDS)
def test_sign_and_check(
    ids: dict[str, Identity],
    name: str,
    rsa_padding: SignaturePadding,
    digest: DigestAlgorithm,
    detached: bool,
) -> None:
    signer = ids[name]
    der = sign_content(CONTENT, signer, digest=digest, rsa_padding=rsa_padding, detached=detached)
    used = DigestAlgorithm(pki.expected_digest(name, digest.value))
    info = signer_info(der)
    assert info["digest_algorithm"]["algorithm"].native == used.value
    signed = load_signed_data(der)
    assert signed.content == (None if detached else CONTENT)
    assert signed.certificates == (signer.certificate,)
    content, (result,) = check_signed_data(signed, detached_content=CONTENT if detached else None)
    assert content == CONTENT
    assert result.error is None
    assert result.certificate == signer.certificate
    assert result.digest_algorithm == used.value
    assert result.capabilities == ANNOUNCED


@pytest.mark.parametrize(
    ("name", "rsa_padding", "algorithm"),
    [
        ("rsa", SignaturePadding.PKCS1V15, "rsassa_pkcs1v15"),
        ("rsa", SignaturePadding.PSS, "rsassa_pss"),
        ("p256", SignaturePadding.PSS, "sha384_ecdsa"),  # padding is ignored for EC keys
        ("ed25519", SignaturePadding.PSS, "ed25519"),
    ],
)
def test_signature_algorithm_identifier(
    ids: dict[str, Identity], name: str, rsa_padding: SignaturePadding, algorithm: str
) -> None:
    der = sign_content(CONTENT, ids[name], digest=DigestAlgorithm.SHA384, rsa_padding=rsa_padding)
    assert signer_info(der)["signature_algorithm"]["algorithm"].native == algorithm


def test_pss_parameters_match_the_digest(ids: dict[str, Identity]) -> None:
    der = sign_content(
        CONTENT, ids["rsa"], digest=DigestAlgorithm.SHA512, rsa_padding=SignaturePadding.PSS
    )
    params = signer_info(der)["signature_algorithm"]["parameters"]
    assert params["hash_algorithm"]["algorithm"].native == "sha512"
    assert params["mask_gen_algorithm"]["parameters"]["algorithm"].native == "sha512"
    assert params["salt_length"].native == 64


@pytest.mark.parametrize(
    ("name", "requested", "used"),
    [
        ("p256", "sha256", "sha256"),
        ("p256", "sha512", "sha512"),
        ("p384", "sha256", "sha384"),
        ("p384", "sha512", "sha512"),
        ("rsa", "sha256", "sha256"),
        ("ed25519", "sha256", "sha512"),
    ],
)
def test_signing_digest_is_at_least_the_key_strength(
    ids: dict[str, Identity], name: str, requested: str, used: str
) -> None:
    digest = DigestAlgorithm(requested)
    assert signing_digest(ids[name].certificate, digest).value == used
    der = sign_content(CONTENT, ids[name], digest=digest)
    assert signer_info(der)["digest_algorithm"]["algorithm"].native == used


def test_ed25519_always_uses_sha512(ids: dict[str, Identity]) -> None:
    """RFC 8419 3.1: with Ed25519 signed attributes carry a SHA-512 message digest."""
    assert signing_digest(ids["ed25519"].certificate, DigestAlgorithm.SHA256).value == "sha512"
    der = sign_content(CONTENT, ids["ed25519"], digest=DigestAlgorithm.SHA256)
    (digest,) = attributes(der)["message_digest"]  # type: ignore[misc]
    assert digest.native == hashlib.sha512(CONTENT).digest()


def test_signed_attributes_are_the_four_required_and_readable(ids: dict[str, Identity]) -> None:
    when = NOW - dt.timedelta(minutes=7)
    der = sign_content(CONTENT, ids["p256"], signing_time=when, capabilities=MODERN)
    attrs = attributes(der)
    assert set(attrs) == {"content_type", "message_digest", "signing_time", "smime_capabilities"}
    assert [v.native for v in attrs["content_type"]] == ["data"]  # type: ignore[attr-defined]
    assert [v.native for v in attrs["message_digest"]] == [hashlib.sha256(CONTENT).digest()]  # type: ignore[attr-defined]
    assert [v.native for v in attrs["signing_time"]] == [when]  # type: ignore[attr-defined]
    result = checked(der, CONTENT)
    assert (result.signing_time, result.capabilities) == (when, MODERN)


@pytest.mark.parametrize(
    "capabilities",
    [
        ANNOUNCED,
        MODERN,
        Capabilities(algorithms=()),
        Capabilities(algorithms=(_asn1.OID_AES128_CBC,)),
    ],
    ids=["announced", "modern", "empty", "one"],
)
def test_signed_attributes_are_der_sorted(
    ids: dict[str, Identity], capabilities: Capabilities
) -> None:
    """DER orders a SET OF by encoding; verifiers that re-encode (OpenSSL) rely on it."""
    der = sign_content(CONTENT, ids["rsa"], capabilities=capabilities)
    encodings = [bytes(a.dump()) for a in signer_info(der)["signed_attrs"]]
    assert encodings == sorted(encodings)


def test_include_chain_embeds_the_intermediates(ids: dict[str, Identity], p: pki.PKI) -> None:
    bare = load_signed_data(sign_content(CONTENT, ids["rsa"]))
    chained = load_signed_data(sign_content(CONTENT, ids["rsa"], include_chain=True))
    assert bare.certificates == (p.users["rsa"].cert,)
    # CertificateSet is a SET OF: DER orders it by encoding, not leaf first.
    assert set(chained.certificates) == {p.users["rsa"].cert, p.intermediate.cert}


def test_key_agreement_only_key_cannot_sign(ids: dict[str, Identity]) -> None:
    with pytest.raises(UnsupportedAlgorithmError):
        sign_content(CONTENT, ids["x25519"])


# --- what is refused -----------------------------------------------------------------------------


def test_changed_content_is_refused(ids: dict[str, Identity]) -> None:
    der = sign_content(CONTENT, ids["p256"])
    result = checked(der, CONTENT.replace(b"signed", b"sighed"))
    assert isinstance(result.error, SignatureInvalidError)


@pytest.mark.parametrize(("name", "rsa_padding"), SIGNERS, ids=SIGNER_IDS)
def test_changed_signature_value_is_refused(
    ids: dict[str, Identity], name: str, rsa_padding: SignaturePadding
) -> None:
    der = sign_content(CONTENT, ids[name], rsa_padding=rsa_padding)

    def change(info: cms.ContentInfo) -> None:
        one = info["content"]["signer_infos"][0]
        one["signature"] = flip(one["signature"].native, 3, 0x01)

    result = checked(pki.edit_cms(der, change), CONTENT)
    assert isinstance(result.error, SignatureInvalidError)


def test_changed_signed_attribute_is_refused(ids: dict[str, Identity]) -> None:
    der = sign_content(CONTENT, ids["rsa"], signing_time=NOW)

    def change(info: cms.ContentInfo) -> None:
        for attr in info["content"]["signer_infos"][0]["signed_attrs"]:
            if attr["type"].native == "signing_time":
                attr["values"] = [cms.Time(name="utc_time", value=NOW - dt.timedelta(days=1))]

    result = checked(pki.edit_cms(der, change), CONTENT)
    assert isinstance(result.error, SignatureInvalidError)


def test_message_digest_repeated_as_unsigned_attribute_is_refused(ids: dict[str, Identity]) -> None:
    der = sign_content(CONTENT, ids["rsa"])

    def change(info: cms.ContentInfo) -> None:
        info["content"]["signer_infos"][0]["unsigned_attrs"] = [
            {"type": "message_digest", "values": [hashlib.sha256(b"other").digest()]}
        ]

    assert isinstance(checked(pki.edit_cms(der, change), CONTENT).error, SignatureInvalidError)


def test_detached_signature_must_not_carry_content(ids: dict[str, Identity]) -> None:
    der = sign_content(CONTENT, ids["rsa"], detached=False)
    with pytest.raises(SignatureInvalidError):
        check_signed_data(load_signed_data(der), detached_content=CONTENT)


def test_detached_signature_needs_the_content(ids: dict[str, Identity]) -> None:
    with pytest.raises(SignatureInvalidError):
        check_signed_data(load_signed_data(sign_content(CONTENT, ids["rsa"])))


def test_signer_certificate_may_come_from_the_caller(ids: dict[str, Identity]) -> None:
    def strip(info: cms.ContentInfo) -> None:
        info["content"]["certificates"] = []

    der = pki.edit_cms(sign_content(CONTENT, ids["rsa"]), strip)
    assert isinstance(checked(der, CONTENT).error, SignatureInvalidError)
    assert checked(der, CONTENT, extra_certificates=[ids["rsa"].certificate]).error is None


@pytest.mark.parametrize(
    "der",
    [b"", b"\x30\x03\x02\x01\x00", bytes(range(64))],
    ids=["empty", "wrong-structure", "garbage"],
)
def test_load_garbage(der: bytes) -> None:
    with pytest.raises(MalformedASN1Error):
        load_signed_data(der)


def test_load_truncated(ids: dict[str, Identity]) -> None:
    der = sign_content(CONTENT, ids["rsa"])
    for cut in (1, 100, len(der) // 2):
        with pytest.raises(MalformedASN1Error):
            load_signed_data(der[:-cut])


def test_enveloped_data_is_not_signed_data(p: pki.PKI) -> None:
    der = encrypt_envelope(
        CONTENT, [EnvelopeRecipient(p.users["rsa"].cert)], ContentCipher.AES_256_GCM
    )
    with pytest.raises(MalformedASN1Error):
        load_signed_data(der)


# --- SHA-1 ---------------------------------------------------------------------------------------


def sha1_signed_data(content: bytes, signer: Issued) -> bytes:
    """A detached SignedData with SHA-1 as digest, as old clients wrote it (RSA PKCS#1 v1.5)."""
    attrs = cms.CMSAttributes(
        [
            {"type": "content_type", "values": ["data"]},
            {"type": "signing_time", "values": [cms.Time(name="utc_time", value=NOW)]},
            # Deliberately weak: the tests check that it is refused by default.
            {"type": "message_digest", "values": [hashlib.sha1(content).digest()]},  # noqa: S324
        ]
    )
    signature = signer.key.sign(  # type: ignore[attr-defined]
        attrs.dump(force=True),
        padding.PKCS1v15(),
        hashes.SHA1(),  # noqa: S303
    )
    cert = asn1_x509.Certificate.load(signer.cert.public_bytes(serialization.Encoding.DER))
    info = cms.SignerInfo(
        {
            "version": "v1",
            "sid": cms.SignerIdentifier(
                name="issuer_and_serial_number",
                value={"issuer": cert.issuer, "serial_number": cert.serial_number},
            ),
            "digest_algorithm": algos.DigestAlgorithm({"algorithm": "sha1"}),
            "signed_attrs": attrs,
            "signature_algorithm": algos.SignedDigestAlgorithm({"algorithm": "rsassa_pkcs1v15"}),
            "signature": signature,
        }
    )
    signed = cms.SignedData(
        {
            "version": "v1",
            "digest_algorithms": [{"algorithm": "sha1"}],
            "encap_content_info": {"content_type": "data"},
            "certificates": [cert],
            "signer_infos": [info],
        }
    )
    return bytes(cms.ContentInfo({"content_type": "signed_data", "content": signed}).dump())


def test_sha1_signed_data_is_refused_unless_weak_algorithms_are_allowed(p: pki.PKI) -> None:
    der = sha1_signed_data(CONTENT, p.users["rsa"])
    refused = checked(der, CONTENT)
    assert isinstance(refused.error, UnsupportedAlgorithmError)
    assert "SHA-1" in str(refused.error)
    accepted = checked(der, CONTENT, allow_weak=True)
    assert accepted.error is None
    assert accepted.digest_algorithm == "sha1"


def test_sha1_signed_message(p: pki.PKI) -> None:
    entity = b"Content-Type: text/plain\r\n\r\nold mail\r\n"
    data = multipart_signed(entity, sha1_signed_data(entity, p.users["rsa"]), micalg=b"sha-1")
    trust = {"trust": [p.root.cert], "certificates": [p.intermediate.cert]}
    result = verify(data, **trust)  # type: ignore[arg-type]
    assert result.status is not SignatureStatus.VERIFIED
    with pytest.raises(UnsupportedAlgorithmError):
        result.raise_for_status()
    weak = DEFAULT.clone(allow_weak_algorithms=True)
    assert verify(data, policy=weak, **trust).status is SignatureStatus.VERIFIED  # type: ignore[arg-type]


def test_sha1_signature_over_tampered_content_fails_even_when_allowed(p: pki.PKI) -> None:
    entity = b"Content-Type: text/plain\r\n\r\nold mail\r\n"
    der = sha1_signed_data(entity, p.users["rsa"])
    data = multipart_signed(entity.replace(b"old", b"new"), der, micalg=b"sha-1")
    weak = DEFAULT.clone(allow_weak_algorithms=True)
    result = verify(data, trust=[p.root.cert], certificates=[p.intermediate.cert], policy=weak)
    assert result.status is SignatureStatus.FAILED
    assert isinstance(result.error, SignatureInvalidError)


@pytest.mark.parametrize(
    ("when", "tag"),
    [
        (dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC), "utc_time"),
        (dt.datetime(2051, 1, 2, 3, 4, 5, tzinfo=dt.UTC), "generalized_time"),
        (dt.datetime(1949, 12, 31, 23, 59, 59, tzinfo=dt.UTC), "generalized_time"),
    ],
    ids=["2026", "2051", "1949"],
)
def test_signing_time_encoding_follows_rfc5652(
    ids: dict[str, Identity], when: dt.datetime, tag: str
) -> None:
    """RFC 5652 11.3: UTCTime for 1950 to 2049, GeneralizedTime outside that range."""
    der = sign_content(CONTENT, ids["p256"], signing_time=when)
    (value,) = attributes(der)["signing_time"]  # type: ignore[misc]
    assert value.name == tag
    assert checked(der, CONTENT).signing_time == when


def test_signing_time_in_another_zone_is_written_in_utc(ids: dict[str, Identity]) -> None:
    when = dt.datetime(2026, 1, 1, 12, tzinfo=dt.timezone(dt.timedelta(hours=5)))
    assert (
        checked(sign_content(CONTENT, ids["p256"], signing_time=when), CONTENT).signing_time == when
    )
