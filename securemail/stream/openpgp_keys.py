"""OpenPGP recipient keys, read natively from an export, and the session-key packets to them.

:func:`recipient_keys` reads a transferable public key (``gpg --export``, binary or armored;
RFC 9580 10.1) and returns its encryption-capable (sub)keys that securemail can encrypt to:
RSA (PKESK v3 with EME-PKCS1-v1_5, RFC 9580 5.1.3) and ECDH over Curve25519 (the legacy
``cv25519`` form gpg 2.2 makes) or NIST P-256/P-384/P-521 (RFC 9580 5.1.6, RFC 6637).

The self-signatures are read, not verified: key flags, expiry and revocations are taken
from them as they stand. The export is meant to come from :meth:`GnuPG.export_public
<securemail.pgp.gpg.GnuPG.export_public>`, which has already made gpg check those
signatures and the key's validity, and exports only the subkey gpg would encrypt to.
Do not feed it a key from an untrusted place without that check.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import os
from collections.abc import Sequence

from cryptography.hazmat.primitives import keywrap
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, x25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ..errors import KeyLoadError, RecipientError, UnsupportedAlgorithmError
from .openpgp_armor import dearmor
from .openpgp_packets import (
    TAG_PKESK,
    TAG_PUBLIC_KEY,
    TAG_PUBLIC_SUBKEY,
    TAG_SIGNATURE,
    TAG_USER_ATTRIBUTE,
    TAG_USER_ID,
    MalformedPacket,
    mpi,
    packet,
    read_mpi,
    split_packets,
)

__all__ = [
    "AES256",
    "RecipientKey",
    "recipient_keys",
    "session_key_packets",
]

AES256 = 9
"""RFC 9580 9.3: the symmetric algorithm ID of AES with a 256-bit key."""
_KEY_SIZES = {7: 16, 8: 24, 9: 32}  # AES-128, AES-192, AES-256

_RSA = (1, 2)  # RSA (Encrypt or Sign), RSA Encrypt-Only
_ECDH = 18
_MIN_RSA_BITS = 2048
_CV25519 = bytes.fromhex("2b060104019755010501")  # 1.3.6.1.4.1.3029.1.5.1
_NIST_CURVES: dict[bytes, tuple[str, ec.EllipticCurve]] = {
    bytes.fromhex("2a8648ce3d030107"): ("nistp256", ec.SECP256R1()),
    bytes.fromhex("2b81040022"): ("nistp384", ec.SECP384R1()),
    bytes.fromhex("2b81040023"): ("nistp521", ec.SECP521R1()),
}
_KDF_HASHES = {8: hashlib.sha256, 9: hashlib.sha384, 10: hashlib.sha512}
_ANONYMOUS_SENDER = b"Anonymous Sender    "  # RFC 9580 11.5: 20 octets

# Signature types (RFC 9580 5.2.1) and subpackets (5.2.3.7).
_CERTIFICATIONS = frozenset({0x10, 0x11, 0x12, 0x13})
_DIRECT_KEY = 0x1F
_KEY_REVOCATION = 0x20
_SUBKEY_BINDING = 0x18
_SUBKEY_REVOCATION = 0x28
_SUB_CREATED = 2
_SUB_KEY_EXPIRES = 9
_SUB_KEY_FLAGS = 27
_SUB_ISSUER = 16
_SUB_ISSUER_FINGERPRINT = 33
_FLAGS_ENCRYPT = 0x04 | 0x08  # communications, storage


@dataclasses.dataclass(frozen=True, repr=False)
class RecipientKey:
    """One (sub)key a message can be encrypted to: its v4 fingerprint and public material.

    Build it with :func:`recipient_keys`; :meth:`pkesk` makes the session-key packet."""

    fingerprint: str
    """The (sub)key's v4 fingerprint, 40 upper-case hex digits."""
    algorithm: str
    """``rsa3072``, ``cv25519``, ``nistp256``, ..."""
    created: dt.datetime
    _algo_id: int
    _material: tuple[bytes, ...]
    """RSA: (n, e). ECDH: (curve OID, point, KDF hash ID, key-wrap cipher ID)."""
    hidden: bool = False
    """Write the wildcard key ID (all zeros, RFC 9580 5.1.1) instead of this key's, so the
    message does not tell other readers that this key can open it (a Bcc recipient);
    the recipient's software then tries its secret keys."""

    @property
    def key_id(self) -> str:
        return self.fingerprint[-16:]

    def pkesk(self, cipher: int, session_key: bytes) -> bytes:
        """A v3 Public-Key Encrypted Session Key packet (RFC 9580 5.1) carrying
        ``session_key`` for the symmetric algorithm ``cipher``."""
        checksum = (sum(session_key) & 0xFFFF).to_bytes(2, "big")
        message = bytes([cipher]) + session_key + checksum
        if self._algo_id in _RSA:
            n, e = (int.from_bytes(v, "big") for v in self._material[:2])
            public = rsa.RSAPublicNumbers(e, n).public_key()
            fields = mpi(public.encrypt(message, padding.PKCS1v15()))
        else:
            fields = self._ecdh(message)
        key_id = bytes(8) if self.hidden else bytes.fromhex(self.key_id)
        head = b"\x03" + key_id + bytes([self._algo_id])
        return packet(TAG_PKESK, head + fields)

    def _ecdh(self, message: bytes) -> bytes:
        """RFC 9580 5.1.6 / RFC 6637 8: ephemeral ECDH, KDF, AES key wrap."""
        oid, point, kdf_hash, wrap_cipher = self._material
        if oid == _CV25519:
            ephemeral = x25519.X25519PrivateKey.generate()
            peer = x25519.X25519PublicKey.from_public_bytes(point[1:])
            shared = ephemeral.exchange(peer)
            encoded = b"\x40" + ephemeral.public_key().public_bytes_raw()
        else:
            curve = _NIST_CURVES[oid][1]
            nist = ec.generate_private_key(curve)
            shared = nist.exchange(
                ec.ECDH(), ec.EllipticCurvePublicKey.from_encoded_point(curve, point)
            )
            encoded = nist.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
        param = (
            bytes([len(oid)])
            + oid
            + bytes([_ECDH])
            + bytes([3, 1, kdf_hash[0], wrap_cipher[0]])
            + _ANONYMOUS_SENDER
            + bytes.fromhex(self.fingerprint)
        )
        digest = _KDF_HASHES[kdf_hash[0]](b"\x00\x00\x00\x01" + shared + param).digest()
        kek = digest[: _KEY_SIZES[wrap_cipher[0]]]
        pad = 8 - len(message) % 8  # PKCS#5 to a multiple of 8 (RFC 9580 11.5)
        wrapped = keywrap.aes_key_wrap(kek, message + bytes([pad]) * pad)
        return mpi(encoded) + bytes([len(wrapped)]) + wrapped

    def __repr__(self) -> str:
        return f"RecipientKey({self.fingerprint}, {self.algorithm})"


