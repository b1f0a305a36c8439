"""The one place that loads key material: PEM, DER, PKCS#8, PKCS#12 and certificate bundles.

Loaders turn files and bytes into two value types: an :class:`Identity` (a private key with
its certificate and chain: it signs and decrypts) and a :class:`Recipient` (a certificate and
what its owner can read: it is encrypted to). Everything that can go wrong while loading
becomes a :class:`~securemail.errors.KeyLoadError` naming the source, never a bare
``ValueError`` from a parser.
"""

from __future__ import annotations

import base64
import dataclasses
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from asn1crypto import keys as asn1_keys
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, x25519
from cryptography.hazmat.primitives.serialization import pkcs7, pkcs12

from .errors import KeyLoadError, WrongPasswordError
from .policy import DigestAlgorithm, SignaturePadding

if TYPE_CHECKING:
    from .smime.capabilities import Capabilities

__all__ = [
    "Identity",
    "PrivateKey",
    "Recipient",
    "load_certificate",
    "load_certificates",
    "load_identity",
    "load_pkcs12",
    "load_private_key",
    "read_source",
]

PrivateKey = (
    rsa.RSAPrivateKey
    | ec.EllipticCurvePrivateKey
    | ed25519.Ed25519PrivateKey
    | x25519.X25519PrivateKey
)
Password = bytes | str | None
Source = bytes | str | Path

_HASHES: dict[DigestAlgorithm, type[hashes.HashAlgorithm]] = {
    DigestAlgorithm.SHA256: hashes.SHA256,
    DigestAlgorithm.SHA384: hashes.SHA384,
    DigestAlgorithm.SHA512: hashes.SHA512,
}


@dataclasses.dataclass(frozen=True)
class _Named:
    """Bytes already read, with the name of the file they came from (for error messages)."""

    data: bytes
    name: str


def read_source(source: Source | _Named) -> tuple[bytes, str]:
    """Bytes and a printable name for errors, from bytes or a file path."""
    if isinstance(source, _Named):
        return source.data, source.name
    if isinstance(source, bytes | bytearray | memoryview):
        return bytes(source), "<bytes>"
    path = Path(source)
    try:
        return path.read_bytes(), str(path)
    except OSError as exc:
        raise KeyLoadError(str(path), exc.strerror or "cannot be read") from None


def _password(password: Password) -> bytes | None:
    if password is None or isinstance(password, bytes):
        return password
    return password.encode("utf-8")


def _is_pem(data: bytes) -> bool:
    return b"-----BEGIN " in data


def load_certificates(source: Source | _Named) -> tuple[x509.Certificate, ...]:
    """Every certificate in a PEM bundle, a DER certificate, or a PKCS#7 certs-only file."""
    data, name = read_source(source)
    try:
        if _is_pem(data):
            if b"-----BEGIN PKCS7-----" in data:
                return _leaf_first(tuple(pkcs7.load_pem_pkcs7_certificates(data)))
            certs = tuple(x509.load_pem_x509_certificates(data))
        else:
            try:
                certs = (x509.load_der_x509_certificate(data),)
            except ValueError:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # BER bundles are read with a warning
                    certs = tuple(pkcs7.load_der_pkcs7_certificates(data))
    except ValueError:
        raise KeyLoadError(name, "no readable X.509 certificate (PEM, DER or PKCS#7)") from None
    if not certs:
        raise KeyLoadError(name, "contains no certificate")
    return _leaf_first(certs)


def _leaf_first(certs: tuple[x509.Certificate, ...]) -> tuple[x509.Certificate, ...]:
    """A PKCS#7 bundle is a DER SET, sorted by encoding rather than leaf first: put the
    certificates that issued none of the others first, keeping the order otherwise."""
    issuers = {c.issuer for c in certs if c.issuer != c.subject}
    leaves = [c for c in certs if c.subject not in issuers]
    return (*leaves, *(c for c in certs if c not in leaves))


def load_certificate(source: Source | _Named) -> x509.Certificate:
    """The first certificate of ``source`` (a bundle lists the end-entity first)."""
    return load_certificates(source)[0]


