"""CMS SignedData (RFC 5652 5, RFC 8551): build and check signatures.

Signing goes through the :class:`Signer` protocol (pyHanko's ``sign_raw``): this module
computes digests and signed attributes; the signer only turns bytes into a signature, so a
token or an agent can stand in for a key in memory.

Checking here is cryptographic only (digest, signed attributes, signature value); whether
the signer is trusted and is who the message claims is decided by the caller with
:mod:`securemail.smime.validation` and the message headers.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import warnings
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from asn1crypto import algos, cms, core
from asn1crypto import parser as asn1_parser
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, padding, rsa

from ..errors import (
    InputError,
    MalformedASN1Error,
    SignatureInvalidError,
    UnsupportedAlgorithmError,
)
from ..policy import DigestAlgorithm, SignaturePadding
from . import _asn1
from .capabilities import ANNOUNCED, Capabilities

__all__ = [
    "CheckedSigner",
    "SignedContent",
    "Signer",
    "check_signed_data",
    "load_signed_data",
    "sign_content",
    "sign_digest",
    "signing_digest",
]

_HASHLIB_NAME = {
    "sha1": "sha1",
    "sha224": "sha224",
    "sha256": "sha256",
    "sha384": "sha384",
    "sha512": "sha512",
    "md5": "md5",
}
_CRYPTO_HASH: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha224": hashes.SHA224,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
WEAK_DIGESTS = frozenset({"md5", "sha1"})
_SIGNED_ONLY = frozenset({_asn1.OID_CONTENT_TYPE, _asn1.OID_MESSAGE_DIGEST, _asn1.OID_SIGNING_TIME})


class Signer(Protocol):
    """What signing needs: a certificate, its chain, and a way to sign bytes."""

    @property
    def certificate(self) -> x509.Certificate: ...

    @property
    def chain(self) -> tuple[x509.Certificate, ...]: ...

    def sign_raw(
        self, data: bytes, digest: DigestAlgorithm, rsa_padding: SignaturePadding
    ) -> bytes: ...


def _asn1_cert(certificate: x509.Certificate) -> asn1_x509.Certificate:
    return asn1_x509.Certificate.load(certificate.public_bytes(serialization.Encoding.DER))


def _signature_algorithm(
    certificate: x509.Certificate, digest: DigestAlgorithm, rsa_padding: SignaturePadding
) -> tuple[DigestAlgorithm, dict[str, object]]:
    """(digest actually used, SignatureAlgorithmIdentifier) for the signer's key type."""
    key = certificate.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        if rsa_padding is SignaturePadding.PSS:
            size = hashlib.new(digest.value).digest_size
            params = algos.RSASSAPSSParams(
                {
                    "hash_algorithm": {"algorithm": digest.value},
                    "mask_gen_algorithm": {
                        "algorithm": "mgf1",
                        "parameters": {"algorithm": digest.value},
                    },
                    "salt_length": size,
                }
            )
            return digest, {"algorithm": "rsassa_pss", "parameters": params}
        # RFC 3370 3.2: rsaEncryption is the identifier every implementation must read.
        return digest, {"algorithm": "rsassa_pkcs1v15"}
    if isinstance(key, ec.EllipticCurvePublicKey):
        digest = signing_digest(certificate, digest)
        return digest, {"algorithm": f"{digest.value}_ecdsa"}
    if isinstance(key, ed25519.Ed25519PublicKey):
        # RFC 8419 3.1: with Ed25519 the message digest in signed attributes is SHA-512.
        return signing_digest(certificate, digest), {"algorithm": "ed25519"}
    raise UnsupportedAlgorithmError(type(key).__name__, "signing")


def _digest_algorithm(digest: DigestAlgorithm) -> algos.DigestAlgorithm:
    """RFC 5754 2: SHA-2 identifiers are generated with absent parameters. asn1crypto
    would write NULL when built from a dict, so the identifier is loaded from its DER."""
    oid = algos.DigestAlgorithmId(digest.value).dump()
    return algos.DigestAlgorithm.load(b"\x30" + bytes([len(oid)]) + oid)