def session_key_packets(keys: Sequence[RecipientKey], cipher: int = AES256) -> tuple[bytes, bytes]:
    """A fresh random session key for ``cipher`` and the PKESK packets for every key."""
    if not keys:
        raise RecipientError("(none)", "at least one recipient key is needed")
    session_key = os.urandom(_KEY_SIZES[cipher])
    return session_key, b"".join(key.pkesk(cipher, session_key) for key in keys)


# --- reading keys ---------------------------------------------------------------------------------


@dataclasses.dataclass
class _Key:
    body: bytes
    fingerprint: str
    version: int
    created: int
    algo_id: int
    fields: bytes
    flags: int | None = None
    expires: int | None = None
    revoked: bool = False
    signed_at: int = -1


@dataclasses.dataclass
class _Signature:
    type: int
    created: int
    flags: int | None
    expires: int | None
    issuers: tuple[str, ...]
    """Issuer key ID and fingerprint (hex), from either subpacket area."""

    def by(self, key: _Key) -> bool:
        """Whether ``key`` made it (also when it names no issuer)."""
        return not self.issuers or any(key.fingerprint.endswith(i) for i in self.issuers)


def _public_key(body: bytes) -> _Key:
    if len(body) < 6:
        raise MalformedPacket("public key packet too short")
    version = body[0]
    if version != 4:
        # v3 keys are obsolete; v5/v6 keys (RFC 9580 v6, LibrePGP v5) are not made by gpg 2.2.
        return _Key(body, "", version, 0, 0, b"")
    hashed = b"\x99" + len(body).to_bytes(2, "big") + body
    fingerprint = hashlib.sha1(hashed).hexdigest()  # noqa: S324 (a v4 fingerprint is SHA-1)
    return _Key(
        body=body,
        fingerprint=fingerprint.upper(),
        version=4,
        created=int.from_bytes(body[1:5], "big"),
        algo_id=body[5],
        fields=body[6:],
    )


