"""CMS EnvelopedData / AuthEnvelopedData: round trips, tampering, EFAIL, uniform failures.

Everything here works at the CMS level (``encrypt_envelope`` / ``decrypt_envelope``); the
message level lives in ``test_mime.py``. Ciphertexts are taken apart with asn1crypto, so each
test says in terms of the RFC 5652/5083 structure what it changed.
"""

from __future__ import annotations

from collections.abc import Callable

import pki
import pytest
from asn1crypto import cms
from cryptography.hazmat.primitives.asymmetric import rsa
from pki import (
    Issued,
    ciphertext_of,
    content_info,
    edit_cms,
    flip,
    issue,
    iv_of,
    mac_of,
    nonce_of,
    set_ciphertext,
    set_gcm,
    set_iv,
    set_mac,
)

from securemail.errors import (
    DECRYPTION_FAILED,
    DecryptionError,
    NotARecipientError,
    RecipientError,
    SizeLimitExceeded,
    UnauthenticatedContentError,
    UnsupportedAlgorithmError,
)
from securemail.policy import ContentCipher, KeyTransport
from securemail.smime import _asn1
from securemail.smime.enveloped import (
    EnvelopeRecipient,
    OpenedEnvelope,
    decrypt_envelope,
    encrypt_envelope,
)
from securemail.smime.signed import sign_content

CIPHERS = list(ContentCipher)
TRANSPORTS = list(KeyTransport)
KEY_TYPES = ["rsa", "rsa3072", "p256", "p384", "x25519"]
MIXES = [("rsa", "p256", "x25519"), ("rsa3072", "p384", "rsa"), ("x25519", "rsa", "p384")]
GCM = [c for c in CIPHERS if c.authenticated]
CBC = [c for c in CIPHERS if not c.authenticated]
CONTENT = b"Content-Type: text/plain\r\n\r\nattack at dawn\r\n"


@pytest.fixture(scope="module")
def p() -> pki.PKI:
    return pki.shared_pki()


@pytest.fixture(scope="module")
def other_keys() -> dict[str, object]:
    """Fresh private keys of each type, certainly not in any certificate of the PKI (the RSA
    pool of tests/pki.py could hand out a key that a certificate already holds)."""
    return {
        "rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "p256": pki.new_key("p256"),
        "p384": pki.new_key("p384"),
        "x25519": pki.new_key("x25519"),
    }


def seal(
    content: bytes,
    cipher: ContentCipher,
    *users: Issued,
    transport: KeyTransport = KeyTransport.RSA_OAEP,
) -> bytes:
    return encrypt_envelope(content, [EnvelopeRecipient(u.cert, transport) for u in users], cipher)


def open_(der: bytes, user: Issued, **kwargs: object) -> OpenedEnvelope:
    return decrypt_envelope(der, user.key, user.cert, **kwargs)  # type: ignore[arg-type]


def uniform_failure(der: bytes, user: Issued, *, key: object | None = None) -> str:
    """Decrypt ``der``, which must fail with the plain DecryptionError; return its message."""
    with pytest.raises(DecryptionError) as info:
        decrypt_envelope(der, key or user.key, user.cert)  # type: ignore[arg-type]
    assert type(info.value) is DecryptionError
    return str(info.value)


# --- round trips ---------------------------------------------------------------------------------


@pytest.mark.parametrize("key_type", KEY_TYPES)
@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("cipher", CIPHERS)
def test_round_trip_one_recipient(
    p: pki.PKI, cipher: ContentCipher, transport: KeyTransport, key_type: str
) -> None:
    user = p.users[key_type]
    der = seal(CONTENT, cipher, user, transport=transport)
    opened = open_(der, user)
    assert opened.content == CONTENT
    assert opened.content_cipher == cipher.value
    assert opened.authenticated is cipher.authenticated
    assert opened.recipient_certificate == user.cert


