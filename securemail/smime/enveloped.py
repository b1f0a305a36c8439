"""CMS EnvelopedData and AuthEnvelopedData (RFC 5652 6, RFC 5083/5084): build and open.

Recipient infos:

* KeyTransRecipientInfo for RSA: RSAES-OAEP with SHA-256 (RFC 8017/3560) or, for old
  clients, RSA PKCS#1 v1.5;
* KeyAgreeRecipientInfo for EC P-256/P-384 (ephemeral-static ECDH, X9.63 KDF, AES key
  wrap: RFC 5753) and X25519 (HKDF, RFC 8418);
* PasswordRecipientInfo (RFC 3211): PBKDF2-HMAC-SHA256 and the PWRI-KEK wrap with
  AES-256-CBC, for readers who share a password instead of holding a certificate.

Opening follows two rules. The recipient info is chosen by issuer and serial number or
subject key identifier, never by trying keys. And every failure after that point (wrong key,
bad padding, bad tag, malformed structure) raises the same :class:`DecryptionError`, so
nothing distinguishes them; for RSA PKCS#1 v1.5 a failed unwrap continues with a random key
(RFC 3218), so even the step at which it failed is hidden. The one exception is a wrong
password: RFC 3211's check bytes reveal it (see :mod:`securemail.smime.password`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import os
from collections.abc import Callable, Sequence

from asn1crypto import algos, cms, core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import hashes, keywrap, padding, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa, x25519
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding
from cryptography.hazmat.primitives.ciphers import (
    AEADDecryptionContext,
    Cipher,
    CipherContext,
    algorithms,
    modes,
)
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.x963kdf import X963KDF

from ..errors import (
    DecryptionError,
    NoPasswordRecipientError,
    NotARecipientError,
    PasswordIterationsError,
    RecipientError,
    SecureMailError,
    SizeLimitExceeded,
    UnauthenticatedContentError,
    UnsupportedAlgorithmError,
    WrongMessagePasswordError,
)
from ..keys import PrivateKey
from ..policy import DEFAULT, ContentCipher, KeyTransport
from . import _asn1, password
from .password import PasswordRecipient
from .validation import email_addresses

__all__ = [
    "ContentDecryptor",
    "EnvelopePlan",
    "EnvelopeRecipient",
    "OpenedEnvelope",
    "PasswordRecipient",
    "decrypt_envelope",
    "decrypt_envelope_with_kek",
    "decrypt_envelope_with_password",
    "encrypt_envelope",
    "open_stream",
    "open_stream_with_password",
    "plan_envelope",
]

_HASH: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha224": hashes.SHA224,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
_WRAP_KEY_SIZE = {
    _asn1.OID_AES128_WRAP: 16,
    _asn1.OID_AES192_WRAP: 24,
    _asn1.OID_AES256_WRAP: 32,
    _asn1.OID_3DES_WRAP: 24,
}
_CONTENT_OID = {
    ContentCipher.AES_128_GCM: _asn1.OID_AES128_GCM,
    ContentCipher.AES_256_GCM: _asn1.OID_AES256_GCM,
    ContentCipher.AES_128_CBC: _asn1.OID_AES128_CBC,
    ContentCipher.AES_256_CBC: _asn1.OID_AES256_CBC,
}
GCM_NONCE_SIZE = 12
GCM_TAG_SIZE = 16


@dataclasses.dataclass(frozen=True)
class EnvelopeRecipient:
    """A recipient certificate and, for RSA, the key transport to use for it."""

    certificate: x509.Certificate
    key_transport: KeyTransport = KeyTransport.RSA_OAEP


@dataclasses.dataclass(frozen=True)
class OpenedEnvelope:
    """Decrypted content. ``authenticated`` is true only for AEAD content whose tag verified;
    CBC content carries no integrity protection (see EFAIL) and is flagged as such."""

    content: bytes
    content_cipher: str
    authenticated: bool
    recipient_certificate: x509.Certificate | None
    """The certificate whose recipient info opened it (None for a key-encryption key)."""


def _recipient_name(certificate: x509.Certificate) -> str:
    emails = email_addresses(certificate)
    return emails[0] if emails else certificate.subject.rfc4514_string()


def _issuer_and_serial(certificate: x509.Certificate) -> cms.IssuerAndSerialNumber:
    return cms.IssuerAndSerialNumber(
        {
            "issuer": asn1_x509.Name.load(certificate.issuer.public_bytes()),
            "serial_number": certificate.serial_number,
        }
    )


# --- building -----------------------------------------------------------------------------------


def _ktri(
    recipient: EnvelopeRecipient, public_key: rsa.RSAPublicKey, cek: bytes
) -> cms.RecipientInfo:
    if public_key.key_size < 2048:
        raise RecipientError(
            _recipient_name(recipient.certificate),
            f"its RSA key has {public_key.key_size} bits; at least 2048 are required",
        )
    if recipient.key_transport is KeyTransport.RSA_OAEP:
        oaep = asym_padding.OAEP(
            mgf=asym_padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None
        )
        encrypted = public_key.encrypt(cek, oaep)
        algorithm = cms.KeyEncryptionAlgorithm(
            {
                "algorithm": "rsaes_oaep",
                "parameters": algos.RSAESOAEPParams(
                    {
                        "hash_algorithm": {"algorithm": "sha256"},
                        "mask_gen_algorithm": {
                            "algorithm": "mgf1",
                            "parameters": {"algorithm": "sha256"},
                        },
                    }
                ),
            }
        )
    else:
        encrypted = public_key.encrypt(cek, asym_padding.PKCS1v15())
        algorithm = cms.KeyEncryptionAlgorithm({"algorithm": "rsaes_pkcs1v15"})
    return cms.RecipientInfo(
        name="ktri",
        value={
            "version": "v0",
            "rid": cms.RecipientIdentifier(
                name="issuer_and_serial_number", value=_issuer_and_serial(recipient.certificate)
            ),
            "key_encryption_algorithm": algorithm,
            "encrypted_key": encrypted,
        },
    )


def _shared_info(wrap: _asn1.KeyWrapAlgorithm, wrap_size: int, ukm: bytes | None) -> bytes:
    """RFC 5753 7.2; keyInfo is the key wrap algorithm exactly as the message states it."""
    info = _asn1.ECCCMSSharedInfo(
        {
            "key_info": algos.AlgorithmIdentifier.load(wrap.dump()),
            "supp_pub_info": (wrap_size * 8).to_bytes(4, "big"),
        }
    )
    if ukm is not None:
        info["entity_u_info"] = ukm
    return bytes(info.dump())


def _derive_kek(
    kdf: str, hash_name: str, secret: bytes, shared_info: bytes, size: int, ukm: bytes | None
) -> bytes:
    algorithm = _HASH[hash_name]()
    if kdf == "hkdf":
        # RFC 8418 2.2: the ukm, when present, is the HKDF salt; SharedInfo is the info.
        return HKDF(algorithm=algorithm, length=size, salt=ukm, info=shared_info).derive(secret)
    return X963KDF(algorithm=algorithm, length=size, sharedinfo=shared_info).derive(secret)


def _kari(recipient: EnvelopeRecipient, public_key: object, cek: bytes) -> cms.RecipientInfo:
    wrap_oid = _asn1.OID_AES256_WRAP if len(cek) > 16 else _asn1.OID_AES128_WRAP
    wrap_size = _WRAP_KEY_SIZE[wrap_oid]
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if public_key.curve.name not in ("secp256r1", "secp384r1", "secp521r1"):
            raise RecipientError(
                _recipient_name(recipient.certificate), f"unsupported curve {public_key.curve.name}"
            )
        ephemeral = ec.generate_private_key(public_key.curve)
        secret = ephemeral.exchange(ec.ECDH(), public_key)
        hash_name = {"secp256r1": "sha256", "secp384r1": "sha384", "secp521r1": "sha512"}[
            public_key.curve.name
        ]
        kdf, kea_oid = "x963", _asn1.ECDH_X963_KDF_BY_HASH[hash_name]
        originator_point = ephemeral.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        originator_alg = {"algorithm": "ec"}
    else:
        assert isinstance(public_key, x25519.X25519PublicKey)
        ephemeral_x = x25519.X25519PrivateKey.generate()
        secret = ephemeral_x.exchange(public_key)
        hash_name, kdf, kea_oid = "sha256", "hkdf", _asn1.ECDH_HKDF_BY_HASH["sha256"]
        originator_point = ephemeral_x.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        originator_alg = {"algorithm": "x25519"}
    wrap = _asn1.KeyWrapAlgorithm({"algorithm": wrap_oid})
    kek = _derive_kek(kdf, hash_name, secret, _shared_info(wrap, wrap_size, None), wrap_size, None)
    wrapped = keywrap.aes_key_wrap(kek, cek)
    return cms.RecipientInfo(
        name="kari",
        value={
            "version": "v3",
            "originator": cms.OriginatorIdentifierOrKey(
                name="originator_key",
                value={"algorithm": originator_alg, "public_key": originator_point},
            ),
            "key_encryption_algorithm": {
                "algorithm": kea_oid,
                "parameters": wrap,
            },
            "recipient_encrypted_keys": [
                {
                    "rid": cms.KeyAgreementRecipientIdentifier(
                        name="issuer_and_serial_number",
                        value=_issuer_and_serial(recipient.certificate),
                    ),
                    "encrypted_key": wrapped,
                }
            ],
        },
    )


# The KEK cipher for password recipients: AES-CBC (RFC 3211 2.3 wraps with a block cipher
# in CBC mode; OpenSSL reads these three).
_PWRI_KEK_SIZE = {
    _asn1.OID_AES128_CBC: 16,
    _asn1.OID_AES192_CBC: 24,
    _asn1.OID_AES256_CBC: 32,
}
_PBKDF2_PRF: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,  # the DEFAULT of RFC 8018, and what OpenSSL writes (by omission)
    "sha224": hashes.SHA224,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


def _pwri(recipient: PasswordRecipient, cek: bytes) -> cms.RecipientInfo:
    salt = os.urandom(password.SALT_SIZE)
    kek = password.derive_kek(recipient.password, salt, recipient.iterations, hashes.SHA256(), 32)
    iv = os.urandom(16)
    return cms.RecipientInfo(
        name="pwri",
        value={
            "version": "v0",  # RFC 5652 6.2.4: always 0
            "key_derivation_algorithm": {
                "algorithm": "pbkdf2",
                "parameters": {
                    "salt": algos.Pbkdf2Salt(name="specified", value=salt),
                    "iteration_count": recipient.iterations,
                    # keyLength omitted: the KEK cipher fixes it (RFC 3211 2.2).
                    # RFC 8018 B.1.2: hmacWithSHA256's parameters are NULL.
                    "prf": {"algorithm": "sha256", "parameters": core.Null()},
                },
            },
            "key_encryption_algorithm": {
                "algorithm": _asn1.OID_PWRI_KEK,
                "parameters": algos.EncryptionAlgorithm(
                    {"algorithm": _asn1.OID_AES256_CBC, "parameters": core.OctetString(iv)}
                ),
            },
            "encrypted_key": password.wrap_key(kek, iv, cek),
        },
    )


def _recipient_info(
    recipient: EnvelopeRecipient | PasswordRecipient, cek: bytes
) -> cms.RecipientInfo:
    if isinstance(recipient, PasswordRecipient):
        return _pwri(recipient, cek)
    public_key = recipient.certificate.public_key()
    if isinstance(public_key, rsa.RSAPublicKey):
        return _ktri(recipient, public_key, cek)
    if isinstance(public_key, ec.EllipticCurvePublicKey | x25519.X25519PublicKey):
        return _kari(recipient, public_key, cek)
    kind = type(public_key).__name__.removeprefix("_").removesuffix("PublicKey")
    raise RecipientError(
        _recipient_name(recipient.certificate),
        f"its certificate holds a {kind} key, which cannot be used for encryption",
    )


@dataclasses.dataclass(frozen=True, repr=False)
class EnvelopePlan:
    """Everything of an envelope but its content: the fresh content key and IV (or GCM
    nonce), and the recipient infos that carry the key to each recipient. Shared by the
    in-memory encryptor and the streaming one (:mod:`securemail.stream.cms`)."""

    cipher: ContentCipher
    key: bytes
    iv: bytes
    recipient_infos: tuple[cms.RecipientInfo, ...]

    @property
    def content_type(self) -> str:
        """The ContentInfo type: AuthEnvelopedData for GCM, EnvelopedData for CBC."""
        return "authenticated_enveloped_data" if self.cipher.authenticated else "enveloped_data"

    @property
    def version(self) -> str:
        """RFC 5083 2.1: AuthEnvelopedData is always v0. RFC 5652 6.1: EnvelopedData is v3
        with a password recipient, v0 when every recipient info is v0, else v2."""
        if self.cipher.authenticated:
            return "v0"
        if any(i.name == "pwri" for i in self.recipient_infos):
            return "v3"
        if all(i.name == "ktri" for i in self.recipient_infos):
            return "v0"
        return "v2"

    def content_algorithm(self) -> algos.EncryptionAlgorithm:
        oid = _CONTENT_OID[self.cipher]
        if self.cipher.authenticated:
            params: object = _asn1.GCMParameters({"aes_nonce": self.iv, "aes_icvlen": GCM_TAG_SIZE})
        else:
            params = core.OctetString(self.iv)
        return algos.EncryptionAlgorithm({"algorithm": oid, "parameters": params})


def plan_envelope(
    recipients: Sequence[EnvelopeRecipient | PasswordRecipient], cipher: ContentCipher
) -> EnvelopePlan:
    """A fresh content key wrapped for every recipient (fail-closed: any recipient that
    cannot be encrypted to raises :class:`RecipientError` naming it)."""
    if not recipients:
        raise RecipientError("(none)", "at least one recipient is required")
    cek = os.urandom(cipher.key_size)
    infos = tuple(_recipient_info(r, cek) for r in recipients)
    iv = os.urandom(GCM_NONCE_SIZE if cipher.authenticated else 16)
    return EnvelopePlan(cipher=cipher, key=cek, iv=iv, recipient_infos=infos)


def encrypt_envelope(
    content: bytes,
    recipients: Sequence[EnvelopeRecipient | PasswordRecipient],
    cipher: ContentCipher,
) -> bytes:
    """DER ContentInfo: AuthEnvelopedData for the GCM ciphers, EnvelopedData for CBC."""
    plan = plan_envelope(recipients, cipher)
    if cipher.authenticated:
        sealed = AESGCM(plan.key).encrypt(plan.iv, content, None)
        ciphertext, tag = sealed[:-GCM_TAG_SIZE], sealed[-GCM_TAG_SIZE:]
        body: cms.AuthEnvelopedData | cms.EnvelopedData = cms.AuthEnvelopedData(
            {
                "version": plan.version,
                "recipient_infos": list(plan.recipient_infos),
                "auth_encrypted_content_info": {
                    "content_type": "data",
                    "content_encryption_algorithm": plan.content_algorithm(),
                    "encrypted_content": ciphertext,
                },
                "mac": tag,
            }
        )
    else:
        padder = padding.PKCS7(128).padder()
        padded = padder.update(content) + padder.finalize()
        encryptor = Cipher(algorithms.AES(plan.key), modes.CBC(plan.iv)).encryptor()
        ciphertext = encryptor.update(padded) + encryptor.finalize()
        body = cms.EnvelopedData(
            {
                "version": plan.version,
                "recipient_infos": list(plan.recipient_infos),
                "encrypted_content_info": {
                    "content_type": "data",
                    "content_encryption_algorithm": plan.content_algorithm(),
                    "encrypted_content": ciphertext,
                },
            }
        )
    return bytes(cms.ContentInfo({"content_type": plan.content_type, "content": body}).dump())


# --- opening --------------------------------------------------------------------------------------


def _subject_key_identifier(certificate: x509.Certificate) -> bytes:
    try:
        ext = certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        return ext.value.digest
    except x509.ExtensionNotFound:
        return x509.SubjectKeyIdentifier.from_public_key(certificate.public_key()).digest


def _matches(rid: object, certificate: x509.Certificate) -> bool:
    """Does a RecipientIdentifier/KeyAgreementRecipientIdentifier name ``certificate``?"""
    name = rid.name  # type: ignore[attr-defined]
    value = rid.chosen  # type: ignore[attr-defined]
    if name == "issuer_and_serial_number":
        # asn1crypto compares names after RFC 5280 7.1 normalization, so a PrintableString
        # and a UTF8String spelling of the same issuer match.
        return bool(
            value["serial_number"].native == certificate.serial_number
            and value["issuer"] == asn1_x509.Name.load(certificate.issuer.public_bytes())
        )
    if name == "subject_key_identifier":
        return bool(value.native == _subject_key_identifier(certificate))
    if name == "r_key_id":
        return bool(value["subject_key_identifier"].native == _subject_key_identifier(certificate))
    return False


def _unwrap_ktri(
    info: cms.KeyTransRecipientInfo, key: PrivateKey, cek_sizes: tuple[int, ...]
) -> bytes:
    if not isinstance(key, rsa.RSAPrivateKey):
        raise DecryptionError()
    algorithm = info["key_encryption_algorithm"]
    encrypted = info["encrypted_key"].native
    oid = algorithm["algorithm"].dotted
    if oid == _asn1.OID_RSAES_OAEP:
        params = algorithm["parameters"]
        hash_name = params["hash_algorithm"]["algorithm"].native
        mgf = params["mask_gen_algorithm"]
        mgf_hash = (
            mgf["parameters"]["algorithm"].native if mgf["algorithm"].native == "mgf1" else None
        )
        label_source = params["p_source_algorithm"]
        label = label_source["parameters"].native or None
        if hash_name not in _HASH or mgf_hash not in _HASH:
            raise UnsupportedAlgorithmError(
                f"RSAES-OAEP with {hash_name}/{mgf_hash}", "key transport"
            )
        oaep = asym_padding.OAEP(
            mgf=asym_padding.MGF1(_HASH[mgf_hash]()), algorithm=_HASH[hash_name](), label=label
        )
        try:
            return key.decrypt(encrypted, oaep)
        except ValueError:
            raise DecryptionError() from None
    if oid == _asn1.OID_RSA_ENCRYPTION:
        # RFC 3218 2.3.2 (Bleichenbacher): on failure, carry on with a random key of the
        # expected size; the content decryption then fails like any other wrong key.
        random_cek = os.urandom(cek_sizes[0])
        try:
            cek = key.decrypt(encrypted, asym_padding.PKCS1v15())
        except ValueError:
            return random_cek
        return cek if len(cek) in cek_sizes else random_cek
    raise UnsupportedAlgorithmError(oid, "key transport")


def _unwrap_kari(info: cms.KeyAgreeRecipientInfo, encrypted_key: bytes, key: PrivateKey) -> bytes:
    originator = info["originator"]
    if originator.name != "originator_key":
        raise UnsupportedAlgorithmError("static-static key agreement", "key agreement")
    point = originator.chosen["public_key"].native
    algorithm = info["key_encryption_algorithm"]
    kea_oid = algorithm["algorithm"].dotted
    wrap = _asn1.KeyWrapAlgorithm.load(algorithm["parameters"].dump())
    wrap_oid = wrap["algorithm"].dotted
    if wrap_oid not in _WRAP_KEY_SIZE:
        raise UnsupportedAlgorithmError(wrap_oid, "key wrap")
    wrap_size = _WRAP_KEY_SIZE[wrap_oid]
    ukm = info["ukm"].native
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if kea_oid not in _asn1.ECDH_X963_KDF:
            raise UnsupportedAlgorithmError(kea_oid, "EC key agreement")
        kdf, hash_name = "x963", _asn1.ECDH_X963_KDF[kea_oid]
        try:
            peer = ec.EllipticCurvePublicKey.from_encoded_point(key.curve, point)
            secret = key.exchange(ec.ECDH(), peer)
        except ValueError:
            raise DecryptionError() from None
    elif isinstance(key, x25519.X25519PrivateKey):
        if kea_oid in _asn1.ECDH_HKDF:
            kdf, hash_name = "hkdf", _asn1.ECDH_HKDF[kea_oid]
        elif kea_oid in _asn1.ECDH_X963_KDF:
            kdf, hash_name = "x963", _asn1.ECDH_X963_KDF[kea_oid]
        else:
            raise UnsupportedAlgorithmError(kea_oid, "X25519 key agreement")
        try:
            secret = key.exchange(x25519.X25519PublicKey.from_public_bytes(point))
        except ValueError:
            raise DecryptionError() from None
    else:
        raise DecryptionError()
    shared_info = _shared_info(wrap, wrap_size, ukm)
    kek = _derive_kek(kdf, hash_name, secret, shared_info, wrap_size, ukm)
    if wrap_oid == _asn1.OID_3DES_WRAP:
        return _des3_key_unwrap(kek, encrypted_key)
    try:
        return keywrap.aes_key_unwrap(kek, encrypted_key)
    except (keywrap.InvalidUnwrap, ValueError):
        raise DecryptionError() from None


_DES3_WRAP_IV = bytes.fromhex("4adda22c79e82105")


def _des3_key_unwrap(kek: bytes, wrapped: bytes) -> bytes:
    """RFC 3217 section 3.2 Triple-DES key unwrap (read only, for OpenSSL 1.1.1's ECDH+3DES)."""
    if len(wrapped) != 40:
        raise DecryptionError()
    outer = Cipher(TripleDES(kek), modes.CBC(_DES3_WRAP_IV)).decryptor()
    temp2 = (outer.update(wrapped) + outer.finalize())[::-1]
    inner = Cipher(TripleDES(kek), modes.CBC(temp2[:8])).decryptor()
    cek_icv = inner.update(temp2[8:]) + inner.finalize()
    cek, icv = cek_icv[:-8], cek_icv[-8:]
    if not hmac.compare_digest(hashlib.sha1(cek).digest()[:8], icv):  # noqa: S324 (RFC 3217)
        raise DecryptionError()
    return cek


def _find_recipient(
    infos: cms.RecipientInfos, certificate: x509.Certificate
) -> tuple[cms.RecipientInfo, bytes | None]:
    try:
        for info in infos:
            if info.name == "ktri" and _matches(info.chosen["rid"], certificate):
                return info, None
            if info.name == "kari":
                for rek in info.chosen["recipient_encrypted_keys"]:
                    if _matches(rek["rid"], certificate):
                        return info, rek["encrypted_key"].native
    except (ValueError, TypeError, KeyError, IndexError, OverflowError):
        # A recipient info that does not parse (garbled or tampered) is no recipient info.
        raise DecryptionError() from None
    raise NotARecipientError(certificate.subject.rfc4514_string())


@dataclasses.dataclass(frozen=True)
class _ContentAlgorithm:
    name: str
    key_sizes: tuple[int, ...]
    authenticated: bool


_CONTENT_ALGORITHMS = {
    _asn1.OID_AES128_GCM: _ContentAlgorithm("aes-128-gcm", (16,), True),
    _asn1.OID_AES192_GCM: _ContentAlgorithm("aes-192-gcm", (24,), True),
    _asn1.OID_AES256_GCM: _ContentAlgorithm("aes-256-gcm", (32,), True),
    _asn1.OID_CHACHA20_POLY1305: _ContentAlgorithm("chacha20-poly1305", (32,), True),
    _asn1.OID_AES128_CBC: _ContentAlgorithm("aes-128-cbc", (16,), False),
    _asn1.OID_AES192_CBC: _ContentAlgorithm("aes-192-cbc", (24,), False),
    _asn1.OID_AES256_CBC: _ContentAlgorithm("aes-256-cbc", (32,), False),
    _asn1.OID_DES_EDE3_CBC: _ContentAlgorithm("des-ede3-cbc", (24,), False),
}


def _decrypt_cbc(oid: str, cek: bytes, params: object, ciphertext: bytes) -> bytes:
    iv = core.OctetString.load(params.dump()).native  # type: ignore[attr-defined]
    block: algorithms.AES | TripleDES = (
        TripleDES(cek) if oid == _asn1.OID_DES_EDE3_CBC else algorithms.AES(cek)
    )
    block_bytes = block.block_size // 8
    if len(iv) != block_bytes or not ciphertext or len(ciphertext) % block_bytes:
        raise DecryptionError()
    decryptor = Cipher(block, modes.CBC(iv)).decryptor()
    padded = decryptor.update(ciphertext) + decryptor.finalize()
    unpadder = padding.PKCS7(block.block_size).unpadder()
    try:
        return unpadder.update(padded) + unpadder.finalize()
    except ValueError:
        raise DecryptionError() from None


def _decrypt_aead(
    oid: str, cek: bytes, params: object, ciphertext: bytes, tag: bytes, aad: bytes | None
) -> bytes:
    if oid == _asn1.OID_CHACHA20_POLY1305:
        nonce = core.OctetString.load(params.dump()).native  # type: ignore[attr-defined]
        if len(nonce) != 12 or len(tag) != 16:
            raise DecryptionError()
        try:
            return ChaCha20Poly1305(cek).decrypt(nonce, ciphertext + tag, aad)
        except InvalidTag:
            raise DecryptionError() from None
    gcm = _asn1.GCMParameters.load(params.dump())  # type: ignore[attr-defined]
    nonce = gcm["aes_nonce"].native
    # Truncated tags (below 12 bytes) are forgeable; only full-strength tags are accepted.
    if len(tag) != gcm["aes_icvlen"].native or not 12 <= len(tag) <= 16 or not nonce:
        raise DecryptionError()
    decryptor = Cipher(algorithms.AES(cek), modes.GCM(nonce, tag, min_tag_length=12)).decryptor()
    if aad:
        decryptor.authenticate_additional_data(aad)
    plaintext = decryptor.update(ciphertext)
    try:
        decryptor.finalize()
    except InvalidTag:
        raise DecryptionError() from None
    return plaintext


@dataclasses.dataclass(frozen=True)
class _Envelope:
    """The parts of an (Auth)EnvelopedData that decryption needs, parsed up front."""

    recipient_infos: cms.RecipientInfos
    algorithm: _ContentAlgorithm
    oid: str
    params: object
    ciphertext: bytes
    tag: bytes | None
    aad: bytes | None


def _parse_envelope(data: bytes, require_authenticated: bool, max_size: int | None) -> _Envelope:
    try:
        info = cms.ContentInfo.load(data, strict=True)
        content_type = info["content_type"].native
        body = info["content"]
        if content_type == "enveloped_data":
            enc_info = body["encrypted_content_info"]
            tag, aad = None, None
        elif content_type == "authenticated_enveloped_data":
            enc_info = body["auth_encrypted_content_info"]
            tag = body["mac"].native
            auth_attrs = body["auth_attrs"]
            # RFC 5083 2.2: the authenticated attributes are the AAD, DER SET OF encoded.
            aad = None if isinstance(auth_attrs, core.Void) else b"\x31" + auth_attrs.dump()[1:]
        else:
            raise DecryptionError("the message is not S/MIME encrypted (no EnvelopedData)")
        recipient_infos = body["recipient_infos"]
        algorithm = enc_info["content_encryption_algorithm"]
        oid = algorithm["algorithm"].dotted
        params = algorithm["parameters"]
        ciphertext = enc_info["encrypted_content"].native
    except DecryptionError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, OverflowError):
        raise DecryptionError() from None
    if ciphertext is None:
        raise DecryptionError()
    if max_size is not None and len(ciphertext) > max_size:
        raise SizeLimitExceeded("encrypted content", max_size)
    chosen = _CONTENT_ALGORITHMS.get(oid)
    if chosen is None:
        raise UnsupportedAlgorithmError(oid, "content encryption")
    if chosen.authenticated != (content_type == "authenticated_enveloped_data"):
        raise DecryptionError()
    if require_authenticated and not chosen.authenticated:
        raise UnauthenticatedContentError(chosen.name)
    return _Envelope(recipient_infos, chosen, oid, params, ciphertext, tag, aad)