def _subpackets(data: bytes) -> dict[int, bytes]:
    found: dict[int, bytes] = {}
    offset = 0
    while offset < len(data):
        first = data[offset]
        if first < 192:
            size, offset = first, offset + 1
        elif first < 255:
            if offset + 2 > len(data):
                raise MalformedPacket("truncated subpacket length")
            size, offset = ((first - 192) << 8) + data[offset + 1] + 192, offset + 2
        else:
            if offset + 5 > len(data):
                raise MalformedPacket("truncated subpacket length")
            size, offset = int.from_bytes(data[offset + 1 : offset + 5], "big"), offset + 5
        if size == 0 or offset + size > len(data):
            raise MalformedPacket("bad subpacket length")
        found.setdefault(data[offset] & 0x7F, data[offset + 1 : offset + size])
        offset += size
    return found


def _signature(body: bytes) -> _Signature | None:
    """The facts of a v4 signature that matter here (None for other versions)."""
    if len(body) < 6 or body[0] != 4:
        return None
    kind = body[1]
    hashed_end = 6 + int.from_bytes(body[4:6], "big")
    unhashed_end = hashed_end + 2 + int.from_bytes(body[hashed_end : hashed_end + 2], "big")
    if unhashed_end > len(body):
        raise MalformedPacket("truncated signature")
    sub = _subpackets(body[6:hashed_end])
    created = int.from_bytes(sub[_SUB_CREATED], "big") if _SUB_CREATED in sub else 0
    flags = sub[_SUB_KEY_FLAGS][0] if sub.get(_SUB_KEY_FLAGS) else None
    expires = int.from_bytes(sub[_SUB_KEY_EXPIRES], "big") if _SUB_KEY_EXPIRES in sub else None
    issuers = []
    for area in (sub, _subpackets(body[hashed_end + 2 : unhashed_end])):
        if _SUB_ISSUER in area:
            issuers.append(area[_SUB_ISSUER].hex().upper())
        if _SUB_ISSUER_FINGERPRINT in area:
            issuers.append(area[_SUB_ISSUER_FINGERPRINT][1:].hex().upper())
    return _Signature(kind, created, flags, expires, tuple(issuers))


def _apply(key: _Key, sig: _Signature, kinds: frozenset[int] | set[int]) -> None:
    """Take flags and expiry from the newest self-signature of the given kinds."""
    if sig.type in kinds and sig.created >= key.signed_at:
        key.signed_at = sig.created
        key.flags = sig.flags
        key.expires = sig.expires or None


def _certificates(data: bytes) -> list[tuple[_Key, list[_Key]]]:
    certificates: list[tuple[_Key, list[_Key]]] = []
    current: _Key | None = None  # the key the next signatures belong to
    in_user_id = False
    for tag, body in split_packets(data, max_packet=1 << 20):
        if tag == TAG_PUBLIC_KEY:
            current = _public_key(body)
            certificates.append((current, []))
            in_user_id = False
        elif tag == TAG_PUBLIC_SUBKEY and certificates:
            current = _public_key(body)
            certificates[-1][1].append(current)
            in_user_id = False
        elif tag in (TAG_USER_ID, TAG_USER_ATTRIBUTE) and certificates:
            current = certificates[-1][0]
            in_user_id = True
        elif tag == TAG_SIGNATURE and current is not None:
            sig = _signature(body)
            primary = certificates[-1][0]
            if sig is None or not sig.by(primary):
                continue  # a certification by someone else says nothing about usage
            if current is primary:
                if sig.type == _KEY_REVOCATION:
                    primary.revoked = True
                _apply(primary, sig, _CERTIFICATIONS if in_user_id else {_DIRECT_KEY})
            else:
                if sig.type == _SUBKEY_REVOCATION:
                    current.revoked = True
                _apply(current, sig, {_SUBKEY_BINDING})
    return certificates


