"""A throwaway PKI made at test time: CAs, intermediates and S/MIME users of every key type.

Tests build exactly the certificates they need (expired, wrong usage, other CA, ...) with
:func:`issue`; :func:`make_pki` returns a ready set for the common cases.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import functools
import re
from collections.abc import Callable, Sequence
from email.message import EmailMessage
from typing import Literal

from asn1crypto import cms, core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, padding, rsa, x25519
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from securemail.compose import MessageBuilder
from securemail.keys import Identity
from securemail.smime import _asn1

KeyType = Literal["rsa2048", "rsa3072", "p256", "p384", "ed25519", "x25519", "rsa1024", "dsa2048"]
Purpose = Literal["sign", "encrypt", "both", "ca"]

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)

_RSA_CACHE: dict[int, list[rsa.RSAPrivateKey]] = {}


def new_key(kind: KeyType) -> object:
    if kind.startswith("rsa"):
        # RSA generation is the slow part of a test run: a small pool, reused per size.
        bits = int(kind[3:])
        pool = _RSA_CACHE.setdefault(bits, [])
        if len(pool) < 6:
            pool.append(rsa.generate_private_key(public_exponent=65537, key_size=bits))
            return pool[-1]
        pool.append(pool.pop(0))
        return pool[-1]
    if kind == "p256":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "p384":
        return ec.generate_private_key(ec.SECP384R1())
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if kind == "x25519":
        return x25519.X25519PrivateKey.generate()
    if kind == "dsa2048":
        return dsa.generate_private_key(key_size=2048)
    raise ValueError(kind)


@dataclasses.dataclass(frozen=True)
class Issued:
    key: object  # private key
    cert: x509.Certificate

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(  # type: ignore[attr-defined,no-any-return]
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


def _key_usage(purpose: Purpose, key: object) -> x509.KeyUsage:
    sign = purpose in ("sign", "both")
    enc = purpose in ("encrypt", "both")
    agree = enc and isinstance(key, ec.EllipticCurvePrivateKey | x25519.X25519PrivateKey)
    transport = enc and isinstance(key, rsa.RSAPrivateKey)
    return x509.KeyUsage(
        digital_signature=sign,
        content_commitment=sign,
        key_encipherment=transport,
        data_encipherment=False,
        key_agreement=agree,
        key_cert_sign=purpose == "ca",
        crl_sign=purpose == "ca",
        encipher_only=False,
        decipher_only=False,
    )


def issue(
    *,
    common_name: str,
    email: str | None = None,
    key_type: KeyType = "rsa2048",
    purpose: Purpose = "both",
    issuer: Issued | None = None,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    eku: Sequence[x509.ObjectIdentifier] | None = (ExtendedKeyUsageOID.EMAIL_PROTECTION,),
    key_usage: x509.KeyUsage | Literal["auto"] | None = "auto",
    path_length: int | None = None,
    extra_extensions: Sequence[tuple[x509.ExtensionType, bool]] = (),
    signature_hash: hashes.HashAlgorithm | None = None,
    smime_capabilities: bytes | None = None,
    key: object | None = None,
    subject: x509.Name | None = None,
    basic_constraints: x509.BasicConstraints | Literal["auto"] | None = "auto",
    basic_constraints_critical: bool = True,
    key_identifiers: bool = True,
    version: Literal[1, 3] = 3,
    rsa_padding: padding.AsymmetricPadding | None = None,
    issuer_name: x509.Name | None = None,
) -> Issued:
    """Issue one certificate. ``issuer=None`` makes it self-signed.

    ``subject`` replaces the CN-only name; ``basic_constraints`` overrides the automatic one
    (None leaves it out); ``key_identifiers=False`` leaves out SKI and AKI; ``version=1`` makes
    a v1 certificate (no extensions at all); ``signature_hash`` may be SHA-1 or MD5 (signed by
    hand: cryptography no longer signs certificates with them); ``rsa_padding`` e.g. PSS;
    ``issuer_name`` replaces the issuer's subject as written in the certificate (to test name
    matching: other case, spacing or string type).
    """
    key = key if key is not None else new_key(key_type)
    subject = subject or x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    signer_key = issuer.key if issuer else key
    if isinstance(signer_key, x25519.X25519PrivateKey):
        raise ValueError("an X25519 key cannot sign certificates")
    issuer_name = issuer_name or (issuer.cert.subject if issuer else subject)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())  # type: ignore[attr-defined]
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or NOW - dt.timedelta(days=1))
        .not_valid_after(not_after or NOW + dt.timedelta(days=365))
    )
    is_ca = purpose == "ca"
    if basic_constraints == "auto":
        basic_constraints = x509.BasicConstraints(
            ca=is_ca, path_length=path_length if is_ca else None
        )
    if basic_constraints is not None:
        builder = builder.add_extension(basic_constraints, critical=basic_constraints_critical)
    if key_usage == "auto":
        builder = builder.add_extension(_key_usage(purpose, key), critical=True)
    elif key_usage is not None:
        builder = builder.add_extension(key_usage, critical=True)
    if eku and not is_ca:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
    if email:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.RFC822Name(email)]), critical=False
        )
    if key_identifiers:
        builder = builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()),  # type: ignore[attr-defined]
            critical=False,
        )
    if issuer is not None and key_identifiers:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(
                issuer.key.public_key()  # type: ignore[attr-defined]
            ),
            critical=False,
        )
    if smime_capabilities is not None:
        builder = builder.add_extension(
            x509.UnrecognizedExtension(
                x509.ObjectIdentifier("1.2.840.113549.1.9.15"), smime_capabilities
            ),
            critical=False,
        )
    for ext, critical in extra_extensions:
        builder = builder.add_extension(ext, critical=critical)
    if isinstance(signer_key, ed25519.Ed25519PrivateKey):
        algorithm = None
    else:
        algorithm = signature_hash or hashes.SHA256()
    legacy = isinstance(algorithm, hashes.SHA1 | hashes.MD5)
    cert = builder.sign(
        signer_key,  # type: ignore[arg-type]
        hashes.SHA256() if legacy else algorithm,
        rsa_padding=rsa_padding,  # type: ignore[arg-type]
    )
    if legacy or version == 1:
        cert = _resign(cert, signer_key, algorithm if legacy else None, v1=version == 1)
    return Issued(key=key, cert=cert)


_LEGACY_SIGNATURES = {
    (rsa.RSAPrivateKey, "sha1"): "sha1_rsa",
    (rsa.RSAPrivateKey, "md5"): "md5_rsa",
    (ec.EllipticCurvePrivateKey, "sha1"): "sha1_ecdsa",
    (dsa.DSAPrivateKey, "sha1"): "sha1_dsa",
}


def _resign(
    cert: x509.Certificate, signer_key: object, legacy: hashes.HashAlgorithm | None, *, v1: bool
) -> x509.Certificate:
    """Re-encode and re-sign what CertificateBuilder will not make: version 1 certificates and
    SHA-1/MD5 signatures. Only for tests of how such certificates are refused."""
    tbs = asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))[
        "tbs_certificate"
    ].copy()
    if v1:
        tbs["version"] = "v1"
        tbs["extensions"] = None
    digest = legacy or cert.signature_hash_algorithm
    if legacy is not None:
        kind = next(k for k, _ in _LEGACY_SIGNATURES if isinstance(signer_key, k))
        tbs["signature"] = {"algorithm": _LEGACY_SIGNATURES[kind, legacy.name]}
    data = tbs.dump(force=True)
    if isinstance(signer_key, rsa.RSAPrivateKey):
        signature = signer_key.sign(data, padding.PKCS1v15(), digest)  # type: ignore[arg-type]
    elif isinstance(signer_key, ec.EllipticCurvePrivateKey):
        signature = signer_key.sign(data, ec.ECDSA(digest))  # type: ignore[arg-type]
    elif isinstance(signer_key, dsa.DSAPrivateKey):
        signature = signer_key.sign(data, digest)  # type: ignore[arg-type]
    else:
        signature = signer_key.sign(data)  # type: ignore[attr-defined]
    der = asn1_x509.Certificate(
        {
            "tbs_certificate": tbs,
            "signature_algorithm": tbs["signature"],
            "signature_value": signature,
        }
    ).dump()
    return x509.load_der_x509_certificate(der)


@dataclasses.dataclass(frozen=True)
class PKI:
    root: Issued
    intermediate: Issued
    users: dict[str, Issued]


def make_pki(*, root_signature_hash: hashes.HashAlgorithm | None = None) -> PKI:
    """Root CA -> intermediate CA -> one user per key type, each with an email address.

    ``root_signature_hash`` is the digest of the root's (P-384) signatures on itself and on
    the intermediate; the default is SHA-256. gpgsm 2.2 refuses a P-384 signature over a
    256-bit digest ("a 256 bit hash is not valid for a 384 bit ECC key"), so its tests pass
    ``hashes.SHA384()``.
    """
    root = issue(
        common_name="securemail Test Root",
        purpose="ca",
        key_type="p384",
        signature_hash=root_signature_hash,
    )
    intermediate = issue(
        common_name="securemail Test Intermediate",
        purpose="ca",
        issuer=root,
        key_type="p256",
        signature_hash=root_signature_hash,
    )
    users = {
        "rsa": issue(common_name="Alice", email="alice@example.com", issuer=intermediate),
        "rsa3072": issue(
            common_name="Bob", email="bob@example.com", issuer=intermediate, key_type="rsa3072"
        ),
        "p256": issue(
            common_name="Carol", email="carol@example.com", issuer=intermediate, key_type="p256"
        ),
        "p384": issue(
            common_name="Dave", email="dave@example.com", issuer=intermediate, key_type="p384"
        ),
        "ed25519": issue(
            common_name="Erin",
            email="erin@example.com",
            issuer=intermediate,
            key_type="ed25519",
            purpose="sign",
        ),
        "x25519": issue(
            common_name="Frank",
            email="frank@example.com",
            issuer=intermediate,
            key_type="x25519",
            purpose="encrypt",
        ),
    }
    return PKI(root=root, intermediate=intermediate, users=users)


def to_pkcs12(
    issued: Issued,
    password: bytes,
    *,
    chain: Sequence[x509.Certificate] = (),
    legacy: bool = False,
) -> bytes:
    """``issued`` (key and certificate) and ``chain`` as a PKCS#12 file.

    ``legacy=True`` encrypts with PBES1 SHA-1/3DES and a SHA-1 MAC, the only protection
    gpgsm 2.2 reads; the default is PBES2 (PBKDF2-SHA256, AES-256-CBC) with a SHA-256 MAC.
    """
    if legacy:
        encryption = (
            serialization.PrivateFormat.PKCS12.encryption_builder()
            .kdf_rounds(2048)
            .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
            .hmac_hash(hashes.SHA1())  # noqa: S303 - the MAC old readers understand
            .build(password)
        )
    else:
        encryption = serialization.BestAvailableEncryption(password)
    return pkcs12.serialize_key_and_certificates(
        b"securemail test",
        issued.key,  # type: ignore[arg-type]
        issued.cert,
        list(chain) or None,
        encryption,
    )


# --- shared material and message surgery for the S/MIME tests ------------------------------------
# Kept here, beside the PKI, so that every S/MIME test file builds and takes apart messages the
# same way. The surgery helpers parse with plain byte operations, not with securemail.wire, so
# that they stay independent of the code under test.


@functools.cache
def shared_pki() -> PKI:
    """One :func:`make_pki` per test session (RSA key generation is the slow part)."""
    return make_pki()


def identity(issued: Issued, *chain: Issued) -> Identity:
    """An :class:`~securemail.keys.Identity` for ``issued`` with ``chain`` as its issuers."""
    return Identity.create(
        issued.key,  # type: ignore[arg-type]
        issued.cert,
        chain=[ca.cert for ca in chain],
    )


def message(
    *,
    sender: str = "alice@example.com",
    to: Sequence[str] = ("bob@example.com",),
    subject: str = "Quarterly report",
    text: str = "The numbers are in.\n",
    bcc: Sequence[str] = (),
) -> EmailMessage:
    """A small message made with the library's own builder."""
    builder = MessageBuilder().from_addr(sender).to(*to).subject(subject).text(text)
    if bcc:
        builder = builder.bcc(*bcc)
    return builder.build()