def signing_digest(certificate: x509.Certificate, requested: DigestAlgorithm) -> DigestAlgorithm:
    """The digest a signature by ``certificate`` will use.

    Ed25519 forces SHA-512 (RFC 8419); an EC key gets at least the hash of its curve's
    strength (P-384 -> SHA-384, RFC 5753 7.1.4), which strict verifiers such as gpgsm
    require.
    """
    key = certificate.public_key()
    if isinstance(key, ed25519.Ed25519PublicKey):
        return DigestAlgorithm.SHA512
    if isinstance(key, ec.EllipticCurvePublicKey):
        order = [DigestAlgorithm.SHA256, DigestAlgorithm.SHA384, DigestAlgorithm.SHA512]
        floor = order[0] if key.key_size <= 256 else order[1] if key.key_size <= 384 else order[2]
        return max(requested, floor, key=order.index)
    return requested


def _signing_time(when: dt.datetime) -> cms.Time:
    """RFC 5652 11.3: UTCTime for 1950 through 2049, GeneralizedTime otherwise."""
    kind = "utc_time" if 1950 <= when.year <= 2049 else "generalized_time"
    return cms.Time(name=kind, value=when)


def sign_content(
    content: bytes,
    signer: Signer,
    *,
    digest: DigestAlgorithm = DigestAlgorithm.SHA256,
    rsa_padding: SignaturePadding = SignaturePadding.PKCS1V15,
    detached: bool = True,
    include_chain: bool = False,
    capabilities: Capabilities = ANNOUNCED,
    signing_time: dt.datetime | None = None,
) -> bytes:
    """DER ContentInfo(SignedData) over ``content`` (id-data) with signed attributes
    contentType, signingTime, messageDigest and SMIMECapabilities."""
    used = signing_digest(signer.certificate, digest)
    return _signed_data(
        hashlib.new(used.value, content).digest(),
        signer,
        digest=used,
        rsa_padding=rsa_padding,
        content=None if detached else content,
        include_chain=include_chain,
        capabilities=capabilities,
        signing_time=signing_time,
    )


def sign_digest(
    message_digest: bytes,
    signer: Signer,
    *,
    digest: DigestAlgorithm,
    rsa_padding: SignaturePadding = SignaturePadding.PKCS1V15,
    include_chain: bool = False,
    capabilities: Capabilities = ANNOUNCED,
    signing_time: dt.datetime | None = None,
) -> bytes:
    """A detached SignedData for content already hashed with ``digest`` (which must be
    :func:`signing_digest` of the signer): the streaming signer hashes while it writes."""
    if signing_digest(signer.certificate, digest) is not digest:
        raise InputError(f"a {digest.value} digest cannot be signed with this key")
    return _signed_data(
        message_digest,
        signer,
        digest=digest,
        rsa_padding=rsa_padding,
        content=None,
        include_chain=include_chain,
        capabilities=capabilities,
        signing_time=signing_time,
    )


def _signed_data(
    message_digest: bytes,
    signer: Signer,
    *,
    digest: DigestAlgorithm,
    rsa_padding: SignaturePadding,
    content: bytes | None,
    include_chain: bool,
    capabilities: Capabilities,
    signing_time: dt.datetime | None,
) -> bytes:
    digest, sig_alg = _signature_algorithm(signer.certificate, digest, rsa_padding)
    when = (signing_time or dt.datetime.now(dt.UTC)).replace(microsecond=0)
    signed_attrs = cms.CMSAttributes(
        [
            {"type": "content_type", "values": ["data"]},
            {"type": "signing_time", "values": [_signing_time(when)]},
            {"type": "message_digest", "values": [message_digest]},
            {"type": "smime_capabilities", "values": [capabilities.to_asn1()]},
        ]
    )
    # The signature covers the DER SET OF encoding (tag 0x31), not the [0] IMPLICIT one.
    to_sign = signed_attrs.dump(force=True)
    signature = signer.sign_raw(to_sign, digest, rsa_padding)
    certificates = [signer.certificate]
    if include_chain:
        certificates += [c for c in signer.chain if c != signer.certificate]
    issuer = asn1_x509.Name.load(signer.certificate.issuer.public_bytes())
    signer_info = cms.SignerInfo(
        {
            "version": "v1",
            "sid": cms.SignerIdentifier(
                name="issuer_and_serial_number",
                value={"issuer": issuer, "serial_number": signer.certificate.serial_number},
            ),
            "digest_algorithm": _digest_algorithm(digest),
            "signed_attrs": signed_attrs,
            "signature_algorithm": sig_alg,
            "signature": signature,
        }
    )
    encap: dict[str, object] = {"content_type": "data"}
    if content is not None:
        encap["content"] = content
    signed_data = cms.SignedData(
        {
            "version": "v1",
            "digest_algorithms": [_digest_algorithm(digest)],
            "encap_content_info": encap,
            "certificates": [_asn1_cert(c) for c in certificates],
            "signer_infos": [signer_info],
        }
    )
    return bytes(cms.ContentInfo({"content_type": "signed_data", "content": signed_data}).dump())


