"""SMIMECapabilities (RFC 8551 2.5.2, RFC 4262): what a correspondent says it can decrypt.

A signed message (or a certificate extension) lists algorithms in order of preference. The
encryptor uses it to pick AES-GCM and RSA-OAEP only for recipients known to read them: old
clients silently fail on what they do not understand, and the sender never learns why.
"""

from __future__ import annotations

import dataclasses

from asn1crypto import algos, cms
from cryptography import x509

from ..errors import MalformedASN1Error
from . import _asn1

__all__ = ["ANNOUNCED", "MODERN", "Capabilities"]

_GCM = (_asn1.OID_AES256_GCM, _asn1.OID_AES128_GCM, _asn1.OID_AES192_GCM)


@dataclasses.dataclass(frozen=True)
class Capabilities:
    """Algorithm OIDs (dotted strings) in the correspondent's order of preference."""

    algorithms: tuple[str, ...]

    @property
    def reads_authenveloped(self) -> bool:
        """AES-GCM AuthEnvelopedData (RFC 5083/5084) is understood."""
        return any(oid in self.algorithms for oid in _GCM)

    @property
    def reads_oaep(self) -> bool:
        return _asn1.OID_RSAES_OAEP in self.algorithms

    @classmethod
    def from_der(cls, data: bytes) -> Capabilities:
        try:
            parsed = cms.SMIMECapabilites.load(data)
            oids = tuple(cap["capability_id"].dotted for cap in parsed)
        except (ValueError, TypeError, KeyError) as exc:
            raise MalformedASN1Error("SMIMECapabilities", str(exc)) from None
        return cls(algorithms=oids)

    @classmethod
    def from_asn1(cls, value: cms.SMIMECapabilites) -> Capabilities:
        return cls(algorithms=tuple(cap["capability_id"].dotted for cap in value))

    @classmethod
    def from_certificate(cls, certificate: x509.Certificate) -> Capabilities | None:
        """The RFC 4262 SMIMECapabilities extension of ``certificate``, if it has one."""
        oid = x509.ObjectIdentifier(_asn1.OID_SMIME_CAPABILITIES)
        try:
            ext = certificate.extensions.get_extension_for_oid(oid)
        except x509.ExtensionNotFound:
            return None
        assert isinstance(ext.value, x509.UnrecognizedExtension)
        return cls.from_der(ext.value.value)

    def to_asn1(self) -> cms.SMIMECapabilites:
        entries = []
        for oid in self.algorithms:
            entry: dict[str, object] = {"capability_id": oid}
            if oid == _asn1.OID_RSAES_OAEP:
                entry["parameters"] = _oaep_sha256_params()
            entries.append(entry)
        return cms.SMIMECapabilites(entries)


def _oaep_sha256_params() -> algos.RSAESOAEPParams:
    return algos.RSAESOAEPParams(
        {
            "hash_algorithm": {"algorithm": "sha256"},
            "mask_gen_algorithm": {"algorithm": "mgf1", "parameters": {"algorithm": "sha256"}},
        }
    )


ANNOUNCED = Capabilities(
    algorithms=(
        _asn1.OID_AES256_GCM,
        _asn1.OID_AES128_GCM,
        _asn1.OID_AES256_CBC,
        _asn1.OID_AES128_CBC,
        _asn1.OID_RSAES_OAEP,
        _asn1.OID_RSA_ENCRYPTION,
    )
)
"""What securemail announces in its signatures: everything it decrypts, best first."""

MODERN = Capabilities(algorithms=(_asn1.OID_AES256_GCM, _asn1.OID_RSAES_OAEP))
"""For callers who know a recipient reads AES-GCM and RSA-OAEP (``Recipient(capabilities=)``)."""