@pytest.mark.parametrize("mix", MIXES, ids="-".join)
@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("cipher", CIPHERS)
def test_round_trip_three_recipients(
    p: pki.PKI, cipher: ContentCipher, transport: KeyTransport, mix: tuple[str, ...]
) -> None:
    users = [p.users[name] for name in mix]
    der = seal(CONTENT, cipher, *users, transport=transport)
    for user in users:
        opened = open_(der, user)
        assert (opened.content, opened.authenticated) == (CONTENT, cipher.authenticated)


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 4096])
@pytest.mark.parametrize("cipher", CIPHERS)
def test_content_sizes_around_block_boundaries(
    p: pki.PKI, cipher: ContentCipher, size: int
) -> None:
    content = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    assert open_(seal(content, cipher, p.users["p256"]), p.users["p256"]).content == content


@pytest.mark.parametrize("cipher", CIPHERS)
def test_structure_follows_rfc5083_and_rfc5084(p: pki.PKI, cipher: ContentCipher) -> None:
    der = seal(CONTENT, cipher, p.users["rsa"])
    info = cms.ContentInfo.load(der)
    algorithm = content_info(info)["content_encryption_algorithm"]
    assert (
        algorithm["algorithm"].dotted
        == {
            ContentCipher.AES_128_GCM: _asn1.OID_AES128_GCM,
            ContentCipher.AES_256_GCM: _asn1.OID_AES256_GCM,
            ContentCipher.AES_128_CBC: _asn1.OID_AES128_CBC,
            ContentCipher.AES_256_CBC: _asn1.OID_AES256_CBC,
        }[cipher]
    )
    if cipher.authenticated:
        assert info["content_type"].native == "authenticated_enveloped_data"
        params = _asn1.GCMParameters.load(algorithm["parameters"].dump())
        assert len(params["aes_nonce"].native) == 12
        assert b"\x02\x01\x10" in algorithm["parameters"].dump()  # aes-ICVlen 16, explicit
        assert len(mac_of(der)) == 16
    else:
        assert info["content_type"].native == "enveloped_data"
        assert len(iv_of(der)) == 16
    assert CONTENT not in der


@pytest.mark.parametrize(
    ("transport", "oid"),
    [
        (KeyTransport.RSA_OAEP, _asn1.OID_RSAES_OAEP),
        (KeyTransport.RSA_PKCS1V15, "1.2.840.113549.1.1.1"),
    ],
)
def test_rsa_key_transport_is_the_one_asked_for(
    p: pki.PKI, transport: KeyTransport, oid: str
) -> None:
    der = seal(CONTENT, ContentCipher.AES_256_GCM, p.users["rsa"], transport=transport)
    (info,) = cms.ContentInfo.load(der)["content"]["recipient_infos"]
    assert info.name == "ktri"
    assert info.chosen["key_encryption_algorithm"]["algorithm"].dotted == oid


@pytest.mark.parametrize("key_type", ["p256", "p384", "x25519"])
def test_ec_recipients_use_key_agreement_whatever_the_transport(p: pki.PKI, key_type: str) -> None:
    der = seal(
        CONTENT, ContentCipher.AES_256_CBC, p.users[key_type], transport=KeyTransport.RSA_PKCS1V15
    )
    (info,) = cms.ContentInfo.load(der)["content"]["recipient_infos"]
    assert info.name == "kari"
    assert info.chosen["originator"].name == "originator_key"


def test_fresh_key_and_nonce_every_time(p: pki.PKI) -> None:
    first, second = (seal(CONTENT, ContentCipher.AES_256_GCM, p.users["p256"]) for _ in range(2))
    assert ciphertext_of(first) != ciphertext_of(second)
    assert nonce_of(first) != nonce_of(second)


# --- recipients refused --------------------------------------------------------------------------


def test_no_recipient_is_refused() -> None:
    with pytest.raises(RecipientError):
        encrypt_envelope(CONTENT, [], ContentCipher.AES_256_GCM)


def test_sign_only_ed25519_certificate_is_refused(p: pki.PKI) -> None:
    with pytest.raises(RecipientError) as info:
        seal(CONTENT, ContentCipher.AES_256_GCM, p.users["rsa"], p.users["ed25519"])
    assert info.value.recipient == "erin@example.com"


def test_short_rsa_key_is_refused() -> None:
    weak = issue(common_name="Weak", email="weak@example.com", key_type="rsa1024")
    with pytest.raises(RecipientError) as info:
        seal(CONTENT, ContentCipher.AES_256_GCM, weak)
    assert info.value.recipient == "weak@example.com"
    assert "1024" in info.value.reason