# --- checking -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CheckedSigner:
    """One SignerInfo after the cryptographic check.

    ``error`` is ``None`` when the signature and the signed attributes are correct; the
    signer's certificate is found among the embedded and the caller's certificates.
    """

    certificate: x509.Certificate | None
    digest_algorithm: str
    signature_algorithm: str
    signing_time: dt.datetime | None
    capabilities: Capabilities | None
    error: SignatureInvalidError | UnsupportedAlgorithmError | None


@dataclasses.dataclass(frozen=True)
class SignedContent:
    """A parsed SignedData: the covered content and the embedded certificates."""

    content: bytes | None
    """The encapsulated content, or None when the signature is detached."""
    certificates: tuple[x509.Certificate, ...]
    signed_data: cms.SignedData
    crls: tuple[x509.CertificateRevocationList, ...] = ()


def load_signed_data(data: bytes) -> SignedContent:
    """Parse a BER/DER ContentInfo(SignedData); :class:`MalformedASN1Error` if it is not."""
    try:
        info = cms.ContentInfo.load(data, strict=True)
        if info["content_type"].native != "signed_data":
            raise MalformedASN1Error("CMS SignedData", "the ContentInfo holds another type")
        signed = info["content"]
        encap = signed["encap_content_info"]
        if encap["content_type"].native != "data":
            raise UnsupportedAlgorithmError(encap["content_type"].dotted, "signed content type")
        content = encap["content"].native
        certificates = [
            cert
            for der in _sequences(signed["certificates"])
            if (cert := _parse_certificate(der)) is not None
        ]
        crls = [crl for der in _sequences(signed["crls"]) if (crl := _parse_crl(der)) is not None]
        len(signed["signer_infos"])  # force parsing now, not during the check
    except (MalformedASN1Error, UnsupportedAlgorithmError):
        raise
    except (ValueError, TypeError, KeyError, IndexError, OverflowError) as exc:
        raise MalformedASN1Error("CMS SignedData", type(exc).__name__) from None
    if content is not None and not isinstance(content, bytes):
        raise MalformedASN1Error("CMS SignedData", "encapsulated content is not an OCTET STRING")
    return SignedContent(
        content=content,
        certificates=tuple(certificates),
        signed_data=signed,
        crls=tuple(crls),
    )


def _sequences(field: core.Asn1Value) -> list[bytes]:
    """The plain SEQUENCE elements of a SET (certificates, CRLs) as the bytes that were
    sent. Re-encoding through asn1crypto can change details a signature covers (PKITS
    subjectUniqueID), so certificates are parsed from the original encoding; tagged
    alternatives (attribute certificates, other formats) are skipped."""
    if isinstance(field, core.Void):
        return []
    contents, offset, found = field.contents, 0, []
    while offset < len(contents):
        class_, _, tag, header, body, trailer = asn1_parser.parse(contents[offset:])
        size = len(header) + len(body) + len(trailer)
        if class_ == 0 and tag == 16:  # universal SEQUENCE
            found.append(contents[offset : offset + size])
        offset += size
    return found