def load_private_key(source: Source | _Named, password: Password = None) -> PrivateKey:
    """A PEM or DER private key (PKCS#8, PKCS#1 or SEC 1), encrypted or not."""
    data, name = read_source(source)
    secret = _password(password)
    loader = (
        serialization.load_pem_private_key if _is_pem(data) else serialization.load_der_private_key
    )
    try:
        key = loader(data, password=secret)
    except TypeError:
        # cryptography: a password was needed but not given, or given for a plain key.
        if not secret:
            raise WrongPasswordError(name) from None
        raise KeyLoadError(name, "the key is not encrypted; do not pass a password") from None
    except ValueError as exc:
        message = str(exc).lower()
        if "password" in message or "decrypt" in message or (secret and _encrypted(data)):
            # (A wrong password can also decrypt to bytes that happen to end in valid
            # padding, about 1 time in 300: then it is the parse that fails.)
            raise WrongPasswordError(name) from None
        raise KeyLoadError(name, "not a readable private key (PEM or DER)") from None
    except UnsupportedAlgorithm:
        raise KeyLoadError(name, "the key type is not supported") from None
    return _supported_key(key, name)


def _encrypted(data: bytes) -> bool:
    """Whether ``data`` is a password-encrypted private key container: PEM "ENCRYPTED
    PRIVATE KEY" or a traditional encrypted PEM, or a DER EncryptedPrivateKeyInfo."""
    if _is_pem(data):
        return b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in data or b"Proc-Type: 4,ENCRYPTED" in data
    try:
        info = asn1_keys.EncryptedPrivateKeyInfo.load(data, strict=True)
        return bool(
            info["encryption_algorithm"]["algorithm"].native and info["encrypted_data"].native
        )
    except (ValueError, TypeError, KeyError):
        return False


def _supported_key(key: object, name: str) -> PrivateKey:
    if isinstance(
        key,
        rsa.RSAPrivateKey
        | ec.EllipticCurvePrivateKey
        | ed25519.Ed25519PrivateKey
        | x25519.X25519PrivateKey,
    ):
        return key
    raise KeyLoadError(name, f"unsupported key type {type(key).__name__}")


_PEM_PKCS12 = re.compile(rb"-----BEGIN PKCS12-----(.*?)-----END PKCS12-----", re.S)


def load_pkcs12(source: Source | _Named, password: Password = None) -> Identity:
    """A PKCS#12 (.p12/.pfx) file, binary or PEM-armored, as an :class:`Identity`."""
    data, name = read_source(source)
    armored = _PEM_PKCS12.search(data)
    if armored:
        try:
            data = base64.b64decode(b"".join(armored.group(1).split()), validate=True)
        except ValueError:
            raise KeyLoadError(name, "the PKCS12 armor does not contain base64") from None
    secret = _password(password)
    # "No password" is written two ways (absent, or an empty BMPString); like OpenSSL,
    # try both when the caller gives none.
    attempts = [secret] if secret else [secret, b"" if secret is None else None]
    for attempt in attempts:
        try:
            with warnings.catch_warnings():
                # Some producers (NSS) write BER; cryptography accepts it with a warning.
                warnings.simplefilter("ignore")
                key, cert, extra = pkcs12.load_key_and_certificates(data, attempt)
            break
        except ValueError:
            continue
        except UnsupportedAlgorithm:
            raise KeyLoadError(name, "uses an encryption algorithm that is not supported") from None
    else:
        if _looks_like_pkcs12(data):
            raise WrongPasswordError(name)
        raise KeyLoadError(name, "not a PKCS#12 file")
    if key is None or cert is None:
        raise KeyLoadError(name, "the PKCS#12 file lacks a private key or its certificate")
    return Identity.create(_supported_key(key, name), cert, chain=tuple(extra), source=name)


def _looks_like_pkcs12(data: bytes) -> bool:
    from asn1crypto import pkcs12 as asn1_pkcs12

    try:
        asn1_pkcs12.Pfx.load(data)["auth_safe"]["content_type"].native  # noqa: B018
    except (ValueError, TypeError, KeyError):
        return False
    return True