# --- tampering with AuthEnvelopedData ------------------------------------------------------------


@pytest.mark.parametrize("mask", [0x01, 0xFF], ids=["low-bit", "all-bits"])
@pytest.mark.parametrize("key_type", ["rsa", "p256", "x25519"])
def test_every_byte_flip_of_authenveloped_data_fails_or_changes_nothing(
    p: pki.PKI, key_type: str, mask: int
) -> None:
    """Flip each byte of the DER in turn. Each result must be a DecryptionError or exactly the
    original plaintext (the flip hit a field that does not matter). A flip that turns an
    algorithm identifier into one securemail does not implement may also give
    UnsupportedAlgorithmError: that is decided from public fields before any key is used, so
    it tells an attacker nothing. Anything else -- other plaintext, a bare ValueError -- is
    listed by type with the offsets that caused it."""
    user = p.users[key_type]
    content = b"Content-Type: text/plain\r\n\r\nhi"
    der = seal(content, ContentCipher.AES_128_GCM, user)
    problems: dict[str, list[int]] = {}
    for index in range(len(der)):
        try:
            opened = open_(flip(der, index, mask), user)
        except (DecryptionError, UnsupportedAlgorithmError):
            continue
        except Exception as exc:
            problems.setdefault(type(exc).__name__, []).append(index)
            continue
        if opened.content != content or not opened.authenticated:
            problems.setdefault("different plaintext", []).append(index)
    assert not problems, f"flips of {len(der)} bytes; unexpected outcomes at offsets: {problems}"


def test_malformed_recipient_identifier_is_a_decryption_error(p: pki.PKI) -> None:
    """The smallest reproducer of what the byte flips find: the issuer name in the recipient
    identifier is a UTF8String; make it invalid UTF-8 and matching the recipient raises."""
    user = p.users["rsa"]
    der = seal(CONTENT, ContentCipher.AES_256_GCM, user)
    broken = pki.replace_once(der, b"Test Intermediate", b"Test Intermediat\xff")
    with pytest.raises(DecryptionError):
        open_(broken, user)


def test_recipient_infos_that_do_not_parse_are_a_decryption_error(p: pki.PKI) -> None:
    """The RecipientInfo CHOICE gets a tag none of its alternatives has."""
    user = p.users["rsa"]
    der = seal(CONTENT, ContentCipher.AES_256_GCM, user)
    infos = cms.ContentInfo.load(der)["content"]["recipient_infos"].dump()
    assert infos[:1] == b"\x31"
    start = der.index(infos) + len(infos) - len(infos.lstrip(b"\x31\x82\x01"))
    broken = der[:start] + b"\xdf" + der[start + 1 :]  # first RecipientInfo's tag
    with pytest.raises(DecryptionError):
        open_(broken, user)


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda der: set_mac(der, flip(mac_of(der), 0)), id="mac"),
        pytest.param(lambda der: set_mac(der, mac_of(der)[:-1]), id="mac-truncated"),
        pytest.param(lambda der: set_gcm(der, nonce=flip(nonce_of(der), 11)), id="nonce"),
        pytest.param(lambda der: set_gcm(der, nonce=nonce_of(der)[:8]), id="nonce-shorter"),
        pytest.param(lambda der: set_gcm(der, icvlen=12), id="icvlen"),
        pytest.param(lambda der: set_ciphertext(der, flip(ciphertext_of(der), 0)), id="ct-first"),
        pytest.param(lambda der: set_ciphertext(der, flip(ciphertext_of(der), -1)), id="ct-last"),
        pytest.param(lambda der: set_ciphertext(der, ciphertext_of(der)[:-1]), id="ct-truncated"),
        pytest.param(lambda der: set_ciphertext(der, ciphertext_of(der) + b"\0"), id="ct-extended"),
    ],
)
def test_tampered_gcm_fields_give_the_uniform_error(
    p: pki.PKI, tamper: Callable[[bytes], bytes]
) -> None:
    der = seal(CONTENT, ContentCipher.AES_256_GCM, p.users["rsa"])
    assert uniform_failure(tamper(der), p.users["rsa"]) == DECRYPTION_FAILED


