"""Loading key material: certificates, private keys, PKCS#12, identities and recipients.

Files are made at test time with cryptography's serializers, in every format the loaders
claim to read; errors must be typed, name their source, and never echo a password.
"""

from __future__ import annotations

import base64
import traceback
from collections.abc import Callable
from pathlib import Path

import pki
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs7, pkcs12
from pki import Issued

from securemail.errors import KeyLoadError, SecureMailError, WrongPasswordError
from securemail.keys import (
    Identity,
    Recipient,
    load_certificate,
    load_certificates,
    load_identity,
    load_pkcs12,
    load_private_key,
)
from securemail.policy import DigestAlgorithm, SignaturePadding
from securemail.smime import MODERN

PASSWORD = "correct horse 8472"
WRONG = "Tr0ub4dor&3-wrong"
PEM, DER = serialization.Encoding.PEM, serialization.Encoding.DER
PKCS8 = serialization.PrivateFormat.PKCS8
TRADITIONAL = serialization.PrivateFormat.TraditionalOpenSSL


@pytest.fixture(scope="module")
def p() -> pki.PKI:
    return pki.shared_pki()


@pytest.fixture(scope="module")
def alice(p: pki.PKI) -> Issued:
    return p.users["rsa"]


def key_bytes(
    issued: Issued,
    encoding: serialization.Encoding = PEM,
    fmt: serialization.PrivateFormat = PKCS8,
    password: str | None = None,
) -> bytes:
    encryption = (
        serialization.BestAvailableEncryption(password.encode())
        if password is not None
        else serialization.NoEncryption()
    )
    return issued.key.private_bytes(encoding, fmt, encryption)  # type: ignore[attr-defined,no-any-return]


def p12_bytes(
    p: pki.PKI, issued: Issued, password: str | None = PASSWORD, *, legacy: bool = False
) -> bytes:
    """``issued`` with the intermediate as a PKCS#12 file (``password=None``: unencrypted)."""
    if password is not None:
        return pki.to_pkcs12(issued, password.encode(), chain=[p.intermediate.cert], legacy=legacy)
    return pkcs12.serialize_key_and_certificates(
        b"alice",
        issued.key,  # type: ignore[arg-type]
        issued.cert,
        [p.intermediate.cert],
        serialization.NoEncryption(),
    )


def armored(data: bytes) -> bytes:
    return b"-----BEGIN PKCS12-----\n" + base64.encodebytes(data) + b"-----END PKCS12-----\n"


def assert_no_secret(exc: BaseException, *secrets: str) -> None:
    """Neither the message, the repr nor a formatted traceback may contain a secret."""
    shown = str(exc) + repr(exc) + "".join(traceback.format_exception(exc))
    for secret in secrets:
        assert secret not in shown


# --- certificates --------------------------------------------------------------------------------


def test_pem_and_der_certificates(tmp_path: Path, alice: Issued) -> None:
    for name, data in [("a.pem", alice.cert_pem), ("a.der", alice.cert.public_bytes(DER))]:
        path = tmp_path / name
        path.write_bytes(data)
        assert load_certificate(data) == alice.cert
        assert load_certificate(path) == alice.cert
        assert load_certificate(str(path)) == alice.cert
        assert load_certificates(path) == (alice.cert,)


def test_pem_bundle_keeps_its_order(p: pki.PKI, alice: Issued) -> None:
    bundle = alice.cert_pem + p.intermediate.cert_pem + p.root.cert_pem
    assert load_certificates(bundle) == (alice.cert, p.intermediate.cert, p.root.cert)
    assert load_certificate(bundle) == alice.cert


@pytest.mark.parametrize("encoding", [PEM, DER], ids=["pem", "der"])
def test_pkcs7_certs_only(p: pki.PKI, alice: Issued, encoding: serialization.Encoding) -> None:
    data = pkcs7.serialize_certificates([alice.cert, p.intermediate.cert], encoding)
    assert set(load_certificates(data)) == {alice.cert, p.intermediate.cert}


@pytest.mark.parametrize("encoding", [PEM, DER], ids=["pem", "der"])
def test_pkcs7_certs_only_first_certificate_is_the_end_entity(
    p: pki.PKI, alice: Issued, encoding: serialization.Encoding
) -> None:
    """A .p7c is a SET OF certificates, which DER sorts by encoding: the file order says
    nothing about which one is the leaf. load_certificate promises the end-entity."""
    data = pkcs7.serialize_certificates([alice.cert, p.intermediate.cert], encoding)
    assert load_certificate(data) == alice.cert
    assert Recipient.load(data).certificate == alice.cert


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"garbage",
        bytes(range(256)),
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        b"-----BEGIN PKCS7-----\nAAAA\n-----END PKCS7-----\n",
    ],
    ids=["empty", "text", "binary", "bad-pem", "bad-pkcs7"],
)
def test_unreadable_certificates(data: bytes) -> None:
    with pytest.raises(KeyLoadError) as info:
        load_certificates(data)
    assert info.value.source == "<bytes>"