def load_identity(
    key: Source,
    certificate: Source | None = None,
    *,
    password: Password = None,
    chain: Source | None = None,
) -> Identity:
    """An identity from a PKCS#12 file (``certificate=None``), a PEM file holding both key
    and certificate, or separate key and certificate files."""
    data, name = read_source(key)
    named = _Named(data, name)
    extra = load_certificates(chain) if chain is not None else ()
    if certificate is None and (not _is_pem(data) or _PEM_PKCS12.search(data)):
        identity = load_pkcs12(named, password)
        return Identity.create(
            identity.private_key, identity.certificate, chain=(*identity.chain, *extra)
        )
    if certificate is None:
        if b"CERTIFICATE-----" not in data:
            raise KeyLoadError(name, "holds no certificate; pass the certificate file too")
        certs = load_certificates(named)
    else:
        certs = load_certificates(certificate)
    private_key = load_private_key(named, password)
    # In a bundle, the certificate is the one that holds this key, wherever it stands.
    own = _public_bytes(private_key.public_key())
    leaf = next((c for c in certs if _public_bytes(c.public_key()) == own), certs[0])
    others = tuple(c for c in certs if c is not leaf)
    return Identity.create(
        private_key, leaf, chain=extra if chain is not None else others, source=name
    )


def _public_bytes(key: object) -> bytes:
    return key.public_bytes(  # type: ignore[attr-defined,no-any-return]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Identity:
    """A private key, its certificate and the certificate's issuers (leaf not included).

    It is what signs and decrypts. The repr never shows key material.
    """

    private_key: PrivateKey
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...] = ()

    @classmethod
    def create(
        cls,
        private_key: PrivateKey,
        certificate: x509.Certificate,
        *,
        chain: Sequence[x509.Certificate] = (),
        source: str = "<bytes>",
    ) -> Identity:
        """Check that the key belongs to the certificate, then build the identity."""
        if _public_bytes(private_key.public_key()) != _public_bytes(certificate.public_key()):
            raise KeyLoadError(source, "the private key does not match the certificate")
        others = tuple(c for c in chain if c != certificate)
        return cls(private_key=private_key, certificate=certificate, chain=others)

    @property
    def email_addresses(self) -> tuple[str, ...]:
        from .smime.validation import email_addresses

        return email_addresses(self.certificate)

    @property
    def name(self) -> str:
        """The first email address of the certificate, or its subject."""
        emails = self.email_addresses
        return emails[0] if emails else self.certificate.subject.rfc4514_string()

    def sign_raw(
        self, data: bytes, digest: DigestAlgorithm, rsa_padding: SignaturePadding
    ) -> bytes:
        """Sign ``data`` (hashing it with ``digest``; Ed25519 signs it as it is).

        The small interface pyHanko calls ``sign_raw``: a hardware token or an agent can
        stand in for an in-memory key by providing this method.
        """
        key = self.private_key
        algorithm = _HASHES[digest]()
        if isinstance(key, rsa.RSAPrivateKey):
            pad: padding.AsymmetricPadding = (
                padding.PSS(mgf=padding.MGF1(algorithm), salt_length=algorithm.digest_size)
                if rsa_padding is SignaturePadding.PSS
                else padding.PKCS1v15()
            )
            return key.sign(data, pad, algorithm)
        if isinstance(key, ec.EllipticCurvePrivateKey):
            return key.sign(data, ec.ECDSA(algorithm))
        if isinstance(key, ed25519.Ed25519PrivateKey):
            return key.sign(data)
        raise KeyLoadError(self.name, "this key can only decrypt (X25519), not sign")

    def __repr__(self) -> str:
        return f"Identity({self.name!r})"


@dataclasses.dataclass(frozen=True)
class Recipient:
    """A certificate to encrypt to, and what its owner is known to read.

    ``capabilities`` comes from the certificate's SMIMECapabilities extension, from a prior
    signed message of the recipient, or from the caller (``smime.capabilities.MODERN``).
    ``None`` means unknown: the conservative profile (AES-CBC, RSA PKCS#1 v1.5) is used.
    """

    certificate: x509.Certificate
    capabilities: Capabilities | None = None

    @classmethod
    def from_certificate(
        cls, certificate: x509.Certificate, *, capabilities: Capabilities | None = None
    ) -> Recipient:
        if capabilities is None:
            from .smime.capabilities import Capabilities

            capabilities = Capabilities.from_certificate(certificate)
        return cls(certificate=certificate, capabilities=capabilities)

    @classmethod
    def load(cls, source: Source, *, capabilities: Capabilities | None = None) -> Recipient:
        return cls.from_certificate(load_certificate(source), capabilities=capabilities)

    @property
    def name(self) -> str:
        from .smime.validation import email_addresses

        emails = email_addresses(self.certificate)
        return emails[0] if emails else self.certificate.subject.rfc4514_string()