def split_head(data: bytes) -> tuple[bytes, bytes]:
    """(header block including its last CRLF, body) of a CRLF message."""
    head, sep, body = data.partition(b"\r\n\r\n")
    assert sep, "no blank line after the header block"
    return head + b"\r\n", body


def smime_der(data: bytes) -> bytes:
    """The DER in the base64 body of an application/pkcs7-mime message."""
    return base64.b64decode(split_head(data)[1])


def with_smime_der(data: bytes, der: bytes) -> bytes:
    """``data`` with its application/pkcs7-mime body replaced by ``der``."""
    return split_head(data)[0] + b"\r\n" + base64_lines(der)


def base64_lines(data: bytes) -> bytes:
    encoded = base64.b64encode(data)
    return b"".join(encoded[i : i + 76] + b"\r\n" for i in range(0, len(encoded), 76))


def boundary_of(data: bytes) -> bytes:
    head = split_head(data)[0]
    match = re.search(rb'boundary="([^"]+)"', head)
    assert match, "no boundary parameter"
    return match.group(1)


def signed_parts(data: bytes) -> tuple[bytes, bytes]:
    """(the exact bytes of the signed part, the signature DER) of a multipart/signed message."""
    body = split_head(data)[1]
    delimiter = b"\r\n--" + boundary_of(data)
    first = body.index(delimiter[2:] + b"\r\n")  # the first delimiter may start the body
    second = body.index(delimiter, first)
    close = body.index(delimiter + b"--", second + len(delimiter))
    signed = body[first + len(delimiter) : second]
    signature = body[second + len(delimiter) + 2 : close]
    return signed, base64.b64decode(split_head(signature)[1])