def _open(
    envelope: _Envelope, unwrap: Callable[[], bytes], certificate: x509.Certificate | None
) -> OpenedEnvelope:
    """Unwrap the content key and decrypt; every failure is the one DecryptionError."""
    chosen = envelope.algorithm
    try:
        cek = unwrap()
        if len(cek) not in chosen.key_sizes:
            raise DecryptionError()
        if chosen.authenticated:
            assert envelope.tag is not None
            content = _decrypt_aead(
                envelope.oid, cek, envelope.params, envelope.ciphertext, envelope.tag, envelope.aad
            )
        else:
            content = _decrypt_cbc(envelope.oid, cek, envelope.params, envelope.ciphertext)
    except (DecryptionError, UnsupportedAlgorithmError):
        raise
    except (ValueError, TypeError, KeyError, IndexError, OverflowError):
        raise DecryptionError() from None
    return OpenedEnvelope(
        content=content,
        content_cipher=chosen.name,
        authenticated=chosen.authenticated,
        recipient_certificate=certificate,
    )


def decrypt_envelope(
    data: bytes,
    private_key: PrivateKey,
    certificate: x509.Certificate,
    *,
    require_authenticated: bool = False,
    max_size: int | None = None,
) -> OpenedEnvelope:
    """Open a BER or DER ContentInfo holding EnvelopedData or AuthEnvelopedData."""
    envelope = _parse_envelope(data, require_authenticated, max_size)
    recipient, kari_key = _find_recipient(envelope.recipient_infos, certificate)

    def unwrap() -> bytes:
        if recipient.name == "ktri":
            return _unwrap_ktri(recipient.chosen, private_key, envelope.algorithm.key_sizes)
        assert kari_key is not None
        return _unwrap_kari(recipient.chosen, kari_key, private_key)

    return _open(envelope, unwrap, certificate)