def test_private_key_file_is_not_a_certificate(alice: Issued) -> None:
    with pytest.raises(KeyLoadError):
        load_certificates(alice.key_pem)


@pytest.mark.parametrize(
    "loader",
    [
        load_certificate,
        load_certificates,
        load_private_key,
        load_pkcs12,
        lambda path: load_identity(path, path),
        Recipient.load,
    ],
    ids=["certificate", "certificates", "private-key", "pkcs12", "identity", "recipient"],
)
def test_missing_file_names_the_path(tmp_path: Path, loader: Callable[[Path], object]) -> None:
    path = tmp_path / "nowhere" / "missing.pem"
    with pytest.raises(KeyLoadError) as info:
        loader(path)
    assert info.value.source == str(path)
    assert str(path) in str(info.value)


# --- private keys --------------------------------------------------------------------------------


def key_formats() -> list[object]:
    """Every (key type, encoding, format, password) combination that exists: OpenSSL's
    traditional format has no Ed25519/X25519 form, and is encrypted only as PEM."""
    cases = []
    for name in ("rsa", "p256", "p384", "ed25519", "x25519"):
        for (encoding, fmt), label in zip(
            [(PEM, PKCS8), (DER, PKCS8), (PEM, TRADITIONAL), (DER, TRADITIONAL)],
            ["pem-pkcs8", "der-pkcs8", "pem-traditional", "der-traditional"],
            strict=True,
        ):
            for password in (None, PASSWORD):
                if fmt is TRADITIONAL and (
                    name in ("ed25519", "x25519") or (encoding is DER and password)
                ):
                    continue
                kind = "encrypted" if password else "plain"
                cases.append(
                    pytest.param(name, encoding, fmt, password, id=f"{name}-{label}-{kind}")
                )
    return cases


@pytest.mark.parametrize(("name", "encoding", "fmt", "password"), key_formats())
def test_private_keys(
    p: pki.PKI,
    name: str,
    encoding: serialization.Encoding,
    fmt: serialization.PrivateFormat,
    password: str | None,
) -> None:
    issued = p.users[name]
    data = key_bytes(issued, encoding, fmt, password)
    key = load_private_key(data, password)
    assert key.public_key() == issued.key.public_key()  # type: ignore[attr-defined]


@pytest.mark.parametrize("encoding", [PEM, DER], ids=["pem", "der"])
@pytest.mark.parametrize("given", [WRONG, None, ""], ids=["wrong", "missing", "empty"])
def test_wrong_or_missing_password(
    alice: Issued, encoding: serialization.Encoding, given: str | None
) -> None:
    data = key_bytes(alice, encoding, PKCS8, PASSWORD)
    with pytest.raises(WrongPasswordError) as info:
        load_private_key(data, given)
    assert info.value.source == "<bytes>"
    assert_no_secret(info.value, PASSWORD, WRONG)


@pytest.mark.parametrize("encoding", [PEM, DER], ids=["pem", "der"])
def test_wrong_password_that_decrypts_to_garbage(
    alice: Issued, encoding: serialization.Encoding
) -> None:
    """About 1 time in 300 a wrong password decrypts the key to bytes whose padding happens
    to be valid, and it is the parse that fails: still a wrong password, not an unreadable
    key. Keys are made (each with a new salt) until cryptography reports that case."""
    for _ in range(5000):
        data = key_bytes(alice, encoding, PKCS8, PASSWORD)
        try:
            loader = (
                serialization.load_pem_private_key
                if encoding == PEM
                else serialization.load_der_private_key
            )
            loader(data, WRONG.encode())
        except ValueError as exc:
            if "password" not in str(exc).lower():
                break
    else:
        pytest.fail("no wrong password decrypted to garbage in 5000 keys")
    with pytest.raises(WrongPasswordError):
        load_private_key(data, WRONG)


def test_password_as_bytes_or_str(alice: Issued) -> None:
    data = key_bytes(alice, PEM, PKCS8, PASSWORD)
    for password in (PASSWORD, PASSWORD.encode()):
        assert load_private_key(data, password).public_key() == alice.key.public_key()  # type: ignore[attr-defined]


def test_password_for_a_plain_key_is_not_a_wrong_password(alice: Issued) -> None:
    with pytest.raises(KeyLoadError) as info:
        load_private_key(alice.key_pem, WRONG)
    assert not isinstance(info.value, WrongPasswordError)
    assert_no_secret(info.value, WRONG)