def replace_once(data: bytes, old: bytes, new: bytes) -> bytes:
    """``data`` with the single occurrence of ``old`` replaced (fails if not exactly one)."""
    assert data.count(old) == 1, f"{old!r} occurs {data.count(old)} times"
    return data.replace(old, new)


def flip(data: bytes, index: int, mask: int = 0xFF) -> bytes:
    changed = bytearray(data)
    changed[index] ^= mask
    return bytes(changed)


def enveloped_message(der: bytes, *, headers: bytes = b"", smime_type: bytes = b"") -> bytes:
    """A message whose whole body is the CMS ``der`` (EnvelopedData, SignedData, ...)."""
    kind = b"; smime-type=" + smime_type if smime_type else b""
    return (
        b"From: alice@example.com\r\nTo: bob@example.com\r\n"
        + headers
        + b"MIME-Version: 1.0\r\nContent-Type: application/pkcs7-mime"
        + kind
        + b'; name="smime.p7m"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
        + base64_lines(der)
    )


# CMS surgery: parse with asn1crypto, change one field, re-encode.


def edit_cms(der: bytes, change: Callable[[cms.ContentInfo], None]) -> bytes:
    """Re-encode ``der`` after ``change`` modified its parsed ContentInfo in place."""
    info = cms.ContentInfo.load(der)
    change(info)
    return bytes(info.dump(force=True))