def decrypt_envelope_with_kek(
    data: bytes,
    key_identifier: bytes,
    kek: bytes,
    *,
    require_authenticated: bool = False,
    max_size: int | None = None,
) -> OpenedEnvelope:
    """Open an envelope through a KEKRecipientInfo (RFC 5652 6.2.3): a pre-shared AES
    key-encryption key named by ``key_identifier``."""
    envelope = _parse_envelope(data, require_authenticated, max_size)
    for info in envelope.recipient_infos:
        if info.name == "kekri" and info.chosen["kekid"]["key_identifier"].native == key_identifier:
            break
    else:
        raise NotARecipientError(f"KEK {key_identifier.hex()}")
    wrap_oid = info.chosen["key_encryption_algorithm"]["algorithm"].dotted
    if _WRAP_KEY_SIZE.get(wrap_oid) != len(kek) or wrap_oid == _asn1.OID_3DES_WRAP:
        raise UnsupportedAlgorithmError(wrap_oid, f"a {len(kek)}-byte key-encryption key")
    encrypted_key = info.chosen["encrypted_key"].native

    def unwrap() -> bytes:
        try:
            return keywrap.aes_key_unwrap(kek, encrypted_key)
        except (keywrap.InvalidUnwrap, ValueError):
            raise DecryptionError() from None

    return _open(envelope, unwrap, None)


