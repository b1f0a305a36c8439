"""A throwaway PKI made at test time: CAs, intermediates and S/MIME users of every key type.

Tests build exactly the certificates they need (expired, wrong usage, other CA, ...) with
:func:`issue`; :func:`make_pki` returns a ready set for the common cases.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from typing import Literal

from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, padding, rsa, x25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

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
) -> Issued:
    """Issue one certificate. ``issuer=None`` makes it self-signed.

    ``subject`` replaces the CN-only name; ``basic_constraints`` overrides the automatic one
    (None leaves it out); ``key_identifiers=False`` leaves out SKI and AKI; ``version=1`` makes
    a v1 certificate (no extensions at all); ``signature_hash`` may be SHA-1 or MD5 (signed by
    hand: cryptography no longer signs certificates with them); ``rsa_padding`` e.g. PSS.
    """
    key = key if key is not None else new_key(key_type)
    subject = subject or x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    signer_key = issuer.key if issuer else key
    if isinstance(signer_key, x25519.X25519PrivateKey):
        raise ValueError("an X25519 key cannot sign certificates")
    issuer_name = issuer.cert.subject if issuer else subject
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


def make_pki() -> PKI:
    """Root CA -> intermediate CA -> one user per key type, each with an email address."""
    root = issue(common_name="securemail Test Root", purpose="ca", key_type="p384")
    intermediate = issue(
        common_name="securemail Test Intermediate", purpose="ca", issuer=root, key_type="p256"
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