def content_info(info: cms.ContentInfo) -> cms.EncryptedContentInfo:
    body = info["content"]
    if info["content_type"].native == "authenticated_enveloped_data":
        return body["auth_encrypted_content_info"]
    return body["encrypted_content_info"]


def set_ciphertext(der: bytes, ciphertext: bytes) -> bytes:
    def change(info: cms.ContentInfo) -> None:
        content_info(info)["encrypted_content"] = ciphertext

    return edit_cms(der, change)


def ciphertext_of(der: bytes) -> bytes:
    return bytes(content_info(cms.ContentInfo.load(der))["encrypted_content"].native)


def _parameters(der: bytes) -> bytes:
    algorithm = content_info(cms.ContentInfo.load(der))["content_encryption_algorithm"]
    return bytes(algorithm["parameters"].dump())


def iv_of(der: bytes) -> bytes:
    """The CBC IV."""
    return bytes(core.OctetString.load(_parameters(der)).native)


def nonce_of(der: bytes) -> bytes:
    """The GCM nonce."""
    return bytes(_asn1.GCMParameters.load(_parameters(der))["aes_nonce"].native)


def set_iv(der: bytes, iv: bytes) -> bytes:
    def change(info: cms.ContentInfo) -> None:
        algorithm = content_info(info)["content_encryption_algorithm"]
        algorithm["parameters"] = core.OctetString(iv)

    return edit_cms(der, change)


def set_gcm(der: bytes, *, nonce: bytes | None = None, icvlen: int | None = None) -> bytes:
    def change(info: cms.ContentInfo) -> None:
        algorithm = content_info(info)["content_encryption_algorithm"]
        params = _asn1.GCMParameters.load(algorithm["parameters"].dump())
        algorithm["parameters"] = _asn1.GCMParameters(
            {
                "aes_nonce": params["aes_nonce"].native if nonce is None else nonce,
                "aes_icvlen": params["aes_icvlen"].native if icvlen is None else icvlen,
            }
        )

    return edit_cms(der, change)