@dataclasses.dataclass(frozen=True, repr=False)
class _PasswordInfo:
    """A PasswordRecipientInfo's parameters, checked to be ones we can compute."""

    salt: bytes
    iterations: int
    prf: hashes.HashAlgorithm
    kek_size: int
    iv: bytes
    encrypted_key: bytes


def _password_info(info: cms.PasswordRecipientInfo) -> _PasswordInfo:
    kdf = info["key_derivation_algorithm"]
    if isinstance(kdf, core.Void):
        # RFC 3211 2.2: the KEK was agreed some other way; there is nothing to derive.
        raise UnsupportedAlgorithmError("a password recipient without key derivation", "PWRI")
    if kdf["algorithm"].dotted != _asn1.OID_PBKDF2:
        raise UnsupportedAlgorithmError(kdf["algorithm"].dotted, "password key derivation")
    params = kdf["parameters"]
    prf = params["prf"]["algorithm"].native
    if prf not in _PBKDF2_PRF:
        raise UnsupportedAlgorithmError(f"PBKDF2 with HMAC-{prf}", "password key derivation")
    salt = params["salt"]
    if salt.name != "specified":
        raise UnsupportedAlgorithmError("PBKDF2 with a salt from another source", "PWRI")
    wrap = info["key_encryption_algorithm"]
    if wrap["algorithm"].dotted != _asn1.OID_PWRI_KEK:
        raise UnsupportedAlgorithmError(wrap["algorithm"].dotted, "password key wrap")
    kek_cipher = algos.EncryptionAlgorithm.load(wrap["parameters"].dump())
    kek_oid = kek_cipher["algorithm"].dotted
    kek_size = _PWRI_KEK_SIZE.get(kek_oid)
    if kek_size is None:
        raise UnsupportedAlgorithmError(kek_oid, "the password key wrap's cipher")
    key_length = params["key_length"].native
    if key_length is not None and key_length != kek_size:
        raise UnsupportedAlgorithmError(
            f"PBKDF2 deriving {key_length} bytes for a {kek_size}-byte key", "PWRI"
        )
    return _PasswordInfo(
        salt=salt.chosen.native,
        iterations=params["iteration_count"].native,
        prf=_PBKDF2_PRF[prf](),
        kek_size=kek_size,
        iv=core.OctetString.load(kek_cipher["parameters"].dump()).native,
        encrypted_key=info["encrypted_key"].native,
    )