def test_truncated_tags_are_refused_even_when_declared(p: pki.PKI) -> None:
    """A GCM tag cut to its first n bytes is still valid for GCM with n-byte tags; below 12
    bytes it is forgeable (RFC 5084 allows 12..16), so it must be refused."""
    user = p.users["p256"]
    der = seal(CONTENT, ContentCipher.AES_256_GCM, user)
    tag = mac_of(der)
    assert open_(set_gcm(set_mac(der, tag[:12]), icvlen=12), user).content == CONTENT
    for length in (4, 8, 11):
        assert uniform_failure(set_gcm(set_mac(der, tag[:length]), icvlen=length), user)


@pytest.mark.parametrize(
    ("cipher", "oid"),
    [
        (ContentCipher.AES_256_GCM, _asn1.OID_AES256_CBC),
        (ContentCipher.AES_256_CBC, _asn1.OID_AES256_GCM),
    ],
    ids=["gcm-as-cbc", "cbc-as-gcm"],
)
def test_algorithm_swapped_against_the_content_type_is_refused(
    p: pki.PKI, cipher: ContentCipher, oid: str
) -> None:
    def change(info: cms.ContentInfo) -> None:
        content_info(info)["content_encryption_algorithm"]["algorithm"] = oid

    user = p.users["p256"]
    with pytest.raises(DecryptionError):
        open_(edit_cms(seal(CONTENT, cipher, user), change), user)


# --- EFAIL: CBC is malleable ---------------------------------------------------------------------


def test_cbc_iv_gadget_changes_the_first_block_and_is_flagged_unauthenticated(p: pki.PKI) -> None:
    """The EFAIL CBC gadget: XOR (known ^ chosen) into the IV and the first plaintext block
    becomes ``chosen`` while the rest decrypts unchanged. Decryption cannot notice, so the
    result must say it carries no integrity protection."""
    user = p.users["rsa"]
    der = seal(CONTENT, ContentCipher.AES_256_CBC, user)
    chosen = b"X-Evil: injected"
    delta = bytes(a ^ b for a, b in zip(CONTENT[:16], chosen, strict=True))
    forged = set_iv(der, bytes(a ^ b for a, b in zip(iv_of(der), delta, strict=True)))
    opened = open_(forged, user)
    assert opened.content == chosen + CONTENT[16:]
    assert opened.authenticated is False
    with pytest.raises(UnauthenticatedContentError) as info:
        open_(forged, user, require_authenticated=True)
    assert info.value.cipher == "aes-256-cbc"


@pytest.mark.parametrize("cipher", CBC)
def test_require_authenticated_refuses_even_untampered_cbc(
    p: pki.PKI, cipher: ContentCipher
) -> None:
    with pytest.raises(UnauthenticatedContentError):
        open_(seal(CONTENT, cipher, p.users["p256"]), p.users["p256"], require_authenticated=True)


@pytest.mark.parametrize("cipher", GCM)
def test_require_authenticated_accepts_gcm(p: pki.PKI, cipher: ContentCipher) -> None:
    opened = open_(
        seal(CONTENT, cipher, p.users["p256"]), p.users["p256"], require_authenticated=True
    )
    assert opened.authenticated is True


# --- wrong key and the uniform error -------------------------------------------------------------


def test_not_a_recipient_is_decided_from_the_identifiers(p: pki.PKI) -> None:
    der = seal(CONTENT, ContentCipher.AES_256_GCM, p.users["rsa"], p.users["p256"])
    with pytest.raises(NotARecipientError) as info:
        open_(der, p.users["rsa3072"])
    assert isinstance(info.value, DecryptionError)
    assert info.value.certificate == "CN=Bob"


