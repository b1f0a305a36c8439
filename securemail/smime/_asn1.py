"""ASN.1 declarations and object identifiers that asn1crypto does not ship.

Structures are declared (convention: declare ASN.1, don't hand-assemble bytes); OIDs we
compare against are kept here as dotted strings instead of being registered in asn1crypto's
global maps, so importing securemail never changes how other code parses ASN.1.
"""

from __future__ import annotations

from asn1crypto import algos, core

# RFC 5084: AES-GCM content encryption.
OID_AES128_GCM = "2.16.840.1.101.3.4.1.6"
OID_AES192_GCM = "2.16.840.1.101.3.4.1.26"
OID_AES256_GCM = "2.16.840.1.101.3.4.1.46"
OID_AES128_CBC = "2.16.840.1.101.3.4.1.2"
OID_AES192_CBC = "2.16.840.1.101.3.4.1.22"
OID_AES256_CBC = "2.16.840.1.101.3.4.1.42"
OID_DES_EDE3_CBC = "1.2.840.113549.3.7"
# RFC 8103: ChaCha20-Poly1305 AuthEnvelopedData (read only).
OID_CHACHA20_POLY1305 = "1.2.840.113549.1.9.16.3.18"

OID_AES128_WRAP = "2.16.840.1.101.3.4.1.5"
OID_AES192_WRAP = "2.16.840.1.101.3.4.1.25"
OID_AES256_WRAP = "2.16.840.1.101.3.4.1.45"
OID_3DES_WRAP = "1.2.840.113549.1.9.16.3.6"  # RFC 3217 (read only)

OID_RSA_ENCRYPTION = "1.2.840.113549.1.1.1"
OID_RSAES_OAEP = "1.2.840.113549.1.1.7"
OID_RSASSA_PSS = "1.2.840.113549.1.1.10"
OID_MGF1 = "1.2.840.113549.1.1.8"
OID_EC_PUBLIC_KEY = "1.2.840.10045.2.1"
OID_X25519 = "1.3.101.110"
OID_X448 = "1.3.101.111"
OID_ED25519 = "1.3.101.112"

# RFC 5753 / SEC 1: ECDH key agreement with the X9.63 KDF, by KDF hash.
ECDH_X963_KDF = {
    "1.3.133.16.840.63.0.2": "sha1",  # dhSinglePass-stdDH-sha1kdf-scheme
    "1.3.132.1.11.0": "sha224",
    "1.3.132.1.11.1": "sha256",
    "1.3.132.1.11.2": "sha384",
    "1.3.132.1.11.3": "sha512",
    # cofactor variants: identical for the prime curves we accept (cofactor 1)
    "1.3.133.16.840.63.0.3": "sha1",
    "1.3.132.1.14.0": "sha224",
    "1.3.132.1.14.1": "sha256",
    "1.3.132.1.14.2": "sha384",
    "1.3.132.1.14.3": "sha512",
}
ECDH_X963_KDF_BY_HASH = {
    "sha256": "1.3.132.1.11.1",
    "sha384": "1.3.132.1.11.2",
    "sha512": "1.3.132.1.11.3",
}
# RFC 8418 / RFC 9690: ECDH with HKDF (used for X25519 and X448).
ECDH_HKDF = {
    "1.2.840.113549.1.9.16.3.19": "sha256",
    "1.2.840.113549.1.9.16.3.20": "sha384",
    "1.2.840.113549.1.9.16.3.21": "sha512",
}
ECDH_HKDF_BY_HASH = {v: k for k, v in ECDH_HKDF.items()}

OID_SMIME_CAPABILITIES = "1.2.840.113549.1.9.15"
OID_CONTENT_TYPE = "1.2.840.113549.1.9.3"
OID_MESSAGE_DIGEST = "1.2.840.113549.1.9.4"
OID_SIGNING_TIME = "1.2.840.113549.1.9.5"
OID_DATA = "1.2.840.113549.1.7.1"


class GCMParameters(core.Sequence):  # type: ignore[misc]
    """RFC 5084 section 3.2. OpenSSL 3.0 rejects the DEFAULT being omitted, so we always
    write aes-ICVlen explicitly (16)."""

    _fields = [
        ("aes_nonce", core.OctetString),
        ("aes_icvlen", core.Integer, {"default": 12}),
    ]


class ECCCMSSharedInfo(core.Sequence):  # type: ignore[misc]
    """RFC 5753 section 7.2: the SharedInfo input of the key derivation function."""

    _fields = [
        ("key_info", algos.AlgorithmIdentifier),
        ("entity_u_info", core.OctetString, {"explicit": 0, "optional": True}),
        ("supp_pub_info", core.OctetString, {"explicit": 2}),
    ]


class KeyWrapAlgorithm(core.Sequence):  # type: ignore[misc]
    """The parameters of a key agreement algorithm: which key wrap follows (RFC 5753)."""

    _fields = [
        ("algorithm", core.ObjectIdentifier),
        ("parameters", core.Any, {"optional": True}),
    ]


# RFC 3211: PasswordRecipientInfo's key wrap. Its parameter is the KEK cipher's
# AlgorithmIdentifier (an AES-CBC OID and the wrap's IV).
OID_PWRI_KEK = "1.2.840.113549.1.9.16.3.9"
OID_PBKDF2 = "1.2.840.113549.1.5.12"