@pytest.mark.parametrize(
    "data",
    [
        b"garbage",
        bytes(range(200)),
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    ],
    ids=["text", "binary", "bad-pem"],
)
def test_garbage_key(data: bytes) -> None:
    with pytest.raises(KeyLoadError) as info:
        load_private_key(data, WRONG)
    assert not isinstance(info.value, WrongPasswordError)
    assert_no_secret(info.value, WRONG)


def test_unsupported_key_type() -> None:
    dsa = pki.new_key("dsa2048")
    data = dsa.private_bytes(PEM, PKCS8, serialization.NoEncryption())  # type: ignore[attr-defined]
    with pytest.raises(KeyLoadError, match="unsupported key type"):
        load_private_key(data)


def test_key_file_path(tmp_path: Path, alice: Issued) -> None:
    path = tmp_path / "alice.key"
    path.write_bytes(key_bytes(alice, PEM, PKCS8, PASSWORD))
    assert load_private_key(path, PASSWORD).public_key() == alice.key.public_key()  # type: ignore[attr-defined]
    with pytest.raises(WrongPasswordError) as info:
        load_private_key(path, WRONG)
    assert info.value.source == str(path)
    assert_no_secret(info.value, PASSWORD, WRONG)


# --- PKCS#12 -------------------------------------------------------------------------------------


@pytest.mark.parametrize("legacy", [False, True], ids=["aes", "3des-legacy"])
@pytest.mark.parametrize("name", ["rsa", "p256", "ed25519"])
def test_pkcs12_round_trip(p: pki.PKI, name: str, legacy: bool) -> None:
    issued = p.users[name]
    loaded = load_pkcs12(p12_bytes(p, issued, legacy=legacy), PASSWORD)
    assert loaded.certificate == issued.cert
    assert loaded.chain == (p.intermediate.cert,)
    assert loaded.private_key.public_key() == issued.key.public_key()  # type: ignore[attr-defined]


def test_pkcs12_without_password(p: pki.PKI, alice: Issued) -> None:
    assert load_pkcs12(p12_bytes(p, alice, None)).certificate == alice.cert


@pytest.mark.parametrize("given", [WRONG, None], ids=["wrong", "missing"])
@pytest.mark.parametrize("wrap", [bytes, armored], ids=["binary", "armored"])
def test_pkcs12_wrong_password(
    p: pki.PKI, alice: Issued, given: str | None, wrap: Callable[[bytes], bytes]
) -> None:
    with pytest.raises(WrongPasswordError) as info:
        load_pkcs12(wrap(p12_bytes(p, alice)), given)
    assert_no_secret(info.value, PASSWORD, WRONG)


def test_pem_armored_pkcs12(p: pki.PKI, alice: Issued) -> None:
    assert load_pkcs12(armored(p12_bytes(p, alice)), PASSWORD).certificate == alice.cert


def test_pkcs12_file(tmp_path: Path, p: pki.PKI, alice: Issued) -> None:
    path = tmp_path / "alice.p12"
    path.write_bytes(p12_bytes(p, alice))
    assert load_pkcs12(path, PASSWORD).certificate == alice.cert
    assert load_identity(path, password=PASSWORD).certificate == alice.cert
    with pytest.raises(WrongPasswordError) as info:
        load_pkcs12(path, WRONG)
    assert info.value.source == str(path)


def test_pkcs12_without_a_key_is_refused(p: pki.PKI, alice: Issued) -> None:
    data = pkcs12.serialize_key_and_certificates(
        None, None, None, [alice.cert], serialization.BestAvailableEncryption(b"x")
    )
    with pytest.raises(KeyLoadError) as info:
        load_pkcs12(data, "x")
    assert not isinstance(info.value, WrongPasswordError)


@pytest.mark.parametrize("data", [b"not a p12", bytes(range(100))], ids=["text", "binary"])
def test_pkcs12_garbage(data: bytes) -> None:
    with pytest.raises(KeyLoadError) as info:
        load_pkcs12(data, WRONG)
    assert not isinstance(info.value, WrongPasswordError)
    assert_no_secret(info.value, WRONG)


# --- identities ----------------------------------------------------------------------------------


def test_identity_from_separate_key_and_certificate_files(
    tmp_path: Path, p: pki.PKI, alice: Issued
) -> None:
    key, cert, chain = tmp_path / "k.pem", tmp_path / "c.pem", tmp_path / "chain.pem"
    key.write_bytes(key_bytes(alice, PEM, PKCS8, PASSWORD))
    cert.write_bytes(alice.cert_pem)
    chain.write_bytes(p.intermediate.cert_pem + p.root.cert_pem)
    loaded = load_identity(key, cert, password=PASSWORD, chain=chain)
    assert loaded.certificate == alice.cert
    assert loaded.chain == (p.intermediate.cert, p.root.cert)