def _password_key(
    infos: cms.RecipientInfos, secret: bytes, *, min_iterations: int, max_iterations: int
) -> bytes:
    """The content key from the first password recipient info that ``secret`` opens.

    Each password recipient info costs a key derivation, and there is no identifier saying
    which one belongs to which password: the ones whose algorithms we support and whose
    iteration count is within bounds are all tried, as long as their counts add up to at
    most ``max_iterations``.
    """
    usable: list[_PasswordInfo] = []
    refused: list[SecureMailError] = []
    try:
        for info in infos:
            if info.name != "pwri":
                continue
            try:
                found = _password_info(info.chosen)
            except UnsupportedAlgorithmError as exc:
                refused.append(exc)
                continue
            if min_iterations <= found.iterations <= max_iterations:
                usable.append(found)
            else:
                refused.append(
                    PasswordIterationsError(found.iterations, min_iterations, max_iterations)
                )
    except (ValueError, TypeError, KeyError, IndexError, OverflowError):
        # A recipient info that does not parse (garbled or tampered) is no recipient info.
        raise DecryptionError() from None
    if not usable:
        raise refused[0] if refused else NoPasswordRecipientError()
    total = sum(f.iterations for f in usable)
    if total > max_iterations:
        raise PasswordIterationsError(total, min_iterations, max_iterations)
    for candidate in usable:
        kek = password.derive_kek(
            secret, candidate.salt, candidate.iterations, candidate.prf, candidate.kek_size
        )
        cek = password.unwrap_key(kek, candidate.iv, candidate.encrypted_key)
        if cek is not None:
            return cek
    raise WrongMessagePasswordError()