def _recipient(key: _Key) -> RecipientKey | None:
    """The key as a RecipientKey, or None when it is not one securemail encrypts to."""
    fields = key.fields
    created = dt.datetime.fromtimestamp(key.created, dt.UTC)
    if key.algo_id in _RSA:
        n, offset = read_mpi(fields, 0)
        e, _ = read_mpi(fields, offset)
        bits = int.from_bytes(n, "big").bit_length()
        if bits < _MIN_RSA_BITS:
            return None
        return RecipientKey(key.fingerprint, f"rsa{bits}", created, key.algo_id, (n, e))
    if key.algo_id == _ECDH and fields:
        oid = fields[1 : 1 + fields[0]]
        point, offset = read_mpi(fields, 1 + fields[0])
        kdf = fields[offset : offset + 4]
        if len(kdf) != 4 or kdf[0] != 3 or kdf[1] != 1:
            raise MalformedPacket("bad ECDH KDF parameters")
        if kdf[2] not in _KDF_HASHES or kdf[3] not in _KEY_SIZES:
            return None
        if oid == _CV25519 and len(point) == 33 and point[0] == 0x40:
            name = "cv25519"
        elif oid in _NIST_CURVES and point[:1] == b"\x04":
            name = _NIST_CURVES[oid][0]
        else:
            return None
        return RecipientKey(key.fingerprint, name, created, _ECDH, (oid, point, kdf[2:3], kdf[3:4]))
    return None


def _expired(key: _Key, now: int) -> bool:
    return key.expires is not None and key.created + key.expires <= now


def _can_encrypt(key: _Key, now: int) -> bool:
    if key.revoked or key.version != 4 or _expired(key, now):
        return False
    if key.flags is not None:
        return bool(key.flags & _FLAGS_ENCRYPT)
    return key.algo_id in (*_RSA, _ECDH)


def recipient_keys(export: bytes, *, now: dt.datetime | None = None) -> list[RecipientKey]:
    """The (sub)keys in ``export`` (``gpg --export``, binary or armored, one or more
    certificates) that can be encrypted to now: encryption-capable by their key flags,
    neither revoked nor expired according to their self-signatures, of a supported
    algorithm (RSA of at least 2048 bits, ECDH on Curve25519 or NIST P-256/384/521).

    Certificates that are revoked or expired as a whole contribute nothing. The
    self-signatures are read, not verified (see the module notes). Raises
    :class:`KeyLoadError` for data that is not an OpenPGP key, and
    :class:`UnsupportedAlgorithmError` when the export holds encryption keys but none
    securemail can use (ElGamal, RSA under 2048 bits, X448, ...)."""
    raw = bytes(export)
    if raw.lstrip()[:5] == b"-----":
        marker = b"-----BEGIN PGP "
        blocks = [marker + block for block in raw.split(marker)[1:]]
        try:
            raw = b"".join(dearmor(block, ("PUBLIC KEY BLOCK",)) for block in blocks)
        except ValueError as exc:
            raise KeyLoadError("<bytes>", f"bad OpenPGP armor: {exc}") from None
    moment = int((now or dt.datetime.now(dt.UTC)).timestamp())
    try:
        certificates = _certificates(raw)
        found: list[RecipientKey] = []
        unsupported: list[str] = []
        for primary, subkeys in certificates:
            if primary.revoked or primary.version != 4 or _expired(primary, moment):
                continue
            for key in (primary, *subkeys):
                if not _can_encrypt(key, moment):
                    continue
                recipient = _recipient(key)
                if recipient is None:
                    unsupported.append(f"{key.fingerprint} (algorithm {key.algo_id})")
                else:
                    found.append(recipient)
    except MalformedPacket as exc:
        raise KeyLoadError("<bytes>", f"malformed OpenPGP key: {exc}") from None
    if not certificates:
        raise KeyLoadError("<bytes>", "no OpenPGP public key found")
    if not found and unsupported:
        raise UnsupportedAlgorithmError(", ".join(unsupported), "OpenPGP encryption")
    return found