def test_identity_from_one_pem_with_key_certificate_and_chain(p: pki.PKI, alice: Issued) -> None:
    combined = alice.key_pem + alice.cert_pem + p.intermediate.cert_pem
    loaded = load_identity(combined)
    assert loaded.certificate == alice.cert
    assert loaded.chain == (p.intermediate.cert,)


def test_identity_from_pem_armored_pkcs12(p: pki.PKI, alice: Issued) -> None:
    """load_identity(key) with no certificate reads a PKCS#12 file, and load_pkcs12 accepts
    the PEM armor: so must load_identity."""
    assert load_identity(armored(p12_bytes(p, alice)), password=PASSWORD).certificate == alice.cert


def test_identity_from_key_and_pkcs7_bundle(p: pki.PKI, alice: Issued) -> None:
    bundle = pkcs7.serialize_certificates([alice.cert, p.intermediate.cert], PEM)
    loaded = load_identity(alice.key_pem, bundle)
    assert loaded.certificate == alice.cert
    assert loaded.chain == (p.intermediate.cert,)


def test_identity_key_without_certificate(alice: Issued) -> None:
    with pytest.raises(KeyLoadError, match="certificate"):
        load_identity(alice.key_pem)


def test_key_and_certificate_that_do_not_match(p: pki.PKI, alice: Issued) -> None:
    with pytest.raises(KeyLoadError, match="does not match"):
        load_identity(p.users["p256"].key_pem, alice.cert_pem)
    with pytest.raises(KeyLoadError, match="does not match"):
        Identity.create(p.users["rsa3072"].key, alice.cert)  # type: ignore[arg-type]


def test_identity_repr_shows_no_key_material(p: pki.PKI, alice: Issued) -> None:
    loaded = Identity.create(alice.key, alice.cert, chain=[p.intermediate.cert])  # type: ignore[arg-type]
    numbers = alice.key.private_numbers()  # type: ignore[attr-defined]
    shown = repr(loaded) + str(loaded) + f"{loaded}" + f"{loaded!r}"
    assert shown == "Identity('alice@example.com')" * 4
    for secret in (numbers.d, numbers.p, numbers.q):
        assert str(secret) not in shown
        assert format(secret, "x") not in shown


def test_identity_name_falls_back_to_the_subject() -> None:
    nameless = pki.issue(common_name="No Mail", key_type="p256")
    loaded = Identity.create(nameless.key, nameless.cert)  # type: ignore[arg-type]
    assert loaded.name == "CN=No Mail"
    assert loaded.email_addresses == ()


def test_identity_chain_never_repeats_the_leaf(p: pki.PKI, alice: Issued) -> None:
    loaded = Identity.create(alice.key, alice.cert, chain=[alice.cert, p.intermediate.cert])  # type: ignore[arg-type]
    assert loaded.chain == (p.intermediate.cert,)


def test_key_agreement_identity_cannot_sign(p: pki.PKI) -> None:
    frank = Identity.create(p.users["x25519"].key, p.users["x25519"].cert)  # type: ignore[arg-type]
    with pytest.raises(SecureMailError):
        frank.sign_raw(b"data", DigestAlgorithm.SHA256, SignaturePadding.PKCS1V15)


def test_sign_raw_signatures_verify(p: pki.PKI) -> None:
    data = b"to be signed"
    rsa_id = Identity.create(p.users["rsa"].key, p.users["rsa"].cert)  # type: ignore[arg-type]
    pss = rsa_id.sign_raw(data, DigestAlgorithm.SHA384, SignaturePadding.PSS)
    public = p.users["rsa"].cert.public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    public.verify(pss, data, padding.PSS(padding.MGF1(hashes.SHA384()), 48), hashes.SHA384())
    ec_id = Identity.create(p.users["p384"].key, p.users["p384"].cert)  # type: ignore[arg-type]
    signature = ec_id.sign_raw(data, DigestAlgorithm.SHA512, SignaturePadding.PSS)
    ec_public = p.users["p384"].cert.public_key()
    assert isinstance(ec_public, ec.EllipticCurvePublicKey)
    ec_public.verify(signature, data, ec.ECDSA(hashes.SHA512()))


# --- recipients ----------------------------------------------------------------------------------


def test_recipient_reads_capabilities_from_the_certificate(p: pki.PKI, alice: Issued) -> None:
    with_caps = pki.issue(
        common_name="Caps",
        email="caps@example.com",
        issuer=p.intermediate,
        key=alice.key,
        smime_capabilities=bytes(MODERN.to_asn1().dump()),
    )
    assert Recipient.load(with_caps.cert_pem).capabilities == MODERN
    assert Recipient.load(alice.cert_pem).capabilities is None
    assert Recipient.load(alice.cert_pem, capabilities=MODERN).capabilities == MODERN
    assert Recipient.load(with_caps.cert_pem).name == "caps@example.com"