def decrypt_envelope_with_password(
    data: bytes,
    secret: str | bytes,
    *,
    require_authenticated: bool = False,
    max_size: int | None = None,
    min_iterations: int = DEFAULT.min_pbkdf2_iterations,
    max_iterations: int = DEFAULT.max_pbkdf2_iterations,
) -> OpenedEnvelope:
    """Open an envelope through a PasswordRecipientInfo (RFC 5652 6.2.4, RFC 3211).

    Beyond the usual :class:`DecryptionError`: :class:`NoPasswordRecipientError` when the
    message has no password recipient, :class:`WrongMessagePasswordError` when the password
    opens none, :class:`PasswordIterationsError` when the PBKDF2 work is out of bounds, and
    :class:`UnsupportedAlgorithmError` for a derivation or wrap we do not implement.
    """
    key = password.password_bytes(secret)
    envelope = _parse_envelope(data, require_authenticated, max_size)

    def unwrap() -> bytes:
        return _password_key(
            envelope.recipient_infos,
            key,
            min_iterations=min_iterations,
            max_iterations=max_iterations,
        )

    return _open(envelope, unwrap, None)


# --- streaming -----------------------------------------------------------------------------------


class ContentDecryptor:
    """Decrypts content that arrives in pieces (the streaming reader, RFC 5652 BER).

    ``update`` returns plaintext as it comes (the caller spools it: nothing is trusted before
    ``finalize``); ``finalize`` checks the GCM tag or the CBC padding. Every failure is the
    one :class:`DecryptionError`.
    """

    def __init__(self, chosen: _ContentAlgorithm, oid: str, params: object, key: bytes) -> None:
        self.name = chosen.name
        self.authenticated = chosen.authenticated
        try:
            if oid in (_asn1.OID_CHACHA20_POLY1305,):
                raise UnsupportedAlgorithmError(chosen.name, "streaming decryption")
            if chosen.authenticated:
                gcm = _asn1.GCMParameters.load(params.dump())  # type: ignore[attr-defined]
                self._icvlen = gcm["aes_icvlen"].native
                nonce = gcm["aes_nonce"].native
                if not 12 <= self._icvlen <= 16 or not nonce:
                    raise DecryptionError()
                self._gcm: AEADDecryptionContext | None = Cipher(
                    algorithms.AES(key), modes.GCM(nonce)
                ).decryptor()
                self._context: CipherContext = self._gcm
                self._unpadder = None
            else:
                iv = core.OctetString.load(params.dump()).native  # type: ignore[attr-defined]
                block: algorithms.AES | TripleDES = (
                    TripleDES(key) if oid == _asn1.OID_DES_EDE3_CBC else algorithms.AES(key)
                )
                if len(iv) != block.block_size // 8:
                    raise DecryptionError()
                self._gcm = None
                self._context = Cipher(block, modes.CBC(iv)).decryptor()
                self._unpadder = padding.PKCS7(block.block_size).unpadder()
        except (DecryptionError, UnsupportedAlgorithmError):
            raise
        except (ValueError, TypeError, KeyError):
            raise DecryptionError() from None

    def update(self, ciphertext: bytes | bytearray | memoryview) -> bytes:
        try:
            clear = self._context.update(ciphertext)
            return self._unpadder.update(clear) if self._unpadder is not None else clear
        except ValueError:
            raise DecryptionError() from None

    def finalize(self, tag: bytes | None) -> bytes:
        try:
            if self._gcm is not None:
                if tag is None or len(tag) != self._icvlen:
                    raise DecryptionError()
                return self._gcm.finalize_with_tag(tag)
            assert self._unpadder is not None
            return self._unpadder.update(self._context.finalize()) + self._unpadder.finalize()
        except (InvalidTag, ValueError):
            raise DecryptionError() from None