def _parse_certificate(der: bytes) -> x509.Certificate | None:
    """A certificate embedded in a message, or None if it cannot be parsed.

    One broken certificate in a bundle (old encoders wrote names or serial numbers that
    today's parsers reject) must not make the whole signature unreadable: the signer's
    certificate is looked up afterwards and its absence is reported as such.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. a non-positive serial number
            certificate = x509.load_der_x509_certificate(der)
            certificate.issuer.public_bytes()  # names are parsed lazily
            certificate.subject.public_bytes()
            certificate.serial_number  # noqa: B018 (warns once, here, for negative serials)
    except ValueError:
        return None
    return certificate


def _parse_crl(der: bytes) -> x509.CertificateRevocationList | None:
    try:
        crl = x509.load_der_x509_crl(der)
        crl.issuer.public_bytes()
    except ValueError:
        return None
    return crl


def _find_certificate(
    sid: cms.SignerIdentifier, pool: Sequence[x509.Certificate]
) -> x509.Certificate | None:
    for certificate in pool:
        if sid.name == "issuer_and_serial_number":
            value = sid.chosen
            if value["serial_number"].native == certificate.serial_number and value[
                "issuer"
            ] == asn1_x509.Name.load(certificate.issuer.public_bytes()):
                return certificate
        elif sid.name == "subject_key_identifier":
            try:
                ski = certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
            except x509.ExtensionNotFound:
                continue
            if ski.value.digest == sid.chosen.native:
                return certificate
    return None


def _single_attribute(attrs: cms.CMSAttributes, name: str) -> Any:
    found = [a for a in attrs if a["type"].native == name]
    if not found:
        return None
    if len(found) > 1 or len(found[0]["values"]) != 1:
        raise SignatureInvalidError(f"the signed attribute {name} must occur exactly once")
    return found[0]["values"][0]


def _verify_value(
    certificate: x509.Certificate,
    sig_alg: algos.SignedDigestAlgorithm,
    digest_name: str,
    data: bytes,
    signature: bytes,
) -> None:
    key = certificate.public_key()
    oid = sig_alg["algorithm"].dotted
    name = sig_alg["algorithm"].native
    try:
        if isinstance(key, rsa.RSAPublicKey):
            if oid == _asn1.OID_RSASSA_PSS:
                params = sig_alg["parameters"]
                hash_name = params["hash_algorithm"]["algorithm"].native
                mgf_hash = params["mask_gen_algorithm"]["parameters"]["algorithm"].native
                pss = padding.PSS(
                    mgf=padding.MGF1(_CRYPTO_HASH[mgf_hash]()),
                    salt_length=params["salt_length"].native,
                )
                key.verify(signature, data, pss, _CRYPTO_HASH[hash_name]())
                return
            if not (oid == _asn1.OID_RSA_ENCRYPTION or name.endswith("_rsa")):
                raise UnsupportedAlgorithmError(oid, "an RSA signature")
            if name.endswith("_rsa") and name.removesuffix("_rsa") != digest_name:
                raise SignatureInvalidError("the signature and digest algorithms disagree")
            key.verify(signature, data, padding.PKCS1v15(), _CRYPTO_HASH[digest_name]())
        elif isinstance(key, ec.EllipticCurvePublicKey):
            if not (name == "ecdsa" or name.endswith("_ecdsa") or oid == _asn1.OID_EC_PUBLIC_KEY):
                raise UnsupportedAlgorithmError(oid, "an ECDSA signature")
            key.verify(signature, data, ec.ECDSA(_CRYPTO_HASH[digest_name]()))
        elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            key.verify(signature, data)
        elif isinstance(key, dsa.DSAPublicKey):
            key.verify(signature, data, _CRYPTO_HASH[digest_name]())
        else:
            raise UnsupportedAlgorithmError(type(key).__name__, "signatures")
    except InvalidSignature:
        raise SignatureInvalidError("the signature value does not verify") from None
    except KeyError as exc:
        raise UnsupportedAlgorithmError(str(exc), "signature digest") from None


def _check_one(
    signer_info: cms.SignerInfo,
    content: bytes,
    pool: Sequence[x509.Certificate],
    allow_weak: bool,
) -> CheckedSigner:
    digest_name = signer_info["digest_algorithm"]["algorithm"].native
    sig_alg = signer_info["signature_algorithm"]
    sig_name = sig_alg["algorithm"].native
    certificate = None
    signing_time = None
    capabilities = None
    try:
        certificate = _find_certificate(signer_info["sid"], pool)
        if digest_name not in _HASHLIB_NAME:
            raise UnsupportedAlgorithmError(str(digest_name), "message digest")
        if digest_name in WEAK_DIGESTS and not allow_weak:
            raise UnsupportedAlgorithmError(
                digest_name.upper().replace("SHA", "SHA-"),
                "signatures (insecure; enable weak algorithms in the policy to accept it)",
            )
        if certificate is None:
            raise SignatureInvalidError(
                "the signer's certificate is neither in the message nor among those given"
            )
        if isinstance(certificate.public_key(), dsa.DSAPublicKey) and not allow_weak:
            raise UnsupportedAlgorithmError(
                "DSA", "signatures (deprecated; enable weak algorithms in the policy to accept it)"
            )
        actual = hashlib.new(_HASHLIB_NAME[digest_name], content).digest()
        attrs = signer_info["signed_attrs"]
        unsigned = signer_info["unsigned_attrs"]
        if not isinstance(unsigned, core.Void) and any(
            a["type"].dotted in _SIGNED_ONLY for a in unsigned
        ):
            # RFC 5652 11.1-11.3: these must be signed; unsigned copies could be forged.
            raise SignatureInvalidError("a signed-only attribute appears among unsigned ones")
        if not isinstance(attrs, core.Void):
            content_type = _single_attribute(attrs, "content_type")
            if content_type is None or content_type.dotted != _asn1.OID_DATA:
                raise SignatureInvalidError("the contentType signed attribute is missing or wrong")
            claimed = _single_attribute(attrs, "message_digest")
            if claimed is None:
                raise SignatureInvalidError("the messageDigest signed attribute is missing")
            if claimed.native != actual:
                raise SignatureInvalidError("the content does not match the signed digest")
            when = _single_attribute(attrs, "signing_time")
            if when is not None:
                signing_time = when.native
            caps = _single_attribute(attrs, "smime_capabilities")
            if caps is not None:
                capabilities = Capabilities.from_asn1(caps)
            # Verify over the received encoding with the SET OF tag, exactly as signed.
            signed_bytes = b"\x31" + attrs.dump()[1:]
        else:
            signed_bytes = content
        _verify_value(
            certificate, sig_alg, digest_name, signed_bytes, signer_info["signature"].native
        )
        error: SignatureInvalidError | UnsupportedAlgorithmError | None = None
    except (SignatureInvalidError, UnsupportedAlgorithmError) as exc:
        error = exc
    except (ValueError, TypeError, KeyError) as exc:
        error = SignatureInvalidError(f"malformed signer info ({type(exc).__name__})")
    return CheckedSigner(
        certificate=certificate,
        digest_algorithm=str(digest_name),
        signature_algorithm=str(sig_name),
        signing_time=signing_time,
        capabilities=capabilities,
        error=error,
    )


def check_signed_data(
    signed: SignedContent,
    *,
    detached_content: bytes | None = None,
    extra_certificates: Sequence[x509.Certificate] = (),
    allow_weak: bool = False,
) -> tuple[bytes, tuple[CheckedSigner, ...]]:
    """Check every SignerInfo over the encapsulated or the detached content.

    A detached signature whose SignedData also carries content is refused: the two could
    differ, and a reader would not know which one was signed.
    """
    try:
        infos = list(signed.signed_data["signer_infos"])
        digest_count = len(signed.signed_data["digest_algorithms"])
    except (ValueError, TypeError) as exc:
        raise MalformedASN1Error("CMS SignerInfos", type(exc).__name__) from None
    if not infos:
        raise SignatureInvalidError("the SignedData has no signer (a certificates-only bundle)")
    if not digest_count:
        raise SignatureInvalidError("the SignedData lists no digest algorithm")
    if detached_content is not None and signed.content is not None:
        raise SignatureInvalidError("a detached signature must not carry content of its own")
    content = detached_content if detached_content is not None else signed.content
    if content is None:
        raise SignatureInvalidError("the signature is detached but no content was given")
    pool = [*signed.certificates, *extra_certificates]
    return content, tuple(_check_one(info, content, pool, allow_weak) for info in infos)