@pytest.mark.parametrize(
    ("key_type", "cipher", "transport"),
    [
        ("rsa", ContentCipher.AES_256_GCM, KeyTransport.RSA_OAEP),
        ("rsa", ContentCipher.AES_256_CBC, KeyTransport.RSA_OAEP),
        # PKCS#1 v1.5 goes on with a random key (RFC 3218); with GCM the tag then fails for sure.
        ("rsa", ContentCipher.AES_128_GCM, KeyTransport.RSA_PKCS1V15),
        ("p256", ContentCipher.AES_256_CBC, KeyTransport.RSA_OAEP),
        ("p384", ContentCipher.AES_128_GCM, KeyTransport.RSA_OAEP),
        ("x25519", ContentCipher.AES_256_GCM, KeyTransport.RSA_OAEP),
    ],
)
def test_matching_certificate_with_another_private_key_gives_the_uniform_error(
    p: pki.PKI,
    other_keys: dict[str, object],
    key_type: str,
    cipher: ContentCipher,
    transport: KeyTransport,
) -> None:
    user = p.users[key_type]
    der = seal(CONTENT, cipher, user, transport=transport)
    assert uniform_failure(der, user, key=other_keys[key_type]) == DECRYPTION_FAILED


def test_private_key_of_another_type_gives_the_uniform_error(p: pki.PKI) -> None:
    der = seal(CONTENT, ContentCipher.AES_256_GCM, p.users["rsa"])
    assert uniform_failure(der, p.users["rsa"], key=p.users["p256"].key) == DECRYPTION_FAILED


def test_every_crypto_failure_has_the_same_message(
    p: pki.PKI, other_keys: dict[str, object]
) -> None:
    """Wrong key, bad tag, bad CBC padding and truncated ciphertext must be indistinguishable."""
    user = p.users["rsa"]
    other = other_keys["rsa"]
    gcm = seal(CONTENT, ContentCipher.AES_256_GCM, user)
    cbc = seal(CONTENT, ContentCipher.AES_256_CBC, user)
    pad = 16 - len(CONTENT) % 16
    blocks = ciphertext_of(cbc)
    # Turn the last padding byte into 0x00 through the previous ciphertext block: bad padding.
    bad_padding = blocks[:-17] + bytes([blocks[-17] ^ pad]) + blocks[-16:]
    # Dropping the last block leaves a block of text where the padding should be.
    messages = {
        "wrong key gcm": uniform_failure(gcm, user, key=other),
        "wrong key cbc": uniform_failure(cbc, user, key=other),
        "bad tag": uniform_failure(set_mac(gcm, flip(mac_of(gcm), 5)), user),
        "bad padding": uniform_failure(set_ciphertext(cbc, bad_padding), user),
        "truncated gcm": uniform_failure(set_ciphertext(gcm, ciphertext_of(gcm)[:-3]), user),
        "truncated cbc": uniform_failure(set_ciphertext(cbc, blocks[:-16]), user),
        "cbc not whole blocks": uniform_failure(set_ciphertext(cbc, blocks[:-1]), user),
        "empty cbc": uniform_failure(set_ciphertext(cbc, b""), user),
    }
    assert set(messages.values()) == {DECRYPTION_FAILED}, messages


# --- malformed input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "der",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\x00" * 40, id="zeros"),
        pytest.param(bytes(range(256)), id="garbage"),
        pytest.param(b"\x30\x80\x06\x09", id="indefinite-truncated"),
    ],
)
def test_garbage_is_a_decryption_error(p: pki.PKI, der: bytes) -> None:
    with pytest.raises(DecryptionError):
        open_(der, p.users["rsa"])


@pytest.mark.parametrize("cut", [1, 16, 100, 300])
def test_truncated_der_is_a_decryption_error(p: pki.PKI, cut: int) -> None:
    der = seal(CONTENT, ContentCipher.AES_256_GCM, p.users["rsa"])
    with pytest.raises(DecryptionError):
        open_(der[:-cut], p.users["rsa"])


def test_signed_data_is_not_enveloped(p: pki.PKI) -> None:
    der = sign_content(CONTENT, pki.identity(p.users["rsa"]))
    with pytest.raises(DecryptionError, match="not S/MIME encrypted"):
        open_(der, p.users["rsa"])


def test_size_limit(p: pki.PKI) -> None:
    der = seal(b"x" * 5000, ContentCipher.AES_256_GCM, p.users["p256"])
    with pytest.raises(SizeLimitExceeded):
        open_(der, p.users["p256"], max_size=4096)
    assert len(open_(der, p.users["p256"], max_size=5000).content) == 5000