def _stream_algorithm(
    algorithm: algos.EncryptionAlgorithm, authenticated_container: bool, require_authenticated: bool
) -> tuple[_ContentAlgorithm, str, object]:
    try:
        oid = algorithm["algorithm"].dotted
        params = algorithm["parameters"]
    except (ValueError, TypeError, KeyError):
        raise DecryptionError() from None
    chosen = _CONTENT_ALGORITHMS.get(oid)
    if chosen is None:
        raise UnsupportedAlgorithmError(oid, "content encryption")
    if chosen.authenticated != authenticated_container:
        raise DecryptionError()
    if require_authenticated and not chosen.authenticated:
        raise UnauthenticatedContentError(chosen.name)
    return chosen, oid, params


def open_stream(
    recipient_infos: cms.RecipientInfos,
    algorithm: algos.EncryptionAlgorithm,
    private_key: PrivateKey,
    certificate: x509.Certificate,
    *,
    authenticated_container: bool,
    require_authenticated: bool = False,
) -> ContentDecryptor:
    """The content key for ``certificate`` unwrapped, ready to decrypt streamed content.

    The same rules as :func:`decrypt_envelope`: the recipient info is chosen by its
    identifier, the algorithm must suit the container (GCM in AuthEnvelopedData, CBC in
    EnvelopedData), and failures after that point are one :class:`DecryptionError`.
    """
    chosen, oid, params = _stream_algorithm(
        algorithm, authenticated_container, require_authenticated
    )
    recipient, kari_key = _find_recipient(recipient_infos, certificate)
    try:
        if recipient.name == "ktri":
            key = _unwrap_ktri(recipient.chosen, private_key, chosen.key_sizes)
        else:
            assert kari_key is not None
            key = _unwrap_kari(recipient.chosen, kari_key, private_key)
    except (DecryptionError, UnsupportedAlgorithmError):
        raise
    except (ValueError, TypeError, KeyError, IndexError, OverflowError):
        raise DecryptionError() from None
    if len(key) not in chosen.key_sizes:
        raise DecryptionError()
    return ContentDecryptor(chosen, oid, params, key)


def open_stream_with_password(
    recipient_infos: cms.RecipientInfos,
    algorithm: algos.EncryptionAlgorithm,
    secret: str | bytes,
    *,
    authenticated_container: bool,
    require_authenticated: bool = False,
    min_iterations: int = DEFAULT.min_pbkdf2_iterations,
    max_iterations: int = DEFAULT.max_pbkdf2_iterations,
) -> ContentDecryptor:
    """:func:`open_stream` for a password recipient, with the rules and errors of
    :func:`decrypt_envelope_with_password`."""
    key = password.password_bytes(secret)
    chosen, oid, params = _stream_algorithm(
        algorithm, authenticated_container, require_authenticated
    )
    cek = _password_key(
        recipient_infos, key, min_iterations=min_iterations, max_iterations=max_iterations
    )
    if len(cek) not in chosen.key_sizes:
        raise DecryptionError()
    return ContentDecryptor(chosen, oid, params, cek)