def set_mac(der: bytes, mac: bytes) -> bytes:
    def change(info: cms.ContentInfo) -> None:
        info["content"]["mac"] = mac

    return edit_cms(der, change)


def mac_of(der: bytes) -> bytes:
    return bytes(cms.ContentInfo.load(der)["content"]["mac"].native)


def multipart_signed(entity: bytes, der: bytes, *, micalg: bytes = b"sha-256") -> bytes:
    """A multipart/signed message from alice@example.com around ``entity`` (its exact bytes
    are the signed part) with the detached SignedData ``der``."""
    boundary = b"signed-boundary-1"
    return (
        b"From: alice@example.com\r\nTo: bob@example.com\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/signed; protocol="application/pkcs7-signature"; micalg='
        + micalg
        + b'; boundary="'
        + boundary
        + b'"\r\n\r\n--'
        + boundary
        + b"\r\n"
        + entity
        + b"\r\n--"
        + boundary
        + b"\r\nContent-Type: application/pkcs7-signature\r\n"
        + b"Content-Transfer-Encoding: base64\r\n\r\n"
        + base64_lines(der)
        + b"\r\n--"
        + boundary
        + b"--\r\n"
    )


def expected_digest(user: str, requested: str) -> str:
    """The digest a signature by ``make_pki().users[user]`` uses when ``requested`` is asked
    for: Ed25519 always SHA-512 (RFC 8419), an EC key at least its curve's hash (RFC 5753
    7.1.4: P-384 -> SHA-384), RSA what was asked."""
    order = ["sha256", "sha384", "sha512"]
    floor = {"ed25519": "sha512", "p384": "sha384"}.get(user, "sha256")
    return max(requested, floor, key=order.index)


@dataclasses.dataclass(frozen=True)
class Revocation:
    """One entry of a CRL made by :func:`issue_crl`. ``reason=None`` leaves out the reason code;
    ``extensions`` are extra entry extensions (e.g. an unknown critical one)."""

    serial: int
    reason: x509.ReasonFlags | None = x509.ReasonFlags.key_compromise
    when: dt.datetime | None = None
    extensions: Sequence[tuple[x509.ExtensionType, bool]] = ()


def issue_crl(
    issuer: Issued,
    revoked: Sequence[x509.Certificate | Revocation] = (),
    *,
    last_update: dt.datetime | None = None,
    next_update: dt.datetime | None = None,
    number: int | None = 1,
    extensions: Sequence[tuple[x509.ExtensionType, bool]] = (),
    issuer_name: x509.Name | None = None,
    key_identifier: bool = True,
) -> x509.CertificateRevocationList:
    """A CRL signed by ``issuer``'s key listing ``revoked`` (certificates or entries).

    It is current from yesterday for a week unless ``last_update``/``next_update`` say
    otherwise; ``number`` is its cRLNumber (None leaves it out); ``extensions`` are extra CRL
    extensions (issuingDistributionPoint, deltaCRLIndicator, unknown critical ones, ...);
    ``issuer_name`` replaces the issuer's subject as the CRL's issuer (same key, other
    spelling, or another name altogether).
    """
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer_name or issuer.cert.subject)
        .last_update(last_update or NOW - dt.timedelta(days=1))
        .next_update(next_update or NOW + dt.timedelta(days=7))
    )
    if number is not None:
        builder = builder.add_extension(x509.CRLNumber(number), critical=False)
    if key_identifier:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(
                issuer.key.public_key()  # type: ignore[attr-defined]
            ),
            critical=False,
        )
    for ext, critical in extensions:
        builder = builder.add_extension(ext, critical=critical)
    for item in revoked:
        entry = item if isinstance(item, Revocation) else Revocation(item.serial_number)
        revoked_builder = (
            x509.RevokedCertificateBuilder()
            .serial_number(entry.serial)
            .revocation_date(entry.when or NOW - dt.timedelta(days=2))
        )
        if entry.reason is not None:
            revoked_builder = revoked_builder.add_extension(
                x509.CRLReason(entry.reason), critical=False
            )
        for ext, critical in entry.extensions:
            revoked_builder = revoked_builder.add_extension(ext, critical=critical)
        builder = builder.add_revoked_certificate(revoked_builder.build())
    algorithm = None if isinstance(issuer.key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(issuer.key, algorithm)  # type: ignore[arg-type]
